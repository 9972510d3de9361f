//! Rewrites the legacy HTTP+SSE (2024-11-05) `endpoint` event onto the gateway's public path.
//!
//! A legacy server's first event tells the client where to POST its messages, as a URL on the
//! server. Behind the gateway that URL must point at the gateway instead. The rewriter holds back
//! only the bytes of an event that is not complete yet, so it works however the stream is split
//! across reads; once the endpoint event is rewritten it passes every later byte through untouched.

use bytes::{Bytes, BytesMut};

use crate::affinity::{query_param, replace_query_param, SessionKey};
use crate::upstream::Upstream;

/// Events longer than this before the endpoint event arrives stop the rewriting (the stream
/// then passes through unchanged) rather than growing a buffer without bound.
const MAX_PENDING: usize = 64 * 1024;

/// How a legacy endpoint URL maps from the upstream onto the gateway.
#[derive(Debug, Clone)]
pub struct EndpointMapping {
    /// The upstream's base path (`""` at the root); only URLs under it can be mapped.
    pub upstream_base: String,
    /// The upstream path of the SSE request, to resolve relative endpoint URLs against.
    pub sse_request_path: String,
    /// The gateway path that stands for `upstream_base`: public base path + matched prefix.
    pub gateway_prefix: String,
    /// For a pooled server: the key and replica id that wrap the endpoint's `sessionId`.
    pub session_wrap: Option<(SessionKey, String)>,
}

impl EndpointMapping {
    /// Maps an endpoint URL as the upstream sent it to the URL the client should use, or
    /// `None` when it does not point under the upstream's base (left as it is).
    pub fn map(&self, upstream: &Upstream, endpoint: &str) -> Option<String> {
        let path_and_query = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
            let url = url::Url::parse(endpoint).ok()?;
            if !upstream.is_same_origin(&url) {
                return None;
            }
            path_and_query(&url)
        } else if endpoint.starts_with('/') && !endpoint.starts_with("//") {
            endpoint.to_owned()
        } else {
            // Relative (or scheme-relative) reference: resolve against the SSE request's URL.
            let scheme = if upstream.tls { "https" } else { "http" };
            let base = url::Url::parse(&format!(
                "{scheme}://{}:{}{}",
                host_for_url(&upstream.host),
                upstream.port,
                self.sse_request_path
            ))
            .ok()?;
            let url = base.join(endpoint).ok()?;
            if !upstream.is_same_origin(&url) {
                return None;
            }
            path_and_query(&url)
        };
        let rest = path_and_query.strip_prefix(self.upstream_base.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
            return None;
        }
        let mut mapped = String::with_capacity(self.gateway_prefix.len() + rest.len() + 1);
        mapped.push_str(&self.gateway_prefix);
        if !rest.starts_with('/') {
            mapped.push('/');
        }
        mapped.push_str(rest);
        if let Some((key, replica)) = &self.session_wrap {
            if let Some(original) = mapped.split_once('?').and_then(|(_, q)| query_param(q, "sessionId")) {
                let wrapped = key.wrap(replica, original);
                mapped = replace_query_param(&mapped, "sessionId", &wrapped);
            }
        }
        Some(mapped)
    }
}

