//! A client request as a Pingora custom HTTP session: what the phases call through `Session`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::custom::server::Session as CustomSession;
use pingora::protocols::http::custom::CustomMessageWrite;
use pingora::protocols::http::HttpTask;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::Digest;
use pingora::{Error, ErrorType, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

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
