//! Prometheus metric families, registered once per process and served by the admin listener.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets in seconds, from 100 µs (a cache hit) to 60 s (a slow tool call).
const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0, 60.0];

/// Label used for requests that matched no server.
pub const NO_SERVER: &str = "none";

/// All metric families of the gateway.
pub struct Metrics {
    registry: Registry,
    /// Requests by server and HTTP status.
    pub requests: IntCounterVec,
    /// Whole-request latency by server (until the last byte was sent, streams included).
    pub request_duration: HistogramVec,
    /// Time from sending the request upstream to its response header, by server.
    pub upstream_duration: HistogramVec,
    /// Upstream failures by server and kind (`connect`, `timeout`, `closed`, `reset`, `protocol`).
    pub upstream_errors: IntCounterVec,
    /// Upstream attempts made again, by server and reason (`connect_failed`: another replica or
    /// connection after a failed connect; `idempotent_resend`: an idempotent request resent after
    /// a reused connection closed before answering).
    pub upstream_retries: IntCounterVec,
    /// Event streams open right now, by server.
    pub active_streams: IntGaugeVec,
    /// Agent authentication outcomes by server, mode and result (`ok` or the refusal reason).
    pub auth_outcomes: IntCounterVec,
    /// JWKS fetches by provider and result.
    pub jwks_fetches: IntCounterVec,
    /// JWKS fetch latency by provider.
    pub jwks_fetch_duration: HistogramVec,
    /// Outbound token cache lookups by credential source and result (`hit`, `miss`, `failing`).
    pub token_cache: IntCounterVec,
    /// Token endpoint requests by credential source and result.
    pub token_fetches: IntCounterVec,
    /// Token endpoint latency by credential source.
    pub token_fetch_duration: HistogramVec,
    /// Config reloads by result (`ok`, `unchanged`, `error`, `needs_upgrade`).
    pub config_reloads: IntCounterVec,
    /// 1 for the running config's hash.
    pub config_info: IntGaugeVec,
    /// When the running config was loaded (Unix seconds).
    pub config_loaded_at: prometheus::Gauge,
    /// 1 when a replica passes its health checks, by server and upstream.
    pub upstream_healthy: IntGaugeVec,
    /// Inbound header fields not forwarded because their name holds `_`, by server.
    pub underscore_headers_dropped: IntCounterVec,
    /// Upstream 401/403 challenges the gateway answered for itself, by server and the reason it
    /// gave the client (`upstream_requires_credentials`, `upstream_rejected_credential`).
    pub upstream_challenges: IntCounterVec,
}

static GLOBAL: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();

