//! A mock OAuth token endpoint: answers client-credentials and token-exchange requests with
//! numbered tokens, records every request, and can fail, stall or hand out short lifetimes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::upstream::{MockUpstream, Recorded, Reply};

/// How the endpoint answers now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// Issue tokens.
    Issue,
    /// Answer 503.
    Fail,
    /// Answer after this long.
    Stall(Duration),
}

/// The running endpoint.
pub struct MockTokenEndpoint {
    server: MockUpstream,
    mode: Arc<Mutex<TokenMode>>,
    expires_in: Arc<AtomicU64>,
    issued: Arc<AtomicUsize>,
}

impl MockTokenEndpoint {
    /// Starts issuing tokens that live `expires_in` seconds.
    pub async fn start(expires_in: u64) -> Self {
        let mode = Arc::new(Mutex::new(TokenMode::Issue));
        let lifetime = Arc::new(AtomicU64::new(expires_in));
        let issued = Arc::new(AtomicUsize::new(0));
        let (m, l, n) = (mode.clone(), lifetime.clone(), issued.clone());
        let server = MockUpstream::start(move |r| {
            let current = m.lock().map(|m| *m).unwrap_or(TokenMode::Fail);
            match current {
                TokenMode::Fail => Reply::Full { status: 503, headers: vec![], body: Bytes::from_static(br#"{"error":"temporarily_unavailable"}"#) },
                TokenMode::Stall(d) => Reply::Stall(d),
                TokenMode::Issue => {
                    let count = n.fetch_add(1, Ordering::SeqCst) + 1;
                    let form = form(r);
                    let exchange = form.iter().any(|(k, v)| k == "grant_type" && v.ends_with("token-exchange"));
                    let body = if exchange {
                        let subject = form.iter().find(|(k, _)| k == "subject_token").map(|(_, v)| v.clone()).unwrap_or_default();
                        let tail: String = subject.chars().rev().take(10).collect::<String>().chars().rev().collect();
                        serde_json::json!({
                            "access_token": format!("exchanged-{count}-for-{tail}"),
                            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                            "token_type": "Bearer",
                            "expires_in": l.load(Ordering::SeqCst),
                        })
                    } else {
                        serde_json::json!({"access_token": format!("service-token-{count}"), "token_type": "Bearer", "expires_in": l.load(Ordering::SeqCst)})
                    };
                    Reply::Full { status: 200, headers: vec![("content-type".into(), "application/json".into())], body: Bytes::from(body.to_string()) }
                }
            }
        })
        .await;
        Self { server, mode, expires_in: lifetime, issued }
    }

    /// Changes what the endpoint does.
    pub fn set(&self, mode: TokenMode) {
        if let Ok(mut m) = self.mode.lock() {
            *m = mode;
        }
    }

    /// The token URL.
    pub fn url(&self) -> String {
        self.server.url("/oauth/token")
    }

    /// Every request received.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    /// Sets the lifetime of the next tokens.
    pub fn set_expires_in(&self, secs: u64) {
        self.expires_in.store(secs, Ordering::SeqCst);
    }
}

/// The form fields of a recorded request, decoded.
pub fn form(r: &Recorded) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&r.body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}
