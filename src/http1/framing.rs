//! HTTP/1 message-body framing (RFC 9112 §6–7), shared by both sides of the driver: the client's
//! request bodies (`http1/client/`) and the upstream's response bodies (`http1/upstream/response.rs`). The
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
                Chunk::Size => match chunk_size_line(buf)? {
                    Some((used, size)) => {
                        buf.advance(used);
                        if size == 0 {
                            Chunk::Trailers(0)
                        } else {
                            Chunk::Data(size)
                        }
                    }
                    None if buf.len() > MAX_CHUNK_LINE => return Err("chunk-size line too long"),
                    None => break,
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
                // Trailer fields are read as header fields and not forwarded.
                Chunk::Trailers(seen) => match line_end(buf)? {
                    Some(0) => {
                        buf.advance(2);
                        *self = Self::Done;
                        break;
                    }
                    Some(line) if seen + line <= MAX_TRAILER_BYTES => {
                        trailer_field(&buf[..line])?;
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

/// Reads a chunk-size line (RFC 9112 §7.1) at the start of `buf`: `Some((length of the line
/// with its CRLF, chunk size))`, `None` while it is incomplete. Stricter than httparse, which
/// reads an empty or extension-only line as the last chunk and lets a bare LF through in an
/// extension: here the size has 1 to 16 hex digits, optional whitespace and extensions may
/// follow, and the line ends with CRLF; a bare LF, a CR without LF, or a control character is an
/// error. Extensions are ignored.
fn chunk_size_line(buf: &[u8]) -> Result<Option<(usize, u64)>, &'static str> {
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits > 16 {
        return Err("chunk size too large");
    }
    if digits == buf.len() {
        return Ok(None);
    }
    if digits == 0 {
        return Err("chunk-size line without a size");
    }
    let Some(line) = line_end(buf)? else {
        return Ok(None);
    };
    let rest = &buf[digits..line];
    let after_space = rest.iter().position(|&b| b != b' ' && b != b'\t').map_or(&[][..], |at| &rest[at..]);
    if !after_space.is_empty() && after_space[0] != b';' {
        return Err("invalid chunk size");
    }
    if after_space.iter().any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f)) {
        return Err("control character in a chunk extension");
    }
    let size = buf[..digits].iter().fold(0u64, |size, &digit| {
        // At most 16 hex digits: the shifts cannot overflow.
        let value = (digit as char).to_digit(16).unwrap_or(0);
        (size << 4) | u64::from(value)
    });
    Ok(Some((line + 2, size)))
}

/// Where the line at the start of `buf` ends: the position of its CRLF, `None` while no line
/// end has arrived. A bare LF, or a CR followed by anything but LF, is an error: a reader that
/// took either for a line end would see a different message than one that did not.
fn line_end(buf: &[u8]) -> Result<Option<usize>, &'static str> {
    match memchr::memchr2(b'\r', b'\n', buf) {
        None => Ok(None),
        Some(at) if buf[at] == b'\n' => Err("bare LF in chunked framing"),
        Some(at) => match buf.get(at + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(at)),
            Some(_) => Err("CR without LF in chunked framing"),
        },
    }
}

/// Checks one trailer line (without its CRLF) as a header field (RFC 9110 §5): a token name,
/// a colon, and a value of visible characters, spaces and tabs. Obsolete line folding (a line
/// that starts with whitespace) is refused.
fn trailer_field(line: &[u8]) -> Result<(), &'static str> {
    let colon = line.iter().position(|&b| b == b':').ok_or("trailer line without a colon")?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_token_char(b)) {
        return Err("invalid trailer field name");
    }
    if value.iter().any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f)) {
        return Err("invalid trailer field value");
    }
    Ok(())
}

/// A `tchar` of RFC 9110 §5.6.2.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Takes up to `left` bytes off the front of `buf`.
fn split_up_to(buf: &mut BytesMut, left: u64) -> BytesMut {
    let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    buf.split_to(take)
}

/// A `Content-Length` that is not a number, or two that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid Content-Length")]
pub struct InvalidLength;

