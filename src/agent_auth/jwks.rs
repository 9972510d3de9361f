//! Signing keys: parsed from a JWKS document, and kept fresh from a URL.
//!
//! A remote key set is fetched once at a time (single-flight), cached for the response's
//! `max-age` within configured bounds, refreshed in the background when it ages out, and kept
//! serving while the endpoint is down up to a max-stale bound. An unknown `kid` triggers one shared
//! refetch, then a cooldown during which unknown kids are refused without fetching.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::metrics::Metrics;

/// The most a JWKS response may weigh.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    /// RS* and PS*.
    Rsa,
    /// ES*.
    Ec,
    /// EdDSA.
    Ed,
    /// HS* (never accepted from a JWKS).
    Hmac,
}

impl KeyFamily {
    /// The family an algorithm's keys belong to.
    pub fn of(alg: Algorithm) -> Self {
        match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Self::Rsa,
            Algorithm::ES256 | Algorithm::ES384 => Self::Ec,
            Algorithm::EdDSA => Self::Ed,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Self::Hmac,
        }
    }
}

/// One public key usable for verification.
pub struct SigningKey {
    /// The key's own `alg`, when the JWKS states one; a token must then use exactly it.
    pub alg: Option<Algorithm>,
    /// RSA, EC or Ed (never HMAC).
    pub family: KeyFamily,
    /// The key.
    pub key: DecodingKey,
}

impl SigningKey {
    fn accepts(&self, alg: Algorithm) -> bool {
        self.family == KeyFamily::of(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// A parsed key set.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Vec<Arc<SigningKey>>>,
    all: Vec<Arc<SigningKey>>,
}

/// Why a key set could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    /// Not a JWKS document.
    #[error("not a JWKS document: {0}")]
    Format(String),
    /// A document without a single usable signature key.
    #[error("the JWKS holds no usable signature key for the allowed algorithms")]
    NoUsableKey,
    /// The endpoint could not be fetched.
    #[error("fetching the JWKS failed: {0}")]
    Fetch(String),
}

impl KeySet {
    /// Parses a JWKS document, keeping the asymmetric signature keys the allowed algorithms can
    /// use. Symmetric (`oct`) keys, encryption keys and malformed entries are skipped.
    pub fn parse(document: &serde_json::Value, allowed: &[Algorithm]) -> Result<Self, JwksError> {
        let keys = document
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| JwksError::Format("no \"keys\" array".into()))?;
        let mut set = KeySet::default();
        for value in keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else { continue };
            if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
                continue;
            }
            let family = match jwk.algorithm {
                AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
                AlgorithmParameters::EllipticCurve(_) => KeyFamily::Ec,
                AlgorithmParameters::OctetKeyPair(_) => KeyFamily::Ed,
                AlgorithmParameters::OctetKey(_) => continue,
            };
            let alg = match jwk.common.key_algorithm {
                Some(key_alg) => match key_alg.to_string().parse::<Algorithm>() {
                    Ok(alg) if allowed.contains(&alg) && KeyFamily::of(alg) == family => Some(alg),
                    _ => continue,
                },
                None => None,
            };
            if !allowed.iter().any(|a| KeyFamily::of(*a) == family) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
            let key = Arc::new(SigningKey { alg, family, key });
            if let Some(kid) = jwk.common.key_id {
                set.by_kid.entry(kid).or_default().push(key.clone());
            }
            set.all.push(key);
        }
        if set.all.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(set)
    }

    /// Keys that may have signed a token with this `kid` and `alg`. A token without a `kid`
    /// may match any key of the right type.
    pub fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<Arc<SigningKey>> {
        let pool = match kid {
            Some(kid) => self.by_kid.get(kid).map(Vec::as_slice).unwrap_or_default(),
            None => &self.all,
        };
        pool.iter().filter(|k| k.accepts(alg)).cloned().collect()
    }

    fn kids(&self) -> HashSet<&str> {
        self.by_kid.keys().map(String::as_str).collect()
    }
}

/// Why no key could be found for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLookupError {
    /// No key with that `kid` (and algorithm).
    Unknown,
    /// No keys at all: the JWKS endpoint has not answered and nothing usable is cached.
    Unavailable,
}

/// Cache timings of a remote key set.
#[derive(Debug, Clone)]
pub struct JwksTimings {
    /// Lifetime without `max-age`.
    pub ttl: Duration,
    /// Bounds on `max-age`.
    pub min_ttl: Duration,
    /// Bounds on `max-age`.
    pub max_ttl: Duration,
    /// No refetch for unknown kids this soon after the last attempt.
    pub cooldown: Duration,
    /// How long expired keys keep serving while fetches fail.
    pub max_stale: Duration,
    /// One request's timeout.
    pub fetch_timeout: Duration,
}

struct Fetched {
    keys: Arc<KeySet>,
    fresh_until: Instant,
    usable_until: Instant,
}

