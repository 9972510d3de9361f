//! Bodies of the responses the gateway writes itself: JSON, and for a JSON-RPC request a
//! JSON-RPC error that carries the request's id, so MCP clients can match it to their call.

use serde::Serialize;
use serde_json::value::RawValue;

use std::sync::Arc;

use crate::agent_auth::JwtRejection;

/// Why the gateway answered instead of the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// No server is configured at the path (404).
    UnknownRoute,
    /// The path has `.`/`..` segments or is otherwise unusable (400).
    BadPath,
    /// The upstream could not be reached or broke the exchange (502).
    UpstreamUnreachable,
    /// The upstream did not connect or answer in time (504).
    UpstreamTimeout,
    /// The request itself could not be read (400).
    BadRequest,
    /// The gateway failed internally (500).
    Internal,
    /// The `Origin` (or, on a loopback listener, the `Host`) is not allowed (403).
    OriginDenied,
    /// No bearer token where one is required (401).
    MissingToken,
    /// The bearer token failed verification (401).
    InvalidToken(JwtRejection),
    /// The token lacks a required scope (403).
    InsufficientScope,
    /// An access token was sent in the query string (400).
    TokenInQuery,
    /// The trusted proxy named no user (401).
    MissingUser,
    /// The trusted proxy's user header came more than once, or as a list (401).
    DuplicateUserHeader,
    /// Authentication cannot be done right now: the identity provider's keys are unavailable (503).
    AuthUnavailable,
    /// `one_time` app auth without `X-Upstream-Authorization` (401).
    MissingUpstreamCredential,
    /// An outbound setting needs the caller's token and there is none (401).
    NoCallerToken,
    /// A value for an outbound header is not header-safe (400); names the header.
    UnsafeHeaderValue(Arc<str>),
    /// A credential source (token endpoint) failed (503); names the source.
    CredentialUnavailable(Arc<str>),
    /// The upstream refused the credential the gateway sent (502).
    UpstreamRejectedCredential,
    /// The upstream asked for a credential and the gateway sends it none (502).
    UpstreamRequiresCredentials,
    /// The MCP session is unknown, forged, or its replica is gone (404: start a new session).
    SessionNotFound,
}

impl GatewayError {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownRoute | Self::SessionNotFound => 404,
            Self::BadPath | Self::BadRequest | Self::TokenInQuery | Self::UnsafeHeaderValue(_) => 400,
            Self::MissingToken
            | Self::InvalidToken(_)
            | Self::MissingUser
            | Self::DuplicateUserHeader
            | Self::MissingUpstreamCredential
            | Self::NoCallerToken => 401,
            Self::OriginDenied | Self::InsufficientScope => 403,
            Self::UpstreamUnreachable
            | Self::UpstreamRejectedCredential
            | Self::UpstreamRequiresCredentials => 502,
            Self::AuthUnavailable | Self::CredentialUnavailable(_) => 503,
            Self::UpstreamTimeout => 504,
            Self::Internal => 500,
        }
    }

    /// Stable machine-readable reason (also a metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownRoute => "unknown_route",
            Self::BadPath => "bad_path",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::BadRequest => "bad_request",
            Self::Internal => "internal_error",
            Self::OriginDenied => "origin_not_allowed",
            Self::MissingToken => "missing_token",
            Self::InvalidToken(_) => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::TokenInQuery => "token_in_query",
            Self::MissingUser => "missing_user",
            Self::DuplicateUserHeader => "duplicate_user_header",
            Self::AuthUnavailable => "auth_unavailable",
            Self::MissingUpstreamCredential => "missing_upstream_credential",
            Self::NoCallerToken => "no_caller_token",
            Self::UnsafeHeaderValue(_) => "unsafe_header_value",
            Self::CredentialUnavailable(_) => "credential_unavailable",
            Self::UpstreamRejectedCredential => "upstream_rejected_credential",
            Self::UpstreamRequiresCredentials => "upstream_requires_credentials",
            Self::SessionNotFound => "session_not_found",
        }
    }

    /// Human-readable message.
    pub fn message(&self) -> &'static str {
        match self {
            Self::UnknownRoute => "no MCP server is configured at this path",
            Self::BadPath => "the request path contains '.' or '..' segments",
            Self::UpstreamUnreachable => "the MCP server could not be reached",
            Self::UpstreamTimeout => "the MCP server did not answer in time",
            Self::BadRequest => "the request could not be read",
            Self::Internal => "the gateway failed to handle the request",
            Self::OriginDenied => "this origin may not call this MCP server",
            Self::MissingToken => "a bearer access token is required",
            Self::InvalidToken(rejection) => rejection.description(),
            Self::InsufficientScope => "the access token lacks a scope this MCP server requires",
            Self::TokenInQuery => "access tokens are accepted in the Authorization header only",
            Self::MissingUser => "the authenticating proxy did not name a user",
            Self::DuplicateUserHeader => "the authenticating proxy named the user more than once",
            Self::AuthUnavailable => "authentication is unavailable: the identity provider cannot be reached",
            Self::MissingUpstreamCredential => {
                "this MCP server needs the upstream credential in the X-Upstream-Authorization header"
            }
            Self::NoCallerToken => "this MCP server needs the caller's bearer token",
            Self::UnsafeHeaderValue(_) => "a value of the caller's identity cannot be sent in a header",
            Self::CredentialUnavailable(_) => {
                "the credential for the MCP server cannot be obtained right now"
            }
            Self::UpstreamRejectedCredential => "the MCP server refused the gateway's credential",
            Self::UpstreamRequiresCredentials => {
                "the MCP server asked for credentials the gateway is not configured to send"
            }
            Self::SessionNotFound => "session not found: initialize a new MCP session",
        }
    }

    /// The credential source or header the error is about, when it names one.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Self::UnsafeHeaderValue(name) | Self::CredentialUnavailable(name) => Some(name),
            _ => None,
        }
    }
}

