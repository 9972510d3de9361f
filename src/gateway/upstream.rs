//! `upstream_peer`, `fail_to_connect` and `upstream_request_filter`: where the request goes and
//! what it looks like when it leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName};
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::{Error, ErrorType, Result};

use super::{RequestCtx, MCP_SESSION_ID};
use crate::headers::HeaderSink;
use crate::metrics::Metrics;
use crate::upstream::PreparedPeer;

/// The peer for this attempt, from an address resolved when the config loaded (no DNS here).
pub fn peer(ctx: &mut RequestCtx) -> Result<Arc<PreparedPeer>> {
    let server = ctx
        .server()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "upstream_peer without a route"))?;
    let index = match ctx.pinned {
        Some(index) => index,
        None => server
            .choose(ctx.tried)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "every replica was tried"))?,
    };
    let upstream = server.upstreams[index].clone();
    let peer = upstream.peer();
    ctx.tried |= 1 << index;
    // Count the request against the replica it is on now (for least-connections).
    upstream.track(true);
    if let Some(previous) = ctx.upstream.replace(upstream) {
        previous.track(false);
    }
    Ok(peer)
}

/// How long a read or write of the upstream may wait: the server's stream idle timeout for a
/// request that may get an event stream, its read timeout otherwise.
pub fn io_timeout(ctx: &RequestCtx) -> Option<Duration> {
    let server = ctx.server()?;
    Some(if ctx.stream_capable { server.stream_idle_timeout } else { server.read_timeout })
}

/// The server's connect timeout.
pub fn connect_timeout(ctx: &RequestCtx) -> Option<Duration> {
    ctx.server().map(|server| server.connect_timeout)
}

/// The peer for pingora-proxy's HTTP/2 path: the prepared one with the server's timeouts.
pub fn peer_with_timeouts(ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
    let mut peer = Box::new(peer(ctx)?.peer.clone());
    peer.options.connection_timeout = connect_timeout(ctx);
    peer.options.read_timeout = io_timeout(ctx);
    peer.options.write_timeout = io_timeout(ctx);
    Ok(peer)
}

/// A failed connect is retried on another replica while there is one not yet tried (nothing was
/// sent yet, so the retry is safe for every method) — but never for a request of a session,
/// which lives on its replica only.
pub fn connect_failed(ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
    let replicas = ctx.server().map_or(0, |s| s.upstreams.len());
    let all_tried = ctx.tried.count_ones() as usize >= replicas;
    let metrics = Metrics::global();
    metrics.upstream_errors.with_label_values(&[ctx.server_name(), "connect"]).inc();
    let retry = ctx.pinned.is_none() && !all_tried;
    if retry {
        metrics.upstream_retries.with_label_values(&[ctx.server_name(), "connect_failed"]).inc();
    }
    e.set_retry(retry);
    e
}

/// Whether a request may go upstream again after its exchange failed before any response byte,
/// once some of it was written (RFC 9110 §9.2.2: a proxy never repeats a non-idempotent request
/// by itself, since the upstream may have acted on it — a `tools/call` that sends an email).
/// Only an idempotent method, on a `reused` connection (the signature of a pooled connection the
/// upstream closed as it was taken, not of an upstream that failed on this request), with its
/// whole body in hand (`body_in_hand`) to send again. Counted when it is allowed.
pub fn may_resend(ctx: &RequestCtx, method: &http::Method, reused: bool, body_in_hand: bool) -> bool {
    let resend = reused && body_in_hand && method.is_idempotent();
    if resend {
        Metrics::global().upstream_retries.with_label_values(&[ctx.server_name(), "idempotent_resend"]).inc();
    }
    resend
}

/// Builds the upstream request in place of `request` for pingora-proxy's HTTP/2 path, from the
/// client's (`inbound`), with the header fields [`upstream_fields`] decides.
/// Runs again on every retry, so it only copies what `request_filter` prepared.
pub fn prepare_request(
    inbound: &RequestHeader,
    request: &mut RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    // Straight into a plain header map: no case map to keep, no conversions per header.
    let mut headers = HeaderMap::with_capacity(inbound.headers.len() + 4);
    upstream_fields(inbound, ctx, &mut headers)?;
    // The gateway answered the expectation itself (as the HTTP/1 driver's head writer does).
    headers.remove(http::header::EXPECT);
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = inbound.method.clone();
    parts.uri = upstream_target(inbound, ctx).clone();
    parts.headers = headers;
    *request = RequestHeader::from(parts);
    ctx.upstream_sent_at = Some(Instant::now());
    Ok(())
}

/// The upstream request's target: the one `request_filter` computed for the upstream.
pub fn upstream_target<'a>(inbound: &'a RequestHeader, ctx: &'a RequestCtx) -> &'a http::Uri {
    ctx.target.as_ref().unwrap_or(&inbound.uri)
}

/// Writes the upstream request's header fields into `fields`, from the client's request
/// (`inbound`): the upstream's `Host`, the client's headers that may leave (not hop-by-hop, not
/// the caller's credentials, not the server's restricted globs), then the resolved credentials
/// and the session id the replica issued. Built afresh rather than cut down from a copy: one pass
/// over the client's headers and no removals (header names go upstream in lowercase, which HTTP
/// allows). The framing fields are the caller's to set. Fields left behind for a `_` in their
/// name are counted once per request: on the first head built, before `upstream_sent_at` is set
/// (every engine sets it once a head is built; a retry or resend builds it again).
pub fn upstream_fields<'a>(
    inbound: &'a RequestHeader,
    ctx: &'a RequestCtx,
    fields: &mut impl HeaderSink<'a>,
) -> Result<()> {
    let server = ctx
        .server()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "upstream request without a route"))?;
    if let Some(upstream) = &ctx.upstream {
        fields.insert(&HOST, &upstream.host_header);
    }
    let underscored = server.headers.copy_forwardable(inbound, fields);
    if underscored > 0 && ctx.upstream_sent_at.is_none() {
        server.metrics.underscore_headers_dropped.inc_by(underscored as u64);
    }
    if let Some(credentials) = &ctx.credentials {
        credentials.apply(inbound, fields);
    }
    if let Some(original) = &ctx.session_original {
        fields.insert(&SESSION_ID, original);
    }
    Ok(())
}

/// `Host`, with a lifetime long enough to be lent to a [`HeaderSink`].
static HOST: HeaderName = http::header::HOST;
/// The MCP session id header, likewise.
static SESSION_ID: HeaderName = HeaderName::from_static(MCP_SESSION_ID);
