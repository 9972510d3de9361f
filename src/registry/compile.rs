//! Validation: turns a [`Config`] into a [`Registry`], collecting every error with its YAML path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::auth::{compile_agent_auth, compile_providers, warn_shared_audiences, AuthContext};
use super::outbound::{compile_outbound, outbound_header_names};
use super::{HealthCheck, Listener, McpServer, Registry};
use crate::affinity::SessionKey;
use crate::agent_auth::{
    resource_url, AgentAuth, JwtProvider, ProtectedResource, PublicUrl, WELL_KNOWN_PREFIX,
};
use crate::config::HealthCheckKind;
use crate::config::{
    AgentAuthConfig, Config, ConfigError, ConfigErrors, IdentityProviderConfig, ListenerConfig, ServerConfig,
};
use crate::headers::HeaderPolicy;
use crate::metrics::ServerMetrics;
use crate::origin::OriginPolicy;
use crate::routes::{alias_path, RouteTable};
use crate::tokens::TokenCacheSettings;
use crate::upstream::Upstream;
use std::sync::atomic::AtomicUsize;

/// What every server's compilation needs to know about the rest of the config.
struct Shared<'a> {
    base_dir: &'a Path,
    public: Option<PublicUrl>,
    providers: BTreeMap<String, Arc<JwtProvider>>,
    provider_configs: &'a BTreeMap<String, IdentityProviderConfig>,
    default_auth: Option<&'a AgentAuthConfig>,
    /// The top-level `allow_underscore_headers`.
    underscore_headers: bool,
}

/// Paths the gateway keeps for itself; no server prefix may claim them.
const RESERVED_PREFIXES: [&str; 2] = ["/servers", "/.well-known"];

impl Registry {
    /// Validates `config` and compiles it. Relative file paths are taken from `base_dir` (the
    /// config file's folder). Upstream host names are resolved here, never per request.
    pub fn compile(config: Config, base_dir: &Path) -> Result<Registry, ConfigErrors> {
        Self::compile_after(config, base_dir, None)
    }

    /// Like [`Registry::compile`] on a reload: what did not change is taken over from `previous`
    /// (identity providers with their key caches).
    pub fn compile_after(
        config: Config,
        base_dir: &Path,
        previous: Option<&Registry>,
    ) -> Result<Registry, ConfigErrors> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();

        let listeners = compile_listeners(&config.listen, base_dir, &mut errors);
        let public = compile_public_url(&config.public_url, &mut errors);

        let admin_addr = parse_socket_addr(&config.admin.listen, "admin.listen", &mut errors);
        if let Some(admin) = admin_addr {
            if listeners.iter().any(|l| l.addr == admin) {
                errors.push(ConfigError::new(
                    "admin.listen",
                    "the admin listener uses the same address as a gateway listener",
                ));
            }
        }
        let admin_token = config.admin.auth_token.as_ref().and_then(|source| {
            source.resolve(base_dir).map_err(|e| errors.push(ConfigError::new("admin.auth_token", e))).ok()
        });

        let tc = &config.token_cache;
        if !(tc.refresh_at > 0.0 && tc.refresh_at <= 1.0) {
            errors.push(
                ConfigError::new("token_cache.refresh_at", "must be in (0, 1]")
                    .hint("0.8 refreshes a token after 80% of its life"),
            );
        }
        if tc.capacity == 0 {
            errors.push(ConfigError::new("token_cache.capacity", "must be at least 1"));
        }
        let token_settings = TokenCacheSettings {
            skew: tc.expiry_skew.0,
            refresh_at: tc.refresh_at,
            default_ttl: tc.default_ttl.0,
            failure_backoff: tc.failure_backoff.0,
        };
        if config.dns_refresh.0 < Duration::from_secs(1) {
            errors.push(ConfigError::new("dns_refresh", "must be at least 1s"));
        }

        let providers =
            compile_providers(&config.identity_providers, base_dir, previous, &mut errors, &mut warnings);
        if let Some(default_auth) = &config.agent_auth {
            // Checked once here; servers that inherit it do not repeat its errors.
            let cx = AuthContext {
                providers: &providers,
                provider_names: &config.identity_providers,
                resources: &[],
            };
            compile_agent_auth(default_auth, &cx, "agent_auth", &mut errors, &mut Vec::new());
        }
        let shared = Shared {
            base_dir,
            public: public.clone(),
            providers,
            provider_configs: &config.identity_providers,
            default_auth: config.agent_auth.as_ref(),
            underscore_headers: config.allow_underscore_headers,
        };

