//! The HTTP/1 request driver: serves a downstream HTTP/1 connection by running the gateway's
//! phases (the functions each `ProxyHttp` method calls, in the same order, called directly to
//! spare `async_trait`'s boxed future per phase) for one request after another, on the
//! connection's own task.
//!
//! Why not pingora-proxy's generic `HttpProxy` for HTTP/1: its request path is built for caching,
//! full-duplex bodies and retries of anything, and costs accordingly (two tasks and channels per
//! request, a request header flushed on its own ahead of the body, one downstream write per
//! upstream chunk). An MCP exchange is one JSON-RPC message up and one response (or event stream)
//! down, so this driver:
//! - reads a request body of up to [`BUFFERED_BODY_LIMIT`] whole before it goes upstream, and
//!   sends header and body in **one write**; larger and chunked bodies are streamed;
//! - never sends a request twice once any byte of it was written: a connect that fails is tried
//!   on another replica (the gateway's `fail_to_connect` decides), a pooled connection found
//!   closed when it is taken is dropped unused, and only an idempotent request is resent when a
//!   pooled connection closes before answering (`upstream::may_resend`);
//! - forwards whatever response bytes one read brought as **one downstream write** (SSE events
//!   that arrived together leave together; nothing waits for more);
//! - watches the downstream while the response streams, so a client that goes away ends the
//!   upstream stream too.
//!
//! Both sides of the wire are the gateway's own, each a fraction of the cost of Pingora's
//! session: the client side is `http1/client/` (httparse, RFC 9112 framing and its smuggling
//! rules, responses serialized into one write), seen by the phases through Pingora's `Session`
//! as a custom HTTP session; the upstream request is written from the header the phase built,
//! and the response read by `http1/upstream/response.rs`.
//!
//! HTTP/2 connections (TLS listeners offer h2 by ALPN) go to pingora-proxy's `HttpProxy` with the
//! same gateway; both paths run the same phase code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::apps::ServerApp;
use pingora::connectors::ConnectorOptions;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::{http_proxy, HttpProxy, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::time::fast_timeout::fast_timeout;
use pingora::{Error, ErrorType, OkOrErr, Result};
use tokio::io::AsyncWriteExt;

use super::request_facts::RequestFacts;
use super::{logging, request, response, upstream, Gateway, RequestCtx};
use crate::config::Http1Engine;
use crate::http1::client::{ClientConnection, ClientRequest, HandBack};
use crate::http1::framing::FramingFields;
use crate::http1::upstream::{BodyFraming, IdlePool, RequestFields, UpstreamConnection, UpstreamResponse};
use crate::upstream::PreparedPeer;

/// Request bodies with a `Content-Length` up to this size are read whole before the upstream
/// request is written (MCP messages are small); larger or chunked bodies are streamed.
pub const BUFFERED_BODY_LIMIT: usize = 64 * 1024;

/// How long a downstream connection may sit idle between requests, and how long a request head
/// may take to arrive (Pingora's HTTP/1 keep-alive default).
const KEEPALIVE: Duration = Duration::from_secs(60);

/// The Pingora application serving the gateway's listeners.
pub struct GatewayApp {
    gateway: Gateway,
    /// pingora-proxy's path: every HTTP/2 connection, and HTTP/1 ones where the config selects it.
    pingora: Arc<HttpProxy<Gateway>>,
    pool: IdlePool,
    max_retries: usize,
}

impl GatewayApp {
    /// The application for `conf` (connection pool size, retries), with one gateway for HTTP/1
    /// and another, over the same registry, inside pingora-proxy for HTTP/2.
    pub fn new(conf: &Arc<ServerConf>, http1: Gateway, http2: Gateway) -> Self {
        Self {
            gateway: http1,
            pingora: Arc::new(http_proxy(conf, http2)),
            pool: IdlePool::new(ConnectorOptions::from_server_conf(conf), conf.upstream_keepalive_pool_size),
            max_retries: conf.max_retries.max(1),
        }
    }
}

#[async_trait]
impl ServerApp for GatewayApp {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        if h2 || self.gateway.registry.load().http1_engine == Http1Engine::Pingora {
            return ServerApp::process_new(&self.pingora, stream, shutdown).await;
        }
        let mut shutdown = shutdown.clone();
        let mut next = Some(Box::new(ClientConnection::new(stream)));
        let hand_back = Arc::new(HandBack::default());
        // One proxy session for the connection's life, built at its first request: only the
        // client request inside it changes from one request to the next.
        let mut session: Option<Session> = None;
        while let Some(mut conn) = next.take() {
            let read = tokio::select! {
                biased;
                read = conn.read_head(KEEPALIVE) => read,
                // An idle kept-alive connection is closed when the process starts to stop.
                _ = shutdown.changed() => return None,
            };
            let head = match read {
                Ok(Some(head)) => head,
                Ok(None) => return None,
                Err(e) => {
                    tracing::debug!("unreadable request: {e}");
                    match e.etype() {
                        ErrorType::InvalidHTTPHeader => conn.refuse(400).await,
                        ErrorType::HTTPStatus(status) => conn.refuse(*status).await,
                        _ => {}
                    }
                    return None;
                }
            };
            if head.header().method == http::Method::CONNECT {
                conn.refuse(405).await;
                return None;
            }
            let framing = *head.framing();
            let facts = RequestFacts::of(&head.header().headers);
            let mut request = ClientRequest::new(conn, head, hand_back.clone());
            if *shutdown.borrow() || crate::drain::is_draining() {
                // Answer what is in flight, then close: the process is stopping or draining.
                request.close_after_response();
            }
            let request = ServerSession::new_custom(Box::new(request));
            let session = match &mut session {
                Some(session) => {
                    *session.downstream_session = request;
                    session
                }
                None => session.insert(proxy_session(request)),
            };
            self.serve(session, facts, framing).await;
            next = hand_back.take();
        }
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.pingora).await;
    }
}

