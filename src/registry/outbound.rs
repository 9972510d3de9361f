//! Validation of app authentication and outbound headers.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use http::{HeaderName, HeaderValue};

use super::fetch_url::check_fetch_url;
use crate::agent_auth::AgentAuth;
use crate::app_auth::{
    source_key, AppAuth, ClientCredentials, Outbound, OutboundHeader, OutboundValue, TokenEndpoint,
    TokenExchange,
};
use crate::config::{
    ApiKeyLocation, AppAuthConfig, ConfigError, OutboundSourceConfig, ServerConfig, TokenClientConfig,
    TokenExchangeConfig,
};
use crate::headers::canonical;
use crate::tokens::SourceMetrics;

/// Headers an outbound setting may never set: framing, routing and hop-by-hop headers. A name
/// is compared spelled with `-` ([`canonical`]): `Content_Length` is `Content-Length` to many
/// upstreams.
const FORBIDDEN: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// Compiles a server's `app_auth` and `outbound_headers`.
pub fn compile_outbound(
    server: &ServerConfig,
    auth: Option<&AgentAuth>,
    base_dir: &Path,
    at: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Outbound {
    let mut outbound = Outbound::default();
    // Spelled with `-`: two settings whose names differ only by `_` and `-` set the same header.
    let mut taken: Vec<HeaderName> = Vec::new();
    if let Some(config) = &server.app_auth {
        let at = format!("{at}.app_auth");
        outbound.app_auth = compile_app_auth(config, &server.name, base_dir, &at, errors, warnings);
        match &outbound.app_auth {
            Some(AppAuth::Static(name, _)) => taken.push(canonical(name)),
            Some(AppAuth::ClientCredentials(_) | AppAuth::Passthrough | AppAuth::OneTime) => {
                taken.push(http::header::AUTHORIZATION)
            }
            _ => {}
        }
    }
    let has_caller_token = matches!(auth, Some(AgentAuth::Jwt(_) | AgentAuth::Passthrough(_)) | None);
    for (i, header) in server.outbound_headers.iter().enumerate() {
        let at = format!("{at}.outbound_headers[{i}]");
        let Ok(name) = HeaderName::from_bytes(header.header.to_ascii_lowercase().as_bytes()) else {
            errors.push(ConfigError::new(
                format!("{at}.header"),
                format!("\"{}\" is not a header name", header.header),
            ));
            continue;
        };
        if FORBIDDEN.contains(&canonical(&name).as_str()) {
            errors.push(ConfigError::new(
                format!("{at}.header"),
                format!("{name} cannot be set by the gateway"),
            ));
            continue;
        }
        if taken.contains(&canonical(&name)) {
            errors.push(ConfigError::new(
                format!("{at}.header"),
                format!("{name} is already set by app_auth or another outbound header"),
            ));
            continue;
        }
        taken.push(canonical(&name));
        let prefix = header.prefix.clone().unwrap_or_default();
        if !is_header_safe(&prefix) {
            errors.push(ConfigError::new(format!("{at}.prefix"), "must not contain control characters"));
            continue;
        }
        let label: Arc<str> = format!("{}/{}", server.name, name).into();
        let value = match &header.source {
            OutboundSourceConfig::Static { value } => match value.resolve(base_dir) {
                Ok(secret) => match HeaderValue::from_str(&format!("{prefix}{}", secret.expose())) {
                    Ok(mut v) if is_header_safe(secret.expose()) => {
                        v.set_sensitive(true);
                        Some(OutboundValue::Static(v))
                    }
                    _ => {
                        errors.push(ConfigError::new(format!("{at}.value"), "not a valid header value"));
                        None
                    }
                },
                Err(e) => {
                    errors.push(ConfigError::new(format!("{at}.value"), e));
                    None
                }
            },
            OutboundSourceConfig::ServiceToken(client) => {
                client_credentials(client, label, prefix.clone(), base_dir, &at, errors, warnings)
                    .map(OutboundValue::ServiceToken)
            }
            OutboundSourceConfig::CallerToken {} | OutboundSourceConfig::TokenExchange(_)
                if !has_caller_token =>
            {
                errors.push(
                    ConfigError::new(
                        format!("{at}.from"),
                        "this server's callers have no token to forward or exchange",
                    )
                    .hint("caller_token and token_exchange need agent_auth jwt or passthrough"),
                );
                None
            }
            OutboundSourceConfig::CallerToken {} => Some(OutboundValue::CallerToken),
            OutboundSourceConfig::TokenExchange(exchange) => {
                token_exchange(exchange, label, base_dir, &at, errors, warnings).map(OutboundValue::Exchange)
            }
            OutboundSourceConfig::Claim { claim } if claim.is_empty() => {
                errors.push(ConfigError::new(format!("{at}.claim"), "must name a claim"));
                None
            }
            OutboundSourceConfig::Claim { claim } => Some(OutboundValue::Claim(claim.clone())),
        };
        if let Some(value) = value {
            outbound.headers.push(OutboundHeader { name, prefix, value });
        }
    }
    outbound
}

/// Names of headers the outbound settings set, to strip from inbound requests.
pub fn outbound_header_names(outbound: &Outbound) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = outbound.headers.iter().map(|h| h.name.clone()).collect();
    if let Some(AppAuth::Static(name, _)) = &outbound.app_auth {
        names.push(name.clone());
    }
    names
}

