//! App authentication and outbound headers through the real gateway, against a mock token
//! endpoint and the recording mock upstream.

mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use support::gateway::Gateway;
use support::idp::{claims, sign, token, MockIdp, AUDIENCE};
use support::post_jsonrpc;
use support::token_endpoint::{form, MockTokenEndpoint, TokenMode};
use support::upstream::{MockUpstream, Recorded, Reply};
use support::{plain_client, wait_for};

/// A client secret with every character that client authentication must encode.
const AWKWARD_SECRET: &str = "s3:cr+t%20/x";

fn server(upstream: &MockUpstream, extra: &str) -> String {
    format!("agent_auth: {{mode: none, allow_unauthenticated: true}}\nservers:\n  - name: gh\n    path: /gh\n    upstream: \"{}\"\n{extra}", upstream.url("/mcp"))
}

async fn post(gateway: &Gateway, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request =
        post_jsonrpc(gateway.url(path), r#"{"jsonrpc":"2.0","id":"r-1","method":"tools/list"}"#);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.expect("send")
}

fn header(r: &Recorded, name: &str) -> Option<String> {
    r.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_credentials_reach_the_upstream_in_place_of_the_callers() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let cases = [
        (
            "app_auth: {type: api_key, name: X-Api-Key, value: \"${env:PT_KEY}\"}",
            "/gh",
            "x-api-key",
            "key-123",
        ),
        ("app_auth: {type: bearer, token: \"${env:PT_KEY}\"}", "/gh", "authorization", "Bearer key-123"),
        (
            "app_auth: {type: basic, username: svc, password: \"${env:PT_KEY}\"}",
            "/gh",
            "authorization",
            "Basic c3ZjOmtleS0xMjM=",
        ),
    ];
    for (auth, path, name, expected) in cases {
        let gateway =
            Gateway::start_with_env(&server(&upstream, &format!("    {auth}\n")), &[("PT_KEY", "key-123")]);
        let response =
            post(&gateway, path, &[("authorization", "Bearer caller-token"), (name, "from-the-caller")])
                .await;
        assert_eq!(response.status(), 200, "{auth}");
        let last = upstream.requests().pop().unwrap();
        assert_eq!(header(&last, name).as_deref(), Some(expected), "{auth}");
        assert_eq!(last.headers.get_all(name).iter().count(), 1, "{auth}: exactly one {name}");
        if name != "authorization" {
            assert!(last.headers.get("authorization").is_none(), "the caller's token is stripped");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_in_the_query_keeps_the_rest_of_the_query() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start_with_env(
        &server(
            &upstream,
            "    app_auth: {type: api_key, name: api_key, in: query, value: \"${env:PT_KEY}\"}\n",
        ),
        &[("PT_KEY", "k&y=1 2")],
    );
    assert_eq!(post(&gateway, "/gh/sub?x=1&api_key=attacker&y=a%20b", &[]).await.status(), 200);
    assert_eq!(post(&gateway, "/gh", &[]).await.status(), 200);
    let targets: Vec<String> = upstream.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/mcp/sub?x=1&y=a%20b&api_key=k%26y%3D1+2", "/mcp?api_key=k%26y%3D1+2"]);
}

fn client_credentials(endpoint: &MockTokenEndpoint, style: &str) -> String {
    format!(
        "    app_auth:\n      type: oauth2_client_credentials\n      token_url: \"{}\"\n      client_id: portcullis-test\n      client_secret: \"${{env:PT_SECRET}}\"\n      scopes: [repo, \"read:org\"]\n      audience: https://api.example.com\n      auth_method: {style}\n",
        endpoint.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_requests_are_exact_in_both_client_auth_styles() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    for style in ["client_secret_basic", "client_secret_post"] {
        let endpoint = MockTokenEndpoint::start(3600).await;
        let gateway = Gateway::start_with_env(
            &server(&upstream, &client_credentials(&endpoint, style)),
            &[("PT_SECRET", AWKWARD_SECRET)],
        );
        assert_eq!(post(&gateway, "/gh", &[]).await.status(), 200);
        assert_eq!(
            header(&upstream.requests().pop().unwrap(), "authorization").as_deref(),
            Some("Bearer service-token-1")
        );
        let request = endpoint.requests().pop().unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(header(&request, "content-type").as_deref(), Some("application/x-www-form-urlencoded"));
        let mut fields = form(&request);
        fields.sort();
        match style {
            "client_secret_basic" => {
                let expected = format!("portcullis-test:{}", "s3%3Acr%2Bt%2520%2Fx");
                let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(expected));
                assert_eq!(header(&request, "authorization"), Some(basic));
                assert_eq!(
                    fields,
                    [
                        ("audience".into(), "https://api.example.com".into()),
                        ("grant_type".into(), "client_credentials".into()),
                        ("scope".into(), "repo read:org".into())
                    ]
                );
            }
            _ => {
                assert!(header(&request, "authorization").is_none());
                assert_eq!(
                    fields,
                    [
                        ("audience".to_owned(), "https://api.example.com".to_owned()),
                        ("client_id".into(), "portcullis-test".into()),
                        ("client_secret".into(), AWKWARD_SECRET.into()),
                        ("grant_type".into(), "client_credentials".into()),
                        ("scope".into(), "repo read:org".into()),
                    ]
                );
                assert!(
                    String::from_utf8_lossy(&request.body).contains("client_secret=s3%3Acr%2Bt%2520%2Fx"),
                    "form-encoded on the wire"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_on_a_cold_cache_make_one_token_request() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let endpoint = MockTokenEndpoint::start(3600).await;
    endpoint.set(TokenMode::Stall(Duration::from_millis(300)));
    let gateway = Gateway::start_with_env(
        &server(&upstream, &client_credentials(&endpoint, "client_secret_basic")),
        &[("PT_SECRET", "s")],
    );
    // The stall answers with a body that is not a token; switch to issuing before it returns.
    endpoint.set(TokenMode::Issue);
    let requests = (0..200).map(|_| {
        let gateway = &gateway;
        async move { post(gateway, "/gh", &[]).await.status() }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(endpoint.requests().len(), 1, "one token request for 200 concurrent misses");
    assert!(upstream
        .requests()
        .iter()
        .all(|r| header(r, "authorization").as_deref() == Some("Bearer service-token-1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_renewed_ahead_of_expiry_and_never_used_after_it() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let endpoint = MockTokenEndpoint::start(3).await;
    let gateway = Gateway::start_with_env(
        &format!(
            "token_cache: {{expiry_skew: 1s, refresh_at: 0.5}}\n{}",
            server(&upstream, &client_credentials(&endpoint, "client_secret_basic"))
        ),
        &[("PT_SECRET", "s")],
    );
    let started = Instant::now();
    let mut seen: Vec<(Duration, String)> = Vec::new();
    while started.elapsed() < Duration::from_millis(5500) {
        assert_eq!(post(&gateway, "/gh", &[]).await.status(), 200);
        let token = header(&upstream.requests().pop().unwrap(), "authorization").unwrap();
        seen.push((started.elapsed(), token));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // When each token was issued, by the endpoint's request log order.
    let issued: Vec<Duration> = endpoint
        .requests()
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let token = format!("Bearer service-token-{}", i + 1);
            seen.iter().find(|(_, t)| *t == token).map_or(Duration::MAX, |(at, _)| *at)
        })
        .collect();
    assert!(endpoint.issued() >= 2, "the token was renewed");
    for (at, token) in &seen {
        let n: usize = token.trim_start_matches("Bearer service-token-").parse().unwrap();
        let first_use = issued[n - 1];
        assert!(
            *at <= first_use + Duration::from_secs(3),
            "{token} used {at:?}, past its 3 s life (first used {first_use:?})"
        );
    }
    // Renewal happened before the old token ran out: no request waited on a cold cache after the first.
    let misses =
        plain_client().get(gateway.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        misses.contains(r#"portcullis_token_cache_total{result="miss",source="gh/app_auth"} 1"#),
        "{misses}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_endpoint_is_a_503_and_the_upstream_is_not_called() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let endpoint = MockTokenEndpoint::start(3600).await;
    endpoint.set(TokenMode::Fail);
    let gateway = Gateway::start_with_env(
        &format!(
            "token_cache: {{failure_backoff: 500ms}}\n{}",
            server(&upstream, &client_credentials(&endpoint, "client_secret_basic"))
        ),
        &[("PT_SECRET", "s")],
    );
    let response = post(&gateway, "/gh", &[("authorization", "Bearer caller-token")]).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "r-1");
    assert_eq!(body["error"]["data"]["reason"], "credential_unavailable");
    assert_eq!(body["error"]["data"]["source"], "gh/app_auth");
    let attempts = endpoint.requests().len();
    assert_eq!(attempts, 3, "bounded retries with backoff");
    for _ in 0..5 {
        assert_eq!(post(&gateway, "/gh", &[]).await.status(), 503);
    }
    assert_eq!(endpoint.requests().len(), attempts, "inside the failure backoff nothing more is sent");
    assert!(upstream.requests().is_empty(), "never forwarded, and never with the inbound token");
    endpoint.set(TokenMode::Issue);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(post(&gateway, "/gh", &[]).await.status(), 200, "recovers after the backoff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_401_drops_the_cached_token_and_is_not_relayed_as_the_gateways_challenge() {
    let upstream = MockUpstream::start(|r| {
        if header(r, "authorization").as_deref() == Some("Bearer service-token-1") {
            Reply::Full {
                status: 401,
                headers: vec![("www-authenticate".into(), "Bearer realm=\"upstream\"".into())],
                body: bytes::Bytes::from_static(b"revoked"),
            }
        } else {
            Reply::json("{}")
        }
    })
    .await;
    let endpoint = MockTokenEndpoint::start(3600).await;
    let gateway = Gateway::start_with_env(
        &server(&upstream, &client_credentials(&endpoint, "client_secret_basic")),
        &[("PT_SECRET", "s")],
    );
    let refused = post(&gateway, "/gh", &[]).await;
    assert_eq!(refused.status(), 502);
    assert!(refused.headers().get("www-authenticate").is_none());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["data"]["reason"], "upstream_rejected_credential");
    assert_eq!(body["id"], "r-1");
    // The cached token is dropped in the background; the next requests fetch a new one.
    let mut status = 0;
    for _ in 0..50 {
        status = post(&gateway, "/gh", &[]).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(
        header(&upstream.requests().pop().unwrap(), "authorization").as_deref(),
        Some("Bearer service-token-2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_credentials_are_rewritten_and_never_logged() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start_with_env(
        &server(&upstream, "    app_auth: {type: one_time}\n"),
        &[("PORTCULLIS_LOG", "debug")],
    );
    let secret = "one-time-secret-b8f1e2";
    assert_eq!(
        post(
            &gateway,
            "/gh",
            &[
                ("x-upstream-authorization", &format!("Bearer {secret}")),
                ("authorization", "Bearer gateway-token")
            ]
        )
        .await
        .status(),
        200
    );
    let last = upstream.requests().pop().unwrap();
    assert_eq!(header(&last, "authorization"), Some(format!("Bearer {secret}")));
    assert!(last.headers.get("x-upstream-authorization").is_none());
    let missing = post(&gateway, "/gh", &[]).await;
    assert_eq!(missing.status(), 401);
    let body: Value = missing.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("X-Upstream-Authorization"), "{body}");
    wait_for("two access lines", || gateway.log().matches("portcullis::access").count() >= 2).await;
    assert!(!gateway.log().contains(secret), "the one-time credential reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_forwards_the_callers_own_authorization() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&server(&upstream, "    app_auth: {type: passthrough}\n"));
    assert_eq!(
        post(&gateway, "/gh", &[("authorization", "Basic dXNlcjpwdw=="), ("cookie", "c=1")]).await.status(),
        200
    );
    let last = upstream.requests().pop().unwrap();
    assert_eq!(header(&last, "authorization").as_deref(), Some("Basic dXNlcjpwdw=="));
    assert!(last.headers.get("cookie").is_none());
}

async fn jwt_gateway(
    idp: &MockIdp,
    upstream: &MockUpstream,
    endpoint: &MockTokenEndpoint,
    headers: &str,
    env: &[(&str, &str)],
) -> Gateway {
    Gateway::start_with_env(
        &format!(
            "{}servers:\n  - name: gh\n    path: /gh\n    upstream: \"{}\"\n    agent_auth: {{mode: jwt, provider: idp, audiences: [\"{AUDIENCE}\"]}}\n    outbound_headers:\n{headers}",
            idp.provider_yaml("idp", ""),
            upstream.url("/mcp"),
        )
        .replace("TOKEN_URL", &endpoint.url()),
        env,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_exchange_is_exact_and_per_caller() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let endpoint = MockTokenEndpoint::start(3600).await;
    let headers = "      - header: X-On-Behalf-Of\n        prefix: \"Bearer \"\n        from: token_exchange\n        token_url: \"TOKEN_URL\"\n        client_id: gateway\n        client_secret: \"${env:PT_SECRET}\"\n        audience: https://api.example.com\n        resource: https://api.example.com/v1\n        scope: \"read write\"\n        requested_token_type: urn:ietf:params:oauth:token-type:access_token\n        auth_method: client_secret_post\n";
    let gateway = jwt_gateway(&idp, &upstream, &endpoint, headers, &[("PT_SECRET", AWKWARD_SECRET)]).await;
    let alice = token("alice");
    let bob = token("bob");
    for t in [&alice, &bob, &alice, &bob, &alice] {
        assert_eq!(post(&gateway, "/gh", &[("authorization", &format!("Bearer {t}"))]).await.status(), 200);
    }
    let exchanges = endpoint.requests();
    assert_eq!(exchanges.len(), 2, "one exchange per caller, then cached");
    let mut fields = form(&exchanges[0]);
    fields.sort();
    assert_eq!(
        fields,
        [
            ("audience".to_owned(), "https://api.example.com".to_owned()),
            ("client_id".into(), "gateway".into()),
            ("client_secret".into(), AWKWARD_SECRET.into()),
            ("grant_type".into(), "urn:ietf:params:oauth:grant-type:token-exchange".into()),
            ("requested_token_type".into(), "urn:ietf:params:oauth:token-type:access_token".into()),
            ("resource".into(), "https://api.example.com/v1".into()),
            ("scope".into(), "read write".into()),
            ("subject_token".into(), alice.clone()),
            ("subject_token_type".into(), "urn:ietf:params:oauth:token-type:access_token".into()),
        ]
    );
    let tail = |t: &str| t.chars().rev().take(10).collect::<String>().chars().rev().collect::<String>();
    let received: Vec<String> =
        upstream.requests().iter().map(|r| header(r, "x-on-behalf-of").unwrap()).collect();
    for (i, value) in received.iter().enumerate() {
        let caller = if i % 2 == 0 { &alice } else { &bob };
        assert!(
            value.starts_with("Bearer exchanged-") && value.ends_with(&tail(caller)),
            "request {i} got {value}"
        );
    }
    assert!(upstream.requests().iter().all(|r| r.headers.get("authorization").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_token_claim_static_and_service_token_headers() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let endpoint = MockTokenEndpoint::start(3600).await;
    let headers = "      - {header: x-ms-query-source-authorization, from: caller_token, prefix: \"Bearer \"}\n      - {header: x-user-email, from: claim, claim: email}\n      - {header: x-user-sub, from: claim, claim: sub}\n      - {header: x-tenant, from: static, value: \"${env:PT_TENANT}\"}\n      - {header: x-service, from: service_token, prefix: \"Bearer \", token_url: \"TOKEN_URL\", client_id: svc, client_secret: \"${env:PT_SECRET}\"}\n";
    let gateway =
        jwt_gateway(&idp, &upstream, &endpoint, headers, &[("PT_SECRET", "s"), ("PT_TENANT", "tenant-7")])
            .await;
    let mut c = claims("alice");
    c["email"] = json!("alice@example.com");
    let alice = sign(Algorithm::RS256, "rsa-a", "rsa-a", &c);
    let sent = post(
        &gateway,
        "/gh",
        &[
            ("authorization", &format!("Bearer {alice}")),
            ("x-user-email", "admin@example.com"),
            ("x-tenant", "0"),
        ],
    )
    .await;
    assert_eq!(sent.status(), 200);
    let last = upstream.requests().pop().unwrap();
    assert_eq!(header(&last, "x-ms-query-source-authorization"), Some(format!("Bearer {alice}")));
    assert_eq!(header(&last, "x-user-email").as_deref(), Some("alice@example.com"));
    assert_eq!(header(&last, "x-user-sub").as_deref(), Some("alice"));
    assert_eq!(header(&last, "x-tenant").as_deref(), Some("tenant-7"));
    assert_eq!(header(&last, "x-service").as_deref(), Some("Bearer service-token-1"));
    assert!(last.headers.get("authorization").is_none());

    // Without the claim, no header; the caller's own header of that name never passes.
    let no_email = post(
        &gateway,
        "/gh",
        &[("authorization", &format!("Bearer {}", token("bob"))), ("x-user-email", "admin@example.com")],
    )
    .await;
    assert_eq!(no_email.status(), 200);
    assert!(upstream.requests().pop().unwrap().headers.get("x-user-email").is_none());

    // A claim with CR/LF fails the request instead of splitting a header.
    let mut evil = claims("mallory");
    evil["email"] = json!("m@example.com\r\nx-admin: true");
    let evil = sign(Algorithm::RS256, "rsa-a", "rsa-a", &evil);
    let before = upstream.requests().len();
    let refused = post(&gateway, "/gh", &[("authorization", &format!("Bearer {evil}"))]).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["data"]["source"], "x-user-email");
    assert_eq!(upstream.requests().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_or_the_admin_config() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let endpoint = MockTokenEndpoint::start(3600).await;
    let secrets = [
        ("PT_KEY", "api-key-9c1d77"),
        ("PT_BEARER", "bearer-5e2a10"),
        ("PT_PASS", "password-77aa31"),
        ("PT_SECRET", "client-secret-41bd0c"),
        ("PT_STATIC", "static-header-0f9e3b"),
    ];
    let yaml = format!(
        "{}servers:\n  - {{name: a, path: /a, upstream: \"{u}\", agent_auth: {{mode: jwt, provider: idp, audiences: [\"{AUDIENCE}\"]}}, app_auth: {{type: api_key, name: x-key, value: \"${{env:PT_KEY}}\"}}, outbound_headers: [{{header: x-static, from: static, value: \"${{env:PT_STATIC}}\"}}, {{header: x-caller, from: caller_token}}]}}\n  - {{name: b, path: /b, upstream: \"{u}\", agent_auth: {{mode: jwt, provider: idp, audiences: [\"{AUDIENCE}\"]}}, app_auth: {{type: bearer, token: \"${{env:PT_BEARER}}\"}}}}\n  - {{name: c, path: /c, upstream: \"{u}\", agent_auth: {{mode: jwt, provider: idp, audiences: [\"{AUDIENCE}\"]}}, app_auth: {{type: basic, username: u, password: \"${{env:PT_PASS}}\"}}}}\n  - {{name: d, path: /d, upstream: \"{u}\", agent_auth: {{mode: jwt, provider: idp, audiences: [\"{AUDIENCE}\"]}}, app_auth: {{type: oauth2_client_credentials, token_url: \"{t}\", client_id: c, client_secret: \"${{env:PT_SECRET}}\", auth_method: client_secret_post}}, outbound_headers: [{{header: x-obo, from: token_exchange, token_url: \"{t}\", client_id: c, client_secret: \"${{env:PT_SECRET}}\"}}]}}\n  - {{name: e, path: /e, upstream: \"{u}\", agent_auth: {{mode: jwt, provider: idp, audiences: [\"{AUDIENCE}\"]}}, app_auth: {{type: one_time}}}}\n",
        idp.provider_yaml("idp", ""),
        u = upstream.url("/mcp"),
        t = endpoint.url(),
    );
    let mut env: Vec<(&str, &str)> = secrets.to_vec();
    env.push(("PORTCULLIS_LOG", "debug"));
    let gateway = Gateway::start_with_env(&yaml, &env);
    let caller = token("alice");
    for path in ["/a", "/b", "/c", "/d", "/e"] {
        let status = post(
            &gateway,
            path,
            &[
                ("authorization", &format!("Bearer {caller}")),
                ("x-upstream-authorization", "Bearer one-time-8d7e6f"),
            ],
        )
        .await
        .status();
        assert_eq!(status, 200, "{path}");
    }
    let config = plain_client().get(gateway.admin_url("/config")).send().await.unwrap().text().await.unwrap();
    wait_for("five access lines", || gateway.log().matches("portcullis::access").count() >= 5).await;
    let log = gateway.log();
    let issued = ["service-token-1", "exchanged-2"];
    for secret in secrets.iter().map(|(_, v)| *v).chain(["one-time-8d7e6f", caller.as_str()]).chain(issued) {
        assert!(!log.contains(secret), "{secret} is in the debug log");
        assert!(!config.contains(secret), "{secret} is in /config");
    }
    assert!(config.contains("${env:PT_SECRET}"), "{config}");
}
