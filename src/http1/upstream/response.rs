//! The upstream side of an HTTP/1 exchange, without Pingora's client session: the response head
//! is parsed (httparse) straight into the `ResponseHeader` the phases see, and the body is read
//! by its framing (a length, the chunked coding, or until the upstream closes).
//!
//! Why not Pingora's client session: it builds every response head twice over (a header map with
//! a case map, then the copy a proxy must take to own it) and builds a body reader and a timer per
//! read; that was about a fifth of the instructions of a proxied request (load/results/perf-notes.md,
//! round 4). The framing rules are RFC 9112 §6.3, as Pingora and nginx apply them.

use std::mem::MaybeUninit;
use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};
use smallvec::SmallVec;
use tokio::io::AsyncReadExt;

use super::pool::UpstreamConnection;
use crate::http1::framing::{Framing, FramingFields, InvalidLength, TransferCoding};

/// Most header lines accepted in one response head (Pingora's limit too).
const MAX_HEADERS: usize = 256;
/// Largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Room given to each read of the upstream socket.
const READ_SIZE: usize = 16 * 1024;
/// Most informational (1xx) responses skipped before the final one.
const MAX_INFORMATIONAL: usize = 16;

/// One upstream connection while it answers one request.
pub struct UpstreamResponse {
    conn: UpstreamConnection,
    read_timeout: Option<Duration>,
    body: Framing,
    /// Whether the connection may carry another request once the body is read.
    keepalive: bool,
}

impl UpstreamResponse {
    /// Starts reading the answer to a request already written on `conn`.
    pub fn new(conn: UpstreamConnection, read_timeout: Option<Duration>) -> Self {
        Self { conn, read_timeout, body: Framing::Done, keepalive: false }
    }

    /// Reads the final response head (informational ones are skipped; a `101` is refused, since
    /// the gateway never forwards an upgrade) and sets up the body's framing. A response to
    /// `HEAD`, a `204` and a `304` have no body.
    pub async fn read_head(&mut self, request_method: &Method) -> Result<Box<ResponseHeader>> {
        let mut informational = 0;
        loop {
            match parse_head(&mut self.conn.buf)? {
                Some(head) => {
                    let status = head.header.status;
                    if status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(bad_head("unrequested 101 response"));
                    }
                    if status.is_informational() {
                        informational += 1;
                        if informational > MAX_INFORMATIONAL {
                            return Err(bad_head("too many informational responses from the upstream"));
                        }
                        continue;
                    }
                    return self.frame(head, request_method);
                }
                None if self.conn.buf.len() > MAX_HEAD_BYTES => {
                    return Err(bad_head("upstream response head too large"));
                }
                None => {}
            }
            if self.fill().await? == 0 {
                return Err(if self.conn.buf.is_empty() {
                    Error::explain(
                        ErrorType::ConnectionClosed,
                        "upstream closed the connection before answering",
                    )
                    .into_up()
                } else {
                    bad_head("upstream closed the connection inside the response head")
                });
            }
        }
    }

    /// Decides the body's framing and the connection's reuse from the final head.
    fn frame(&mut self, head: Head, request_method: &Method) -> Result<Box<ResponseHeader>> {
        let Head { mut header, framing } = head;
        self.keepalive = framing.keeps_alive(header.version);
        let no_body = *request_method == Method::HEAD || matches!(header.status.as_u16(), 204 | 304);
        // One strict reading (RFC 9112 §6.3): a coding or a length that could be read two ways
        // is a 502, and the connection is not reused (it is dropped with the error).
        if framing.transfer_coding() == TransferCoding::Ambiguous {
            return Err(bad_head("upstream Transfer-Encoding that could be read two ways"));
        }
        // Also on a response that has no body (a 204, a 304, an answer to HEAD): the length
        // goes on to the client, who may read it.
        match framing.content_length() {
            Err(InvalidLength) => return Err(bad_head("invalid upstream Content-Length")),
            // A list of equal values is one length, and goes on as one value.
            Ok(Some(length)) if framing.length_repeated() => {
                header.insert_header(header::CONTENT_LENGTH, length)?;
            }
            Ok(_) => {}
        }
        self.body = if no_body {
            Framing::Done
        } else if framing.has_transfer_encoding() {
            // A length next to a transfer coding is ignored and not forwarded, and the connection
            // is not reused: the two framings disagree about where the next response starts.
            if framing.content_length() != Ok(None) {
                self.keepalive = false;
                header.remove_header(&header::CONTENT_LENGTH);
            }
            if framing.final_coding_is_chunked() {
                Framing::chunked()
            } else {
                self.keepalive = false;
                Framing::UntilClose
            }
        } else {
            match framing.content_length() {
                Ok(Some(length)) => Framing::length(length),
                Ok(None) => {
                    self.keepalive = false;
                    Framing::UntilClose
                }
                // RFC 9112 §6.3: a proxy answers 502 to a response whose framing is invalid.
                Err(InvalidLength) => return Err(bad_head("invalid upstream Content-Length")),
            }
        };
        Ok(header)
    }

    /// True when the body has been read to its end (or there is none).
    pub fn is_body_done(&self) -> bool {
        self.body == Framing::Done
    }

    /// The next piece of the body: everything one socket read made available, decoded.
    /// `None` at the end of the body.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            let piece = self.body.take(&mut self.conn.buf).map_err(bad_chunk)?;
            if !piece.is_empty() {
                return Ok(Some(piece.freeze()));
            }
            if self.body.is_done() {
                return Ok(None);
            }
            if self.fill().await? == 0 {
                if self.body == Framing::UntilClose {
                    self.body = Framing::Done;
                    return Ok(None);
                }
                return Err(closed_inside_body());
            }
        }
    }

    /// The next piece of the body when the buffer already holds it: no read and no wait.
    /// `None` when the body is done or a read is needed ([`UpstreamResponse::read_body`]).
    pub fn read_buffered(&mut self) -> Result<Option<Bytes>> {
        let piece = self.body.take(&mut self.conn.buf).map_err(bad_chunk)?;
        Ok((!piece.is_empty()).then(|| piece.freeze()))
    }

    /// The connection, when its response was read to the end and it may carry another request.
    pub fn into_reusable(self) -> Option<UpstreamConnection> {
        (self.keepalive && self.body == Framing::Done && self.conn.buf.is_empty()).then_some(self.conn)
    }

    /// One read of the socket into the buffer, within the read timeout; 0 when the upstream closed.
    ///
    /// The timeout is the connection's own Tokio timer, moved later for each read
    /// (`http1/timer.rs`): a fresh Tokio timer per read would often wake the runtime through its
    /// eventfd, a `write` system call per request (perf-notes, round 5), and Pingora's fast
    /// timeout costs a registration per read.
    async fn fill(&mut self) -> Result<usize> {
        self.conn.buf.reserve(READ_SIZE);
        let read = self.conn.stream.read_buf(&mut self.conn.buf);
        let read = match self.read_timeout {
            Some(limit) => self.conn.read_timer.within(limit, read).await.ok_or_else(|| {
                Error::explain(ErrorType::ReadTimedout, "waiting for the upstream response").into_up()
            })?,
            None => read.await,
        };
        read.map_err(|e| Error::because(ErrorType::ReadError, "reading the upstream response", e).into_up())
    }
}