/// Pingora's proxy `Session` (what the phases take) around a client request. pingora-proxy
/// builds a session only around an HTTP/1 stream, so it is given an empty one, replaced at once
/// by the gateway's own HTTP/1 session. The session carries nothing else from one request to
/// the next: it has no downstream modules, and its cache, compression and upgrade state are used
/// only by pingora-proxy's own request path, never by this driver.
fn proxy_session(request: ServerSession) -> Session {
    let mut session = Session::new_h1(Box::new(std::io::Cursor::new(Vec::new())));
    *session.downstream_session = request;
    session
}

/// A failed upstream exchange, and whether any response byte had arrived.
struct Failure {
    error: Box<Error>,
    response_started: bool,
}

impl Failure {
    fn before_response(error: Box<Error>) -> Self {
        Self { error, response_started: false }
    }

    /// The connection was found closed or reset before any response byte: the signature of a
    /// pooled connection the upstream had dropped, never of a slow upstream.
    fn means_closed_before_response(&self) -> bool {
        !self.response_started
            && matches!(
                self.error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }
}

impl GatewayApp {
    /// Serves one request. When the exchange completes cleanly (an error answered in full
    /// counts), the client session hands its connection back for the next request.
    async fn serve(&self, session: &mut Session, facts: RequestFacts, framing: FramingFields) {
        let mut ctx = self.gateway.new_ctx();
        ctx.facts = facts;
        let outcome = match request::route(&self.gateway, session, &mut ctx).await {
            Ok(true) => Ok(()),
            Ok(false) => self.proxy(session, &mut ctx, &framing).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => logging::finish(session, None, &mut ctx),
            Err(e) => {
                let answered = self.gateway.fail_to_proxy(session, &e, &mut ctx).await;
                if answered.error_code != 0 {
                    tracing::warn!(
                        server = ctx.server_name(),
                        status = answered.error_code,
                        "request failed: {e}"
                    );
                }
                logging::finish(session, Some(&e), &mut ctx);
            }
        }
        // The client session keeps the connection only when the request body was read and the
        // response written to their ends; a response cut short by a failure closes it.
        if let Err(e) = session.downstream_session.finish_body().await {
            tracing::debug!("finishing the response: {e}");
        }
    }