/// What the framing rules read from a message's header fields (RFC 9112 §6.3, §9.3), gathered in
/// one pass: each parser feeds it the fields as it builds the header map, and a header map built
/// elsewhere is read with [`FramingFields::of`]. (Looking each field up by name instead cost
/// about a hundred instructions a lookup, and a proxied exchange made over a dozen of them.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingFields {
    /// `Content-Length`: `None` when absent; an error when a value is not a number or two
    /// values differ (a list of equal values is one length, as RFC 9110 §8.6 allows).
    content_length: Result<Option<u64>, InvalidLength>,
    /// More than one `Content-Length` value was given (a list, or several fields).
    length_repeated: bool,
    transfer_encoding: bool,
    /// The last transfer coding named is `chunked`.
    final_chunked: bool,
    /// `Transfer-Encoding` fields seen.
    coding_fields: u8,
    /// Codings named in them, and how many of those were `chunked`.
    codings: u8,
    chunked_codings: u8,
    /// A `Transfer-Encoding` list had an empty item (`chunked,` or `, chunked`).
    empty_coding: bool,
    connection_close: bool,
    connection_keep_alive: bool,
}

impl Default for FramingFields {
    fn default() -> Self {
        Self {
            content_length: Ok(None),
            length_repeated: false,
            transfer_encoding: false,
            final_chunked: false,
            coding_fields: 0,
            codings: 0,
            chunked_codings: 0,
            empty_coding: false,
            connection_close: false,
            connection_keep_alive: false,
        }
    }
}

