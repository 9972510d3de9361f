//! Idle upstream HTTP/1 connections kept for reuse: one stack per upstream on each worker thread.
//!
//! Why not the pool in Pingora's `TransportConnector`: it spawns a watcher task for every
//! connection it takes back and checks the peer's address with a `getpeername` system call on
//! every reuse (callgrind: ~4,900 instructions and 5 allocations per proxied request, plus the
//! system call). Portcullis runs one runtime per thread by default and a request never leaves its
//! thread, so a thread-local stack does the job without a task, a lock or a system call:
//! - the most recently used connection is taken first (warm, least likely to have been closed);
//! - a connection the upstream closed while idle is noticed when taken (the runtime has seen its
//!   end of stream) and dropped before anything is written to it; when the close races the
//!   reuse, the driver resends only an idempotent request (`upstream::may_resend`);
//! - at most `max_idle` connections per upstream per thread are kept, none older than the idle
//!   timeout; the oldest go first. An upstream no longer used keeps its few idle sockets until the
//!   process exits or its stack is touched again.
//!
//! With a work-stealing runtime (a server conf can ask for one) this stays correct: the runtime's
//! I/O driver is then shared, so a connection may be used from whichever thread holds it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::FutureExt;
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::protocols::Stream;
use pingora::upstreams::peer::Peer;
use pingora::Result;
use rustc_hash::FxHashMap;
use tokio::io::AsyncReadExt;

use pingora::upstreams::peer::HttpPeer;

use crate::http1::timer::ConnectionTimer;

/// Most read-buffer room an idle connection keeps (a normal read reserves 16 KiB).
const KEPT_READ_BUFFER: usize = 32 * 1024;
/// How long an idle connection is kept when the peer sets no idle timeout.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// An upstream connection and the timer of its reads, which stay together while it is idle.
pub struct UpstreamConnection {
    /// The socket.
    pub stream: Stream,
    /// The read timeout's timer, kept for the connection's life.
    pub read_timer: ConnectionTimer,
    /// Bytes read from the socket and not yet handed on (empty between exchanges). Kept with
    /// the connection so that one allocation serves request after request: once the last
    /// response's pieces are dropped, the next read reuses it.
    pub buf: BytesMut,
}

impl From<Stream> for UpstreamConnection {
    fn from(stream: Stream) -> Self {
        Self { stream, read_timer: ConnectionTimer::default(), buf: BytesMut::new() }
    }
}

struct Idle {
    conn: UpstreamConnection,
    since: Instant,
}

thread_local! {
    // Keyed by the peer's reuse hash, already a well-mixed 64-bit value: the cheap Fx hash is
    // enough to place it (the default SipHash cost ~150 instructions per lookup).
    static IDLE: RefCell<FxHashMap<u64, VecDeque<Idle>>> = RefCell::new(FxHashMap::default());
}

/// New connections through Pingora's connector (TCP, TLS, timeouts); idle ones kept here.
pub struct IdlePool {
    connector: TransportConnector,
    max_idle: usize,
}

impl IdlePool {
    /// A pool keeping up to `max_idle` idle connections per upstream on each thread.
    pub fn new(options: ConnectorOptions, max_idle: usize) -> Self {
        Self { connector: TransportConnector::new(Some(options)), max_idle: max_idle.max(1) }
    }

    /// An idle connection to `peer` if one is open, else a new one made within `timeout`;
    /// `true` when reused. `reuse_hash` is the peer's `Peer::reuse_hash`, computed once by the
    /// caller (hashing the peer per request cost more than the lookup).
    pub async fn get(
        &self,
        peer: &HttpPeer,
        reuse_hash: u64,
        timeout: Option<Duration>,
    ) -> Result<(UpstreamConnection, bool)> {
        match take(peer, reuse_hash) {
            Some(conn) => Ok((conn, true)),
            None => Ok((self.connect(peer, timeout).await?, false)),
        }
    }

    /// Always a new connection, made within `timeout`.
    pub async fn connect(&self, peer: &HttpPeer, timeout: Option<Duration>) -> Result<UpstreamConnection> {
        // The caller's peer is shared and carries no timeouts: a new connection is rare enough
        // to afford a copy with this one.
        let mut peer = peer.clone();
        peer.options.connection_timeout = timeout;
        Ok(self.connector.new_stream(&peer).await?.into())
    }

