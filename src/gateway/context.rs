//! What one request carries from phase to phase.

use std::sync::Arc;
use std::time::Instant;

use crate::app_auth::Resolved;
use crate::drain::InFlight;
use crate::error_body::GatewayError;
use crate::identity::Identity;
use crate::metrics::NO_SERVER;
use crate::registry::{McpServer, Registry};
use crate::routes::RouteMatch;
use crate::sse_endpoint::EndpointRewriter;
use crate::upstream::Upstream;

use super::request_facts::RequestFacts;

/// Per-request state.
pub struct RequestCtx {
    /// When the request arrived.
    pub started: Instant,
    /// What the phases read from the client's header fields.
    pub facts: RequestFacts,
    /// The registry snapshot this request runs on, start to end.
    pub registry: Option<Arc<Registry>>,
    /// The matched route.
    pub route: Option<RouteMatch>,
    /// Who the caller is, once agent authentication has run.
    pub identity: Option<Identity>,
    /// The request's `Origin` passed the check: responses carry CORS headers.
    pub cors: bool,
    /// The upstream request target (path and query), computed once.
    pub target: Option<http::Uri>,
    /// The client accepts `text/event-stream`, so the response may be a long-lived stream.
    pub stream_capable: bool,
    /// Replicas tried so far, a bit each.
    pub tried: u64,
    /// The replica the request's MCP session lives on (from a wrapped session id).
    pub pinned: Option<usize>,
    /// The session id the replica issued, sent upstream in place of the wrapped one.
    pub session_original: Option<http::HeaderValue>,
    /// The replica of the current attempt.
    pub upstream: Option<Arc<Upstream>>,
    /// When the request header went upstream.
    pub upstream_sent_at: Option<Instant>,
    /// The upstream's response header arrived.
    pub upstream_responded: bool,
    /// The response is an event stream (counted in the active-streams gauge).
    pub is_stream: bool,
    /// Rewrites the legacy SSE `endpoint` event, on legacy SSE responses.
    pub rewriter: Option<EndpointRewriter>,
    /// The error the gateway answered with, if it answered itself.
    pub error: Option<GatewayError>,
    /// Outbound credentials resolved in `request_filter`, inserted on every attempt.
    pub credentials: Option<Resolved>,
    /// A body the gateway sends instead of the upstream's (an upstream 401 to its credential).
    pub replacement_body: Option<bytes::Bytes>,
    /// The request body, when the HTTP/1 driver read it whole before sending it upstream (error
    /// answers find the JSON-RPC id in it).
    pub request_body: Option<bytes::Bytes>,
    /// Counts the request as in flight until the context is dropped (a graceful stop waits for it).
    _in_flight: InFlight,
}

impl RequestCtx {
    /// A fresh context.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            facts: RequestFacts::default(),
            registry: None,
            route: None,
            identity: None,
            cors: false,
            target: None,
            stream_capable: false,
            tried: 0,
            pinned: None,
            session_original: None,
            upstream: None,
            upstream_sent_at: None,
            upstream_responded: false,
            is_stream: false,
            rewriter: None,
            error: None,
            credentials: None,
            replacement_body: None,
            request_body: None,
            _in_flight: InFlight::enter(),
        }
    }

    /// The matched server.
    pub fn server(&self) -> Option<&McpServer> {
        Some(&self.registry.as_ref()?.servers[self.route?.server])
    }

    /// The matched server's name, or the label for none.
    pub fn server_name(&self) -> &str {
        self.server().map_or(NO_SERVER, |s| &s.name)
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