    /// Sends the request upstream and the response downstream, retrying where that is safe.
    async fn proxy(&self, session: &mut Session, ctx: &mut RequestCtx, fields: &FramingFields) -> Result<()> {
        // The gateway reads the body itself, so it tells a client waiting for permission to go
        // ahead (as nginx does); the expectation is not forwarded.
        if ctx.facts.expects_continue {
            session.as_downstream_mut().write_continue_response().await.map_err(|e| e.into_down())?;
        }
        // A body read whole is kept once, here, for a resend and for error answers; a streamed
        // one keeps its start in Pingora's retry buffer for error answers.
        let body = read_small_body(session, fields).await?;
        match &body {
            Some(body) => ctx.request_body = Some(body.clone()),
            None => session.as_downstream_mut().enable_retry_buffering(),
        }
        let framing = body_framing(session.req_header(), fields, body.as_ref());
        let mut attempts = 0;
        let mut fresh_on: Option<Arc<PreparedPeer>> = None;
        let connect_timeout = upstream::connect_timeout(ctx);
        let io_timeout = upstream::io_timeout(ctx);
        loop {
            attempts += 1;
            let fresh = fresh_on.is_some();
            let peer = match fresh_on.take() {
                Some(peer) => peer,
                None => upstream::peer(ctx)?,
            };
            let connected = if fresh {
                self.pool.connect(&peer.peer, connect_timeout).await.map(|conn| (conn, false))
            } else {
                self.pool.get(&peer.peer, peer.reuse_hash, connect_timeout).await
            };
            let (conn, reused) = match connected {
                Ok(connected) => connected,
                Err(mut e) => {
                    e.as_up();
                    let e = self.gateway.fail_to_connect(session, &peer.peer, ctx, e);
                    if e.retry() && attempts < self.max_retries {
                        continue;
                    }
                    return Err(e.into_up());
                }
            };
            let mut wire = request_head(session.req_header(), ctx, framing, body.as_ref())?;
            let streamed = match &body {
                Some(body) => {
                    wire.extend_from_slice(body);
                    None
                }
                None => Some(framing),
            };
            ctx.upstream_sent_at = Some(Instant::now());

            match self.exchange(session, ctx, io_timeout, conn, wire, streamed).await {
                Ok(upstream) => {
                    release(&self.pool, upstream, &peer);
                    return Ok(());
                }
                // Bytes of the request were written, so the upstream may have acted on it: only
                // an idempotent request goes again, and only when a pooled connection closed
                // before answering (the upstream dropped it as it was taken; a timeout is not
                // that: the upstream has the request and is slow). Anything else is answered
                // 502/504, never sent twice.
                Err(failure)
                    if failure.means_closed_before_response()
                        && upstream::may_resend(
                            ctx,
                            &session.req_header().method,
                            reused,
                            body.is_some(),
                        ) =>
                {
                    tracing::debug!(
                        "pooled upstream connection failed, resending an idempotent request on a new one: {}",
                        failure.error
                    );
                    fresh_on = Some(peer);
                }
                Err(failure) => return Err(failure.error),
            }
        }
    }

