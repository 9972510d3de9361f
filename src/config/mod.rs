//! The configuration file: what operators write, as serde types that refuse unknown fields.
//!
//! These types are never read on the request path. [`crate::registry::Registry::compile`]
//! validates a [`Config`] and turns it into the runtime registry.

mod auth;
mod duration;
mod error;
mod load;
mod outbound;
mod secret;

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

pub use auth::{
    AgentAuthConfig, IdentityProviderConfig, JwksCacheConfig, JwtCheckConfig, DEFAULT_USER_HEADER,
};
pub use duration::ConfigDuration;
pub use error::{ConfigError, ConfigErrors};
pub use load::parse_yaml;
pub use outbound::{
    ApiKeyLocation, AppAuthConfig, ClientAuthMethod, OutboundHeaderConfig, OutboundSourceConfig,
    TokenCacheConfig, TokenClientConfig, TokenExchangeConfig, ONE_TIME_HEADER,
};
pub use secret::{Secret, SecretSource, REDACTED};

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the gateway accepts MCP clients.
    pub listen: Vec<ListenerConfig>,
    /// The URL clients use to reach the gateway. Resource metadata and rewritten legacy SSE
    /// endpoints are built from it, never from the request's `Host` header.
    pub public_url: String,
    /// The admin listener (health, metrics, redacted config).
    #[serde(default)]
    pub admin: AdminConfig,
    /// How often upstream host names are resolved again in the background.
    #[serde(default = "default_dns_refresh")]
    pub dns_refresh: ConfigDuration,
    /// Identity providers, by name, that `jwt` agent authentication refers to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub identity_providers: BTreeMap<String, IdentityProviderConfig>,
    /// Agent authentication for servers that do not set their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_auth: Option<AgentAuthConfig>,
    /// How outbound tokens (client credentials, token exchange) are cached.
    #[serde(default)]
    pub token_cache: TokenCacheConfig,
    /// Key that authenticates the session ids the gateway hands out for servers with several
    /// replicas. Give every gateway host the same key; without one, a random key per process is
    /// used (sessions then stay on the host that created them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_key: Option<SecretSource>,
    /// Forward inbound header fields whose name holds `_` (servers may say otherwise). Off by
    /// default, as in nginx: many upstreams read `X_User` as `X-User`. When on, every rule that
    /// strips, restricts or sets a header still reads `_` as `-`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_underscore_headers: bool,
    /// The engine that carries HTTP/1 connections (HTTP/2 always goes through pingora-proxy).
    /// A reload applies it to connections accepted from then on.
    #[serde(default, skip_serializing_if = "Http1Engine::is_default")]
    pub http1_engine: Http1Engine,
    /// The registry of MCP servers behind the gateway.
    #[serde(default)]
    pub servers: Vec<ServerConfig>,
}

/// Which engine carries HTTP/1 connections. Both run the same phase code.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Http1Engine {
    /// The gateway's own HTTP/1 engine (`src/http1/`): about nginx's CPU cost per request.
    #[default]
    Gateway,
    /// pingora-proxy's `HttpProxy`, Pingora's battle-tested path (about 1.8 x nginx's CPU per
    /// request in `load/run`).
    Pingora,
}

impl Http1Engine {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Config {
    /// Files the config refers to (TLS material, JWKS files, `${file:…}` secrets), as written.
    pub fn referenced_files(&self) -> Vec<String> {
        let mut files = Vec::new();
        let mut secret = |s: &SecretSource| {
            if let SecretSource::File(path) = s {
                files.push(path.clone());
            }
        };
        if let Some(token) = &self.admin.auth_token {
            secret(token);
        }
        for server in &self.servers {
            match &server.app_auth {
                Some(AppAuthConfig::ApiKey { value, .. }) => secret(value),
                Some(AppAuthConfig::Bearer { token }) => secret(token),
                Some(AppAuthConfig::Basic { password, .. }) => secret(password),
                Some(AppAuthConfig::Oauth2ClientCredentials(client)) => secret(&client.client_secret),
                _ => {}
            }
            for header in &server.outbound_headers {
                match &header.source {
                    OutboundSourceConfig::ServiceToken(client) => secret(&client.client_secret),
                    OutboundSourceConfig::TokenExchange(exchange) => secret(&exchange.client_secret),
                    OutboundSourceConfig::Static { value } => secret(value),
                    _ => {}
                }
            }
        }
        for listener in &self.listen {
            if let Some(tls) = &listener.tls {
                files.push(tls.cert.clone());
                files.push(tls.key.clone());
            }
        }
        files.extend(self.identity_providers.values().filter_map(|p| p.jwks_file.clone()));
        files
    }
}

fn default_dns_refresh() -> ConfigDuration {
    ConfigDuration::secs(30)
}

/// One listening socket: an address, and TLS when `tls` is given.
///
/// Written either as a plain `"host:port"` string or as `{address: …, tls: {…}}`.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerConfig {
    /// `ip:port` to bind, e.g. `0.0.0.0:8443` or `[::1]:8080`.
    pub address: String,
    /// Serve TLS on this listener (HTTP/2 is offered by ALPN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsListenerConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerFields {
    address: String,
    #[serde(default)]
    tls: Option<TlsListenerConfig>,
}

