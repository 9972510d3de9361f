//! Micro-benchmarks of the request path: route match, header restriction, JWT verification (a
//! verified-token cache hit and full RS256 / ES256 verification), credential resolution on a token
//! cache hit, the legacy SSE endpoint rewriter.
//!
//! `cargo bench --bench hot_path`; the figures go into the load results, never into assertions.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pingora::http::RequestHeader;
use serde_json::json;

use portcullis::agent_auth::{JwtProvider, JwtRules, KeySet, Keys, VerifiedTokens};
use portcullis::app_auth::{
    source_key, AppAuth, ClientCredentials, Outbound, OutboundHeader, OutboundValue, TokenEndpoint,
};
use portcullis::config::{ClientAuthMethod, Secret};
use portcullis::headers::HeaderPolicy;
use portcullis::identity::Identity;
use portcullis::routes::{alias_path, RouteTable};
use portcullis::sse_endpoint::{EndpointMapping, EndpointRewriter};
use portcullis::tokens::{TokenCache, TokenCacheSettings, TokenResponse};
use portcullis::upstream::Upstream;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn provider(cache_size: u64) -> JwtProvider {
    let jwk = |n: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{n}.jwk.json"))).unwrap()).unwrap()
    };
    let algorithms = vec![Algorithm::RS256, Algorithm::ES256];
    let keys = KeySet::parse(&json!({"keys": [jwk("rsa-a"), jwk("ec-p256")]}), &algorithms).unwrap();
    JwtProvider::new(
        "bench".into(),
        JwtRules {
            issuer: "https://idp.bench".into(),
            algorithms,
            leeway: Duration::from_secs(60),
            required_typ: None,
        },
        vec!["https://idp.bench".into()],
        Keys::Static(Arc::new(keys)),
        VerifiedTokens::new(cache_size),
    )
}

fn token(alg: Algorithm, key: &str, sub: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"iss": "https://idp.bench", "aud": "https://mcp.bench/gh", "sub": sub, "exp": now + 3600, "scope": "mcp:tools", "email": "user@example.com"});
    let mut header = Header::new(alg);
    header.kid = Some(key.into());
    let pem = std::fs::read(fixture(&format!("{key}.pem"))).unwrap();
    let key = if alg == Algorithm::ES256 {
        EncodingKey::from_ec_pem(&pem)
    } else {
        EncodingKey::from_rsa_pem(&pem)
    }
    .unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn jwt(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let cached = provider(1000);
    let rs256 = token(Algorithm::RS256, "rsa-a", "alice");
    rt.block_on(cached.verify(&rs256)).unwrap();
    c.bench_function("jwt/verified_token_cache_hit", |b| {
        b.to_async(&rt).iter(|| async { cached.verify(black_box(&rs256)).await.unwrap() })
    });

    // A cache of size zero keeps nothing: every call is a full verification.
    let uncached = provider(0);
    let es256 = token(Algorithm::ES256, "ec-p256", "bob");
    c.bench_function("jwt/full_rs256_verification", |b| {
        b.to_async(&rt).iter(|| async { uncached.verify(black_box(&rs256)).await.unwrap() })
    });
    c.bench_function("jwt/full_es256_verification", |b| {
        b.to_async(&rt).iter(|| async { uncached.verify(black_box(&es256)).await.unwrap() })
    });
}

fn routing(c: &mut Criterion) {
    let entries = (0..50).flat_map(|i| {
        [(format!("/team-{i}/server"), i, false), (alias_path(&format!("server-{i}")), i, true)]
    });
    let table = RouteTable::new(entries);
    c.bench_function("route_match/100_routes", |b| {
        b.iter(|| table.find(black_box("/team-42/server/mcp")).unwrap())
    });
}

