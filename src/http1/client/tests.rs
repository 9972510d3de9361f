//! Tests of the client side: parsing, framing rules, writes and the keep-alive hand-back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method};
use pingora::http::ResponseHeader;
use pingora::protocols::http::custom::server::Session as CustomSession;
use pingora::{ErrorType, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::http1::framing::Framing;
use tokio::net::UnixStream;

/// A connection on our side of a socket pair, and the client's end.
fn connection() -> (ClientConnection, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    (ClientConnection::new(Box::new(pingora::protocols::l4::stream::Stream::from(ours))), theirs)
}

/// The head of the first request `sent` holds, or the error reading it gave.
async fn head_of(sent: &[u8]) -> Result<Option<Box<RequestHead>>> {
    let (mut conn, mut client) = connection();
    client.write_all(sent).await.expect("write");
    client.shutdown().await.expect("shutdown");
    conn.read_head(Duration::from_secs(2)).await
}

fn rejected(result: Result<Option<Box<RequestHead>>>) -> bool {
    matches!(result, Err(e) if e.etype() == &ErrorType::InvalidHTTPHeader)
}

/// A request read off a fresh connection, the receiver it hands its connection back to, and
/// the client's end.
async fn read_request(sent: &[u8]) -> (ClientRequest, Arc<HandBack>, UnixStream) {
    let (mut conn, mut client) = connection();
    client.write_all(sent).await.expect("write");
    let head = conn.read_head(Duration::from_secs(2)).await.expect("readable").expect("a request");
    let hand_back = Arc::new(HandBack::default());
    (ClientRequest::new(Box::new(conn), head, hand_back.clone()), hand_back, client)
}

/// Everything the client received once the request (and any connection it handed back) is
/// gone, and whether the connection was handed back.
async fn received(
    request: ClientRequest,
    handed_back: Arc<HandBack>,
    mut client: UnixStream,
) -> (String, bool) {
    drop(request);
    let reused = handed_back.take().is_some();
    let mut wire = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut wire))
        .await
        .expect("the connection ends")
        .expect("read");
    (String::from_utf8(wire).expect("text"), reused)
}

