//! The runtime registry: the compiled, immutable view of a config that the hot path reads.
//!
//! A [`Registry`] is built once per config load by [`Registry::compile`], shared through an
//! `ArcSwap`, and snapshotted once per request, so a reload never changes a request mid-way.

mod auth;
mod compile;
mod fetch_url;
mod load;
mod outbound;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::affinity::SessionKey;
use crate::agent_auth::{AgentAuth, JwtProvider, ProtectedResource};
use crate::app_auth::Outbound;
use crate::config::{Config, ConfigError};
use crate::config::{HealthCheckKind, LoadBalancing};
use crate::headers::HeaderPolicy;
use crate::metrics::ServerMetrics;
use crate::origin::OriginPolicy;
use crate::routes::{RouteMatch, RouteTable};
use crate::tokens::TokenCacheSettings;
use crate::upstream::Upstream;

/// A listener as compiled: the socket address and, for TLS, the certificate files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Address to bind.
    pub addr: SocketAddr,
    /// `(cert, key)` PEM paths when the listener serves TLS.
    pub tls: Option<(String, String)>,
}

/// One MCP server as the hot path sees it.
pub struct McpServer {
    /// The configured name (a metric label and a log field).
    pub name: Arc<str>,
    /// The gateway path prefix (`""` for a server mounted at `/`).
    pub prefix: String,
    /// Strip the matched prefix before appending the rest of the path to the upstream's path.
    pub strip_prefix: bool,
    /// Replicas; never empty, all with the same path.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Read timeout for requests that cannot receive an event stream.
    pub read_timeout: Duration,
    /// Read timeout for requests that may receive an event stream.
    pub stream_idle_timeout: Duration,
    /// Who may reach the server.
    pub auth: AgentAuth,
    /// What credentials the upstream receives.
    pub outbound: Outbound,
    /// Headers stripped before forwarding.
    pub headers: HeaderPolicy,
    /// Browser origins allowed.
    pub origins: OriginPolicy,
    /// Resource metadata and challenges for the prefix (`[0]`) and alias (`[1]`) routes, in
    /// the modes that check a JWT.
    pub resources: Option<Box<[ProtectedResource; 2]>>,
    /// How requests without a session pick a replica.
    pub balance: LoadBalancing,
    /// Active health checks, if configured.
    pub health: Option<HealthCheck>,
    next: AtomicUsize,
    /// The series every request of this server updates.
    pub metrics: ServerMetrics,
}

/// A server's health-check settings, compiled.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// TCP connect or HTTP GET.
    pub kind: HealthCheckKind,
    /// Path of HTTP probes.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// Timeout of one probe.
    pub timeout: Duration,
    /// Successes in a row to come back.
    pub healthy_threshold: u32,
    /// Failures in a row to be ejected.
    pub unhealthy_threshold: u32,
}

impl McpServer {
    /// The protected resource a route match stands for.
    pub fn resource(&self, route: RouteMatch) -> Option<&ProtectedResource> {
        self.resources.as_ref().map(|r| &r[usize::from(route.via_alias)])
    }
}

impl McpServer {
    /// The replica for a request without a session, among those not `tried` yet (a bit per
    /// replica): healthy ones first, by the server's balancing; when none is healthy, any untried
    /// one (a health check can be wrong; the connect will tell).
    pub fn choose(&self, tried: u64) -> Option<usize> {
        let n = self.upstreams.len();
        let untried = |i: &usize| tried & (1u64 << i) == 0;
        let healthy = |i: &usize| self.upstreams[*i].is_healthy();
        match self.balance {
            LoadBalancing::RoundRobin => {
                let start = if n == 1 { 0 } else { self.next.fetch_add(1, Ordering::Relaxed) };
                let mut order = (0..n).map(|k| (start + k) % n);
                order.clone().filter(untried).find(healthy).or_else(|| order.find(untried))
            }
            LoadBalancing::LeastConnections => {
                let least = |pool: &mut dyn Iterator<Item = usize>| {
                    pool.min_by_key(|i| self.upstreams[*i].in_flight())
                };
                least(&mut (0..n).filter(untried).filter(healthy))
                    .or_else(|| least(&mut (0..n).filter(untried)))
            }
        }
    }

    /// The replica whose stable id is `id`.
    pub fn replica_by_id(&self, id: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| u.id == id)
    }

    /// True when requests may land on different replicas (session ids are then wrapped).
    pub fn is_pooled(&self) -> bool {
        self.upstreams.len() > 1
    }

    /// The upstream request target for a request path (and query) that matched this server at
    /// `prefix_len` bytes.
    pub fn upstream_target(&self, path: &str, query: Option<&str>, prefix_len: usize) -> String {
        let rest = if self.strip_prefix { &path[prefix_len..] } else { path };
        let base = &self.upstreams[0].base_path;
        let mut target =
            String::with_capacity(base.len() + rest.len() + 1 + query.map_or(0, |q| q.len() + 1));
        target.push_str(base);
        if base.ends_with('/') && rest.starts_with('/') {
            target.push_str(&rest[1..]);
        } else {
            target.push_str(rest);
        }
        if target.is_empty() {
            target.push('/');
        }
        if let Some(query) = query {
            target.push('?');
            target.push_str(query);
        }
        target
    }
}

