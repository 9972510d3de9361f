//! What the gateway removes from a request before it goes upstream.
//!
//! Always: the caller's credentials (`authorization`, `proxy-authorization`, `cookie`,
//! `x-upstream-authorization`) and trusted-proxy user headers; the inbound token never reaches an
//! upstream unless an outbound setting puts it back on purpose. Plus each server's
//! `restricted_headers` globs. And on every request: the hop-by-hop headers and the ones
//! `Connection` names. The upstream request is built from what may leave
//! ([`HeaderPolicy::copy_forwardable`]) rather than cut down from a copy of the client's.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use http::{HeaderMap, HeaderName, HeaderValue};
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

    /// Copies onto `upstream` every header of `inbound` that may leave: not hop-by-hop, not
    /// named by `Connection`, not `Host` or `Transfer-Encoding` (the upstream request gets its own),
    /// and not stripped by this policy. One pass over the client's headers; nothing is removed
    /// afterwards.
    pub fn copy_forwardable<'a>(&self, inbound: &'a RequestHeader, upstream: &mut impl HeaderSink<'a>) {
        let connection = inbound.headers.get_all(http::header::CONNECTION);
        let has_connection = connection.iter().next().is_some();
        for (name, value) in &inbound.headers {
            let stays = HOP_BY_HOP.contains(name)
                || NOT_COPIED.contains(name)
                || (has_connection && nominated(&connection, name))
                || self.strips(name);
            if !stays {
                upstream.append(name, value);
            }
        }
    }

    /// True when the policy keeps `name` from leaving.
    pub fn strips(&self, name: &HeaderName) -> bool {
        self.always.contains(name) || self.restricted.as_ref().is_some_and(|r| r.is_match(name.as_str()))
    }
}

/// Where the upstream request's header fields go as they are decided: a header map (the
/// request pingora-proxy sends over HTTP/2), or the HTTP/1 driver's list of fields, which is
/// serialized once and never needs a map's lookups.
pub trait HeaderSink<'a> {
    /// Adds a field after any others of its name.
    fn append(&mut self, name: &'a HeaderName, value: &'a HeaderValue);
    /// Sets a field, in place of any others of its name.
    fn insert(&mut self, name: &'a HeaderName, value: &'a HeaderValue);
    /// Sets a field that carries a secret, in place of any others of its name. A header map
    /// marks the value sensitive (HTTP/2 then never indexes it); a serialized field needs no mark.
    fn insert_sensitive(&mut self, name: &'a HeaderName, value: &'a HeaderValue) {
        self.insert(name, value);
    }
}

impl<'a> HeaderSink<'a> for HeaderMap {
    fn append(&mut self, name: &'a HeaderName, value: &'a HeaderValue) {
        HeaderMap::append(self, name.clone(), value.clone());
    }

    fn insert(&mut self, name: &'a HeaderName, value: &'a HeaderValue) {
        HeaderMap::insert(self, name.clone(), value.clone());
    }

    fn insert_sensitive(&mut self, name: &'a HeaderName, value: &'a HeaderValue) {
        let mut value = value.clone();
        value.set_sensitive(true);
        HeaderMap::insert(self, name.clone(), value);
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and are never forwarded.
/// Names rather than strings: comparing a standard name with another is one byte.
static HOP_BY_HOP: [HeaderName; 7] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// Headers the upstream request sets itself rather than copying: its `Host` (the upstream's
/// authority) and its framing.
const NOT_COPIED: [HeaderName; 2] = [http::header::HOST, http::header::TRANSFER_ENCODING];

/// True when a `Connection` header names `name` (a header meant for this hop only). It cannot
/// take the framing headers: `Content-Length` stays.
fn nominated(connection: &http::header::GetAll<'_, http::HeaderValue>, name: &HeaderName) -> bool {
    name != http::header::CONTENT_LENGTH
        && connection.iter().any(|value| {
            value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_str().as_bytes()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of the headers of a client request with `headers` that `policy` lets leave,
    /// sorted.
    fn forwarded(policy: &HeaderPolicy, headers: &[(&str, &str)]) -> Vec<String> {
        let mut req = RequestHeader::build("POST", b"/mcp", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        let mut upstream = HeaderMap::new();
        policy.copy_forwardable(&req, &mut upstream);
        let mut left: Vec<String> = upstream.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort_unstable();
        left
    }

    #[test]
    fn hop_by_hop_nominated_host_and_chunking_stay_behind_but_the_length_leaves() {
        let policy = HeaderPolicy::new(&[], &[]).unwrap();
        let left = forwarded(
            &policy,
            &[
                ("connection", "keep-alive, X-Secret-Hop, content-length, Host"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("upgrade", "websocket"),
                ("x-secret-hop", "1"),
                ("content-length", "2"),
                ("transfer-encoding", "chunked"),
                ("host", "gw"),
                ("mcp-session-id", "s"),
            ],
        );
        assert_eq!(left, ["content-length", "mcp-session-id"]);
    }

    #[test]
    fn credentials_proxy_users_and_restricted_globs_are_stripped() {
        let policy = HeaderPolicy::new(
            &[HeaderName::from_static("x-remote-user")],
            &["x-internal-*".into(), "X-Debug".into()],
        )
        .unwrap();
        let left = forwarded(
            &policy,
            &[
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
            ],
        );
        assert_eq!(left, ["mcp-session-id", "x-internalish"]);
    }

    #[test]
    fn a_bad_glob_is_reported_with_its_index() {
        assert_eq!(HeaderPolicy::new(&[], &["ok-*".into(), "[unclosed".into()]).unwrap_err().0, 1);
    }
}
