//! A request is never sent upstream twice once any byte of it was written (RFC 9110 §9.2.2): an
//! upstream connection that takes a request and closes without answering costs the client a 502
//! (a JSON-RPC error with the request's id), never a second run of the tool. Only an idempotent
//! request is resent, and only when a pooled connection closed before answering.

mod support;

use support::{only_on, Path};

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use support::client;
use support::gateway::Gateway;
use support::raw_upstream::{answer, raw_upstream, read_request};

/// Every request an upstream read, with the number of the connection it came on.
type Received = Arc<Mutex<Vec<(usize, String)>>>;

/// An upstream whose first connection answers `answered_first` requests, then reads one more and
/// hangs up without a word (a crash, or a keep-alive that ran out at that moment); every later
/// connection answers everything.
async fn upstream_that_hangs_up_after(answered_first: usize) -> (String, Received) {
    let received: Received = Arc::default();
    let record = received.clone();
    let url = raw_upstream(move |n, mut socket| {
        let record = record.clone();
        async move {
            let mut answered = 0;
            while let Some(request) = read_request(&mut socket).await {
                record.lock().unwrap().push((n, String::from_utf8_lossy(&request).into_owned()));
                if n == 0 && answered == answered_first {
                    return;
                }
                answer(&mut socket, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).await;
                answered += 1;
            }
        }
    })
    .await;
    (url, received)
}

fn one_server(upstream: &str) -> String {
    format!("servers:\n  - name: gh\n    path: /gh\n    upstream: \"{upstream}\"\n")
}

const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"send_email"}}"#;

fn copies_of(received: &Received, marker: &str) -> Vec<usize> {
    received.lock().unwrap().iter().filter(|(_, r)| r.contains(marker)).map(|(n, _)| *n).collect()
}

async fn warm_up(gateway: &Gateway, client: &reqwest::Client) {
    let response = client
        .post(gateway.url("/gh"))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200, "the first request leaves its connection in the pool");
}

async fn assert_a_502_for_call_7(response: reqwest::Response) {
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert_eq!(body["id"], 7, "{body}");
    assert!(body["error"]["code"].is_i64(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_on_a_pooled_connection_that_closes_unanswered_is_a_502_and_sent_once() {
    if only_on(&[Path::H1], "engine test: the gateway's HTTP/1 upstream pool and its resend rule") {
        return;
    }
    let (upstream, received) = upstream_that_hangs_up_after(1).await;
    let gateway = Gateway::start(&one_server(&upstream));
    let client = client();
    warm_up(&gateway, &client).await;

    let response =
        client.post(gateway.url("/gh")).header("content-type", "application/json").body(CALL).send().await;
    assert_a_502_for_call_7(response.expect("send")).await;
    assert_eq!(
        copies_of(&received, "send_email"),
        [0],
        "the tool call went upstream once, on the pooled connection"
    );
    assert_eq!(
        support::metrics::sum(&gateway, "portcullis_upstream_errors_total", &[r#"kind="closed""#]).await,
        1
    );
    assert_eq!(support::metrics::sum(&gateway, "portcullis_upstream_retries_total", &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_on_a_fresh_connection_that_closes_unanswered_is_a_502_and_sent_once() {
    if only_on(&[Path::H1], "engine test: the gateway's HTTP/1 upstream pool and its resend rule") {
        return;
    }
    let (upstream, received) = upstream_that_hangs_up_after(0).await;
    let gateway = Gateway::start(&one_server(&upstream));
    let response =
        client().post(gateway.url("/gh")).header("content-type", "application/json").body(CALL).send().await;
    assert_a_502_for_call_7(response.expect("send")).await;
    assert_eq!(copies_of(&received, "send_email"), [0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_post_on_a_pooled_connection_that_closes_unanswered_is_a_502_and_sent_once() {
    if only_on(&[Path::H1], "engine test: the gateway's HTTP/1 upstream pool and its resend rule") {
        return;
    }
    let (upstream, received) = upstream_that_hangs_up_after(1).await;
    let gateway = Gateway::start(&one_server(&upstream));
    let client = client();
    warm_up(&gateway, &client).await;

    // No length: the body is streamed to the upstream in the chunked coding as it arrives.
    let pieces: Vec<Result<Bytes, std::io::Error>> =
        vec![Ok(Bytes::from_static(&CALL.as_bytes()[..20])), Ok(Bytes::from_static(&CALL.as_bytes()[20..]))];
    let response = client
        .post(gateway.url("/gh"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(pieces)))
        .send()
        .await;
    assert_a_502_for_call_7(response.expect("send")).await;
    let copies = copies_of(&received, "transfer-encoding: chunked");
    assert_eq!(copies, [0], "the streamed call went upstream once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_on_a_pooled_connection_that_closes_unanswered_is_resent_on_a_new_one() {
    if only_on(&[Path::H1], "engine test: the gateway's HTTP/1 upstream pool and its resend rule") {
        return;
    }
    let (upstream, received) = upstream_that_hangs_up_after(1).await;
    let gateway = Gateway::start(&one_server(&upstream));
    let client = client();
    warm_up(&gateway, &client).await;

    let response =
        client.get(gateway.url("/gh")).header("accept", "application/json").send().await.expect("send");
    assert_eq!(response.status(), 200, "an idempotent request may go again");
    assert_eq!(copies_of(&received, "GET /mcp"), [0, 1], "once on the pooled connection, once on a new one");
    assert_eq!(
        support::metrics::sum(
            &gateway,
            "portcullis_upstream_retries_total",
            &[r#"reason="idempotent_resend""#, r#"server="gh""#]
        )
        .await,
        1
    );
}
