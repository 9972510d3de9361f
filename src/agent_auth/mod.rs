//! Agent authentication: who may reach an MCP server.
//!
//! Every route of a server (prefix, alias, legacy SSE and its message endpoint, every method)
//! runs the same [`AgentAuth::authenticate`], which yields an [`Identity`] or the reason to refuse.

mod audience;
mod jwks;
mod jwt;
mod metadata;

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderName;
use ipnet::IpNet;
use pingora::http::RequestHeader;

pub use audience::Audiences;
pub use jwks::{JwksError, JwksTimings, KeySet, RemoteJwks};
pub use jwt::{JwtProvider, JwtRejection, JwtRules, Keys, VerifiedToken, VerifiedTokens};
pub use metadata::{is_quotable, resource_url, ProtectedResource, PublicUrl, WELL_KNOWN_PREFIX};

use crate::identity::Identity;

/// A required valid JWT from one provider, issued for this server, with scopes.
pub struct JwtCheck {
    /// The provider.
    pub provider: Arc<JwtProvider>,
    /// Audiences this server accepts (its own resource URLs and any listed ones).
    pub audiences: Audiences,
    /// Scopes a token must all carry.
    pub scopes: Vec<String>,
}

/// The trusted-proxy mode's settings.
pub struct TrustedProxy {
    /// The user header.
    pub header: HeaderName,
    /// Sources the header is believed from.
    pub networks: Vec<IpNet>,
    /// Continue as anonymous when the header is absent.
    pub allow_anonymous: bool,
}

/// A server's agent authentication, compiled.
pub enum AgentAuth {
    /// A valid JWT is required.
    Jwt(JwtCheck),
    /// Nothing is checked, or a JWT when `Some`.
    Passthrough(Option<JwtCheck>),
    /// A trusted proxy names the user.
    TrustedProxy(TrustedProxy),
    /// Nobody is checked (explicitly allowed in the config).
    None,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No bearer token (401 with a challenge).
    MissingToken,
    /// The token failed verification (401 with `error="invalid_token"`).
    InvalidToken(JwtRejection),
    /// The token lacks required scopes (403 with `error="insufficient_scope"`).
    InsufficientScope,
    /// The token came in the query string (400).
    TokenInQuery,
    /// No user header from a trusted proxy (401).
    MissingUser,
    /// More than one user header from a trusted proxy, or one holding a list (401): a proxy that
    /// appends rather than replaces would let the client choose who it is.
    DuplicateUserHeader,
    /// The identity provider's keys cannot be had (503).
    Unavailable,
}

impl AuthFailure {
    /// Metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingToken => "missing",
            Self::InvalidToken(r) => r.reason(),
            Self::InsufficientScope => "insufficient_scope",
            Self::TokenInQuery => "token_in_query",
            Self::MissingUser => "missing_user",
            Self::DuplicateUserHeader => "duplicate_user_header",
            Self::Unavailable => "keys_unavailable",
        }
    }
}

impl AgentAuth {
    /// Mode name (metric label).
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Jwt(_) => "jwt",
            Self::Passthrough(_) => "passthrough",
            Self::TrustedProxy(_) => "trusted_proxy",
            Self::None => "none",
        }
    }

    /// The JWT check, in the modes that have one (these publish resource metadata).
    pub fn jwt(&self) -> Option<&JwtCheck> {
        match self {
            Self::Jwt(check) | Self::Passthrough(Some(check)) => Some(check),
            _ => None,
        }
    }

    /// The trusted-proxy user header, in that mode.
    pub fn proxy_header(&self) -> Option<&HeaderName> {
        match self {
            Self::TrustedProxy(proxy) => Some(&proxy.header),
            _ => None,
        }
    }

    /// Establishes who sent `request` from `client`.
    pub async fn authenticate(
        &self,
        request: &RequestHeader,
        client: Option<IpAddr>,
    ) -> Result<Identity, AuthFailure> {
        match self {
            Self::Jwt(check) | Self::Passthrough(Some(check)) => check.authenticate(request).await,
            Self::Passthrough(None) | Self::None => Ok(Identity::anonymous()),
            Self::TrustedProxy(proxy) => proxy.authenticate(request, client),
        }
    }
}

impl JwtCheck {
    async fn authenticate(&self, request: &RequestHeader) -> Result<Identity, AuthFailure> {
        if request.uri.query().is_some_and(has_access_token_param) {
            return Err(AuthFailure::TokenInQuery);
        }
        let token = bearer_token(request).ok_or(AuthFailure::MissingToken)?;
        // A token verified before is found by its bytes; only a new one is read as text. The
        // provider's cache is shared by its servers, so the audience is checked on every request.
        let verified = match self.provider.remembered(token) {
            Some(verified) => verified,
            None => {
                let token = header_text(token).ok_or(AuthFailure::MissingToken)?;
                self.provider.verify_new(token).await.map_err(|r| match r {
                    JwtRejection::KeysUnavailable => AuthFailure::Unavailable,
                    other => AuthFailure::InvalidToken(other),
                })?
            }
        };
        if !self.audiences.accepts(&verified) {
            return Err(AuthFailure::InvalidToken(JwtRejection::WrongAudience));
        }
        if !verified.has_scopes(&self.scopes) {
            return Err(AuthFailure::InsufficientScope);
        }
        Ok(Identity::jwt(verified))
    }
}

