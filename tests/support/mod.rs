//! Shared test harness: the real gateway binary on ephemeral loopback ports, and a mock MCP
//! upstream that records what it receives and answers as each test scripts it.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod gateway;
pub mod idp;
pub mod raw_upstream;
pub mod token_endpoint;
pub mod upstream;

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

/// An HTTP/1.1 client for the gateway under test (no system proxy).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().http1_only().build().expect("client")
}

/// A JSON-RPC POST of `body` to `url`, ready for more headers or `send()`.
pub fn post_jsonrpc(url: String, body: &'static str) -> reqwest::RequestBuilder {
    client().post(url).header("content-type", "application/json").body(body)
}