/// A key set fetched from a URL and cached.
pub struct RemoteJwks {
    provider: Arc<str>,
    url: String,
    allowed: Vec<Algorithm>,
    timings: JwksTimings,
    client: reqwest::Client,
    current: ArcSwapOption<Fetched>,
    /// Bumped after every fetch attempt; a waiter that sees it moved knows a fetch happened.
    generation: AtomicU64,
    /// Milliseconds since `epoch` of the last attempt (0: never).
    last_attempt_ms: AtomicU64,
    epoch: Instant,
    fetch_lock: tokio::sync::Mutex<()>,
    /// A fetch is running (set and cleared under `fetch_lock`).
    fetching: AtomicBool,
    refresh_in_flight: AtomicBool,
    on_keys_removed: Box<dyn Fn() + Send + Sync>,
}

impl RemoteJwks {
    /// A key set at `url`, not fetched yet. `on_keys_removed` runs when a fetch drops a `kid`
    /// (tokens it verified must be verified again).
    pub fn new(
        provider: Arc<str>,
        url: String,
        allowed: Vec<Algorithm>,
        timings: JwksTimings,
        on_keys_removed: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timings.fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        Self {
            provider,
            url,
            allowed,
            timings,
            client,
            current: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            last_attempt_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            fetch_lock: tokio::sync::Mutex::new(()),
            fetching: AtomicBool::new(false),
            refresh_in_flight: AtomicBool::new(false),
            on_keys_removed,
        }
    }

