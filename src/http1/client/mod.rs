//! The client side of an HTTP/1 connection, without Pingora's server session: request heads are
//! parsed (httparse) straight into the `RequestHeader` the phases see, request bodies decoded by
//! their framing, and responses serialized in one buffer that leaves in one write.
//!
//! Why not Pingora's server session: it builds every request head with a case-preserving second
//! header map, inserts `Date` and `Connection` into every response's map before serializing it,
//! and builds a body reader, writer and timer per request; that was ~18 k of the ~41 k
//! instructions of a proxied request (load/results/perf-notes.md, round 5).
//!
//! The phases still see Pingora's `Session`: a [`ClientRequest`] is a custom HTTP session
//! (`pingora::protocols::http::custom::server::Session`), which Pingora's server session wraps
//! and dispatches to. The rules applied to what a client sends (RFC 9112, as Pingora and nginx
//! apply them):
//! - a head larger than [`MAX_HEADERS`] fields or [`MAX_HEAD_BYTES`], that does not parse, with
//!   a target of no RFC 9112 form, an ambiguous authority or two `Host` fields (Pingora's check),
//!   no `Host` on HTTP/1.1, two differing lengths, a transfer coding on HTTP/1.0, a
//!   `Transfer-Encoding` that could be read two ways (two fields, `chunked` twice) or whose final
//!   coding is not `chunked`, or both a length and a transfer coding (a request-smuggling
//!   signature) is answered 400 and the connection closed; a coding before `chunked`
//!   (`gzip, chunked`) is answered 501, since the gateway does not decode codings;
//! - chunked bodies are read strictly (`framing.rs`): a size on every chunk line, CRLF and
//!   nothing else as a line end, trailer lines that are header fields; anything else is a 400;
//! - a request without a length or coding has no body; bodies are decoded by length or chunks;
//! - the connection is kept for another request only when the client wants it (HTTP/1.1 without
//!   `Connection: close`, HTTP/1.0 with `keep-alive`), the request body was read to its end and
//!   the response written to its end.

use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use crossbeam_utils::atomic::AtomicCell;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use pingora::http::{HeaderNameVariant, RequestHeader, ResponseHeader};
use pingora::protocols::http::custom::server::Session as CustomSession;
use pingora::protocols::http::custom::CustomMessageWrite;
use pingora::protocols::http::date::get_cached_date;
use pingora::protocols::http::HttpTask;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::{Digest, Stream};
use pingora::time::fast_timeout::fast_timeout;
use pingora::{Error, ErrorType, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http1::framing::{Framing, FramingFields, InvalidLength, TransferCoding};
use crate::http1::timer::ConnectionTimer;

/// Most header lines accepted in one request head (Pingora's limit too).
pub const MAX_HEADERS: usize = 256;
/// Largest request head accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Room given to each read of the client socket.
const READ_SIZE: usize = 8 * 1024;
/// Most request-body bytes kept for error answers (Pingora's retry-buffer limit).
const RETRY_BUFFER_LIMIT: usize = 64 * 1024;
/// A response body written at most this large goes out in the same write as a header waiting
/// for it (larger ones are written on their own rather than copied).
const COALESCE_LIMIT: usize = 16 * 1024;
/// Most write-buffer room a connection keeps between requests.
const KEPT_WRITE_BUFFER: usize = 16 * 1024;
/// How long a request head or body read may wait when nothing else says (Pingora's default).
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

type MessageReader = Box<dyn futures_util::Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>;

/// A client connection between requests: its socket and any bytes read past the last request
/// (a pipelined next request).
pub struct ClientConnection {
    stream: Stream,
    buf: BytesMut,
    digest: Digest,
    /// Field positions of the head being parsed, kept to save an allocation per request.
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// The wait for the next request head (one timer for the connection's life).
    head_timer: ConnectionTimer,
    /// Serialized response bytes not yet written (a header waiting for its body). Kept with the
    /// connection so that its allocation serves request after request.
    pending: BytesMut,
}

impl ClientConnection {
    /// A connection just accepted.
    pub fn new(stream: Stream) -> Self {
        let digest = Digest {
            ssl_digest: stream.get_ssl_digest(),
            timing_digest: stream.get_timing_digest(),
            proxy_digest: stream.get_proxy_digest(),
            socket_digest: stream.get_socket_digest(),
        };
        Self {
            stream,
            buf: BytesMut::new(),
            digest,
            fields: Vec::new(),
            head_timer: ConnectionTimer::default(),
            pending: BytesMut::new(),
        }
    }

    /// Waits up to `wait` for the next request's head and parses it. `Ok(None)` when the client
    /// closed the connection, or went quiet, before sending one; an `InvalidHTTPHeader` error
    /// when the head is malformed (answer it with [`ClientConnection::refuse`]).
    pub async fn read_head(&mut self, wait: Duration) -> Result<Option<Box<RequestHead>>> {
        // Taken out while the read borrows the connection; put back for the next request.
        let mut timer = std::mem::take(&mut self.head_timer);
        let read = timer.within(wait, self.read_head_untimed()).await;
        self.head_timer = timer;
        // A client that sends nothing in time is closed on quietly, as nginx does.
        read.unwrap_or(Ok(None))
    }

    async fn read_head_untimed(&mut self) -> Result<Option<Box<RequestHead>>> {
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = self.parse_head()? {
                    return Ok(Some(head));
                }
                if self.buf.len() > MAX_HEAD_BYTES {
                    return Err(bad_request("request head too large"));
                }
            }
            self.buf.reserve(READ_SIZE);
            let read = self.stream.read_buf(&mut self.buf).await.map_err(|e| {
                Error::because(ErrorType::ReadError, "reading the request head", e).into_down()
            })?;
            if read == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(Error::explain(ErrorType::ConnectionClosed, "client closed inside the request head")
                        .into_down())
                };
            }
        }
    }

    /// Parses a complete head at the start of the buffer; `None` while it is incomplete. The
    /// header values and target share the head's bytes instead of being copied. Boxed: the head
    /// is passed up through several futures' results, and a pointer is cheaper to move.
    fn parse_head(&mut self) -> Result<Option<Box<RequestHead>>> {
        let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            &self.buf,
            &mut slots,
        );
        let length = match parsed {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(bad_request(format!("invalid request head: {e}"))),
        };
        let base = self.buf.as_ptr() as usize;
        let range = |piece: &[u8]| {
            let start = piece.as_ptr() as usize - base;
            start..start + piece.len()
        };
        let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
            .map_err(|_| bad_request("invalid method"))?;
        let target = range(request.path.unwrap_or_default().as_bytes());
        let version = if request.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        self.fields.clear();
        self.fields.extend(request.headers.iter().map(|h| (range(h.name.as_bytes()), range(h.value))));

        let raw = self.buf.split_to(length).freeze();
        let uri =
            Uri::from_maybe_shared(raw.slice(target)).map_err(|_| bad_request("invalid request target"))?;
        // RFC 9112 §3.2: origin-form, absolute-form, or `*` for OPTIONS (authority-form is
        // CONNECT's, which the driver refuses); anything else the Uri parser let through (`:*`)
        // would reach the routes as an empty path.
        let origin_form = uri.path().starts_with('/') && uri.authority().is_none();
        let absolute_form = matches!(uri.scheme_str(), Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
            && uri.authority().is_some();
        let asterisk = method == Method::OPTIONS && uri == "*";
        if !(origin_form || absolute_form || asterisk || method == Method::CONNECT) {
            return Err(bad_request("request target of no known form"));
        }
        let mut headers = HeaderMap::with_capacity(self.fields.len());
        let mut framing = FramingFields::default();
        for (name, value) in self.fields.drain(..) {
            let name = HeaderName::from_bytes(&raw[name]).map_err(|_| bad_request("invalid header name"))?;
            // SAFETY: httparse accepted this value, and the bytes it accepts in a field value
            // (tab, 0x20-0x7E, 0x80-0xFF) are exactly those `HeaderValue` allows, so checking them
            // again would only cost a pass over every value (Pingora's own parser does the same).
            // `every_byte_httparse_accepts_in_a_value_is_one_http_accepts` pins the equivalence,
            // and debug builds check each value anyway.
            let value = unsafe { HeaderValue::from_maybe_shared_unchecked(raw.slice(value)) };
            framing.observe(&name, value.as_bytes());
            headers.append(name, value);
        }
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = method;
        parts.uri = uri;
        parts.version = version;
        parts.headers = headers;
        let header = RequestHeader::from(parts);
        // Pingora's own checks of Host against the target (one Host; an absolute-form target's
        // authority parses, has no userinfo and matches Host).
        pingora::protocols::http::authority::validate_request_authority(&header)
            .map_err(|e| e.into_down())?;
        // RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host (two were refused above).
        if version == Version::HTTP_11 && !header.headers.contains_key(http::header::HOST) {
            return Err(bad_request("HTTP/1.1 request without Host"));
        }
        let body = request_framing(version, &framing)?;
        let keepalive = framing.keeps_alive(version);
        Ok(Some(Box::new(RequestHead { header, raw, body, keepalive, framing })))
    }

    /// Answers a request that could not be read with `status` and an empty body, and closes.
    pub async fn refuse(mut self, status: u16) {
        let mut wire = BytesMut::with_capacity(128);
        let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason());
        let _ = write!(wire, "HTTP/1.1 {status} {}\r\n", reason.unwrap_or(""));
        wire.extend_from_slice(b"Date: ");
        wire.extend_from_slice(get_cached_date().as_bytes());
        wire.extend_from_slice(b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = tokio::time::timeout(DEFAULT_READ_TIMEOUT, async {
            self.stream.write_all(&wire).await?;
            self.stream.flush().await?;
            self.stream.shutdown().await
        })
        .await;
    }
}

