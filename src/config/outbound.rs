//! Outbound credentials as operators write them: a server's app authentication and its
//! additional outbound headers.

use serde::{Deserialize, Serialize};

use super::{ConfigDuration, SecretSource};

/// The header a `one_time` caller puts its upstream credential in.
pub const ONE_TIME_HEADER: &str = "x-upstream-authorization";

/// What credential the upstream receives (one per server).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AppAuthConfig {
    /// An API key in a header or a query parameter.
    ApiKey {
        /// Header or parameter name.
        name: String,
        /// The key.
        value: SecretSource,
        /// `header` (default) or `query`.
        #[serde(default, rename = "in")]
        location: ApiKeyLocation,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: SecretSource,
    },
    /// `Authorization: Basic …`.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: SecretSource,
    },
    /// An OAuth 2.0 client-credentials token, fetched and cached.
    Oauth2ClientCredentials(TokenClientConfig),
    /// The caller's own `Authorization` header is forwarded.
    Passthrough {},
    /// The caller sends `X-Upstream-Authorization`; the upstream receives it as `Authorization`.
    OneTime {},
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyLocation {
    /// A request header.
    #[default]
    Header,
    /// A query parameter.
    Query,
}

/// How the gateway authenticates to a token endpoint.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// A client of a token endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenClientConfig {
    /// The token endpoint.
    pub token_url: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: SecretSource,
    /// Scopes requested.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// `audience` parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// `resource` parameter (RFC 8707).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Client authentication style.
    #[serde(default)]
    pub auth_method: ClientAuthMethod,
    /// Timeout of one token request.
    #[serde(default = "default_token_timeout")]
    pub timeout: ConfigDuration,
}

fn default_token_timeout() -> ConfigDuration {
    ConfigDuration::secs(5)
}

/// One additional outbound header.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct OutboundHeaderConfig {
    /// Header name sent upstream.
    pub header: String,
    /// Put before the value, e.g. `"Bearer "`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Where the value comes from.
    #[serde(flatten)]
    pub source: OutboundSourceConfig,
}

/// Where an outbound header's value comes from.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutboundSourceConfig {
    /// A client-credentials token.
    ServiceToken(TokenClientConfig),
    /// The inbound token the caller authenticated with.
    CallerToken {},
    /// An RFC 8693 token exchange on behalf of the caller.
    TokenExchange(TokenExchangeConfig),
    /// A claim of the caller's identity.
    Claim {
        /// Claim name, e.g. `sub` or `email` (`sub` is the proxy user for trusted-proxy callers).
        claim: String,
    },
    /// A literal or a secret reference.
    Static {
        /// The value.
        value: SecretSource,
    },
}

/// RFC 8693 token exchange settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeConfig {
    /// The token endpoint.
    pub token_url: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: SecretSource,
    /// `audience` parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// `resource` parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// `scope` parameter (space-separated scopes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `requested_token_type`; the answer's `issued_token_type` must match it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_token_type: Option<String>,
    /// `subject_token_type` of the caller's token.
    #[serde(default = "default_subject_token_type")]
    pub subject_token_type: String,
    /// Client authentication style.
    #[serde(default)]
    pub auth_method: ClientAuthMethod,
    /// Timeout of one exchange request.
    #[serde(default = "default_token_timeout")]
    pub timeout: ConfigDuration,
}

fn default_subject_token_type() -> String {
    "urn:ietf:params:oauth:token-type:access_token".to_owned()
}

/// Token cache behaviour.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenCacheConfig {
    /// A cached token is dropped this long before its `expires_in` runs out.
    #[serde(default = "default_skew")]
    pub expiry_skew: ConfigDuration,
    /// A refresh starts once this fraction of a token's lifetime has passed (0.0–1.0).
    #[serde(default = "default_refresh_at")]
    pub refresh_at: f64,
    /// Lifetime assumed when a token endpoint gives no `expires_in`.
    #[serde(default = "default_token_ttl")]
    pub default_ttl: ConfigDuration,
    /// Most tokens held (client-credentials and exchanged, all sources together).
    #[serde(default = "default_token_capacity")]
    pub capacity: u64,
    /// After a failed fetch, requests for that credential fail fast for this long.
    #[serde(default = "default_failure_backoff")]
    pub failure_backoff: ConfigDuration,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            expiry_skew: default_skew(),
            refresh_at: default_refresh_at(),
            default_ttl: default_token_ttl(),
            capacity: default_token_capacity(),
            failure_backoff: default_failure_backoff(),
        }
    }
}

fn default_skew() -> ConfigDuration {
    ConfigDuration::secs(30)
}
fn default_refresh_at() -> f64 {
    0.8
}
fn default_token_ttl() -> ConfigDuration {
    ConfigDuration::secs(300)
}
fn default_token_capacity() -> u64 {
    100_000
}
fn default_failure_backoff() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(1))
}
