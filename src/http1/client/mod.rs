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
//!
//! ```text
//! connection.rs  ClientConnection: a head read and parsed, a request that cannot be read refused
//! request.rs     ClientRequest: the body read by its framing, writes, the keep-alive hand-back
//! writer.rs      the response head serialized and its body framed as the head announced
//! session.rs     ClientRequest as a Pingora custom HTTP session (what the phases call)
//! ```

mod connection;
mod request;
mod session;
#[cfg(test)]
mod tests;
mod writer;

use std::time::Duration;

use bytes::Bytes;
use pingora::{Error, ErrorType, Result};

pub use connection::{ClientConnection, RequestHead};
pub use request::{ClientRequest, HandBack};

/// Most header lines accepted in one request head (Pingora's limit too).
pub const MAX_HEADERS: usize = 256;
/// Largest request head accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Room given to each read of the client socket.
pub(super) const READ_SIZE: usize = 8 * 1024;
/// Most request-body bytes kept for error answers (Pingora's retry-buffer limit).
pub(super) const RETRY_BUFFER_LIMIT: usize = 64 * 1024;
/// A response body written at most this large goes out in the same write as a header waiting
/// for it (larger ones are written on their own rather than copied).
pub(super) const COALESCE_LIMIT: usize = 16 * 1024;
/// Most write-buffer room a connection keeps between requests.
pub(super) const KEPT_WRITE_BUFFER: usize = 16 * 1024;
/// How long a request head or body read may wait when nothing else says (Pingora's default).
pub(super) const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) type MessageReader =
    Box<dyn futures_util::Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>;

pub(super) fn handed_back() -> Box<Error> {
    Error::explain(ErrorType::ConnectionClosed, "the connection was handed to the next request").into_down()
}

pub(super) fn bad_request(what: impl Into<pingora::ImmutStr>) -> Box<Error> {
    Error::explain(ErrorType::InvalidHTTPHeader, what).into_down()
}
