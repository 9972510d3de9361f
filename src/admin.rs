//! The admin listener: `/healthz`, `/readyz`, `/metrics`, the redacted running `/config`, and
//! `POST /reload`.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::reload::{ReloadOutcome, Reloader};

/// The admin HTTP application.
pub struct AdminApp {
    registry: Arc<ArcSwap<Registry>>,
    reloader: Arc<Reloader>,
}

impl AdminApp {
    /// Serves the reloader's live registry and the process's metrics.
    pub fn new(reloader: Arc<Reloader>) -> Self {
        Self { registry: reloader.registry().clone(), reloader }
    }

    /// `None` when the request may use a protected endpoint, else the 401 to send.
    fn refuse_without_token(&self, authorization: Option<&[u8]>) -> Option<Response<Vec<u8>>> {
        let registry = self.registry.load();
        let token = registry.admin_token.as_ref()?;
        let presented = authorization.and_then(|v| v.strip_prefix(b"Bearer "));
        if presented.is_some_and(|p| constant_time_eq(p, token.expose().as_bytes())) {
            return None;
        }
        Some(reply(
            StatusCode::UNAUTHORIZED,
            "application/json",
            br#"{"error":"admin token required"}"#.to_vec(),
        ))
    }

    async fn reload(&self) -> Response<Vec<u8>> {
        let outcome = self.reloader.reload_async("admin").await;
        let (status, body) = match &outcome {
            ReloadOutcome::Applied { hash } | ReloadOutcome::Unchanged { hash } => {
                (StatusCode::OK, serde_json::json!({"result": outcome.label(), "hash": hash}))
            }
            ReloadOutcome::Invalid(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({"result": "error", "errors": errors.0.iter().map(ToString::to_string).collect::<Vec<_>>()}),
            ),
            ReloadOutcome::NeedsUpgrade(why) => {
                (StatusCode::CONFLICT, serde_json::json!({"result": "needs_upgrade", "error": why}))
            }
        };
        reply(status, "application/json", body.to_string().into_bytes())
    }

    fn config(&self, authorization: Option<&[u8]>) -> Response<Vec<u8>> {
        if let Some(refusal) = self.refuse_without_token(authorization) {
            return refusal;
        }
        let registry = self.registry.load();
        // Secrets serialize as their reference or `[redacted]`, never as their value.
        match serde_json::to_vec_pretty(&*registry.source) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string().into_bytes()),
        }
    }

    fn ready(&self) -> Response<Vec<u8>> {
        let registry = self.registry.load();
        let loaded = registry.loaded_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let replicas: serde_json::Map<String, serde_json::Value> = registry
            .servers
            .iter()
            .map(|s| {
                let health: Vec<_> = s
                    .upstreams
                    .iter()
                    .map(|u| serde_json::json!({"upstream": u.url, "healthy": u.is_healthy()}))
                    .collect();
                (s.name.to_string(), serde_json::Value::from(health))
            })
            .collect();
        let body = serde_json::json!({
            "status": "ready",
            "servers": registry.servers.len(),
            "replicas": replicas,
            "config_hash": registry.hash,
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
        let auth = req.headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
        if req.uri.path() == "/reload" {
            if req.method != http::Method::POST {
                return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", b"use POST\n".to_vec());
            }
            if let Some(refusal) = self.refuse_without_token(auth.as_deref()) {
                return refusal;
            }
            return self.reload().await;
        }
        if req.method != http::Method::GET {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", b"method not allowed\n".to_vec());
        }
        match req.uri.path() {
            "/healthz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => self.ready(),
            "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", Metrics::global().render()),
            "/config" => self.config(auth.as_deref()),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
