//! An upstream's own authentication challenge (`WWW-Authenticate` on a 401 or 403, often naming an
//! internal `resource_metadata` URL) reaches the client only when the client's own credential
//! went upstream; otherwise the gateway answers for itself and logs the challenge.

mod support;

use bytes::Bytes;
use serde_json::Value;
use support::gateway::Gateway;
use support::upstream::{MockUpstream, Reply};
use support::wait_for;
use support::{free_port, post_jsonrpc};

/// Where the upstream's challenge sends a client: an authorization server only the upstream's
/// own network knows.
const INTERNAL_METADATA: &str = "https://auth.internal.example/.well-known/oauth-protected-resource/mcp";

/// An upstream that answers every request with the status its path ends in (`/mcp/401`,
/// `/mcp/403`), with a challenge, or without one under `/mcp/bare/…`.
async fn challenging_upstream() -> MockUpstream {
    MockUpstream::start(|r| {
        let path = r.target.split('?').next().unwrap_or_default();
        let status: u16 = path.rsplit('/').next().and_then(|s| s.parse().ok()).unwrap_or(200);
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if !r.target.contains("/bare/") {
            headers.push((
                "www-authenticate".to_owned(),
                format!("Bearer error=\"invalid_token\", resource_metadata=\"{INTERNAL_METADATA}\""),
            ));
        }
        headers.push(("x-upstream-detail".to_owned(), "internal".to_owned()));
        Reply::Full { status, headers, body: Bytes::from_static(br#"{"upstream":"refused"}"#) }
    })
    .await
}

/// One server `s` per `(name, app_auth)`, each in front of `upstream`.
fn servers(upstream: &MockUpstream, app_auths: &[(&str, &str)]) -> String {
    let mut yaml = String::from("agent_auth: {mode: passthrough}\nservers:\n");
    for (name, app_auth) in app_auths {
        yaml.push_str(&format!(
            "  - name: {name}\n    path: /{name}\n    upstream: \"{}\"\n{app_auth}",
            upstream.url("/mcp")
        ));
    }
    yaml
}

/// A JSON-RPC call carrying a gateway token and a one-time upstream credential.
async fn call(url: String) -> reqwest::Response {
    post_jsonrpc(url, r#"{"jsonrpc":"2.0","id":"c-7","method":"tools/call"}"#)
        .header("authorization", "Bearer gateway-token-5d1e")
        .header("x-upstream-authorization", "Bearer callers-own-9a4c")
        .send()
        .await
        .expect("send")
}

/// Checks that `response` is the gateway's own `reason` error for call `c-7`, with nothing of
/// the upstream's answer in it.
async fn assert_gateways_own(response: reqwest::Response, reason: &str, what: &str) {
    assert_eq!(response.status(), 502, "{what}");
    assert!(response.headers().get("www-authenticate").is_none(), "{what}: the upstream's challenge leaked");
    assert!(response.headers().get("x-upstream-detail").is_none(), "{what}: the upstream's fields leaked");
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"]["data"]["reason"], reason, "{what}: {body}");
    assert_eq!(body["id"], "c-7", "{what}: a JSON-RPC error for the call");
    assert!(!body.to_string().contains("internal.example"), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_outbound_credential_an_upstream_challenge_is_the_gateways_502_and_goes_to_the_log() {
    let upstream = challenging_upstream().await;
    let gateway = Gateway::start(&servers(&upstream, &[("none", "")]));
    for status in [401, 403] {
        let response = call(gateway.url(&format!("/none/{status}"))).await;
        assert_gateways_own(response, "upstream_requires_credentials", &format!("{status}")).await;
    }
    // A refusal without a challenge is the upstream's verdict, passed through as it came.
    for status in [401, 403] {
        let response = call(gateway.url(&format!("/none/bare/{status}"))).await;
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.text().await.unwrap(), r#"{"upstream":"refused"}"#);
    }
    wait_for("the challenge in the log", || gateway.log().contains(INTERNAL_METADATA)).await;
    let log = gateway.log();
    assert!(log.contains("upstream_requires_credentials"), "{log}");
    for secret in ["gateway-token-5d1e", "callers-own-9a4c"] {
        assert!(!log.contains(secret), "a credential reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_gateways_own_credential_an_upstream_challenge_is_a_rejected_credential() {
    let upstream = challenging_upstream().await;
    let gateway = Gateway::start_with_env(
        &servers(
            &upstream,
            &[
                ("bearer", "    app_auth: {type: bearer, token: \"${env:PT_TOKEN}\"}\n"),
                (
                    "query",
                    "    app_auth: {type: api_key, name: key, value: \"${env:PT_TOKEN}\", in: query}\n",
                ),
            ],
        ),
        &[("PT_TOKEN", "service-secret-77")],
    );
    for path in ["/bearer/401", "/bearer/403", "/bearer/bare/401", "/query/401", "/query/403"] {
        assert_gateways_own(call(gateway.url(path)).await, "upstream_rejected_credential", path).await;
    }
    // A plain 403 to the gateway's credential is a verdict on what was asked, not on who asked.
    assert_eq!(call(gateway.url("/bearer/bare/403")).await.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_own_credential_gets_the_upstreams_challenge_unchanged() {
    let upstream = challenging_upstream().await;
    let gateway = Gateway::start(&servers(
        &upstream,
        &[
            ("passthrough", "    app_auth: {type: passthrough}\n"),
            ("one_time", "    app_auth: {type: one_time}\n"),
        ],
    ));
    for path in ["/passthrough/401", "/passthrough/403", "/one_time/401", "/one_time/403"] {
        let response = call(gateway.url(path)).await;
        assert_eq!(response.status().as_u16(), path[path.len() - 3..].parse::<u16>().unwrap(), "{path}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.contains(INTERNAL_METADATA), "{path}: {challenge}");
        assert_eq!(response.text().await.unwrap(), r#"{"upstream":"refused"}"#, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_the_gateway_answers_for_the_upstream_too() {
    let upstream = challenging_upstream().await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "listen:\n  - address: \"127.0.0.1:{port}\"\n    tls: {{cert: \"{}\", key: \"{}\"}}\npublic_url: https://localhost:{port}\nadmin: {{listen: \"127.0.0.1:{admin}\"}}\n{}",
        cert.display(),
        key.display(),
        servers(&upstream, &[("none", "")]),
    );
    let _gateway = Gateway::start_with_config(&yaml, port, admin, &[]);
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(format!("https://localhost:{port}/none/401"))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":"c-7","method":"tools/call"}"#)
        .send()
        .await
        .expect("h2 request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_gateways_own(response, "upstream_requires_credentials", "over HTTP/2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_on_any_other_upstream_answer_stays_behind_unless_the_credential_was_the_callers() {
    let upstream = challenging_upstream().await;
    let gateway =
        Gateway::start(&servers(&upstream, &[("none", ""), ("own", "    app_auth: {type: one_time}\n")]));
    for status in [200, 400, 500] {
        let response = call(gateway.url(&format!("/none/{status}"))).await;
        assert_eq!(response.status(), status, "the upstream's own answer passes through");
        assert!(
            response.headers().get("www-authenticate").is_none(),
            "{status}: the upstream's challenge leaked"
        );
    }
    let response = call(gateway.url("/own/400")).await;
    assert_eq!(response.status(), 400);
    assert!(
        response.headers().get("www-authenticate").is_some(),
        "the caller's own credential's challenge is theirs"
    );
}