impl TrustedProxy {
    /// The user the proxy names in its one user header. A second copy of the header (spelled
    /// with `_` for `-` too, as many upstreams read names) or a list value is refused, never
    /// "the first wins": a proxy that appends instead of replacing would let the client choose.
    fn authenticate(&self, request: &RequestHeader, client: Option<IpAddr>) -> Result<Identity, AuthFailure> {
        let trusted = client.is_some_and(|ip| self.networks.iter().any(|net| net.contains(&ip)));
        // From an untrusted source the header is ignored (and stripped before forwarding).
        if !trusted {
            return self.anonymous_or(AuthFailure::MissingUser);
        }
        let mut copies = request.headers.get_all(&self.header).iter();
        let first = copies.next();
        if copies.next().is_some() || (first.is_some() && self.has_other_spelling(request)) {
            return Err(AuthFailure::DuplicateUserHeader);
        }
        let Some(value) = first else {
            return self.anonymous_or(AuthFailure::MissingUser);
        };
        if value.as_bytes().contains(&b',') {
            return Err(AuthFailure::DuplicateUserHeader);
        }
        let user = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|u| !u.is_empty() && u.bytes().all(|b| (0x20..0x7f).contains(&b)));
        match user {
            Some(user) => Ok(Identity::proxy(user.into())),
            None => self.anonymous_or(AuthFailure::MissingUser),
        }
    }

    /// True when the request also has the user header under another spelling (`_` for `-` or
    /// the other way round): a second copy to an upstream that reads both alike.
    fn has_other_spelling(&self, request: &RequestHeader) -> bool {
        let wanted = crate::headers::canonical(&self.header);
        request.headers.keys().any(|name| name != self.header && crate::headers::spells(name, &wanted))
    }

    fn anonymous_or(&self, failure: AuthFailure) -> Result<Identity, AuthFailure> {
        if self.allow_anonymous {
            Ok(Identity::anonymous())
        } else {
            Err(failure)
        }
    }
}

/// The token of the single `Authorization: Bearer …` header, if well-formed.
fn bearer_token(request: &RequestHeader) -> Option<&[u8]> {
    let mut values = request.headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.as_bytes();
    let space = text.iter().position(|&b| b == b' ')?;
    let token = text[space + 1..].trim_ascii();
    (text[..space].eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// The value as text when it is all visible ASCII (or tab), as `HeaderValue::to_str` has it.
fn header_text(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value)
        .ok()
        .filter(|text| text.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)))
}

fn has_access_token_param(query: &str) -> bool {
    query.split('&').any(|pair| pair.split('=').next() == Some("access_token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], target: &str) -> RequestHeader {
        let mut r = RequestHeader::build("POST", target.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn only_one_well_formed_bearer_header_counts() {
        assert_eq!(bearer_token(&request(&[("authorization", "Bearer abc")], "/")), Some(&b"abc"[..]));
        assert_eq!(bearer_token(&request(&[("authorization", "bearer  abc ")], "/")), Some(&b"abc"[..]));
        assert_eq!(bearer_token(&request(&[("authorization", "Basic abc")], "/")), None);
        assert_eq!(bearer_token(&request(&[("authorization", "Bearer")], "/")), None);
        assert_eq!(
            bearer_token(&request(&[("authorization", "Bearer a"), ("authorization", "Bearer b")], "/")),
            None
        );
    }

    #[test]
    fn a_token_is_text_only_when_it_is_visible_ascii() {
        assert_eq!(header_text(b"eyJ.a-b_c.d"), Some("eyJ.a-b_c.d"));
        for bad in [&b"a\x00b"[..], b"a\x7fb", "é".as_bytes(), b"a\rb"] {
            assert_eq!(header_text(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn access_token_in_the_query_is_found() {
        assert!(has_access_token_param("access_token=x"));
        assert!(has_access_token_param("a=1&access_token"));
        assert!(!has_access_token_param("my_access_token=x"));
    }

    #[test]
    fn a_proxy_user_is_believed_only_from_trusted_networks() {
        let proxy = TrustedProxy {
            header: HeaderName::from_static("x-authenticated-user"),
            networks: vec!["10.0.0.0/8".parse().unwrap()],
            allow_anonymous: false,
        };
        let req = request(&[("x-authenticated-user", "alice@example.com")], "/");
        let inside = proxy.authenticate(&req, Some("10.1.2.3".parse().unwrap())).unwrap();
        assert_eq!(inside.subject(), "alice@example.com");
        assert_eq!(
            proxy.authenticate(&req, Some("192.0.2.1".parse().unwrap())).err(),
            Some(AuthFailure::MissingUser)
        );
        assert_eq!(
            proxy.authenticate(&request(&[], "/"), Some("10.1.2.3".parse().unwrap())).err(),
            Some(AuthFailure::MissingUser)
        );
        for twice in [
            &[("x-authenticated-user", "mallory"), ("x-authenticated-user", "alice")][..],
            &[("x-authenticated-user", "mallory, alice")],
            &[("x-authenticated-user", "alice"), ("X_Authenticated_User", "mallory")],
        ] {
            assert_eq!(
                proxy.authenticate(&request(twice, "/"), Some("10.1.2.3".parse().unwrap())).err(),
                Some(AuthFailure::DuplicateUserHeader),
                "{twice:?}"
            );
        }
        let lenient = TrustedProxy { allow_anonymous: true, ..proxy };
        assert_eq!(
            lenient.authenticate(&req, Some("192.0.2.1".parse().unwrap())).unwrap().subject(),
            "anonymous"
        );
    }
}