    /// The keys for a token's `kid` and `alg`, fetching when needed.
    pub async fn lookup(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<Arc<SigningKey>>, KeyLookupError> {
        let seen = self.generation.load(Ordering::Acquire);
        let keys = match self.usable_keys() {
            Some(keys) => keys,
            None => {
                self.refetch(seen).await;
                self.usable_keys().ok_or(KeyLookupError::Unavailable)?
            }
        };
        let found = keys.candidates(kid, alg);
        if !found.is_empty() {
            return Ok(found);
        }
        // Refuse at once only inside the cooldown with no fetch running or finished since we
        // looked; otherwise wait for that fetch (refetch returns when it is done) and look again.
        let nothing_new =
            self.generation.load(Ordering::Acquire) == seen && !self.fetching.load(Ordering::Acquire);
        if nothing_new && self.in_cooldown() {
            return Err(KeyLookupError::Unknown);
        }
        self.refetch(seen).await;
        let found = self.usable_keys().map(|k| k.candidates(kid, alg)).unwrap_or_default();
        if found.is_empty() {
            Err(KeyLookupError::Unknown)
        } else {
            Ok(found)
        }
    }

    /// Fetches now unless a fetch already happened (used to warm the cache at start).
    pub async fn warm(&self) {
        if self.current.load().is_none() {
            self.refetch(self.generation.load(Ordering::Acquire)).await;
        }
    }

    /// Cached keys still allowed to serve; starts a background refresh when they aged out.
    fn usable_keys(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        let current = self.current.load_full()?;
        let now = Instant::now();
        if now >= current.usable_until {
            return None;
        }
        if now >= current.fresh_until && !self.refresh_in_flight.swap(true, Ordering::AcqRel) {
            let this = Arc::clone(self);
            let seen = self.generation.load(Ordering::Acquire);
            tokio::spawn(async move {
                this.refetch(seen).await;
                this.refresh_in_flight.store(false, Ordering::Release);
            });
        }
        Some(current.keys.clone())
    }

    fn now_ms(&self) -> u64 {
        // +1 keeps 0 free to mean "never".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn in_cooldown(&self) -> bool {
        let last = self.last_attempt_ms.load(Ordering::Acquire);
        last != 0 && self.now_ms().saturating_sub(last) < self.timings.cooldown.as_millis() as u64
    }

    /// One fetch shared by everyone who saw generation `seen`: whoever gets the lock after
    /// another fetch finished returns at once.
    async fn refetch(&self, seen: u64) {
        let _guard = self.fetch_lock.lock().await;
        if self.generation.load(Ordering::Acquire) != seen || self.in_cooldown() {
            return;
        }
        self.fetching.store(true, Ordering::Release);
        self.last_attempt_ms.store(self.now_ms(), Ordering::Release);
        let started = Instant::now();
        let result = self.fetch().await;
        let metrics = Metrics::global();
        metrics
            .jwks_fetch_duration
            .with_label_values(&[&self.provider])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok((keys, lifetime)) => {
                metrics.jwks_fetches.with_label_values(&[&self.provider, "ok"]).inc();
                let now = Instant::now();
                let removed =
                    self.current.load().as_ref().is_some_and(|old| !old.keys.kids().is_subset(&keys.kids()));
                self.current.store(Some(Arc::new(Fetched {
                    keys: Arc::new(keys),
                    fresh_until: now + lifetime,
                    usable_until: now + lifetime + self.timings.max_stale,
                })));
                if removed {
                    (self.on_keys_removed)();
                }
                tracing::debug!(provider = %self.provider, "JWKS fetched, fresh for {lifetime:?}");
            }
            Err(e) => {
                metrics.jwks_fetches.with_label_values(&[&self.provider, "error"]).inc();
                tracing::warn!(provider = %self.provider, url = %self.url, "{e}; cached keys (if any) keep serving");
            }
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.fetching.store(false, Ordering::Release);
    }

    async fn fetch(&self) -> Result<(KeySet, Duration), JwksError> {
        let mut response = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json, application/jwk-set+json")
            .send()
            .await
            .map_err(|e| JwksError::Fetch(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(JwksError::Fetch(format!("HTTP {}", response.status())));
        }
        let lifetime = self.lifetime(response.headers().get(reqwest::header::CACHE_CONTROL));
        let mut body = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| JwksError::Fetch(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(JwksError::Fetch(format!("response larger than {MAX_JWKS_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let document: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| JwksError::Format(e.to_string()))?;
        Ok((KeySet::parse(&document, &self.allowed)?, lifetime))
    }

    fn lifetime(&self, cache_control: Option<&reqwest::header::HeaderValue>) -> Duration {
        let t = &self.timings;
        let directive = cache_control.and_then(|v| v.to_str().ok()).map(cache_control_lifetime);
        match directive {
            Some(CacheLifetime::NoStore) => t.min_ttl,
            Some(CacheLifetime::MaxAge(age)) => age.clamp(t.min_ttl, t.max_ttl),
            Some(CacheLifetime::Unspecified) | None => t.ttl.clamp(t.min_ttl, t.max_ttl),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum CacheLifetime {
    MaxAge(Duration),
    NoStore,
    Unspecified,
}

fn cache_control_lifetime(value: &str) -> CacheLifetime {
    let mut lifetime = CacheLifetime::Unspecified;
    for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-store" || directive == "no-cache" {
            return CacheLifetime::NoStore;
        }
        if let Some(secs) =
            directive.strip_prefix("max-age=").and_then(|s| s.trim_matches('"').parse::<u64>().ok())
        {
            lifetime = CacheLifetime::MaxAge(Duration::from_secs(secs));
        }
    }
    lifetime
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!("{}/tests/fixtures/jwt/{name}.jwk.json", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn asymmetric_signature_keys_are_kept_and_the_rest_skipped() {
        let mut enc = fixture("rsa-b");
        enc["use"] = json!("enc");
        enc["kid"] = json!("encryption-key");
        let doc = json!({"keys": [
            fixture("rsa-a"), fixture("ec-p256"), enc,
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {"kty": "nonsense"},
        ]});
        let set = KeySet::parse(&doc, &[Algorithm::RS256, Algorithm::ES256]).unwrap();
        assert_eq!(set.candidates(Some("rsa-a"), Algorithm::RS256).len(), 1);
        assert_eq!(set.candidates(Some("ec-p256"), Algorithm::ES256).len(), 1);
        assert!(
            set.candidates(Some("rsa-a"), Algorithm::ES256).is_empty(),
            "an RSA key never verifies ES256"
        );
        assert!(set.candidates(Some("hmac"), Algorithm::RS256).is_empty());
        assert!(set.candidates(Some("encryption-key"), Algorithm::RS256).is_empty());
        assert_eq!(set.candidates(None, Algorithm::RS256).len(), 1);
    }

    #[test]
    fn a_key_pinned_to_an_algorithm_only_serves_that_algorithm() {
        let mut key = fixture("rsa-a");
        key["alg"] = json!("RS384");
        let set = KeySet::parse(&json!({"keys": [key]}), &[Algorithm::RS256, Algorithm::RS384]).unwrap();
        assert!(set.candidates(Some("rsa-a"), Algorithm::RS256).is_empty());
        assert_eq!(set.candidates(Some("rsa-a"), Algorithm::RS384).len(), 1);
    }

    #[test]
    fn a_document_without_usable_keys_is_an_error() {
        assert_eq!(
            KeySet::parse(&json!({"keys": []}), &[Algorithm::RS256]).err(),
            Some(JwksError::NoUsableKey)
        );
        assert!(matches!(KeySet::parse(&json!({"nope": 1}), &[Algorithm::RS256]), Err(JwksError::Format(_))));
        assert_eq!(
            KeySet::parse(&json!({"keys": [fixture("ec-p256")]}), &[Algorithm::RS256]).err(),
            Some(JwksError::NoUsableKey)
        );
    }

    #[test]
    fn cache_control_sets_the_lifetime() {
        assert_eq!(
            cache_control_lifetime("public, max-age=600"),
            CacheLifetime::MaxAge(Duration::from_secs(600))
        );
        assert_eq!(cache_control_lifetime("no-store"), CacheLifetime::NoStore);
        assert_eq!(cache_control_lifetime("public"), CacheLifetime::Unspecified);
    }
}
