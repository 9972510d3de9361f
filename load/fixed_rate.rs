//! Open-loop load at a fixed request rate: CONNECTIONS keep-alive connections to URL share RATE
//! requests a second between them, for SECONDS. Request k is due at start + k/RATE and goes out
//! on connection k mod CONNECTIONS, so the sends are evenly spaced in time, not only on average.
//! Every request is the harness's MCP `tools/list` POST; with TOKENS_FILE, each carries
//! `Authorization: Bearer <token>` from the file's lines in rotation (as `load/rotate.lua` does).
//!
//! The sends are paced by a Linux timerfd (nanosecond resolution, awaited through the runtime's
//! epoll). Tokio's own timers round up to whole milliseconds: at 10,000 requests a second they
//! released ten requests at each tick, and every system was then measured draining bursts of ten
//! (the last of a burst waits for the nine before it at each hop), not serving a steady rate.
//!
//! Latency is counted from when a request was due, not from when it left, whenever the
//! connection was still busy with the previous response at that moment: a slow answer delays
//! the requests behind it, and they are charged for it (no coordinated omission, as in wrk2).
//! When the connection was free, latency counts from the actual send, so the pacer's own
//! wake-up delay is not charged to the system under test. The first second is warm-up and not
//! counted.
//!
//! Prints `requests p50_us p99_us errors`. With FIXED_RATE_TRACE=<file>, also writes each
//! counted request's due time and latency (µs) to that file, in the order they fell due, after
//! a first line that says when counting began on the monotonic clock.
//!
//! `fixed-rate URL CONNECTIONS RATE SECONDS [TOKENS_FILE]`

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

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

/// What one connection measured: its counted requests, and failures.
struct Measured {
    samples: Vec<Sample>,
    errors: u64,
}

/// One counted request: when it was due (µs after counting began) and its latency (µs).
#[derive(Clone, Copy)]
struct Sample {
    due_us: u32,
    latency_us: u32,
}

/// One connection: sends a request each time the pacer says one is due, and times its answer.
async fn connection(
    address: String,
    requests: Arc<Vec<Vec<u8>>>,
    first: usize,
    mut due_times: mpsc::UnboundedReceiver<Instant>,
    counted_from: Instant,
) -> Measured {
    let mut measured = Measured { samples: Vec::new(), errors: 0 };
    let Some(mut stream) = connect(&address).await else {
        measured.errors += 1;
        return measured;
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut next = first;
    let mut previous_done = Instant::now();
    while let Some(due) = due_times.recv().await {
        let from = if previous_done <= due {
            // Free when it fell due: the pacer's wake-up delay is not the system's doing.
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
                    let micros = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
                    measured
                        .samples
                        .push(Sample { due_us: micros(due - counted_from), latency_us: micros(done - from) });
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
    }
    measured
}

/// A one-shot timer on the monotonic clock (which `Instant` reads) with nanosecond resolution.
struct PreciseTimer {
    fd: AsyncFd<OwnedFd>,
}

impl PreciseTimer {
    fn new() -> io::Result<Self> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new descriptor
        // that nothing else owns.
        let raw =
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a valid descriptor owned by no one else (see above).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an `OwnedFd` keeps its one descriptor open, unchanged, until it is dropped,
        // which only the `AsyncFd` can do.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Returns at `at` (at once when it has passed).
    async fn sleep_until(&self, at: Instant) -> io::Result<()> {
        let Some(wait) = at.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
            return Ok(());
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: the descriptor is a timerfd; `spec` outlives the call; no old value is asked for.
        if unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut ready = self.fd.readable().await?;
            let expired = ready.try_io(|fd| {
                let mut expirations = [0u8; 8];
                // SAFETY: reads at most 8 bytes into an 8-byte buffer.
                let n =
                    unsafe { libc::read(fd.as_raw_fd(), expirations.as_mut_ptr().cast(), expirations.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match expired {
                Ok(result) => return result,
                // Not expired yet (readiness was stale): wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

/// The monotonic clock now, in seconds.
fn monotonic_seconds() -> f64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write to; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// Hands request k to connection k mod CONNECTIONS at start + k·spacing until `end`; a late
/// wake-up hands over every request that has fallen due, each with its own due time.
async fn pace(
    connections: Vec<mpsc::UnboundedSender<Instant>>,
    start: Instant,
    spacing: Duration,
    end: Instant,
) -> io::Result<()> {
    let timer = PreciseTimer::new()?;
    let mut k: u32 = 0;
    loop {
        let due = start + spacing * k;
        if due >= end {
            return Ok(());
        }
        timer.sleep_until(due).await?;
        let now = Instant::now();
        loop {
            let due = start + spacing * k;
            if due > now || due >= end {
                break;
            }
            // A connection that has failed has dropped its receiver; its share is not sent.
            let _ = connections[k as usize % connections.len()].send(due);
            k += 1;
        }
    }
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

    let spacing = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let counted_from = start + WARM_UP;
    let end = counted_from + Duration::from_secs(seconds);
    // Where counting began on the monotonic clock (which `Instant` reads and `perf sched` can
    // use), so a trace can be laid beside a scheduler trace.
    let counted_from_clock = monotonic_seconds() + (counted_from - Instant::now()).as_secs_f64();
    let all = Arc::new(requests(authority, path, &tokens));
    let mut senders = Vec::new();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (sender, due_times) = mpsc::unbounded_channel();
            senders.push(sender);
            // Each connection starts at its own place in the token rotation.
            let first = (c as usize * 7919) % all.len();
            tokio::spawn(connection(authority.to_string(), Arc::clone(&all), first, due_times, counted_from))
        })
        .collect();
    // The pacer ends by dropping the senders, which ends each connection after its last answer.
    pace(senders, start, spacing, end).await?;
    let mut samples = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let measured = task.await?;
        samples.extend(measured.samples);
        errors += measured.errors;
    }
    if samples.is_empty() {
        return Err("no request was answered".into());
    }
    if let Some(trace) = std::env::var_os("FIXED_RATE_TRACE") {
        // Every counted request in the order they fell due, to see when a tail happened.
        samples.sort_unstable_by_key(|s| s.due_us);
        let header = format!("# counting began at {counted_from_clock:.6} s on CLOCK_MONOTONIC\n");
        let lines: String = samples.iter().map(|s| format!("{} {}\n", s.due_us, s.latency_us)).collect();
        std::fs::write(trace, header + &lines)?;
    }
    let mut latencies: Vec<u32> = samples.iter().map(|s| s.latency_us).collect();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!("{} {} {} {}", latencies.len(), pct(0.50), pct(0.99), errors);
    Ok(())
}
