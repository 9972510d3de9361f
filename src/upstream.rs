//! Upstream MCP servers as the hot path sees them: pre-resolved addresses, the `Host` header
//! and TLS settings, all computed when the config loads.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;
use pingora::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy, Peer};

/// One upstream replica of an MCP server.
#[derive(Debug)]
pub struct Upstream {
    /// The URL as configured (no credentials, query or fragment).
    pub url: String,
    /// `true` for `https`.
    pub tls: bool,
    /// Host name or IP literal from the URL.
    pub host: String,
    /// Port, explicit or the scheme's default.
    pub port: u16,
    /// Name sent in SNI and verified against the certificate.
    pub sni: String,
    /// Verify the upstream certificate and host name.
    pub verify_tls: bool,
    /// Path of the URL without a trailing `/`; `""` for the root.
    pub base_path: String,
    /// The `Host` header sent upstream (`host[:port]` as in the URL).
    pub host_header: HeaderValue,
    /// Addresses the host resolved to; refreshed in the background, never empty.
    addrs: ArcSwap<Vec<SocketAddr>>,
    /// The peer for the first address, rebuilt with the addresses.
    peer: ArcSwap<PreparedPeer>,
    /// A short stable name derived from the URL: what a gateway-wrapped session id names.
    pub id: String,
    healthy: AtomicBool,
    streak: AtomicU32,
    in_flight: AtomicUsize,
}

/// Why an upstream URL cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamUrlError {
    /// Not a URL at all.
    #[error("not a valid URL: {0}")]
    Invalid(String),
    /// A scheme other than http or https.
    #[error("unsupported scheme \"{0}\"")]
    Scheme(String),
    /// `user:password@` in the URL.
    #[error("credentials in the URL are not allowed")]
    Credentials,
    /// A query string or fragment.
    #[error("a query string or fragment is not allowed in an upstream URL")]
    QueryOrFragment,
    /// The host name does not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
}

