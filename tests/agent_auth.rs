//! Agent authentication through the real gateway against a mock identity provider.

mod support;

use support::{only_on, Path};

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Value};
use support::gateway::Gateway;
use support::idp::{claims, now, sign, sign_with_header, token, JwksMode, MockIdp, AUDIENCE};
use support::upstream::{MockUpstream, Reply};
use support::{client, post_jsonrpc};
use support::{plain_client, wait_for};

/// One JWT-protected server `gh` (scope `mcp:tools`) in front of `upstream`.
fn jwt_config(idp: &MockIdp, upstream: &MockUpstream, cache: &str) -> String {
    format!(
        "{}agent_auth: {{mode: jwt, provider: idp, scopes: [\"mcp:tools\"], audiences: [\"{AUDIENCE}\"]}}\nservers:\n  - name: gh\n    path: /gh\n    upstream: \"{}\"\n    restricted_headers: [\"x-internal-*\"]\n",
        idp.provider_yaml("idp", &format!("    jwks_cache: {{{cache}}}\n")),
        upstream.url("/mcp"),
    )
}

async fn post(gateway: &Gateway, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = post_jsonrpc(gateway.url(path), r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("send")
}

fn challenge(response: &reqwest::Response) -> String {
    response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_passes_and_never_reaches_the_upstream() {
    let idp = MockIdp::start(&["rsa-a", "ec-p256"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&jwt_config(&idp, &upstream, ""));
    let rs = token("alice");
    let es = sign(Algorithm::ES256, "ec-p256", "ec-p256", &claims("bob"));
    for t in [&rs, &es, &rs] {
        assert_eq!(post(&gateway, "/gh", Some(t)).await.status(), 200);
    }
    for r in upstream.requests() {
        assert!(r.headers.get("authorization").is_none(), "the inbound token must not be forwarded");
    }
    wait_for("access line with the subject", || gateway.log().contains("subject=\"alice\"")).await;
    assert!(gateway.log().contains("identity=\"jwt\""));
    assert!(!gateway.log().contains(&rs), "the token itself is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_gets_the_exact_challenge() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&jwt_config(&idp, &upstream, ""));
    for (path, route) in [("/gh", "/gh"), ("/servers/gh/mcp", "/servers/gh/mcp")] {
        let response = post(&gateway, path, None).await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            challenge(&response),
            format!(
                "Bearer resource_metadata=\"{}\", scope=\"mcp:tools\"",
                gateway.url(&format!("/.well-known/oauth-protected-resource{route}"))
            )
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["id"], 5, "a JSON-RPC POST gets a JSON-RPC error with its id");
        assert_eq!(body["error"]["data"]["reason"], "missing_token");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_token_is_an_invalid_token_challenge() {
    let idp = MockIdp::start(&["rsa-a", "ec-p256"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let strict = format!(
        "  strict:\n    issuer: \"{}\"\n    jwks_url: \"{}\"\n    algorithms: [RS256]\n",
        support::idp::ISSUER,
        idp.jwks_url()
    );
    let gateway = Gateway::start(&format!(
        "{}{strict}agent_auth: {{mode: jwt, provider: idp, audiences: [\"{AUDIENCE}\"]}}\nservers:\n  - {{name: gh, path: /gh, upstream: \"{}\"}}\n  - {{name: rs-only, path: /rs, upstream: \"{}\", agent_auth: {{mode: jwt, provider: strict, audiences: [\"{AUDIENCE}\"]}}}}\n",
        idp.provider_yaml("idp", ""),
        upstream.url("/mcp"),
        upstream.url("/mcp"),
    ));
    let with = |patch: Value| {
        let mut c = claims("mallory");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        sign(Algorithm::RS256, "rsa-a", "rsa-a", &c)
    };
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let public_key =
        std::fs::read(format!("{}/tests/fixtures/jwt/rsa-a.jwk.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let hs256_with_public_key = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rsa-a".into());
        jsonwebtoken::encode(&h, &claims("mallory"), &jsonwebtoken::EncodingKey::from_secret(&public_key))
            .unwrap()
    };
    let cases = [
        ("expired", with(json!({"exp": now() - 300}))),
        ("nbf beyond leeway", with(json!({"nbf": now() + 300}))),
        ("issuer with a trailing slash", with(json!({"iss": format!("{}/", support::idp::ISSUER)}))),
        ("another issuer", with(json!({"iss": "https://evil.example"}))),
        ("wrong audience", with(json!({"aud": "https://elsewhere.example"}))),
        ("no exp", with(json!({"exp": null}))),
        ("alg none", format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims("mallory")))),
        ("HS256 signed with the RSA public key", hs256_with_public_key),
        (
            "signed by another key under a known kid",
            sign(Algorithm::RS256, "rsa-b", "rsa-a", &claims("mallory")),
        ),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    for (name, bad) in &cases {
        let response = post(&gateway, "/gh", Some(bad)).await;
        assert_eq!(response.status(), 401, "{name}");
        assert!(
            challenge(&response).starts_with("Bearer error=\"invalid_token\", resource_metadata=\""),
            "{name}: {}",
            challenge(&response)
        );
    }
    // Within the leeway, skewed clocks are fine.
    assert_eq!(post(&gateway, "/gh", Some(&with(json!({"nbf": now() + 30})))).await.status(), 200);
    // Audience as a string and as an array.
    assert_eq!(post(&gateway, "/gh", Some(&with(json!({"aud": AUDIENCE})))).await.status(), 200);
    assert_eq!(
        post(&gateway, "/gh", Some(&with(json!({"aud": ["https://other", AUDIENCE]})))).await.status(),
        200
    );
    // ES256 is fine for one provider and outside the other's allow-list.
    let es = sign(Algorithm::ES256, "ec-p256", "ec-p256", &claims("erin"));
    assert_eq!(post(&gateway, "/gh", Some(&es)).await.status(), 200);
    assert_eq!(post(&gateway, "/rs", Some(&es)).await.status(), 401);
    assert!(upstream.requests().iter().all(|r| r.headers.get("authorization").is_none()));

    let metrics =
        plain_client().get(gateway.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    for reason in [
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "bad_signature",
        "malformed",
        "algorithm_not_allowed",
    ] {
        assert!(metrics.contains(&format!("result=\"{reason}\"")), "{reason} not counted:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jku_and_embedded_keys_are_never_followed() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let attacker = MockIdp::start(&["rsa-b"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&jwt_config(&idp, &upstream, ""));
    // An attacker's key, announced through jku and an embedded jwk.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("attacker".into());
    header.jku = Some(attacker.jwks_url());
    header.jwk = serde_json::from_value(support::idp::jwk("rsa-b")).ok();
    let forged = sign_with_header("rsa-b", header, &claims("mallory"));
    assert_eq!(post(&gateway, "/gh", Some(&forged)).await.status(), 401);
    // A genuine token that also carries a jku verifies against the provider's own keys.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-a".into());
    header.jku = Some(attacker.jwks_url());
    assert_eq!(
        post(&gateway, "/gh", Some(&sign_with_header("rsa-a", header, &claims("alice")))).await.status(),
        200
    );
    assert_eq!(attacker.fetches(), 0, "the gateway fetched a jku URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_costs_exactly_one_refetch_even_for_100_concurrent_requests() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&jwt_config(&idp, &upstream, "refetch_cooldown: 300ms"));
    assert_eq!(post(&gateway, "/gh", Some(&token("alice"))).await.status(), 200);
    let before = idp.fetches();
    assert_eq!(before, 1, "one fetch (the warm-up) so far");

    idp.set(JwksMode::Serve(vec!["rsa-a", "rsa-b"]));
    tokio::time::sleep(Duration::from_millis(400)).await; // past the cooldown of the warm-up fetch
    let requests = (0..100).map(|i| {
        let t = sign(Algorithm::RS256, "rsa-b", "rsa-b", &claims(&format!("user-{i}")));
        let gateway = &gateway;
        async move { post(gateway, "/gh", Some(&t)).await.status() }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(idp.fetches(), before + 1, "exactly one JWKS request for the new kid");
    let metrics =
        plain_client().get(gateway.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"portcullis_jwks_fetches_total{provider="idp",result="ok"} 2"#), "{metrics}");
    assert!(
        metrics.contains(r#"portcullis_auth_outcomes_total{mode="jwt",result="ok",server="gh"} 101"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_inside_the_cooldown_fetch_nothing() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&jwt_config(&idp, &upstream, "refetch_cooldown: 60s"));
    assert_eq!(post(&gateway, "/gh", Some(&token("alice"))).await.status(), 200);
    let before = idp.fetches();
    for i in 0..25 {
        let t = sign(Algorithm::RS256, "rsa-a", &format!("random-kid-{i}-{}", now()), &claims("mallory"));
        assert_eq!(post(&gateway, "/gh", Some(&t)).await.status(), 401);
    }
    assert_eq!(idp.fetches(), before, "unknown kids inside the cooldown must not reach the IdP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_keep_serving_while_the_jwks_endpoint_is_down() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&jwt_config(
        &idp,
        &upstream,
        "ttl: 1s, min_ttl: 1s, refetch_cooldown: 100ms, max_stale: 1h",
    ));
    assert_eq!(post(&gateway, "/gh", Some(&token("alice"))).await.status(), 200);
    idp.set(JwksMode::Fail);
    tokio::time::sleep(Duration::from_millis(1200)).await; // the keys are now past their TTL
    let before = idp.fetches();
    // New tokens (not in the verified cache) still verify with the stale keys…
    for i in 0..3 {
        assert_eq!(post(&gateway, "/gh", Some(&token(&format!("u{i}")))).await.status(), 200);
    }
    // …while a background refresh tried (and failed).
    wait_for("a background refresh attempt", || idp.fetches() > before).await;
    idp.set(JwksMode::Stall(Duration::from_secs(3)));
    assert_eq!(post(&gateway, "/gh", Some(&token("stalled-idp"))).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_idp_with_no_cached_keys_is_a_503() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    idp.set(JwksMode::Fail);
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&jwt_config(&idp, &upstream, "refetch_cooldown: 50ms"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = post(&gateway, "/gh", Some(&token("alice"))).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["data"]["reason"], "auth_unavailable");
    idp.set(JwksMode::Serve(vec!["rsa-a"]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        post(&gateway, "/gh", Some(&token("alice"))).await.status(),
        200,
        "recovers once the IdP is back"
    );
    assert!(upstream.requests().len() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_scope_is_a_403_with_the_full_scope_list() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&format!(
        "{}servers:\n  - name: gh\n    path: /gh\n    upstream: \"{}\"\n    agent_auth: {{mode: jwt, provider: idp, scopes: [\"mcp:tools\", \"repo:write\"], audiences: [\"{AUDIENCE}\"]}}\n",
        idp.provider_yaml("idp", ""),
        upstream.url("/mcp")
    ));
    let response = post(&gateway, "/gh", Some(&token("alice"))).await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        challenge(&response),
        format!(
            "Bearer error=\"insufficient_scope\", resource_metadata=\"{}\", scope=\"mcp:tools repo:write\"",
            gateway.url("/.well-known/oauth-protected-resource/gh")
        )
    );
    let mut c = claims("admin");
    c["scp"] = json!(["mcp:tools", "repo:write"]);
    c.as_object_mut().unwrap().remove("scope");
    assert_eq!(
        post(&gateway, "/gh", Some(&sign(Algorithm::RS256, "rsa-a", "rsa-a", &c))).await.status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_query_string_is_refused() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&jwt_config(&idp, &upstream, ""));
    let response = post(&gateway, &format!("/gh?access_token={}", token("alice")), None).await;
    assert_eq!(response.status(), 400);
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_and_alias_publishes_its_resource_metadata() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&format!(
        "{}servers:\n  - name: gh\n    path: /gh\n    upstream: \"{}\"\n    agent_auth: {{mode: jwt, provider: idp, scopes: [\"mcp:tools\"], audiences: [\"{AUDIENCE}\"]}}\n  - name: open\n    path: /open\n    upstream: \"{}\"\n    agent_auth: {{mode: none, allow_unauthenticated: true}}\n",
        idp.provider_yaml("idp", "    authorization_servers: [\"https://login.portcullis.test\"]\n"),
        upstream.url("/mcp"),
        upstream.url("/mcp")
    ));
    for route in ["/gh", "/servers/gh/mcp"] {
        let response = client()
            .get(gateway.url(&format!("/.well-known/oauth-protected-resource{route}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        let doc: Value = response.json().await.unwrap();
        assert_eq!(doc["resource"], gateway.url(route), "resource comes from public_url");
        assert_eq!(doc["authorization_servers"], json!(["https://login.portcullis.test"]));
        assert_eq!(doc["scopes_supported"], json!(["mcp:tools"]));
    }
    // The resource never comes from the Host header.
    let spoofed = client()
        .get(gateway.url("/.well-known/oauth-protected-resource/gh"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    if spoofed.status() == 200 {
        let doc: Value = spoofed.json().await.unwrap();
        assert!(!doc.to_string().contains("evil.example"));
    }
    for missing in ["/open", "/nothing"] {
        let response = client()
            .get(gateway.url(&format!("/.well-known/oauth-protected-resource{missing}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{missing}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_form_and_method_is_authenticated_and_stripped() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|r| match r.method.as_str() {
        "GET" => Reply::sse(
            vec![support::upstream::Step::Write(bytes::Bytes::from_static(b"data: hi\n\n"))],
            false,
        ),
        _ => Reply::json("{}"),
    })
    .await;
    let gateway = Gateway::start(&jwt_config(&idp, &upstream, ""));
    let forms: [(reqwest::Method, &str); 6] = [
        (reqwest::Method::POST, "/gh"),
        (reqwest::Method::POST, "/servers/gh/mcp"),
        (reqwest::Method::GET, "/gh"),
        (reqwest::Method::GET, "/gh/sse"),
        (reqwest::Method::DELETE, "/servers/gh/mcp"),
        (reqwest::Method::POST, "/gh/message?sessionId=abc"),
    ];
    let good = token("alice");
    for (method, path) in &forms {
        let anonymous = client().request(method.clone(), gateway.url(path)).send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "{method} {path} without a token");
        let sent = client()
            .request(method.clone(), gateway.url(path))
            .bearer_auth(&good)
            .header("accept", "application/json, text/event-stream")
            .header("cookie", "session=secret")
            .header("proxy-authorization", "Basic c2VjcmV0")
            .header("x-upstream-authorization", "Bearer one-time")
            .header("x-authenticated-user", "root")
            .header("x-internal-tenant", "42")
            .header("X-Internal-Route", "admin")
            .header("mcp-session-id", "kept")
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 200, "{method} {path}");
        let _ = sent.bytes().await;
    }
    let received = upstream.requests();
    assert_eq!(received.len(), forms.len());
    for r in received {
        for stripped in [
            "authorization",
            "cookie",
            "proxy-authorization",
            "x-upstream-authorization",
            "x-authenticated-user",
            "x-internal-tenant",
            "x-internal-route",
        ] {
            assert!(
                r.headers.get(stripped).is_none(),
                "{stripped} reached the upstream on {} {}",
                r.method,
                r.target
            );
        }
        assert_eq!(r.headers["mcp-session-id"], "kept");
    }
}

fn proxy_config(upstream: &MockUpstream, networks: &str, anonymous: bool) -> String {
    format!(
        "servers:\n  - name: gh\n    path: /gh\n    upstream: \"{}\"\n    agent_auth: {{mode: trusted_proxy, trusted_networks: [{networks}], allow_anonymous: {anonymous}}}\n",
        upstream.url("/mcp")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_user_only_from_its_networks() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let trusted = Gateway::start(&proxy_config(&upstream, "\"127.0.0.0/8\"", false));
    let named = client()
        .post(trusted.url("/gh"))
        .header("x-authenticated-user", "alice@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), 200);
    assert_eq!(
        client().post(trusted.url("/gh")).send().await.unwrap().status(),
        401,
        "no header, no anonymous fallback"
    );
    wait_for("the proxy user in the access log", || trusted.log().contains("subject=\"alice@example.com\""))
        .await;
    assert!(trusted.log().contains("identity=\"proxy\""));

    let untrusted = Gateway::start(&proxy_config(&upstream, "\"10.0.0.0/8\", \"192.0.2.7\"", false));
    let spoofed =
        client().post(untrusted.url("/gh")).header("x-authenticated-user", "root").send().await.unwrap();
    assert_eq!(spoofed.status(), 401, "the header from an untrusted source is ignored");

    let lenient = Gateway::start(&proxy_config(&upstream, "\"10.0.0.0/8\"", true));
    let anonymous =
        client().post(lenient.url("/gh")).header("x-authenticated-user", "root").send().await.unwrap();
    assert_eq!(anonymous.status(), 200);
    wait_for("anonymous in the access log", || lenient.log().contains("identity=\"anonymous\"")).await;
    assert!(!lenient.log().contains("subject=\"root\""));
    for r in upstream.requests() {
        assert!(r.headers.get("x-authenticated-user").is_none(), "the user header is never forwarded");
    }
}

/// POSTs a JSON-RPC call to `path` with `fields` as given, repeated names sent as repeated
/// fields (the client neither folds nor tidies them); returns the status and body.
async fn post_with_fields(gateway: &Gateway, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let mut request = post_jsonrpc(gateway.url(path), r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#);
    for (name, value) in fields {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the gateway answers");
    (response.status().as_u16(), response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_user_header_sent_twice_or_as_a_list_is_refused_never_first_wins() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    // With anonymous allowed, too: a second copy is never read as "no user".
    let gateway = Gateway::start(&proxy_config(&upstream, "\"127.0.0.0/8\"", true));
    let appended = [
        // A front proxy that appends its header after the client's.
        &[("X-Authenticated-User", "mallory"), ("X-Authenticated-User", "alice@example.com")][..],
        // One that folds them into a list.
        &[("X-Authenticated-User", "mallory, alice@example.com")],
        // The client's copy spelled with `_`, which many upstreams read as the same header.
        &[("X-Authenticated-User", "alice@example.com"), ("X_Authenticated_User", "mallory")],
    ];
    for fields in appended {
        let (status, response) = post_with_fields(&gateway, "/gh", fields).await;
        assert_eq!(status, 401, "{fields:?}: {response}");
        assert!(response.contains(r#""reason":"duplicate_user_header""#), "{response}");
        assert!(response.contains(r#""id":9"#), "a JSON-RPC error for the call: {response}");
    }
    assert!(upstream.requests().is_empty(), "no refused request went upstream");
    let metrics =
        plain_client().get(gateway.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"portcullis_auth_outcomes_total{mode="trusted_proxy",result="duplicate_user_header",server="gh"} 3"#),
        "{metrics}"
    );

    let (status, one) =
        post_with_fields(&gateway, "/gh", &[("X-Authenticated-User", "alice@example.com")]).await;
    assert_eq!(status, 200, "{one}");
    wait_for("alice in the access log", || gateway.log().contains("subject=\"alice@example.com\"")).await;
    assert!(!gateway.log().contains("subject=\"mallory"), "mallory was never anyone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_are_checked_and_cors_exposes_the_challenge() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&format!(
        "{}servers:\n  - name: gh\n    path: /gh\n    upstream: \"{}\"\n    agent_auth: {{mode: jwt, provider: idp, audiences: [\"{AUDIENCE}\"]}}\n    allowed_origins: [\"https://app.portcullis.test\"]\n",
        idp.provider_yaml("idp", ""),
        upstream.url("/mcp")
    ));
    let denied = client()
        .post(gateway.url("/gh"))
        .header("origin", "https://evil.example")
        .bearer_auth(token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let challenged = client()
        .post(gateway.url("/gh"))
        .header("origin", "https://app.portcullis.test")
        .send()
        .await
        .unwrap();
    assert_eq!(challenged.status(), 401);
    assert_eq!(challenged.headers()["access-control-allow-origin"], "https://app.portcullis.test");
    let exposed =
        challenged.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains("www-authenticate") && exposed.contains("mcp-session-id"), "{exposed}");
    let preflight = client()
        .request(reqwest::Method::OPTIONS, gateway.url("/gh"))
        .header("origin", "https://app.portcullis.test")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-headers"], "authorization, content-type");
    let ok = client()
        .post(gateway.url("/gh"))
        .header("origin", "https://app.portcullis.test")
        .bearer_auth(token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://app.portcullis.test");
    // A loopback listener refuses a foreign Host (DNS rebinding). Over HTTP/2 a Host that
    // differs from :authority is a malformed request, refused (400) before the gateway sees it.
    if !only_on(
        &[Path::H1, Path::H1Pingora],
        "a Host unlike :authority is malformed in HTTP/2 (RFC 9113 8.3.1)",
    ) {
        // A loopback listener refuses a foreign Host (DNS rebinding).
        let rebound = client()
            .post(gateway.url("/gh"))
            .header("host", "attacker.example")
            .bearer_auth(token("alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(rebound.status(), 403);
    }
    assert_eq!(upstream.requests().len(), 1);
}
