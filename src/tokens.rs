//! The outbound token cache (moka): client-credentials and exchanged tokens.
//!
//! Entries are keyed by a SHA-256 over everything that makes a token what it is (endpoint,
//! client, secret, scopes, audience, resource, and for an exchange the caller's token), so one
//! caller's token can never serve another. An entry never outlives its token: it expires at
//! `expires_in` minus a skew. Concurrent misses share one fetch; a refresh starts in the background
//! once most of a token's life has passed, so callers rarely wait. A failed fetch makes requests
//! for that credential fail fast for a short backoff instead of hammering the endpoint.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use moka::future::Cache;

use crate::config::Secret;
use crate::metrics::Metrics;
use prometheus::IntCounter;

/// A token as a token endpoint returned it.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    /// The token.
    pub access_token: Secret,
    /// `token_type` (e.g. `Bearer`, or `N_A` for an exchanged non-access token).
    pub token_type: Option<String>,
    /// `issued_token_type` (token exchange).
    pub issued_token_type: Option<String>,
    /// `expires_in`, when given.
    pub expires_in: Option<Duration>,
}

/// Why a token could not be had. Never carries a secret.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The endpoint could not be reached or timed out.
    #[error("token endpoint unreachable: {0}")]
    Unreachable(String),
    /// The endpoint refused (`error` code from the body, when any).
    #[error("token endpoint answered {status}: {error}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// OAuth `error` code or a short reason.
        error: String,
    },
    /// The answer was not a usable token response.
    #[error("token endpoint sent an unusable response: {0}")]
    BadResponse(String),
}

/// A cached token.
#[derive(Debug)]
pub struct CachedToken {
    /// The response it came from.
    pub token: TokenResponse,
    expires_at: Instant,
    refresh_after: Instant,
    refreshing: AtomicBool,
    revoked: AtomicBool,
}

/// Timings of the cache, from the config.
#[derive(Debug, Clone, Copy)]
pub struct TokenCacheSettings {
    /// Dropped this long before `expires_in` runs out.
    pub skew: Duration,
    /// Fraction of the lifetime after which a background refresh starts.
    pub refresh_at: f64,
    /// Lifetime when no `expires_in` is given.
    pub default_ttl: Duration,
    /// Fail-fast window after a failed fetch.
    pub failure_backoff: Duration,
}

/// The process-wide token cache; it outlives config reloads, and its keys make unchanged
/// credentials keep their tokens.
pub struct TokenCache {
    tokens: Cache<[u8; 32], Arc<CachedToken>>,
    failures: moka::sync::Cache<[u8; 32], (Instant, TokenError)>,
}

struct UntilExpiry;

impl moka::Expiry<[u8; 32], Arc<CachedToken>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<CachedToken>,
        now: Instant,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(now))
    }

    // A refresh replaces the entry: the new token's expiry applies, not the old one's (moka's
    // default keeps the old).
    fn expire_after_update(
        &self,
        _key: &[u8; 32],
        value: &Arc<CachedToken>,
        now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(now))
    }
}

static GLOBAL: OnceLock<TokenCache> = OnceLock::new();

