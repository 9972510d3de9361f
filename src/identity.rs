//! Who the caller is, as agent authentication established it.

use std::sync::Arc;

use crate::agent_auth::VerifiedToken;

/// How the identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    /// A verified JWT access token.
    Jwt,
    /// A trusted authenticating proxy's user header.
    Proxy,
    /// Nobody in particular (passthrough, `none`, or the trusted-proxy anonymous fallback).
    Anonymous,
}

impl IdentitySource {
    /// Name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::Proxy => "proxy",
            Self::Anonymous => "anonymous",
        }
    }
}

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Identity {
    /// How it was established.
    pub source: IdentitySource,
    /// The proxy-asserted user (for [`IdentitySource::Proxy`]).
    proxy_user: Option<Arc<str>>,
    /// The verified token, its claims and the raw inbound token (for [`IdentitySource::Jwt`]).
    pub token: Option<Arc<VerifiedToken>>,
}

impl Identity {
    /// An anonymous caller.
    pub fn anonymous() -> Self {
        Self { source: IdentitySource::Anonymous, proxy_user: None, token: None }
    }

    /// A caller named by a trusted proxy.
    pub fn proxy(user: Arc<str>) -> Self {
        Self { source: IdentitySource::Proxy, proxy_user: Some(user), token: None }
    }

    /// A caller with a verified token.
    pub fn jwt(token: Arc<VerifiedToken>) -> Self {
        Self { source: IdentitySource::Jwt, proxy_user: None, token: Some(token) }
    }

    /// The subject: the token's `sub`, the proxy's user, or `anonymous`.
    pub fn subject(&self) -> &str {
        match (&self.token, &self.proxy_user) {
            (Some(token), _) => token.subject().unwrap_or("unknown"),
            (None, Some(user)) => user,
            (None, None) => "anonymous",
        }
    }
}
