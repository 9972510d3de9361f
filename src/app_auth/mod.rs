//! App authentication and additional outbound headers: what credentials the upstream receives.
//!
//! Everything is resolved in `request_filter` ([`Outbound::resolve`], awaiting the token cache
//! there) and only inserted in `upstream_request_filter` ([`Resolved::apply`]), so a retry does
//! not fetch again.

mod token_client;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};
use smallvec::SmallVec;

pub use token_client::TokenEndpoint;

use crate::config::ONE_TIME_HEADER;
use crate::headers::HeaderSink;
use crate::identity::Identity;
use crate::tokens::{CachedToken, SourceMetrics, TokenCache, TokenCacheSettings, TokenError};

/// A token fetched with client credentials.
pub struct ClientCredentials {
    /// Name in metrics and errors (`<server>/app_auth` or `<server>/<header>`).
    pub name: Arc<str>,
    /// The token cache's counters for this source.
    pub lookups: SourceMetrics,
    /// Cache key: a digest of everything that defines the token.
    pub key: [u8; 32],
    /// The endpoint and client.
    pub endpoint: Arc<TokenEndpoint>,
    /// Form parameters besides the client's own.
    pub params: Arc<Vec<(String, String)>>,
    /// Put before the token in the header value (`Bearer ` for app authentication).
    pub prefix: String,
    /// The token this source served last, with its header value built. Every request of a
    /// source wants the same token, so while that token is fresh a request takes it from here
    /// without a cache lookup or building the header again.
    current: ArcSwapOption<CurrentToken>,
}

struct CurrentToken {
    token: Arc<CachedToken>,
    header: HeaderValue,
}

impl ClientCredentials {
    /// A source named `name` whose token `key` identifies in the cache.
    pub fn new(
        name: Arc<str>,
        key: [u8; 32],
        endpoint: TokenEndpoint,
        params: Vec<(String, String)>,
        prefix: String,
    ) -> Self {
        Self {
            lookups: SourceMetrics::new(name.clone()),
            name,
            key,
            endpoint: Arc::new(endpoint),
            params: Arc::new(params),
            prefix,
            current: ArcSwapOption::empty(),
        }
    }

    /// The header value for this source's token, and the token, fetched through the cache when
    /// the one kept from the last request is no longer fresh.
    async fn header(
        &self,
        header: &HeaderName,
        settings: TokenCacheSettings,
        cache: &'static TokenCache,
    ) -> Result<(HeaderValue, Arc<CachedToken>), CredentialError> {
        if let Some(current) = &*self.current.load() {
            if current.token.fresh(Instant::now()) {
                self.lookups.count_hit();
                return Ok((current.header.clone(), current.token.clone()));
            }
        }
        let token = client_credentials(self, settings, cache).await?;
        let value = header_value(&self.prefix, token.token.access_token.expose(), header)?;
        self.current.store(Some(Arc::new(CurrentToken { token: token.clone(), header: value.clone() })));
        Ok((value, token))
    }
}

/// An RFC 8693 exchange of the caller's token.
pub struct TokenExchange {
    /// Name in metrics and errors.
    pub name: Arc<str>,
    /// The token cache's counters for this source.
    pub lookups: SourceMetrics,
    /// Digest of the exchange settings; combined with the caller's token digest per request.
    pub key: [u8; 32],
    /// The endpoint and client.
    pub endpoint: Arc<TokenEndpoint>,
    /// `audience`, `resource`, `scope`, `requested_token_type` as configured.
    pub params: Arc<Vec<(String, String)>>,
    /// `subject_token_type`.
    pub subject_token_type: String,
    /// `requested_token_type`, which `issued_token_type` must match.
    pub requested_token_type: Option<String>,
}

/// A server's app authentication.
pub enum AppAuth {
    /// A fixed header (API key, bearer, basic), built at load.
    Static(HeaderName, HeaderValue),
    /// An API key as a query parameter: the name, and `name=value` percent-encoded.
    Query {
        /// Parameter name (any such parameter from the client is dropped).
        name: String,
        /// The encoded pair.
        pair: String,
    },
    /// `Authorization: Bearer <client-credentials token>`.
    ClientCredentials(ClientCredentials),
    /// The caller's own `Authorization` is forwarded.
    Passthrough,
    /// The caller's `X-Upstream-Authorization` becomes `Authorization`.
    OneTime,
}