    /// One request/response exchange on `conn`. `wire` is the request as far as it is known:
    /// the head and a body read whole, in one write (one segment instead of two on the way out);
    /// `streamed` is how the client's body that is still to come is framed, if there is one.
    async fn exchange(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        timeout: Option<Duration>,
        mut conn: UpstreamConnection,
        wire: BytesMut,
        streamed: Option<BodyFraming>,
    ) -> Result<UpstreamResponse, Failure> {
        write_with_timeout(&mut conn.stream, &wire, timeout).await.map_err(Failure::before_response)?;
        if let Some(framing) = streamed {
            let chunked = framing == BodyFraming::Chunked;
            stream_request_body(&mut conn.stream, session, timeout, chunked)
                .await
                .map_err(Failure::before_response)?;
        }

        let mut upstream = UpstreamResponse::new(conn, timeout);
        let mut header =
            upstream.read_head(&session.req_header().method).await.map_err(Failure::before_response)?;
        let started = |error: Box<Error>| Failure { error, response_started: true };
        let no_body_left = upstream.is_body_done();
        // The body that arrived with the head is decoded before the head goes on, so that
        // framing the upstream got wrong there is a clean 502 rather than a cut-off response.
        let first = upstream.read_buffered().map_err(started)?;
        response::headers(session, &mut header, ctx);
        frame_response(&mut header, session.req_header(), no_body_left).map_err(started)?;
        response::downstream_headers(session, &mut header, ctx).map_err(started)?;
        session.write_response_header(header, false).await.map_err(|e| started(e.into_down()))?;

        stream_body(&self.gateway, session, ctx, &mut upstream, first).await.map_err(started)?;
        Ok(upstream)
    }
}

/// Reads the request body whole when it is empty or has a `Content-Length` within
/// [`BUFFERED_BODY_LIMIT`]; `None` when it must be streamed.
async fn read_small_body(session: &mut Session, framing: &FramingFields) -> Result<Option<Bytes>> {
    let downstream = session.as_downstream_mut();
    if downstream.is_body_empty() {
        return Ok(Some(Bytes::new()));
    }
    let small = !framing.has_transfer_encoding()
        && framing
            .content_length()
            .is_ok_and(|length| length.is_some_and(|l| l <= BUFFERED_BODY_LIMIT as u64));
    if !small {
        return Ok(None);
    }
    let mut whole: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    while let Some(chunk) = downstream.read_request_body().await.map_err(|e| e.into_down())? {
        match whole.take() {
            // Usually the body arrives in one piece: keep it without copying.
            None if joined.is_empty() => whole = Some(chunk),
            None => joined.extend_from_slice(&chunk),
            Some(first) => {
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&chunk);
            }
        }
        // Known without another read (each costs a boxed future through Pingora's session).
        if downstream.is_body_done() {
            break;
        }
    }
    Ok(Some(whole.unwrap_or_else(|| joined.freeze())))
}

/// The upstream request head: the fields the phase decides (`upstream::upstream_fields`, as for
/// HTTP/2), written straight to bytes.
fn request_head(
    inbound: &RequestHeader,
    ctx: &RequestCtx,
    framing: BodyFraming,
    body: Option<&Bytes>,
) -> Result<BytesMut> {
    let mut fields = RequestFields::default();
    upstream::upstream_fields(inbound, ctx, &mut fields)?;
    let target = upstream::upstream_target(inbound, ctx);
    fields
        .to_wire(&inbound.method, target, framing, body.map_or(0, Bytes::len))
        .or_err(ErrorType::InvalidHTTPHeader, "upstream request target")
        .map_err(|e| e.into_in())
}

/// How the request body goes upstream: a body read whole with its exact length (an empty one
/// with none, unless the method carries a body), a streamed one with the client's length when it
/// gave one, chunked otherwise.
fn body_framing(request: &RequestHeader, fields: &FramingFields, body: Option<&Bytes>) -> BodyFraming {
    match body {
        Some(body)
            if body.is_empty()
                && !matches!(
                    request.method,
                    http::Method::POST | http::Method::PUT | http::Method::PATCH
                ) =>
        {
            BodyFraming::None
        }
        Some(body) => BodyFraming::Length(body.len() as u64),
        None => match fields.content_length() {
            Ok(Some(length)) if !fields.has_transfer_encoding() => BodyFraming::Length(length),
            _ => BodyFraming::Chunked,
        },
    }
}

