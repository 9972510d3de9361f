//! Response filters: status, headers and body pass through unchanged, except the legacy SSE
//! `endpoint` event, which is pointed at the gateway, and the upstream connection's own
//! (hop-by-hop) fields, which stay behind. Streams are counted while open.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::{errors, RequestCtx, MCP_SESSION_ID};
use crate::error_body::{render, GatewayError};
use crate::headers::remove_hop_by_hop;
use crate::origin;
use crate::sse_endpoint::{EndpointMapping, EndpointRewriter};
use crate::tokens::TokenCache;

/// For a pooled server, the session id a replica issues goes to the client wrapped with the
/// replica's id, so later requests of the session find their way back.
fn wrap_session_id(response: &mut ResponseHeader, ctx: &RequestCtx) {
    let (Some(registry), Some(route), Some(upstream)) = (&ctx.registry, ctx.route, &ctx.upstream) else {
        return;
    };
    if !registry.servers[route.server].is_pooled() {
        return;
    }
    let Some(original) = response.headers.get(MCP_SESSION_ID).and_then(|v| v.to_str().ok()) else { return };
    let wrapped = registry.session_key.wrap(&upstream.id, original);
    if response.insert_header(MCP_SESSION_ID, wrapped).is_err() {
        tracing::warn!("cannot wrap the session id of a pooled server");
    }
}

/// Adds CORS headers for browser callers to whatever goes downstream.
pub fn downstream_headers(
    session: &Session,
    response: &mut ResponseHeader,
    ctx: &RequestCtx,
) -> pingora::Result<()> {
    if ctx.cors {
        origin::add_cors(session.req_header(), response)?;
    }
    Ok(())
}

/// Inspects the upstream response header.
pub fn headers(session: &Session, response: &mut ResponseHeader, ctx: &mut RequestCtx) {
    ctx.upstream_responded = true;
    if let (Some(sent), Some(server)) = (ctx.upstream_sent_at, ctx.server()) {
        server.metrics.upstream_duration.observe(sent.elapsed().as_secs_f64());
    }
    remove_hop_by_hop(response);
    if response.status == http::StatusCode::UNAUTHORIZED
        && ctx.credentials.as_ref().is_some_and(|c| c.injected)
    {
        refuse_rejected_credential(session, response, ctx);
        return;
    }
    wrap_session_id(response, ctx);
    let is_event_stream = response
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !is_event_stream {
        return;
    }
    let Some(server) = ctx.server() else { return };
    server.metrics.active_streams.inc();
    ctx.is_stream = true;

    // Only a GET opens a legacy HTTP+SSE stream, the one place an `endpoint` event appears.
    if session.req_header().method != http::Method::GET {
        return;
    }
    let (Some(registry), Some(route), Some(upstream), Some(target)) =
        (&ctx.registry, ctx.route, &ctx.upstream, &ctx.target)
    else {
        return;
    };
    let request_path = session.req_header().uri.path();
    let mapping = EndpointMapping {
        upstream_base: upstream.base_path.clone(),
        sse_request_path: target.path().to_owned(),
        gateway_prefix: format!("{}{}", registry.public_base_path, &request_path[..route.prefix_len]),
        session_wrap: registry.servers[route.server]
            .is_pooled()
            .then(|| (registry.session_key.clone(), upstream.id.clone())),
    };
    ctx.rewriter = Some(EndpointRewriter::new(mapping));
    // The rewritten event changes the length; SSE has none in practice, but never send a wrong one.
    response.remove_header(&http::header::CONTENT_LENGTH);
}

/// The upstream refused a credential the gateway injected: its cached token is dropped so the next
/// request fetches a new one, and the client gets a 502 of the gateway's own rather than the
/// upstream's 401 challenge, which would read as a verdict on the client's credentials.
fn refuse_rejected_credential(session: &Session, response: &mut ResponseHeader, ctx: &mut RequestCtx) {
    if let (Some(credentials), Some(registry)) = (&ctx.credentials, &ctx.registry) {
        let cache = TokenCache::global(registry.token_capacity);
        for (key, token) in credentials.tokens.clone() {
            tokio::spawn(async move { cache.invalidate(&key, &token).await });
        }
    }
    tracing::warn!(server = ctx.server_name(), "the upstream answered 401 to the gateway's credential");
    let error = GatewayError::UpstreamRejectedCredential;
    let body = render(&error, &errors::buffered_shape(session, ctx));
    let rewritten = (|| -> pingora::Result<()> {
        response.set_status(error.status())?;
        for name in
            [http::header::WWW_AUTHENTICATE, http::header::CONTENT_ENCODING, http::header::TRANSFER_ENCODING]
        {
            response.remove_header(&name);
        }
        response.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        response.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        Ok(())
    })();
    if rewritten.is_ok() {
        ctx.replacement_body = Some(Bytes::from(body));
        ctx.error = Some(error);
    }
}

/// Passes a body chunk through, rewriting the legacy endpoint event while it has not gone by.
pub fn body(body: &mut Option<Bytes>, end_of_stream: bool, ctx: &mut RequestCtx) {
    if ctx.replacement_body.is_some() {
        *body = if end_of_stream { ctx.replacement_body.take() } else { None };
        return;
    }
    let (Some(rewriter), Some(upstream)) = (ctx.rewriter.as_mut(), ctx.upstream.as_ref()) else {
        return;
    };
    if rewriter.is_done() {
        return;
    }
    let chunk = body.take().unwrap_or_default();
    let out = rewriter.feed(upstream, chunk, end_of_stream);
    if !out.is_empty() || end_of_stream {
        *body = Some(out);
    }
}