    /// Keeps `conn`, whose last exchange with `peer` ended cleanly, for the next request.
    /// Whether it is still open is checked when it is taken, not here: the upstream can close it
    /// at any time in between, so one check, at the last moment, is the one that counts.
    pub fn put(&self, mut conn: UpstreamConnection, peer: &HttpPeer, reuse_hash: u64) {
        if conn.buf.capacity() > KEPT_READ_BUFFER {
            // A large response head's room is not kept while the connection idles.
            conn.buf = BytesMut::new();
        }
        let limit = idle_timeout(peer);
        let now = Instant::now();
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let stack = idle.entry(reuse_hash).or_default();
            while stack.len() >= self.max_idle
                || stack.front().is_some_and(|oldest| now.duration_since(oldest.since) > limit)
            {
                stack.pop_front();
            }
            stack.push_back(Idle { conn, since: now });
        });
    }
}

fn idle_timeout(peer: &HttpPeer) -> Duration {
    peer.idle_timeout().unwrap_or(DEFAULT_IDLE_TIMEOUT)
}

/// The most recent open idle connection to `peer`; closed and expired ones are dropped.
fn take(peer: &HttpPeer, reuse_hash: u64) -> Option<UpstreamConnection> {
    let limit = idle_timeout(peer);
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let stack = idle.get_mut(&reuse_hash)?;
        while let Some(mut newest) = stack.pop_back() {
            if newest.since.elapsed() > limit {
                // Everything below it is older still.
                stack.clear();
                return None;
            }
            if still_open(&mut newest.conn.stream) {
                return Some(newest.conn);
            }
        }
        None
    })
}

/// An idle connection is usable when reading it would wait: no end of stream, no error, and no
/// unsolicited bytes (Pingora's own reuse test). Costs a system call only when the runtime has
/// seen the socket become readable.
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    // `unconstrained`: a spent cooperative budget would look like "would wait".
    tokio::task::unconstrained(stream.read(&mut byte)).now_or_never().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::protocols::l4::stream::Stream as L4Stream;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn connected_pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Box::new(L4Stream::from(client)), server)
    }

    fn peer() -> HttpPeer {
        HttpPeer::new(std::net::SocketAddr::from(([127, 0, 0, 1], 9)), false, String::new())
    }

    fn put(pool: &IdlePool, conn: UpstreamConnection) {
        let peer = peer();
        pool.put(conn, &peer, peer.reuse_hash());
    }

    fn take_one() -> Option<UpstreamConnection> {
        let peer = peer();
        take(&peer, peer.reuse_hash())
    }

    #[tokio::test]
    async fn the_most_recent_open_connection_is_reused_and_closed_ones_are_dropped() {
        let pool = IdlePool::new(ConnectorOptions::new(1), 8);
        let (first, _first_server) = connected_pair().await;
        let (second, second_server) = connected_pair().await;
        let first_id = first.id();
        put(&pool, first.into());
        put(&pool, second.into());

        // The upstream closes the newer one while it sits idle.
        drop(second_server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reused = take_one().expect("the older, still open connection");
        assert_eq!(reused.stream.id(), first_id);
        assert!(take_one().is_none());
    }

    #[tokio::test]
    async fn a_connection_with_unsolicited_bytes_is_not_kept() {
        let pool = IdlePool::new(ConnectorOptions::new(1), 8);
        let (stream, mut server) = connected_pair().await;
        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        put(&pool, stream.into());
        assert!(take_one().is_none());
    }

    #[tokio::test]
    async fn an_idle_connection_keeps_a_normal_read_buffer_but_not_a_large_one() {
        let pool = IdlePool::new(ConnectorOptions::new(1), 8);
        let mut servers = Vec::new();
        for (room, kept) in [(16 * 1024, true), (64 * 1024, false)] {
            let (stream, server) = connected_pair().await;
            servers.push(server);
            let mut conn = UpstreamConnection::from(stream);
            conn.buf.reserve(room);
            put(&pool, conn);
            let taken = take_one().expect("an open connection");
            assert_eq!(taken.buf.capacity() >= room, kept);
        }
    }

    #[tokio::test]
    async fn no_more_than_max_idle_connections_per_upstream_are_kept() {
        let pool = IdlePool::new(ConnectorOptions::new(1), 2);
        let mut servers = Vec::new();
        for _ in 0..3 {
            let (stream, server) = connected_pair().await;
            servers.push(server);
            put(&pool, stream.into());
        }
        assert!(take_one().is_some());
        assert!(take_one().is_some());
        assert!(take_one().is_none());
    }
}
