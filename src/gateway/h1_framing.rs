//! HTTP/1 message-body framing (RFC 9112 §6–7), shared by both sides of the driver: the client's
//! request bodies (`downstream_h1.rs`) and the upstream's response bodies (`upstream_h1.rs`). The
//! decoder works on a buffer its owner fills; the owner decides what a short read or a framing
//! error means on its side (a 400 to the client, a 502 for the upstream).

use bytes::{Buf, BytesMut};
use http::{header, HeaderMap, HeaderName};

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

/// True when a comma-separated header (e.g. `Connection`) lists `token`.
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// True when the last transfer coding named is `chunked`.
pub fn final_coding_is_chunked(headers: &HeaderMap) -> bool {
    let last_value = headers.get_all(header::TRANSFER_ENCODING).iter().next_back();
    last_value
        .and_then(|value| value.as_bytes().rsplit(|&b| b == b',').next())
        .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The message's `Content-Length`: `None` when absent; an error when a value is not a number or
/// two values differ (a list of equal values is one length, as RFC 9110 §8.6 allows).
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let parsed = decimal(item.trim_ascii()).ok_or(())?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(());
            }
            length = Some(parsed);
        }
    }
    Ok(length)
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

    fn length_of(values: &[&str]) -> Result<Option<u64>, ()> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::CONTENT_LENGTH, value.parse().unwrap());
        }
        content_length(&headers)
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
}
