//! OAuth 2.0 Protected Resource Metadata (RFC 9728) and the `WWW-Authenticate` challenges that
//! point clients at it, as the MCP authorization spec asks. All built once per config.

use bytes::Bytes;
use http::HeaderValue;

/// The well-known prefix under which resource metadata is published.
pub const WELL_KNOWN_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// The public URL split into origin and base path.
#[derive(Debug, Clone)]
pub struct PublicUrl {
    /// `scheme://host[:port]`.
    pub origin: String,
    /// Path without a trailing `/` (`""` at the root).
    pub base_path: String,
}

/// The resource identifier of a route (a server prefix or alias): `public_url` + the route's path.
/// This is what the route's metadata announces and what its tokens' `aud` must name.
pub fn resource_url(public: &PublicUrl, route_path: &str) -> String {
    let resource = format!("{}{}{}", public.origin, public.base_path, route_path);
    if resource == public.origin {
        format!("{resource}/")
    } else {
        resource
    }
}

/// One protected resource: a server as reached through one of its routes.
#[derive(Debug)]
pub struct ProtectedResource {
    /// The resource identifier (`public_url` + route path).
    pub resource: String,
    /// Where its metadata is published.
    pub metadata_url: String,
    /// The metadata document.
    pub document: Bytes,
    /// Challenge for a request without a token.
    pub challenge_missing: HeaderValue,
    /// Challenge for a token that failed verification.
    pub challenge_invalid: HeaderValue,
    /// Challenge for a token without the required scopes.
    pub challenge_scope: HeaderValue,
}

impl ProtectedResource {
    /// Builds the resource for `route_path` (a server prefix or alias). Scopes and authorization
    /// server URLs were validated to be header-safe, so the header values always build.
    pub fn new(
        public: &PublicUrl,
        route_path: &str,
        server_name: &str,
        authorization_servers: &[String],
        scopes: &[String],
    ) -> Option<Self> {
        let resource = resource_url(public, route_path);
        let metadata_url = format!("{}{WELL_KNOWN_PREFIX}{}{}", public.origin, public.base_path, route_path);
        let document = Metadata {
            resource: &resource,
            authorization_servers,
            scopes_supported: scopes,
            bearer_methods_supported: &["header"],
            resource_name: server_name,
        };
        let scope = scopes.join(" ");
        let scope_param = if scope.is_empty() { String::new() } else { format!(", scope=\"{scope}\"") };
        let missing = format!("Bearer resource_metadata=\"{metadata_url}\"{scope_param}");
        let invalid =
            format!("Bearer error=\"invalid_token\", resource_metadata=\"{metadata_url}\"{scope_param}");
        let insufficient =
            format!("Bearer error=\"insufficient_scope\", resource_metadata=\"{metadata_url}\"{scope_param}");
        Some(Self {
            document: Bytes::from(serde_json::to_vec(&document).ok()?),
            challenge_missing: HeaderValue::from_str(&missing).ok()?,
            challenge_invalid: HeaderValue::from_str(&invalid).ok()?,
            challenge_scope: HeaderValue::from_str(&insufficient).ok()?,
            resource,
            metadata_url,
        })
    }
}

/// The metadata document (RFC 9728 §2). A parameter without values is omitted, never written as
/// an empty list or string (§3.2).
#[derive(serde::Serialize)]
struct Metadata<'a> {
    resource: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    authorization_servers: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    scopes_supported: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    bearer_methods_supported: &'a [&'a str],
    #[serde(skip_serializing_if = "str::is_empty")]
    resource_name: &'a str,
}

/// True for text that can stand inside a quoted `WWW-Authenticate` parameter.
pub fn is_quotable(text: &str) -> bool {
    text.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_point_at_the_metadata_of_the_route() {
        let public = PublicUrl { origin: "https://mcp.example.com".into(), base_path: "/gw".into() };
        let r = ProtectedResource::new(
            &public,
            "/github",
            "github",
            &["https://login.example.com".into()],
            &["mcp:tools".into(), "repo".into()],
        )
        .unwrap();
        assert_eq!(r.resource, "https://mcp.example.com/gw/github");
        assert_eq!(r.metadata_url, "https://mcp.example.com/.well-known/oauth-protected-resource/gw/github");
        assert_eq!(r.challenge_missing, "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/gw/github\", scope=\"mcp:tools repo\"");
        assert!(r
            .challenge_invalid
            .to_str()
            .unwrap()
            .starts_with("Bearer error=\"invalid_token\", resource_metadata="));
        assert!(r.challenge_scope.to_str().unwrap().starts_with("Bearer error=\"insufficient_scope\""));
        let doc: serde_json::Value = serde_json::from_slice(&r.document).unwrap();
        assert_eq!(doc["resource"], "https://mcp.example.com/gw/github");
        assert_eq!(doc["authorization_servers"][0], "https://login.example.com");
        assert_eq!(doc["scopes_supported"][1], "repo");
    }

    #[test]
    fn without_required_scopes_the_challenge_has_no_scope() {
        let public = PublicUrl { origin: "http://127.0.0.1:8080".into(), base_path: String::new() };
        let r = ProtectedResource::new(&public, "/a", "a", &["https://idp".into()], &[]).unwrap();
        assert_eq!(
            r.challenge_missing,
            "Bearer resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/a\""
        );
        let doc: serde_json::Value = serde_json::from_slice(&r.document).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "resource": "http://127.0.0.1:8080/a",
                "authorization_servers": ["https://idp"],
                "bearer_methods_supported": ["header"],
                "resource_name": "a",
            }),
            "a parameter without values is omitted, not an empty list (RFC 9728 section 3.2)"
        );
    }
}
