//! Response filters: status, headers and body pass through unchanged, except the legacy SSE
//! `endpoint` event, which is pointed at the gateway. Streams are counted while open.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::RequestCtx;
use crate::metrics::Metrics;
use crate::origin;
use crate::sse_endpoint::{EndpointMapping, EndpointRewriter};

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
    if let Some(sent) = ctx.upstream_sent_at {
        Metrics::global()
            .upstream_duration
            .with_label_values(&[ctx.server_name()])
            .observe(sent.elapsed().as_secs_f64());
    }
    let is_event_stream = response
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !is_event_stream {
        return;
    }
    ctx.is_stream = true;
    Metrics::global().active_streams.with_label_values(&[ctx.server_name()]).inc();

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
    };
    ctx.rewriter = Some(EndpointRewriter::new(mapping));
    // The rewritten event changes the length; SSE has none in practice, but never send a wrong one.
    response.remove_header(&http::header::CONTENT_LENGTH);
}

/// Passes a body chunk through, rewriting the legacy endpoint event while it has not gone by.
pub fn body(body: &mut Option<Bytes>, end_of_stream: bool, ctx: &mut RequestCtx) {
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
