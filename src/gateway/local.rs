//! Endpoints the gateway answers itself: Protected Resource Metadata and CORS preflights.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::{errors, RequestCtx};
use crate::error_body::GatewayError;
use crate::origin;
use crate::registry::Registry;

/// `GET /.well-known/oauth-protected-resource/<route>`: the route's metadata document (RFC 9728),
/// readable from any origin. Its preflight allows the headers browser MCP clients send with the
/// fetch (`MCP-Protocol-Version`).
pub async fn resource_metadata(
    session: &mut Session,
    ctx: &mut RequestCtx,
    registry: &Registry,
) -> Result<()> {
    let Some(resource) = registry.metadata(session.req_header().uri.path()) else {
        return errors::respond(session, ctx, GatewayError::UnknownRoute, None).await;
    };
    let method = &session.req_header().method;
    let mut header = ResponseHeader::build(if method == http::Method::OPTIONS { 204 } else { 200 }, Some(7))?;
    header.insert_header(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")?;
    header.insert_header(http::header::CACHE_CONTROL, "max-age=300")?;
    if method == http::Method::OPTIONS {
        header.insert_header(http::header::ACCESS_CONTROL_ALLOW_METHODS, "GET, OPTIONS")?;
        header.insert_header(
            http::header::ACCESS_CONTROL_ALLOW_HEADERS,
            origin::allowed_headers(session.req_header()),
        )?;
        header.insert_header(http::header::ACCESS_CONTROL_MAX_AGE, "600")?;
        header.insert_header(http::header::CONTENT_LENGTH, 0)?;
        return session.write_response_header(Box::new(header), true).await;
    }
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, resource.document.len())?;
    let head_only = method == http::Method::HEAD;
    session.write_response_header(Box::new(header), head_only).await?;
    if !head_only {
        session.write_response_body(Some(resource.document.clone()), true).await?;
    }
    Ok(())
}

/// Answers a CORS preflight for an allowed origin.
pub async fn preflight(session: &mut Session) -> Result<()> {
    let header = origin::preflight_response(session.req_header())?;
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(Bytes::new()), true).await
}