/// A request head read off a connection, with how its body is framed.
pub struct RequestHead {
    header: RequestHeader,
    /// The head's bytes, as received.
    raw: Bytes,
    body: Framing,
    keepalive: bool,
    framing: FramingFields,
}

impl RequestHead {
    /// The parsed head.
    pub fn header(&self) -> &RequestHeader {
        &self.header
    }

    /// The framing fields (`Content-Length`, `Transfer-Encoding`, `Connection`), read while the
    /// head was parsed.
    pub fn framing(&self) -> &FramingFields {
        &self.framing
    }
}

/// How a request's body is framed (RFC 9112 §6.3); an error for framing that could be read two
/// ways.
fn request_framing(version: Version, fields: &FramingFields) -> Result<Framing> {
    if fields.has_transfer_encoding() {
        if version == Version::HTTP_10 {
            return Err(bad_request("transfer coding on an HTTP/1.0 request"));
        }
        if fields.content_length() != Ok(None) {
            return Err(bad_request("both Content-Length and Transfer-Encoding"));
        }
        return match fields.transfer_coding() {
            TransferCoding::Chunked => Ok(Framing::chunked()),
            // The gateway does not decode codings, so it cannot check what it would forward.
            TransferCoding::ChunkedAfterOthers => {
                Err(Error::explain(ErrorType::HTTPStatus(501), "a transfer coding other than chunked")
                    .into_down())
            }
            TransferCoding::NotChunked => Err(bad_request("final transfer coding is not chunked")),
            TransferCoding::Ambiguous | TransferCoding::None => {
                Err(bad_request("Transfer-Encoding that could be read two ways"))
            }
        };
    }
    match fields.content_length() {
        Ok(Some(length)) => Ok(Framing::length(length)),
        Ok(None) => Ok(Framing::Done),
        Err(InvalidLength) => Err(bad_request("invalid Content-Length")),
    }
}

/// How the response body is being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// No final response header yet.
    NotStarted,
    /// This many bytes of a length-delimited body are still to come.
    Length(u64),
    /// A chunked body: each write is framed as a chunk.
    Chunked,
    /// A body delimited by closing the connection.
    UntilClose,
    /// The response has been written to its end.
    Done,
}

/// Where a finished request leaves its connection for the next request: one slot for the
/// connection's life, filled and emptied by atomic swaps (a channel per request cost an
/// allocation and ~400 instructions).
#[derive(Default)]
pub struct HandBack(AtomicCell<Option<Box<ClientConnection>>>);

