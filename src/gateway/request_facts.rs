//! What the phases read from a client's header fields, gathered in one pass over the header map
//! ([`RequestFacts::of`]) by each engine's door, whatever the protocol. Looking each one up by
//! name instead cost about a hundred instructions a lookup, ten lookups a request.

use std::sync::LazyLock;

use http::{header, HeaderMap, HeaderName, HeaderValue};
use memchr::memmem;

/// The fields of one client request the gateway decides by.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// The first `Host` value.
    pub host: Option<HeaderValue>,
    /// The first `Origin` value.
    pub origin: Option<HeaderValue>,
    /// An `Accept` value admits `text/event-stream` (GET streams and Streamable HTTP POSTs do):
    /// the response may stay silent for long, and gets the stream idle timeout.
    pub accepts_event_stream: bool,
    /// The first `Expect` value is `100-continue`.
    pub expects_continue: bool,
    expect_seen: bool,
}

impl RequestFacts {
    /// The facts of a header map.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut facts = Self::default();
        for (name, value) in headers {
            facts.observe(name, value);
        }
        facts
    }

    /// Takes note of one header field, in the order the request carries them.
    pub fn observe(&mut self, name: &HeaderName, value: &HeaderValue) {
        if name == header::HOST {
            self.host.get_or_insert_with(|| value.clone());
        } else if name == header::ORIGIN {
            self.origin.get_or_insert_with(|| value.clone());
        } else if name == header::ACCEPT {
            // Built once: building a searcher costs more than the search of a short value.
            static EVENT_STREAM: LazyLock<memmem::Finder<'static>> =
                LazyLock::new(|| memmem::Finder::new(b"text/event-stream"));
            self.accepts_event_stream |= EVENT_STREAM.find(value.as_bytes()).is_some();
        } else if name == header::EXPECT && !self.expect_seen {
            self.expect_seen = true;
            self.expects_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(fields: &[(&'static str, &'static str)]) -> RequestFacts {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(*name, HeaderValue::from_static(value));
        }
        RequestFacts::of(&headers)
    }

    #[test]
    fn the_first_host_and_origin_are_kept() {
        let f = facts(&[("host", "a:1"), ("origin", "https://x"), ("host", "b:2"), ("origin", "https://y")]);
        assert_eq!(f.host.as_ref().map(HeaderValue::as_bytes), Some(&b"a:1"[..]));
        assert_eq!(f.origin.as_ref().map(HeaderValue::as_bytes), Some(&b"https://x"[..]));
        assert!(facts(&[]).host.is_none() && facts(&[]).origin.is_none());
    }

    #[test]
    fn any_accept_value_may_admit_an_event_stream() {
        assert!(facts(&[("accept", "application/json, text/event-stream")]).accepts_event_stream);
        assert!(
            facts(&[("accept", "application/json"), ("accept", "text/event-stream")]).accepts_event_stream
        );
        assert!(!facts(&[("accept", "application/json")]).accepts_event_stream);
        assert!(!facts(&[]).accepts_event_stream);
    }

    #[test]
    fn only_the_first_expect_value_counts() {
        assert!(facts(&[("expect", "100-Continue")]).expects_continue);
        assert!(!facts(&[("expect", "nothing"), ("expect", "100-continue")]).expects_continue);
        assert!(!facts(&[]).expects_continue);
    }
}
