//! Response filters: status, headers and body pass through unchanged, except the legacy SSE
//! `endpoint` event, which is pointed at the gateway, the upstream connection's own (hop-by-hop)
//! fields, which stay behind, and an upstream's authentication challenge, which reaches the client
//! only when the client's own credential went upstream. Streams are counted while open.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::{errors, RequestCtx, MCP_SESSION_ID};
use crate::app_auth::AppAuth;
use crate::error_body::{render, GatewayError};
use crate::headers::remove_hop_by_hop;
use crate::metrics::Metrics;
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
    if let Some(error) = answer_for_the_upstream(response, ctx) {
        replace_challenge(session, response, ctx, error);
        return;
    }
    // A challenge on any other answer (a 400 with `error="invalid_request"`, RFC 6750 §3.1) is
    // about the upstream's credential too: it stays behind unless that was the client's own.
    if response.headers.contains_key(http::header::WWW_AUTHENTICATE) && !callers_own_credential(ctx) {
        response.remove_header(&http::header::WWW_AUTHENTICATE);
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

/// The error the gateway answers with in place of an upstream's refusal, if it does. An upstream
/// challenge (`WWW-Authenticate`, often naming an internal `resource_metadata` URL) is about the
/// credential that went upstream: it reaches the client only when that credential was the
/// client's own (`app_auth: passthrough` or `one_time`). Otherwise a 401 or 403 with a challenge,
/// and any 401 to a credential of the gateway's, is the gateway's to answer: a client holding a
/// valid gateway token is never sent to an internal authorization server.
fn answer_for_the_upstream(response: &ResponseHeader, ctx: &RequestCtx) -> Option<GatewayError> {
    let status = response.status;
    if status != http::StatusCode::UNAUTHORIZED && status != http::StatusCode::FORBIDDEN {
        return None;
    }
    if callers_own_credential(ctx) {
        return None;
    }
    let outbound = &ctx.server()?.outbound;
    let challenged = response.headers.contains_key(http::header::WWW_AUTHENTICATE);
    let gateway_credential = ctx.credentials.as_ref().is_some_and(|c| c.injected)
        || matches!(outbound.app_auth, Some(AppAuth::Query { .. }));
    match (gateway_credential, status == http::StatusCode::UNAUTHORIZED || challenged) {
        (true, true) => Some(GatewayError::UpstreamRejectedCredential),
        (false, _) if challenged => Some(GatewayError::UpstreamRequiresCredentials),
        _ => None,
    }
}

/// True when the credential that went upstream was the client's own (`app_auth: passthrough`
/// or `one_time`): then the upstream's challenge is the client's to read.
fn callers_own_credential(ctx: &RequestCtx) -> bool {
    ctx.server().is_some_and(|s| matches!(s.outbound.app_auth, Some(AppAuth::Passthrough | AppAuth::OneTime)))
}

/// Answers for the upstream: a 401 to the gateway's credential drops its cached tokens, so the
/// next request fetches new ones; the upstream's challenge goes to the log, and the client gets
/// the gateway's own error (JSON-RPC shaped for an MCP POST) with none of the upstream's fields.
fn replace_challenge(
    session: &Session,
    response: &mut ResponseHeader,
    ctx: &mut RequestCtx,
    error: GatewayError,
) {
    if response.status == http::StatusCode::UNAUTHORIZED && error == GatewayError::UpstreamRejectedCredential
    {
        if let (Some(credentials), Some(registry)) = (&ctx.credentials, &ctx.registry) {
            let cache = TokenCache::global(registry.token_capacity);
            for (key, token) in credentials.tokens.clone() {
                tokio::spawn(async move { cache.invalidate(&key, &token).await });
            }
        }
    }
    tracing::warn!(
        server = ctx.server_name(),
        status = response.status.as_u16(),
        challenge = %challenge_for_log(response),
        answer = error.reason(),
        "the upstream refused the request; the gateway answers for it",
    );
    Metrics::global().upstream_challenges.with_label_values(&[ctx.server_name(), error.reason()]).inc();
    let body = render(&error, &errors::buffered_shape(session, ctx));
    let replaced = (|| -> pingora::Result<ResponseHeader> {
        let mut own = ResponseHeader::build(error.status(), Some(4))?;
        own.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        own.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        own.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        Ok(own)
    })();
    match replaced {
        Ok(own) => {
            *response = own;
            ctx.replacement_body = Some(Bytes::from(body));
            ctx.error = Some(error);
        }
        Err(e) => tracing::error!("cannot build the gateway's answer to an upstream refusal: {e}"),
    }
}

/// The upstream's challenges as one line for the log: at most 512 bytes, control characters and
/// anything not ASCII escaped. A challenge carries no credential (the request's would be in
/// `Authorization`, which is never logged).
fn challenge_for_log(response: &ResponseHeader) -> String {
    let mut line = String::new();
    for value in response.headers.get_all(http::header::WWW_AUTHENTICATE) {
        if !line.is_empty() {
            line.push_str(", ");
        }
        line.extend(value.as_bytes().iter().flat_map(|b| std::ascii::escape_default(*b)).map(char::from));
    }
    if line.len() > 512 {
        line.truncate(509);
        line.push_str("...");
    }
    line
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
