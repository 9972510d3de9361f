//! `request_filter`: snapshot the registry, answer the gateway's own endpoints, refuse unusable
//! paths, match the route, check the origin, authenticate the caller.

use std::sync::Arc;

use pingora::proxy::Session;
use pingora::Result;

use super::request_facts::RequestFacts;
use super::{errors, local, Gateway, RequestCtx, LEGACY_SESSION_PARAM, MCP_SESSION_ID};
use crate::affinity::{query_param, replace_query_param};
use crate::agent_auth::{AuthFailure, WELL_KNOWN_PREFIX};
use crate::app_auth::{AppAuth, CredentialError};
use crate::error_body::GatewayError;
use crate::metrics::Metrics;
use crate::origin::{self, OriginFields};
use crate::registry::Registry;
use crate::routes::has_dot_segment;
use crate::tokens::TokenCache;

/// Routes and authenticates the request; answers itself (returning `Ok(true)`) when it must.
pub async fn route(gateway: &Gateway, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    let registry = gateway.registry.load_full();
    ctx.registry = Some(registry.clone());
    let path = session.req_header().uri.path();
    if path.starts_with(WELL_KNOWN_PREFIX) {
        local::resource_metadata(session, ctx, &registry).await?;
        return Ok(true);
    }
    if has_dot_segment(path) {
        errors::respond(session, ctx, GatewayError::BadPath, None).await?;
        return Ok(true);
    }
    let Some((route, _)) = registry.route(path) else {
        errors::respond(session, ctx, GatewayError::UnknownRoute, None).await?;
        return Ok(true);
    };
    ctx.route = Some(route);

    if !origin_allowed(session, &ctx.facts, &registry, route.server) {
        record_auth(&registry, route.server, "origin_denied");
        errors::respond(session, ctx, GatewayError::OriginDenied, None).await?;
        return Ok(true);
    }
    ctx.cors = ctx.facts.origin.is_some();
    if origin::is_preflight(session.req_header()) {
        local::preflight(session).await?;
        return Ok(true);
    }

    if let Err(failure) = authenticate(session, ctx, &registry, route.server).await {
        let server = &registry.servers[route.server];
        let resource = server.resource(route);
        let (error, challenge) = match failure {
            AuthFailure::MissingToken => {
                (GatewayError::MissingToken, resource.map(|r| r.challenge_missing.clone()))
            }
            AuthFailure::InvalidToken(r) => {
                (GatewayError::InvalidToken(r), resource.map(|r| r.challenge_invalid.clone()))
            }
            AuthFailure::InsufficientScope => {
                (GatewayError::InsufficientScope, resource.map(|r| r.challenge_scope.clone()))
            }
            AuthFailure::TokenInQuery => (GatewayError::TokenInQuery, None),
            AuthFailure::MissingUser => (GatewayError::MissingUser, None),
            AuthFailure::DuplicateUserHeader => (GatewayError::DuplicateUserHeader, None),
            AuthFailure::Unavailable => (GatewayError::AuthUnavailable, None),
        };
        errors::respond(session, ctx, error, challenge).await?;
        return Ok(true);
    }

    let server = &registry.servers[route.server];
    let uri = &session.req_header().uri;
    let target = server.upstream_target(uri.path(), uri.query(), route.prefix_len);
    ctx.target = match http::Uri::try_from(target) {
        Ok(target) => Some(target),
        Err(_) => {
            errors::respond(session, ctx, GatewayError::BadPath, None).await?;
            return Ok(true);
        }
    };
    ctx.stream_capable = ctx.facts.accepts_event_stream;

    if server.is_pooled() && pin_session(session, ctx, &registry, route.server).is_none() {
        errors::respond(session, ctx, GatewayError::SessionNotFound, None).await?;
        return Ok(true);
    }

    if !server.outbound.is_empty() {
        if let Some(AppAuth::Query { name, pair }) = &server.outbound.app_auth {
            ctx.target = ctx.target.take().and_then(|t| with_query_param(&t, name, pair));
        }
        let cache = TokenCache::global(registry.token_capacity);
        let resolved = server
            .outbound
            .resolve(session.req_header(), ctx.identity.as_ref(), registry.token_settings, cache)
            .await;
        match resolved {
            Ok(resolved) => ctx.credentials = Some(resolved),
            Err(failure) => {
                let error = match failure {
                    CredentialError::MissingOneTime => GatewayError::MissingUpstreamCredential,
                    CredentialError::NoCallerToken => GatewayError::NoCallerToken,
                    CredentialError::UnsafeValue(name) => {
                        GatewayError::UnsafeHeaderValue(name.as_str().into())
                    }
                    CredentialError::SourceDown(source, cause) => {
                        tracing::warn!(server = %server.name, source = %source, "credential unavailable: {cause}");
                        GatewayError::CredentialUnavailable(source)
                    }
                };
                errors::respond(session, ctx, error, None).await?;
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// For a pooled server, pins a request of an MCP session to the replica named by its wrapped
/// session id (header, or the legacy `sessionId` parameter) and restores the original id.
/// `None` when the id is forged, unknown, or its replica is gone or unhealthy.
fn pin_session(session: &Session, ctx: &mut RequestCtx, registry: &Registry, server: usize) -> Option<()> {
    let server = &registry.servers[server];
    let key = &registry.session_key;
    let mut pin = |wrapped: &str| -> Option<String> {
        let (replica, original) = key.unwrap(wrapped)?;
        let index = server.replica_by_id(replica)?;
        if !server.upstreams[index].is_healthy() || ctx.pinned.is_some_and(|p| p != index) {
            return None;
        }
        ctx.pinned = Some(index);
        Some(original.to_owned())
    };
    if let Some(value) = session.req_header().headers.get(MCP_SESSION_ID) {
        let original = pin(value.to_str().ok()?)?;
        ctx.session_original = Some(http::HeaderValue::from_str(&original).ok()?);
    }
    let target = ctx.target.as_ref()?;
    if let Some(wrapped) = target.query().and_then(|q| query_param(q, LEGACY_SESSION_PARAM)) {
        let original = pin(wrapped)?;
        let rewritten = replace_query_param(&target.to_string(), LEGACY_SESSION_PARAM, &original);
        ctx.target = Some(http::Uri::try_from(rewritten).ok()?);
    }
    Some(())
}

/// The target with the API key parameter set: any parameter of that name from the client is
/// dropped (so it cannot override the key), the rest of the query is kept as it was.
fn with_query_param(target: &http::Uri, name: &str, pair: &str) -> Option<http::Uri> {
    let encoded_name: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    let mut out =
        String::with_capacity(target.path().len() + pair.len() + target.query().map_or(0, str::len) + 2);
    out.push_str(target.path());
    out.push('?');
    for part in target.query().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let key = part.split('=').next().unwrap_or_default();
        if key != encoded_name && key != name {
            out.push_str(part);
            out.push('&');
        }
    }
    out.push_str(pair);
    http::Uri::try_from(out).ok()
}

fn origin_allowed(session: &Session, facts: &RequestFacts, registry: &Registry, server: usize) -> bool {
    let loopback = session.server_addr().and_then(|a| a.as_inet()).is_some_and(|a| a.ip().is_loopback());
    let fields = OriginFields {
        host: facts.host.as_ref(),
        target_host: session.req_header().uri.host(),
        origin: facts.origin.as_ref(),
    };
    registry.servers[server].origins.allows(&fields, loopback, &registry.public_host)
}

/// Runs the server's agent authentication and keeps the identity in the context.
async fn authenticate(
    session: &Session,
    ctx: &mut RequestCtx,
    registry: &Arc<Registry>,
    server: usize,
) -> Result<(), AuthFailure> {
    let client = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
    let result = registry.servers[server].auth.authenticate(session.req_header(), client).await;
    match result {
        Ok(identity) => {
            registry.servers[server].metrics.auth_ok.inc();
            ctx.identity = Some(identity);
            Ok(())
        }
        Err(failure) => {
            record_auth(registry, server, failure.reason());
            Err(failure)
        }
    }
}

fn record_auth(registry: &Registry, server: usize, result: &str) {
    let server = &registry.servers[server];
    Metrics::global().auth_outcomes.with_label_values(&[&server.name, server.auth.mode(), result]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_key_parameter_joins_the_query_and_replaces_a_client_one() {
        let t = |uri: &str| {
            with_query_param(&uri.parse().unwrap(), "api_key", "api_key=s%3Dcret").unwrap().to_string()
        };
        assert_eq!(t("/mcp"), "/mcp?api_key=s%3Dcret");
        assert_eq!(t("/mcp?a=1&b=two%20words"), "/mcp?a=1&b=two%20words&api_key=s%3Dcret");
        assert_eq!(t("/mcp?api_key=attacker&a=1"), "/mcp?a=1&api_key=s%3Dcret");
    }
}
