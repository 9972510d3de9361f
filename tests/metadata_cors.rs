//! Protected Resource Metadata as browser MCP clients fetch it: no empty parameters, and CORS
//! preflights (on the metadata URLs and on MCP endpoints) that allow the headers they send.

mod support;

use serde_json::{json, Value};
use support::client;
use support::gateway::Gateway;
use support::idp::MockIdp;
use support::upstream::{MockUpstream, Reply};

/// What browser MCP clients send: their SDKs add `MCP-Protocol-Version` to the metadata fetch.
const MCP_HEADERS: [&str; 7] = [
    "authorization",
    "content-type",
    "mcp-protocol-version",
    "mcp-session-id",
    "last-event-id",
    "mcp-method",
    "mcp-name",
];

/// Server `open-scopes` requires no scope; `gh` requires `mcp:tools` and allows one origin.
async fn start() -> (MockIdp, MockUpstream, Gateway) {
    let idp = MockIdp::start(&["rsa-a"]).await;
    let upstream = MockUpstream::start(|_| Reply::json("{}")).await;
    let gateway = Gateway::start(&format!(
        "{}servers:\n  - {{name: open-scopes, path: /any, upstream: \"{u}\", agent_auth: {{mode: jwt, provider: idp}}}}\n  - {{name: gh, path: /gh, upstream: \"{u}\", agent_auth: {{mode: jwt, provider: idp, scopes: [\"mcp:tools\"]}}, allowed_origins: [\"https://app.portcullis.test\"]}}\n",
        idp.provider_yaml("idp", ""),
        u = upstream.url("/mcp"),
    ));
    (idp, upstream, gateway)
}

fn preflight(url: String, origin: &str, headers: Option<&str>) -> reqwest::RequestBuilder {
    let request = client()
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", "GET");
    match headers {
        Some(list) => request.header("access-control-request-headers", list),
        None => request,
    }
}

fn allowed(response: &reqwest::Response) -> Vec<String> {
    let value = response.headers().get("access-control-allow-headers");
    let text = value.map(|v| v.to_str().unwrap().to_ascii_lowercase()).unwrap_or_default();
    text.split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_omits_parameters_without_values() {
    let (_idp, _upstream, gateway) = start().await;
    let doc: Value = client()
        .get(gateway.url("/.well-known/oauth-protected-resource/any"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc,
        json!({
            "resource": gateway.url("/any"),
            "authorization_servers": [support::idp::ISSUER],
            "bearer_methods_supported": ["header"],
            "resource_name": "open-scopes",
        }),
        "no \"scopes_supported\": [] for a server that requires no scope"
    );
    let doc: Value = client()
        .get(gateway.url("/.well-known/oauth-protected-resource/gh"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["scopes_supported"], json!(["mcp:tools"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_preflight_allows_the_headers_browser_clients_send() {
    let (_idp, _upstream, gateway) = start().await;
    let url = gateway.url("/.well-known/oauth-protected-resource/gh");
    let asked = preflight(url.clone(), "https://anywhere.example", Some("mcp-protocol-version"))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 204);
    assert_eq!(asked.headers()["access-control-allow-origin"], "*");
    assert_eq!(allowed(&asked), ["mcp-protocol-version"]);
    let unasked = preflight(url, "https://anywhere.example", None).send().await.unwrap();
    assert_eq!(unasked.status(), 204);
    assert_eq!(allowed(&unasked), MCP_HEADERS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_endpoint_preflight_allows_every_header_mcp_clients_send() {
    let (_idp, upstream, gateway) = start().await;
    let unasked = preflight(gateway.url("/gh"), "https://app.portcullis.test", None).send().await.unwrap();
    assert_eq!(unasked.status(), 204);
    assert_eq!(unasked.headers()["access-control-allow-origin"], "https://app.portcullis.test");
    assert_eq!(allowed(&unasked), MCP_HEADERS);
    let list = MCP_HEADERS.join(", ");
    let asked = preflight(gateway.url("/servers/gh/mcp"), "https://app.portcullis.test", Some(&list))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 204);
    assert_eq!(allowed(&asked), MCP_HEADERS);
    let foreign = preflight(gateway.url("/gh"), "https://evil.example", Some(&list)).send().await.unwrap();
    assert_eq!(foreign.status(), 403, "a disallowed origin gets no CORS answer");
    assert!(allowed(&foreign).is_empty());
    assert!(upstream.requests().is_empty(), "preflights are answered by the gateway");
}