fn is_header_safe(text: &str) -> bool {
    text.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fn compile_app_auth(
    config: &AppAuthConfig,
    server: &str,
    base_dir: &Path,
    at: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<AppAuth> {
    let secret = |source: &crate::config::SecretSource, field: &str, errors: &mut Vec<ConfigError>| {
        source
            .resolve(base_dir)
            .map_err(|e| errors.push(ConfigError::new(format!("{at}.{field}"), e)))
            .ok()
            .filter(|s| {
                let safe = is_header_safe(s.expose());
                if !safe {
                    errors.push(ConfigError::new(format!("{at}.{field}"), "contains control characters"));
                }
                safe
            })
    };
    let sensitive =
        |text: String, field: &str, errors: &mut Vec<ConfigError>| match HeaderValue::from_str(&text) {
            Ok(mut v) => {
                v.set_sensitive(true);
                Some(v)
            }
            Err(_) => {
                errors.push(ConfigError::new(format!("{at}.{field}"), "not a valid header value"));
                None
            }
        };
    match config {
        AppAuthConfig::ApiKey { name, value, location: ApiKeyLocation::Header } => {
            let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| {
                    errors.push(ConfigError::new(
                        format!("{at}.name"),
                        format!("\"{name}\" is not a header name"),
                    ))
                })
                .ok()?;
            if FORBIDDEN.contains(&canonical(&header).as_str()) {
                errors.push(ConfigError::new(
                    format!("{at}.name"),
                    format!("{header} cannot be set by the gateway"),
                ));
                return None;
            }
            let value = secret(value, "value", errors)?;
            Some(AppAuth::Static(header, sensitive(value.expose().to_owned(), "value", errors)?))
        }
        AppAuthConfig::ApiKey { name, value, location: ApiKeyLocation::Query } => {
            if name.is_empty() {
                errors.push(ConfigError::new(format!("{at}.name"), "must not be empty"));
                return None;
            }
            let value = secret(value, "value", errors)?;
            let pair = url::form_urlencoded::Serializer::new(String::new())
                .append_pair(name, value.expose())
                .finish();
            Some(AppAuth::Query { name: name.clone(), pair })
        }
        AppAuthConfig::Bearer { token } => {
            let token = secret(token, "token", errors)?;
            Some(AppAuth::Static(
                http::header::AUTHORIZATION,
                sensitive(format!("Bearer {}", token.expose()), "token", errors)?,
            ))
        }
        AppAuthConfig::Basic { username, password } => {
            if username.contains(':') {
                errors.push(ConfigError::new(format!("{at}.username"), "must not contain ':'"));
                return None;
            }
            let password = secret(password, "password", errors)?;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()));
            Some(AppAuth::Static(
                http::header::AUTHORIZATION,
                sensitive(format!("Basic {encoded}"), "password", errors)?,
            ))
        }
        AppAuthConfig::Oauth2ClientCredentials(client) => client_credentials(
            client,
            format!("{server}/app_auth").into(),
            "Bearer ".to_owned(),
            base_dir,
            at,
            errors,
            warnings,
        )
        .map(AppAuth::ClientCredentials),
        AppAuthConfig::Passthrough {} => Some(AppAuth::Passthrough),
        AppAuthConfig::OneTime {} => Some(AppAuth::OneTime),
    }
}

