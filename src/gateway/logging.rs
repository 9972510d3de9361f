//! `logging`: metrics and one access-log line per request.

use pingora::proxy::Session;
use pingora::Error;

use super::RequestCtx;
use crate::metrics::Metrics;

/// Records the finished request.
pub fn finish(session: &Session, e: Option<&Error>, ctx: &mut RequestCtx) {
    let status = session
        .response_written()
        .map(|r| r.status)
        .or_else(|| ctx.error.as_ref().and_then(|g| http::StatusCode::from_u16(g.status()).ok()));
    let status_label = status.as_ref().map_or("0", http::StatusCode::as_str);
    let server = ctx.server_name();
    let elapsed = ctx.started.elapsed();
    match ctx.server() {
        Some(s) => {
            s.metrics.count_request(status_label);
            s.metrics.request_duration.observe(elapsed.as_secs_f64());
            if ctx.is_stream {
                s.metrics.active_streams.dec();
            }
        }
        None => {
            let metrics = Metrics::global();
            metrics.requests.with_label_values(&[server, status_label]).inc();
            metrics.request_duration.with_label_values(&[server]).observe(elapsed.as_secs_f64());
        }
    }
    if let Some(upstream) = &ctx.upstream {
        upstream.track(false);
    }

    let req = session.req_header();
    // The fields are evaluated only when access lines are on.
    tracing::info!(
        target: "portcullis::access",
        server,
        method = %req.method,
        path = req.uri.path(),
        status = status_label,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        upstream = ctx.upstream.as_ref().map(|u| tracing::field::display(u.addr())),
        bytes_sent = session.body_bytes_sent(),
        subject = ctx.identity.as_ref().map(|i| i.subject()),
        identity = ctx.identity.as_ref().map(|i| i.source.as_str()),
        error = ctx.error.as_ref().map(|g| g.reason()).or_else(|| e.map(|e| e.etype().as_str())),
    );
}
