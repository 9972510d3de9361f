//! What the gateway removes from a request before it goes upstream.
//!
//! Always: the caller's credentials (`authorization`, `proxy-authorization`, `cookie`,
//! `x-upstream-authorization`) and trusted-proxy user headers; the inbound token never reaches an
//! upstream unless an outbound setting puts it back on purpose. Plus each server's
//! `restricted_headers` globs. And on every request, before that: the hop-by-hop headers and the
//! ones `Connection` names ([`strip_hop_by_hop`]; on HTTP/2 Pingora's standard upstream request
//! policy, which every peer sets in `gateway/upstream.rs`, does the same).

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

    /// Removes every header the policy names.
    pub fn apply(&self, request: &mut RequestHeader) {
        // One pass over the headers the request has (usually a handful) instead of a lookup per
        // name the policy knows; nothing is allocated unless something is removed.
        let doomed: Vec<HeaderName> =
            request.headers.keys().filter(|name| self.strips(name)).cloned().collect();
        for name in doomed {
            request.remove_header(&name);
        }
    }

    fn strips(&self, name: &HeaderName) -> bool {
        self.always.contains(name) || self.restricted.as_ref().is_some_and(|r| r.is_match(name.as_str()))
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and are never forwarded.
/// The framing headers are not among them: the driver sets the upstream's framing itself.
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "http2-settings"];

/// Headers a `Connection` header may not name for removal: the request's framing and routing.
const NEVER_NOMINATED: [&str; 3] = ["transfer-encoding", "content-length", "host"];

/// Removes the hop-by-hop headers and every header the `Connection` header names, in one pass
/// over the request's headers; allocates nothing for a request without either.
pub fn strip_hop_by_hop(request: &mut RequestHeader) {
    let nominated = |name: &HeaderName| {
        request.headers.get_all(http::header::CONNECTION).iter().any(|value| {
            value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_str().as_bytes()))
        })
    };
    let doomed: Vec<HeaderName> = request
        .headers
        .keys()
        .filter(|name| {
            HOP_BY_HOP.contains(&name.as_str())
                || (!NEVER_NOMINATED.contains(&name.as_str()) && nominated(name))
        })
        .cloned()
        .collect();
    for name in doomed {
        request.remove_header(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_nominated_headers_are_stripped_but_never_the_framing() {
        let mut req = RequestHeader::build("POST", b"/mcp", None).unwrap();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret-Hop, content-length, Host"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-secret-hop", "1"),
            ("content-length", "2"),
            ("host", "gw"),
            ("mcp-session-id", "s"),
        ] {
            req.append_header(k, v).unwrap();
        }
        strip_hop_by_hop(&mut req);
        let mut left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "host", "mcp-session-id"]);
    }

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
}
