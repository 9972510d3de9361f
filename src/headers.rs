//! What the gateway removes from a request before it goes upstream.
//!
//! Always: the caller's credentials (`authorization`, `proxy-authorization`, `cookie`,
//! `x-upstream-authorization`) and trusted-proxy user headers; the inbound token never reaches an
//! upstream unless an outbound setting puts it back on purpose. Plus each server's
//! `restricted_headers` globs. And on every request: the hop-by-hop headers and the ones
//! `Connection` names. The upstream request is built from what may leave
//! ([`HeaderPolicy::copy_forwardable`]) rather than cut down from a copy of the client's.
//!
//! Many upstream stacks (CGI-style `HTTP_X_USER` variables: Rack, PHP, some Python servers)
//! read `X_User` and `X-User` as the same header. So a field whose name holds `_` is not
//! forwarded at all unless the server allows such names (as nginx does by default), and where it
//! is allowed every rule here compares names with `_` and `-` as the same character: a spelling
//! never reopens what a rule closes.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::config::DEFAULT_USER_HEADER;

/// Credential headers removed from every request.
const SENSITIVE: [&str; 4] = ["authorization", "proxy-authorization", "cookie", "x-upstream-authorization"];

/// A `restricted_headers` glob that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid glob: {reason}")]
pub struct BadGlob {
    /// Its index in the list.
    pub index: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// What one server strips from inbound requests, compiled once per config.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    /// Names spelled with `-` only (see [`canonical`]).
    always: Vec<HeaderName>,
    /// Globs spelled with `-` only.
    restricted: Option<GlobSet>,
    /// Fields whose name holds `_` are forwarded (subject to the rules) rather than dropped.
    underscores_allowed: bool,
}

impl HeaderPolicy {
    /// The policy for a server: the always-stripped set, the `extra` headers (its trusted-proxy
    /// header, the headers its outbound settings set), and its `restricted_headers` globs
    /// (case-insensitive, `_` and `-` the same character). Fields with `_` in their name are
    /// dropped; [`HeaderPolicy::allowing_underscores`] changes that. Returns the first bad glob.
    pub fn new(extra: &[HeaderName], restricted: &[String]) -> Result<Self, BadGlob> {
        let mut always: Vec<HeaderName> =
            SENSITIVE.iter().chain(&[DEFAULT_USER_HEADER]).map(|h| HeaderName::from_static(h)).collect();
        for header in extra.iter().map(canonical) {
            if !always.contains(&header) {
                always.push(header);
            }
        }
        let restricted = if restricted.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for (index, pattern) in restricted.iter().enumerate() {
                let bad = |reason: String| BadGlob { index, reason };
                let glob = GlobBuilder::new(&canonical_glob(pattern).map_err(bad)?)
                    .case_insensitive(true)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                set.add(glob);
            }
            Some(set.build().map_err(|e| BadGlob { index: 0, reason: e.to_string() })?)
        };
        Ok(Self { always, restricted, underscores_allowed: false })
    }

    /// The same policy, forwarding fields whose name holds `_` when `allowed` (every rule still
    /// applies to them, `_` read as `-`).
    pub fn allowing_underscores(mut self, allowed: bool) -> Self {
        self.underscores_allowed = allowed;
        self
    }

    /// Copies onto `upstream` every header of `inbound` that may leave: not hop-by-hop, not
    /// named by `Connection`, not `Host` or `Transfer-Encoding` (the upstream request gets its own),
    /// not stripped by this policy, and, unless the policy allows them, without `_` in its name.
    /// One pass over the client's headers; nothing is removed afterwards. Returns how many fields
    /// were left behind for a `_` in their name alone.
    pub fn copy_forwardable<'a>(
        &self,
        inbound: &'a RequestHeader,
        upstream: &mut impl HeaderSink<'a>,
    ) -> usize {
        let connection = inbound.headers.get_all(http::header::CONNECTION);
        let has_connection = connection.iter().next().is_some();
        let mut underscored = 0;
        for (name, value) in &inbound.headers {
            let stays = if !has_underscore(name) {
                HOP_BY_HOP.contains(name)
                    || NOT_COPIED.contains(name)
                    || (has_connection && nominated(&connection, name))
                    || self.strips_canonical(name)
            } else if !self.underscores_allowed {
                underscored += 1;
                true
            } else {
                // Rare (and opted into): the name is spelled again with `-` for the comparisons.
                let spelled = canonical(name);
                HOP_BY_HOP.contains(&spelled)
                    || NOT_COPIED.contains(&spelled)
                    || DECIDED_BY_THE_GATEWAY.contains(&spelled)
                    || (has_connection && nominated(&connection, &spelled))
                    || self.strips_canonical(&spelled)
            };
            if !stays {
                upstream.append(name, value);
            }
        }
        underscored
    }

    /// True when the policy keeps `name` from leaving (`_` read as `-`; whether a name with `_`
    /// may leave at all is [`HeaderPolicy::copy_forwardable`]'s to decide).
    pub fn strips(&self, name: &HeaderName) -> bool {
        if has_underscore(name) {
            self.strips_canonical(&canonical(name))
        } else {
            self.strips_canonical(name)
        }
    }

    /// [`HeaderPolicy::strips`] for a name spelled with `-` only.
    fn strips_canonical(&self, name: &HeaderName) -> bool {
        self.always.contains(name) || self.restricted.as_ref().is_some_and(|r| r.is_match(name.as_str()))
    }
}