impl TokenCache {
    /// The process's cache (capacity fixed by the first config loaded).
    pub fn global(capacity: u64) -> &'static TokenCache {
        GLOBAL.get_or_init(|| TokenCache::new(capacity))
    }

    /// A fresh cache holding up to `capacity` tokens.
    pub fn new(capacity: u64) -> Self {
        Self {
            tokens: Cache::builder().max_capacity(capacity).expire_after(UntilExpiry).build(),
            failures: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// The token under `key`, fetching it with `fetch` on a miss (one fetch for all concurrent
    /// callers). `source` names the credential and counts its lookups.
    pub async fn get<F, Fut>(
        &'static self,
        key: [u8; 32],
        source: &SourceMetrics,
        settings: TokenCacheSettings,
        fetch: F,
    ) -> Result<Arc<CachedToken>, TokenError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<TokenResponse, TokenError>> + Send + 'static,
    {
        if let Some(hit) = self.tokens.get(&key).await {
            source.hit.inc();
            if Instant::now() >= hit.refresh_after && !hit.refreshing.swap(true, Ordering::AcqRel) {
                self.refresh_in_background(key, source.name.clone(), settings, hit.clone(), fetch);
            }
            return Ok(hit);
        }
        if let Some((at, error)) = self.failures.get(&key) {
            if at.elapsed() < settings.failure_backoff {
                source.failing.inc();
                return Err(error);
            }
        }
        source.miss.inc();
        let source_for_fetch = source.name.clone();
        let result = self
            .tokens
            .try_get_with(key, async move {
                let response = timed_fetch(&source_for_fetch, fetch).await?;
                Ok::<_, TokenError>(Arc::new(CachedToken::new(response, settings)))
            })
            .await;
        match result {
            Ok(token) => {
                self.failures.invalidate(&key);
                Ok(token)
            }
            Err(error) => {
                let error = (*error).clone();
                self.failures.insert(key, (Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    fn refresh_in_background<F, Fut>(
        &'static self,
        key: [u8; 32],
        source: Arc<str>,
        settings: TokenCacheSettings,
        current: Arc<CachedToken>,
        fetch: F,
    ) where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<TokenResponse, TokenError>> + Send + 'static,
    {
        tokio::spawn(async move {
            match timed_fetch(&source, fetch).await {
                Ok(response) => self.tokens.insert(key, Arc::new(CachedToken::new(response, settings))).await,
                Err(error) => {
                    // The current token stays until it expires; the next request past
                    // `refresh_after` tries again.
                    tracing::warn!(source = %source, "token refresh failed: {error}");
                    current.refreshing.store(false, Ordering::Release);
                }
            }
        });
    }

    /// Drops a token the upstream refused: it is marked so that no holder uses it again, and
    /// removed so that the next request fetches a new one.
    pub async fn invalidate(&self, key: &[u8; 32], token: &CachedToken) {
        token.revoked.store(true, Ordering::Relaxed);
        self.tokens.invalidate(key).await;
    }
}

/// A credential source's name and its token-cache lookup counters, resolved once when the
/// config compiles: a lookup on the request path neither hashes labels nor takes the metric
/// family's lock.
#[derive(Clone)]
pub struct SourceMetrics {
    name: Arc<str>,
    hit: IntCounter,
    miss: IntCounter,
    failing: IntCounter,
}

impl SourceMetrics {
    /// The counters of the source called `name` (`<server>/app_auth` or `<server>/<header>`).
    pub fn new(name: Arc<str>) -> Self {
        let lookups = &Metrics::global().token_cache;
        Self {
            hit: lookups.with_label_values(&[&*name, "hit"]),
            miss: lookups.with_label_values(&[&*name, "miss"]),
            failing: lookups.with_label_values(&[&*name, "failing"]),
            name,
        }
    }

    /// Counts a lookup answered from a token the source kept from an earlier lookup.
    pub fn count_hit(&self) {
        self.hit.inc();
    }
}

async fn timed_fetch<F, Fut>(source: &str, fetch: F) -> Result<TokenResponse, TokenError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<TokenResponse, TokenError>>,
{
    let metrics = Metrics::global();
    let started = Instant::now();
    let result = fetch().await;
    metrics.token_fetch_duration.with_label_values(&[source]).observe(started.elapsed().as_secs_f64());
    metrics.token_fetches.with_label_values(&[source, if result.is_ok() { "ok" } else { "error" }]).inc();
    result
}

impl CachedToken {
    fn new(token: TokenResponse, settings: TokenCacheSettings) -> Self {
        let now = Instant::now();
        let lifetime = token.expires_in.unwrap_or(settings.default_ttl);
        // Never outlive the token; a token shorter-lived than twice the skew keeps half its life.
        let usable = lifetime.saturating_sub(settings.skew.min(lifetime / 2));
        let refresh_after = now + usable.mul_f64(settings.refresh_at.clamp(0.0, 1.0));
        Self {
            token,
            expires_at: now + usable,
            refresh_after,
            refreshing: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
        }
    }

    /// True while the token may be used without asking the cache again: its refresh is not yet
    /// due (so it has not expired either) and no upstream has refused it.
    pub fn fresh(&self, now: Instant) -> bool {
        now < self.refresh_after && !self.revoked.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn settings() -> TokenCacheSettings {
        TokenCacheSettings {
            skew: Duration::from_secs(30),
            refresh_at: 0.8,
            default_ttl: Duration::from_secs(300),
            failure_backoff: Duration::from_secs(1),
        }
    }

    fn response(token: &str, expires_in: u64) -> TokenResponse {
        TokenResponse {
            access_token: Secret::new(token.into()),
            token_type: Some("Bearer".into()),
            issued_token_type: None,
            expires_in: Some(Duration::from_secs(expires_in)),
        }
    }

    #[test]
    fn an_entry_never_outlives_its_token() {
        let t = CachedToken::new(response("a", 3600), settings());
        let life = t.expires_at - Instant::now();
        assert!(life <= Duration::from_secs(3570) && life > Duration::from_secs(3560));
        let short = CachedToken::new(response("b", 10), settings());
        assert!(
            short.expires_at - Instant::now() <= Duration::from_secs(5),
            "a 10 s token keeps at most half"
        );
        assert!(short.refresh_after < short.expires_at);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_fetch_and_failures_fail_fast() {
        let cache: &'static TokenCache = Box::leak(Box::new(TokenCache::new(100)));
        let calls = Arc::new(AtomicUsize::new(0));
        let source = SourceMetrics::new("test".into());
        let tasks = (0..50).map(|_| {
            let calls = calls.clone();
            let source = source.clone();
            tokio::spawn(async move {
                cache
                    .get([1; 32], &source, settings(), move || {
                        let calls = calls.clone();
                        async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(response("shared", 3600))
                        }
                    })
                    .await
            })
        });
        for task in futures_util::future::join_all(tasks).await {
            assert_eq!(task.unwrap().unwrap().token.access_token.expose(), "shared");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let failing = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            let failing = failing.clone();
            let result = cache
                .get([2; 32], &source, settings(), move || {
                    let failing = failing.clone();
                    async move {
                        failing.fetch_add(1, Ordering::SeqCst);
                        Err(TokenError::Unreachable("down".into()))
                    }
                })
                .await;
            assert!(result.is_err());
        }
        assert_eq!(failing.load(Ordering::SeqCst), 1, "inside the backoff no new fetch is made");
    }
}
