//! `request_filter`: snapshot the registry, refuse unusable paths, match the route.

use pingora::proxy::Session;
use pingora::Result;

use super::{errors, Gateway, RequestCtx};
use crate::error_body::GatewayError;
use crate::routes::has_dot_segment;

/// Routes the request; answers 400/404 itself (returning `Ok(true)`) when it cannot.
pub async fn route(gateway: &Gateway, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    let registry = gateway.registry.load_full();
    let uri = &session.req_header().uri;
    let path = uri.path();
    if has_dot_segment(path) {
        ctx.registry = Some(registry);
        errors::respond(session, ctx, GatewayError::BadPath).await?;
        return Ok(true);
    }
    let Some((route, server)) = registry.route(path) else {
        ctx.registry = Some(registry);
        errors::respond(session, ctx, GatewayError::UnknownRoute).await?;
        return Ok(true);
    };
    let target = server.upstream_target(path, uri.query(), route.prefix_len);
    ctx.target = match http::Uri::try_from(target) {
        Ok(target) => Some(target),
        Err(_) => {
            ctx.registry = Some(registry);
            errors::respond(session, ctx, GatewayError::BadPath).await?;
            return Ok(true);
        }
    };
    ctx.stream_capable = accepts_event_stream(session);
    ctx.route = Some(route);
    ctx.registry = Some(registry);
    Ok(false)
}

/// True when the client's `Accept` admits `text/event-stream` (GET streams and Streamable HTTP
/// POSTs do): such a response may stay silent for long, and gets the stream idle timeout.
fn accepts_event_stream(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get_all(http::header::ACCEPT)
        .iter()
        .any(|v| memchr::memmem::find(v.as_bytes(), b"text/event-stream").is_some())
}