fn response(status: u16, headers: &[(&'static str, &str)]) -> Box<ResponseHeader> {
    let mut response = ResponseHeader::build(status, None).expect("status");
    for (name, value) in headers {
        response.append_header(*name, *value).expect("header");
    }
    Box::new(response)
}

async fn respond(
    request: &mut ClientRequest,
    head: Box<ResponseHeader>,
    body: &[&'static str],
) -> Result<()> {
    request.write_response_header(head, false).await?;
    for (i, piece) in body.iter().enumerate() {
        request.write_body(Bytes::from_static(piece.as_bytes()), i + 1 == body.len()).await?;
    }
    CustomSession::finish(request).await
}

#[tokio::test]
async fn a_handed_back_connection_keeps_a_small_write_buffer_but_not_a_large_one() {
    let big = "x".repeat(COALESCE_LIMIT);
    for (body, kept) in [("{}".to_owned(), true), (big, false)] {
        let (mut request, handed_back, _client) =
            read_request(b"GET /mcp HTTP/1.1\r\nHost: gw\r\n\r\n").await;
        let length = body.len().to_string();
        request.write_response_header(response(200, &[("content-length", &length)]), false).await.unwrap();
        request.write_body(Bytes::from(body), true).await.unwrap();
        CustomSession::finish(&mut request).await.unwrap();
        let conn = handed_back.take().expect("handed back");
        assert!(conn.pending.is_empty(), "everything was written");
        assert_eq!(conn.pending.capacity() > 0, kept, "room kept for the next response");
    }
}

#[tokio::test]
async fn a_handed_back_connection_can_reuse_the_room_its_request_head_took() {
    let (mut request, handed_back, _client) =
        read_request(b"GET /mcp HTTP/1.1\r\nHost: gw\r\nX-Trace: abc\r\n\r\n").await;
    respond(&mut request, response(204, &[]), &[]).await.unwrap();
    let mut conn = handed_back.take().expect("handed back");
    assert!(request.req_header().headers.is_empty(), "the finished request keeps nothing of its head");
    assert!(conn.buf.try_reclaim(READ_SIZE), "nothing else holds the read buffer");
}

#[tokio::test]
async fn a_request_head_is_parsed_with_its_fields_and_no_body() {
    let head = head_of(b"GET /mcp?x=1 HTTP/1.1\r\nHost: gw\r\nX-Trace: a\r\nX-Trace: b\r\n\r\n")
        .await
        .expect("valid")
        .expect("a request");
    let header = head.header();
    assert_eq!(header.method, Method::GET);
    assert_eq!(header.uri, "/mcp?x=1");
    assert_eq!(header.headers["host"], "gw");
    assert_eq!(header.headers.get_all("x-trace").iter().count(), 2);
    assert!(head.body.is_done());
    assert!(head.keepalive);
}

#[tokio::test]
async fn pipelined_requests_are_read_one_after_another_from_one_write() {
    let (mut conn, mut client) = connection();
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\nGET /b HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .expect("write");
    client.shutdown().await.expect("shutdown");
    let first = conn.read_head(Duration::from_secs(2)).await.expect("valid").expect("a request");
    let second = conn.read_head(Duration::from_secs(2)).await.expect("valid").expect("a request");
    assert_eq!(first.header().uri, "/a");
    assert_eq!(second.header().uri, "/b");
    assert!(conn.read_head(Duration::from_secs(2)).await.expect("closed cleanly").is_none());
}

#[tokio::test]
async fn a_head_arriving_in_pieces_is_waited_for() {
    let (mut conn, mut client) = connection();
    let writer = tokio::spawn(async move {
        for piece in [&b"POST /mcp HT"[..], b"TP/1.1\r\nHost: gw\r\nContent-Le", b"ngth: 2\r\n\r\n{}"] {
            client.write_all(piece).await.expect("write");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client
    });
    let head = conn.read_head(Duration::from_secs(2)).await.expect("valid").expect("a request");
    assert_eq!(head.body, Framing::length(2));
    drop(writer.await);
}

#[tokio::test]
async fn a_client_that_leaves_or_stays_silent_before_a_request_is_let_go_quietly() {
    assert!(head_of(b"").await.expect("no error").is_none());
    let (mut conn, _client) = connection();
    assert!(conn.read_head(Duration::from_millis(30)).await.expect("no error").is_none());
}

#[tokio::test]
async fn each_request_head_gets_the_whole_wait_from_when_it_is_awaited() {
    let (mut conn, mut client) = connection();
    client.write_all(b"GET /a HTTP/1.1\r\nHost: g\r\n\r\n").await.expect("write");
    assert!(conn.read_head(Duration::from_millis(50)).await.expect("valid").is_some());
    // The first wait's deadline passes before the second request arrives; the second wait
    // starts anew and is long enough.
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.write_all(b"GET /b HTTP/1.1\r\nHost: g\r\n\r\n").await.expect("write");
        client
    });
    let second = conn.read_head(Duration::from_secs(5)).await.expect("valid").expect("a request");
    assert_eq!(second.header().uri.path(), "/b");
    let _client = late.await.expect("writer");
    // And a third that never comes is given up after its own wait.
    assert!(conn.read_head(Duration::from_millis(30)).await.expect("no error").is_none());
}

#[tokio::test]
async fn a_client_that_leaves_inside_a_head_is_an_error() {
    let result = head_of(b"GET / HTTP/1.1\r\nHost: g").await;
    assert!(matches!(result, Err(e) if e.etype() == &ErrorType::ConnectionClosed));
}

#[tokio::test]
async fn malformed_or_oversized_heads_are_rejected() {
    assert!(rejected(head_of(b"GET / HTTP/1.1\r\nHost gw\r\n\r\n").await));
    assert!(rejected(head_of(b"G@T / HTTP/1.1\r\nHost: gw\r\n\r\n").await));
    let mut huge = b"GET / HTTP/1.1\r\nHost: gw\r\nX-Big: ".to_vec();
    huge.resize(MAX_HEAD_BYTES + 100, b'a');
    assert!(rejected(head_of(&huge).await));
    let mut many = b"GET / HTTP/1.1\r\nHost: gw\r\n".to_vec();
    for i in 0..MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(rejected(head_of(&many).await));
}

#[tokio::test]
async fn every_byte_httparse_accepts_in_a_value_is_one_http_accepts() {
    for byte in 0..=255u8 {
        let mut sent = b"GET / HTTP/1.1\r\nHost: gw\r\nX-Probe: a".to_vec();
        sent.extend_from_slice(&[byte, b'b']);
        sent.extend_from_slice(b"\r\n\r\n");
        let valid = HeaderValue::from_bytes(&[b'a', byte, b'b']).is_ok();
        match head_of(&sent).await {
            Ok(Some(head)) => {
                assert!(valid, "byte {byte:#04x} was accepted but is not a valid header value byte");
                let value = head.header.headers.get("x-probe").expect("the probe header");
                assert_eq!(value.as_bytes(), [b'a', byte, b'b']);
            }
            // CR and LF end the field early; anything else refused must be a byte http refuses.
            Err(e) if e.etype() == &ErrorType::InvalidHTTPHeader => {
                assert!(!valid || byte == b'\r' || byte == b'\n', "byte {byte:#04x} was refused")
            }
            other => panic!("byte {byte:#04x}: {:?}", other.map(|h| h.is_some())),
        }
    }
}

#[tokio::test]
async fn framing_that_could_be_read_two_ways_is_rejected() {
    // Both a length and a coding: the classic request-smuggling signature.
    assert!(rejected(
        head_of(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
    ));
    assert!(rejected(head_of(b"POST / HTTP/1.0\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n").await));
    assert!(rejected(
        head_of(b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").await
    ));
    assert!(rejected(
        head_of(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n").await
    ));
    assert!(rejected(head_of(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: +4\r\n\r\n").await));
}

#[tokio::test]
async fn an_authority_that_disagrees_with_host_is_rejected() {
    assert!(rejected(head_of(b"GET http://other/ HTTP/1.1\r\nHost: gw\r\n\r\n").await));
    assert!(rejected(head_of(b"GET / HTTP/1.1\r\nHost: gw\r\nHost: other\r\n\r\n").await));
    assert!(head_of(b"GET http://gw/ HTTP/1.1\r\nHost: gw\r\n\r\n").await.expect("valid").is_some());
}

#[tokio::test]
async fn a_chunked_request_body_is_decoded_and_the_connection_kept() {
    let (mut request, handed_back, client) = read_request(
        b"POST /mcp HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
    )
    .await;
    let mut body = Vec::new();
    while let Some(piece) = request.read_body_bytes().await.expect("body") {
        body.extend_from_slice(&piece);
    }
    assert_eq!(body, b"{\"a\":1}");
    respond(&mut request, response(200, &[("Content-Length", "2")]), &["ok"]).await.expect("answered");
    let (wire, reused) = received(request, handed_back, client).await;
    assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{wire}");
    assert!(wire.ends_with("\r\n\r\nok"), "{wire}");
    assert!(reused);
}

#[tokio::test]
async fn a_length_delimited_response_is_written_with_our_date_and_connection_fields() {
    let (mut request, handed_back, client) = read_request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    let head = response(
        200,
        &[
            ("Content-Length", "5"),
            ("Connection", "close"),
            ("Keep-Alive", "timeout=5"),
            ("Date", "Thu, 01 Jan 1970 00:00:00 GMT"),
        ],
    );
    respond(&mut request, head, &["he", "llo"]).await.expect("answered");
    let (wire, reused) = received(request, handed_back, client).await;
    assert!(!wire.contains("1970"), "the upstream's Date is replaced: {wire}");
    assert_eq!(wire.matches("Date: ").count(), 1, "{wire}");
    assert!(!wire.to_ascii_lowercase().contains("connection"), "{wire}");
    assert!(!wire.to_ascii_lowercase().contains("keep-alive"), "{wire}");
    assert!(wire.ends_with("\r\n\r\nhello"), "{wire}");
    assert!(reused, "the upstream's Connection does not decide the client connection");
}

#[tokio::test]
async fn a_body_longer_than_its_length_is_an_error_and_ends_the_connection() {
    let (mut request, handed_back, client) = read_request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    let result = respond(&mut request, response(200, &[("Content-Length", "2")]), &["toolong"]).await;
    assert!(matches!(result, Err(e) if e.etype() == &ErrorType::H1Error));
    let (_, reused) = received(request, handed_back, client).await;
    assert!(!reused);
}

#[tokio::test]
async fn a_chunked_response_is_re_chunked_piece_by_piece() {
    let (mut request, handed_back, client) = read_request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    respond(
        &mut request,
        response(200, &[("Transfer-Encoding", "chunked")]),
        &["data: 1\n\n", "data: 22\n\n"],
    )
    .await
    .expect("answered");
    let (wire, reused) = received(request, handed_back, client).await;
    assert!(wire.ends_with("\r\n\r\n9\r\ndata: 1\n\n\r\na\r\ndata: 22\n\n\r\n0\r\n\r\n"), "{wire}");
    assert!(reused);
}

#[tokio::test]
async fn a_chunked_response_reaches_an_http10_client_delimited_by_close() {
    let (mut request, handed_back, client) =
        read_request(b"GET / HTTP/1.0\r\nHost: gw\r\nConnection: keep-alive\r\n\r\n").await;
    respond(&mut request, response(200, &[("Transfer-Encoding", "chunked")]), &["ab", "cd"])
        .await
        .expect("answered");
    let (wire, reused) = received(request, handed_back, client).await;
    assert!(!wire.to_ascii_lowercase().contains("transfer-encoding"), "{wire}");
    assert!(wire.contains("Connection: close\r\n"), "{wire}");
    assert!(wire.ends_with("\r\n\r\nabcd"), "{wire}");
    assert!(!reused);
}

#[tokio::test]
async fn a_response_without_a_length_is_delimited_by_close() {
    let (mut request, handed_back, client) = read_request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    respond(&mut request, response(200, &[]), &["until ", "the end"]).await.expect("answered");
    let (wire, reused) = received(request, handed_back, client).await;
    assert!(wire.contains("Connection: close\r\n"), "{wire}");
    assert!(wire.ends_with("\r\n\r\nuntil the end"), "{wire}");
    assert!(!reused);
}

#[tokio::test]
async fn http10_keeps_the_connection_only_when_asked() {
    let (mut request, handed_back, client) =
        read_request(b"GET / HTTP/1.0\r\nHost: gw\r\nConnection: keep-alive\r\n\r\n").await;
    respond(&mut request, response(200, &[("Content-Length", "0")]), &[]).await.expect("answered");
    let (wire, reused) = received(request, handed_back, client).await;
    assert!(wire.contains("Connection: keep-alive\r\n"), "{wire}");
    assert!(reused);

    let (mut request, handed_back, client) = read_request(b"GET / HTTP/1.0\r\nHost: gw\r\n\r\n").await;
    respond(&mut request, response(200, &[("Content-Length", "0")]), &[]).await.expect("answered");
    let (wire, reused) = received(request, handed_back, client).await;
    assert!(wire.contains("Connection: close\r\n"), "{wire}");
    assert!(!reused);
}

#[tokio::test]
async fn connection_close_from_the_client_or_a_stopping_gateway_ends_the_connection() {
    let (mut request, handed_back, client) =
        read_request(b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").await;
    respond(&mut request, response(204, &[]), &[]).await.expect("answered");
    let (wire, reused) = received(request, handed_back, client).await;
    assert!(wire.contains("Connection: close\r\n"), "{wire}");
    assert!(!reused);

    let (mut request, handed_back, client) = read_request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    request.close_after_response();
    respond(&mut request, response(204, &[]), &[]).await.expect("answered");
    let (wire, reused) = received(request, handed_back, client).await;
    assert!(wire.contains("Connection: close\r\n"), "{wire}");
    assert!(!reused);
}

#[tokio::test]
async fn a_response_sent_before_the_request_body_was_read_ends_the_connection() {
    let (mut request, handed_back, client) =
        read_request(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n").await;
    respond(&mut request, response(413, &[("Content-Length", "0")]), &[]).await.expect("answered");
    let (wire, reused) = received(request, handed_back, client).await;
    assert!(wire.starts_with("HTTP/1.1 413 "), "{wire}");
    assert!(wire.contains("Connection: close\r\n"), "{wire}");
    assert!(!reused, "the unread body would be taken for the next request");
}

#[tokio::test]
async fn an_informational_response_goes_ahead_of_the_final_one_but_not_to_http10() {
    let (mut request, handed_back, client) =
        read_request(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n").await;
    request.write_response_header(response(100, &[]), false).await.expect("sent");
    respond(&mut request, response(200, &[("Content-Length", "2")]), &["ok"]).await.expect("answered");
    let (wire, _) = received(request, handed_back, client).await;
    assert!(wire.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), "{wire}");

    let (mut request, handed_back, client) = read_request(b"GET / HTTP/1.0\r\nHost: gw\r\n\r\n").await;
    request.write_response_header(response(100, &[]), false).await.expect("skipped");
    respond(&mut request, response(200, &[("Content-Length", "2")]), &["ok"]).await.expect("answered");
    let (wire, _) = received(request, handed_back, client).await;
    assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{wire}");
}

#[tokio::test]
async fn a_protocol_switch_is_refused() {
    let (mut request, _handed_back, _client) = read_request(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    assert!(request.write_response_header(response(101, &[("Upgrade", "websocket")]), false).await.is_err());
}

#[tokio::test]
async fn a_head_response_carries_no_body() {
    let (mut request, handed_back, client) = read_request(b"HEAD / HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    respond(&mut request, response(200, &[("Content-Length", "5")]), &[]).await.expect("answered");
    let (wire, reused) = received(request, handed_back, client).await;
    assert!(wire.contains("Content-Length: 5\r\n"), "{wire}");
    assert!(wire.ends_with("\r\n\r\n"), "{wire}");
    assert!(reused);
}

#[tokio::test]
async fn a_refused_request_gets_a_closing_answer() {
    let (conn, mut client) = connection();
    conn.refuse(400).await;
    let mut wire = Vec::new();
    client.read_to_end(&mut wire).await.expect("read");
    let wire = String::from_utf8(wire).expect("text");
    assert!(wire.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{wire}");
    assert!(wire.ends_with("Content-Length: 0\r\nConnection: close\r\n\r\n"), "{wire}");
}
