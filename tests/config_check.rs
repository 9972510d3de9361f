//! `portcullis check` and `run` on valid and invalid configs, and secrets kept out of `/config`.

mod support;

use support::free_port;
use support::gateway::{check, run_expecting_refusal, Gateway};

const INVALID: &str = r#"listen: ["127.0.0.1:not-a-port"]
public_url: mcp.example.com
agent_auth: {mode: none}
servers:
  - name: "bad name"
    path: github/
    upstream: "ftp://127.0.0.1/mcp"
  - name: ok
    path: /servers/ok
    upstreams: []
  - name: timeouts
    path: /t
    upstream: "http://user:pw@127.0.0.1:1/mcp"
    connect_timeout: 0s
"#;

#[test]
fn check_prints_every_error_with_its_yaml_path_and_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, INVALID).unwrap();
    let output = check(&path);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let expected = [
        "error: listen[0]: \"127.0.0.1:not-a-port\" is not an ip:port address (hint: ",
        "error: public_url: not a valid URL: relative URL without a base (hint: public_url: https://mcp.example.com)",
        "error: agent_auth: mode none leaves the server open to anyone (hint: add allow_unauthenticated: true if that is intended",
        "error: servers[0].name: invalid server name \"bad name\" (hint: ",
        "error: servers[0].path: invalid path \"github/\" (hint: a path looks like /github or /tools/search)",
        "error: servers[1].path: \"/servers/ok\" is under /servers, which the gateway serves itself",
        "error: servers[2].upstream: credentials in the URL are not allowed",
        "error: servers[2].connect_timeout: must be greater than zero",
    ];
    for line in expected {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error: ")).count(), expected.len(), "{stderr}");
}

#[test]
fn check_reports_unknown_fields_and_bad_types_at_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    std::fs::write(&path, "listen: [\"127.0.0.1:1\"]\npublic_url: http://x\nservers:\n  - name: a\n    path: /a\n    upstream: http://127.0.0.1:2\n    read_timout: 5s\n").unwrap();
    let stderr = String::from_utf8(check(&path).stderr).unwrap();
    assert!(stderr.contains("error: servers[0].read_timout: unknown field `read_timout`"), "{stderr}");
    assert!(stderr.contains("line 7"), "{stderr}");
}

#[test]
fn run_refuses_an_invalid_config_with_the_same_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, INVALID).unwrap();
    let checked = String::from_utf8(check(&path).stderr).unwrap();
    let output = run_expecting_refusal(&path);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    for line in checked.lines().filter(|l| l.starts_with("error: ")) {
        assert!(stderr.contains(line), "run did not print {line:?}:\n{stderr}");
    }
}

#[test]
fn every_shipped_config_passes_check() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut checked = 0;
    let files = std::fs::read_dir(&conf).unwrap().chain(std::fs::read_dir(conf.join("examples")).unwrap());
    for entry in files {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".yaml") || name.contains("pingora") {
            continue;
        }
        let output = check(&path);
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
        checked += 1;
    }
    assert!(checked >= 3, "expected conf/portcullis.yaml and the examples, checked {checked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_the_admin_config() {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    // A literal secret is shown as [redacted]…
    let literal = "literal-admin-secret-6f2b9";
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "listen: [\"127.0.0.1:{port}\"]\npublic_url: http://127.0.0.1:{port}\nadmin: {{listen: \"127.0.0.1:{admin}\", auth_token: \"{literal}\"}}\nservers: []\n"
    );
    let gateway = Gateway::start_with_config(&yaml, port, admin, &[]);
    let denied = client.get(gateway.admin_url("/config")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let wrong = client.get(gateway.admin_url("/config")).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let shown = client.get(gateway.admin_url("/config")).bearer_auth(literal).send().await.unwrap();
    assert_eq!(shown.status(), 200);
    let body = shown.text().await.unwrap();
    assert!(!body.contains(literal), "{body}");
    assert!(body.contains("[redacted]"), "{body}");
    assert!(!gateway.log().contains(literal));
    drop(gateway);

    // …and a reference as written, never its value.
    let from_env = "env-admin-secret-0c41d";
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        "listen: [\"127.0.0.1:{port}\"]\npublic_url: http://127.0.0.1:{port}\nadmin: {{listen: \"127.0.0.1:{admin}\", auth_token: \"${{env:PORTCULLIS_TEST_ADMIN_TOKEN}}\"}}\n"
    );
    let gateway =
        Gateway::start_with_config(&yaml, port, admin, &[("PORTCULLIS_TEST_ADMIN_TOKEN", from_env)]);
    let body = client
        .get(gateway.admin_url("/config"))
        .bearer_auth(from_env)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("${env:PORTCULLIS_TEST_ADMIN_TOKEN}"), "{body}");
    assert!(!body.contains(from_env), "{body}");
    assert!(!gateway.log().contains(from_env));
}