/// The JSON-RPC error code used for gateway errors (the implementation-defined server range).
pub const JSONRPC_GATEWAY_ERROR: i32 = -32000;

#[derive(Serialize)]
struct PlainBody<'a> {
    error: PlainError<'a>,
}

#[derive(Serialize)]
struct PlainError<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
}

#[derive(Serialize)]
struct RpcBody<'a> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    error: RpcError<'a>,
}

#[derive(Serialize)]
struct RpcError<'a> {
    code: i32,
    message: &'a str,
    data: RpcErrorData<'a>,
}

#[derive(Serialize)]
struct RpcErrorData<'a> {
    status: u16,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
}

/// How to shape an error body.
#[derive(Debug)]
pub enum BodyShape {
    /// `{"error": {"code": …, "message": …}}`.
    Plain,
    /// A JSON-RPC error response with this id (`null` when the id could not be read).
    JsonRpc(Option<Box<RawValue>>),
}

/// Serializes the error body.
pub fn render(error: &GatewayError, shape: &BodyShape) -> Vec<u8> {
    let rendered = match shape {
        BodyShape::Plain => serde_json::to_vec(&PlainBody {
            error: PlainError { code: error.reason(), message: error.message(), source: error.subject() },
        }),
        BodyShape::JsonRpc(id) => {
            let null = RawValue::NULL;
            serde_json::to_vec(&RpcBody {
                jsonrpc: "2.0",
                id: id.as_deref().unwrap_or(null),
                error: RpcError {
                    code: JSONRPC_GATEWAY_ERROR,
                    message: error.message(),
                    data: RpcErrorData {
                        status: error.status(),
                        reason: error.reason(),
                        source: error.subject(),
                    },
                },
            })
        }
    };
    // Serializing these plain structs cannot fail; keep a fixed body rather than panic anyway.
    rendered.unwrap_or_else(|_| br#"{"error":{"code":"internal_error"}}"#.to_vec())
}

/// The `id` of a single JSON-RPC request body, if it has a string or number id.
pub fn jsonrpc_id(body: &[u8]) -> Option<Box<RawValue>> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<Box<RawValue>>,
    }
    let id = serde_json::from_slice::<IdOnly>(body).ok()?.id?;
    let first = id.get().as_bytes().first().copied()?;
    (first == b'"' || first == b'-' || first.is_ascii_digit()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_error_names_its_reason() {
        let body = render(&GatewayError::UnknownRoute, &BodyShape::Plain);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "unknown_route");
    }

    #[test]
    fn a_jsonrpc_error_carries_the_request_id_verbatim() {
        for id in [r#""abc-1""#, "42", "-7", "1.5e3"] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
            let parsed = jsonrpc_id(body.as_bytes()).unwrap();
            let rendered = render(&GatewayError::UpstreamTimeout, &BodyShape::JsonRpc(Some(parsed)));
            let v: serde_json::Value = serde_json::from_slice(&rendered).unwrap();
            assert_eq!(v["id"], serde_json::from_str::<serde_json::Value>(id).unwrap());
            assert_eq!(v["error"]["code"], JSONRPC_GATEWAY_ERROR);
            assert_eq!(v["error"]["data"]["status"], 504);
        }
    }

    #[test]
    fn notifications_batches_and_junk_have_no_id() {
        assert!(jsonrpc_id(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).is_none());
        assert!(jsonrpc_id(br#"[{"jsonrpc":"2.0","id":1}]"#).is_none());
        assert!(jsonrpc_id(br#"{"id":{"nested":1}}"#).is_none());
        assert!(jsonrpc_id(b"not json").is_none());
        let v: serde_json::Value =
            serde_json::from_slice(&render(&GatewayError::UnknownRoute, &BodyShape::JsonRpc(None))).unwrap();
        assert!(v["id"].is_null());
    }
}
