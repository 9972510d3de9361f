//! HTTP/1 message-body framing (RFC 9112 §6–7), shared by both sides of the driver: the client's
//! request bodies (`downstream_h1.rs`) and the upstream's response bodies (`upstream_h1.rs`). The
//! decoder works on a buffer its owner fills; the owner decides what a short read or a framing
//! error means on its side (a 400 to the client, a 502 for the upstream).

use bytes::{Buf, BytesMut};
use http::{header, HeaderMap, HeaderName, Version};

/// Largest trailer section accepted after a chunked body.
pub const MAX_TRAILER_BYTES: usize = 64 * 1024;
/// Longest chunk-size line accepted (the size and any chunk extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// How the rest of a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes remain.
    Length(u64),
    /// The chunked transfer coding, in this decoding state.
    Chunked(Chunk),
    /// The body ends when the peer closes the connection (responses only).
    UntilClose,
    /// The body has been read to its end.
    Done,
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes of it left.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines (not forwarded), this many bytes so far.
    Trailers(usize),
}

impl Framing {
    /// A body of `length` bytes (`Done` when there are none).
    pub fn length(length: u64) -> Self {
        if length == 0 {
            Self::Done
        } else {
            Self::Length(length)
        }
    }

    /// A chunked body, before its first chunk.
    pub fn chunked() -> Self {
        Self::Chunked(Chunk::Size)
    }

    /// True when the body has been read to its end (or there is none).
    pub fn is_done(&self) -> bool {
        *self == Self::Done
    }

    /// Takes the body bytes `buf` holds off its front, decoded; empty when more input is needed
    /// (or the body is done). Bytes past the body's end stay in `buf`.
    pub fn take(&mut self, buf: &mut BytesMut) -> Result<BytesMut, &'static str> {
        match *self {
            Self::Done => Ok(BytesMut::new()),
            Self::Length(left) => {
                let piece = split_up_to(buf, left);
                *self = Self::length(left - piece.len() as u64);
                Ok(piece)
            }
            Self::UntilClose => Ok(buf.split()),
            Self::Chunked(_) => self.decode_chunks(buf),
        }
    }

    /// Decodes as much of a chunked body as `buf` holds.
    fn decode_chunks(&mut self, buf: &mut BytesMut) -> Result<BytesMut, &'static str> {
        let mut out = BytesMut::new();
        while let Self::Chunked(state) = *self {
            let next = match state {
                Chunk::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        if size == 0 {
                            Chunk::Trailers(0)
                        } else {
                            Chunk::Data(size)
                        }
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Err("chunk-size line too long");
                    }
                    Ok(httparse::Status::Partial) => break,
                    Err(_) => return Err("invalid chunk size"),
                },
                Chunk::Data(left) => {
                    if buf.is_empty() {
                        break;
                    }
                    let piece = split_up_to(buf, left);
                    let left = left - piece.len() as u64;
                    if out.is_empty() {
                        out = piece;
                    } else {
                        out.extend_from_slice(&piece);
                    }
                    match left {
                        0 => Chunk::DataEnd,
                        left => Chunk::Data(left),
                    }
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        break;
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF");
                    }
                    buf.advance(2);
                    Chunk::Size
                }
                Chunk::Trailers(seen) => match memchr::memmem::find(buf, b"\r\n") {
                    Some(0) => {
                        buf.advance(2);
                        *self = Self::Done;
                        break;
                    }
                    Some(line) if seen + line <= MAX_TRAILER_BYTES => {
                        buf.advance(line + 2);
                        Chunk::Trailers(seen + line + 2)
                    }
                    None if seen + buf.len() <= MAX_TRAILER_BYTES => break,
                    _ => return Err("trailer section too large"),
                },
            };
            *self = Self::Chunked(next);
        }
        Ok(out)
    }
}

/// Takes up to `left` bytes off the front of `buf`.
fn split_up_to(buf: &mut BytesMut, left: u64) -> BytesMut {
    let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    buf.split_to(take)
}

/// What the framing rules read from a message's header fields (RFC 9112 §6.3, §9.3), gathered in
/// one pass: each parser feeds it the fields as it builds the header map, and a header map built
/// elsewhere is read with [`FramingFields::of`]. (Looking each field up by name instead cost
/// about a hundred instructions a lookup, and a proxied exchange made over a dozen of them.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingFields {
    /// `Content-Length`: `None` when absent; an error when a value is not a number or two
    /// values differ (a list of equal values is one length, as RFC 9110 §8.6 allows).
    content_length: Result<Option<u64>, ()>,
    transfer_encoding: bool,
    /// The last transfer coding named is `chunked`.
    final_chunked: bool,
    connection_close: bool,
    connection_keep_alive: bool,
}

impl Default for FramingFields {
    fn default() -> Self {
        Self {
            content_length: Ok(None),
            transfer_encoding: false,
            final_chunked: false,
            connection_close: false,
            connection_keep_alive: false,
        }
    }
}

