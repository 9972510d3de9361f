//! A token is valid only for the server it was issued for (MCP authorization: a resource server
//! accepts only tokens whose audience is itself), through the real gateway.

mod support;

use serde_json::Value;
use support::gateway::{check, Gateway};
use support::idp::{token_for, MockIdp};
use support::post_jsonrpc;
use support::upstream::{MockUpstream, Reply};

/// Servers `gh` and `search` behind one identity provider, both by the top-level default;
/// `extra` is appended to the `search` entry.
fn two_servers(idp: &MockIdp, upstream: &MockUpstream, default_auth: &str, search_extra: &str) -> String {
    format!(
        "{}agent_auth: {default_auth}\nservers:\n  - {{name: gh, path: /gh, upstream: \"{u}\"}}\n  - {{name: search, path: /search, upstream: \"{u}\"{search_extra}}}\n",
        idp.provider_yaml("idp", ""),
        u = upstream.url("/mcp"),
    )
}

async fn status(gateway: &Gateway, path: &str, token: &str) -> u16 {
    post_jsonrpc(gateway.url(path), r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .bearer_auth(token)
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_issued_for_one_server_is_refused_by_another_even_once_cached() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&two_servers(&idp, &upstream, "{mode: jwt, provider: idp}", ""));
    let for_gh = token_for(&gateway.url("/gh"), "alice");
    // Accepted where it was issued for (twice: the second is a verified-token cache hit), and on
    // the server's alias, which is the same resource…
    assert_eq!(status(&gateway, "/gh", &for_gh).await, 200);
    assert_eq!(status(&gateway, "/gh", &for_gh).await, 200);
    assert_eq!(status(&gateway, "/servers/gh/mcp", &for_gh).await, 200);
    // …and refused by the other server of the same identity provider, cached or not.
    for path in ["/search", "/servers/search/mcp"] {
        let response = post_jsonrpc(gateway.url(path), "{}").bearer_auth(&for_gh).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\", resource_metadata=\"")
                && challenge.contains("/.well-known/oauth-protected-resource"),
            "{challenge}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["data"]["reason"], "invalid_token", "{body}");
    }
    // A token issued for the alias resource is accepted by that server, on both of its routes.
    let for_search_alias = token_for(&gateway.url("/servers/search/mcp"), "alice");
    assert_eq!(status(&gateway, "/search", &for_search_alias).await, 200);
    assert_eq!(status(&gateway, "/gh", &for_search_alias).await, 401);
    assert_eq!(upstream.requests().len(), 4);
    let metrics = support::plain_client()
        .get(gateway.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"portcullis_auth_outcomes_total{mode="jwt",result="wrong_audience",server="search"} 2"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_audience_is_accepted_only_by_the_servers_that_list_it() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&two_servers(
        &idp,
        &upstream,
        "{mode: jwt, provider: idp}",
        ", agent_auth: {mode: jwt, provider: idp, audiences: [\"api://search\"]}",
    ));
    let shared = token_for("api://search", "alice");
    assert_eq!(status(&gateway, "/search", &shared).await, 200);
    assert_eq!(status(&gateway, "/gh", &shared).await, 401, "gh lists no such audience");
    assert_eq!(
        status(&gateway, "/search", &token_for(&gateway.url("/search"), "alice")).await,
        200,
        "its own resource URL stays accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_servers_sharing_an_audience_and_refuses_the_old_provider_list() {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.yaml");
    let head = "listen: [\"127.0.0.1:18080\"]\npublic_url: https://mcp.example.com\n";
    let shared = two_servers(&idp, &upstream, "{mode: jwt, provider: idp, audiences: [\"api://mcp\"]}", "");
    std::fs::write(&config, format!("{head}{shared}")).unwrap();
    let output = check(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "a shared audience is allowed: {stderr}");
    assert!(
        stderr.contains("warning: agent_auth.audiences: servers gh, search all accept tokens from")
            && stderr.contains("\"api://mcp\""),
        "{stderr}"
    );

    let old = idp.provider_yaml("idp", "    audiences: [\"https://mcp.example.com/gh\"]\n");
    std::fs::write(&config, format!("{head}{old}agent_auth: {{mode: jwt, provider: idp}}\n")).unwrap();
    let output = check(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr
            .contains("identity_providers.idp.audiences: audiences are no longer set per identity provider"),
        "{stderr}"
    );
}
