//! MCP session affinity without a shared table: for a server with several replicas, the session
//! id a replica issues is handed to the client wrapped as `pc1.<replica>.<tag>.<original>`, where
//! the tag is an HMAC over the replica and the original id. A request carrying the wrapped id goes
//! to that replica (with the original id restored); a forged or foreign id, or a replica that is
//! gone, gets 404 so the client starts a new session. Any gateway host holding the same key routes
//! the same way.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "pc1.";
/// Bytes of the HMAC kept in the id (128 bits).
const TAG_BYTES: usize = 16;

/// The key that authenticates wrapped session ids.
#[derive(Clone)]
pub struct SessionKey(Arc<[u8]>);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey([redacted])")
    }
}

impl SessionKey {
    /// A key from configured material.
    pub fn new(material: &[u8]) -> Self {
        Self(material.into())
    }

    /// A random key for this process (kept across reloads).
    pub fn per_process() -> Self {
        static KEY: OnceLock<SessionKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let mut bytes = [0u8; 32];
            let filled = std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
            if filled.is_err() {
                // No /dev/urandom: derive from time and process id (still unguessable enough for
                // a per-process routing key that a client cannot observe).
                let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
                bytes.copy_from_slice(&<Sha256 as sha2::Digest>::digest(seed.as_bytes()));
            }
            SessionKey::new(&bytes)
        })
        .clone()
    }

    fn mac(&self, replica: &str, original: &str) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(replica.as_bytes());
        mac.update(b".");
        mac.update(original.as_bytes());
        mac
    }

    /// The id handed to the client for `original`, issued by `replica`.
    pub fn wrap(&self, replica: &str, original: &str) -> String {
        let tag = self.mac(replica, original).finalize().into_bytes();
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES]);
        format!("{PREFIX}{replica}.{tag}.{original}")
    }

    /// `(replica, original)` from a wrapped id, when its tag is right.
    pub fn unwrap<'a>(&self, wrapped: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = wrapped.strip_prefix(PREFIX)?;
        let (replica, rest) = rest.split_once('.')?;
        let (tag, original) = rest.split_once('.')?;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag).ok()?;
        if tag.len() != TAG_BYTES {
            return None;
        }
        self.mac(replica, original).verify_truncated_left(&tag).ok()?;
        Some((replica, original))
    }
}

/// The value of query parameter `name`, raw (still percent-encoded).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// `path?query` with parameter `name` set to `value` (raw) wherever it appears.
pub fn replace_query_param(path_and_query: &str, name: &str, value: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else { return path_and_query.to_owned() };
    let replaced: Vec<String> = query
        .split('&')
        .map(|pair| match pair.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            Some(_) => format!("{name}={value}"),
            None => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", replaced.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_id_names_its_replica_and_cannot_be_forged() {
        let key = SessionKey::new(b"test key");
        let wrapped = key.wrap("a1b2c3d4", "upstream-session-42");
        assert!(wrapped.starts_with("pc1.a1b2c3d4."));
        assert_eq!(key.unwrap(&wrapped), Some(("a1b2c3d4", "upstream-session-42")));
        let moved = wrapped.replace("a1b2c3d4", "ffffffff");
        assert_eq!(key.unwrap(&moved), None, "pointing an id at another replica breaks the tag");
        assert_eq!(key.unwrap(&wrapped.replace("42", "43")), None);
        assert_eq!(SessionKey::new(b"other key").unwrap(&wrapped), None, "another key does not verify");
        assert_eq!(key.unwrap("upstream-session-42"), None);
        assert_eq!(key.unwrap("pc1.x.y.z"), None);
    }

    #[test]
    fn original_ids_may_contain_dots() {
        let key = SessionKey::new(b"k");
        let wrapped = key.wrap("r", "a.b.c");
        assert_eq!(key.unwrap(&wrapped), Some(("r", "a.b.c")));
    }

    #[test]
    fn query_parameters_are_found_and_replaced() {
        assert_eq!(query_param("a=1&sessionId=xyz", "sessionId"), Some("xyz"));
        assert_eq!(query_param("sessionIdx=1", "sessionId"), None);
        assert_eq!(
            replace_query_param("/m?a=1&sessionId=w&b=2", "sessionId", "orig"),
            "/m?a=1&sessionId=orig&b=2"
        );
        assert_eq!(replace_query_param("/m", "sessionId", "x"), "/m");
    }
}