        let mut names = HashSet::new();
        let mut prefixes = HashSet::new();
        let mut servers = Vec::with_capacity(config.servers.len());
        for (i, server) in config.servers.iter().enumerate() {
            let at = format!("servers[{i}]");
            if !is_valid_name(&server.name) {
                errors.push(
                    ConfigError::new(
                        format!("{at}.name"),
                        format!("invalid server name \"{}\"", server.name),
                    )
                    .hint("use letters, digits, '-' and '_' (it appears in /servers/<name>/mcp)"),
                );
            } else if !names.insert(server.name.as_str()) {
                errors.push(ConfigError::new(
                    format!("{at}.name"),
                    format!("duplicate server name \"{}\"", server.name),
                ));
            }
            if let Some(prefix) = compile_prefix(&server.path, &format!("{at}.path"), &mut errors) {
                if !prefixes.insert(prefix.clone()) {
                    errors.push(ConfigError::new(
                        format!("{at}.path"),
                        format!("another server already uses the path \"{}\"", server.path),
                    ));
                }
                if let Some(compiled) =
                    compile_server(server, prefix, &at, &shared, &mut errors, &mut warnings)
                {
                    servers.push(compiled);
                }
            }
        }

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        warn_shared_audiences(&config, &servers, &mut warnings);
        let routes = RouteTable::new(
            servers
                .iter()
                .enumerate()
                .flat_map(|(i, s)| [(s.prefix.clone(), i, false), (alias_path(&s.name), i, true)]),
        );
        let public = public.unwrap_or(PublicUrl { origin: String::new(), base_path: String::new() });
        let mut metadata_paths = HashMap::new();
        for (i, server) in servers.iter().enumerate().filter(|(_, s)| s.resources.is_some()) {
            for (route, via_alias) in [(server.prefix.clone(), false), (alias_path(&server.name), true)] {
                metadata_paths
                    .insert(format!("{WELL_KNOWN_PREFIX}{}{route}", public.base_path), (i, via_alias));
                // Also where a path-stripping proxy in front would send it.
                metadata_paths.insert(format!("{WELL_KNOWN_PREFIX}{route}"), (i, via_alias));
            }
        }
        let public_host = url::Url::parse(&config.public_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let session_key = match &config.session_affinity_key {
            None => SessionKey::per_process(),
            Some(source) => match source.resolve(base_dir) {
                Ok(secret) => SessionKey::new(secret.expose().as_bytes()),
                Err(e) => return Err(ConfigErrors::one(ConfigError::new("session_affinity_key", e))),
            },
        };
        Ok(Registry {
            session_key,
            hash: String::new(),
            watched: Vec::new(),
            token_settings,
            token_capacity: config.token_cache.capacity,
            public_host,
            providers: shared.providers,
            metadata_paths,
            warnings,
            listeners,
            admin_addr: admin_addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090))),
            admin_token,
            public_base_path: public.base_path,
            dns_refresh: config.dns_refresh.0,
            http1_engine: config.http1_engine,
            servers,
            routes,
            loaded_at: SystemTime::now(),
            source: Arc::new(config),
        })
    }
}

fn compile_listeners(
    listen: &[ListenerConfig],
    base_dir: &Path,
    errors: &mut Vec<ConfigError>,
) -> Vec<Listener> {
    if listen.is_empty() {
        errors.push(
            ConfigError::new("listen", "at least one listener is required")
                .hint("listen: [\"127.0.0.1:8080\"]"),
        );
    }
    let mut seen = HashSet::new();
    let mut listeners = Vec::new();
    for (i, listener) in listen.iter().enumerate() {
        let at = format!("listen[{i}]");
        let Some(addr) = parse_socket_addr(&listener.address, &at, errors) else {
            continue;
        };
        if !seen.insert(addr) {
            errors.push(ConfigError::new(at.clone(), format!("{addr} is listed twice")));
        }
        let tls = listener.tls.as_ref().and_then(|tls| {
            let cert = base_dir.join(&tls.cert).to_string_lossy().into_owned();
            let key = base_dir.join(&tls.key).to_string_lossy().into_owned();
            match pingora::tls::load_certs_and_key_files(&cert, &key) {
                Ok(Some(_)) => Some((cert, key)),
                Ok(None) => {
                    errors.push(
                        ConfigError::new(
                            format!("{at}.tls"),
                            "no certificate or no private key found in the PEM files",
                        )
                        .hint("cert holds the chain (BEGIN CERTIFICATE), key a PKCS#8, PKCS#1 or SEC1 key"),
                    );
                    None
                }
                Err(e) => {
                    errors.push(ConfigError::new(
                        format!("{at}.tls"),
                        format!("cannot load the certificate or key: {e}"),
                    ));
                    None
                }
            }
        });
        listeners.push(Listener { addr, tls });
    }
    listeners
}

