//! Upstream pools: balancing, health checks, and MCP session affinity through gateway-wrapped
//! session ids.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use support::gateway::Gateway;
use support::upstream::{MockUpstream, Recorded, Reply, Step};
use support::{client, post_jsonrpc};
use support::{plain_client, PATIENCE};

/// A replica that issues session ids of its own on `initialize`, reports its health, streams on
/// GET and speaks legacy SSE on `/sse`.
struct Replica {
    server: MockUpstream,
    healthy: Arc<AtomicBool>,
}

async fn replica(n: usize) -> Replica {
    let healthy = Arc::new(AtomicBool::new(true));
    let sessions = Arc::new(AtomicUsize::new(0));
    let h = healthy.clone();
    let server = MockUpstream::start(move |r| match (r.method.as_str(), r.target.as_str()) {
        ("GET", "/health") => {
            let status = if h.load(Ordering::SeqCst) { 200 } else { 503 };
            Reply::Full { status, headers: vec![], body: Bytes::new() }
        }
        ("GET", "/sse") => Reply::sse(
            vec![Step::Write(Bytes::from(format!(
                "event: endpoint\ndata: /message?sessionId=legacy-r{n}\n\n"
            )))],
            true,
        ),
        ("GET", _) => Reply::sse(vec![Step::Write(Bytes::from(format!("data: from r{n}\n\n")))], false),
        ("POST", _) if String::from_utf8_lossy(&r.body).contains("initialize") => {
            let id = format!("r{n}-session-{}", sessions.fetch_add(1, Ordering::SeqCst));
            Reply::Full {
                status: 200,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("mcp-session-id".into(), id),
                ],
                body: Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            }
        }
        _ => Reply::json(r#"{"jsonrpc":"2.0","id":2,"result":{}}"#),
    })
    .await;
    Replica { server, healthy }
}

fn pool_config(replicas: &[&Replica], extra: &str) -> String {
    let urls: Vec<String> = replicas.iter().map(|r| format!("\"{}\"", r.server.url(""))).collect();
    format!(
        "agent_auth: {{mode: none, allow_unauthenticated: true}}\nservers:\n  - name: pool\n    path: /pool\n    upstreams: [{}]\n{extra}",
        urls.join(", ")
    )
}