impl HandBack {
    fn put(&self, conn: Box<ClientConnection>) {
        self.0.store(Some(conn));
    }

    /// The connection a finished request left, if it left one.
    pub fn take(&self) -> Option<Box<ClientConnection>> {
        self.0.take()
    }
}

/// One request on a client connection, as the gateway's phases see it through Pingora's
/// `Session`. When it finishes with the connection still usable, the connection is handed back
/// through the [`HandBack`] given to [`ClientRequest::new`].
pub struct ClientRequest {
    /// The connection; `None` once handed back.
    conn: Option<Box<ClientConnection>>,
    head: Box<RequestHead>,
    body: Framing,
    body_empty: bool,
    body_bytes_read: usize,
    retry_buffer: Option<BytesMut>,
    retry_truncated: bool,
    /// The client wants the connection kept, and nothing since has ruled it out.
    keepalive: bool,
    response: Option<Box<ResponseHeader>>,
    out: Out,
    body_bytes_sent: usize,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    total_drain_timeout: Option<Duration>,
    hand_back: Arc<HandBack>,
}

impl ClientRequest {
    /// The request whose head `head` is, on `conn`; `hand_back` receives the connection if it
    /// may carry another request once this one is finished.
    pub fn new(conn: Box<ClientConnection>, head: Box<RequestHead>, hand_back: Arc<HandBack>) -> Self {
        Self {
            conn: Some(conn),
            body_empty: head.body.is_done(),
            body: head.body,
            keepalive: head.keepalive,
            head,
            body_bytes_read: 0,
            retry_buffer: None,
            retry_truncated: false,
            response: None,
            out: Out::NotStarted,
            body_bytes_sent: 0,
            read_timeout: Some(DEFAULT_READ_TIMEOUT),
            write_timeout: None,
            total_drain_timeout: None,
            hand_back,
        }
    }

    /// The connection, or an error once it has been handed back.
    fn conn(&mut self) -> Result<&mut ClientConnection> {
        self.conn.as_deref_mut().ok_or_else(handed_back)
    }

    /// Closes the connection after this request's response (the process is stopping).
    pub fn close_after_response(&mut self) {
        self.keepalive = false;
    }

    /// One read of the client socket into the buffer, within the read timeout; 0 at its end.
    async fn fill(&mut self) -> Result<usize> {
        let limit = self.read_timeout;
        let conn = self.conn()?;
        conn.buf.reserve(READ_SIZE);
        let read = conn.stream.read_buf(&mut conn.buf);
        let read = match limit {
            Some(limit) => fast_timeout(limit, read).await.map_err(|_| {
                Error::explain(ErrorType::ReadTimedout, "waiting for the request body").into_down()
            })?,
            None => read.await,
        };
        read.map_err(|e| Error::because(ErrorType::ReadError, "reading the request body", e).into_down())
    }

