//! JWT access-token verification for one identity provider, with a cache of verified tokens.
//!
//! A token is verified against the provider's keys (chosen by `kid`, never by `jku`, `x5u` or an
//! embedded `jwk`), its exact issuer, `exp` (required) and `nbf`, with the configured leeway; its
//! `aud` must be present. A verified token is remembered until its `exp`, so a repeat costs a fast
//! hash, a lookup and a comparison instead of a signature check.
//!
//! Which audiences are accepted is not the provider's business: a provider serves many servers,
//! and each server accepts only tokens issued for it (see [`super::Audiences`], checked on every
//! request, cached token or not).

use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use moka::sync::Cache;
use rustc_hash::FxBuildHasher;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::jwks::{KeyLookupError, KeySet, RemoteJwks};
use crate::config::Secret;

/// A token that passed verification, with what later phases need from it.
pub struct VerifiedToken {
    /// SHA-256 of `raw`, computed the first time something asks for it.
    digest: OnceLock<[u8; 32]>,
    claims: Map<String, Value>,
    scopes: Vec<String>,
    expires_at: SystemTime,
    raw: Secret,
}

impl std::fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("sub", &self.subject())
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl VerifiedToken {
    /// The `sub` claim.
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }

    /// A claim by name.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }

    /// Granted scopes, from `scope` (space-separated) or `scp` (string or array).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The audiences the token names: its `aud` string, or the strings of its `aud` array.
    pub fn audiences(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self.claims.get("aud") {
            Some(Value::String(aud)) => (Some(aud.as_str()), None),
            Some(Value::Array(auds)) => (None, Some(auds.iter().filter_map(Value::as_str))),
            _ => (None, None),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// A verified token with these claims, for tests of what is checked after verification.
    #[cfg(test)]
    pub(crate) fn for_test(claims: Value) -> Self {
        let claims = match claims {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Self {
            digest: OnceLock::new(),
            scopes: granted_scopes(&claims),
            claims,
            expires_at: SystemTime::now() + Duration::from_secs(600),
            raw: Secret::new("test".to_owned()),
        }
    }

    /// True when every scope in `required` was granted.
    pub fn has_scopes(&self, required: &[String]) -> bool {
        required.iter().all(|r| self.scopes.iter().any(|s| s == r))
    }

    /// The inbound token itself, for outbound settings that forward or exchange it.
    pub fn raw(&self) -> &Secret {
        &self.raw
    }

    /// SHA-256 of the token (keys caches that must be per caller). Computed on first use: most
    /// requests never need it.
    pub fn digest(&self) -> &[u8; 32] {
        self.digest.get_or_init(|| Sha256::digest(self.raw.expose().as_bytes()).into())
    }
}

/// Why a token was refused. `reason` is a metric label and appears in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtRejection {
    /// Not a well-formed JWT (including `alg: none`).
    Malformed,
    /// Its algorithm is not allowed for the provider.
    AlgorithmNotAllowed,
    /// Its header `typ` is not the required one.
    WrongType,
    /// No key with its `kid`.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iss` is not the provider's issuer.
    WrongIssuer,
    /// `aud` names none of the audiences the server accepts (a token for another resource).
    WrongAudience,
    /// A required claim (`exp`, `iss`, `aud`) is missing.
    MissingClaim,
    /// The provider's keys cannot be had right now.
    KeysUnavailable,
}

impl JwtRejection {
    /// Stable name (metric label, log field).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::WrongType => "wrong_type",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim => "missing_claim",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }

    /// What the client is told (RFC 6750 `error_description`).
    pub fn description(self) -> &'static str {
        match self {
            Self::Malformed => "the access token is not a well-formed JWT",
            Self::AlgorithmNotAllowed => "the access token's algorithm is not accepted",
            Self::WrongType => "the access token's type is not accepted",
            Self::UnknownKey => "the access token was signed by an unknown key",
            Self::BadSignature => "the access token's signature is invalid",
            Self::Expired => "the access token has expired",
            Self::NotYetValid => "the access token is not valid yet",
            Self::WrongIssuer => "the access token was issued by another issuer",
            Self::WrongAudience => "the access token is not meant for this resource",
            Self::MissingClaim => "the access token lacks a required claim",
            Self::KeysUnavailable => "the identity provider's signing keys are unavailable",
        }
    }

    fn from_error(kind: &ErrorKind) -> Self {
        match kind {
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Self::AlgorithmNotAllowed,
            ErrorKind::MissingRequiredClaim(_) => Self::MissingClaim,
            _ => Self::Malformed,
        }
    }
}

