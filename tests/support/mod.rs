//! Shared test harness: the real gateway binary on ephemeral loopback ports, and a mock MCP
//! upstream that records what it receives and answers as each test scripts it.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod gateway;
pub mod idp;
pub mod metrics;
pub mod path;
pub mod raw_upstream;
pub mod token_endpoint;
pub mod upstream;

/// Generous bound for "this must happen": a failure guard, never a timing assertion.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until `check` holds, polling every 20 ms; panics naming `what` after [`PATIENCE`].
pub async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A free loopback port (bound, then released for the process under test to take), never one
/// this test process handed out before: the kernel may return a just-released port again, and a
/// gateway given the same port for its listener and its admin listener refuses to start.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

#[allow(unused_imports)] // each test file uses a different part of the harness
pub use path::{only_on, Path};

/// A client for the gateway under test on the current [`Path`] (no system proxy): HTTP/1.1 on
/// h1 and h1-pingora; on h2, HTTP/2 only (ALPN offers nothing else, so a gateway that fell back
/// to HTTP/1 fails the handshake), trusting the test certificate, `localhost` resolved to
/// 127.0.0.1. Use [`plain_client`] for the admin listener.
pub fn client() -> reqwest::Client {
    let builder = reqwest::Client::builder().no_proxy();
    match Path::current() {
        Path::H1 | Path::H1Pingora => builder.http1_only(),
        Path::H2 => {
            let root =
                reqwest::Certificate::from_pem(path::certificate().cert_pem.as_bytes()).expect("test root");
            builder
                .http2_prior_knowledge()
                .add_root_certificate(root)
                .resolve("localhost", std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        }
    }
    .build()
    .expect("client")
}

/// The HTTP version [`client`] speaks on the current path.
pub fn expected_version() -> reqwest::Version {
    match Path::current() {
        Path::H1 | Path::H1Pingora => reqwest::Version::HTTP_11,
        Path::H2 => reqwest::Version::HTTP_2,
    }
}

/// A plain HTTP/1.1 client for what is not the gateway's listener, whatever the path: the
/// admin listener and the mock upstreams.
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().http1_only().build().expect("client")
}

/// A JSON-RPC POST of `body` to `url`, ready for more headers or `send()`.
pub fn post_jsonrpc(url: String, body: &'static str) -> reqwest::RequestBuilder {
    client().post(url).header("content-type", "application/json").body(body)
}