/// Where an outbound header's value comes from, compiled.
pub enum OutboundValue {
    /// Built at load (prefix included).
    Static(HeaderValue),
    /// A client-credentials token.
    ServiceToken(ClientCredentials),
    /// The caller's inbound token.
    CallerToken,
    /// The caller's token exchanged.
    Exchange(TokenExchange),
    /// A claim of the caller's identity.
    Claim(String),
}

/// One outbound header.
pub struct OutboundHeader {
    /// Header name.
    pub name: HeaderName,
    /// Put before the value.
    pub prefix: String,
    /// The value's source.
    pub value: OutboundValue,
}

/// A server's outbound credentials.
#[derive(Default)]
pub struct Outbound {
    /// App authentication, if any.
    pub app_auth: Option<AppAuth>,
    /// Additional headers.
    pub headers: Vec<OutboundHeader>,
}

/// Why the credentials for a request could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// `one_time` without `X-Upstream-Authorization` (401).
    MissingOneTime,
    /// An outbound setting needs the caller's token and there is none (401).
    NoCallerToken,
    /// A value is not header-safe (400); names the header.
    UnsafeValue(HeaderName),
    /// A token source failed (503); names the source.
    SourceDown(Arc<str>, TokenError),
}

/// Credentials resolved for one request.
#[derive(Default)]
pub struct Resolved {
    headers: SmallVec<[(HeaderName, HeaderValue); 2]>,
    forward_caller_authorization: bool,
    one_time: bool,
    /// The cached tokens used, with their cache keys (dropped when the upstream answers 401).
    pub tokens: SmallVec<[([u8; 32], Arc<CachedToken>); 1]>,
    /// The gateway put credentials of its own on the request.
    pub injected: bool,
}

/// `Authorization`, with a lifetime long enough to be lent to a [`HeaderSink`].
static AUTHORIZATION: HeaderName = http::header::AUTHORIZATION;

impl Resolved {
    /// Puts the credentials on the upstream request (after the header policy stripped the
    /// inbound ones). `inbound` is the client's original request.
    pub fn apply<'a>(&'a self, inbound: &'a RequestHeader, upstream: &mut impl HeaderSink<'a>) {
        if self.forward_caller_authorization {
            if let Some(value) = inbound.headers.get(http::header::AUTHORIZATION) {
                upstream.insert(&AUTHORIZATION, value);
            }
        }
        if self.one_time {
            if let Some(value) = inbound.headers.get(ONE_TIME_HEADER) {
                upstream.insert_sensitive(&AUTHORIZATION, value);
            }
        }
        for (name, value) in &self.headers {
            upstream.insert(name, value);
        }
    }
}

impl Outbound {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.app_auth.is_none() && self.headers.is_empty()
    }

    /// Resolves every credential for a request, fetching tokens through the cache.
    pub async fn resolve(
        &self,
        request: &RequestHeader,
        identity: Option<&Identity>,
        settings: TokenCacheSettings,
        cache: &'static TokenCache,
    ) -> Result<Resolved, CredentialError> {
        let mut resolved = Resolved::default();
        match &self.app_auth {
            None | Some(AppAuth::Query { .. }) => {}
            Some(AppAuth::Static(name, value)) => {
                resolved.headers.push((name.clone(), value.clone()));
                resolved.injected = true;
            }
            Some(AppAuth::ClientCredentials(source)) => {
                let (value, token) = source.header(&AUTHORIZATION, settings, cache).await?;
                resolved.headers.push((http::header::AUTHORIZATION, value));
                resolved.tokens.push((source.key, token));
                resolved.injected = true;
            }
            Some(AppAuth::Passthrough) => resolved.forward_caller_authorization = true,
            Some(AppAuth::OneTime) => {
                if !request.headers.contains_key(ONE_TIME_HEADER) {
                    return Err(CredentialError::MissingOneTime);
                }
                resolved.one_time = true;
            }
        }
        for header in &self.headers {
            resolved.injected = true;
            let value = match &header.value {
                OutboundValue::Static(value) => value.clone(),
                OutboundValue::ServiceToken(source) => {
                    let (value, token) = source.header(&header.name, settings, cache).await?;
                    resolved.tokens.push((source.key, token));
                    value
                }
                OutboundValue::CallerToken => {
                    let token = caller_token(request, identity).ok_or(CredentialError::NoCallerToken)?;
                    header_value(&header.prefix, token, &header.name)?
                }
                OutboundValue::Exchange(exchange) => {
                    let subject = caller_token(request, identity).ok_or(CredentialError::NoCallerToken)?;
                    let (key, token) =
                        exchanged(exchange, subject, identity, &header.prefix, settings, cache).await?;
                    let value =
                        header_value(&header.prefix, token.token.access_token.expose(), &header.name)?;
                    resolved.tokens.push((key, token));
                    value
                }
                OutboundValue::Claim(claim) => match identity.and_then(|i| claim_value(i, claim)) {
                    Some(value) => header_value(&header.prefix, &value, &header.name)?,
                    // A missing claim sends no header (the inbound one of that name is stripped).
                    None => continue,
                },
            };
            resolved.headers.push((header.name.clone(), value));
        }
        Ok(resolved)
    }
}

