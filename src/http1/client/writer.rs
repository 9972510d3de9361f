//! The response side of a client request: the head serialized with the fields this side owns,
//! the body framed as the head announced, small answers coalesced into one write.

use std::fmt::Write as _;

use bytes::Bytes;
use http::{header, Method, Version};
use pingora::http::{HeaderNameVariant, ResponseHeader};
use pingora::protocols::http::date::get_cached_date;
use pingora::{Error, ErrorType, Result};

use super::request::Out;
use super::*;
use crate::http1::framing::{FramingFields, InvalidLength};

impl ClientRequest {
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
    pub(super) async fn write_head(&mut self, mut response: Box<ResponseHeader>) -> Result<()> {
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
    pub(super) async fn write_body_piece(&mut self, data: Bytes, end: bool) -> Result<()> {
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
}
