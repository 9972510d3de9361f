//! `upstream_peer`, `fail_to_connect` and `upstream_request_filter`: where the request goes and
//! what it looks like when it leaves.

use std::time::Instant;

use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::{Error, ErrorType, Result};

use super::RequestCtx;
use crate::metrics::Metrics;

/// The peer for this attempt, from an address resolved when the config loaded (no DNS here).
pub fn peer(ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
    let server = ctx
        .server()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "upstream_peer without a route"))?;
    let upstream = server.upstream_for_attempt(ctx.attempt).clone();
    let read_timeout = if ctx.stream_capable { server.stream_idle_timeout } else { server.read_timeout };
    let connect_timeout = server.connect_timeout;

    let mut peer = HttpPeer::new(upstream.addr(), upstream.tls, upstream.sni.clone());
    peer.options.connection_timeout = Some(connect_timeout);
    peer.options.read_timeout = Some(read_timeout);
    peer.options.write_timeout = Some(read_timeout);
    peer.options.verify_cert = upstream.verify_tls;
    peer.options.verify_hostname = upstream.verify_tls;
    ctx.attempt += 1;
    ctx.upstream = Some(upstream);
    Ok(Box::new(peer))
}

/// A failed connect is retried on the next replica while there is one not yet tried; nothing
/// was sent yet, so the retry is safe for every method.
pub fn connect_failed(ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
    let replicas = ctx.server().map_or(0, |s| s.upstreams.len());
    Metrics::global().upstream_errors.with_label_values(&[ctx.server_name(), "connect"]).inc();
    if ctx.attempt < replicas {
        e.set_retry(true);
    }
    e
}

/// Rewrites the target onto the upstream's path, sets `Host`, removes the headers the server's
/// policy strips (hop-by-hop, the caller's credentials, restricted globs).
/// Runs again on every retry, so it only copies what `request_filter` prepared.
pub fn prepare_request(
    inbound: &RequestHeader,
    request: &mut RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if let Some(target) = &ctx.target {
        request.set_uri(target.clone());
    }
    if let Some(upstream) = &ctx.upstream {
        request.insert_header(http::header::HOST, upstream.host_header.clone())?;
    }
    if let Some(server) = ctx.server() {
        server.headers.apply(request);
    }
    if let Some(credentials) = &ctx.credentials {
        credentials.apply(inbound, request)?;
    }
    ctx.upstream_sent_at = Some(Instant::now());
    Ok(())
}
