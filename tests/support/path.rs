//! Which way the suite's requests reach the gateway: `PORTCULLIS_TEST_PATH=h1 | h1-pingora | h2`
//! (default `h1`). The same tests run on every path so the engines cannot drift apart.

use std::path::PathBuf;
use std::sync::OnceLock;

/// One way into the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Plain HTTP/1.1 through the gateway's own engine (`http1_engine: gateway`).
    H1,
    /// Plain HTTP/1.1 through pingora-proxy (`http1_engine: pingora`).
    H1Pingora,
    /// HTTP/2 over TLS (ALPN `h2`), which always goes through pingora-proxy.
    H2,
}

impl Path {
    /// The path this test process runs on, read once from `PORTCULLIS_TEST_PATH`.
    pub fn current() -> Self {
        static CURRENT: OnceLock<Path> = OnceLock::new();
        *CURRENT.get_or_init(|| match std::env::var("PORTCULLIS_TEST_PATH").as_deref() {
            Err(_) | Ok("") | Ok("h1") => Path::H1,
            Ok("h1-pingora") => Path::H1Pingora,
            Ok("h2") => Path::H2,
            Ok(other) => panic!("PORTCULLIS_TEST_PATH={other}: expected h1, h1-pingora or h2"),
        })
    }

    /// The name used in `PORTCULLIS_TEST_PATH`.
    pub fn name(self) -> &'static str {
        match self {
            Path::H1 => "h1",
            Path::H1Pingora => "h1-pingora",
            Path::H2 => "h2",
        }
    }
}

/// True (and a line on stderr saying why it is skipped) when the current path is not in
/// `paths`: the test returns early. Every path-specific test goes through here, so
/// `grep -rn only_on tests/` is the whole skip list.
#[must_use = "return from the test when this is true"]
pub fn only_on(paths: &[Path], reason: &str) -> bool {
    let current = Path::current();
    if paths.contains(&current) {
        return false;
    }
    eprintln!("skipped on {}: {reason}", current.name());
    true
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, generated once per test process.
pub struct TestCertificate {
    /// PEM of the certificate (also the root a client trusts).
    pub cert_pem: String,
    /// Certificate file.
    pub cert: PathBuf,
    /// Private key file.
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

/// The process's test certificate, written into a temp dir on first use.
pub fn certificate() -> &'static TestCertificate {
    static CERT: OnceLock<TestCertificate> = OnceLock::new();
    CERT.get_or_init(|| {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("test certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
        TestCertificate { cert_pem: certified.cert.pem(), cert, key, _dir: dir }
    })
}

/// The `listen`, `public_url` (and, for h1-pingora, `http1_engine`) lines of a gateway config
/// for the current path; the admin listener is always plain HTTP/1.
pub fn listener_yaml(port: u16, admin_port: u16) -> String {
    let admin = format!("admin: {{listen: \"127.0.0.1:{admin_port}\"}}\n");
    match Path::current() {
        Path::H1 => format!("listen: [\"127.0.0.1:{port}\"]\npublic_url: http://127.0.0.1:{port}\n{admin}"),
        Path::H1Pingora => format!(
            "listen: [\"127.0.0.1:{port}\"]\npublic_url: http://127.0.0.1:{port}\nhttp1_engine: pingora\n{admin}"
        ),
        Path::H2 => {
            let tls = certificate();
            format!(
                "listen:\n  - address: \"127.0.0.1:{port}\"\n    tls: {{cert: \"{}\", key: \"{}\"}}\npublic_url: https://localhost:{port}\n{admin}",
                tls.cert.display(),
                tls.key.display()
            )
        }
    }
}

/// The base URL of a gateway listening on `port` (no trailing slash).
pub fn base_url(port: u16) -> String {
    match Path::current() {
        Path::H1 | Path::H1Pingora => format!("http://127.0.0.1:{port}"),
        Path::H2 => format!("https://localhost:{port}"),
    }
}
