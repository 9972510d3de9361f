//! Differential property tests of the gateway's HTTP/1 parsers against Pingora's own HTTP/1
//! sessions (already in the dependency tree), on the same bytes: generated request heads and
//! bodies, and upstream responses, each then mutated byte by byte. Whenever Pingora rejects a
//! message, the gateway must reject it too; whenever both accept it, they must agree on what it
//! says (method, target, header fields and body bytes; status for responses). The gateway may
//! reject more (it is stricter on purpose: see `http1/framing.rs`).
//!
//! `PROPTEST_CASES` sets the number of cases per property (default 2,000, a few seconds).

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};
use pingora::protocols::http::custom::server::Session as CustomSession;
use pingora::protocols::http::v1::{
    client::HttpSession as PingoraClient, server::HttpSession as PingoraServer,
};
use proptest::prelude::*;

use super::client::{ClientConnection, ClientRequest, HandBack};
use super::upstream::{UpstreamConnection, UpstreamResponse};

/// What a parser made of a message: `None` when it refused it.
#[derive(Debug, PartialEq, Eq)]
struct Reading {
    /// Method and target (requests) or status (responses).
    start: String,
    fields: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// The fields by name (a stable sort: the values of one name keep their order; a header map's
/// order of names changes when one is removed).
fn fields_of(headers: &HeaderMap, skip: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut fields: Vec<_> = headers
        .iter()
        .filter(|(name, _)| !skip.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    fields
}

/// Method and the target's path and query: an absolute-form target's authority is checked
/// against Host on both sides, and Pingora keeps only its path.
fn start_of(header: &pingora::http::RequestHeader) -> String {
    let target = header.uri.path_and_query().map_or("", |p| p.as_str());
    format!("{} {target}", header.method)
}

fn stream(bytes: &[u8]) -> pingora::protocols::Stream {
    Box::new(Cursor::new(bytes.to_vec()))
}

async fn gateway_reads_request(bytes: &[u8]) -> Option<Reading> {
    let mut conn = Box::new(ClientConnection::new(stream(bytes)));
    let head = conn.read_head(Duration::from_secs(5)).await.ok()??;
    // The driver answers CONNECT 405 before anything else.
    if head.header().method == Method::CONNECT {
        return None;
    }
    let start = start_of(head.header());
    let fields = fields_of(&head.header().headers, &[]);
    let mut request = ClientRequest::new(conn, head, Arc::new(HandBack::default()));
    let mut body = Vec::new();
    while let Some(piece) = request.read_body_bytes().await.ok()? {
        body.extend_from_slice(&piece);
    }
    Some(Reading { start, fields, body })
}

async fn pingora_reads_request(bytes: &[u8]) -> Option<Reading> {
    let mut session = PingoraServer::new(stream(bytes));
    session.read_request().await.ok()??;
    let header = session.req_header();
    let start = start_of(header);
    let fields = fields_of(&header.headers, &[]);
    let mut body = Vec::new();
    while let Some(piece) = session.read_body_bytes().await.ok()? {
        body.extend_from_slice(&piece);
    }
    Some(Reading { start, fields, body })
}

/// `Content-Length` is left out of the comparison of response fields: the gateway forwards a
/// list of equal lengths as one value and drops one that comes with a transfer coding.
async fn gateway_reads_response(bytes: &[u8]) -> Option<Reading> {
    let mut upstream = UpstreamResponse::new(UpstreamConnection::from(stream(bytes)), None);
    let header = upstream.read_head(&Method::POST).await.ok()?;
    let start = header.status.as_str().to_owned();
    let fields = fields_of(&header.headers, &["content-length"]);
    let mut body = Vec::new();
    while let Some(piece) = upstream.read_body().await.ok()? {
        body.extend_from_slice(&piece);
    }
    Some(Reading { start, fields, body })
}

async fn pingora_reads_response(bytes: &[u8]) -> Option<Reading> {
    let mut session = PingoraClient::new(stream(bytes));
    session.read_response().await.ok()?;
    let header = session.resp_header()?;
    let start = header.status.as_str().to_owned();
    let fields = fields_of(&header.headers, &["content-length"]);
    let mut body = Vec::new();
    while let Some(piece) = session.read_body_bytes().await.ok()? {
        body.extend_from_slice(&piece);
    }
    Some(Reading { start, fields, body })
}

/// Bytes that matter to HTTP/1 framing, for the mutations.
const INTERESTING: &[u8] = b"\r\n \t:;,0aF\x00\x7f\xff=\"-_/";

/// A change to a generated message.
#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, u8),
    Replace(usize, u8),
    Delete(usize),
    /// Every CRLF from the n-th on becomes a bare LF.
    BareLf(usize),
    /// The n-th line is sent twice.
    RepeatLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = proptest::sample::select(INTERESTING);
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), byte).prop_map(|(at, b)| Mutation::Replace(at, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (0usize..12).prop_map(Mutation::BareLf),
        (0usize..12).prop_map(Mutation::RepeatLine),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len().max(1);
        match *mutation {
            Mutation::Insert(at, b) => bytes.insert(at % (len + 1).min(bytes.len() + 1), b),
            Mutation::Replace(at, b) if !bytes.is_empty() => bytes[at % len] = b,
            Mutation::Delete(at) if !bytes.is_empty() => {
                bytes.remove(at % len);
            }
            Mutation::BareLf(from) => {
                let mut out = Vec::with_capacity(bytes.len());
                let mut seen = 0;
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i..].starts_with(b"\r\n") {
                        if seen >= from {
                            out.push(b'\n');
                            i += 2;
                            seen += 1;
                            continue;
                        }
                        seen += 1;
                    }
                    out.push(bytes[i]);
                    i += 1;
                }
                bytes = out;
            }
            Mutation::RepeatLine(n) => {
                let starts: Vec<usize> = std::iter::once(0)
                    .chain(bytes.windows(2).enumerate().filter(|(_, w)| w == b"\r\n").map(|(i, _)| i + 2))
                    .collect();
                if let (Some(&start), Some(&end)) = (starts.get(n), starts.get(n + 1)) {
                    let line = bytes[start..end].to_vec();
                    bytes.splice(start..start, line);
                }
            }
            _ => {}
        }
    }
    bytes
}