    /// Writes `bytes` (after anything pending) and flushes, within the write timeout.
    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let Self { conn, write_timeout, .. } = self;
        let conn = conn.as_deref_mut().ok_or_else(handed_back)?;
        let write = async {
            if !conn.pending.is_empty() {
                conn.stream.write_all(&conn.pending).await?;
                conn.pending.clear();
            }
            if !bytes.is_empty() {
                conn.stream.write_all(bytes).await?;
            }
            conn.stream.flush().await
        };
        let written = match write_timeout {
            Some(limit) => {
                fast_timeout(*limit, write).await.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            }
            None => write.await,
        };
        written.map_err(|e| {
            self.keepalive = false;
            let kind = if e.kind() == std::io::ErrorKind::TimedOut {
                ErrorType::WriteTimedout
            } else {
                ErrorType::WriteError
            };
            Error::because(kind, "writing the response", e).into_down()
        })
    }

    /// Serializes a response head into `pending`, with the `Date` and `Connection` this side
    /// owns (the upstream's own are not forwarded) and without a transfer coding an HTTP/1.0
    /// client would not understand.
    fn serialize_head(&mut self, response: &ResponseHeader, chunked_to_http10: bool) -> Result<()> {
        let pending = &mut self.conn.as_deref_mut().ok_or_else(handed_back)?.pending;
        pending.reserve(256);
        // Piece by piece rather than `write!`: the formatting machinery cost more than the rest
        // of the status line.
        pending.extend_from_slice(b"HTTP/1.1 ");
        pending.extend_from_slice(response.status.as_str().as_bytes());
        pending.extend_from_slice(b" ");
        pending.extend_from_slice(response.get_reason_phrase().unwrap_or("").as_bytes());
        pending.extend_from_slice(b"\r\n");
        let informational = response.status.is_informational();
        response.map(|name, value| {
            let name = match name {
                HeaderNameVariant::Case(name) => name.as_slice(),
                HeaderNameVariant::Titled(name) => name.as_bytes(),
            };
            let skipped = name.eq_ignore_ascii_case(b"connection")
                || name.eq_ignore_ascii_case(b"keep-alive")
                || (!informational && name.eq_ignore_ascii_case(b"date"))
                || (chunked_to_http10 && name.eq_ignore_ascii_case(b"transfer-encoding"));
            if !skipped {
                pending.extend_from_slice(name);
                pending.extend_from_slice(b": ");
                pending.extend_from_slice(value.as_bytes());
                pending.extend_from_slice(b"\r\n");
            }
            Ok(())
        })?;
        if !informational {
            pending.extend_from_slice(b"Date: ");
            pending.extend_from_slice(get_cached_date().as_bytes());
            pending.extend_from_slice(b"\r\n");
            if !self.keepalive {
                pending.extend_from_slice(b"Connection: close\r\n");
            } else if self.head.header.version == Version::HTTP_10 {
                pending.extend_from_slice(b"Connection: keep-alive\r\n");
            }
        }
        pending.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// Writes a response head. An informational one goes out at once (never to an HTTP/1.0
    /// client); a final one waits for its body's first bytes when it announces a length, so that
    /// a small answer leaves in one write, and goes out at once when it starts a stream.
    async fn write_head(&mut self, mut response: Box<ResponseHeader>) -> Result<()> {
        if response.status.is_informational() {
            if response.status == http::StatusCode::SWITCHING_PROTOCOLS {
                return Err(
                    Error::explain(ErrorType::InternalError, "upgrades are not supported").into_down()
                );
            }
            if self.out != Out::NotStarted || self.head.header.version == Version::HTTP_10 {
                return Ok(());
            }
            self.serialize_head(&response, false)?;
            return self.send(&[]).await;
        }
        if self.out != Out::NotStarted {
            tracing::debug!("a second response header for one request was not sent");
            return Ok(());
        }
        // A response that starts before the request body was read to its end leaves that body
        // between this request and the next: the connection cannot be reused.
        if !self.body.is_done() {
            self.keepalive = false;
        }
        let framing = FramingFields::of(&response.headers);
        let no_body =
            self.head.header.method == Method::HEAD || matches!(response.status.as_u16(), 204 | 304);
        let chunked = framing.final_coding_is_chunked();
        let chunked_to_http10 = chunked && self.head.header.version == Version::HTTP_10;
        self.out = if no_body {
            Out::Done
        } else if chunked && !chunked_to_http10 {
            Out::Chunked
        } else if framing.has_transfer_encoding() {
            self.keepalive = false;
            Out::UntilClose
        } else {
            match framing.content_length() {
                Ok(Some(0)) => Out::Done,
                Ok(Some(length)) => Out::Length(length),
                Ok(None) => {
                    self.keepalive = false;
                    Out::UntilClose
                }
                Err(InvalidLength) => {
                    return Err(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        "invalid response Content-Length",
                    )
                    .into_down())
                }
            }
        };
        self.serialize_head(&response, chunked_to_http10)?;
        if chunked_to_http10 {
            response.remove_header(&header::TRANSFER_ENCODING);
        }
        self.response = Some(response);
        match self.out {
            Out::Length(_) => Ok(()),
            _ => self.send(&[]).await,
        }
    }

    /// Writes a piece of the response body, framed as the head announced.
    async fn write_body_piece(&mut self, data: Bytes, end: bool) -> Result<()> {
        self.body_bytes_sent += data.len();
        match self.out {
            Out::NotStarted => {
                return Err(
                    Error::explain(ErrorType::InternalError, "response body before its header").into_down()
                )
            }
            Out::Done => {
                if !data.is_empty() {
                    tracing::debug!("a body for a response that has none was not sent");
                }
                return if end && self.has_pending() { self.send(&[]).await } else { Ok(()) };
            }
            Out::Length(left) => {
                if data.len() as u64 > left {
                    self.keepalive = false;
                    return Err(Error::explain(
                        ErrorType::H1Error,
                        "response body longer than its Content-Length",
                    )
                    .into_down());
                }
                let left = left - data.len() as u64;
                self.out = if left == 0 { Out::Done } else { Out::Length(left) };
                if self.has_pending() && data.len() <= COALESCE_LIMIT {
                    self.conn()?.pending.extend_from_slice(&data);
                    return self.send(&[]).await;
                }
                self.send(&data).await?;
            }
            Out::Chunked => {
                if !data.is_empty() {
                    let _ = write!(self.conn()?.pending, "{:x}\r\n", data.len());
                    if data.len() <= COALESCE_LIMIT {
                        self.conn()?.pending.extend_from_slice(&data);
                    } else {
                        self.send(&data).await?;
                    }
                    self.conn()?.pending.extend_from_slice(b"\r\n");
                }
                if end {
                    self.conn()?.pending.extend_from_slice(b"0\r\n\r\n");
                    self.out = Out::Done;
                }
                self.send(&[]).await?;
            }
            Out::UntilClose => {
                self.send(&data).await?;
            }
        }
        Ok(())
    }

    /// Ends the response: flushes what is pending and, when the exchange is complete and the
    /// client wants it, hands the connection back for the next request.
    async fn finish_exchange(&mut self) -> Result<()> {
        if self.conn.is_none() {
            return Ok(());
        }
        if self.has_pending() {
            self.send(&[]).await?;
        }
        if self.out == Out::UntilClose {
            let _ = self.conn()?.stream.shutdown().await;
            self.out = Out::Done;
            self.keepalive = false;
        }
        let reusable = self.keepalive && self.out == Out::Done && self.body.is_done();
        if let (true, Some(mut conn)) = (reusable, self.conn.take()) {
            // The request is dropped only when the next one replaces it, and an idle connection
            // should hold nothing of it: the head's bytes go now (so that the next read reuses
            // the buffer they share), as does the response (whose values share the upstream
            // connection's buffer).
            self.head.release_bytes();
            self.response = None;
            self.retry_buffer = None;
            if conn.pending.capacity() > KEPT_WRITE_BUFFER {
                // A large response's room is not kept while the connection idles.
                conn.pending = BytesMut::new();
            }
            self.hand_back.put(conn);
        }
        Ok(())
    }

    /// True when serialized response bytes wait to be written.
    fn has_pending(&self) -> bool {
        self.conn.as_ref().is_some_and(|conn| !conn.pending.is_empty())
    }
}

impl RequestHead {
    /// Lets go of the head's bytes (the target and the header values share them), leaving an
    /// empty head that allocates nothing.
    fn release_bytes(&mut self) {
        self.header = RequestHeader::from(http::Request::new(()).into_parts().0);
        self.raw = Bytes::new();
    }
}

fn handed_back() -> Box<Error> {
    Error::explain(ErrorType::ConnectionClosed, "the connection was handed to the next request").into_down()
}

fn bad_request(what: impl Into<pingora::ImmutStr>) -> Box<Error> {
    Error::explain(ErrorType::InvalidHTTPHeader, what).into_down()
}

#[async_trait]
impl CustomSession for ClientRequest {
    fn req_header(&self) -> &RequestHeader {
        &self.head.header
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.head.header
    }