impl Metrics {
    /// The process's metrics, registered on first use.
    pub fn global() -> &'static Metrics {
        // Registering fixed, distinct families on a fresh registry cannot fail.
        GLOBAL.get_or_init(|| Metrics::new().expect("metric families register on a fresh registry"))
    }

    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("portcullis".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Requests handled, by server and status"),
            &["server", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Request latency until the response was sent")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["server"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "upstream_response_seconds",
                "Time from the upstream request to its response header",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["server"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new("upstream_errors_total", "Upstream failures, by server and kind"),
            &["server", "kind"],
        )?;
        let upstream_retries = IntCounterVec::new(
            Opts::new("upstream_retries_total", "Upstream attempts made again, by server and reason"),
            &["server", "reason"],
        )?;
        let active_streams = IntGaugeVec::new(
            Opts::new("active_streams", "Event streams currently open, by server"),
            &["server"],
        )?;
        let auth_outcomes = IntCounterVec::new(
            Opts::new("auth_outcomes_total", "Agent authentication outcomes, by server, mode and result"),
            &["server", "mode", "result"],
        )?;
        let jwks_fetches = IntCounterVec::new(
            Opts::new("jwks_fetches_total", "JWKS fetches, by provider and result"),
            &["provider", "result"],
        )?;
        let jwks_fetch_duration = HistogramVec::new(
            HistogramOpts::new("jwks_fetch_seconds", "JWKS fetch latency").buckets(LATENCY_BUCKETS.to_vec()),
            &["provider"],
        )?;
        let token_cache = IntCounterVec::new(
            Opts::new("token_cache_total", "Outbound token cache lookups, by source and result"),
            &["source", "result"],
        )?;
        let token_fetches = IntCounterVec::new(
            Opts::new("token_fetches_total", "Token endpoint requests, by source and result"),
            &["source", "result"],
        )?;
        let token_fetch_duration = HistogramVec::new(
            HistogramOpts::new("token_fetch_seconds", "Token endpoint latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["source"],
        )?;
        let config_reloads =
            IntCounterVec::new(Opts::new("config_reloads_total", "Config reloads, by result"), &["result"])?;
        let config_info =
            IntGaugeVec::new(Opts::new("config_info", "The running config (1), by hash"), &["hash"])?;
        let config_loaded_at =
            prometheus::Gauge::new("config_loaded_timestamp_seconds", "When the running config was loaded")?;
        let upstream_healthy = IntGaugeVec::new(
            Opts::new("upstream_healthy", "1 when a replica passes its health checks"),
            &["server", "upstream"],
        )?;
        let underscore_headers_dropped = IntCounterVec::new(
            Opts::new(
                "underscore_headers_dropped_total",
                "Inbound header fields not forwarded because their name holds '_', by server",
            ),
            &["server"],
        )?;
        let upstream_challenges = IntCounterVec::new(
            Opts::new(
                "upstream_challenges_total",
                "Upstream 401/403 challenges answered by the gateway instead, by server and reason",
            ),
            &["server", "reason"],
        )?;
        registry.register(Box::new(underscore_headers_dropped.clone()))?;
        registry.register(Box::new(upstream_challenges.clone()))?;
        registry.register(Box::new(upstream_healthy.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(config_info.clone()))?;
        registry.register(Box::new(config_loaded_at.clone()))?;
        registry.register(Box::new(token_cache.clone()))?;
        registry.register(Box::new(token_fetches.clone()))?;
        registry.register(Box::new(token_fetch_duration.clone()))?;
        registry.register(Box::new(auth_outcomes.clone()))?;
        registry.register(Box::new(jwks_fetches.clone()))?;
        registry.register(Box::new(jwks_fetch_duration.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(upstream_retries.clone()))?;
        registry.register(Box::new(active_streams.clone()))?;
        Ok(Self {
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            upstream_retries,
            active_streams,
            auth_outcomes,
            jwks_fetches,
            jwks_fetch_duration,
            token_cache,
            token_fetches,
            token_fetch_duration,
            config_reloads,
            config_info,
            config_loaded_at,
            upstream_healthy,
            underscore_headers_dropped,
            upstream_challenges,
        })
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        // Encoding into a Vec only fails on a malformed family, which `new` cannot build.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("cannot encode metrics: {e}");
        }
        out
    }
}

/// One server's series that every request touches, looked up once when the config is compiled:
/// the request path then neither hashes label values nor takes the families' locks.
pub struct ServerMetrics {
    server: std::sync::Arc<str>,
    ok: IntCounter,
    /// Whole-request latency.
    pub request_duration: Histogram,
    /// Time from the upstream request to its response header.
    pub upstream_duration: Histogram,
    /// Event streams open right now.
    pub active_streams: IntGauge,
    /// Successful agent authentications.
    pub auth_ok: IntCounter,
    /// Inbound header fields not forwarded because their name holds `_`.
    pub underscore_headers_dropped: IntCounter,
}

impl ServerMetrics {
    /// The series of `server`, whose agent authentication runs in `auth_mode`.
    pub fn new(server: std::sync::Arc<str>, auth_mode: &str) -> Self {
        let m = Metrics::global();
        Self {
            ok: m.requests.with_label_values(&[&server, "200"]),
            request_duration: m.request_duration.with_label_values(&[&server]),
            upstream_duration: m.upstream_duration.with_label_values(&[&server]),
            active_streams: m.active_streams.with_label_values(&[&server]),
            auth_ok: m.auth_outcomes.with_label_values(&[&server, auth_mode, "ok"]),
            underscore_headers_dropped: m.underscore_headers_dropped.with_label_values(&[&server]),
            server,
        }
    }

    /// Counts a finished request by its status (`"200"` is the series kept at hand).
    pub fn count_request(&self, status: &str) {
        if status == "200" {
            self.ok.inc();
        } else {
            Metrics::global().requests.with_label_values(&[&self.server, status]).inc();
        }
    }
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetrics").field("server", &self.server).finish_non_exhaustive()
    }
}