/// A header field from a small, framing-heavy vocabulary.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("content-type: application/json".to_owned()),
        Just("accept: application/json, text/event-stream".to_owned()),
        Just("x-custom:  spaced value ".to_owned()),
        Just("Transfer-Encoding: chunked".to_owned()),
        Just("transfer-encoding: gzip, chunked".to_owned()),
        Just("Content-Length: 2".to_owned()),
        Just("content-length: 2, 2".to_owned()),
        Just("connection: keep-alive".to_owned()),
        Just("connection: close".to_owned()),
        "[a-z]{1,8}: [ -~]{0,12}".prop_map(|f| f),
    ]
}

/// A chunked body: chunks with optional extensions, the last chunk, and trailer fields.
fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(
            ("[a-z{}\":]{1,20}", proptest::option::of("[a-z]{1,5}(=[a-z0-9]{1,5})?")),
            0..4,
        ),
        proptest::collection::vec("[a-z]{1,6}: [a-z0-9 ]{0,8}", 0..3),
    )
        .prop_map(|(chunks, trailers)| {
            let mut out = Vec::new();
            for (data, ext) in chunks {
                out.extend_from_slice(format!("{:x}", data.len()).as_bytes());
                if let Some(ext) = ext {
                    out.extend_from_slice(format!(";{ext}").as_bytes());
                }
                out.extend_from_slice(format!("\r\n{data}\r\n").as_bytes());
            }
            out.extend_from_slice(b"0\r\n");
            for trailer in trailers {
                out.extend_from_slice(format!("{trailer}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out
        })
}

/// A request: a start line, a Host (usually), fields, and a body framed by length, chunks or
/// nothing, as the fields say or contradict.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = proptest::sample::select(&["GET", "POST", "DELETE", "PUT", "HEAD", "OPTIONS"][..]);
    let target = prop_oneof![Just("/mcp"), Just("/mcp?sessionId=1"), Just("http://h/mcp"), Just("*")];
    let version = prop_oneof![4 => Just("HTTP/1.1"), 1 => Just("HTTP/1.0")];
    let framing = prop_oneof![
        Just((String::new(), Vec::new())),
        "[a-z{}]{0,30}".prop_map(|b| (format!("content-length: {}\r\n", b.len()), b.into_bytes())),
        chunked_body().prop_map(|b| ("transfer-encoding: chunked\r\n".to_owned(), b)),
    ];
    (method, target, version, any::<bool>(), proptest::collection::vec(field(), 0..4), framing).prop_map(
        |(method, target, version, host, fields, (framing, body))| {
            let mut out = format!("{method} {target} {version}\r\n");
            if host {
                out.push_str("host: h\r\n");
            }
            for field in fields {
                out.push_str(&field);
                out.push_str("\r\n");
            }
            out.push_str(&framing);
            out.push_str("\r\n");
            let mut out = out.into_bytes();
            out.extend_from_slice(&body);
            out
        },
    )
}

/// A response: a status line, fields, and a body framed by length, chunks or the close.
fn response() -> impl Strategy<Value = Vec<u8>> {
    let status = proptest::sample::select(
        &["200 OK", "201 Created", "204 No Content", "304 Not Modified", "404 Not Found", "502 Bad Gateway"]
            [..],
    );
    let version = prop_oneof![4 => Just("HTTP/1.1"), 1 => Just("HTTP/1.0")];
    let framing = prop_oneof![
        "[a-z{}]{0,30}".prop_map(|b| (String::new(), b.into_bytes())),
        "[a-z{}]{0,30}".prop_map(|b| (format!("content-length: {}\r\n", b.len()), b.into_bytes())),
        chunked_body().prop_map(|b| ("transfer-encoding: chunked\r\n".to_owned(), b)),
    ];
    (version, status, proptest::collection::vec(field(), 0..4), framing).prop_map(
        |(version, status, fields, (framing, body))| {
            let mut out = format!("{version} {status}\r\n");
            for field in fields {
                out.push_str(&field);
                out.push_str("\r\n");
            }
            out.push_str(&framing);
            out.push_str("\r\n");
            let mut out = out.into_bytes();
            out.extend_from_slice(&body);
            out
        },
    )
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a test runtime")
}

/// The property both tests check.
fn agree(bytes: &[u8], gateway: Option<Reading>, pingora: Option<Reading>) -> Result<(), TestCaseError> {
    let shown = String::from_utf8_lossy(bytes);
    match (&gateway, &pingora) {
        (Some(_), None) => {
            Err(TestCaseError::fail(format!("Pingora rejects, the gateway accepts: {shown:?}")))
        }
        (Some(ours), Some(theirs)) if ours != theirs => {
            Err(TestCaseError::fail(format!("readings differ for {shown:?}: {ours:?} vs {theirs:?}")))
        }
        _ => Ok(()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_gateway_rejects_every_request_pingora_rejects_and_reads_the_rest_alike(
        base in request(),
        mutations in proptest::collection::vec(mutation(), 0..3),
    ) {
        let bytes = mutate(base, &mutations);
        let rt = runtime();
        let gateway = rt.block_on(gateway_reads_request(&bytes));
        let pingora = rt.block_on(pingora_reads_request(&bytes));
        agree(&bytes, gateway, pingora)?;
    }

    #[test]
    fn the_gateway_rejects_every_response_pingora_rejects_and_reads_the_rest_alike(
        base in response(),
        mutations in proptest::collection::vec(mutation(), 0..3),
    ) {
        let bytes = mutate(base, &mutations);
        let rt = runtime();
        let pingora = rt.block_on(pingora_reads_response(&bytes));
        // Pingora hands an informational head up as the response; the gateway skips it.
        prop_assume!(!pingora.as_ref().is_some_and(|r| r.start.starts_with('1')));
        let gateway = rt.block_on(gateway_reads_response(&bytes));
        agree(&bytes, gateway, pingora)?;
    }
}
