//! The harness itself: on each path the suite's client reaches the gateway in that path's
//! protocol and engine, so a silent fallback (h2 to HTTP/1, pingora to the gateway's engine)
//! fails here rather than passing every other test on the wrong path.

mod support;

use support::gateway::Gateway;
use support::upstream::{MockUpstream, Reply};
use support::{expected_version, post_jsonrpc, Path};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suites_client_speaks_the_paths_protocol_to_the_paths_engine() {
    let upstream = MockUpstream::start(|_| Reply::json(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)).await;
    let gateway = Gateway::start(&format!(
        "servers:\n  - {{name: s, path: /s, upstream: \"{}\"}}\n",
        upstream.url("/mcp")
    ));
    let response = post_jsonrpc(gateway.url("/s"), r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(response.version(), expected_version(), "on path {}", Path::current().name());
    assert_eq!(response.status(), 200);
    let config = std::fs::read_to_string(gateway.config_path()).unwrap();
    assert_eq!(config.contains("http1_engine: pingora"), Path::current() == Path::H1Pingora, "{config}");
}