/// A complete response head and its framing fields.
struct Head {
    /// Boxed where it is built: it is passed up through several results, and a pointer is
    /// cheaper to move.
    header: Box<ResponseHeader>,
    framing: FramingFields,
}

/// Parses a response head at the start of `buf` and takes it off; `None` while it is
/// incomplete. The header values share the head's bytes instead of each being copied.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad_head(format!("invalid upstream response head: {e}"))),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| bad_head("invalid upstream status code"))?;
    let version = if response.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let base = buf.as_ptr() as usize;
    let mut framing = FramingFields::default();
    let mut fields: SmallVec<[(HeaderName, Range<usize>); 16]> = SmallVec::new();
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| bad_head("invalid upstream header name"))?;
        framing.observe(&name, field.value);
        let start = field.value.as_ptr() as usize - base;
        fields.push((name, start..start + field.value.len()));
    }
    // Kept only when it is not the status's usual one (as Pingora does), without a copy else.
    let reason = response.reason.filter(|r| Some(*r) != status.canonical_reason()).map(str::to_owned);

    let raw = buf.split_to(length).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, value) in fields.drain(..) {
        // SAFETY: httparse accepted this value, and the bytes it accepts in a field value (tab,
        // 0x20-0x7E, 0x80-0xFF) are exactly those `HeaderValue` allows (see
        // `every_byte_httparse_accepts_in_a_response_value_is_one_http_accepts`; debug builds
        // check each value anyway).
        headers.append(name, unsafe { HeaderValue::from_maybe_shared_unchecked(raw.slice(value)) });
    }
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    let mut header = Box::new(ResponseHeader::from(parts));
    if reason.is_some() {
        header.set_reason_phrase(reason.as_deref())?;
    }
    Ok(Some(Head { header, framing }))
}

fn closed_inside_body() -> Box<Error> {
    Error::explain(ErrorType::ConnectionClosed, "upstream closed the connection inside the response body")
        .into_up()
}

fn bad_head(what: impl Into<pingora::ImmutStr>) -> Box<Error> {
    Error::explain(ErrorType::InvalidHTTPHeader, what).into_up()
}