async fn initialize(gateway: &Gateway) -> String {
    let response = post_jsonrpc(
        gateway.url("/pool/mcp"),
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["mcp-session-id"].to_str().unwrap().to_owned()
}

async fn in_session(gateway: &Gateway, method: reqwest::Method, session: &str) -> u16 {
    let response = client()
        .request(method, gateway.url("/pool/mcp"))
        .header("mcp-session-id", session)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    status
}

fn session_requests(r: &Replica) -> Vec<Recorded> {
    r.server.requests().into_iter().filter(|q| q.headers.contains_key("mcp-session-id")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_a_session_lands_on_the_replica_that_created_it() {
    let replicas = [replica(0).await, replica(1).await, replica(2).await];
    let gateway = Gateway::start(&pool_config(&replicas.iter().collect::<Vec<_>>(), ""));
    let sessions: Vec<String> = futures_util::future::join_all((0..3).map(|_| initialize(&gateway))).await;
    let owners: Vec<usize> = replicas.iter().map(|r| r.server.requests().len()).collect();
    assert_eq!(owners, [1, 1, 1], "new sessions are spread round-robin");
    for session in &sessions {
        assert!(session.starts_with("pc1."), "the client sees a wrapped id: {session}");
    }
    let wrapped = &sessions[0];
    for _ in 0..50 {
        assert_eq!(in_session(&gateway, reqwest::Method::POST, wrapped).await, 200);
    }
    assert_eq!(in_session(&gateway, reqwest::Method::GET, wrapped).await, 200);
    assert_eq!(in_session(&gateway, reqwest::Method::DELETE, wrapped).await, 200);
    let with_session: Vec<Vec<Recorded>> = replicas.iter().map(session_requests).collect();
    let (owner, _) = with_session
        .iter()
        .enumerate()
        .find(|(_, reqs)| !reqs.is_empty())
        .expect("some replica got the session");
    assert_eq!(with_session[owner].len(), 52, "50 POSTs, a GET stream and a DELETE on one replica");
    assert!(with_session.iter().enumerate().all(|(i, reqs)| i == owner || reqs.is_empty()));
    let original = format!("r{owner}-session-0");
    assert!(
        with_session[owner].iter().all(|r| r.headers["mcp-session-id"] == original.as_str()),
        "the replica sees its own id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_foreign_session_ids_are_unknown() {
    let replicas = [replica(0).await, replica(1).await];
    let gateway = Gateway::start(&pool_config(&replicas.iter().collect::<Vec<_>>(), ""));
    let real = initialize(&gateway).await;
    let parts: Vec<&str> = real.splitn(4, '.').collect();
    let other_replica = if replicas[0].server.requests().is_empty() { "r0" } else { "r1" };
    let forged = format!("{}.{}.{}.{other_replica}-session-0", parts[0], parts[1], parts[2]);
    for id in ["r0-session-0", forged.as_str(), "pc1.00000000.AAAAAAAAAAAAAAAAAAAAAA.x"] {
        let response = post_jsonrpc(gateway.url("/pool/mcp"), r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#)
            .header("mcp-session-id", id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{id}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["id"], 9);
        assert_eq!(body["error"]["data"]["reason"], "session_not_found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_loses_its_sessions_and_new_ones_go_elsewhere() {
    let replicas = [replica(0).await, replica(1).await, replica(2).await];
    let gateway = Gateway::start(&pool_config(&replicas.iter().collect::<Vec<_>>(), ""));
    let sessions: Vec<String> = futures_util::future::join_all((0..3).map(|_| initialize(&gateway))).await;
    let victim = 1;
    let victim_session =
        sessions.iter().find(|s| s.ends_with(&format!("r{victim}-session-0"))).unwrap().clone();
    replicas[victim].server.stop();
    assert_eq!(
        in_session(&gateway, reqwest::Method::POST, &victim_session).await,
        404,
        "not silently moved to another replica"
    );
    let before = replicas[victim].server.requests().len();
    for _ in 0..6 {
        let session = initialize(&gateway).await;
        assert!(!session.ends_with(&format!("r{victim}-session-1")));
    }
    assert_eq!(replicas[victim].server.requests().len(), before);
    for s in sessions.iter().filter(|s| **s != victim_session) {
        assert_eq!(in_session(&gateway, reqwest::Method::POST, s).await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_eject_and_readmit_a_replica() {
    let replicas = [replica(0).await, replica(1).await];
    let gateway = Gateway::start(&pool_config(
        &replicas.iter().collect::<Vec<_>>(),
        "    health_check: {type: http, path: /health, interval: 100ms, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2}\n",
    ));
    let initializes = |r: &Replica| r.server.requests().iter().filter(|q| q.method == "POST").count();
    replicas[1].healthy.store(false, Ordering::SeqCst);
    support::metrics::wait_for(
        &gateway,
        &[&format!(
            "portcullis_upstream_healthy{{server=\"pool\",upstream=\"{}\"}} 0",
            replicas[1].server.url("/")
        )],
    )
    .await;
    let before = initializes(&replicas[1]);
    for _ in 0..6 {
        initialize(&gateway).await;
    }
    assert_eq!(initializes(&replicas[1]), before, "an ejected replica gets no new sessions");
    let ready: Value =
        plain_client().get(gateway.admin_url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["replicas"]["pool"][1]["healthy"], false, "{ready}");

    replicas[1].healthy.store(true, Ordering::SeqCst);
    support::metrics::wait_for(
        &gateway,
        &[&format!(
            "portcullis_upstream_healthy{{server=\"pool\",upstream=\"{}\"}} 1",
            replicas[1].server.url("/")
        )],
    )
    .await;
    for _ in 0..4 {
        initialize(&gateway).await;
    }
    assert!(initializes(&replicas[1]) > before, "a readmitted replica gets sessions again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sse_sessions_stay_on_their_replica() {
    let replicas = [replica(0).await, replica(1).await];
    let gateway = Gateway::start(&pool_config(&replicas.iter().collect::<Vec<_>>(), ""));
    let mut stream =
        client().get(gateway.url("/pool/sse")).header("accept", "text/event-stream").send().await.unwrap();
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        let chunk = tokio::time::timeout(PATIENCE, stream.chunk()).await.unwrap().unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let endpoint = seen.lines().find_map(|l| l.strip_prefix("data: ")).unwrap().to_owned();
    assert!(endpoint.starts_with("/pool/message?sessionId=pc1."), "{endpoint}");
    let owner = if replicas[0].server.requests().is_empty() { 1 } else { 0 };
    for _ in 0..5 {
        let status = post_jsonrpc(gateway.url(&endpoint), r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    let posts: Vec<String> = replicas[owner]
        .server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.target)
        .collect();
    assert_eq!(posts, vec![format!("/message?sessionId=legacy-r{owner}"); 5]);
    assert!(replicas[1 - owner].server.requests().is_empty());
}
