//! The admin listener: `/healthz`, `/readyz`, `/metrics` and the redacted running `/config`.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::registry::Registry;

/// The admin HTTP application.
pub struct AdminApp {
    registry: Arc<ArcSwap<Registry>>,
}

impl AdminApp {
    /// Serves the given registry and metrics.
    pub fn new(registry: Arc<ArcSwap<Registry>>) -> Self {
        Self { registry }
    }

    fn config(&self, authorization: Option<&[u8]>) -> Response<Vec<u8>> {
        let registry = self.registry.load();
        if let Some(token) = &registry.admin_token {
            let presented = authorization.and_then(|v| v.strip_prefix(b"Bearer "));
            if !presented.is_some_and(|p| constant_time_eq(p, token.expose().as_bytes())) {
                return reply(
                    StatusCode::UNAUTHORIZED,
                    "application/json",
                    br#"{"error":"admin token required"}"#.to_vec(),
                );
            }
        }
        // Secrets serialize as their reference or `[redacted]`, never as their value.
        match serde_json::to_vec_pretty(&*registry.source) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string().into_bytes()),
        }
    }

    fn ready(&self) -> Response<Vec<u8>> {
        let registry = self.registry.load();
        let loaded = registry.loaded_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let body = serde_json::json!({
            "status": "ready",
            "servers": registry.servers.len(),
            "config_loaded_at": loaded,
        });
        reply(StatusCode::OK, "application/json", body.to_string().into_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, value);
    }
    let len = response.body().len();
    response.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    response.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    response
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", b"method not allowed\n".to_vec());
        }
        match req.uri.path() {
            "/healthz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => self.ready(),
            "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", Metrics::global().render()),
            "/config" => {
                let auth = req.headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
                self.config(auth.as_deref())
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