/// Gives a response without a length a chunked body, so the downstream connection survives it
/// (what pingora-proxy does for HTTP/1.0-style upstream responses).
fn frame_response(header: &mut ResponseHeader, request: &RequestHeader, no_body_left: bool) -> Result<()> {
    let no_body = request.method == http::Method::HEAD || matches!(header.status.as_u16(), 204 | 304);
    if !no_body && !no_body_left && !has_length_or_coding(&header.headers) {
        header.set_version(http::Version::HTTP_11);
        header.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(())
}

/// True when the fields frame the body by a length or a transfer coding. (One pass over the
/// fields costs less than looking up the two names.)
fn has_length_or_coding(headers: &http::HeaderMap) -> bool {
    headers.keys().any(|name| name == http::header::TRANSFER_ENCODING || name == http::header::CONTENT_LENGTH)
}

/// Writes `bytes` and flushes, within `timeout`.
async fn write_with_timeout(stream: &mut Stream, bytes: &[u8], timeout: Option<Duration>) -> Result<()> {
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    let written = match timeout {
        Some(limit) => {
            fast_timeout(limit, write).await.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
        }
        None => write.await,
    };
    written.map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::TimedOut {
            ErrorType::WriteTimedout
        } else {
            ErrorType::WriteError
        };
        Error::because(kind, "writing the upstream request", e).into_up()
    })
}

/// Streams the client's request body upstream as it arrives (the header has been written), in
/// the chunked coding when the upstream request says so.
async fn stream_request_body(
    stream: &mut Stream,
    session: &mut Session,
    timeout: Option<Duration>,
    chunked: bool,
) -> Result<()> {
    while let Some(chunk) =
        session.as_downstream_mut().read_request_body().await.map_err(|e| e.into_down())?
    {
        if chunk.is_empty() {
            continue;
        }
        if chunked {
            let mut framed = BytesMut::with_capacity(chunk.len() + 20);
            framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            write_with_timeout(stream, &framed, timeout).await?;
        } else {
            write_with_timeout(stream, &chunk, timeout).await?;
        }
    }
    if chunked {
        write_with_timeout(stream, b"0\r\n\r\n", timeout).await?;
    }
    Ok(())
}

/// Streams the response body downstream through the body filter, one write per upstream read's
/// worth of bytes, while watching for the client going away.
async fn stream_body(
    gateway: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    upstream: &mut UpstreamResponse,
    mut first: Option<Bytes>,
) -> Result<()> {
    let mut watch_downstream = true;
    loop {
        // A body already in the buffer (a small answer usually arrives with its head) is
        // forwarded without setting up the race below.
        let buffered = match first.take() {
            Some(piece) => Some(piece),
            None => upstream.read_buffered()?,
        };
        let read = if buffered.is_some() || upstream.is_body_done() {
            Ok(buffered)
        } else if watch_downstream {
            tokio::select! {
                biased;
                // Cancel-safe: a read that loses the race has consumed nothing.
                read = upstream.read_body() => read,
                idle = session.as_downstream_mut().read_body_or_idle(true) => {
                    // Data or an error on an idle client connection: it is gone or misbehaving.
                    // (A clean half-close never resolves here.)
                    match idle {
                        Err(e) => return Err(e.into_down()),
                        Ok(_) => {
                            watch_downstream = false;
                            continue;
                        }
                    }
                }
            }
        } else {
            upstream.read_body().await
        };
        let mut data = read?;
        let end = data.is_none() || upstream.is_body_done();
        gateway.response_body_filter(session, &mut data, end, ctx)?;
        if data.as_ref().is_some_and(|d| !d.is_empty()) || end {
            session.write_response_body(data, end).await.map_err(|e| e.into_down())?;
        }
        if end {
            return Ok(());
        }
    }
}

/// Returns the upstream connection to the pool when its response was read to the end.
fn release(pool: &IdlePool, upstream: UpstreamResponse, peer: &PreparedPeer) {
    if let Some(conn) = upstream.into_reusable() {
        pool.put(conn, &peer.peer, peer.reuse_hash);
    }
}