#[allow(clippy::too_many_arguments)]
fn endpoint(
    url: &str,
    client_id: &str,
    secret: &crate::config::SecretSource,
    method: crate::config::ClientAuthMethod,
    timeout: std::time::Duration,
    base_dir: &Path,
    at: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<TokenEndpoint> {
    let risk = "the client secret and tokens cross the network unencrypted";
    if !check_fetch_url(url, &format!("{at}.token_url"), risk, errors, warnings) {
        return None;
    }
    if client_id.is_empty() {
        errors.push(ConfigError::new(format!("{at}.client_id"), "must not be empty"));
        return None;
    }
    let client_secret = secret
        .resolve(base_dir)
        .map_err(|e| errors.push(ConfigError::new(format!("{at}.client_secret"), e)))
        .ok()?;
    if timeout.is_zero() {
        errors.push(ConfigError::new(format!("{at}.timeout"), "must be greater than zero"));
        return None;
    }
    Some(TokenEndpoint {
        url: url.to_owned(),
        client_id: client_id.to_owned(),
        client_secret,
        method,
        timeout,
    })
}

#[allow(clippy::too_many_arguments)]
fn client_credentials(
    c: &TokenClientConfig,
    name: Arc<str>,
    prefix: String,
    base_dir: &Path,
    at: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<ClientCredentials> {
    let endpoint = endpoint(
        &c.token_url,
        &c.client_id,
        &c.client_secret,
        c.auth_method,
        c.timeout.0,
        base_dir,
        at,
        errors,
        warnings,
    )?;
    let mut params = Vec::new();
    if !c.scopes.is_empty() {
        params.push(("scope".to_owned(), c.scopes.join(" ")));
    }
    if let Some(audience) = &c.audience {
        params.push(("audience".to_owned(), audience.clone()));
    }
    if let Some(resource) = &c.resource {
        params.push(("resource".to_owned(), resource.clone()));
    }
    let key = source_key("client_credentials", &endpoint, &params);
    Some(ClientCredentials::new(name, key, endpoint, params, prefix))
}

fn token_exchange(
    c: &TokenExchangeConfig,
    name: Arc<str>,
    base_dir: &Path,
    at: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<TokenExchange> {
    let endpoint = endpoint(
        &c.token_url,
        &c.client_id,
        &c.client_secret,
        c.auth_method,
        c.timeout.0,
        base_dir,
        at,
        errors,
        warnings,
    )?;
    let mut params = Vec::new();
    for (key, value) in [
        ("audience", &c.audience),
        ("resource", &c.resource),
        ("scope", &c.scope),
        ("requested_token_type", &c.requested_token_type),
    ] {
        if let Some(value) = value {
            params.push((key.to_owned(), value.clone()));
        }
    }
    let mut keyed = params.clone();
    keyed.push(("subject_token_type".to_owned(), c.subject_token_type.clone()));
    let key = source_key("token_exchange", &endpoint, &keyed);
    Some(TokenExchange {
        lookups: SourceMetrics::new(name.clone()),
        name,
        key,
        endpoint: Arc::new(endpoint),
        params: Arc::new(params),
        subject_token_type: c.subject_token_type.clone(),
        requested_token_type: c.requested_token_type.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::parse_yaml;
    use crate::registry::Registry;

    /// The config errors of one server with `fields`, as `path: message` lines.
    fn errors_of(fields: &str) -> String {
        let yaml = format!(
            "listen: [\"127.0.0.1:8080\"]\npublic_url: http://x\nagent_auth: {{mode: none, allow_unauthenticated: true}}\nservers:\n  - {{name: a, path: /a, upstream: \"http://127.0.0.1:1\", {fields}}}\n"
        );
        match Registry::compile(parse_yaml(&yaml).expect("parses"), Path::new(".")) {
            Ok(_) => String::new(),
            Err(errors) => errors.to_string(),
        }
    }

    #[test]
    fn a_header_spelled_with_underscores_is_the_header_spelled_with_dashes() {
        let framing = errors_of("outbound_headers: [{header: Content_Length, from: claim, claim: sub}]");
        assert!(framing.contains("servers[0].outbound_headers[0].header"), "{framing}");
        let twice = errors_of(
            "outbound_headers: [{header: x-user, from: claim, claim: sub}, {header: X_User, from: claim, claim: email}]",
        );
        assert!(twice.contains("servers[0].outbound_headers[1].header"), "{twice}");
        assert!(twice.contains("already set"), "{twice}");
        let key = errors_of("app_auth: {type: api_key, name: Transfer_Encoding, value: k}");
        assert!(key.contains("servers[0].app_auth.name"), "{key}");
    }
}
