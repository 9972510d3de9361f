//! Portcullis: an MCP gateway on Pingora.
//!
//! The request path is in [`gateway`]; what it reads is the compiled [`registry`], built from the
//! operator's [`config`]. See `DESIGN.md` in the shared folder for the map.

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
