//! Validation of identity providers and agent authentication.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use http::HeaderName;
use ipnet::IpNet;
use jsonwebtoken::Algorithm;

use super::fetch_url::check_fetch_url;
use super::McpServer;
use crate::agent_auth::{
    is_quotable, AgentAuth, Audiences, JwksTimings, JwtCheck, JwtProvider, JwtRules, KeySet, Keys,
    RemoteJwks, TrustedProxy, VerifiedTokens,
};
use crate::config::{AgentAuthConfig, Config, ConfigError, IdentityProviderConfig, JwtCheckConfig};

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
    if config.audiences.is_some() {
        errors.push(
            ConfigError::new(
                format!("{at}.audiences"),
                "audiences are no longer set per identity provider: a provider-wide list let a token issued for one server in on every other",
            )
            .hint("remove it: each server accepts tokens for its own resource URLs (public_url + path, and /servers/<name>/mcp); list any other audience under that server's agent_auth.audiences"),
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

/// What a server's agent authentication is compiled against.
pub struct AuthContext<'a> {
    /// Compiled identity providers.
    pub providers: &'a BTreeMap<String, Arc<JwtProvider>>,
    /// Every configured provider, including those with errors of their own.
    pub provider_names: &'a BTreeMap<String, IdentityProviderConfig>,
    /// The server's own resource URLs (prefix, alias): the audiences it accepts by default.
    pub resources: &'a [String],
}

/// Compiles one agent-auth setting found at `at`.
pub fn compile_agent_auth(
    config: &AgentAuthConfig,
    cx: &AuthContext<'_>,
    at: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<AgentAuth> {
    match config {
        AgentAuthConfig::Jwt { provider, scopes, audiences } => jwt_check(
            &JwtCheckConfig {
                provider: provider.clone(),
                scopes: scopes.clone(),
                audiences: audiences.clone(),
            },
            cx,
            at,
            errors,
        )
        .map(AgentAuth::Jwt),
        AgentAuthConfig::Passthrough { validate_jwt: None } => Some(AgentAuth::Passthrough(None)),
        AgentAuthConfig::Passthrough { validate_jwt: Some(check) } => {
            jwt_check(check, cx, &format!("{at}.validate_jwt"), errors)
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
    cx: &AuthContext<'_>,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<JwtCheck> {
    for (i, audience) in config.audiences.iter().enumerate() {
        if audience.is_empty() {
            errors.push(
                ConfigError::new(format!("{at}.audiences[{i}]"), "an audience must not be empty")
                    .hint("the server's own resource URLs are accepted without listing them"),
            );
        }
    }
    for (i, scope) in config.scopes.iter().enumerate() {
        if scope.is_empty() || scope.contains(' ') || !is_quotable(scope) {
            errors.push(
                ConfigError::new(format!("{at}.scopes[{i}]"), format!("\"{scope}\" is not a scope token"))
                    .hint("a scope has no spaces, quotes or backslashes"),
            );
        }
    }
    match cx.providers.get(&config.provider) {
        Some(provider) => Some(JwtCheck {
            provider: provider.clone(),
            audiences: Audiences::new(cx.resources, &config.audiences),
            scopes: config.scopes.clone(),
        }),
        // A provider with errors of its own was reported at its own path.
        None if cx.provider_names.contains_key(&config.provider) => None,
        None => {
            let known: Vec<&str> = cx.provider_names.keys().map(String::as_str).collect();
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

/// Warns when several servers accept the same audience from the same issuer: a token issued for
/// one of them is then accepted by all. Each server's own resource URLs are its alone, so this
/// only happens through audiences listed explicitly (`agent_auth.audiences`).
pub fn warn_shared_audiences(config: &Config, servers: &[McpServer], warnings: &mut Vec<ConfigError>) {
    // (issuer, audience) → (YAML path of the first listing, the servers accepting it)
    let mut accepted: BTreeMap<(&str, &str), (String, Vec<&str>)> = BTreeMap::new();
    for (i, (source, server)) in config.servers.iter().zip(servers).enumerate() {
        let Some(check) = server.auth.jwt() else { continue };
        let at = match &source.agent_auth {
            Some(AgentAuthConfig::Passthrough { .. }) => {
                format!("servers[{i}].agent_auth.validate_jwt.audiences")
            }
            Some(_) => format!("servers[{i}].agent_auth.audiences"),
            None => "agent_auth.audiences".to_owned(),
        };
        for audience in check.audiences.iter() {
            let entry = accepted
                .entry((&check.provider.issuer, audience))
                .or_insert_with(|| (String::new(), Vec::new()));
            if check.audiences.explicit().any(|a| a == audience) && entry.0.is_empty() {
                entry.0 = at.clone();
            }
            entry.1.push(&server.name);
        }
    }
    for ((issuer, audience), (at, names)) in accepted {
        if names.len() > 1 {
            warnings.push(
                ConfigError::new(
                    at,
                    format!(
                        "servers {} all accept tokens from {issuer} for the audience \"{audience}\": a token issued for one of them is accepted by the others",
                        names.join(", ")
                    ),
                )
                .hint("let the identity provider issue per-resource audiences (RFC 8707) and drop the listed audience, or accept that these servers share their tokens"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::parse_yaml;
    use crate::registry::Registry;

    /// A config with provider `corp` (keys from a fixture file) and the given tail.
    fn compile(tail: &str) -> Result<Registry, crate::config::ConfigErrors> {
        let jwks = format!("{}/tests/fixtures/jwt/rsa-a.jwk.json", env!("CARGO_MANIFEST_DIR"));
        let jwks_dir = tempfile::tempdir().unwrap();
        let file = jwks_dir.path().join("jwks.json");
        let key: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(jwks).unwrap()).unwrap();
        std::fs::write(&file, serde_json::json!({"keys": [key]}).to_string()).unwrap();
        let yaml = format!(
            "listen: [\"127.0.0.1:8080\"]\npublic_url: https://gw.example/base\nidentity_providers:\n  corp: {{issuer: \"https://idp.example\", jwks_file: \"{}\"}}\n{tail}",
            file.display()
        );
        Registry::compile(parse_yaml(&yaml).expect("parses"), Path::new("."))
    }

    fn accepted(registry: &Registry, server: &str) -> Vec<String> {
        let (_, s) = registry.route(&format!("/servers/{server}/mcp")).unwrap();
        s.auth.jwt().unwrap().audiences.iter().map(str::to_owned).collect()
    }

    #[test]
    fn each_server_accepts_its_own_resource_urls_by_default() {
        let r = compile("agent_auth: {mode: jwt, provider: corp}\nservers:\n  - {name: github, path: /github, upstream: \"http://127.0.0.1:1\"}\n  - {name: search, path: /search, upstream: \"http://127.0.0.1:1\", agent_auth: {mode: passthrough, validate_jwt: {provider: corp}}}\n").unwrap();
        assert_eq!(
            accepted(&r, "github"),
            ["https://gw.example/base/github", "https://gw.example/base/servers/github/mcp"]
        );
        assert_eq!(
            accepted(&r, "search"),
            ["https://gw.example/base/search", "https://gw.example/base/servers/search/mcp"]
        );
        let (_, github) = r.route("/github").unwrap();
        let announced: Vec<&str> =
            github.resources.as_ref().unwrap().iter().map(|p| p.resource.as_str()).collect();
        assert_eq!(accepted(&r, "github"), announced, "exactly what the metadata announces");
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn listed_audiences_add_to_the_resource_urls_and_sharing_one_is_a_warning() {
        let r = compile("agent_auth: {mode: jwt, provider: corp, audiences: [\"api://mcp\"]}\nservers:\n  - {name: github, path: /github, upstream: \"http://127.0.0.1:1\"}\n  - {name: search, path: /search, upstream: \"http://127.0.0.1:1\"}\n  - {name: wiki, path: /wiki, upstream: \"http://127.0.0.1:1\", agent_auth: {mode: jwt, provider: corp, audiences: [\"api://wiki\"]}}\n").unwrap();
        assert!(accepted(&r, "github").contains(&"api://mcp".to_owned()));
        assert_eq!(accepted(&r, "wiki")[2], "api://wiki");
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        let warning = r.warnings[0].to_string();
        assert!(warning.starts_with("agent_auth.audiences: servers github, search all accept"), "{warning}");
        assert!(warning.contains("\"api://mcp\"") && !warning.contains("wiki"), "{warning}");
    }

    #[test]
    fn listing_another_servers_resource_url_is_a_shared_audience() {
        let r = compile("agent_auth: {mode: jwt, provider: corp}\nservers:\n  - {name: github, path: /github, upstream: \"http://127.0.0.1:1\"}\n  - {name: search, path: /search, upstream: \"http://127.0.0.1:1\", agent_auth: {mode: jwt, provider: corp, audiences: [\"https://gw.example/base/github\"]}}\n").unwrap();
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0]
            .to_string()
            .starts_with("servers[1].agent_auth.audiences: servers github, search"));
    }

    #[test]
    fn a_provider_wide_audience_list_is_refused_with_a_hint() {
        let err = compile("  other: {issuer: \"https://idp2.example\", jwks_url: \"https://idp2.example/jwks\", audiences: [\"https://gw.example/base/github\"]}\nagent_auth: {mode: jwt, provider: corp, audiences: [\"\"]}\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "identity_providers.other.audiences: audiences are no longer set per identity provider"
            ),
            "{text}"
        );
        assert!(text.contains("agent_auth.audiences"), "the hint says where they go: {text}");
        assert!(text.contains("agent_auth.audiences[0]: an audience must not be empty"), "{text}");
    }
}
