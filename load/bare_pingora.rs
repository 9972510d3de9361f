//! The baseline for the load harness: a Pingora HTTP proxy with no logic of its own, built the
//! way Portcullis builds its server (same allocator, per-thread runtimes without work stealing,
//! one thread). It forwards every request to one upstream over a pooled keep-alive connection and
//! sets one static `Authorization` header, like the nginx reference.
//!
//! `bare-pingora LISTEN UPSTREAM` (both `host:port`). What Portcullis costs above this row is the
//! gateway's own work; what this row costs above nginx is Pingora's proxy path.

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::{HttpPeer, ProxyHttp, Result, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        request.insert_header("authorization", "Bearer static-load-token")
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream] = args.as_slice() else {
        return Err("usage: bare-pingora LISTEN UPSTREAM".into());
    };
    // Stops within a second of SIGTERM, like the harness's Portcullis.
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Bare { upstream: upstream.clone() },
        "bare-pingora",
    );
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever()
}
