//! Open-loop load at a fixed request rate: CONNECTIONS keep-alive connections to URL share RATE
//! requests a second between them (each connection sends on its own evenly spaced schedule), for
//! SECONDS. Every request is the harness's MCP `tools/list` POST; with TOKENS_FILE, each carries
//! `Authorization: Bearer <token>` from the file's lines in rotation (as `load/rotate.lua` does).
//!
//! Latency is counted from when a request was due, not from when it left, whenever the
//! connection was still busy with the previous response at that moment: a slow answer delays
//! the requests behind it, and they are charged for it (no coordinated omission, as in wrk2).
//! When the connection was free, latency counts from the actual send, so the 1 ms granularity of
//! the timer that paces the sends is not charged to the system under test. (When that lateness
//! makes the next request wait, it is: an overcharge every system pays alike, which the direct
//! run measures.) The first second is warm-up and not counted.
//!
//! Prints `requests p50_us p99_us errors`.
//!
//! `fixed-rate URL CONNECTIONS RATE SECONDS [TOKENS_FILE]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const WARM_UP: Duration = Duration::from_secs(1);

/// The requests one connection sends, in rotation.
fn requests(authority: &str, path: &str, tokens: &[String]) -> Vec<Vec<u8>> {
    let head = |auth: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\n{auth}Content-Length: {}\r\n\r\n{BODY}",
            BODY.len()
        )
        .into_bytes()
    };
    if tokens.is_empty() {
        vec![head("")]
    } else {
        tokens.iter().map(|t| head(&format!("Authorization: Bearer {t}\r\n"))).collect()
    }
}

/// A response as far as the load cares: its status, and whether the server closes the
/// connection after it (nginx does after `keepalive_requests`).
struct Answer {
    status: u16,
    closing: bool,
}

/// Reads one response with a `Content-Length` body off the connection.
async fn read_response(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Answer, String> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut fields);
        if let httparse::Status::Complete(head) = response.parse(buf).map_err(|e| e.to_string())? {
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                .ok_or("a response without Content-Length")?;
            let status = response.code.unwrap_or(0);
            let closing = response
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close"));
            while buf.len() < head + length {
                if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err("closed inside a response body".into());
                }
            }
            buf.advance(head + length);
            return Ok(Answer { status, closing });
        }
        if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed before a response".into());
        }
    }
}

/// What one connection measured: latencies (µs) of counted requests, and failures.
struct Measured {
    latencies: Vec<u32>,
    errors: u64,
}

async fn connection(
    address: String,
    requests: Arc<Vec<Vec<u8>>>,
    first: usize,
    first_due: Instant,
    interval: Duration,
    counted_from: Instant,
    end: Instant,
) -> Measured {
    let mut measured = Measured { latencies: Vec::new(), errors: 0 };
    let Some(mut stream) = connect(&address).await else {
        measured.errors += 1;
        return measured;
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut due = first_due;
    let mut next = first;
    let mut previous_done = Instant::now();
    while due < end {
        let from = if previous_done <= due {
            // Free: the pacing timer's own lateness is not the system's doing.
            tokio::time::sleep_until(due.into()).await;
            Instant::now()
        } else {
            // Busy: the wait for the previous response counts.
            due
        };
        let request = &requests[next % requests.len()];
        next += 1;
        let answered = match stream.write_all(request).await {
            Ok(()) => read_response(&mut stream, &mut buf).await,
            Err(e) => Err(e.to_string()),
        };
        let done = Instant::now();
        match answered {
            Ok(answer) => {
                if answer.status != 200 {
                    measured.errors += 1;
                } else if due >= counted_from {
                    let micros = done.duration_since(from).as_micros();
                    measured.latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                }
                if answer.closing {
                    // A reconnect that runs past the next request's due time is charged to it.
                    buf.clear();
                    match connect(&address).await {
                        Some(fresh) => stream = fresh,
                        None => {
                            measured.errors += 1;
                            return measured;
                        }
                    }
                }
            }
            Err(_) => {
                measured.errors += 1;
                return measured;
            }
        }
        previous_done = Instant::now();
        due += interval;
    }
    measured
}

async fn connect(address: &str) -> Option<TcpStream> {
    let stream = TcpStream::connect(address).await.ok()?;
    stream.set_nodelay(true).ok()?;
    Some(stream)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, connections, rate, seconds, tokens_file) = match args.as_slice() {
        [u, c, r, s] => (u, c, r, s, None),
        [u, c, r, s, t] => (u, c, r, s, Some(t)),
        _ => return Err("usage: fixed-rate URL CONNECTIONS RATE SECONDS [TOKENS_FILE]".into()),
    };
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let connections: u32 = connections.parse()?;
    let rate: f64 = rate.parse()?;
    let seconds: u64 = seconds.parse()?;
    if connections == 0 || rate <= 0.0 {
        return Err("CONNECTIONS and RATE must be positive".into());
    }
    let tokens: Vec<String> = match tokens_file {
        Some(file) => {
            std::fs::read_to_string(file)?.lines().filter(|l| !l.is_empty()).map(String::from).collect()
        }
        None => Vec::new(),
    };

    // Connection c sends at start + c/RATE + k·CONNECTIONS/RATE: the sends of all connections
    // together are RATE a second, evenly spread.
    let spacing = Duration::from_secs_f64(1.0 / rate);
    let interval = spacing * connections;
    let start = Instant::now() + Duration::from_millis(100);
    let counted_from = start + WARM_UP;
    let end = counted_from + Duration::from_secs(seconds);
    let all = Arc::new(requests(authority, path, &tokens));
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            // Each connection starts at its own place in the token rotation.
            let first = (c as usize * 7919) % all.len();
            tokio::spawn(connection(
                authority.to_string(),
                Arc::clone(&all),
                first,
                start + spacing * c,
                interval,
                counted_from,
                end,
            ))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let measured = task.await?;
        latencies.extend(measured.latencies);
        errors += measured.errors;
    }
    if latencies.is_empty() {
        return Err("no request was answered".into());
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!("{} {} {} {}", latencies.len(), pct(0.50), pct(0.99), errors);
    Ok(())
}
