//! Active health checks of upstream replicas, in a background service: a TCP connect or an HTTP
//! GET per replica and interval. A replica is ejected after `unhealthy_threshold` failures in a
//! row (it gets no new requests or sessions) and readmitted after `healthy_threshold` successes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::HealthCheckKind;
use crate::metrics::Metrics;
use crate::registry::{HealthCheck, Registry};
use crate::upstream::Upstream;

/// How often the service looks for due probes.
const TICK: Duration = Duration::from_millis(100);

/// Probes the replicas of every server with a `health_check`.
pub struct HealthChecker {
    registry: Arc<ArcSwap<Registry>>,
}

impl HealthChecker {
    /// Checks whatever registry is live at each tick.
    pub fn new(registry: Arc<ArcSwap<Registry>>) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Next probe time per replica, keyed by the replica's allocation (a reload brings new ones).
        let mut due: std::collections::HashMap<usize, Instant> = std::collections::HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(TICK) => {}
            }
            let registry = self.registry.load_full();
            let now = Instant::now();
            let mut probes = Vec::new();
            for server in &registry.servers {
                let Some(check) = &server.health else { continue };
                for upstream in &server.upstreams {
                    let slot = Arc::as_ptr(upstream) as usize;
                    if due.get(&slot).is_some_and(|at| *at > now) {
                        continue;
                    }
                    due.insert(slot, now + check.interval);
                    probes.push(probe_and_record(server.name.clone(), upstream.clone(), check.clone()));
                }
            }
            futures_util::future::join_all(probes).await;
            due.retain(|slot, _| {
                registry.servers.iter().flat_map(|s| &s.upstreams).any(|u| Arc::as_ptr(u) as usize == *slot)
            });
        }
    }
}

async fn probe_and_record(server: Arc<str>, upstream: Arc<Upstream>, check: HealthCheck) {
    let ok = tokio::time::timeout(check.timeout, probe(&upstream, &check)).await.unwrap_or(false);
    if let Some(now_healthy) = upstream.record_probe(ok, check.healthy_threshold, check.unhealthy_threshold) {
        if now_healthy {
            tracing::info!(server = %server, upstream = %upstream.url, "replica healthy again, readmitted");
        } else {
            tracing::warn!(server = %server, upstream = %upstream.url, "replica failed its health checks, ejected");
        }
    }
    Metrics::global()
        .upstream_healthy
        .with_label_values(&[&*server, upstream.url.as_str()])
        .set(i64::from(upstream.is_healthy()));
}

/// One probe: TCP connect, or for `http` on a plain-http upstream, `GET <path>` answered below 500.
async fn probe(upstream: &Upstream, check: &HealthCheck) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(upstream.addr()).await else { return false };
    if check.kind == HealthCheckKind::Tcp || upstream.tls {
        return true;
    }
    let host = upstream.host_header.to_str().unwrap_or_default();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: portcullis-health\r\nConnection: close\r\n\r\n",
        check.path
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).await.is_err() {
        return false;
    }
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .is_some_and(|status| status < 500)
}
