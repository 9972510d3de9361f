//! The head of an upstream HTTP/1 request, written straight from the name/value pairs its
//! caller decided on into the bytes that go on the wire. No header map is built:
//! the head is serialized once and never looked into, so a map's hashing, allocations and
//! conversions would be spent for nothing (callgrind: about 3,000 instructions of a proxied
//! request's ~33,000, load/results/perf-notes.md, round 8).

use bytes::{BufMut, BytesMut};
use http::{header, HeaderName, HeaderValue, Method, Uri};
use smallvec::SmallVec;

/// How the request body is framed upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body, and no `Content-Length` either.
    None,
    /// `Content-Length` with this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
}

/// The fields of an upstream request head in the order they were decided, lent by whoever
/// decided them until the head is written.
#[derive(Default)]
pub struct RequestFields<'a> {
    // Inline room for a typical MCP request's fields: no allocation.
    fields: SmallVec<[(&'a HeaderName, &'a HeaderValue); 16]>,
}

impl<'a> RequestFields<'a> {
    /// Adds a field after those already there.
    pub fn append(&mut self, name: &'a HeaderName, value: &'a HeaderValue) {
        self.fields.push((name, value));
    }

    /// Sets a field: every earlier one of its name goes.
    pub fn insert(&mut self, name: &'a HeaderName, value: &'a HeaderValue) {
        self.fields.retain(|(kept, _)| *kept != name);
        self.fields.push((name, value));
    }
}

impl RequestFields<'_> {
    /// The request head for `method` and `target`, with room for `body_len` more bytes after it.
    /// The body's framing fields are written from `framing` (any the fields hold are left out),
    /// and `Expect` is not forwarded: the engine has answered it. `None` when the target has
    /// no path or holds a byte a request line cannot carry.
    pub fn to_wire(
        &self,
        method: &Method,
        target: &Uri,
        framing: BodyFraming,
        body_len: usize,
    ) -> Option<BytesMut> {
        let target = target.path_and_query().map(|p| p.as_str())?;
        if target.is_empty() || target.bytes().any(|b| matches!(b, 0x00 | b'\n' | b'\r' | b' ')) {
            return None;
        }
        let fields = self.fields.iter().filter(|(name, _)| !is_framing(name));
        let fields_len: usize =
            fields.clone().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
        // Request line, fields, a framing field of at most 36 bytes, the blank line, the body.
        let mut wire =
            BytesMut::with_capacity(method.as_str().len() + target.len() + 12 + fields_len + 40 + body_len);
        wire.put_slice(method.as_str().as_bytes());
        wire.put_u8(b' ');
        wire.put_slice(target.as_bytes());
        wire.put_slice(b" HTTP/1.1\r\n");
        for (name, value) in fields {
            wire.put_slice(name.as_str().as_bytes());
            wire.put_slice(b": ");
            wire.put_slice(value.as_bytes());
            wire.put_slice(b"\r\n");
        }
        match framing {
            BodyFraming::None => {}
            BodyFraming::Length(length) => {
                wire.put_slice(b"content-length: ");
                put_decimal(&mut wire, length);
                wire.put_slice(b"\r\n");
            }
            BodyFraming::Chunked => wire.put_slice(b"transfer-encoding: chunked\r\n"),
        }
        wire.put_slice(b"\r\n");
        Some(wire)
    }
}

/// The fields the request's own framing decides, and `Expect`, which stops at the engine.
fn is_framing(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING || name == header::EXPECT
}

/// Writes `number` in decimal (without the formatting machinery, which costs more than the rest
/// of the field).
fn put_decimal(wire: &mut BytesMut, mut number: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (number % 10) as u8;
        number /= 10;
        if number == 0 {
            break;
        }
    }
    wire.put_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &'static str) -> HeaderName {
        HeaderName::from_static(s)
    }

    fn head(fields: &RequestFields<'_>, framing: BodyFraming) -> String {
        let wire = fields.to_wire(&Method::POST, &"/mcp?x=1".parse().unwrap(), framing, 0).unwrap();
        String::from_utf8(wire.to_vec()).unwrap()
    }

    #[test]
    fn fields_are_written_in_order_and_an_insert_replaces_every_earlier_one_of_its_name() {
        let (host, auth, accept) = (name("host"), name("authorization"), name("accept"));
        let (a, b, c, d) = (
            HeaderValue::from_static("up.example"),
            HeaderValue::from_static("client"),
            HeaderValue::from_static("application/json"),
            HeaderValue::from_static("Bearer gateway"),
        );
        let mut fields = RequestFields::default();
        fields.insert(&host, &a);
        fields.append(&auth, &b);
        fields.append(&accept, &c);
        fields.append(&auth, &b);
        fields.insert(&auth, &d);
        assert_eq!(
            head(&fields, BodyFraming::Length(12)),
            "POST /mcp?x=1 HTTP/1.1\r\nhost: up.example\r\naccept: application/json\r\n\
             authorization: Bearer gateway\r\ncontent-length: 12\r\n\r\n"
        );
    }

    #[test]
    fn the_framing_is_the_requests_own_and_expect_does_not_leave() {
        let (length, coding, expect) = (name("content-length"), name("transfer-encoding"), name("expect"));
        let (five, chunked, go_on) = (
            HeaderValue::from_static("5"),
            HeaderValue::from_static("chunked"),
            HeaderValue::from_static("100-continue"),
        );
        let mut fields = RequestFields::default();
        fields.append(&length, &five);
        fields.append(&coding, &chunked);
        fields.append(&expect, &go_on);
        assert_eq!(head(&fields, BodyFraming::None), "POST /mcp?x=1 HTTP/1.1\r\n\r\n");
        assert_eq!(
            head(&fields, BodyFraming::Length(0)),
            "POST /mcp?x=1 HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(
            head(&fields, BodyFraming::Length(u64::MAX)),
            "POST /mcp?x=1 HTTP/1.1\r\ncontent-length: 18446744073709551615\r\n\r\n"
        );
        assert_eq!(
            head(&fields, BodyFraming::Chunked),
            "POST /mcp?x=1 HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn a_target_without_a_path_is_refused() {
        let fields = RequestFields::default();
        let authority_only: Uri = "example.com:443".parse().unwrap();
        assert!(fields.to_wire(&Method::CONNECT, &authority_only, BodyFraming::None, 0).is_none());
    }
}
