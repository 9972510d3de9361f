//! What the gateway removes from a request before it goes upstream.
//!
//! Always: hop-by-hop headers, the caller's credentials (`authorization`, `proxy-authorization`,
//! `cookie`, `x-upstream-authorization`) and trusted-proxy user headers; the inbound token never
//! reaches an upstream unless an outbound setting puts it back on purpose. Plus each server's
//! `restricted_headers` globs.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use http::HeaderName;
use pingora::http::RequestHeader;

use crate::config::DEFAULT_USER_HEADER;

/// Credential headers removed from every request.
const SENSITIVE: [&str; 4] = ["authorization", "proxy-authorization", "cookie", "x-upstream-authorization"];

/// What one server strips from inbound requests, compiled once per config.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    always: Vec<HeaderName>,
    restricted: Option<GlobSet>,
}

impl HeaderPolicy {
    /// The policy for a server: the always-stripped set, the `extra` headers (its trusted-proxy
    /// header, the headers its outbound settings set), and its `restricted_headers` globs
    /// (case-insensitive). Returns the first bad glob.
    pub fn new(extra: &[HeaderName], restricted: &[String]) -> Result<Self, (usize, String)> {
        let mut always: Vec<HeaderName> =
            SENSITIVE.iter().chain(&[DEFAULT_USER_HEADER]).map(|h| HeaderName::from_static(h)).collect();
        for header in extra {
            if !always.contains(header) {
                always.push(header.clone());
            }
        }
        let restricted = if restricted.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for (i, pattern) in restricted.iter().enumerate() {
                let glob = GlobBuilder::new(pattern)
                    .case_insensitive(true)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| (i, e.to_string()))?;
                set.add(glob);
            }
            Some(set.build().map_err(|e| (0, e.to_string()))?)
        };
        Ok(Self { always, restricted })
    }

    /// Removes every header the policy names, and the hop-by-hop headers.
    pub fn apply(&self, request: &mut RequestHeader) {
        strip_hop_by_hop(request);
        for name in &self.always {
            request.remove_header(name);
        }
        if let Some(restricted) = &self.restricted {
            let matched: Vec<HeaderName> =
                request.headers.keys().filter(|name| restricted.is_match(name.as_str())).cloned().collect();
            for name in matched {
                request.remove_header(&name);
            }
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and are never forwarded.
/// `transfer-encoding` is left to Pingora, which frames the upstream body itself.
const HOP_BY_HOP: [&str; 6] = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

/// Removes hop-by-hop headers, including any header the `Connection` header names.
pub fn strip_hop_by_hop(request: &mut RequestHeader) {
    let named: Vec<String> = request
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty() && token != "close" && token != "keep-alive")
        .collect();
    for name in named.iter().map(String::as_str).chain(HOP_BY_HOP) {
        // Never let `Connection: transfer-encoding` or `content-length` strip the framing headers.
        if name != "transfer-encoding" && name != "content-length" && name != "host" {
            request.remove_header(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_proxy_users_and_restricted_globs_are_stripped() {
        let policy = HeaderPolicy::new(
            &[HeaderName::from_static("x-remote-user")],
            &["x-internal-*".into(), "X-Debug".into()],
        )
        .unwrap();
        let mut req = RequestHeader::build("POST", b"/mcp", None).unwrap();
        for (k, v) in [
            ("authorization", "Bearer inbound"),
            ("proxy-authorization", "Basic x"),
            ("cookie", "session=1"),
            ("x-upstream-authorization", "Bearer one-time"),
            ("x-authenticated-user", "mallory"),
            ("x-remote-user", "mallory"),
            ("X-Internal-Tenant", "7"),
            ("x-debug", "1"),
            ("x-internalish", "kept"),
            ("mcp-session-id", "s"),
        ] {
            req.append_header(k, v).unwrap();
        }
        policy.apply(&mut req);
        let mut left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["mcp-session-id", "x-internalish"]);
    }

    #[test]
    fn a_bad_glob_is_reported_with_its_index() {
        assert_eq!(HeaderPolicy::new(&[], &["ok-*".into(), "[unclosed".into()]).unwrap_err().0, 1);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut req = RequestHeader::build("POST", b"/mcp", None).unwrap();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("mcp-session-id", "abc"),
            ("content-length", "2"),
        ] {
            req.insert_header(k, v).unwrap();
        }
        strip_hop_by_hop(&mut req);
        let left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["mcp-session-id", "content-length"]);
    }

    #[test]
    fn connection_cannot_name_the_framing_headers() {
        let mut req = RequestHeader::build("POST", b"/mcp", None).unwrap();
        req.insert_header("connection", "content-length, transfer-encoding").unwrap();
        req.insert_header("content-length", "2").unwrap();
        strip_hop_by_hop(&mut req);
        assert!(req.headers.get("content-length").is_some());
    }
}
