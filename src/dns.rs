//! Background work for the request path: re-resolving upstream host names (so requests never
//! resolve DNS) and warming the identity providers' key sets at start.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::registry::Registry;

/// Re-resolves every named upstream of the live registry every `dns_refresh`.
pub struct DnsRefresher {
    registry: Arc<ArcSwap<Registry>>,
}

impl DnsRefresher {
    /// Refreshes the upstreams of whatever registry is live at each tick.
    pub fn new(registry: Arc<ArcSwap<Registry>>) -> Self {
        Self { registry }
    }

    async fn refresh_once(&self) {
        let registry = self.registry.load_full();
        for upstream in registry.servers.iter().flat_map(|s| &s.upstreams).filter(|u| u.needs_dns()) {
            match tokio::net::lookup_host((upstream.host.as_str(), upstream.port)).await {
                Ok(addrs) => upstream.set_addrs(addrs.collect()),
                // Keep the last good addresses: a resolver hiccup must not take a server down.
                Err(e) => {
                    tracing::warn!(upstream = %upstream.url, "DNS refresh failed, keeping the last addresses: {e}")
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for DnsRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.registry.load_full().warm_key_sets().await;
        loop {
            let period = self.registry.load().dns_refresh;
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(period) => self.refresh_once().await,
            }
        }
    }
}