fn bad_chunk(what: &'static str) -> Box<Error> {
    Error::explain(ErrorType::H1Error, what).into_up()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;

    /// What reading `pieces` (sent one after another, as separate writes) as the answer to a
    /// `method` request gave: the head, the body, and whether the connection could be reused.
    struct Read {
        head: Result<Box<ResponseHeader>>,
        body: Result<Vec<u8>>,
        reusable: bool,
    }

    async fn read(method: Method, pieces: &[&[u8]], then_close: bool) -> Read {
        let (ours, mut theirs) = UnixStream::pair().expect("socket pair");
        let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for piece in pieces {
                theirs.write_all(&piece).await.expect("write");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if !then_close {
                // Keep the connection open until the reader is done.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let stream: pingora::protocols::Stream = Box::new(pingora::protocols::l4::stream::Stream::from(ours));
        let mut upstream = UpstreamResponse::new(stream.into(), Some(Duration::from_millis(200)));
        let head = upstream.read_head(&method).await;
        let mut body = Ok(Vec::new());
        if head.is_ok() {
            let mut whole = Vec::new();
            body = loop {
                match upstream.read_body().await {
                    Ok(Some(piece)) => whole.extend_from_slice(&piece),
                    Ok(None) => break Ok(whole),
                    Err(e) => break Err(e),
                }
            };
        }
        let reusable = upstream.into_reusable().is_some();
        writer.abort();
        Read { head, body, reusable }
    }

    fn error_type<T>(result: &Result<T>) -> Option<ErrorType> {
        result.as_ref().err().map(|e| e.etype().clone())
    }

    #[tokio::test]
    async fn a_length_delimited_body_arriving_in_pieces_is_read_whole_and_the_connection_reused() {
        let got = read(
            Method::POST,
            &[
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCont",
                b"ent-Length: 11\r\n\r\n{\"a\":",
                b"\"bcd\"}",
            ],
            false,
        )
        .await;
        let head = got.head.expect("head");
        assert_eq!(head.status, 200);
        assert_eq!(head.headers["content-type"], "application/json");
        assert_eq!(got.body.expect("body"), b"{\"a\":\"bcd\"}");
        assert!(got.reusable);
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded_across_reads_with_extensions_and_trailers() {
        let got = read(
            Method::POST,
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=x\r\nhel",
                b"lo\r\n1",
                b"\r\n \r\n6\r\nworld!\r",
                b"\n0\r\nX-Checksum: 1\r\n\r\n",
            ],
            false,
        )
        .await;
        assert_eq!(got.head.expect("head").headers["transfer-encoding"], "chunked");
        assert_eq!(got.body.expect("body"), b"hello world!");
        assert!(got.reusable);
    }

    #[tokio::test]
    async fn informational_responses_are_skipped_up_to_a_limit_and_an_unasked_upgrade_refused() {
        let got =
            read(Method::POST, &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"], false)
                .await;
        assert_eq!(got.head.expect("head").status, 204);
        assert!(got.reusable);

        let endless: Vec<u8> = b"HTTP/1.1 102 Processing\r\n\r\n".repeat(MAX_INFORMATIONAL + 1);
        let got =
            read(Method::POST, &[&endless, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], false).await;
        assert_eq!(error_type(&got.head), Some(ErrorType::InvalidHTTPHeader));

        let got =
            read(Method::GET, &[b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"], false)
                .await;
        assert_eq!(error_type(&got.head), Some(ErrorType::InvalidHTTPHeader));
    }

    #[tokio::test]
    async fn head_204_and_304_answers_have_no_body_whatever_their_length_says() {
        for (method, raw) in [
            (Method::HEAD, &b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"[..]),
            (Method::GET, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"),
            (Method::POST, b"HTTP/1.1 204 No Content\r\n\r\n"),
        ] {
            let got = read(method, &[raw], false).await;
            assert!(got.head.is_ok());
            assert_eq!(got.body.expect("body"), b"");
            assert!(got.reusable);
        }
    }

    #[tokio::test]
    async fn a_body_without_length_runs_to_the_close_and_the_connection_is_not_reused() {
        let got = read(Method::GET, &[b"HTTP/1.1 200 OK\r\n\r\nevent: a\n\n", b"event: b\n\n"], true).await;
        assert_eq!(got.body.expect("body"), b"event: a\n\nevent: b\n\n");
        assert!(!got.reusable);
    }

    #[tokio::test]
    async fn conflicting_or_malformed_lengths_are_refused() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nhello",
        ] {
            let got = read(Method::POST, &[raw], false).await;
            assert_eq!(error_type(&got.head), Some(ErrorType::InvalidHTTPHeader), "{}", raw.escape_ascii());
        }
        // The same length twice is one length.
        let got = read(Method::POST, &[b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"], false).await;
        assert_eq!(got.body.expect("body"), b"hello");
    }

    #[tokio::test]
    async fn a_length_next_to_a_transfer_coding_is_dropped_and_the_connection_not_reused() {
        let got = read(
            Method::POST,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
            false,
        )
        .await;
        assert!(!got.head.expect("head").headers.contains_key(header::CONTENT_LENGTH));
        assert_eq!(got.body.expect("body"), b"ok");
        assert!(!got.reusable);
    }

    #[tokio::test]
    async fn an_http10_answer_is_reused_only_when_it_asks_to_be() {
        let plain = read(Method::POST, &[b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"], false).await;
        assert!(!plain.reusable);
        let asked = read(
            Method::POST,
            &[b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok"],
            false,
        )
        .await;
        assert!(asked.reusable);
        let closing = read(
            Method::POST,
            &[b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
            false,
        )
        .await;
        assert!(!closing.reusable);
    }

    #[tokio::test]
    async fn a_close_before_any_byte_reads_as_closed_but_inside_the_head_or_body_as_broken() {
        let got = read(Method::POST, &[], true).await;
        assert_eq!(error_type(&got.head), Some(ErrorType::ConnectionClosed));

        let got = read(Method::POST, &[b"HTTP/1.1 200 OK\r\nContent-Le"], true).await;
        assert_eq!(error_type(&got.head), Some(ErrorType::InvalidHTTPHeader));

        let got = read(Method::POST, &[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"], true).await;
        assert_eq!(error_type(&got.body), Some(ErrorType::ConnectionClosed));
        assert!(!got.reusable);
    }

    #[tokio::test]
    async fn bad_chunk_framing_is_an_error() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
        ] {
            let got = read(Method::POST, &[raw], false).await;
            assert_eq!(error_type(&got.body), Some(ErrorType::H1Error), "{}", raw.escape_ascii());
        }
    }

    #[tokio::test]
    async fn a_silent_upstream_is_a_read_timeout() {
        let got = read(Method::POST, &[b"HTTP/1.1 200 OK\r\n"], false).await;
        assert_eq!(error_type(&got.head), Some(ErrorType::ReadTimedout));
    }

    #[test]
    fn every_byte_httparse_accepts_in_a_response_value_is_one_http_accepts() {
        for byte in 0..=255u8 {
            let mut sent = b"HTTP/1.1 200 OK\r\nX-Probe: a".to_vec();
            sent.extend_from_slice(&[byte, b'b']);
            sent.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\nnext");
            let valid = HeaderValue::from_bytes(&[b'a', byte, b'b']).is_ok();
            let mut buf = BytesMut::from(&sent[..]);
            match parse_head(&mut buf) {
                Ok(Some(head)) => {
                    assert!(valid, "byte {byte:#04x} was accepted but is not a valid header value byte");
                    let value = head.header.headers.get("x-probe").expect("the probe header");
                    assert_eq!(value.as_bytes(), [b'a', byte, b'b']);
                    assert_eq!(head.header.headers["content-length"], "0");
                    assert_eq!(&buf[..], b"next", "only the head is taken off the buffer");
                }
                // CR and LF end the field early; anything else refused must be a byte http refuses.
                Err(e) if e.etype() == &ErrorType::InvalidHTTPHeader => {
                    assert!(!valid || byte == b'\r' || byte == b'\n', "byte {byte:#04x} was refused")
                }
                other => panic!("byte {byte:#04x}: {:?}", other.map(|h| h.is_some())),
            }
        }
    }

    #[test]
    fn a_reason_phrase_is_forwarded_as_the_upstream_sent_it() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 404 Gone Fishing\r\n\r\n"[..]);
        let head = parse_head(&mut buf).expect("parses").expect("complete");
        assert_eq!(head.header.get_reason_phrase(), Some("Gone Fishing"));
        let mut buf = BytesMut::from(&b"HTTP/1.1 404 Not Found\r\n\r\n"[..]);
        let head = parse_head(&mut buf).expect("parses").expect("complete");
        assert_eq!(head.header.get_reason_phrase(), Some("Not Found"));
    }

    #[tokio::test]
    async fn a_body_that_came_with_the_head_is_read_without_waiting() {
        let (ours, mut theirs) = UnixStream::pair().expect("socket pair");
        theirs.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345").await.expect("write");
        let stream: pingora::protocols::Stream = Box::new(pingora::protocols::l4::stream::Stream::from(ours));
        let mut upstream = UpstreamResponse::new(stream.into(), Some(Duration::from_millis(200)));
        upstream.read_head(&Method::POST).await.expect("head");
        assert_eq!(upstream.read_buffered().expect("framed").as_deref(), Some(&b"12345"[..]));
        assert!(upstream.read_buffered().expect("framed").is_none(), "the rest has not arrived");
        assert!(!upstream.is_body_done());
        theirs.write_all(b"67890").await.expect("write");
        assert_eq!(upstream.read_body().await.expect("body").as_deref(), Some(&b"67890"[..]));
        assert!(upstream.is_body_done());
    }
}
