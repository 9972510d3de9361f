//! The Pingora `ProxyHttp` implementation. Each phase lives in its own file and stays thin:
//! it reads the request context and calls the modules that do the work. Every `ProxyHttp`
//! method below is one call into its phase's file. `driver.rs` runs the phases for HTTP/1
//! connections by calling those same functions directly (sparing `async_trait`'s boxed future
//! per phase per request), with `http1/upstream/request_head.rs` writing the upstream request head
//! straight from the fields `upstream.rs` decides and `http1/upstream/response.rs` reading the upstream's
//! responses (pingora-proxy's `HttpProxy` runs them through the trait for HTTP/2).
//!
//! ```text
//! request_filter           request.rs   snapshot the registry, own endpoints (local.rs), refuse bad
//!                                       paths, match the route, check the origin, authenticate
//! upstream_peer            upstream.rs  pick the replica and its prepared peer (address resolved and
//!                                       peer built when the config loads, not per request)
//! upstream_request_filter  upstream.rs  rewrite the target, set Host, strip restricted headers
//!                                       (the fields, into a header map or the HTTP/1 head)
//! response filters         response.rs  pass through; CORS; count streams; legacy endpoint
//! fail_to_proxy            errors.rs    JSON (JSON-RPC for MCP POSTs) 502/504 bodies
//! logging                  logging.rs   metrics and one access-log line
//! ```

mod context;
mod driver;
mod errors;
mod local;
mod logging;
mod request;
mod request_facts;
mod response;
mod upstream;

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result, RetryType};

use crate::http1::framing::{FramingFields, TransferCoding};

pub use context::RequestCtx;
pub use driver::{GatewayApp, BUFFERED_BODY_LIMIT};

/// The Streamable HTTP session header.
pub const MCP_SESSION_ID: &str = "mcp-session-id";
/// The legacy HTTP+SSE session query parameter.
pub const LEGACY_SESSION_PARAM: &str = "sessionId";

use crate::registry::Registry;

/// The gateway: the live registry every phase reads (one snapshot per request).
pub struct Gateway {
    registry: Arc<ArcSwap<Registry>>,
}

impl Gateway {
    /// A gateway serving whatever registry `registry` holds at each request's start.
    pub fn new(registry: Arc<ArcSwap<Registry>>) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // The HTTP/1 driver gathers these while parsing; pingora-proxy's requests are read here.
        ctx.facts = request_facts::RequestFacts::of(&session.req_header().headers);
        let request = session.req_header();
        // What the HTTP/1 driver's parser refuses or does for itself, done here for
        // pingora-proxy's HTTP/1 path (HTTP/2 has `:authority`, not `Host`).
        if request.version == http::Version::HTTP_11 && ctx.facts.host.is_none() {
            errors::respond(session, ctx, crate::error_body::GatewayError::BadRequest, None).await?;
            return Ok(true);
        }
        if crate::drain::is_draining() {
            // Answer, then close: clients move to the new process between requests.
            session.set_keepalive(None);
        }
        if request::route(self, session, ctx).await? {
            return Ok(true);
        }
        // The request goes upstream: a client waiting for permission to send its body gets it
        // from the gateway, as on the HTTP/1 driver, and `Expect` is not forwarded.
        if ctx.facts.expects_continue {
            session.as_downstream_mut().write_continue_response().await?;
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        upstream::peer_with_timeouts(ctx)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        upstream::connect_failed(ctx, e)
    }

    /// The same resend rule as the HTTP/1 driver's (`upstream::may_resend`), in place of
    /// Pingora's default (which agrees for idempotency, but may resend a streamed body).
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let body_in_hand = !session.as_ref().retry_buffer_truncated();
        // Pingora leaves an error it would retry on a reused connection undecided (`ReusedOnly`).
        let retryable = !matches!(e.retry, RetryType::Decided(false));
        let resend =
            retryable && upstream::may_resend(ctx, &session.req_header().method, client_reused, body_in_hand);
        e.set_retry(resend);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream::prepare_request(session.req_header(), upstream_request, ctx)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        refuse_ambiguous_framing(upstream_response)?;
        response::headers(session, upstream_response, ctx);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response::downstream_headers(session, upstream_response, ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        response::body(body, end_of_stream, ctx);
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        errors::fail_to_proxy(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        logging::finish(session, e, ctx);
    }
}

/// On pingora-proxy's path, Pingora's HTTP/1 client reads the upstream's framing leniently (the
/// last `Transfer-Encoding` field wins, a `Content-Length` list is read until the close): the
/// fields the gateway's own engine refuses are refused here too, a 502 whose upstream connection
/// is not reused, and a list of equal lengths goes on as one value. (The chunk lines themselves
/// are Pingora's to read on this path.)
fn refuse_ambiguous_framing(response: &mut ResponseHeader) -> Result<()> {
    let framing = FramingFields::of(&response.headers);
    let length = framing.content_length();
    if framing.transfer_coding() == TransferCoding::Ambiguous || length.is_err() {
        return Err(Error::explain(
            ErrorType::InvalidHTTPHeader,
            "upstream framing that could be read two ways",
        )
        .into_up());
    }
    if let (true, Ok(Some(length))) = (framing.length_repeated(), length) {
        response.insert_header(http::header::CONTENT_LENGTH, length)?;
    }
    Ok(())
}
