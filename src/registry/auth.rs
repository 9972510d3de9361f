//! Validation of identity providers and agent authentication.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use http::HeaderName;
use ipnet::IpNet;
use jsonwebtoken::Algorithm;

use super::fetch_url::check_fetch_url;
use crate::agent_auth::{
    is_quotable, AgentAuth, JwksTimings, JwtCheck, JwtProvider, JwtRules, KeySet, Keys, RemoteJwks,
    TrustedProxy, VerifiedTokens,
};
use crate::config::{AgentAuthConfig, ConfigError, IdentityProviderConfig, JwtCheckConfig};

/// Algorithms a provider may allow: asymmetric only.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Compiles every identity provider; errors and warnings are pushed with their paths.
///
/// A provider whose keys are fetched and whose settings did not change since `previous` is taken
/// over as it is, with its cached keys and verified tokens: a reload causes no burst of JWKS
/// requests.
pub fn compile_providers(
    providers: &BTreeMap<String, IdentityProviderConfig>,
    base_dir: &Path,
    previous: Option<&super::Registry>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> BTreeMap<String, Arc<JwtProvider>> {
    providers
        .iter()
        .filter_map(|(name, config)| {
            let unchanged = previous
                .filter(|p| p.source.identity_providers.get(name) == Some(config))
                .and_then(|p| p.providers.get(name));
            if let Some(kept) = unchanged.filter(|p| p.remote_keys().is_some()) {
                return Some((name.clone(), kept.clone()));
            }
            let at = format!("identity_providers.{name}");
            let before = errors.len();
            let provider = compile_provider(name, config, base_dir, &at, errors, warnings);
            (errors.len() == before).then_some(provider).flatten().map(|p| (name.clone(), Arc::new(p)))
        })
        .collect()
}

fn compile_provider(
    name: &str,
    config: &IdentityProviderConfig,
    base_dir: &Path,
    at: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<JwtProvider> {
    if config.issuer.is_empty() {
        errors.push(ConfigError::new(format!("{at}.issuer"), "must not be empty"));
    }
    if config.audiences.is_empty() || config.audiences.iter().any(String::is_empty) {
        errors.push(
            ConfigError::new(format!("{at}.audiences"), "at least one non-empty audience is required")
                .hint("the MCP spec binds tokens to the resource: list the servers' public URLs"),
        );
    }
    let mut algorithms = Vec::new();
    for (i, text) in config.algorithms.iter().enumerate() {
        match text.parse::<Algorithm>() {
            Ok(alg) if ASYMMETRIC.contains(&alg) => algorithms.push(alg),
            Ok(_) => errors.push(
                ConfigError::new(format!("{at}.algorithms[{i}]"), format!("{text} is a symmetric algorithm"))
                    .hint("only asymmetric algorithms are accepted: RS*, PS*, ES256, ES384, EdDSA"),
            ),
            Err(_) => errors.push(
                ConfigError::new(
                    format!("{at}.algorithms[{i}]"),
                    format!("unknown or refused algorithm \"{text}\""),
                )
                .hint("use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"),
            ),
        }
    }
    if config.algorithms.is_empty() {
        errors.push(ConfigError::new(format!("{at}.algorithms"), "at least one algorithm is required"));
    }
    let authorization_servers = if config.authorization_servers.is_empty() {
        vec![config.issuer.clone()]
    } else {
        config.authorization_servers.clone()
    };
    for (i, server) in authorization_servers.iter().enumerate() {
        if url::Url::parse(server).is_err() || !is_quotable(server) {
            let path = if config.authorization_servers.is_empty() {
                format!("{at}.issuer")
            } else {
                format!("{at}.authorization_servers[{i}]")
            };
            errors.push(
                ConfigError::new(path, format!("\"{server}\" is not a URL"))
                    .hint("the issuer (or authorization server) is announced in resource metadata"),
            );
        }
    }
    let c = &config.jwks_cache;
    if c.min_ttl.0 > c.max_ttl.0 {
        errors.push(ConfigError::new(format!("{at}.jwks_cache"), "min_ttl is greater than max_ttl"));
    }
    if c.fetch_timeout.0.is_zero() {
        errors.push(ConfigError::new(format!("{at}.jwks_cache.fetch_timeout"), "must be greater than zero"));
    }
    if let Some(typ) = &config.required_typ {
        if typ.is_empty() {
            errors.push(ConfigError::new(format!("{at}.required_typ"), "must not be empty"));
        }
    }
    if config.verified_token_cache_size == 0 {
        warnings.push(ConfigError::new(
            format!("{at}.verified_token_cache_size"),
            "0 disables the verified-token cache: every request verifies a signature",
        ));
    }

    let name: Arc<str> = name.into();
    let cache = VerifiedTokens::new(config.verified_token_cache_size);
    let keys = match (&config.jwks_url, &config.jwks_file, &config.jwks) {
        (Some(url), None, None) => {
            let risk = "anyone on the path can replace the signing keys";
            if !check_fetch_url(url, &format!("{at}.jwks_url"), risk, errors, warnings) {
                return None;
            }
            let timings = JwksTimings {
                ttl: c.ttl.0,
                min_ttl: c.min_ttl.0,
                max_ttl: c.max_ttl.0,
                cooldown: c.refetch_cooldown.0,
                max_stale: c.max_stale.0,
                fetch_timeout: c.fetch_timeout.0,
            };
            let on_removed_cache = cache.clone();
            Keys::Remote(Arc::new(RemoteJwks::new(
                name.clone(),
                url.clone(),
                algorithms.clone(),
                timings,
                Box::new(move || on_removed_cache.invalidate_all()),
            )))
        }
        (None, Some(file), None) => {
            let full = base_dir.join(file);
            let text = match std::fs::read_to_string(&full) {
                Ok(text) => text,
                Err(e) => {
                    errors.push(ConfigError::new(
                        format!("{at}.jwks_file"),
                        format!("cannot read {}: {e}", full.display()),
                    ));
                    return None;
                }
            };
            let document: serde_json::Value = match serde_json::from_str(&text) {
                Ok(doc) => doc,
                Err(e) => {
                    errors.push(ConfigError::new(format!("{at}.jwks_file"), format!("not JSON: {e}")));
                    return None;
                }
            };
            Keys::Static(Arc::new(static_keys(&document, &algorithms, &format!("{at}.jwks_file"), errors)?))
        }
        (None, None, Some(inline)) => {
            let document = match inline {
                serde_json::Value::String(text) => match serde_json::from_str(text) {
                    Ok(doc) => doc,
                    Err(e) => {
                        errors.push(ConfigError::new(format!("{at}.jwks"), format!("not JSON: {e}")));
                        return None;
                    }
                },
                other => other.clone(),
            };
            Keys::Static(Arc::new(static_keys(&document, &algorithms, &format!("{at}.jwks"), errors)?))
        }
        _ => {
            errors.push(ConfigError::new(at, "exactly one of jwks_url, jwks_file and jwks is required"));
            return None;
        }
    };
    let rules = JwtRules {
        issuer: config.issuer.clone(),
        audiences: config.audiences.clone(),
        algorithms,
        leeway: config.leeway.0,
        required_typ: config.required_typ.clone(),
    };
    Some(JwtProvider::new(name, rules, authorization_servers, keys, cache))
}

fn static_keys(
    document: &serde_json::Value,
    algorithms: &[Algorithm],
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<KeySet> {
    KeySet::parse(document, algorithms).map_err(|e| errors.push(ConfigError::new(at, e.to_string()))).ok()
}

/// Compiles one agent-auth setting found at `at`.
pub fn compile_agent_auth(
    config: &AgentAuthConfig,
    providers: &BTreeMap<String, Arc<JwtProvider>>,
    provider_names: &BTreeMap<String, IdentityProviderConfig>,
    at: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<AgentAuth> {
    match config {
        AgentAuthConfig::Jwt { provider, scopes } => jwt_check(
            &JwtCheckConfig { provider: provider.clone(), scopes: scopes.clone() },
            providers,
            provider_names,
            at,
            errors,
        )
        .map(AgentAuth::Jwt),
        AgentAuthConfig::Passthrough { validate_jwt: None } => Some(AgentAuth::Passthrough(None)),
        AgentAuthConfig::Passthrough { validate_jwt: Some(check) } => {
            jwt_check(check, providers, provider_names, &format!("{at}.validate_jwt"), errors)
                .map(|c| AgentAuth::Passthrough(Some(c)))
        }
        AgentAuthConfig::TrustedProxy { header, trusted_networks, allow_anonymous } => {
            let Ok(header) = HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes()) else {
                errors.push(ConfigError::new(
                    format!("{at}.header"),
                    format!("\"{header}\" is not a header name"),
                ));
                return None;
            };
            if trusted_networks.is_empty() {
                errors.push(
                    ConfigError::new(format!("{at}.trusted_networks"), "trusted_proxy needs at least one trusted network")
                        .hint("list the proxy's addresses, e.g. [\"10.0.0.0/8\"]; from anywhere else the header is ignored"),
                );
                return None;
            }
            let mut networks = Vec::new();
            for (i, text) in trusted_networks.iter().enumerate() {
                let parsed =
                    text.parse::<IpNet>().or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
                match parsed {
                    Ok(net) => networks.push(net),
                    Err(_) => errors.push(
                        ConfigError::new(
                            format!("{at}.trusted_networks[{i}]"),
                            format!("\"{text}\" is not an IP network"),
                        )
                        .hint("write CIDR like 10.0.0.0/8 or an address"),
                    ),
                }
            }
            Some(AgentAuth::TrustedProxy(TrustedProxy {
                header,
                networks,
                allow_anonymous: *allow_anonymous,
            }))
        }
        AgentAuthConfig::None { allow_unauthenticated: true } => {
            warnings.push(ConfigError::new(
                at,
                "agent authentication is off: anyone who reaches the gateway can use this server",
            ));
            Some(AgentAuth::None)
        }
        AgentAuthConfig::None { allow_unauthenticated: false } => {
            errors.push(
                ConfigError::new(at, "mode none leaves the server open to anyone")
                    .hint("add allow_unauthenticated: true if that is intended, or choose jwt, trusted_proxy or passthrough"),
            );
            None
        }
    }
}

fn jwt_check(
    config: &JwtCheckConfig,
    providers: &BTreeMap<String, Arc<JwtProvider>>,
    provider_names: &BTreeMap<String, IdentityProviderConfig>,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<JwtCheck> {
    for (i, scope) in config.scopes.iter().enumerate() {
        if scope.is_empty() || scope.contains(' ') || !is_quotable(scope) {
            errors.push(
                ConfigError::new(format!("{at}.scopes[{i}]"), format!("\"{scope}\" is not a scope token"))
                    .hint("a scope has no spaces, quotes or backslashes"),
            );
        }
    }
    match providers.get(&config.provider) {
        Some(provider) => Some(JwtCheck { provider: provider.clone(), scopes: config.scopes.clone() }),
        // A provider with errors of its own was reported at its own path.
        None if provider_names.contains_key(&config.provider) => None,
        None => {
            let known: Vec<&str> = provider_names.keys().map(String::as_str).collect();
            errors.push(
                ConfigError::new(
                    format!("{at}.provider"),
                    format!("no identity provider named \"{}\"", config.provider),
                )
                .hint(if known.is_empty() {
                    "declare it under identity_providers".to_owned()
                } else {
                    format!("known providers: {}", known.join(", "))
                }),
            );
            None
        }
    }
}
