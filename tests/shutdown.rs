//! A stop ends when the work does: on SIGTERM the gateway stops accepting, lets requests in flight
//! finish and open streams run up to the grace period, and exits as soon as nothing is left.
//!
//! Each test's Pingora conf sets a grace period far longer than "a few seconds", so exiting soon
//! and exiting only after the grace period cannot be mistaken for each other.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::gateway::Gateway;
use support::upstream::{MockUpstream, Reply, Step};
use support::{client, post_jsonrpc};

/// Long enough that a gateway waiting it out is unmistakable.
const LONG_GRACE: &str =
    "version: 1\nthreads: 2\ngrace_period_seconds: 120\ngraceful_shutdown_timeout_seconds: 1";
/// "Within a few seconds", as opposed to after a grace period.
const SOON: Duration = Duration::from_secs(10);

fn one_server(upstream: &MockUpstream) -> String {
    format!("servers:\n  - {{name: s, path: /s, upstream: \"{}\"}}\n", upstream.url("/mcp"))
}

async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_gateway_exits_soon_after_sigterm() {
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let mut gateway = Gateway::start_with_pingora_conf(&one_server(&upstream), LONG_GRACE);
    // One request first, so an idle kept-alive connection is open when the signal comes.
    let client = client();
    let response = client.post(gateway.url("/s")).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await;

    gateway.signal(libc::SIGTERM);
    let status = gateway.wait_for_exit(SOON).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "an idle gateway must exit well before its 120 s grace period ({status:?}):\n{}",
        gateway.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_completes_and_then_the_process_exits() {
    let upstream = MockUpstream::start(|_| Reply::Stream {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        steps: vec![
            Step::Write(Bytes::from_static(b"{\"jsonrpc\":\"2.0\",")),
            Step::WaitForRelease,
            Step::Write(Bytes::from_static(b"\"id\":1,\"result\":{}}")),
        ],
        hold_open: false,
    })
    .await;
    let mut gateway = Gateway::start_with_pingora_conf(&one_server(&upstream), LONG_GRACE);
    let mut response = post_jsonrpc(gateway.url("/s"), r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.chunk().await.unwrap().expect("the first part of the answer").to_vec();

    gateway.signal(libc::SIGTERM);
    wait_until("the stop to begin", SOON, || gateway.log().contains("SIGTERM received")).await;
    assert!(gateway.is_running(), "the gateway must wait for the request in flight");
    // The upstream finishes its answer (released until the client has all of it).
    let rest = async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            body.extend_from_slice(&chunk);
        }
        body
    };
    let releasing = async {
        loop {
            upstream.release();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let body = tokio::select! { body = rest => body, _ = releasing => unreachable!() };
    assert_eq!(body, br#"{"jsonrpc":"2.0","id":1,"result":{}}"#, "the request in flight completes");

    let status = gateway.wait_for_exit(SOON).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the gateway must exit right after its last request, not after the grace period ({status:?}):\n{}",
        gateway.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_sse_stream_runs_until_the_grace_period_and_then_the_process_exits() {
    let grace = Duration::from_secs(8);
    let upstream = MockUpstream::start(|_| {
        Reply::sse(
            vec![
                Step::Write(Bytes::from_static(b"data: before\n\n")),
                Step::WaitForRelease,
                Step::Write(Bytes::from_static(b"data: after-sigterm\n\n")),
            ],
            true,
        )
    })
    .await;
    let conf = format!(
        "version: 1\nthreads: 2\ngrace_period_seconds: {}\ngraceful_shutdown_timeout_seconds: 1",
        grace.as_secs()
    );
    let mut gateway = Gateway::start_with_pingora_conf(&one_server(&upstream), &conf);
    let mut stream =
        client().get(gateway.url("/s")).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().expect("the first event");
    assert!(String::from_utf8_lossy(&first).contains("data: before"));

    gateway.signal(libc::SIGTERM);
    let signalled = Instant::now();
    wait_until("the stop to begin", SOON, || gateway.log().contains("SIGTERM received")).await;
    // The stream keeps flowing after the signal…
    let mut seen = String::new();
    let after = async {
        while !seen.contains("data: after-sigterm") {
            let chunk = stream.chunk().await.unwrap().expect("the stream is still open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    let releasing = async {
        loop {
            upstream.release();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! { () = after => {}, _ = releasing => unreachable!() }
    assert!(gateway.is_running(), "an open stream keeps the gateway running");
    // …until the grace period ends; then the stream is closed and the process exits.
    let ended = async { while let Ok(Some(_)) = stream.chunk().await {} };
    tokio::time::timeout(grace + SOON, ended).await.expect("the stream ends after the grace period");
    let status = gateway.wait_for_exit(SOON).await;
    let elapsed = signalled.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "exits after the grace period ({status:?}):\n{}",
        gateway.log()
    );
    assert!(
        elapsed >= grace - Duration::from_secs(3),
        "the stream was given the grace period ({}s), not cut after {elapsed:?}",
        grace.as_secs()
    );
}
