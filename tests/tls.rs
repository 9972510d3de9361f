//! A TLS listener with a certificate the test generates, offering HTTP/2 by ALPN.

mod support;

use support::free_port;
use support::gateway::Gateway;
use support::upstream::{MockUpstream, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_serves_mcp_over_http2_and_http1() {
    let upstream =
        MockUpstream::start(|_| Reply::json(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#)).await;

    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("test certificate");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), certified.key_pair.serialize_pem()).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");

    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "listen:\n  - address: \"127.0.0.1:{port}\"\n    tls: {{cert: \"{}\", key: \"{}\"}}\npublic_url: https://localhost:{port}\nadmin: {{listen: \"127.0.0.1:{admin}\"}}\nagent_auth: {{mode: none, allow_unauthenticated: true}}\nservers:\n  - {{name: s, path: /s, upstream: \"{}\"}}\n",
        cert.display(),
        key.display(),
        upstream.url("/mcp"),
    );
    let gateway = Gateway::start_with_config(&yaml, port, admin, &[]);

    let root = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], gateway.port));
    let url = format!("https://localhost:{port}/s");
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

    let h2 = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(root.clone())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let response = h2
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("https request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "ALPN should pick h2");
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("\"tools\""));

    let h1 = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .add_root_certificate(root)
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let response = h1.post(&url).body(body).send().await.expect("https request");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.requests().len(), 2);
}