/// Where a provider's keys come from.
pub enum Keys {
    /// Given in the config (inline or a file).
    Static(Arc<KeySet>),
    /// Fetched from a URL and cached.
    Remote(Arc<RemoteJwks>),
}

/// The validation rules of a provider, compiled.
pub struct JwtRules {
    /// Exact issuer.
    pub issuer: String,
    /// Allowed algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Leeway on `exp`/`nbf`.
    pub leeway: Duration,
    /// Required header `typ`, lowercased.
    pub required_typ: Option<String>,
}

/// One identity provider's verifier.
pub struct JwtProvider {
    /// The provider's name in the config.
    pub name: Arc<str>,
    /// The exact `iss` its tokens carry.
    pub issuer: Arc<str>,
    /// Authorization servers announced in resource metadata.
    pub authorization_servers: Vec<String>,
    required_typ: Option<String>,
    validations: Vec<(Algorithm, Validation)>,
    keys: Keys,
    verified: VerifiedTokens,
}

/// Tokens that passed verification, each until its `exp`.
///
/// An entry is found by a 64-bit hash of the token's text, keyed with a random per-cache seed, and
/// is used only when its own text equals the token: the hash picks the entry and need not be
/// collision-proof (a collision is a miss, and the token is verified in full). This costs a
/// fraction of the SHA-256 a cryptographic key would.
#[derive(Clone)]
pub struct VerifiedTokens {
    entries: Cache<u64, Arc<VerifiedToken>, FxBuildHasher>,
    seed: foldhash::quality::RandomState,
}

impl VerifiedTokens {
    /// An empty cache bounded to `capacity` entries, each expiring at its token's `exp`.
    pub fn new(capacity: u64) -> Self {
        Self {
            // The key is already a well-mixed hash: Fx only spreads it for moka's table.
            entries: Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExp)
                .build_with_hasher(FxBuildHasher),
            seed: foldhash::quality::RandomState::default(),
        }
    }

    fn key(&self, token: &[u8]) -> u64 {
        self.seed.hash_one(token)
    }

    fn get(&self, token: &[u8]) -> Option<Arc<VerifiedToken>> {
        self.entries.get(&self.key(token)).filter(|hit| same_bytes(hit.raw.expose().as_bytes(), token))
    }

    fn insert(&self, verified: Arc<VerifiedToken>) {
        self.entries.insert(self.key(verified.raw.expose().as_bytes()), verified);
    }

    /// Forgets every token (the provider's keys changed).
    pub fn invalidate_all(&self) {
        self.entries.invalidate_all();
    }
}

/// Equality that reads every byte whatever the first difference, so the time it takes says
/// nothing about how much of a cached token a caller guessed.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

struct UntilExp;

impl moka::Expiry<u64, Arc<VerifiedToken>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &u64,
        value: &Arc<VerifiedToken>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.expires_at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
    }

    fn expire_after_update(
        &self,
        key: &u64,
        value: &Arc<VerifiedToken>,
        now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, now)
    }
}

