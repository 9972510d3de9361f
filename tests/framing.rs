//! One strict reading of HTTP/1 message framing on both sides of the gateway, seen from raw
//! sockets: what a client sends that could be read two ways is answered 400 (501 for a coding
//! the gateway does not decode) and never reaches the upstream as a request; what an upstream
//! answers that could be read two ways is a 502, and its connection is not used again.

mod support;

use support::{only_on, Path};

use std::sync::{Arc, Mutex};

use support::gateway::Gateway;
use support::raw_upstream::{answer, raw_upstream, read_request};
use support::upstream::{MockUpstream, Reply};
use support::PATIENCE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn one_server(upstream: &str) -> String {
    format!("servers:\n  - name: gh\n    path: /gh\n    upstream: \"{upstream}\"\n")
}

fn address(gateway: &Gateway) -> String {
    gateway.url("").trim_start_matches("http://").trim_end_matches('/').to_owned()
}

/// Sends `raw` on a new connection and reads until the gateway closes it.
/// `HOST` in `raw` stands for the gateway's own address.
async fn exchange(gateway: &Gateway, raw: &[u8]) -> String {
    let raw = String::from_utf8_lossy(raw).replace("HOST", &address(gateway));
    let mut socket = TcpStream::connect(address(gateway)).await.expect("connect");
    socket.write_all(raw.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, socket.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the gateway kept the connection open after {raw:?}");
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_that_could_be_read_two_ways_are_refused_before_the_upstream() {
    if only_on(&[Path::H1], "engine test: the gateway's own HTTP/1 framing, from raw bytes") {
        return;
    }
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&one_server(&upstream.url("/mcp")));
    let cases: [(&str, &str); 7] = [
        ("400", "POST /gh HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}"),
        ("400", "POST /gh HTTP/1.1\r\nhost: HOST\r\nhost: HOST\r\ncontent-length: 2\r\n\r\n{}"),
        ("501", "POST /gh HTTP/1.1\r\nhost: HOST\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
        ("400", "POST /gh HTTP/1.1\r\nhost: HOST\r\ntransfer-encoding: chunked, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
        (
            "400",
            "POST /gh HTTP/1.1\r\nhost: HOST\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        ),
        ("400", "POST /gh HTTP/1.1\r\nhost: HOST\r\ntransfer-encoding: gzip\r\n\r\n{}"),
        ("400", "POST /gh HTTP/1.1\r\nhost: HOST\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
    ];
    for (status, raw) in cases {
        let answer = exchange(&gateway, raw.as_bytes()).await;
        assert_eq!(status_of(&answer), status, "{raw:?} got {answer:?}");
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_bodies_with_lenient_framing_are_a_400() {
    if only_on(&[Path::H1], "engine test: the gateway's own HTTP/1 framing, from raw bytes") {
        return;
    }
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&one_server(&upstream.url("/mcp")));
    let head = "POST /gh HTTP/1.1\r\nhost: HOST\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    for body in [
        "\r\n\r\n",                            // an empty chunk-size line is not the last chunk
        ";ext\r\n\r\n",                        // nor is an extension without a size
        "2\n{}\r\n0\r\n\r\n",                  // bare LF after the size
        "2;a=b\nc\r\n{}\r\n0\r\n\r\n",         // bare LF in an extension
        "2\r\n{}\n0\r\n\r\n",                  // bare LF after the data
        "2\r\n{}\r\n0\r\n\n",                  // bare LF ending the trailer section
        "2\r\n{}\r\n0\r\nbad name: v\r\n\r\n", // a trailer that is no header field
        "2\r\n{}\r\n0\r\nx: v\r\n folded\r\n\r\n",
    ] {
        let answer = exchange(&gateway, format!("{head}{body}").as_bytes()).await;
        assert_eq!(status_of(&answer), "400", "{body:?} got {answer:?}");
    }
    // A strict one with an extension and a trailer goes through, the trailer not forwarded.
    let answer = exchange(
        &gateway,
        format!(
            "{}2;name=value\r\n{{}}\r\n0\r\nx-sum: 1\r\n\r\n",
            head.replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n")
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    let requests = upstream.requests();
    let last = requests.last().expect("the strict request arrived");
    assert_eq!(last.body, &b"{}"[..]);
    assert!(!last.headers.contains_key("x-sum"));
}

/// An upstream answering its first connection's request with `first`, every other request
/// properly; the connection numbers of the requests it read.
async fn upstream_answering_first_with(first: &'static str) -> (String, Arc<Mutex<Vec<usize>>>) {
    let connections = Arc::new(Mutex::new(Vec::new()));
    let record = connections.clone();
    let url = raw_upstream(move |n, mut socket| {
        let record = record.clone();
        async move {
            while read_request(&mut socket).await.is_some() {
                let answered = record.lock().unwrap().len();
                record.lock().unwrap().push(n);
                if answered == 0 {
                    let _ = socket.write_all(first.as_bytes()).await;
                } else {
                    answer(&mut socket, r#"{"ok":true}"#).await;
                }
            }
        }
    })
    .await;
    (url, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_chunk_lines_that_could_be_read_two_ways_are_a_502_and_their_connection_is_dropped() {
    if only_on(&[Path::H1], "engine test: the gateway's own HTTP/1 framing, from raw bytes") {
        return;
    }
    let chunked = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    assert_each_is_a_502_on_a_connection_dropped(&[
        &format!("{chunked}\r\n\r\n"),
        &format!("{chunked};ext\r\n\r\n"),
        &format!("{chunked}2\n{{}}\r\n0\r\n\r\n"),
        &format!("{chunked}2\r\n{{}}\r\n0\r\nno colon\r\n\r\n"),
    ])
    .await;
}

/// Header fields that frame a response two ways are refused on every path: pingora-proxy's door
/// checks them too, where Pingora's own HTTP/1 client reads the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_framing_fields_that_could_be_read_two_ways_are_a_502_on_every_path() {
    assert_each_is_a_502_on_a_connection_dropped(&[
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\n{}",
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
    ])
    .await;
}

/// Each of `responses`, as an upstream's first answer, is a 502, and the next request goes on a
/// new upstream connection.
async fn assert_each_is_a_502_on_a_connection_dropped(responses: &[&str]) {
    for response in responses {
        let response: &'static str = response.to_string().leak();
        let (url, connections) = upstream_answering_first_with(response).await;
        let gateway = Gateway::start(&one_server(&url));
        let client = support::client();
        let first = client.post(gateway.url("/gh")).header("content-type", "application/json").body("{}");
        let first = first.send().await.expect("an answer");
        assert_eq!(first.status(), 502, "{response:?}");
        // A new client connection: the gateway closes the one a 502 went out on.
        let second = support::client().post(gateway.url("/gh")).body("{}").send().await.expect("an answer");
        assert_eq!(second.status(), 200);
        assert_eq!(*connections.lock().unwrap(), [0, 1], "the connection of {response:?} was used again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_length_given_twice_alike_reaches_the_client_as_one_value() {
    if only_on(&[Path::H1], "engine test: the gateway's own HTTP/1 framing, from raw bytes") {
        return;
    }
    let (url, _) = upstream_answering_first_with(
        "HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    let gateway = Gateway::start(&one_server(&url));
    let answer = exchange(
        &gateway,
        format!(
            "POST /gh HTTP/1.1\r\nhost: {}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}",
            address(&gateway)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    let lengths: Vec<&str> =
        answer.lines().filter(|l| l.to_ascii_lowercase().starts_with("content-length:")).collect();
    assert_eq!(lengths.len(), 1, "{answer}");
    assert!(lengths[0].trim_end().eq_ignore_ascii_case("content-length: 2"), "{answer}");
}
