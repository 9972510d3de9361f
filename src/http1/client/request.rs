//! One request on a client connection: its body read by its framing, writes to the client, and
//! the connection handed back for the next request when the exchange ends cleanly.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use crossbeam_utils::atomic::AtomicCell;
use pingora::http::ResponseHeader;
use pingora::time::fast_timeout::fast_timeout;
use pingora::{Error, ErrorType, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::http1::framing::Framing;

/// How the response body is being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Out {
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
    pub(super) conn: Option<Box<ClientConnection>>,
    pub(super) head: Box<RequestHead>,
    pub(super) body: Framing,
    pub(super) body_empty: bool,
    pub(super) body_bytes_read: usize,
    pub(super) retry_buffer: Option<BytesMut>,
    pub(super) retry_truncated: bool,
    /// The client wants the connection kept, and nothing since has ruled it out.
    pub(super) keepalive: bool,
    pub(super) response: Option<Box<ResponseHeader>>,
    pub(super) out: Out,
    pub(super) body_bytes_sent: usize,
    pub(super) read_timeout: Option<Duration>,
    pub(super) write_timeout: Option<Duration>,
    pub(super) total_drain_timeout: Option<Duration>,
    pub(super) hand_back: Arc<HandBack>,
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
    pub(super) fn conn(&mut self) -> Result<&mut ClientConnection> {
        self.conn.as_deref_mut().ok_or_else(handed_back)
    }

    /// Closes the connection after this request's response (the process is stopping).
    pub fn close_after_response(&mut self) {
        self.keepalive = false;
    }

    /// One read of the client socket into the buffer, within the read timeout; 0 at its end.
    pub(super) async fn fill(&mut self) -> Result<usize> {
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
    pub(super) async fn send(&mut self, bytes: &[u8]) -> Result<()> {
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
}

impl ClientRequest {
    /// Ends the response: flushes what is pending and, when the exchange is complete and the
    /// client wants it, hands the connection back for the next request.
    pub(super) async fn finish_exchange(&mut self) -> Result<()> {
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
    pub(super) fn has_pending(&self) -> bool {
        self.conn.as_ref().is_some_and(|conn| !conn.pending.is_empty())
    }
}