impl FramingFields {
    /// The framing fields of a header map.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut fields = Self::default();
        for (name, value) in headers {
            fields.observe(name, value.as_bytes());
        }
        fields
    }

    /// Takes note of one header field, in the order the message carries them.
    pub fn observe(&mut self, name: &HeaderName, value: &[u8]) {
        if name == header::CONTENT_LENGTH {
            self.observe_length(value);
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
            // Only the last value's last coding counts: each value replaces the verdict.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            self.final_chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name == header::CONNECTION {
            for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                self.connection_close |= option.eq_ignore_ascii_case(b"close");
                self.connection_keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }

    fn observe_length(&mut self, value: &[u8]) {
        for item in value.split(|&b| b == b',') {
            self.content_length = match (self.content_length, decimal(item.trim_ascii())) {
                (Ok(None), Some(parsed)) => Ok(Some(parsed)),
                (Ok(Some(seen)), Some(parsed)) if seen == parsed => Ok(Some(seen)),
                _ => Err(()),
            };
        }
    }

    /// The message's `Content-Length`: `None` when absent; an error when a value is not a
    /// number or two values differ.
    pub fn content_length(&self) -> Result<Option<u64>, ()> {
        self.content_length
    }

    /// True when the message names a transfer coding.
    pub fn has_transfer_encoding(&self) -> bool {
        self.transfer_encoding
    }

    /// True when the last transfer coding named is `chunked`.
    pub fn final_coding_is_chunked(&self) -> bool {
        self.transfer_encoding && self.final_chunked
    }

    /// True when the sender of a message of `version` keeps the connection open after it:
    /// HTTP/1.1 unless `Connection` lists `close`, HTTP/1.0 only when it lists `keep-alive`.
    pub fn keeps_alive(&self, version: Version) -> bool {
        match version {
            Version::HTTP_11 => !self.connection_close,
            _ => self.connection_keep_alive && !self.connection_close,
        }
    }
}

/// `digits` as a decimal number: ASCII digits only (no sign, no space), at least one, and no
/// overflow.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |number, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        number.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(fields: &[(HeaderName, &str)]) -> FramingFields {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(name.clone(), value.parse().unwrap());
        }
        FramingFields::of(&headers)
    }

    fn length_of(values: &[&str]) -> Result<Option<u64>, ()> {
        fields_of(&values.iter().map(|v| (header::CONTENT_LENGTH, *v)).collect::<Vec<_>>()).content_length()
    }

    #[test]
    fn a_length_is_plain_decimal_digits_and_a_list_of_equal_values_is_one_length() {
        assert_eq!(length_of(&[]), Ok(None));
        assert_eq!(length_of(&["0"]), Ok(Some(0)));
        assert_eq!(length_of(&["1234"]), Ok(Some(1234)));
        assert_eq!(length_of(&["5, 5", "5"]), Ok(Some(5)));
        assert_eq!(length_of(&["18446744073709551615"]), Ok(Some(u64::MAX)));
    }

    #[test]
    fn signs_spaces_inside_empty_items_overflow_and_differing_values_are_refused() {
        for bad in [&["+5"][..], &["-5"], &["5 5"], &["5,"], &[""], &["0x10"], &["5", "6"], &["5, 6"]] {
            assert_eq!(length_of(bad), Err(()), "{bad:?}");
        }
        assert_eq!(length_of(&["18446744073709551616"]), Err(()));
    }

    #[test]
    fn only_the_last_transfer_coding_decides_whether_a_body_is_chunked() {
        let te = header::TRANSFER_ENCODING;
        assert!(!fields_of(&[]).has_transfer_encoding());
        assert!(fields_of(&[(te.clone(), "chunked")]).final_coding_is_chunked());
        assert!(fields_of(&[(te.clone(), "gzip, Chunked ")]).final_coding_is_chunked());
        assert!(fields_of(&[(te.clone(), "gzip"), (te.clone(), "chunked")]).final_coding_is_chunked());
        let not_last = fields_of(&[(te.clone(), "chunked"), (te.clone(), "gzip")]);
        assert!(not_last.has_transfer_encoding() && !not_last.final_coding_is_chunked());
        assert!(!fields_of(&[(te, "chunked, gzip")]).final_coding_is_chunked());
    }

    #[test]
    fn connection_options_decide_keep_alive_by_version() {
        let c = header::CONNECTION;
        let keeps = |fields: &[(HeaderName, &str)], version| fields_of(fields).keeps_alive(version);
        assert!(keeps(&[], Version::HTTP_11));
        assert!(!keeps(&[], Version::HTTP_10));
        assert!(!keeps(&[(c.clone(), "Upgrade, CLOSE")], Version::HTTP_11));
        assert!(!keeps(&[(c.clone(), "te"), (c.clone(), " close")], Version::HTTP_11));
        assert!(keeps(&[(c.clone(), "Keep-Alive")], Version::HTTP_10));
        assert!(!keeps(&[(c.clone(), "keep-alive, close")], Version::HTTP_10));
        assert!(!keeps(&[(c, "keep-alive-ish")], Version::HTTP_10));
    }
}
