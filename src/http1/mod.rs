//! The HTTP/1 engine: the client side of a connection (request heads and bodies read by RFC 9112's
//! rules, responses written in one piece), the upstream side (request heads written from
//! name/value pairs, responses read by their framing), an idle-connection pool, and the timers
//! they share. It knows nothing of MCP: routing, authentication, header policy and upstream
//! selection are the gateway's (`src/gateway/`), whose HTTP/1 door drives this engine.
//!
//! ```text
//! client/      ClientConnection (parse a head), ClientRequest (its body, the response writer,
//!              the keep-alive hand-back; a Pingora custom HTTP session the phases see)
//! framing.rs   message-body framing shared by both sides: lengths, chunks, transfer codings
//! upstream/    request_head.rs (write a head), response.rs (read a response), pool.rs (idle
//!              connections per worker thread, keyed by Pingora's peer reuse hash)
//! timer.rs     one Tokio timer per connection, moved for each read
//! ```
//!
//! The parsers are property-tested against Pingora's own HTTP/1 sessions (`differential.rs`).

pub mod client;
pub mod framing;
pub mod timer;
pub mod upstream;

#[cfg(test)]
mod differential;