fn host_for_url(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn path_and_query(url: &url::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

/// The state of one SSE response being rewritten.
#[derive(Debug)]
pub struct EndpointRewriter {
    mapping: EndpointMapping,
    pending: BytesMut,
    done: bool,
}

impl EndpointRewriter {
    /// A rewriter for one response.
    pub fn new(mapping: EndpointMapping) -> Self {
        Self { mapping, pending: BytesMut::new(), done: false }
    }

    /// True once the endpoint event went by (or rewriting was given up): all bytes pass through.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds one chunk of the upstream body and returns what to send to the client now.
    pub fn feed(&mut self, upstream: &Upstream, chunk: Bytes, end_of_stream: bool) -> Bytes {
        if self.done {
            return chunk;
        }
        self.pending.extend_from_slice(&chunk);
        let mut out = BytesMut::new();
        while let Some(event_len) = complete_event_len(&self.pending) {
            let event = self.pending.split_to(event_len);
            match rewrite_endpoint_event(&event, &self.mapping, upstream) {
                Some(rewritten) => {
                    out.extend_from_slice(rewritten.as_bytes());
                    self.done = true;
                    break;
                }
                None => {
                    out.extend_from_slice(&event);
                    // The endpoint event is the first event of a legacy stream (2024-11-05); any
                    // other event first means this is not one (a Streamable HTTP GET stream):
                    // stop looking, so the rest of the stream passes untouched and uncopied.
                    if has_field(&event) {
                        self.done = true;
                        break;
                    }
                }
            }
        }
        if self.done || end_of_stream || self.pending.len() > MAX_PENDING {
            if !self.done && self.pending.len() > MAX_PENDING {
                tracing::warn!("legacy SSE event larger than {MAX_PENDING} bytes before the endpoint event; not rewriting this stream");
            }
            self.done = true;
            out.extend_from_slice(&self.pending.split());
        }
        out.freeze()
    }
}

/// True when an event block has a field line (not only comments such as `: keep-alive`).
fn has_field(event: &[u8]) -> bool {
    event.split(|b| *b == b'\n' || *b == b'\r').any(|line| !line.is_empty() && line[0] != b':')
}

/// Length of the first complete event in `buf` (up to and including its blank line), if any.
/// Lines end in CRLF, LF or CR; a CR at the very end may still be the first half of a CRLF.
fn complete_event_len(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    let mut i = 0;
    while let Some(offset) = memchr::memchr2(b'\n', b'\r', &buf[i..]) {
        let at = i + offset;
        let line_end = if buf[at] == b'\r' {
            match buf.get(at + 1) {
                Some(b'\n') => at + 2,
                Some(_) => at + 1,
                None => return None,
            }
        } else {
            at + 1
        };
        if at == line_start {
            return Some(line_end);
        }
        line_start = line_end;
        i = line_end;
    }
    None
}

/// The rewritten event when `event` is an `endpoint` event whose URL maps onto the gateway.
fn rewrite_endpoint_event(event: &[u8], mapping: &EndpointMapping, upstream: &Upstream) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let mut is_endpoint = false;
    let mut data: Option<&str> = None;
    for line in text.split_terminator(['\n', '\r']).filter(|l| !l.is_empty()) {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => is_endpoint = value == "endpoint",
            "data" if data.is_none() => data = Some(value),
            "data" => return None, // a multi-line endpoint is not a URL
            _ => {}
        }
    }
    if !is_endpoint {
        return None;
    }
    let endpoint = data?;
    let Some(mapped) = mapping.map(upstream, endpoint) else {
        tracing::warn!(endpoint, "legacy SSE endpoint is not under the upstream's path; left unchanged");
        return None;
    };
    Some(format!("event: endpoint\ndata: {mapped}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream {
        Upstream::from_url("http://127.0.0.1:3001", None, true).unwrap()
    }

    fn mapping() -> EndpointMapping {
        EndpointMapping {
            upstream_base: String::new(),
            sse_request_path: "/sse".into(),
            gateway_prefix: "/gw/everything".into(),
            session_wrap: None,
        }
    }

    fn run(chunks: &[&str]) -> String {
        let up = upstream();
        let mut r = EndpointRewriter::new(mapping());
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            out.extend_from_slice(&r.feed(&up, Bytes::copy_from_slice(c.as_bytes()), i + 1 == chunks.len()));
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_form_of_endpoint_url_maps_onto_the_gateway() {
        let m = mapping();
        let up = upstream();
        assert_eq!(m.map(&up, "/message?sessionId=1").as_deref(), Some("/gw/everything/message?sessionId=1"));
        assert_eq!(m.map(&up, "message?sessionId=1").as_deref(), Some("/gw/everything/message?sessionId=1"));
        assert_eq!(
            m.map(&up, "http://127.0.0.1:3001/message?s=1").as_deref(),
            Some("/gw/everything/message?s=1")
        );
        assert_eq!(m.map(&up, "http://elsewhere.example/message"), None);
        assert_eq!(m.map(&up, "https://127.0.0.1:3001/message"), None);
    }

    #[test]
    fn urls_outside_the_upstream_base_are_not_mapped() {
        let up = Upstream::from_url("http://127.0.0.1:3001/api", None, true).unwrap();
        let m = EndpointMapping {
            upstream_base: "/api".into(),
            sse_request_path: "/api/sse".into(),
            gateway_prefix: "/x".into(),
            session_wrap: None,
        };
        assert_eq!(m.map(&up, "/api/messages").as_deref(), Some("/x/messages"));
        assert_eq!(m.map(&up, "messages").as_deref(), Some("/x/messages"));
        assert_eq!(m.map(&up, "/apix/messages"), None);
        assert_eq!(m.map(&up, "/other"), None);
    }

    #[test]
    fn a_pooled_servers_endpoint_carries_a_wrapped_session_id() {
        let key = SessionKey::new(b"k");
        let m = EndpointMapping { session_wrap: Some((key.clone(), "r1".into())), ..mapping() };
        let mapped = m.map(&upstream(), "/message?sessionId=abc&x=1").unwrap();
        let wrapped = query_param(mapped.split_once('?').unwrap().1, "sessionId").unwrap();
        assert_eq!(key.unwrap(wrapped), Some(("r1", "abc")));
        assert!(mapped.starts_with("/gw/everything/message?sessionId=pc1.r1.") && mapped.ends_with("&x=1"));
    }

    #[test]
    fn the_endpoint_event_is_rewritten_and_others_are_untouched() {
        let out = run(&[
            ": ping\n\nevent: endpoint\ndata: /message?sessionId=abc\n\nevent: message\ndata: {\"x\":1}\n\n",
        ]);
        assert_eq!(out, ": ping\n\nevent: endpoint\ndata: /gw/everything/message?sessionId=abc\n\nevent: message\ndata: {\"x\":1}\n\n");
    }

    #[test]
    fn an_event_split_over_three_reads_is_rewritten() {
        let out = run(&[
            "event: endp",
            "oint\r\ndata: /message?sess",
            "ionId=abc\r\n\r\nevent: message\r\ndata: 1\r\n\r\n",
        ]);
        assert_eq!(out, "event: endpoint\ndata: /gw/everything/message?sessionId=abc\n\nevent: message\r\ndata: 1\r\n\r\n");
    }

    #[test]
    fn a_crlf_split_between_reads_is_not_mistaken_for_an_event_end() {
        let out = run(&["event: endpoint\r", "\ndata: /m\r", "\n\r", "\n"]);
        assert_eq!(out, "event: endpoint\ndata: /gw/everything/m\n\n");
    }

    #[test]
    fn a_stream_that_starts_with_another_event_is_not_legacy_and_passes_untouched() {
        let up = upstream();
        let mut r = EndpointRewriter::new(mapping());
        let first = r.feed(&up, Bytes::from_static(b"id: 1\ndata: {}\n\nevent: endpoint\ndata: /m"), false);
        assert!(r.is_done());
        assert_eq!(first, Bytes::from_static(b"id: 1\ndata: {}\n\nevent: endpoint\ndata: /m"));
    }

    #[test]
    fn after_the_endpoint_event_bytes_pass_through_as_they_come() {
        let up = upstream();
        let mut r = EndpointRewriter::new(mapping());
        r.feed(&up, Bytes::from_static(b"event: endpoint\ndata: /m\n\n"), false);
        assert!(r.is_done());
        let later = Bytes::from_static(b"event: endpoint\ndata: /other\n\n");
        assert_eq!(r.feed(&up, later.clone(), false), later);
    }

    #[test]
    fn an_unfinished_stream_is_flushed_at_its_end() {
        assert_eq!(run(&["data: partial"]), "data: partial");
    }

    #[test]
    fn a_huge_first_event_stops_the_rewriting_without_losing_bytes() {
        let big = "x".repeat(MAX_PENDING + 10);
        let up = upstream();
        let mut r = EndpointRewriter::new(mapping());
        let out = r.feed(&up, Bytes::from(format!("data: {big}")), false);
        assert!(r.is_done());
        assert_eq!(out.len(), big.len() + 6);
    }
}
