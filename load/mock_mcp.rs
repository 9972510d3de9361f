//! A small, fast MCP server for the quick start and the load harness (one worker thread).
//!
//! - `POST /mcp`: Streamable HTTP with JSON responses: `initialize` (issues an `Mcp-Session-Id`),
//!   `ping`, `tools/list` (one `echo` tool), `tools/call` of `echo`; notifications get `202`.
//! - `GET /mcp`: `405`, as the spec allows for a server that offers no GET stream.
//! - `GET /events?n=N`: an SSE response of N `message` events, each carrying the server's send
//!   time in microseconds since the Unix epoch (for latency measurements), then the end.
//!
//! - `POST /token`: with `MOCK_MCP_TOKEN` set, a client-credentials token response carrying it
//!   (valid one hour), for the load harness's credential scenario.
//!
//! Usage: `mock-mcp [LISTEN_ADDR]` (default `127.0.0.1:3001`). With `MOCK_MCP_REQUIRE_BEARER=TOKEN`
//! in the environment, every request without `Authorization: Bearer TOKEN` gets 401 (to prove a
//! credential injected by the gateway arrives).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

static SESSIONS: AtomicU64 = AtomicU64::new(1);

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn rpc_result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn answer(message: &Value) -> Option<Value> {
    let id = message.get("id")?;
    let method = message.get("method").and_then(Value::as_str).unwrap_or_default();
    Some(match method {
        "initialize" => rpc_result(
            id,
            json!({
                "protocolVersion": message.pointer("/params/protocolVersion").cloned().unwrap_or(json!("2025-06-18")),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "portcullis-mock-mcp", "version": env!("CARGO_PKG_VERSION")},
            }),
        ),
        "ping" => rpc_result(id, json!({})),
        "tools/list" => rpc_result(
            id,
            json!({"tools": [{
                "name": "echo",
                "description": "Echoes its `message` argument back",
                "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
            }]}),
        ),
        "tools/call" if message.pointer("/params/name") == Some(&json!("echo")) => {
            let text =
                message.pointer("/params/arguments/message").and_then(Value::as_str).unwrap_or_default();
            rpc_result(id, json!({"content": [{"type": "text", "text": format!("Echo: {text}")}]}))
        }
        "tools/call" => rpc_error(id, -32602, "unknown tool"),
        _ => rpc_error(id, -32601, "method not found"),
    })
}

async fn post_mcp(req: Request<Incoming>) -> Response<Body> {
    let Ok(body) = req.into_body().collect().await else {
        return full(StatusCode::BAD_REQUEST, "text/plain", "unreadable body");
    };
    let Ok(message) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return full(
            StatusCode::BAD_REQUEST,
            "application/json",
            rpc_error(&Value::Null, -32700, "parse error").to_string(),
        );
    };
    let Some(reply) = answer(&message) else {
        return full(StatusCode::ACCEPTED, "text/plain", "");
    };
    let mut response = full(StatusCode::OK, "application/json", reply.to_string());
    if message.get("method") == Some(&json!("initialize")) {
        let session = format!("mock-session-{}", SESSIONS.fetch_add(1, Ordering::Relaxed));
        if let Ok(value) = hyper::header::HeaderValue::from_str(&session) {
            response.headers_mut().insert("mcp-session-id", value);
        }
    }
    response
}

fn now_micros() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

fn events(req: &Request<Incoming>) -> Response<Body> {
    let n: u32 = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("n=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .min(100_000);
    let interval = Duration::from_millis(
        req.uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("interval_ms=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let stream = futures_util::stream::unfold(0u32, move |i| async move {
        if i >= n {
            return None;
        }
        if !interval.is_zero() && i > 0 {
            tokio::time::sleep(interval).await;
        }
        let event =
            format!("event: message\nid: {i}\ndata: {{\"seq\":{i},\"sent_us\":{}}}\n\n", now_micros());
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), i + 1))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

static REQUIRED_BEARER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn authorized(req: &Request<Incoming>) -> bool {
    match REQUIRED_BEARER
        .get_or_init(|| std::env::var("MOCK_MCP_REQUIRE_BEARER").ok().filter(|t| !t.is_empty()))
    {
        None => true,
        Some(token) => {
            req.headers().get("authorization").and_then(|v| v.to_str().ok())
                == Some(&format!("Bearer {token}"))
        }
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if !authorized(&req) {
        let mut response = full(StatusCode::UNAUTHORIZED, "application/json", r#"{"error":"invalid_token"}"#);
        response
            .headers_mut()
            .insert("www-authenticate", hyper::header::HeaderValue::from_static("Bearer realm=\"mock-mcp\""));
        return Ok(response);
    }
    Ok(match (req.method(), req.uri().path()) {
        (&Method::POST, "/mcp") => post_mcp(req).await,
        (&Method::GET, "/mcp") => full(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "no GET stream"),
        (&Method::DELETE, "/mcp") => full(StatusCode::OK, "text/plain", ""),
        (&Method::GET, "/events") => events(&req),
        (&Method::POST, "/token") => match std::env::var("MOCK_MCP_TOKEN") {
            Ok(token) => full(
                StatusCode::OK,
                "application/json",
                json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}).to_string(),
            ),
            Err(_) => full(StatusCode::NOT_FOUND, "text/plain", "not found"),
        },
        _ => full(StatusCode::NOT_FOUND, "text/plain", "not found"),
    })
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr =
        std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3001".to_owned()).parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("listen address: {e}"))
        })?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("mock MCP server listening on http://{addr}/mcp");
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    })
}