    async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        loop {
            let conn = self.conn.as_deref_mut().ok_or_else(handed_back)?;
            let piece = self.body.take(&mut conn.buf).map_err(|why| {
                self.keepalive = false;
                Error::explain(ErrorType::InvalidHTTPHeader, why).into_down()
            })?;
            if !piece.is_empty() {
                self.body_bytes_read += piece.len();
                if let Some(kept) = self.retry_buffer.as_mut() {
                    if kept.len() + piece.len() <= RETRY_BUFFER_LIMIT {
                        kept.extend_from_slice(&piece);
                    } else {
                        self.retry_truncated = true;
                    }
                }
                return Ok(Some(piece.freeze()));
            }
            if self.body.is_done() {
                return Ok(None);
            }
            if self.fill().await? == 0 {
                self.keepalive = false;
                return Err(Error::explain(
                    ErrorType::ConnectionClosed,
                    "client closed inside the request body",
                )
                .into_down());
            }
        }
    }

    async fn drain_request_body(&mut self) -> Result<()> {
        let limit = self.total_drain_timeout;
        let drain = async {
            while self.read_body_bytes().await?.is_some() {}
            Ok(())
        };
        match limit {
            Some(limit) => tokio::time::timeout(limit, drain).await.unwrap_or_else(|_| {
                Err(Error::explain(ErrorType::ReadTimedout, "draining the request body").into_down())
            }),
            None => drain.await,
        }
    }

    async fn write_response_header(&mut self, resp: Box<ResponseHeader>, _end: bool) -> Result<()> {
        self.write_head(resp).await
    }

    async fn write_response_header_ref(&mut self, resp: &ResponseHeader, _end: bool) -> Result<()> {
        self.write_head(Box::new(resp.clone())).await
    }

    async fn write_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        self.write_body_piece(data, end).await
    }

    /// HTTP/1 trailers are not forwarded (as with Pingora's HTTP/1 server session).
    async fn write_trailers(&mut self, _trailers: HeaderMap) -> Result<()> {
        Ok(())
    }

    async fn response_duplex_vec(&mut self, tasks: Vec<HttpTask>) -> Result<bool> {
        let mut ended = false;
        for task in tasks {
            ended |= task.is_end();
            match task {
                HttpTask::Header(header, end) => {
                    self.write_head(header).await?;
                    if end {
                        self.finish_exchange().await?;
                    }
                }
                HttpTask::Body(data, end) => self.write_body_piece(data.unwrap_or_default(), end).await?,
                HttpTask::UpgradedBody(..) => {
                    return Err(
                        Error::explain(ErrorType::InternalError, "upgrades are not supported").into_down()
                    )
                }
                HttpTask::Trailer(_) => {}
                HttpTask::Done => self.finish_exchange().await?,
                HttpTask::Failed(e) => return Err(e),
            }
        }
        Ok(ended)
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    fn get_read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    fn get_write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    fn set_total_drain_timeout(&mut self, timeout: Option<Duration>) {
        self.total_drain_timeout = timeout;
    }

    fn get_total_drain_timeout(&self) -> Option<Duration> {
        self.total_drain_timeout
    }

    fn request_summary(&self) -> String {
        let request = &self.head.header;
        let host = request.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        format!("{} {}, Host: {host}", request.method, request.uri)
    }

    fn response_written(&self) -> Option<&ResponseHeader> {
        self.response.as_deref()
    }

    async fn shutdown(&mut self, _code: u32, _ctx: &str) {
        self.keepalive = false;
        if let Some(conn) = self.conn.as_deref_mut() {
            let _ = conn.stream.shutdown().await;
        }
    }

    fn is_body_done(&mut self) -> bool {
        self.body.is_done()
    }

    async fn finish(&mut self) -> Result<()> {
        self.finish_exchange().await
    }

    fn is_body_empty(&mut self) -> bool {
        self.body_empty
    }

    /// While the request body is unread, reads it; once it is read, waits for the client to
    /// close (an error: it is gone) or send the next request early (kept for it; `Ok(None)`).
    async fn read_body_or_idle(&mut self, no_body_expected: bool) -> Result<Option<Bytes>> {
        if !no_body_expected && !self.body.is_done() {
            return self.read_body_bytes().await;
        }
        let conn = self.conn()?;
        conn.buf.reserve(READ_SIZE);
        let read = conn.stream.read_buf(&mut conn.buf).await.map_err(|e| {
            self.keepalive = false;
            Error::because(ErrorType::ReadError, "client connection while idle", e).into_down()
        })?;
        if read == 0 {
            self.keepalive = false;
            return Err(Error::explain(
                ErrorType::ConnectionClosed,
                "client closed before the response was complete",
            )
            .into_down());
        }
        Ok(None)
    }

    fn body_bytes_sent(&self) -> usize {
        self.body_bytes_sent
    }

    fn body_bytes_read(&self) -> usize {
        self.body_bytes_read
    }

    fn digest(&self) -> Option<&Digest> {
        Some(&self.conn.as_deref()?.digest)
    }

    fn digest_mut(&mut self) -> Option<&mut Digest> {
        Some(&mut self.conn.as_deref_mut()?.digest)
    }

    fn client_addr(&self) -> Option<&SocketAddr> {
        self.conn.as_deref()?.digest.socket_digest.as_ref()?.peer_addr()
    }

    fn server_addr(&self) -> Option<&SocketAddr> {
        self.conn.as_deref()?.digest.socket_digest.as_ref()?.local_addr()
    }

    fn pseudo_raw_h1_request_header(&self) -> Bytes {
        self.head.raw.clone()
    }

    fn enable_retry_buffering(&mut self) {
        if self.retry_buffer.is_none() {
            self.retry_buffer = Some(BytesMut::new());
        }
    }

    fn retry_buffer_truncated(&self) -> bool {
        self.retry_truncated
    }

    fn get_retry_buffer(&self) -> Option<Bytes> {
        if self.retry_truncated {
            return None;
        }
        self.retry_buffer.as_ref().filter(|kept| !kept.is_empty()).map(|kept| Bytes::copy_from_slice(kept))
    }

    /// Plain HTTP/1 has no custom message stream.
    async fn finish_custom(&mut self) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_reader(&mut self) -> Option<MessageReader> {
        None
    }

    fn restore_custom_message_reader(&mut self, _reader: MessageReader) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_writer(&mut self) -> Option<Box<dyn CustomMessageWrite>> {
        None
    }

    fn restore_custom_message_writer(&mut self, _writer: Box<dyn CustomMessageWrite>) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixStream;

    /// A connection on our side of a socket pair, and the client's end.
    fn connection() -> (ClientConnection, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("socket pair");
        (ClientConnection::new(Box::new(pingora::protocols::l4::stream::Stream::from(ours))), theirs)
    }

    /// The head of the first request `sent` holds, or the error reading it gave.
    async fn head_of(sent: &[u8]) -> Result<Option<Box<RequestHead>>> {
        let (mut conn, mut client) = connection();
        client.write_all(sent).await.expect("write");
        client.shutdown().await.expect("shutdown");
        conn.read_head(Duration::from_secs(2)).await
    }

    fn rejected(result: Result<Option<Box<RequestHead>>>) -> bool {
        matches!(result, Err(e) if e.etype() == &ErrorType::InvalidHTTPHeader)
    }

    /// A request read off a fresh connection, the receiver it hands its connection back to, and
    /// the client's end.
    async fn read_request(sent: &[u8]) -> (ClientRequest, Arc<HandBack>, UnixStream) {
        let (mut conn, mut client) = connection();
        client.write_all(sent).await.expect("write");
        let head = conn.read_head(Duration::from_secs(2)).await.expect("readable").expect("a request");
        let hand_back = Arc::new(HandBack::default());
        (ClientRequest::new(Box::new(conn), head, hand_back.clone()), hand_back, client)
    }

    /// Everything the client received once the request (and any connection it handed back) is
    /// gone, and whether the connection was handed back.
    async fn received(
        request: ClientRequest,
        handed_back: Arc<HandBack>,
        mut client: UnixStream,
    ) -> (String, bool) {
        drop(request);
        let reused = handed_back.take().is_some();
        let mut wire = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut wire))
            .await
            .expect("the connection ends")
            .expect("read");
        (String::from_utf8(wire).expect("text"), reused)
    }

    fn response(status: u16, headers: &[(&'static str, &str)]) -> Box<ResponseHeader> {
        let mut response = ResponseHeader::build(status, None).expect("status");
        for (name, value) in headers {
            response.append_header(*name, *value).expect("header");
        }
        Box::new(response)
    }

    async fn respond(
        request: &mut ClientRequest,
        head: Box<ResponseHeader>,
        body: &[&'static str],
    ) -> Result<()> {
        request.write_response_header(head, false).await?;
        for (i, piece) in body.iter().enumerate() {
            request.write_body(Bytes::from_static(piece.as_bytes()), i + 1 == body.len()).await?;
        }
        CustomSession::finish(request).await
    }

    #[tokio::test]
    async fn a_handed_back_connection_keeps_a_small_write_buffer_but_not_a_large_one() {
        let big = "x".repeat(COALESCE_LIMIT);
        for (body, kept) in [("{}".to_owned(), true), (big, false)] {
            let (mut request, handed_back, _client) =
                read_request(b"GET /mcp HTTP/1.1\r\nHost: gw\r\n\r\n").await;
            let length = body.len().to_string();
            request
                .write_response_header(response(200, &[("content-length", &length)]), false)
                .await
                .unwrap();
            request.write_body(Bytes::from(body), true).await.unwrap();
            CustomSession::finish(&mut request).await.unwrap();
            let conn = handed_back.take().expect("handed back");
            assert!(conn.pending.is_empty(), "everything was written");
            assert_eq!(conn.pending.capacity() > 0, kept, "room kept for the next response");
        }
    }

    #[tokio::test]
    async fn a_handed_back_connection_can_reuse_the_room_its_request_head_took() {
        let (mut request, handed_back, _client) =
            read_request(b"GET /mcp HTTP/1.1\r\nHost: gw\r\nX-Trace: abc\r\n\r\n").await;
        respond(&mut request, response(204, &[]), &[]).await.unwrap();
        let mut conn = handed_back.take().expect("handed back");
        assert!(request.req_header().headers.is_empty(), "the finished request keeps nothing of its head");
        assert!(conn.buf.try_reclaim(READ_SIZE), "nothing else holds the read buffer");
    }

    #[tokio::test]
    async fn a_request_head_is_parsed_with_its_fields_and_no_body() {
        let head = head_of(b"GET /mcp?x=1 HTTP/1.1\r\nHost: gw\r\nX-Trace: a\r\nX-Trace: b\r\n\r\n")
            .await
            .expect("valid")
            .expect("a request");
        let header = head.header();
        assert_eq!(header.method, Method::GET);
        assert_eq!(header.uri, "/mcp?x=1");
        assert_eq!(header.headers["host"], "gw");
        assert_eq!(header.headers.get_all("x-trace").iter().count(), 2);
        assert!(head.body.is_done());
        assert!(head.keepalive);
    }

    #[tokio::test]
    async fn pipelined_requests_are_read_one_after_another_from_one_write() {
        let (mut conn, mut client) = connection();
        client
            .write_all(b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\nGET /b HTTP/1.1\r\nHost: gw\r\n\r\n")
            .await
            .expect("write");
        client.shutdown().await.expect("shutdown");
        let first = conn.read_head(Duration::from_secs(2)).await.expect("valid").expect("a request");
        let second = conn.read_head(Duration::from_secs(2)).await.expect("valid").expect("a request");
        assert_eq!(first.header().uri, "/a");
        assert_eq!(second.header().uri, "/b");
        assert!(conn.read_head(Duration::from_secs(2)).await.expect("closed cleanly").is_none());
    }

    #[tokio::test]
    async fn a_head_arriving_in_pieces_is_waited_for() {
        let (mut conn, mut client) = connection();
        let writer = tokio::spawn(async move {
            for piece in [&b"POST /mcp HT"[..], b"TP/1.1\r\nHost: gw\r\nContent-Le", b"ngth: 2\r\n\r\n{}"] {
                client.write_all(piece).await.expect("write");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            client
        });
        let head = conn.read_head(Duration::from_secs(2)).await.expect("valid").expect("a request");
        assert_eq!(head.body, Framing::length(2));
        drop(writer.await);
    }

    #[tokio::test]
    async fn a_client_that_leaves_or_stays_silent_before_a_request_is_let_go_quietly() {
        assert!(head_of(b"").await.expect("no error").is_none());
        let (mut conn, _client) = connection();
        assert!(conn.read_head(Duration::from_millis(30)).await.expect("no error").is_none());
    }

    #[tokio::test]
    async fn each_request_head_gets_the_whole_wait_from_when_it_is_awaited() {
        let (mut conn, mut client) = connection();
        client.write_all(b"GET /a HTTP/1.1\r\nHost: g\r\n\r\n").await.expect("write");
        assert!(conn.read_head(Duration::from_millis(50)).await.expect("valid").is_some());
        // The first wait's deadline passes before the second request arrives; the second wait
        // starts anew and is long enough.
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            client.write_all(b"GET /b HTTP/1.1\r\nHost: g\r\n\r\n").await.expect("write");
            client
        });
        let second = conn.read_head(Duration::from_secs(5)).await.expect("valid").expect("a request");
        assert_eq!(second.header().uri.path(), "/b");
        let _client = late.await.expect("writer");
        // And a third that never comes is given up after its own wait.
        assert!(conn.read_head(Duration::from_millis(30)).await.expect("no error").is_none());
    }

    #[tokio::test]
    async fn a_client_that_leaves_inside_a_head_is_an_error() {
        let result = head_of(b"GET / HTTP/1.1\r\nHost: g").await;
        assert!(matches!(result, Err(e) if e.etype() == &ErrorType::ConnectionClosed));
    }

    #[tokio::test]
    async fn malformed_or_oversized_heads_are_rejected() {
        assert!(rejected(head_of(b"GET / HTTP/1.1\r\nHost gw\r\n\r\n").await));
        assert!(rejected(head_of(b"G@T / HTTP/1.1\r\nHost: gw\r\n\r\n").await));
        let mut huge = b"GET / HTTP/1.1\r\nHost: gw\r\nX-Big: ".to_vec();
        huge.resize(MAX_HEAD_BYTES + 100, b'a');
        assert!(rejected(head_of(&huge).await));
        let mut many = b"GET / HTTP/1.1\r\nHost: gw\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(rejected(head_of(&many).await));
    }

    #[tokio::test]
    async fn every_byte_httparse_accepts_in_a_value_is_one_http_accepts() {
        for byte in 0..=255u8 {
            let mut sent = b"GET / HTTP/1.1\r\nHost: gw\r\nX-Probe: a".to_vec();
            sent.extend_from_slice(&[byte, b'b']);
            sent.extend_from_slice(b"\r\n\r\n");
            let valid = HeaderValue::from_bytes(&[b'a', byte, b'b']).is_ok();
            match head_of(&sent).await {
                Ok(Some(head)) => {
                    assert!(valid, "byte {byte:#04x} was accepted but is not a valid header value byte");
                    let value = head.header.headers.get("x-probe").expect("the probe header");
                    assert_eq!(value.as_bytes(), [b'a', byte, b'b']);
                }
                // CR and LF end the field early; anything else refused must be a byte http refuses.
                Err(e) if e.etype() == &ErrorType::InvalidHTTPHeader => {
                    assert!(!valid || byte == b'\r' || byte == b'\n', "byte {byte:#04x} was refused")
                }
                other => panic!("byte {byte:#04x}: {:?}", other.map(|h| h.is_some())),
            }
        }
    }

    #[tokio::test]
    async fn framing_that_could_be_read_two_ways_is_rejected() {
        // Both a length and a coding: the classic request-smuggling signature.
        assert!(rejected(
            head_of(
                b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            .await
        ));
        assert!(rejected(
            head_of(b"POST / HTTP/1.0\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n").await
        ));
        assert!(rejected(
            head_of(b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").await
        ));
        assert!(rejected(
            head_of(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n").await
        ));
        assert!(rejected(head_of(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: +4\r\n\r\n").await));
    }

    #[tokio::test]
    async fn an_authority_that_disagrees_with_host_is_rejected() {
        assert!(rejected(head_of(b"GET http://other/ HTTP/1.1\r\nHost: gw\r\n\r\n").await));
        assert!(rejected(head_of(b"GET / HTTP/1.1\r\nHost: gw\r\nHost: other\r\n\r\n").await));
        assert!(head_of(b"GET http://gw/ HTTP/1.1\r\nHost: gw\r\n\r\n").await.expect("valid").is_some());
    }

    #[tokio::test]
    async fn a_chunked_request_body_is_decoded_and_the_connection_kept() {
        let (mut request, handed_back, client) = read_request(
            b"POST /mcp HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
        )
        .await;
        let mut body = Vec::new();
        while let Some(piece) = request.read_body_bytes().await.expect("body") {
            body.extend_from_slice(&piece);
        }
        assert_eq!(body, b"{\"a\":1}");
        respond(&mut request, response(200, &[("Content-Length", "2")]), &["ok"]).await.expect("answered");
        let (wire, reused) = received(request, handed_back, client).await;
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\nok"), "{wire}");
        assert!(reused);
    }

    #[tokio::test]
    async fn a_length_delimited_response_is_written_with_our_date_and_connection_fields() {
        let (mut request, handed_back, client) = read_request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").await;
        let head = response(
            200,
            &[
                ("Content-Length", "5"),
                ("Connection", "close"),
                ("Keep-Alive", "timeout=5"),
                ("Date", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ],
        );
        respond(&mut request, head, &["he", "llo"]).await.expect("answered");
        let (wire, reused) = received(request, handed_back, client).await;
        assert!(!wire.contains("1970"), "the upstream's Date is replaced: {wire}");
        assert_eq!(wire.matches("Date: ").count(), 1, "{wire}");
        assert!(!wire.to_ascii_lowercase().contains("connection"), "{wire}");
        assert!(!wire.to_ascii_lowercase().contains("keep-alive"), "{wire}");
        assert!(wire.ends_with("\r\n\r\nhello"), "{wire}");
        assert!(reused, "the upstream's Connection does not decide the client connection");
    }

    #[tokio::test]
    async fn a_body_longer_than_its_length_is_an_error_and_ends_the_connection() {
        let (mut request, handed_back, client) = read_request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").await;
        let result = respond(&mut request, response(200, &[("Content-Length", "2")]), &["toolong"]).await;
        assert!(matches!(result, Err(e) if e.etype() == &ErrorType::H1Error));
        let (_, reused) = received(request, handed_back, client).await;
        assert!(!reused);
    }

    #[tokio::test]
    async fn a_chunked_response_is_re_chunked_piece_by_piece() {
        let (mut request, handed_back, client) = read_request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").await;
        respond(
            &mut request,
            response(200, &[("Transfer-Encoding", "chunked")]),
            &["data: 1\n\n", "data: 22\n\n"],
        )
        .await
        .expect("answered");
        let (wire, reused) = received(request, handed_back, client).await;
        assert!(wire.ends_with("\r\n\r\n9\r\ndata: 1\n\n\r\na\r\ndata: 22\n\n\r\n0\r\n\r\n"), "{wire}");
        assert!(reused);
    }

    #[tokio::test]
    async fn a_chunked_response_reaches_an_http10_client_delimited_by_close() {
        let (mut request, handed_back, client) =
            read_request(b"GET / HTTP/1.0\r\nHost: gw\r\nConnection: keep-alive\r\n\r\n").await;
        respond(&mut request, response(200, &[("Transfer-Encoding", "chunked")]), &["ab", "cd"])
            .await
            .expect("answered");
        let (wire, reused) = received(request, handed_back, client).await;
        assert!(!wire.to_ascii_lowercase().contains("transfer-encoding"), "{wire}");
        assert!(wire.contains("Connection: close\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\nabcd"), "{wire}");
        assert!(!reused);
    }

    #[tokio::test]
    async fn a_response_without_a_length_is_delimited_by_close() {
        let (mut request, handed_back, client) = read_request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").await;
        respond(&mut request, response(200, &[]), &["until ", "the end"]).await.expect("answered");
        let (wire, reused) = received(request, handed_back, client).await;
        assert!(wire.contains("Connection: close\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\nuntil the end"), "{wire}");
        assert!(!reused);
    }

    #[tokio::test]
    async fn http10_keeps_the_connection_only_when_asked() {
        let (mut request, handed_back, client) =
            read_request(b"GET / HTTP/1.0\r\nHost: gw\r\nConnection: keep-alive\r\n\r\n").await;
        respond(&mut request, response(200, &[("Content-Length", "0")]), &[]).await.expect("answered");
        let (wire, reused) = received(request, handed_back, client).await;
        assert!(wire.contains("Connection: keep-alive\r\n"), "{wire}");
        assert!(reused);

        let (mut request, handed_back, client) = read_request(b"GET / HTTP/1.0\r\nHost: gw\r\n\r\n").await;
        respond(&mut request, response(200, &[("Content-Length", "0")]), &[]).await.expect("answered");
        let (wire, reused) = received(request, handed_back, client).await;
        assert!(wire.contains("Connection: close\r\n"), "{wire}");
        assert!(!reused);
    }

    #[tokio::test]
    async fn connection_close_from_the_client_or_a_stopping_gateway_ends_the_connection() {
        let (mut request, handed_back, client) =
            read_request(b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").await;
        respond(&mut request, response(204, &[]), &[]).await.expect("answered");
        let (wire, reused) = received(request, handed_back, client).await;
        assert!(wire.contains("Connection: close\r\n"), "{wire}");
        assert!(!reused);

        let (mut request, handed_back, client) = read_request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").await;
        request.close_after_response();
        respond(&mut request, response(204, &[]), &[]).await.expect("answered");
        let (wire, reused) = received(request, handed_back, client).await;
        assert!(wire.contains("Connection: close\r\n"), "{wire}");
        assert!(!reused);
    }

    #[tokio::test]
    async fn a_response_sent_before_the_request_body_was_read_ends_the_connection() {
        let (mut request, handed_back, client) =
            read_request(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n").await;
        respond(&mut request, response(413, &[("Content-Length", "0")]), &[]).await.expect("answered");
        let (wire, reused) = received(request, handed_back, client).await;
        assert!(wire.starts_with("HTTP/1.1 413 "), "{wire}");
        assert!(wire.contains("Connection: close\r\n"), "{wire}");
        assert!(!reused, "the unread body would be taken for the next request");
    }

    #[tokio::test]
    async fn an_informational_response_goes_ahead_of_the_final_one_but_not_to_http10() {
        let (mut request, handed_back, client) =
            read_request(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n").await;
        request.write_response_header(response(100, &[]), false).await.expect("sent");
        respond(&mut request, response(200, &[("Content-Length", "2")]), &["ok"]).await.expect("answered");
        let (wire, _) = received(request, handed_back, client).await;
        assert!(wire.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), "{wire}");

        let (mut request, handed_back, client) = read_request(b"GET / HTTP/1.0\r\nHost: gw\r\n\r\n").await;
        request.write_response_header(response(100, &[]), false).await.expect("skipped");
        respond(&mut request, response(200, &[("Content-Length", "2")]), &["ok"]).await.expect("answered");
        let (wire, _) = received(request, handed_back, client).await;
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{wire}");
    }

    #[tokio::test]
    async fn a_protocol_switch_is_refused() {
        let (mut request, _handed_back, _client) = read_request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").await;
        assert!(request
            .write_response_header(response(101, &[("Upgrade", "websocket")]), false)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_head_response_carries_no_body() {
        let (mut request, handed_back, client) = read_request(b"HEAD / HTTP/1.1\r\nHost: gw\r\n\r\n").await;
        respond(&mut request, response(200, &[("Content-Length", "5")]), &[]).await.expect("answered");
        let (wire, reused) = received(request, handed_back, client).await;
        assert!(wire.contains("Content-Length: 5\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\n"), "{wire}");
        assert!(reused);
    }

    #[tokio::test]
    async fn a_refused_request_gets_a_closing_answer() {
        let (conn, mut client) = connection();
        conn.refuse(400).await;
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.expect("read");
        let wire = String::from_utf8(wire).expect("text");
        assert!(wire.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{wire}");
        assert!(wire.ends_with("Content-Length: 0\r\nConnection: close\r\n\r\n"), "{wire}");
    }
}