/// The compiled configuration.
pub struct Registry {
    /// The config it was compiled from (shown, redacted, by the admin `/config`).
    pub source: Arc<Config>,
    /// Gateway listeners.
    pub listeners: Vec<Listener>,
    /// Admin listener address.
    pub admin_addr: SocketAddr,
    /// Token required by admin `/config`, when set.
    pub admin_token: Option<crate::config::Secret>,
    /// Path of `public_url` without a trailing `/` (`""` at the root).
    pub public_base_path: String,
    /// Host of `public_url` (always accepted as `Host`/`Origin` on loopback listeners).
    pub public_host: String,
    /// Identity providers by name.
    pub providers: BTreeMap<String, Arc<JwtProvider>>,
    /// Resource metadata paths → (server, via alias).
    pub metadata_paths: HashMap<String, (usize, bool)>,
    /// Outbound token cache timings.
    pub token_settings: TokenCacheSettings,
    /// Capacity of the process-wide token cache (fixed by the first config loaded).
    pub token_capacity: u64,
    /// Authenticates the session ids of pooled servers.
    pub session_key: SessionKey,
    /// Things that are allowed but worth a look (printed by `check`, logged by `run`).
    pub warnings: Vec<ConfigError>,
    /// Interval of background DNS refresh.
    pub dns_refresh: Duration,
    /// The engine of HTTP/1 connections accepted while this registry is live.
    pub http1_engine: crate::config::Http1Engine,
    /// Servers, indexed by [`RouteMatch::server`].
    pub servers: Vec<McpServer>,
    routes: RouteTable,
    /// When this registry was compiled.
    pub loaded_at: SystemTime,
    /// Digest of the config file and the files it refers to (shown by `/readyz` and a metric).
    pub hash: String,
    /// The config file and the files it refers to (watched for changes).
    pub watched: Vec<std::path::PathBuf>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("listeners", &self.listeners)
            .field("servers", &self.servers.iter().map(|s| &s.name).collect::<Vec<_>>())
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The resource metadata document published at `path`, if any.
    pub fn metadata(&self, path: &str) -> Option<&ProtectedResource> {
        let &(server, via_alias) = self.metadata_paths.get(path)?;
        self.servers[server].resources.as_ref().map(|r| &r[usize::from(via_alias)])
    }

    /// The server and match for a request path.
    pub fn route(&self, path: &str) -> Option<(RouteMatch, &McpServer)> {
        let m = self.routes.find(path)?;
        Some((m, &self.servers[m.server]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(upstream: &str, strip_prefix: bool) -> McpServer {
        McpServer {
            name: "s".into(),
            prefix: "/gh".into(),
            strip_prefix,
            upstreams: vec![Arc::new(Upstream::from_url(upstream, None, true).unwrap())],
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            stream_idle_timeout: Duration::from_secs(1),
            auth: AgentAuth::None,
            outbound: Outbound::default(),
            headers: HeaderPolicy::new(&[], &[]).unwrap(),
            origins: OriginPolicy::default(),
            resources: None,
            balance: LoadBalancing::RoundRobin,
            health: None,
            next: AtomicUsize::new(0),
            metrics: ServerMetrics::new("s".into(), "none"),
        }
    }

    #[test]
    fn the_prefix_is_mapped_onto_the_upstream_path() {
        let s = server("http://127.0.0.1:1/mcp", true);
        assert_eq!(s.upstream_target("/gh", None, 3), "/mcp");
        assert_eq!(s.upstream_target("/gh/sse", Some("a=1"), 3), "/mcp/sse?a=1");
        let root = server("http://127.0.0.1:1/", true);
        assert_eq!(root.upstream_target("/gh", None, 3), "/");
        assert_eq!(root.upstream_target("/gh/message", Some("sessionId=x"), 3), "/message?sessionId=x");
        let slash = server("http://127.0.0.1:1/api/", true);
        assert_eq!(slash.upstream_target("/gh/x", None, 3), "/api/x");
    }

    #[test]
    fn without_stripping_the_whole_path_is_kept() {
        let s = server("http://127.0.0.1:1", false);
        assert_eq!(s.upstream_target("/gh/mcp", None, 3), "/gh/mcp");
    }

    fn pool(balance: LoadBalancing) -> McpServer {
        let mut s = server("http://127.0.0.1:1", true);
        s.upstreams.push(Arc::new(Upstream::from_url("http://127.0.0.1:2", None, true).unwrap()));
        s.upstreams.push(Arc::new(Upstream::from_url("http://127.0.0.1:3", None, true).unwrap()));
        s.balance = balance;
        s
    }

    #[test]
    fn round_robin_rotates_over_healthy_replicas_and_skips_tried_ones() {
        let s = pool(LoadBalancing::RoundRobin);
        let picks: Vec<usize> = (0..6).map(|_| s.choose(0).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        for _ in 0..2 {
            s.upstreams[1].record_probe(false, 1, 1);
        }
        assert!((0..6).all(|_| s.choose(0) != Some(1)), "an unhealthy replica gets no new requests");
        assert_eq!(s.choose(0b101), Some(1), "with the healthy ones tried, fail open");
        assert_eq!(s.choose(0b111), None);
    }

    #[test]
    fn least_connections_prefers_the_idlest_replica() {
        let s = pool(LoadBalancing::LeastConnections);
        s.upstreams[0].track(true);
        s.upstreams[1].track(true);
        assert_eq!(s.choose(0), Some(2));
        s.upstreams[2].track(true);
        s.upstreams[2].track(true);
        assert_eq!(s.choose(0), Some(0));
    }
}