fn parse_socket_addr(text: &str, at: &str, errors: &mut Vec<ConfigError>) -> Option<SocketAddr> {
    text.parse()
        .map_err(|_| {
            errors.push(
                ConfigError::new(at, format!("\"{text}\" is not an ip:port address"))
                    .hint("write an IP and a port, like 127.0.0.1:8080 or [::1]:8080"),
            )
        })
        .ok()
}

fn compile_public_url(text: &str, errors: &mut Vec<ConfigError>) -> Option<PublicUrl> {
    let url = match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
        Ok(_) => {
            errors.push(
                ConfigError::new("public_url", "must be an http or https URL")
                    .hint("public_url: https://mcp.example.com"),
            );
            return None;
        }
        Err(e) => {
            errors.push(
                ConfigError::new("public_url", format!("not a valid URL: {e}"))
                    .hint("public_url: https://mcp.example.com"),
            );
            return None;
        }
    };
    if url.query().is_some() || url.fragment().is_some() {
        errors.push(ConfigError::new("public_url", "must not have a query string or fragment"));
        return None;
    }
    Some(PublicUrl {
        origin: url.origin().ascii_serialization(),
        base_path: url.path().trim_end_matches('/').to_owned(),
    })
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A prefix is `/` or `/seg[/seg…]` of unreserved characters, without a trailing `/`.
fn compile_prefix(path: &str, at: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
    if path == "/" {
        return Some(String::new());
    }
    let hint = "a path looks like /github or /tools/search";
    let well_formed = path.starts_with('/')
        && !path.ends_with('/')
        && path[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        });
    if !well_formed {
        errors.push(ConfigError::new(at, format!("invalid path \"{path}\"")).hint(hint));
        return None;
    }
    if let Some(reserved) =
        RESERVED_PREFIXES.iter().find(|r| path == **r || path.starts_with(&format!("{r}/")))
    {
        errors.push(ConfigError::new(
            at,
            format!("\"{path}\" is under {reserved}, which the gateway serves itself"),
        ));
        return None;
    }
    Some(path.to_owned())
}

