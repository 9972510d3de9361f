//! A client connection between requests: the next request head read and parsed (httparse), by
//! RFC 9112's rules, and a request that cannot be read refused.

use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use pingora::http::RequestHeader;
use pingora::protocols::http::date::get_cached_date;
use pingora::protocols::{Digest, Stream};
use pingora::{Error, ErrorType, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::http1::framing::{Framing, FramingFields, InvalidLength, TransferCoding};
use crate::http1::timer::ConnectionTimer;

/// A client connection between requests: its socket and any bytes read past the last request
/// (a pipelined next request).
pub struct ClientConnection {
    pub(super) stream: Stream,
    pub(super) buf: BytesMut,
    pub(super) digest: Digest,
    /// Field positions of the head being parsed, kept to save an allocation per request.
    pub(super) fields: Vec<(Range<usize>, Range<usize>)>,
    /// The wait for the next request head (one timer for the connection's life).
    pub(super) head_timer: ConnectionTimer,
    /// Serialized response bytes not yet written (a header waiting for its body). Kept with the
    /// connection so that its allocation serves request after request.
    pub(super) pending: BytesMut,
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
    pub(super) header: RequestHeader,
    /// The head's bytes, as received.
    pub(super) raw: Bytes,
    pub(super) body: Framing,
    pub(super) keepalive: bool,
    pub(super) framing: FramingFields,
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

impl RequestHead {
    /// Lets go of the head's bytes (the target and the header values share them), leaving an
    /// empty head that allocates nothing.
    pub(super) fn release_bytes(&mut self) {
        self.header = RequestHeader::from(http::Request::new(()).into_parts().0);
        self.raw = Bytes::new();
    }
}