impl Upstream {
    /// Parses an upstream URL and resolves its host (blocking; only called while loading).
    pub fn from_url(text: &str, sni: Option<&str>, verify_tls: bool) -> Result<Self, UpstreamUrlError> {
        let url = url::Url::parse(text).map_err(|e| UpstreamUrlError::Invalid(e.to_string()))?;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(UpstreamUrlError::Scheme(other.to_owned())),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UpstreamUrlError::Credentials);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(UpstreamUrlError::QueryOrFragment);
        }
        let host = url.host_str().ok_or_else(|| UpstreamUrlError::Invalid("no host".into()))?.to_owned();
        let port = url.port_or_known_default().ok_or_else(|| UpstreamUrlError::Invalid("no port".into()))?;
        let addrs = resolve(&url)?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let host_header = HeaderValue::from_str(&authority)
            .map_err(|_| UpstreamUrlError::Invalid("host is not a valid header value".into()))?;
        let base_path = match url.path() {
            "/" => String::new(),
            path => path.to_owned(),
        };
        let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let sni = sni.map_or_else(|| bare_host.clone(), str::to_owned);
        let peer = PreparedPeer::new(addrs[0], tls, &sni, verify_tls);
        let id = {
            use sha2::Digest;
            sha2::Sha256::digest(url.as_str().as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect()
        };
        Ok(Self {
            id,
            healthy: AtomicBool::new(true),
            streak: AtomicU32::new(0),
            in_flight: AtomicUsize::new(0),
            url: url.to_string(),
            tls,
            sni,
            host: bare_host,
            port,
            verify_tls,
            base_path,
            host_header,
            addrs: ArcSwap::from_pointee(addrs),
            peer: ArcSwap::from_pointee(peer),
        })
    }

    /// The address to connect to now.
    pub fn addr(&self) -> SocketAddr {
        // `addrs` is never empty: it is built from a successful resolution and only replaced by one.
        self.addrs.load()[0]
    }

    /// The peer to connect to now.
    pub fn peer(&self) -> Arc<PreparedPeer> {
        self.peer.load_full()
    }

    /// Replaces the resolved addresses (ignored when empty), and the peer with them.
    pub fn set_addrs(&self, addrs: Vec<SocketAddr>) {
        if !addrs.is_empty() && **self.addrs.load() != addrs {
            self.peer.store(Arc::new(PreparedPeer::new(addrs[0], self.tls, &self.sni, self.verify_tls)));
            self.addrs.store(Arc::new(addrs));
        }
    }

    /// Whether health checks (if any) consider the replica up. Replicas start healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records a probe result; returns the new health when it changed. A replica flips after
    /// `to_up` successes or `to_down` failures in a row.
    pub fn record_probe(&self, ok: bool, to_up: u32, to_down: u32) -> Option<bool> {
        let healthy = self.is_healthy();
        if ok == healthy {
            self.streak.store(0, Ordering::Release);
            return None;
        }
        let streak = self.streak.fetch_add(1, Ordering::AcqRel) + 1;
        if streak >= if ok { to_up } else { to_down } {
            self.streak.store(0, Ordering::Release);
            self.healthy.store(ok, Ordering::Release);
            return Some(ok);
        }
        None
    }

    /// Requests in flight to this replica.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request that started (`+1`) or ended (`-1`) on this replica.
    pub fn track(&self, started: bool) {
        if started {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
        } else {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// True when the host is a name that needs resolving (not an IP literal).
    pub fn needs_dns(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_err()
    }

    /// True when `url` points at this upstream's origin (scheme, host and port).
    pub fn is_same_origin(&self, url: &url::Url) -> bool {
        url.scheme() == if self.tls { "https" } else { "http" }
            && url.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                == Some(self.host.as_str())
            && url.port_or_known_default() == Some(self.port)
    }
}

/// A replica's peer as Pingora's connector takes it (address, TLS, SNI, certificate checks),
/// with its reuse hash: built when the config loads and when the replica's addresses change,
/// never per request (building one and hashing it twice cost ~1,000 instructions a request).
/// It carries no timeouts: those are the server's, applied where a connection is made or read.
#[derive(Debug)]
pub struct PreparedPeer {
    /// The peer.
    pub peer: HttpPeer,
    /// `peer.reuse_hash()`: what idle connections to it are kept under.
    pub reuse_hash: u64,
}

impl PreparedPeer {
    fn new(addr: SocketAddr, tls: bool, sni: &str, verify_tls: bool) -> Self {
        let mut peer = HttpPeer::new(addr, tls, sni.to_owned());
        peer.options.verify_cert = verify_tls;
        peer.options.verify_hostname = verify_tls;
        // HTTP/2 requests go through pingora-proxy, whose standard policy strips the hop-by-hop
        // headers and those `Connection` names (the HTTP/1 driver does the same itself); MCP has
        // no upgrades.
        peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::deny_upgrades();
        Self { reuse_hash: peer.reuse_hash(), peer }
    }
}

fn resolve(url: &url::Url) -> Result<Vec<SocketAddr>, UpstreamUrlError> {
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(url::Host::Domain(name)) => (name, port)
            .to_socket_addrs()
            .map_err(|e| UpstreamUrlError::Resolve(format!("{name}: {e}")))?
            .collect(),
        None => return Err(UpstreamUrlError::Invalid("no host".into())),
    };
    if addrs.is_empty() {
        return Err(UpstreamUrlError::Resolve(url.host_str().unwrap_or_default().to_owned()));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_url_is_taken_apart_without_dns() {
        let u = Upstream::from_url("http://127.0.0.1:3001/mcp", None, true).unwrap();
        assert!(!u.tls && !u.needs_dns());
        assert_eq!(u.addr(), "127.0.0.1:3001".parse().unwrap());
        assert_eq!(u.base_path, "/mcp");
        assert_eq!(u.host_header, "127.0.0.1:3001");
    }

    #[test]
    fn https_defaults_to_port_443_and_the_host_as_sni() {
        let u = Upstream::from_url("https://[::1]", None, true).unwrap();
        assert_eq!(u.port, 443);
        assert_eq!(u.sni, "::1");
        assert_eq!(u.base_path, "");
        assert_eq!(u.host_header, "[::1]");
        assert!(u.is_same_origin(&url::Url::parse("https://[::1]:443/x").unwrap()));
        assert!(!u.is_same_origin(&url::Url::parse("http://[::1]:443/x").unwrap()));
    }

    #[test]
    fn the_peer_follows_the_addresses() {
        let u = Upstream::from_url("https://127.0.0.1:3001", Some("mcp.example"), false).unwrap();
        let before = u.peer();
        assert_eq!(before.peer.address().to_string(), "127.0.0.1:3001");
        assert_eq!(before.peer.sni, "mcp.example");
        assert!(!before.peer.options.verify_cert);
        assert_eq!(before.reuse_hash, before.peer.reuse_hash());

        u.set_addrs(vec!["127.0.0.2:3001".parse().unwrap()]);
        let after = u.peer();
        assert_eq!(after.peer.address().to_string(), "127.0.0.2:3001");
        assert_eq!(after.reuse_hash, after.peer.reuse_hash());
        assert_ne!(after.reuse_hash, before.reuse_hash, "connections to the old address are not reused");
    }

    #[test]
    fn health_flips_only_after_enough_probes_in_a_row() {
        let u = Upstream::from_url("http://127.0.0.1:1", None, true).unwrap();
        assert_eq!(u.record_probe(false, 2, 3), None);
        assert_eq!(u.record_probe(false, 2, 3), None);
        assert_eq!(u.record_probe(true, 2, 3), None, "a success resets the streak");
        assert_eq!(u.record_probe(false, 2, 3), None);
        assert_eq!(u.record_probe(false, 2, 3), None);
        assert_eq!(u.record_probe(false, 2, 3), Some(false));
        assert!(!u.is_healthy());
        assert_eq!(u.record_probe(true, 2, 3), None);
        assert_eq!(u.record_probe(true, 2, 3), Some(true));
    }

    #[test]
    fn unusable_urls_are_refused_with_a_reason() {
        let err = |u| Upstream::from_url(u, None, true).unwrap_err();
        assert_eq!(err("ftp://127.0.0.1/"), UpstreamUrlError::Scheme("ftp".into()));
        assert_eq!(err("http://u:p@127.0.0.1/"), UpstreamUrlError::Credentials);
        assert_eq!(err("http://127.0.0.1/?a=b"), UpstreamUrlError::QueryOrFragment);
        assert!(matches!(err("not a url"), UpstreamUrlError::Invalid(_)));
    }
}