/// The caller's bearer token: the verified one, or the `Authorization: Bearer` it sent.
fn caller_token<'a>(request: &'a RequestHeader, identity: Option<&'a Identity>) -> Option<&'a str> {
    if let Some(token) = identity.and_then(|i| i.token.as_ref()) {
        return Some(token.raw().expose());
    }
    let value = request.headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn claim_value(identity: &Identity, claim: &str) -> Option<String> {
    match &identity.token {
        Some(token) => match token.claim(claim)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        },
        None if claim == "sub" && identity.source == crate::identity::IdentitySource::Proxy => {
            Some(identity.subject().to_owned())
        }
        None => None,
    }
}

/// `prefix + value` as a header value, refused when it holds CR, LF, NUL or other controls.
fn header_value(prefix: &str, value: &str, name: &HeaderName) -> Result<HeaderValue, CredentialError> {
    if !value.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80) {
        return Err(CredentialError::UnsafeValue(name.clone()));
    }
    let mut text = String::with_capacity(prefix.len() + value.len());
    text.push_str(prefix);
    text.push_str(value);
    let mut header = HeaderValue::from_str(&text).map_err(|_| CredentialError::UnsafeValue(name.clone()))?;
    header.set_sensitive(true);
    Ok(header)
}

async fn client_credentials(
    source: &ClientCredentials,
    settings: TokenCacheSettings,
    cache: &'static TokenCache,
) -> Result<Arc<CachedToken>, CredentialError> {
    let endpoint = source.endpoint.clone();
    let params = source.params.clone();
    cache
        .get(source.key, &source.lookups, settings, move || {
            let endpoint = endpoint.clone();
            let params = params.clone();
            async move {
                let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
                form.extend(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                endpoint.request(&form).await
            }
        })
        .await
        .map_err(|e| CredentialError::SourceDown(source.name.clone(), e))
}

async fn exchanged(
    exchange: &TokenExchange,
    subject: &str,
    identity: Option<&Identity>,
    prefix: &str,
    settings: TokenCacheSettings,
    cache: &'static TokenCache,
) -> Result<([u8; 32], Arc<CachedToken>), CredentialError> {
    // Per caller: the key mixes the exchange settings with the digest of the caller's token.
    let subject_digest: [u8; 32] = match identity.and_then(|i| i.token.as_ref()) {
        Some(token) => *token.digest(),
        None => Sha256::digest(subject.as_bytes()).into(),
    };
    let mut hasher = Sha256::new();
    hasher.update(exchange.key);
    hasher.update(subject_digest);
    let key: [u8; 32] = hasher.finalize().into();

    let endpoint = exchange.endpoint.clone();
    let params = exchange.params.clone();
    let subject = crate::config::Secret::new(subject.to_owned());
    let subject_type = exchange.subject_token_type.clone();
    let requested = exchange.requested_token_type.clone();
    let token = cache
        .get(key, &exchange.lookups, settings, move || {
            let (endpoint, params, subject, subject_type, requested) =
                (endpoint.clone(), params.clone(), subject.clone(), subject_type.clone(), requested.clone());
            async move {
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                    ("subject_token", subject.expose()),
                    ("subject_token_type", &subject_type),
                ];
                form.extend(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                let response = endpoint.request(&form).await?;
                match (&response.issued_token_type, &requested) {
                    (None, _) => return Err(TokenError::BadResponse("no issued_token_type".into())),
                    (Some(issued), Some(requested)) if issued != requested => {
                        return Err(TokenError::BadResponse(format!(
                            "issued_token_type {issued} is not the requested {requested}"
                        )))
                    }
                    _ => {}
                }
                Ok(response)
            }
        })
        .await
        .map_err(|e| CredentialError::SourceDown(exchange.name.clone(), e))?;
    // RFC 8693 §2.2.1: `N_A` means the token is not an access token; never send it as a bearer.
    let not_bearer = token.token.token_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("n_a"));
    if not_bearer && prefix.trim().eq_ignore_ascii_case("bearer") {
        return Err(CredentialError::SourceDown(
            exchange.name.clone(),
            TokenError::BadResponse("token_type N_A cannot be sent as a bearer token".into()),
        ));
    }
    Ok((key, token))
}