/// What a message's `Transfer-Encoding` says, read strictly (RFC 9112 §6.1, §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferCoding {
    /// No `Transfer-Encoding`.
    None,
    /// Exactly one coding, `chunked`.
    Chunked,
    /// `chunked` last, after other codings (`gzip, chunked`): the body is chunked, and the
    /// other codings stay applied to its content.
    ChunkedAfterOthers,
    /// A final coding other than `chunked`.
    NotChunked,
    /// Readable more than one way: two `Transfer-Encoding` fields, `chunked` named twice, or an
    /// empty list item.
    Ambiguous,
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
            self.coding_fields = self.coding_fields.saturating_add(1);
            for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                self.empty_coding |= coding.is_empty();
                self.codings = self.codings.saturating_add(1);
                // Only the last value's last coding decides: each coding replaces the verdict.
                self.final_chunked = coding.eq_ignore_ascii_case(b"chunked");
                self.chunked_codings += u8::from(self.final_chunked && self.chunked_codings < u8::MAX);
            }
        } else if name == header::CONNECTION {
            for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                self.connection_close |= option.eq_ignore_ascii_case(b"close");
                self.connection_keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }

    fn observe_length(&mut self, value: &[u8]) {
        for item in value.split(|&b| b == b',') {
            self.length_repeated |= self.content_length != Ok(None);
            self.content_length = match (self.content_length, decimal(item.trim_ascii())) {
                (Ok(None), Some(parsed)) => Ok(Some(parsed)),
                (Ok(Some(seen)), Some(parsed)) if seen == parsed => Ok(Some(seen)),
                _ => Err(InvalidLength),
            };
        }
    }

    /// The message's `Content-Length`: `None` when absent; an error when a value is not a
    /// number or two values differ.
    pub fn content_length(&self) -> Result<Option<u64>, InvalidLength> {
        self.content_length
    }

    /// True when the `Content-Length` was given more than once (a list of equal values, or
    /// several fields): a sender must forward it as one value.
    pub fn length_repeated(&self) -> bool {
        self.length_repeated
    }

    /// The message's transfer coding, read strictly.
    pub fn transfer_coding(&self) -> TransferCoding {
        if !self.transfer_encoding {
            TransferCoding::None
        } else if self.coding_fields > 1 || self.chunked_codings > 1 || self.empty_coding {
            TransferCoding::Ambiguous
        } else if !self.final_chunked {
            TransferCoding::NotChunked
        } else if self.codings > 1 {
            TransferCoding::ChunkedAfterOthers
        } else {
            TransferCoding::Chunked
        }
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

    fn length_of(values: &[&str]) -> Result<Option<u64>, InvalidLength> {
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
            assert_eq!(length_of(bad), Err(InvalidLength), "{bad:?}");
        }
        assert_eq!(length_of(&["18446744073709551616"]), Err(InvalidLength));
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

    /// Decodes a whole chunked body; the bytes past its end stay out of the result.
    fn decode(wire: &[u8]) -> Result<(Vec<u8>, bool), &'static str> {
        let mut framing = Framing::chunked();
        let mut buf = BytesMut::from(wire);
        let mut body = Vec::new();
        loop {
            let piece = framing.take(&mut buf)?;
            if piece.is_empty() {
                return Ok((body, framing.is_done()));
            }
            body.extend_from_slice(&piece);
        }
    }

    #[test]
    fn a_well_formed_chunked_body_decodes_with_extensions_and_trailers_left_out() {
        assert_eq!(decode(b"5\r\nhello\r\n0\r\n\r\n"), Ok((b"hello".to_vec(), true)));
        assert_eq!(
            decode(b"5 ;a=b;c=\"d e\"\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n").map(|d| d.0.len()),
            Ok(15)
        );
        assert_eq!(decode(b"1\r\nx\r\n0\r\nExpires: never\r\nx-t:\t v \r\n\r\n"), Ok((b"x".to_vec(), true)));
        // Incomplete input waits for more rather than failing.
        assert_eq!(decode(b"5\r\nhel"), Ok((b"hel".to_vec(), false)));
        assert_eq!(decode(b"5\r"), Ok((Vec::new(), false)));
        assert_eq!(decode(b"0\r\nx-t: v"), Ok((Vec::new(), false)));
    }

    #[test]
    fn a_chunk_size_line_needs_a_hex_size_and_a_crlf() {
        for bad in [
            &b"\r\n\r\n"[..],
            b";ext\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5x\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_bare_lf_or_a_lone_cr_anywhere_in_the_framing_is_refused() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5;a=b\nc\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"5\r\nhello\r\n0\r\nx: a\nb\r\n\r\n",
            b"5\r\nhello\r\n0\r\nx: a\r\n\r\r\n",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn trailer_lines_must_be_header_fields() {
        for bad in [
            &b"0\r\nno colon\r\n\r\n"[..],
            b"0\r\n: empty name\r\n\r\n",
            b"0\r\nbad name: v\r\n\r\n",
            b"0\r\nx: v\r\n folded\r\n\r\n",
            b"0\r\nx: nul \x00\r\n\r\n",
            b"0\r\nx: del \x7f\r\n\r\n",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn only_exactly_one_chunked_coding_reads_one_way() {
        let te = header::TRANSFER_ENCODING;
        let coding = |values: &[&str]| {
            fields_of(&values.iter().map(|v| (te.clone(), *v)).collect::<Vec<_>>()).transfer_coding()
        };
        assert_eq!(coding(&[]), TransferCoding::None);
        assert_eq!(coding(&["chunked"]), TransferCoding::Chunked);
        assert_eq!(coding(&[" Chunked "]), TransferCoding::Chunked);
        assert_eq!(coding(&["gzip, chunked"]), TransferCoding::ChunkedAfterOthers);
        assert_eq!(coding(&["gzip"]), TransferCoding::NotChunked);
        assert_eq!(coding(&["chunked, gzip"]), TransferCoding::NotChunked);
        for ambiguous in
            [&["chunked, chunked"][..], &["chunked", "chunked"], &["gzip", "chunked"], &["chunked,"], &[""]]
        {
            assert_eq!(coding(ambiguous), TransferCoding::Ambiguous, "{ambiguous:?}");
        }
    }

    #[test]
    fn a_repeated_length_is_noticed_so_that_it_goes_on_as_one_value() {
        let cl = header::CONTENT_LENGTH;
        assert!(!fields_of(&[(cl.clone(), "5")]).length_repeated());
        assert!(fields_of(&[(cl.clone(), "5, 5")]).length_repeated());
        assert!(fields_of(&[(cl.clone(), "5"), (cl, "5")]).length_repeated());
    }
}
