//! Transparent MCP proxying through the real gateway: routes, pass-through, streams, legacy SSE,
//! and the errors the gateway writes itself.

mod support;

use support::{only_on, Path};

use std::time::Duration;

use bytes::Bytes;
use support::gateway::Gateway;
use support::upstream::{MockUpstream, Reply, Step};
use support::{client, post_jsonrpc};
use support::{plain_client, PATIENCE};

fn one_server(upstream: &str, extra: &str) -> String {
    format!("servers:\n  - name: gh\n    path: /gh\n    upstream: \"{upstream}\"\n{extra}")
}

/// Reads a streamed body until `needle` appears (or the stream ends), within [`PATIENCE`].
async fn read_until(response: &mut reqwest::Response, seen: &mut String, needle: &str) {
    tokio::time::timeout(PATIENCE, async {
        while !seen.contains(needle) {
            match response.chunk().await.expect("stream chunk") {
                Some(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                None => break,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {needle:?}; got {seen:?}"));
    assert!(seen.contains(needle), "stream ended without {needle:?}; got {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_and_alias_routes_map_onto_the_upstream_path() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&format!(
        "{}  - name: raw\n    path: /raw\n    upstream: \"{}\"\n    strip_prefix: false\n",
        one_server(&upstream.url("/mcp"), ""),
        upstream.url("/base"),
    ));
    let c = client();
    for path in
        ["/gh", "/gh/sub?x=1&y=%20", "/servers/gh/mcp", "/servers/gh/mcp/sub", "/raw/mcp", "/servers/raw/mcp"]
    {
        let status = c.post(gateway.url(path)).body("{}").send().await.expect("send").status();
        assert_eq!(status, 200, "{path}");
    }
    let targets: Vec<String> = upstream.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        ["/mcp", "/mcp/sub?x=1&y=%20", "/mcp", "/mcp/sub", "/base/raw/mcp", "/base/servers/raw/mcp"]
    );
    let host = upstream.requests()[0].headers["host"].to_str().unwrap().to_owned();
    assert_eq!(host, upstream.addr.to_string(), "Host is the upstream's authority");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_statuses_bodies_and_headers_pass_through_byte_identical() {
    let upstream = MockUpstream::start(|r| {
        let status: u16 = r.target.trim_start_matches("/mcp/").parse().unwrap_or(500);
        let mut body = format!("{{\"status\":{status},\"bytes\":\"").into_bytes();
        body.extend_from_slice(&[0xff, 0x00, b'\r', b'\n', 0x7f]);
        body.extend_from_slice(b"\"}");
        Reply::Full {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("mcp-session-id".into(), "sess-42".into()),
                ("x-upstream-thing".into(), "kept".into()),
            ],
            body: Bytes::from(body),
        }
    })
    .await;
    let gateway = Gateway::start(&one_server(&upstream.url("/mcp"), ""));
    let c = client();
    for status in [200u16, 202, 400, 404, 405, 409, 500] {
        let direct = support::plain_client()
            .post(upstream.url(&format!("/mcp/{status}")))
            .body("{}")
            .send()
            .await
            .expect("direct");
        let direct_body = direct.bytes().await.expect("direct body");
        let via = c.post(gateway.url(&format!("/gh/{status}"))).body("{}").send().await.expect("via gateway");
        assert_eq!(via.status().as_u16(), status);
        assert_eq!(via.headers()["mcp-session-id"], "sess-42");
        assert_eq!(via.headers()["x-upstream-thing"], "kept");
        assert_eq!(via.headers()["content-type"], "application/json");
        assert_eq!(via.bytes().await.expect("body"), direct_body, "status {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_headers_and_every_method_pass_unchanged() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&one_server(&upstream.url("/mcp"), ""));
    let c = client();
    let mcp_headers = [
        ("mcp-session-id", "7f1c-session"),
        ("mcp-protocol-version", "2025-06-18"),
        ("last-event-id", "evt-19"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "search"),
    ];
    for method in [reqwest::Method::POST, reqwest::Method::GET, reqwest::Method::DELETE] {
        let mut request = c
            .request(method.clone(), gateway.url("/gh"))
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1");
        for (k, v) in mcp_headers {
            request = request.header(k, v);
        }
        assert_eq!(request.send().await.expect("send").status(), 200, "{method}");
    }
    let received = upstream.requests();
    assert_eq!(received.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(), ["POST", "GET", "DELETE"]);
    for r in received {
        for (k, v) in mcp_headers {
            assert_eq!(r.headers[k], v, "{k} on {}", r.method);
        }
        assert!(r.headers.get("x-hop").is_none(), "a header named by Connection is hop-by-hop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_and_upgrades_stay_on_the_client_side() {
    if only_on(
        &[Path::H1, Path::H1Pingora],
        "HTTP/1 connection-specific fields, which HTTP/2 cannot carry (RFC 9113 8.2.2)",
    ) {
        return;
    }
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&one_server(&upstream.url("/mcp"), ""));
    // Sent raw: HTTP clients refuse or rewrite some of these headers.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", gateway.port)).await.expect("connect");
    let request = format!(
        "POST /gh HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close, x-hop\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: x-sum\r\nUpgrade: websocket\r\n\
         x-hop: 1\r\nmcp-session-id: kept\r\nContent-Length: 2\r\n\r\n{{}}",
        gateway.port
    );
    raw.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let received = upstream.requests();
    let headers = &received[0].headers;
    for name in ["keep-alive", "proxy-connection", "te", "trailer", "upgrade", "x-hop"] {
        assert!(headers.get(name).is_none(), "{name} reached the upstream: {headers:?}");
    }
    assert!(headers.get("connection").is_none_or(|v| v != "close, x-hop"), "{headers:?}");
    assert_eq!(headers["mcp-session-id"], "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_event_reaches_the_client_while_the_upstream_stream_is_open() {
    let upstream = MockUpstream::start(|_| {
        Reply::sse(
            vec![
                Step::Write(Bytes::from_static(b"id: 1\nevent: message\ndata: {\"first\":true}\n\n")),
                Step::WaitForRelease,
                Step::Write(Bytes::from_static(b"id: 2\nevent: message\ndata: {\"second\":true}\n\n")),
            ],
            false,
        )
    })
    .await;
    let gateway = Gateway::start(&one_server(&upstream.url("/mcp"), ""));
    let mut response =
        client().get(gateway.url("/gh")).header("accept", "text/event-stream").send().await.expect("stream");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().get("content-encoding").is_none());
    let mut seen = String::new();
    // The upstream holds the second event back until the client has the first: a buffering
    // proxy would never deliver it and this read would fail.
    read_until(&mut response, &mut seen, "\"first\":true").await;
    assert!(!seen.contains("second"));
    let metrics = plain_client()
        .get(gateway.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains(r#"portcullis_active_streams{server="gh"} 1"#), "{metrics}");
    upstream.release();
    read_until(&mut response, &mut seen, "\"second\":true").await;
    assert_eq!(
        seen,
        "id: 1\nevent: message\ndata: {\"first\":true}\n\nid: 2\nevent: message\ndata: {\"second\":true}\n\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_event_stream_outlives_the_read_timeout() {
    let upstream = MockUpstream::start(|r| match r.target.as_str() {
        "/mcp/slow-json" => Reply::Stall(Duration::from_millis(1500)),
        _ => Reply::sse(
            vec![
                Step::Write(Bytes::from_static(b"data: one\n\n")),
                Step::Sleep(Duration::from_millis(1500)),
                Step::Write(Bytes::from_static(b"data: two\n\n")),
            ],
            false,
        ),
    })
    .await;
    let gateway = Gateway::start(&one_server(
        &upstream.url("/mcp"),
        "    read_timeout: 300ms\n    stream_idle_timeout: 30s\n",
    ));
    let mut response = client()
        .post(gateway.url("/gh"))
        .header("accept", "application/json, text/event-stream")
        .body("{}")
        .send()
        .await
        .expect("stream");
    let mut seen = String::new();
    read_until(&mut response, &mut seen, "data: two").await;

    // The same silence on a request that cannot stream is a timeout.
    let slow = client()
        .post(gateway.url("/gh/slow-json"))
        .header("accept", "application/json")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(slow.status(), 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_closes_the_upstream_stream() {
    let upstream =
        MockUpstream::start(|_| Reply::sse(vec![Step::Write(Bytes::from_static(b"data: hello\n\n"))], true))
            .await;
    let gateway = Gateway::start(&one_server(&upstream.url("/mcp"), ""));
    let mut response =
        client().get(gateway.url("/gh")).header("accept", "text/event-stream").send().await.expect("stream");
    let mut seen = String::new();
    read_until(&mut response, &mut seen, "data: hello").await;
    drop(response);
    assert!(
        upstream.wait_client_gone(PATIENCE).await,
        "the upstream stream stayed open after the client left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_endpoint_event_split_over_three_writes_is_rewritten() {
    let upstream = MockUpstream::start(|r| match r.method.as_str() {
        "GET" => Reply::sse(
            vec![
                Step::Write(Bytes::from_static(b"event: endp")),
                Step::Sleep(Duration::from_millis(60)),
                Step::Write(Bytes::from_static(b"oint\r\ndata: /legacy/mess")),
                Step::Sleep(Duration::from_millis(60)),
                Step::Write(Bytes::from_static(b"age?sessionId=abc-123\r\n\r\n")),
                Step::Write(Bytes::from_static(
                    b"event: message\ndata: {\"endpoint\":\"/legacy/untouched\"}\n\n",
                )),
            ],
            true,
        ),
        _ => Reply::Full { status: 202, headers: vec![], body: Bytes::from_static(b"Accepted") },
    })
    .await;
    let gateway = Gateway::start(&one_server(&upstream.url("/legacy"), ""));
    for (sse_path, expected_prefix) in [("/gh/sse", "/gh"), ("/servers/gh/mcp/sse", "/servers/gh/mcp")] {
        let mut response = client()
            .get(gateway.url(sse_path))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("sse");
        let mut seen = String::new();
        read_until(&mut response, &mut seen, "untouched").await;
        let expected = format!(
            "event: endpoint\ndata: {expected_prefix}/message?sessionId=abc-123\n\nevent: message\ndata: {{\"endpoint\":\"/legacy/untouched\"}}\n\n"
        );
        assert!(seen.starts_with(&expected), "{seen:?}");

        // The rewritten endpoint routes the message POST back to the same server.
        let post = post_jsonrpc(
            gateway.url(&format!("{expected_prefix}/message?sessionId=abc-123")),
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        )
        .send()
        .await
        .expect("message post");
        assert_eq!(post.status(), 202);
        assert_eq!(post.text().await.unwrap(), "Accepted");
    }
    let posts: Vec<String> =
        upstream.requests().into_iter().filter(|r| r.method == "POST").map(|r| r.target).collect();
    assert_eq!(posts, ["/legacy/message?sessionId=abc-123", "/legacy/message?sessionId=abc-123"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_route_is_a_json_404() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&one_server(&upstream.url("/mcp"), ""));
    let plain = client().get(gateway.url("/nothing-here")).send().await.expect("send");
    assert_eq!(plain.status(), 404);
    assert_eq!(plain.headers()["content-type"], "application/json");
    let body: serde_json::Value = plain.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unknown_route");

    let rpc = post_jsonrpc(gateway.url("/ghost"), r#"{"jsonrpc":"2.0","id":"req-9","method":"tools/list"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(rpc.status(), 404);
    let body: serde_json::Value = rpc.json().await.expect("json");
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], "req-9");
    assert_eq!(body["error"]["data"]["status"], 404);
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_502_carrying_the_jsonrpc_id() {
    let dead = format!("http://127.0.0.1:{}/mcp", support::free_port());
    let gateway = Gateway::start(&one_server(&dead, ""));
    let rpc = post_jsonrpc(gateway.url("/gh"), r#"{"jsonrpc":"2.0","id":77,"method":"tools/list"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(rpc.status(), 502);
    let body: serde_json::Value = rpc.json().await.expect("json");
    assert_eq!(body["id"], 77);
    assert_eq!(body["error"]["code"], -32000);
    assert_eq!(body["error"]["data"]["reason"], "upstream_unreachable");

    let plain = client().get(gateway.url("/gh")).send().await.expect("send");
    assert_eq!(plain.status(), 502);
    let body: serde_json::Value = plain.json().await.expect("json");
    assert_eq!(body["error"]["code"], "upstream_unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_is_a_504_carrying_the_jsonrpc_id() {
    let upstream = MockUpstream::start(|_| Reply::Stall(Duration::from_secs(3))).await;
    let gateway = Gateway::start(&one_server(&upstream.url("/mcp"), "    read_timeout: 200ms\n"));
    let rpc = client()
        .post(gateway.url("/gh"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":"slow-1","method":"tools/call"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(rpc.status(), 504);
    let body: serde_json::Value = rpc.json().await.expect("json");
    assert_eq!(body["id"], "slow-1");
    assert_eq!(body["error"]["data"]["reason"], "upstream_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_refused_before_routing() {
    if only_on(&[Path::H1, Path::H1Pingora], "raw HTTP/1 bytes: clients normalise dot segments away") {
        return;
    }
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&one_server(&upstream.url("/mcp"), ""));
    // Sent raw: HTTP clients normalise dot segments away before sending.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for path in ["/gh/../admin", "/gh/%2e%2E/admin", "/gh/./mcp"] {
        let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", gateway.port)).await.expect("connect");
        raw.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut answer = String::new();
        raw.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("bad_path"), "{path}: {answer}");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_logged_and_counted() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&one_server(&upstream.url("/mcp"), ""));
    let c = client();
    c.post(gateway.url("/gh")).body("{}").send().await.expect("send");
    c.get(gateway.url("/nowhere")).send().await.expect("send");

    // A request is counted when it is logged, just after its response: wait for both counts.
    let expected = [
        r#"portcullis_requests_total{server="gh",status="200"} 1"#,
        r#"portcullis_requests_total{server="none",status="404"} 1"#,
        "portcullis_upstream_response_seconds_bucket",
    ];
    support::metrics::wait_for(&gateway, &expected).await;
    assert_eq!(
        support::plain_client().get(gateway.admin_url("/healthz")).send().await.expect("healthz").status(),
        200
    );
    assert_eq!(
        support::plain_client().get(gateway.admin_url("/readyz")).send().await.expect("readyz").status(),
        200
    );

    // The access line is written after the response; give the log a moment to appear.
    let deadline = std::time::Instant::now() + PATIENCE;
    let line = loop {
        if let Some(line) =
            gateway.log().lines().find(|l| l.contains("portcullis::access") && l.contains("status=\"200\""))
        {
            break line.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no access line:\n{}", gateway.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for field in
        ["server=\"gh\"", "method=POST", "path=\"/gh\"", "latency_ms=", "upstream=127.0.0.1:", "bytes_sent=2"]
    {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}