/// True when the name holds `_`.
fn has_underscore(name: &HeaderName) -> bool {
    memchr::memchr(b'_', name.as_str().as_bytes()).is_some()
}

/// `name` with every `_` spelled `-`: the name an upstream that reads both alike sees. Allocates
/// only when there is a `_` to replace.
pub fn canonical(name: &HeaderName) -> HeaderName {
    if !has_underscore(name) {
        return name.clone();
    }
    let spelled: Vec<u8> = name.as_str().bytes().map(|b| if b == b'_' { b'-' } else { b }).collect();
    // `-` is a token character wherever `_` was one: the bytes stay a valid name.
    HeaderName::from_bytes(&spelled).unwrap_or_else(|_| name.clone())
}

/// A glob with every `_` spelled `-`, so that it matches names spelled either way. Inside a
/// `[...]` class that would turn `[a_z]` into a range: there it is refused, with a hint.
fn canonical_glob(pattern: &str) -> Result<String, String> {
    let mut out = String::with_capacity(pattern.len());
    let mut in_class = false;
    for c in pattern.chars() {
        match c {
            '[' => in_class = true,
            ']' => in_class = false,
            '_' if in_class => {
                return Err(format!(
                    "\"{pattern}\" has '_' inside [...]; write '-' there, first in the class \
                     ('_' and '-' are the same character in header names)"
                ))
            }
            _ => {}
        }
        out.push(if c == '_' { '-' } else { c });
    }
    Ok(out)
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

/// The gateway's HTTP/1 engine writes the upstream head straight from the fields decided.
impl<'a> HeaderSink<'a> for crate::http1::upstream::RequestFields<'a> {
    fn append(&mut self, name: &'a HeaderName, value: &'a HeaderValue) {
        crate::http1::upstream::RequestFields::append(self, name, value);
    }

    fn insert(&mut self, name: &'a HeaderName, value: &'a HeaderValue) {
        crate::http1::upstream::RequestFields::insert(self, name, value);
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

/// Names the gateway decides itself on the upstream request: its framing, the `Expect` it
/// answers, the MCP session id it restores for a pooled server. Only a name spelled with `_`
/// is checked against these (the real ones are handled where they are set): such a field could
/// only compete with the gateway's own.
static DECIDED_BY_THE_GATEWAY: [HeaderName; 3] =
    [http::header::CONTENT_LENGTH, http::header::EXPECT, HeaderName::from_static("mcp-session-id")];

/// True when a `Connection` header names `name` (a header meant for this hop only; `name` is
/// spelled with `-`, a token may use `_`). It cannot take the framing headers: `Content-Length`
/// stays.
fn nominated(connection: &http::header::GetAll<'_, http::HeaderValue>, name: &HeaderName) -> bool {
    name != http::header::CONTENT_LENGTH
        && connection.iter().any(|value| names_in(value).any(|t| same_name(t, name)))
}

/// True when `name` is `canonical` (a name spelled with `-` only) once its `_` are read as `-`.
/// No allocation.
pub fn spells(name: &HeaderName, canonical: &HeaderName) -> bool {
    same_name(name.as_str().as_bytes(), canonical)
}

/// The field names a `Connection` value lists.
fn names_in(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value.as_bytes().split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// True when `token` spells `name` (lowercase, `-` only), ignoring case and reading `_` as `-`.
fn same_name(token: &[u8], name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    token.len() == name.len()
        && token.iter().zip(name).all(|(t, n)| {
            let t = if *t == b'_' { b'-' } else { t.to_ascii_lowercase() };
            t == *n
        })
}

/// `Connection` tokens that name no field to remove: options, and the framing fields the engine
/// has already framed the body by.
const NOT_NAMED_FIELDS: [&[u8]; 4] = [b"close", b"keep-alive", b"content-length", b"transfer-encoding"];

/// Removes from an upstream response the fields that describe the upstream's connection only
/// (RFC 9110 §7.6.1): `Connection` and every field it names, `Keep-Alive`, `Proxy-Connection`,
/// `TE`, `Trailer`, `Upgrade`. The framing fields stay whatever `Connection` says: the engine
/// has framed the body by them. One pass over the names when there is nothing to remove.
pub fn remove_hop_by_hop(response: &mut ResponseHeader) {
    if !response.headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    // Only when the upstream named fields: their names, owned, to remove after the look.
    let named: Vec<String> = response
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(names_in)
        // Filtered on the bytes first: `Connection: keep-alive` (most Node upstreams, on every
        // response) then allocates nothing.
        .filter(|token| !NOT_NAMED_FIELDS.iter().any(|kept| token.eq_ignore_ascii_case(kept)))
        .filter_map(|token| std::str::from_utf8(token).ok())
        .map(str::to_ascii_lowercase)
        .collect();
    for name in &HOP_BY_HOP {
        response.remove_header(name);
    }
    for name in &named {
        response.remove_header(name.as_str());
    }
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
        assert_eq!(HeaderPolicy::new(&[], &["ok-*".into(), "[unclosed".into()]).unwrap_err().index, 1);
        let class = HeaderPolicy::new(&[], &["x[a_z]".into()]).unwrap_err();
        assert_eq!(class.index, 0);
        assert!(class.reason.contains("inside [...]"), "{class}");
    }

    /// Headers a client spells with `_` to get past rules written with `-`.
    const UNDERSCORED: [(&str, &str); 7] = [
        ("X_Authenticated_User", "mallory"),
        ("X_Upstream_Authorization", "Bearer stolen"),
        ("Proxy_Authorization", "Basic x"),
        ("X_User_Email", "ceo@example.com"),
        ("X_Internal_Tenant", "7"),
        ("Content_Length", "999"),
        ("X_Custom", "kept where allowed"),
    ];

    fn claim_header_policy() -> HeaderPolicy {
        HeaderPolicy::new(&[HeaderName::from_static("x-user-email")], &["x-internal-*".into()]).unwrap()
    }

    #[test]
    fn a_name_with_an_underscore_is_dropped_and_counted_by_default() {
        let policy = claim_header_policy();
        let mut req = RequestHeader::build("POST", b"/mcp", None).unwrap();
        for (k, v) in UNDERSCORED.iter().chain(&[("mcp-session-id", "s")]) {
            req.append_header(k.to_string(), *v).unwrap();
        }
        let mut upstream = HeaderMap::new();
        assert_eq!(policy.copy_forwardable(&req, &mut upstream), UNDERSCORED.len());
        assert_eq!(upstream.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["mcp-session-id"]);
    }

    #[test]
    fn where_underscores_are_allowed_every_rule_reads_them_as_dashes() {
        let policy = claim_header_policy().allowing_underscores(true);
        let mut headers = UNDERSCORED.to_vec();
        headers.extend([("connection", "X-Hop"), ("x_hop", "1"), ("Transfer_Encoding", "chunked")]);
        assert_eq!(forwarded(&policy, &headers), ["x_custom"]);
        // The operator's own spelling does not matter either.
        let policy = HeaderPolicy::new(&[HeaderName::from_static("x_remote_user")], &["X_Internal_*".into()])
            .unwrap()
            .allowing_underscores(true);
        let left = forwarded(
            &policy,
            &[
                ("x-internal-tenant", "7"),
                ("x_internal_tenant", "7"),
                ("x-remote-user", "m"),
                ("x-other", "1"),
            ],
        );
        assert_eq!(left, ["x-other"]);
        assert!(policy.strips(&HeaderName::from_static("x_remote_user")));
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_leave_a_response_but_the_framing_stays() {
        let mut response = ResponseHeader::build(200, None).unwrap();
        for (k, v) in [
            ("Connection", "keep-alive, X-Upstream-Hop, Content-Length, close"),
            ("connection", "x-other-hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("upgrade", "h2c"),
            ("x-upstream-hop", "1"),
            ("x-other-hop", "1"),
            ("content-length", "2"),
            ("mcp-session-id", "s"),
        ] {
            response.append_header(k.to_string(), v).unwrap();
        }
        remove_hop_by_hop(&mut response);
        let mut left: Vec<&str> = response.headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "mcp-session-id"]);
    }
}
