//! Shared test harness: the real gateway binary on ephemeral loopback ports, and a mock MCP
//! upstream that records what it receives and answers as each test scripts it.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod gateway;
pub mod idp;
pub mod token_endpoint;
pub mod upstream;

/// A free loopback port (bound, then released for the process under test to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