fn compile_server(
    server: &ServerConfig,
    prefix: String,
    at: &str,
    shared: &Shared<'_>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<McpServer> {
    let urls: Vec<(String, &str)> = match (&server.upstream, server.upstreams.is_empty()) {
        (Some(url), true) => vec![(format!("{at}.upstream"), url.as_str())],
        (None, false) => server
            .upstreams
            .iter()
            .enumerate()
            .map(|(j, u)| (format!("{at}.upstreams[{j}]"), u.as_str()))
            .collect(),
        (Some(_), false) => {
            errors.push(
                ConfigError::new(at, "both `upstream` and `upstreams` are set")
                    .hint("use `upstream` for one URL, `upstreams` for replicas"),
            );
            return None;
        }
        (None, true) => {
            errors.push(ConfigError::new(at, "no upstream").hint("add `upstream: http://host:port/mcp`"));
            return None;
        }
    };
    let before = errors.len();
    let mut upstreams = Vec::with_capacity(urls.len());
    for (path, url) in urls {
        match Upstream::from_url(url, server.tls.sni.as_deref(), server.tls.verify) {
            Ok(upstream) => upstreams.push(Arc::new(upstream)),
            Err(e) => errors.push(ConfigError::new(path, e.to_string())),
        }
    }
    if let Some(first) = upstreams.first() {
        if upstreams.iter().any(|u| u.base_path != first.base_path) {
            errors.push(ConfigError::new(format!("{at}.upstreams"), "all replicas must have the same path"));
        }
    }
    for (field, value) in [
        ("connect_timeout", server.connect_timeout.0),
        ("read_timeout", server.read_timeout.0),
        ("stream_idle_timeout", server.stream_idle_timeout.0),
    ] {
        if value.is_zero() {
            errors.push(ConfigError::new(format!("{at}.{field}"), "must be greater than zero"));
        }
    }
    if let Some(sni) = &server.tls.sni {
        if sni.is_empty() || !sni.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b)) {
            errors.push(ConfigError::new(format!("{at}.tls.sni"), format!("\"{sni}\" is not a host name")));
        }
    }
    // The resource URLs its metadata announces: the audiences its tokens must name by default.
    let resources: Vec<String> = shared
        .public
        .iter()
        .flat_map(|public| [resource_url(public, &prefix), resource_url(public, &alias_path(&server.name))])
        .collect();
    let auth = compile_server_auth(server, at, shared, &resources, errors, warnings);
    let outbound = compile_outbound(server, auth.as_ref(), shared.base_dir, at, errors, warnings);
    let headers = auth.as_ref().and_then(|auth| {
        let mut extra = outbound_header_names(&outbound);
        extra.extend(auth.proxy_header().cloned());
        let underscores = server.allow_underscore_headers.unwrap_or(shared.underscore_headers);
        HeaderPolicy::new(&extra, &server.restricted_headers)
            .map(|policy| policy.allowing_underscores(underscores))
            .map_err(|e| {
                errors.push(ConfigError::new(format!("{at}.restricted_headers[{}]", e.index), e.to_string()))
            })
            .ok()
    });
    for (i, origin) in server.allowed_origins.iter().enumerate() {
        let valid = url::Url::parse(origin)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.path() == "/" && u.query().is_none());
        if valid.is_none() {
            errors.push(
                ConfigError::new(
                    format!("{at}.allowed_origins[{i}]"),
                    format!("\"{origin}\" is not an origin"),
                )
                .hint("an origin is scheme://host[:port], like https://app.example.com"),
            );
        }
    }
    if errors.len() > before {
        return None;
    }
    let (auth, headers) = (auth?, headers?);
    let resources = match (auth.jwt(), &shared.public) {
        (Some(check), Some(public)) => {
            let build = |route: &str| {
                ProtectedResource::new(
                    public,
                    route,
                    &server.name,
                    &check.provider.authorization_servers,
                    &check.scopes,
                )
            };
            match (build(&prefix), build(&alias_path(&server.name))) {
                (Some(a), Some(b)) => Some(Box::new([a, b])),
                _ => {
                    errors.push(ConfigError::new(
                        format!("{at}.agent_auth"),
                        "cannot build the resource metadata challenge",
                    ));
                    return None;
                }
            }
        }
        _ => None,
    };
    let health = server.health_check.as_ref().and_then(|h| {
        let at = format!("{at}.health_check");
        let path = match (h.kind, &h.path) {
            (HealthCheckKind::Http, Some(p))
                if p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                p.clone()
            }
            (HealthCheckKind::Http, _) => {
                errors
                    .push(ConfigError::new(format!("{at}.path"), "an http check needs a path like /health"));
                return None;
            }
            (HealthCheckKind::Tcp, _) => String::new(),
        };
        if h.interval.0 < Duration::from_millis(100)
            || h.timeout.0.is_zero()
            || h.healthy_threshold == 0
            || h.unhealthy_threshold == 0
        {
            errors.push(ConfigError::new(
                at,
                "interval must be at least 100ms, timeout above zero, thresholds at least 1",
            ));
            return None;
        }
        Some(HealthCheck {
            kind: h.kind,
            path,
            interval: h.interval.0,
            timeout: h.timeout.0,
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
        })
    });
    if upstreams.len() > 64 {
        errors.push(ConfigError::new(format!("{at}.upstreams"), "at most 64 replicas"));
    }
    if errors.len() > before {
        return None;
    }
    let name: Arc<str> = server.name.as_str().into();
    Some(McpServer {
        metrics: ServerMetrics::new(name.clone(), auth.mode()),
        balance: server.load_balancing,
        health,
        next: AtomicUsize::new(0),
        auth,
        outbound,
        headers,
        origins: OriginPolicy::new(&server.allowed_origins),
        resources,
        name,
        prefix,
        strip_prefix: server.strip_prefix,
        upstreams,
        connect_timeout: server.connect_timeout.0,
        read_timeout: server.read_timeout.0,
        stream_idle_timeout: server.stream_idle_timeout.0,
    })
}

