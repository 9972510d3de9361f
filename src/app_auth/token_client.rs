//! Requests to OAuth token endpoints: client credentials (RFC 6749 §4.4) and token exchange
//! (RFC 8693), with `client_secret_basic` or `client_secret_post`, bounded retries with backoff.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::config::{ClientAuthMethod, Secret};
use crate::tokens::{TokenError, TokenResponse};

/// Attempts for a transient failure (unreachable, timeout, 5xx); a 4xx is final.
const ATTEMPTS: u32 = 3;
/// First backoff; it doubles.
const BACKOFF: Duration = Duration::from_millis(100);
/// The most of a token response read.
const MAX_RESPONSE: usize = 64 * 1024;

/// A client registered at a token endpoint.
pub struct TokenEndpoint {
    /// The endpoint.
    pub url: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: Secret,
    /// How the client authenticates.
    pub method: ClientAuthMethod,
    /// Timeout of one request.
    pub timeout: Duration,
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_default()
    })
}

#[derive(Deserialize)]
struct Wire {
    access_token: Option<String>,
    token_type: Option<String>,
    issued_token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    error: Option<String>,
}

impl TokenEndpoint {
    /// The `Authorization` value for `client_secret_basic`: id and secret form-urlencoded, then
    /// joined with `:` and base64-encoded (RFC 6749 §2.3.1).
    pub fn basic_credentials(&self) -> String {
        let id: String = url::form_urlencoded::byte_serialize(self.client_id.as_bytes()).collect();
        let secret: String =
            url::form_urlencoded::byte_serialize(self.client_secret.expose().as_bytes()).collect();
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
    }

    /// Posts `params` (plus client authentication) and parses the token response.
    pub async fn request(&self, params: &[(&str, &str)]) -> Result<TokenResponse, TokenError> {
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.extend_pairs(params);
            if self.method == ClientAuthMethod::ClientSecretPost {
                form.append_pair("client_id", &self.client_id);
                form.append_pair("client_secret", self.client_secret.expose());
            }
            form.finish()
        };
        let mut delay = BACKOFF;
        let mut attempt = 1;
        loop {
            match self.once(body.clone()).await {
                Err(error @ (TokenError::Unreachable(_) | TokenError::Refused { status: 500..=599, .. }))
                    if attempt < ATTEMPTS =>
                {
                    tracing::debug!(url = %self.url, attempt, "token request failed, retrying: {error}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn once(&self, body: String) -> Result<TokenResponse, TokenError> {
        let mut request = http()
            .post(&self.url)
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body);
        if self.method == ClientAuthMethod::ClientSecretBasic {
            request = request.header(reqwest::header::AUTHORIZATION, self.basic_credentials());
        }
        let mut response =
            request.send().await.map_err(|e| TokenError::Unreachable(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let mut bytes = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| TokenError::Unreachable(e.without_url().to_string()))?
        {
            if bytes.len() + chunk.len() > MAX_RESPONSE {
                return Err(TokenError::BadResponse("response too large".into()));
            }
            bytes.extend_from_slice(&chunk);
        }
        let wire: Option<Wire> = serde_json::from_slice(&bytes).ok();
        if !(200..300).contains(&status) {
            let error = wire
                .and_then(|w| w.error)
                .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_graphic()))
                .unwrap_or_else(|| "no error code".into());
            return Err(TokenError::Refused { status, error });
        }
        let wire = wire.ok_or_else(|| TokenError::BadResponse("not JSON".into()))?;
        let access_token = wire
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| TokenError::BadResponse("no access_token".into()))?;
        let expires_in = match wire.expires_in {
            None => None,
            Some(serde_json::Value::Number(n)) => n.as_u64().map(Duration::from_secs),
            Some(serde_json::Value::String(s)) => s.parse().ok().map(Duration::from_secs),
            Some(_) => None,
        };
        Ok(TokenResponse {
            access_token: Secret::new(access_token),
            token_type: wire.token_type,
            issued_token_type: wire.issued_token_type,
            expires_in,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_urlencode_before_base64() {
        let endpoint = TokenEndpoint {
            url: String::new(),
            client_id: "my client".into(),
            client_secret: Secret::new("p:a+s%s/w".into()),
            method: ClientAuthMethod::ClientSecretBasic,
            timeout: Duration::from_secs(1),
        };
        let header = endpoint.basic_credentials();
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(header.strip_prefix("Basic ").unwrap()).unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), "my+client:p%3Aa%2Bs%25s%2Fw");
    }
}