/// A digest over the parts that define a token source (the secret included, so a new secret
/// means a new token).
pub fn source_key(kind: &str, endpoint: &TokenEndpoint, params: &[(String, String)]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [
        kind,
        &endpoint.url,
        &endpoint.client_id,
        endpoint.client_secret.expose(),
        if endpoint.method == crate::config::ClientAuthMethod::ClientSecretPost { "post" } else { "basic" },
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    for (k, v) in params {
        hasher.update(k.as_bytes());
        hasher.update([1]);
        hasher.update(v.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_a_header() {
        let name = HeaderName::from_static("x-user-email");
        assert!(header_value("", "alice@example.com", &name).is_ok());
        for bad in ["a\r\nx-admin: 1", "a\nb", "a\0b", "a\x7fb"] {
            assert_eq!(
                header_value("", bad, &name),
                Err(CredentialError::UnsafeValue(name.clone())),
                "{bad:?}"
            );
        }
        assert!(header_value("Bearer ", "abc", &name).unwrap().is_sensitive());
    }

    #[tokio::test]
    async fn a_source_reuses_its_token_until_an_upstream_refuses_it() {
        let cache: &'static TokenCache = Box::leak(Box::new(TokenCache::new(10)));
        let settings = TokenCacheSettings {
            skew: std::time::Duration::from_secs(30),
            refresh_at: 0.8,
            default_ttl: std::time::Duration::from_secs(300),
            failure_backoff: std::time::Duration::from_secs(60),
        };
        // Nothing listens on port 9: once the token is gone from the cache, the fetch fails.
        let endpoint = TokenEndpoint {
            url: "http://127.0.0.1:9/token".into(),
            client_id: "c".into(),
            client_secret: crate::config::Secret::new("s".into()),
            method: crate::config::ClientAuthMethod::ClientSecretBasic,
            timeout: std::time::Duration::from_millis(200),
        };
        let key = source_key("client_credentials", &endpoint, &[]);
        let source = ClientCredentials::new("t/app_auth".into(), key, endpoint, Vec::new(), "Bearer ".into());
        let cached = cache
            .get(key, &source.lookups, settings, || async {
                Ok(crate::tokens::TokenResponse {
                    access_token: crate::config::Secret::new("service-token".into()),
                    token_type: Some("Bearer".into()),
                    issued_token_type: None,
                    expires_in: Some(std::time::Duration::from_secs(3600)),
                })
            })
            .await
            .unwrap();
        let outbound = Outbound { app_auth: Some(AppAuth::ClientCredentials(source)), headers: Vec::new() };
        let request = RequestHeader::build("POST", b"/mcp", None).unwrap();
        for _ in 0..2 {
            let resolved = outbound.resolve(&request, None, settings, cache).await.unwrap();
            assert_eq!(resolved.headers[0].1, "Bearer service-token");
            assert!(resolved.headers[0].1.is_sensitive());
            assert!(Arc::ptr_eq(&resolved.tokens[0].1, &cached));
        }
        cache.invalidate(&key, &cached).await;
        assert!(
            matches!(
                outbound.resolve(&request, None, settings, cache).await,
                Err(CredentialError::SourceDown(_, _))
            ),
            "a refused token is never served again, not even from the source's own copy"
        );
    }

    #[test]
    fn different_clients_never_share_a_key() {
        let endpoint = |id: &str, secret: &str| TokenEndpoint {
            url: "https://idp/token".into(),
            client_id: id.into(),
            client_secret: crate::config::Secret::new(secret.into()),
            method: crate::config::ClientAuthMethod::ClientSecretBasic,
            timeout: std::time::Duration::from_secs(1),
        };
        let params = vec![("scope".to_owned(), "a b".to_owned())];
        let a = source_key("cc", &endpoint("a", "s"), &params);
        assert_ne!(a, source_key("cc", &endpoint("b", "s"), &params));
        assert_ne!(a, source_key("cc", &endpoint("a", "t"), &params));
        assert_ne!(a, source_key("cc", &endpoint("a", "s"), &[]));
        assert_eq!(a, source_key("cc", &endpoint("a", "s"), &params));
    }
}