fn compile_server_auth(
    server: &ServerConfig,
    at: &str,
    shared: &Shared<'_>,
    resources: &[String],
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<AgentAuth> {
    let path = format!("{at}.agent_auth");
    let cx = AuthContext { providers: &shared.providers, provider_names: shared.provider_configs, resources };
    match (&server.agent_auth, shared.default_auth) {
        (Some(own), _) => compile_agent_auth(own, &cx, &path, errors, warnings),
        // The default's errors were reported at `agent_auth`; its warnings name this server.
        (None, Some(default)) => compile_agent_auth(default, &cx, &path, &mut Vec::new(), warnings),
        (None, None) => {
            errors.push(
                ConfigError::new(at, "no agent_auth, here or at the top level")
                    .hint("set agent_auth: {mode: jwt, provider: …} (or trusted_proxy, passthrough, or none with allow_unauthenticated: true)"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_yaml;

    fn compile(yaml: &str) -> Result<Registry, ConfigErrors> {
        Registry::compile(parse_yaml(yaml).expect("parses"), Path::new("."))
    }

    #[test]
    fn a_good_config_compiles_with_both_routes_per_server() {
        let r = compile("listen: [\"127.0.0.1:8080\"]\npublic_url: https://mcp.example.com/gw/\nagent_auth: {mode: none, allow_unauthenticated: true}\nservers:\n  - {name: gh, path: /github, upstream: \"http://127.0.0.1:3001/mcp\"}\n").unwrap();
        assert_eq!(r.public_base_path, "/gw");
        assert_eq!(r.route("/github/x").unwrap().1.name.as_ref(), "gh");
        assert_eq!(r.route("/servers/gh/mcp").unwrap().1.name.as_ref(), "gh");
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let err = compile(
            "listen: [\"nowhere\"]\npublic_url: ftp://x\nagent_auth: {mode: none, allow_unauthenticated: true}\nservers:\n  - {name: \"a b\", path: github, upstream: \"http://127.0.0.1:1\"}\n  - {name: c, path: /servers/c, upstream: \"gopher://127.0.0.1\"}\n  - {name: d, path: /d}\n  - {name: e, path: /e, upstream: \"http://127.0.0.1:1\", connect_timeout: 0s}\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "listen[0]",
                "public_url",
                "servers[0].name",
                "servers[0].path",
                "servers[1].path",
                "servers[2]",
                "servers[3].connect_timeout"
            ],
            "{err}"
        );
    }

    #[test]
    fn duplicate_names_and_paths_are_refused() {
        let err = compile("listen: [\"127.0.0.1:8080\"]\npublic_url: http://x\nagent_auth: {mode: none, allow_unauthenticated: true}\nservers:\n  - {name: a, path: /a, upstream: \"http://127.0.0.1:1\"}\n  - {name: a, path: /a, upstream: \"http://127.0.0.1:1\"}\n").unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        assert!(err.to_string().contains("duplicate server name"));
        assert!(err.to_string().contains("already uses the path"));
    }

    #[test]
    fn a_missing_secret_names_the_variable() {
        let err = compile("listen: [\"127.0.0.1:8080\"]\npublic_url: http://x\nadmin: {auth_token: \"${env:PORTCULLIS_UNSET_FOR_TEST}\"}\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("admin.auth_token: environment variable PORTCULLIS_UNSET_FOR_TEST is not set"),
            "{err}"
        );
    }

    #[test]
    fn replicas_must_share_a_path() {
        let err = compile("listen: [\"127.0.0.1:8080\"]\npublic_url: http://x\nagent_auth: {mode: none, allow_unauthenticated: true}\nservers:\n  - {name: a, path: /a, upstreams: [\"http://127.0.0.1:1/mcp\", \"http://127.0.0.1:2/other\"]}\n").unwrap_err();
        assert_eq!(err.0[0].path, "servers[0].upstreams");
    }
}
