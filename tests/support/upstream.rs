//! A mock MCP upstream on an ephemeral loopback port: records every request and answers as the
//! test's script says, including event streams written chunk by chunk.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, Notify};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

/// A step of a streamed response.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes as one chunk.
    Write(Bytes),
    /// Wait this long.
    Sleep(Duration),
    /// Wait until the test calls [`MockUpstream::release`].
    WaitForRelease,
}

/// How the upstream answers a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A complete response.
    Full { status: u16, headers: Vec<(String, String)>, body: Bytes },
    /// A streamed response; with `hold_open` the stream stays open after the steps until the
    /// client goes away.
    Stream { status: u16, headers: Vec<(String, String)>, steps: Vec<Step>, hold_open: bool },
    /// Wait this long before answering 200 (for timeouts).
    Stall(Duration),
}

impl Reply {
    /// A JSON 200.
    pub fn json(body: &str) -> Self {
        Self::Full {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    /// An SSE response from its steps.
    pub fn sse(steps: Vec<Step>, hold_open: bool) -> Self {
        Self::Stream {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            steps,
            hold_open,
        }
    }
}

/// Chooses the reply for a request.
pub type Script = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// The running mock; it stops when the test's runtime ends.
pub struct MockUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    release: Arc<Notify>,
    client_gone: Arc<AtomicBool>,
    client_gone_notify: Arc<Notify>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl MockUpstream {
    /// Kills the server: the listener and every open connection go away at once.
    pub fn stop(&self) {
        if let Ok(tasks) = self.tasks.lock() {
            for task in tasks.iter() {
                task.abort();
            }
        }
    }

    /// Starts a mock on the current tokio runtime.
    pub async fn start(script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock upstream");
        let addr = listener.local_addr().expect("mock address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Notify::new());
        let client_gone = Arc::new(AtomicBool::new(false));
        let client_gone_notify = Arc::new(Notify::new());
        let script: Script = Arc::new(script);
        let state = (requests.clone(), release.clone(), client_gone.clone(), client_gone_notify.clone());
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let connection_tasks = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (requests, release, gone, gone_notify) = state.clone();
                let script = script.clone();
                let connection = tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        handle(
                            req,
                            script.clone(),
                            requests.clone(),
                            release.clone(),
                            gone.clone(),
                            gone_notify.clone(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                if let Ok(mut all) = connection_tasks.lock() {
                    all.push(connection);
                }
            }
        });
        if let Ok(mut all) = tasks.lock() {
            all.push(accept);
        }
        Self { addr, requests, release, client_gone, client_gone_notify, tasks }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Lets every stream waiting at [`Step::WaitForRelease`] go on.
    pub fn release(&self) {
        self.release.notify_waiters();
    }

    /// Waits (up to `limit`) until a held-open stream notices its client went away.
    pub async fn wait_client_gone(&self, limit: Duration) -> bool {
        let notified = self.client_gone_notify.notified();
        if self.client_gone.load(Ordering::SeqCst) {
            return true;
        }
        tokio::time::timeout(limit, notified).await.is_ok() || self.client_gone.load(Ordering::SeqCst)
    }
}

async fn handle(
    req: Request<Incoming>,
    script: Script,
    requests: Arc<Mutex<Vec<Recorded>>>,
    release: Arc<Notify>,
    gone: Arc<AtomicBool>,
    gone_notify: Arc<Notify>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        target: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts.headers,
        body,
    };
    let reply = script(&recorded);
    if let Ok(mut all) = requests.lock() {
        all.push(recorded);
    }
    let (status, headers, body): (u16, Vec<(String, String)>, Body) = match reply {
        Reply::Full { status, headers, body } => (status, headers, Full::new(body).boxed()),
        Reply::Stall(duration) => {
            tokio::time::sleep(duration).await;
            (200, vec![], Full::new(Bytes::from_static(b"late")).boxed())
        }
        Reply::Stream { status, headers, steps, hold_open } => {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
            tokio::spawn(async move {
                for step in steps {
                    match step {
                        Step::Write(bytes) => {
                            if tx.send(Ok(Frame::data(bytes))).await.is_err() {
                                break;
                            }
                        }
                        Step::Sleep(d) => tokio::time::sleep(d).await,
                        Step::WaitForRelease => release.notified().await,
                    }
                }
                if hold_open {
                    // Keep writing comments so a vanished client is noticed.
                    while tx.send(Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n")))).await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    gone.store(true, Ordering::SeqCst);
                    gone_notify.notify_waiters();
                }
            });
            let stream =
                futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
            (status, headers, BodyExt::boxed(StreamBody::new(stream)))
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    Ok(response)
}