fn headers(c: &mut Criterion) {
    let policy = HeaderPolicy::new(&[], &["x-internal-*".into(), "x-debug-*".into()]).unwrap();
    let mut template = RequestHeader::build("POST", b"/mcp", None).unwrap();
    for (k, v) in [
        ("host", "gw"),
        ("authorization", "Bearer abc"),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-session-id", "s-1"),
        ("mcp-protocol-version", "2025-06-18"),
        ("x-internal-tenant", "7"),
        ("user-agent", "bench"),
    ] {
        template.insert_header(k, v).unwrap();
    }
    c.bench_function("header_restriction/8_headers", |b| {
        b.iter_batched(
            || http::HeaderMap::with_capacity(8),
            |mut upstream| policy.copy_forwardable(&template, &mut upstream),
            criterion::BatchSize::SmallInput,
        )
    });
}

fn sse(c: &mut Criterion) {
    let upstream = Upstream::from_url("http://127.0.0.1:3001", None, true).unwrap();
    let mapping = EndpointMapping {
        upstream_base: String::new(),
        sse_request_path: "/sse".into(),
        gateway_prefix: "/gh".into(),
        session_wrap: None,
    };
    let first = Bytes::from_static(
        b"event: endpoint\ndata: /message?sessionId=0f8e2c4a-1b7d-4e4b-9a53-1c2d3e4f5a6b\n\n",
    );
    let later = Bytes::from_static(b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n");
    c.bench_function("sse_endpoint/rewrite_endpoint_event", |b| {
        b.iter(|| EndpointRewriter::new(mapping.clone()).feed(&upstream, black_box(first.clone()), false))
    });
    let mut passthrough = EndpointRewriter::new(mapping.clone());
    passthrough.feed(&upstream, first.clone(), false);
    c.bench_function("sse_endpoint/pass_through_after_endpoint", |b| {
        b.iter(|| passthrough.feed(&upstream, black_box(later.clone()), false))
    });
}

fn credentials(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let cache: &'static TokenCache = Box::leak(Box::new(TokenCache::new(1000)));
    let settings = TokenCacheSettings {
        skew: Duration::from_secs(30),
        refresh_at: 0.8,
        default_ttl: Duration::from_secs(300),
        failure_backoff: Duration::from_secs(1),
    };
    // Never contacted: the token is put in the cache before measuring.
    let endpoint = TokenEndpoint {
        url: "http://127.0.0.1:9/token".into(),
        client_id: "bench".into(),
        client_secret: Secret::new("secret".into()),
        method: ClientAuthMethod::ClientSecretBasic,
        timeout: Duration::from_secs(1),
    };
    let params = vec![("scope".to_owned(), "repo".to_owned())];
    let key = source_key("client_credentials", &endpoint, &params);
    let name: Arc<str> = "bench/app_auth".into();
    let lookups = portcullis::tokens::SourceMetrics::new(name.clone());
    rt.block_on(cache.get(key, &lookups, settings, || async {
        Ok(TokenResponse {
            access_token: Secret::new("service-token".into()),
            token_type: Some("Bearer".into()),
            issued_token_type: None,
            expires_in: Some(Duration::from_secs(3600)),
        })
    }))
    .unwrap();
    let outbound = Outbound {
        app_auth: Some(AppAuth::ClientCredentials(ClientCredentials::new(
            name,
            key,
            endpoint,
            params,
            "Bearer ".into(),
        ))),
        headers: vec![OutboundHeader {
            name: http::HeaderName::from_static("x-user-email"),
            prefix: String::new(),
            value: OutboundValue::Claim("email".into()),
        }],
    };
    let provider = provider(10);
    let verified = rt.block_on(provider.verify(&token(Algorithm::RS256, "rsa-a", "alice"))).unwrap();
    let identity = Identity::jwt(verified);
    let request = RequestHeader::build("POST", b"/mcp", None).unwrap();
    c.bench_function("credentials/client_credentials_cache_hit_plus_claim_header", |b| {
        b.to_async(&rt).iter(|| async {
            outbound.resolve(black_box(&request), Some(&identity), settings, cache).await.unwrap()
        })
    });
}

criterion_group!(benches, jwt, routing, headers, credentials, sse);
criterion_main!(benches);
