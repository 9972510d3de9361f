//! Configuration reload: SIGHUP, file edits and `POST /reload` apply changes; bad files and
//! socket changes keep the running config; streams and caches survive.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use support::client;
use support::gateway::Gateway;
use support::idp::{token, MockIdp, AUDIENCE};
use support::upstream::{MockUpstream, Reply, Step};
use support::{plain_client, PATIENCE};

fn servers(entries: &[(&str, &str)]) -> String {
    let mut yaml = String::from("agent_auth: {mode: none, allow_unauthenticated: true}\nservers:\n");
    for (name, upstream) in entries {
        yaml.push_str(&format!("  - {{name: {name}, path: /{name}, upstream: \"{upstream}\"}}\n"));
    }
    yaml
}

/// Rewrites the config body (after the generated listen/admin header) in place.
fn rewrite(gateway: &Gateway, body: &str) {
    let current = std::fs::read_to_string(gateway.config_path()).unwrap();
    let header: String = current
        .lines()
        .take_while(|l| {
            l.starts_with(' ')
                || ["listen:", "public_url:", "admin:", "http1_engine:"].iter().any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let next = format!("{header}{body}");
    // Write to a temporary file and rename it over the config, as editors and deploy tools do.
    let tmp = gateway.config_path().with_extension("tmp");
    std::fs::write(&tmp, next).unwrap();
    std::fs::rename(&tmp, gateway.config_path()).unwrap();
}

async fn status(gateway: &Gateway, path: &str) -> u16 {
    client().post(gateway.url(path)).body("{}").send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

async fn eventually_status(gateway: &Gateway, path: &str, expected: u16) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = status(gateway, path).await;
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {got}, expected {expected}\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin_reload(gateway: &Gateway) -> (u16, Value) {
    let response = plain_client().post(gateway.admin_url("/reload")).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_routing_change_and_does_not_kill_the_process() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let mut gateway = Gateway::start(&servers(&[("a", &upstream.url("/mcp"))]));
    assert_eq!(status(&gateway, "/b").await, 404);
    // Write the new file first, then signal (the watch may win the race; either way /b appears).
    rewrite(&gateway, &servers(&[("a", &upstream.url("/mcp")), ("b", &upstream.url("/mcp"))]));
    // SAFETY: signalling the child this test started, by its own id.
    unsafe { libc::kill(gateway.pid(), libc::SIGHUP) };
    eventually_status(&gateway, "/b", 200).await;
    unsafe { libc::kill(gateway.pid(), libc::SIGHUP) };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(gateway.is_running(), "SIGHUP must never end the process");
    assert_eq!(status(&gateway, "/a").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_file_applies_a_routing_change() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&servers(&[("a", &upstream.url("/mcp"))]));
    let before =
        plain_client().get(gateway.admin_url("/readyz")).send().await.unwrap().json::<Value>().await.unwrap();
    rewrite(&gateway, &servers(&[("b", &upstream.url("/mcp"))]));
    eventually_status(&gateway, "/b", 200).await;
    assert_eq!(status(&gateway, "/a").await, 404);
    let after =
        plain_client().get(gateway.admin_url("/readyz")).send().await.unwrap().json::<Value>().await.unwrap();
    assert_ne!(before["config_hash"], after["config_hash"]);
    let m = support::metrics::text(&gateway).await;
    assert!(m.contains(&format!("portcullis_config_info{{hash={}}} 1", after["config_hash"])), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_reloads_and_reports() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&servers(&[("a", &upstream.url("/mcp"))]));
    rewrite(&gateway, &servers(&[("a", &upstream.url("/mcp")), ("c", &upstream.url("/mcp"))]));
    let (code, body) = admin_reload(&gateway).await;
    assert_eq!(code, 200, "{body}");
    assert!(body["result"] == "ok" || body["result"] == "unchanged", "{body}");
    assert_eq!(status(&gateway, "/c").await, 200);
    let (code, body) = admin_reload(&gateway).await;
    assert_eq!((code, body["result"].as_str()), (200, Some("unchanged")));
    assert_eq!(plain_client().get(gateway.admin_url("/reload")).send().await.unwrap().status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_keeps_the_running_config_and_is_counted() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&servers(&[("a", &upstream.url("/mcp"))]));
    rewrite(&gateway, "agent_auth: {mode: none, allow_unauthenticated: true}\nservers:\n  - {name: a, path: nope, upstream: \"http://127.0.0.1:1\"}\n");
    let (code, body) = admin_reload(&gateway).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["errors"][0],
        "servers[0].path: invalid path \"nope\" (hint: a path looks like /github or /tools/search)"
    );
    assert_eq!(status(&gateway, "/a").await, 200, "the running config stays");
    assert!(support::metrics::text(&gateway)
        .await
        .contains("portcullis_config_reloads_total{result=\"error\"}"));
    assert!(
        gateway.log().contains(
            "config reload failed, keeping the running config: error: servers[0].path: invalid path"
        ),
        "{}",
        gateway.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_change_needs_an_upgrade_and_is_not_half_applied() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&servers(&[("a", &upstream.url("/mcp"))]));
    let current = std::fs::read_to_string(gateway.config_path()).unwrap();
    let moved = current
        .replace(&format!("127.0.0.1:{}\"", gateway.port), &format!("127.0.0.1:{}\"", support::free_port()));
    let moved = format!("{moved}  - {{name: b, path: /b, upstream: \"{}\"}}\n", upstream.url("/mcp"));
    std::fs::write(gateway.config_path(), moved).unwrap();
    let (code, body) = admin_reload(&gateway).await;
    assert_eq!((code, body["result"].as_str()), (409, Some("needs_upgrade")), "{body}");
    assert_eq!(status(&gateway, "/b").await, 404, "nothing of the change was applied");
    assert_eq!(status(&gateway, "/a").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_survives_a_reload_that_keeps_its_server() {
    let upstream = MockUpstream::start(|_| {
        Reply::sse(
            vec![
                Step::Write(Bytes::from_static(b"data: before\n\n")),
                Step::WaitForRelease,
                Step::Write(Bytes::from_static(b"data: after\n\n")),
            ],
            false,
        )
    })
    .await;
    let gateway = Gateway::start(&servers(&[("a", &upstream.url("/mcp"))]));
    let mut stream =
        client().get(gateway.url("/a")).header("accept", "text/event-stream").send().await.unwrap();
    let first = tokio::time::timeout(PATIENCE, stream.chunk()).await.unwrap().unwrap().unwrap();
    assert_eq!(first, Bytes::from_static(b"data: before\n\n"));
    rewrite(&gateway, &servers(&[("a", &upstream.url("/mcp")), ("z", &upstream.url("/mcp"))]));
    let (code, _) = admin_reload(&gateway).await;
    assert_eq!(code, 200);
    upstream.release();
    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(PATIENCE, stream.chunk()).await.unwrap().unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"data: after\n\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_identity_providers_keep_their_keys_across_a_reload() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let body = |extra: &str| {
        format!("{}agent_auth: {{mode: jwt, provider: idp, audiences: [\"{AUDIENCE}\"]}}\nservers:\n  - {{name: a, path: /a, upstream: \"{}\"}}\n{extra}", idp.provider_yaml("idp", ""), upstream.url("/mcp"))
    };
    let gateway = Gateway::start(&body(""));
    let ok = |g: &Gateway, path: &'static str| {
        let url = g.url(path);
        async move {
            client().post(url).bearer_auth(token("alice")).body("{}").send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(ok(&gateway, "/a").await, 200);
    let fetches = idp.fetches();
    rewrite(&gateway, &body(&format!("  - {{name: b, path: /b, upstream: \"{}\"}}\n", upstream.url("/mcp"))));
    let (code, _) = admin_reload(&gateway).await;
    assert_eq!(code, 200);
    assert_eq!(ok(&gateway, "/b").await, 200);
    assert_eq!(ok(&gateway, "/a").await, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(idp.fetches(), fetches, "a reload that keeps the provider makes no JWKS request");
}

/// Sum of every `portcullis_config_reloads_total` series.
async fn reload_count(gateway: &Gateway) -> f64 {
    support::metrics::text(gateway)
        .await
        .lines()
        .filter(|l| l.starts_with("portcullis_config_reloads_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_file_is_not_an_edit() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&servers(&[("a", &upstream.url("/mcp"))]));
    // Let the start-up settle, then read the file as a backup job or an operator's `cat` would.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = reload_count(&gateway).await;
    for _ in 0..3 {
        std::fs::read_to_string(gateway.config_path()).unwrap();
    }
    // Longer than the settle time of a file event, so a reload it caused would have run (and,
    // if a reload's own read counted as an event, run again).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reload_count(&gateway).await, before, "reads must not reload\n{}", gateway.log());
    assert_eq!(status(&gateway, "/a").await, 200);
}