impl JwtProvider {
    /// A provider with its rules, its keys and room for `cache_size` verified tokens.
    pub fn new(
        name: Arc<str>,
        rules: JwtRules,
        authorization_servers: Vec<String>,
        keys: Keys,
        cache: VerifiedTokens,
    ) -> Self {
        let validations = rules
            .algorithms
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.set_issuer(&[&rules.issuer]);
                // `aud` must be there; which values are accepted is each server's check.
                v.validate_aud = false;
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                v.validate_nbf = true;
                v.leeway = rules.leeway.as_secs();
                (alg, v)
            })
            .collect();
        Self {
            name,
            issuer: rules.issuer.as_str().into(),
            authorization_servers,
            required_typ: rules.required_typ,
            validations,
            keys,
            verified: cache,
        }
    }

    /// The remote key set, when keys are fetched (to warm it at start).
    pub fn remote_keys(&self) -> Option<&Arc<RemoteJwks>> {
        match &self.keys {
            Keys::Remote(remote) => Some(remote),
            Keys::Static(_) => None,
        }
    }

    /// Verifies a bearer token, or finds it verified before.
    pub async fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, JwtRejection> {
        match self.remembered(token.as_bytes()) {
            Some(hit) => Ok(hit),
            None => self.verify_new(token).await,
        }
    }

    /// The token, when it was verified before and has not expired.
    pub fn remembered(&self, token: &[u8]) -> Option<Arc<VerifiedToken>> {
        self.verified.get(token)
    }

    /// Verifies a token that [`Self::remembered`] did not find, and remembers it.
    pub async fn verify_new(&self, token: &str) -> Result<Arc<VerifiedToken>, JwtRejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| JwtRejection::from_error(e.kind()))?;
        let Some((_, validation)) = self.validations.iter().find(|(alg, _)| *alg == header.alg) else {
            return Err(JwtRejection::AlgorithmNotAllowed);
        };
        if let Some(required) = &self.required_typ {
            if !header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(required)) {
                return Err(JwtRejection::WrongType);
            }
        }
        // Keys come only from the provider's own key set, chosen by `kid`; `jku`, `x5u` and an
        // embedded `jwk` in the header are never looked at.
        let candidates = match &self.keys {
            Keys::Static(set) => set.candidates(header.kid.as_deref(), header.alg),
            Keys::Remote(remote) => {
                remote.lookup(header.kid.as_deref(), header.alg).await.map_err(|e| match e {
                    KeyLookupError::Unknown => JwtRejection::UnknownKey,
                    KeyLookupError::Unavailable => JwtRejection::KeysUnavailable,
                })?
            }
        };
        if candidates.is_empty() {
            return Err(JwtRejection::UnknownKey);
        }
        let mut rejection = JwtRejection::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => return Ok(self.remember(token, data.claims)),
                Err(e) => rejection = JwtRejection::from_error(e.kind()),
            }
        }
        Err(rejection)
    }

    fn remember(&self, token: &str, claims: Map<String, Value>) -> Arc<VerifiedToken> {
        let exp = claims.get("exp").and_then(Value::as_f64).unwrap_or(0.0).max(0.0);
        let expires_at = UNIX_EPOCH + Duration::from_secs_f64(exp);
        let scopes = granted_scopes(&claims);
        let verified = Arc::new(VerifiedToken {
            digest: OnceLock::new(),
            claims,
            scopes,
            expires_at,
            raw: Secret::new(token.to_owned()),
        });
        // Within the leeway a token may verify after its `exp`; it is not cached then.
        if expires_at > SystemTime::now() {
            self.verified.insert(verified.clone());
        }
        verified
    }
}

