//! The audiences one server accepts: a token is valid only for the server it was issued for.
//!
//! The MCP authorization spec has a resource server accept only tokens issued for it. By default a
//! server accepts a token only when its `aud` names one of the server's own resource URLs (the
//! ones its Protected Resource Metadata announces: `public_url` + prefix, and + alias); a server
//! may list further audiences for identity providers that cannot issue per-resource audiences.
//! The set is compiled once per config and checked on every request, verified-token cache hit or
//! not, so a token remembered for one server is never let in on another.

use super::jwt::VerifiedToken;

/// The compiled set of audiences a server accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audiences {
    /// The server's resource URLs first, then the explicitly listed audiences; no duplicates.
    accepted: Box<[Box<str>]>,
    /// How many of `accepted` are the server's own resource URLs.
    resources: usize,
}

impl Audiences {
    /// The server's own resource URLs, plus `explicit` audiences listed in its config.
    pub fn new(resources: &[String], explicit: &[String]) -> Self {
        let mut accepted: Vec<Box<str>> = Vec::with_capacity(resources.len() + explicit.len());
        for audience in resources.iter().chain(explicit) {
            if !accepted.iter().any(|a| **a == **audience) {
                accepted.push(audience.as_str().into());
            }
        }
        let resources = accepted.iter().filter(|a| resources.iter().any(|r| **r == ***a)).count();
        Self { accepted: accepted.into_boxed_slice(), resources }
    }

    /// True when the token's `aud` names one of the accepted audiences.
    pub fn accepts(&self, token: &VerifiedToken) -> bool {
        token.audiences().any(|aud| self.accepted.iter().any(|a| **a == *aud))
    }

    /// Every accepted audience.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.accepted.iter().map(|a| &**a)
    }

    /// The explicitly listed audiences that are not the server's own resource URLs.
    pub fn explicit(&self) -> impl Iterator<Item = &str> {
        self.accepted[self.resources..].iter().map(|a| &**a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(aud: serde_json::Value) -> VerifiedToken {
        VerifiedToken::for_test(json!({"sub": "alice", "aud": aud}))
    }

    fn github() -> Audiences {
        Audiences::new(&["https://gw/github".into(), "https://gw/servers/github/mcp".into()], &[])
    }

    #[test]
    fn a_server_accepts_tokens_for_its_own_resource_urls_only() {
        let github = github();
        assert!(github.accepts(&token(json!("https://gw/github"))));
        assert!(github.accepts(&token(json!("https://gw/servers/github/mcp"))), "the alias too");
        assert!(github.accepts(&token(json!(["https://other", "https://gw/github"]))), "aud as an array");
        for other in [json!("https://gw/search"), json!(["https://gw/search"]), json!("https://gw/github/")] {
            assert!(!github.accepts(&token(other.clone())), "{other}");
        }
        assert!(!github.accepts(&token(json!(42))), "a malformed aud names nothing");
    }

    #[test]
    fn listed_audiences_are_accepted_besides_the_resource_urls() {
        let shared = Audiences::new(
            &["https://gw/github".into()],
            &["api://mcp".into(), "https://gw/github".into(), "api://mcp".into()],
        );
        assert!(shared.accepts(&token(json!("api://mcp"))));
        assert!(shared.accepts(&token(json!("https://gw/github"))));
        assert_eq!(shared.iter().collect::<Vec<_>>(), ["https://gw/github", "api://mcp"]);
        assert_eq!(shared.explicit().collect::<Vec<_>>(), ["api://mcp"], "no duplicates, no resources");
        assert_eq!(github().explicit().count(), 0);
    }
}
