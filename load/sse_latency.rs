//! Per-event SSE forwarding latency: opens STREAMS concurrent streams to URL (the mock MCP
//! server's `/events`, directly or through a proxy), and for every event compares its arrival
//! time with the send time the server wrote into it. Prints `events p50_us p99_us`.
//!
//! `sse-latency URL STREAMS`

use std::time::{SystemTime, UNIX_EPOCH};

fn now_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, streams] = args.as_slice() else {
        return Err("usage: sse-latency URL STREAMS".into());
    };
    let client = reqwest::Client::builder().no_proxy().http1_only().build()?;
    let tasks = (0..streams.parse::<usize>()?).map(|_| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let mut delays = Vec::new();
            let Ok(mut response) = client.get(&url).header("accept", "text/event-stream").send().await else {
                return delays;
            };
            let mut pending = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                let arrived = now_us();
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find("\n\n") {
                    let event: String = pending.drain(..end + 2).collect();
                    if let Some(sent) = event
                        .split("\"sent_us\":")
                        .nth(1)
                        .and_then(|s| {
                            s.trim_end_matches(|c: char| !c.is_ascii_digit())
                                .split(|c: char| !c.is_ascii_digit())
                                .next()
                        })
                        .and_then(|s| s.parse::<u128>().ok())
                    {
                        delays.push(arrived.saturating_sub(sent));
                    }
                }
            }
            delays
        })
    });
    let mut all: Vec<u128> = Vec::new();
    for task in futures_util::future::join_all(tasks).await {
        all.extend(task.unwrap_or_default());
    }
    if all.is_empty() {
        return Err("no events received".into());
    }
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize];
    println!("{} {} {}", all.len(), pct(0.50), pct(0.99));
    Ok(())
}