fn granted_scopes(claims: &Map<String, Value>) -> Vec<String> {
    let from = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    };
    claims.get("scope").or_else(|| claims.get("scp")).map(from).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const ISSUER: &str = "https://idp.test";

    fn pem(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/fixtures/jwt/{name}.pem", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn jwk(name: &str) -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{}/tests/fixtures/jwt/{name}.jwk.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap()
    }

    fn provider(algorithms: Vec<Algorithm>) -> JwtProvider {
        let keys =
            KeySet::parse(&json!({"keys": [jwk("rsa-a"), jwk("ec-p256"), jwk("ed25519")]}), &algorithms)
                .unwrap();
        JwtProvider::new(
            "test".into(),
            JwtRules {
                issuer: ISSUER.into(),
                algorithms,
                leeway: Duration::from_secs(60),
                required_typ: None,
            },
            vec![ISSUER.into()],
            Keys::Static(Arc::new(keys)),
            VerifiedTokens::new(100),
        )
    }

    fn now() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn sign(alg: Algorithm, key: &str, kid: &str, claims: Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        let key = match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem(key)).unwrap(),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem(key)).unwrap(),
            _ => EncodingKey::from_rsa_pem(&pem(key)).unwrap(),
        };
        encode(&header, &claims, &key).unwrap()
    }

    fn claims() -> Value {
        json!({"iss": ISSUER, "aud": "https://gw.test/gh", "sub": "alice", "exp": now() + 600, "scope": "mcp:tools mcp:read"})
    }

    #[tokio::test]
    async fn a_valid_token_verifies_and_is_remembered() {
        let p = provider(vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]);
        for (alg, key) in
            [(Algorithm::RS256, "rsa-a"), (Algorithm::ES256, "ec-p256"), (Algorithm::EdDSA, "ed25519")]
        {
            let token = sign(alg, key, key, claims());
            let verified = p.verify(&token).await.unwrap();
            assert_eq!(verified.subject(), Some("alice"));
            assert!(verified.has_scopes(&["mcp:tools".into()]));
            assert!(!verified.has_scopes(&["admin".into()]));
            assert_eq!(verified.raw().expose(), token);
            assert!(
                Arc::ptr_eq(&verified, &p.verify(&token).await.unwrap()),
                "second verification is a cache hit"
            );
        }
    }

    #[tokio::test]
    async fn a_cached_entry_serves_only_the_token_it_was_made_from() {
        let p = provider(vec![Algorithm::RS256]);
        let token = sign(Algorithm::RS256, "rsa-a", "rsa-a", claims());
        let verified = p.verify(&token).await.unwrap();
        // Another text of the same length that lands on the same entry, as a hash collision would.
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let forged = String::from_utf8(forged).unwrap();
        p.verified.entries.insert(p.verified.key(forged.as_bytes()), verified.clone());
        assert!(p.remembered(forged.as_bytes()).is_none(), "an entry for another text is a miss");
        assert!(p.verify(&forged).await.is_err(), "and the forged text is verified in full");
        assert!(Arc::ptr_eq(&verified, &p.verify(&token).await.unwrap()));
        assert!(!same_bytes(b"abc", b"abd") && !same_bytes(b"abc", b"ab") && same_bytes(b"abc", b"abc"));
        let expected: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        assert_eq!(verified.digest(), &expected, "the per-caller digest is the token's SHA-256");
    }

    #[tokio::test]
    async fn each_broken_rule_has_its_own_reason() {
        let p = provider(vec![Algorithm::RS256]);
        let with = |patch: Value| {
            let mut c = claims();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            sign(Algorithm::RS256, "rsa-a", "rsa-a", c)
        };
        let cases = [
            (with(json!({"exp": now() - 120})), JwtRejection::Expired),
            (with(json!({"nbf": now() + 600})), JwtRejection::NotYetValid),
            (with(json!({"iss": "https://idp.test/"})), JwtRejection::WrongIssuer),
            (with(json!({"exp": null})), JwtRejection::MissingClaim),
            (with(json!({"aud": null})), JwtRejection::MissingClaim),
            (sign(Algorithm::RS256, "rsa-b", "rsa-a", claims()), JwtRejection::BadSignature),
            (sign(Algorithm::RS256, "rsa-a", "nobody", claims()), JwtRejection::UnknownKey),
            (sign(Algorithm::ES256, "ec-p256", "ec-p256", claims()), JwtRejection::AlgorithmNotAllowed),
            ("not.a.jwt".to_owned(), JwtRejection::Malformed),
        ];
        for (token, expected) in cases {
            assert_eq!(p.verify(&token).await.err(), Some(expected), "{expected:?}");
        }
    }

    #[tokio::test]
    async fn leeway_accepts_small_clock_skew() {
        let p = provider(vec![Algorithm::RS256]);
        let mut c = claims();
        c["nbf"] = json!(now() + 30);
        c["exp"] = json!(now() - 30);
        let token = sign(Algorithm::RS256, "rsa-a", "rsa-a", c);
        assert!(p.verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn the_audience_is_read_as_a_string_or_an_array_and_left_to_the_server() {
        let p = provider(vec![Algorithm::RS256]);
        let mut c = claims();
        c["aud"] = json!(["https://other", "https://gw.test/gh"]);
        let verified = p.verify(&sign(Algorithm::RS256, "rsa-a", "rsa-a", c.clone())).await.unwrap();
        assert_eq!(verified.audiences().collect::<Vec<_>>(), ["https://other", "https://gw.test/gh"]);
        c["aud"] = json!("https://gw.test/search");
        let verified = p.verify(&sign(Algorithm::RS256, "rsa-a", "rsa-a", c)).await.unwrap();
        assert_eq!(verified.audiences().collect::<Vec<_>>(), ["https://gw.test/search"]);
    }

    #[tokio::test]
    async fn alg_none_and_hmac_with_the_public_key_are_refused() {
        use base64::Engine;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let p = provider(vec![Algorithm::RS256]);
        let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims()));
        assert_eq!(p.verify(&none).await.err(), Some(JwtRejection::Malformed));
        let public_pem = std::fs::read_to_string(format!(
            "{}/tests/fixtures/jwt/rsa-a.jwk.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-a".into());
        let forged = encode(&header, &claims(), &EncodingKey::from_secret(public_pem.as_bytes())).unwrap();
        assert_eq!(p.verify(&forged).await.err(), Some(JwtRejection::AlgorithmNotAllowed));
    }

    #[test]
    fn scopes_come_from_scope_or_scp() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(granted_scopes(&m(json!({"scope": "a  b"}))), ["a", "b"]);
        assert_eq!(granted_scopes(&m(json!({"scp": ["a", "b"]}))), ["a", "b"]);
        assert_eq!(granted_scopes(&m(json!({"scp": "a"}))), ["a"]);
        assert!(granted_scopes(&m(json!({}))).is_empty());
    }
}
