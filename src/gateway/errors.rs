//! Responses the gateway writes itself, and the mapping of proxy failures onto them.

use std::time::Duration;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::RequestCtx;
use crate::error_body::{jsonrpc_id, render, BodyShape, GatewayError};
use crate::metrics::Metrics;
use crate::origin;

/// The most request body read to find a JSON-RPC id for an error answer.
const MAX_ID_SCAN: usize = 64 * 1024;
/// How long the gateway waits for that body before answering with `id: null`.
const ID_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Writes `error` as the response: a JSON-RPC error carrying the request id for a JSON POST,
/// plain JSON otherwise; with a `WWW-Authenticate` challenge when one is given.
pub async fn respond(
    session: &mut Session,
    ctx: &mut RequestCtx,
    error: GatewayError,
    challenge: Option<http::HeaderValue>,
) -> Result<()> {
    let shape = if is_json_post(session) {
        BodyShape::JsonRpc(read_body_prefix(session, ctx).await.as_deref().and_then(jsonrpc_id))
    } else {
        BodyShape::Plain
    };
    let body = render(&error, &shape);
    let mut header = ResponseHeader::build(error.status(), Some(6))?;
    ctx.error = Some(error);
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    if let Some(challenge) = challenge {
        header.insert_header(http::header::WWW_AUTHENTICATE, challenge)?;
    }
    if ctx.cors {
        origin::add_cors(session.req_header(), &mut header)?;
    }
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(Bytes::from(body)), true).await
}

/// The body shape from the request body already read — the driver's whole body, or what
/// Pingora kept for retries — without reading more (for errors found after the request went
/// upstream).
pub fn buffered_shape(session: &Session, ctx: &RequestCtx) -> BodyShape {
    if !is_json_post(session) {
        return BodyShape::Plain;
    }
    let downstream = session.as_downstream();
    let id = match &ctx.request_body {
        Some(body) => jsonrpc_id(body),
        None => downstream
            .get_retry_buffer()
            .filter(|_| !downstream.retry_buffer_truncated())
            .and_then(|b| jsonrpc_id(&b)),
    };
    BodyShape::JsonRpc(id)
}

fn is_json_post(session: &Session) -> bool {
    let req = session.req_header();
    req.method == http::Method::POST
        && req
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| memchr::memmem::find(v.as_bytes(), b"json").is_some())
}

/// The start of the request body: the driver's whole body, what Pingora kept for retries, or,
/// when nothing was read yet, up to [`MAX_ID_SCAN`] bytes read now. Only ever called on an error
/// path.
async fn read_body_prefix(session: &mut Session, ctx: &RequestCtx) -> Option<Vec<u8>> {
    if let Some(body) = &ctx.request_body {
        return Some(body.to_vec());
    }
    let downstream = session.as_downstream_mut();
    if let Some(buffered) = downstream.get_retry_buffer() {
        return (!downstream.retry_buffer_truncated()).then(|| buffered.to_vec());
    }
    if downstream.body_bytes_read() > 0 {
        return None;
    }
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = downstream.read_request_body().await.ok()? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ID_SCAN {
                return None;
            }
        }
        Some(body)
    };
    tokio::time::timeout(ID_READ_TIMEOUT, read).await.ok().flatten()
}

/// Maps a proxy failure to a gateway error (`None` when the client is gone).
fn classify(e: &Error) -> Option<GatewayError> {
    let timeout =
        matches!(e.etype(), ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout);
    match e.esource() {
        ErrorSource::Upstream if timeout => Some(GatewayError::UpstreamTimeout),
        ErrorSource::Upstream => Some(GatewayError::UpstreamUnreachable),
        ErrorSource::Downstream => match e.etype() {
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => None,
            _ => Some(GatewayError::BadRequest),
        },
        ErrorSource::Internal | ErrorSource::Unset => Some(GatewayError::Internal),
    }
}

/// The `upstream_errors_total` kind of a failed exchange; `None` for a failed connect, which
/// `upstream::connect_failed` counted as it happened.
fn failure_kind(etype: &ErrorType) -> Option<&'static str> {
    use ErrorType::*;
    Some(match etype {
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError
        | TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError => return None,
        ReadTimedout | WriteTimedout => "timeout",
        ConnectionClosed => "closed",
        ReadError | WriteError => "reset",
        _ => "protocol",
    })
}

/// Pingora's `fail_to_proxy`: answers with the right status and a JSON body when the response
/// has not started yet.
pub async fn fail_to_proxy(session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
    let error = classify(e);
    if e.esource() == &ErrorSource::Upstream {
        if let Some(kind) = failure_kind(e.etype()) {
            Metrics::global().upstream_errors.with_label_values(&[ctx.server_name(), kind]).inc();
        }
    }
    let Some(mut error) = error else {
        return FailToProxy { error_code: 0, can_reuse_downstream: false };
    };
    // A session whose replica failed before answering anything (refused, reset, closed — also on
    // a pooled connection the replica dropped when it died) is gone: the client must start a new
    // one. A replica that is only slow still gets 504.
    let slow = matches!(e.etype(), ErrorType::ReadTimedout | ErrorType::WriteTimedout);
    if ctx.pinned.is_some() && !ctx.upstream_responded && !slow && e.esource() == &ErrorSource::Upstream {
        error = GatewayError::SessionNotFound;
    }
    let status = error.status();
    if session.response_written().is_none() {
        if let Err(write_error) = respond(session, ctx, error, None).await {
            tracing::debug!("cannot write the error response: {write_error}");
        }
    } else {
        ctx.error = Some(error);
    }
    FailToProxy { error_code: status, can_reuse_downstream: false }
}
