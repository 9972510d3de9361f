//! A raw HTTP/1 upstream on an ephemeral loopback port, for tests that script the wire byte by
//! byte: each accepted connection runs the test's function with its number (0, 1, ...).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts an upstream whose `serve(connection number, socket)` runs per connection; its MCP URL.
pub async fn raw_upstream<F, Fut>(serve: F) -> String
where
    F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(n, socket));
            n += 1;
        }
    });
    url
}

/// Reads one request: its head and a `Content-Length` or chunked body, as sent (the raw bytes);
/// `None` when the peer closed first.
pub async fn read_request(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            let body = &seen[end + 4..];
            if head.contains("transfer-encoding: chunked") {
                if body.windows(5).any(|w| w == b"0\r\n\r\n") {
                    return Some(seen);
                }
            } else {
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return Some(seen);
                }
            }
        }
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Answers 200 with a JSON `body`, keeping the connection open.
pub async fn answer(socket: &mut TcpStream, body: &str) {
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
}