impl<'de> Deserialize<'de> for ListenerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListenerVisitor;
        impl<'de> Visitor<'de> for ListenerVisitor {
            type Value = ListenerConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address like \"0.0.0.0:8443\" or a map with `address` and `tls`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ListenerConfig { address: v.to_owned(), tls: None })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let fields = ListenerFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ListenerConfig { address: fields.address, tls: fields.tls })
            }
        }
        deserializer.deserialize_any(ListenerVisitor)
    }
}

/// TLS for a listener: a PEM certificate chain and its private key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// The admin listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port` of the admin listener.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// When set, `/config` requires `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<SecretSource>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: default_admin_listen(), auth_token: None }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".to_owned()
}

/// One MCP server in the registry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Unique name: letters, digits, `-` and `_`. The server is also reachable at
    /// `/servers/<name>/mcp`.
    pub name: String,
    /// Path prefix on the gateway, e.g. `/github`.
    pub path: String,
    /// The upstream URL (use `upstreams` for several replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Several upstream replicas with the same path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<String>,
    /// `true` (default): `/github/x` goes to `<upstream path>/x`. `false`: the whole request path
    /// is appended to the upstream path.
    #[serde(default = "default_true")]
    pub strip_prefix: bool,
    /// Time allowed to open a connection to the upstream.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    /// Longest silence from the upstream on a request that cannot receive an event stream
    /// (its `Accept` does not include `text/event-stream`).
    #[serde(default = "default_read_timeout")]
    pub read_timeout: ConfigDuration,
    /// Longest silence from the upstream on a request that may receive an event stream (GET SSE,
    /// and Streamable HTTP POSTs, which accept `text/event-stream`). Keep it well above the
    /// upstream's keep-alive interval.
    #[serde(default = "default_stream_idle_timeout")]
    pub stream_idle_timeout: ConfigDuration,
    /// TLS towards an `https` upstream.
    #[serde(default)]
    pub tls: UpstreamTlsConfig,
    /// Who may reach this server (defaults to the top-level `agent_auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_auth: Option<AgentAuthConfig>,
    /// Inbound headers never forwarded to this server: case-insensitive globs like `x-internal-*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restricted_headers: Vec<String>,
    /// Forward inbound header fields whose name holds `_` (defaults to the top-level
    /// `allow_underscore_headers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_underscore_headers: Option<bool>,
    /// How requests without a session are spread over `upstreams`.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// Active health checks of the replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    /// The credential the upstream receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_auth: Option<AppAuthConfig>,
    /// Additional headers sent upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound_headers: Vec<OutboundHeaderConfig>,
    /// Browser origins allowed to call this server (`https://app.example.com`); when set, any other
    /// `Origin` gets 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
}

fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration::secs(5)
}
fn default_read_timeout() -> ConfigDuration {
    ConfigDuration::secs(60)
}
fn default_stream_idle_timeout() -> ConfigDuration {
    ConfigDuration::secs(600)
}

/// How requests without a session pick a replica.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// In turn.
    #[default]
    RoundRobin,
    /// The replica with the fewest requests in flight.
    LeastConnections,
}

/// How replicas are probed.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// A TCP connect.
    #[default]
    Tcp,
    /// `GET <path>`; any status below 500 is healthy (http upstreams; https ones get a TCP check).
    Http,
}

/// Active health checks.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `tcp` (default) or `http`.
    #[serde(default, rename = "type")]
    pub kind: HealthCheckKind,
    /// Path probed by `http` checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Time between probes.
    #[serde(default = "default_check_interval")]
    pub interval: ConfigDuration,
    /// Timeout of one probe.
    #[serde(default = "default_check_timeout")]
    pub timeout: ConfigDuration,
    /// Successes in a row that make a replica healthy again.
    #[serde(default = "default_threshold")]
    pub healthy_threshold: u32,
    /// Failures in a row that make a replica unhealthy.
    #[serde(default = "default_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_check_interval() -> ConfigDuration {
    ConfigDuration::secs(5)
}
fn default_check_timeout() -> ConfigDuration {
    ConfigDuration::secs(1)
}
fn default_threshold() -> u32 {
    2
}

/// TLS settings for `https` upstreams.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// Verify the upstream's certificate chain and host name (default `true`).
    #[serde(default = "default_true")]
    pub verify: bool,
    /// Server name sent in SNI and verified; defaults to the upstream URL's host.
    /// (The trusted CA store is the system's, or the Pingora server conf's `ca_file`.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}

impl Default for UpstreamTlsConfig {
    fn default() -> Self {
        Self { verify: true, sni: None }
    }
}
