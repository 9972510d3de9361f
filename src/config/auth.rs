//! Agent authentication as operators write it: identity providers, and per-server modes.

use serde::{Deserialize, Serialize};

use super::ConfigDuration;

/// An OpenID Connect / OAuth 2.1 identity provider whose JWT access tokens the gateway accepts.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderConfig {
    /// The exact `iss` every token must carry.
    pub issuer: String,
    /// Where the signing keys are published (fetched and cached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// A file holding the JWKS (read at load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    /// The JWKS inline, as a YAML/JSON object or a JSON string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// No longer accepted here: audiences are per server (`agent_auth.audiences`). Read only to
    /// refuse it with a hint, since a provider-wide list let a token for one server in on another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
    /// Accepted signature algorithms (asymmetric only).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway: ConfigDuration,
    /// When set, the token header's `typ` must equal this (case-insensitive), e.g. `at+jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_typ: Option<String>,
    /// Authorization servers announced in Protected Resource Metadata; defaults to `[issuer]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_servers: Vec<String>,
    /// JWKS caching.
    #[serde(default)]
    pub jwks_cache: JwksCacheConfig,
    /// How many verified tokens are remembered (each until its `exp`).
    #[serde(default = "default_token_cache_size")]
    pub verified_token_cache_size: u64,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_leeway() -> ConfigDuration {
    ConfigDuration::secs(60)
}
fn default_token_cache_size() -> u64 {
    100_000
}

/// How fetched signing keys are cached.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwksCacheConfig {
    /// Lifetime of fetched keys when the response has no `Cache-Control: max-age`.
    #[serde(default = "default_ttl")]
    pub ttl: ConfigDuration,
    /// Lower bound applied to `max-age`.
    #[serde(default = "default_min_ttl")]
    pub min_ttl: ConfigDuration,
    /// Upper bound applied to `max-age`.
    #[serde(default = "default_max_ttl")]
    pub max_ttl: ConfigDuration,
    /// After a fetch (or a failed one), unknown `kid`s are refused without fetching for this long.
    #[serde(default = "default_cooldown")]
    pub refetch_cooldown: ConfigDuration,
    /// How long keys keep serving past their lifetime while the JWKS endpoint fails.
    #[serde(default = "default_max_stale")]
    pub max_stale: ConfigDuration,
    /// Timeout of one JWKS request.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout: ConfigDuration,
}

impl Default for JwksCacheConfig {
    fn default() -> Self {
        Self {
            ttl: default_ttl(),
            min_ttl: default_min_ttl(),
            max_ttl: default_max_ttl(),
            refetch_cooldown: default_cooldown(),
            max_stale: default_max_stale(),
            fetch_timeout: default_fetch_timeout(),
        }
    }
}

fn default_ttl() -> ConfigDuration {
    ConfigDuration::secs(300)
}
fn default_min_ttl() -> ConfigDuration {
    ConfigDuration::secs(30)
}
fn default_max_ttl() -> ConfigDuration {
    ConfigDuration::secs(86_400)
}
fn default_cooldown() -> ConfigDuration {
    ConfigDuration::secs(10)
}
fn default_max_stale() -> ConfigDuration {
    ConfigDuration::secs(86_400)
}
fn default_fetch_timeout() -> ConfigDuration {
    ConfigDuration::secs(5)
}

/// Who may reach a server.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentAuthConfig {
    /// A JWT access token from an identity provider is required (the MCP authorization spec's
    /// resource server).
    Jwt {
        /// Name of an entry in `identity_providers`.
        provider: String,
        /// Scopes the token must all carry.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        scopes: Vec<String>,
        /// Audiences accepted besides the server's own resource URLs, for identity providers that
        /// cannot issue per-resource audiences (RFC 8707).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        audiences: Vec<String>,
    },
    /// Nothing is checked, unless `validate_jwt` asks for a valid token anyway.
    Passthrough {
        /// Require a valid JWT even so ("Passthrough with Require JWT Validation").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        validate_jwt: Option<JwtCheckConfig>,
    },
    /// An authenticating proxy in front names the user in a header.
    TrustedProxy {
        /// The header carrying the user.
        #[serde(default = "default_user_header")]
        header: String,
        /// Source networks the header is believed from (CIDR); required.
        #[serde(default)]
        trusted_networks: Vec<String>,
        /// Without the header, continue as `anonymous` instead of answering 401.
        #[serde(default)]
        allow_anonymous: bool,
    },
    /// No authentication; refused unless `allow_unauthenticated: true`.
    None {
        /// Say that anyone may reach this server.
        #[serde(default)]
        allow_unauthenticated: bool,
    },
}

/// JWT validation on a passthrough server.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtCheckConfig {
    /// Name of an entry in `identity_providers`.
    pub provider: String,
    /// Scopes the token must all carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Audiences accepted besides the server's own resource URLs (see [`AgentAuthConfig::Jwt`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

/// The default trusted-proxy user header.
pub const DEFAULT_USER_HEADER: &str = "x-authenticated-user";

fn default_user_header() -> String {
    DEFAULT_USER_HEADER.to_owned()
}
