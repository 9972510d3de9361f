//! Portcullis: an MCP gateway on Pingora.
//!
//! The request path is in [`gateway`] (the MCP phases and one door per engine); HTTP/1 is
//! carried by the gateway's own engine, [`http1`], unless the config selects pingora-proxy's.
//! What the phases read is the compiled [`registry`], built from the operator's [`config`]. The
//! README's "How a request flows" and `docs/architecture.md` draw the map.

pub mod admin;
pub mod affinity;
pub mod agent_auth;
pub mod app_auth;
pub mod config;
pub mod dns;
pub mod drain;
pub mod error_body;
pub mod gateway;
pub mod headers;
pub mod health;
pub mod http1;
pub mod identity;
pub mod metrics;
pub mod origin;
pub mod registry;
pub mod reload;
pub mod routes;
pub mod serve;
pub mod sse_endpoint;
pub mod tokens;
pub mod upstream;
