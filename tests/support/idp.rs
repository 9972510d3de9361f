//! A mock identity provider: a JWKS endpoint whose keys can rotate and which can fail or stall,
//! counting its requests; and a signer for test tokens made with the fixture keys.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::upstream::{MockUpstream, Reply};

/// The issuer every test token claims.
pub const ISSUER: &str = "https://idp.portcullis.test";
/// The audience [`claims`] and [`token`] claim. It is no server's resource URL (the gateway's
/// `public_url` is its loopback address), so a server accepts it only where its config lists it
/// in `agent_auth.audiences`.
pub const AUDIENCE: &str = "https://mcp.portcullis.test/gh";

/// How the JWKS endpoint behaves now.
#[derive(Debug, Clone)]
pub enum JwksMode {
    /// Serve these fixture keys.
    Serve(Vec<&'static str>),
    /// Answer 500.
    Fail,
    /// Answer only after this long.
    Stall(Duration),
}

/// The running mock IdP.
pub struct MockIdp {
    server: MockUpstream,
    mode: Arc<Mutex<JwksMode>>,
}

impl MockIdp {
    /// Starts serving `keys` (fixture names like `rsa-a`).
    pub async fn start(keys: &[&'static str]) -> Self {
        let mode = Arc::new(Mutex::new(JwksMode::Serve(keys.to_vec())));
        let script_mode = mode.clone();
        let server = MockUpstream::start(move |_| {
            let mode = script_mode.lock().map(|m| m.clone()).unwrap_or(JwksMode::Fail);
            match mode {
                JwksMode::Serve(keys) => Reply::Full {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: Bytes::from(jwks(&keys).to_string()),
                },
                JwksMode::Fail => {
                    Reply::Full { status: 500, headers: vec![], body: Bytes::from_static(b"down") }
                }
                JwksMode::Stall(d) => Reply::Stall(d),
            }
        })
        .await;
        Self { server, mode }
    }

    /// Changes what the endpoint does from now on.
    pub fn set(&self, mode: JwksMode) {
        if let Ok(mut m) = self.mode.lock() {
            *m = mode;
        }
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        self.server.url("/jwks")
    }

    /// JWKS requests received so far.
    pub fn fetches(&self) -> usize {
        self.server.requests().len()
    }

    /// The `identity_providers` entry for this IdP, with extra indented YAML lines appended.
    pub fn provider_yaml(&self, name: &str, extra: &str) -> String {
        format!(
            "identity_providers:\n  {name}:\n    issuer: \"{ISSUER}\"\n    jwks_url: \"{}\"\n    algorithms: [RS256, ES256]\n{extra}",
            self.jwks_url()
        )
    }
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The public JWK of a fixture key.
pub fn jwk(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{name}.jwk.json"))).expect("fixture jwk"))
        .expect("jwk json")
}

/// A JWKS of fixture keys.
pub fn jwks(names: &[&str]) -> Value {
    json!({ "keys": names.iter().map(|n| jwk(n)).collect::<Vec<_>>() })
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Good claims for `sub`: the test issuer and audience, 10 minutes to live, `mcp:tools` scope.
pub fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now() + 600, "iat": now(), "scope": "mcp:tools mcp:read"})
}

/// Good claims for `sub` issued for `audience` (e.g. a server's resource URL, `gateway.url("/gh")`).
pub fn claims_for(audience: &str, sub: &str) -> Value {
    let mut c = claims(sub);
    c["aud"] = json!(audience);
    c
}

/// A valid RS256 token for `sub` issued for `audience`.
pub fn token_for(audience: &str, sub: &str) -> String {
    sign(Algorithm::RS256, "rsa-a", "rsa-a", &claims_for(audience, sub))
}

/// Signs `claims` with fixture key `key`, putting `kid` in the header.
pub fn sign(alg: Algorithm, key: &str, kid: &str, claims: &Value) -> String {
    sign_with_header(
        key,
        {
            let mut h = Header::new(alg);
            h.kid = Some(kid.into());
            h
        },
        claims,
    )
}

/// Signs with a prepared header.
pub fn sign_with_header(key: &str, header: Header, claims: &Value) -> String {
    let pem = std::fs::read(fixture(&format!("{key}.pem"))).expect("fixture pem");
    let key = match header.alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .expect("fixture key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// A valid RS256 token for `sub` from key `rsa-a`.
pub fn token(sub: &str) -> String {
    sign(Algorithm::RS256, "rsa-a", "rsa-a", &claims(sub))
}
