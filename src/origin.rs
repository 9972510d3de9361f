//! Browser origins: the `Origin` check (403 for a disallowed origin, DNS-rebinding protection on
//! loopback listeners) and the CORS headers MCP clients in a browser need.

use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};

/// Response headers a browser client must be able to read.
const EXPOSED: &str = "WWW-Authenticate, Mcp-Session-Id";
/// Methods MCP uses.
const METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// Request headers MCP clients send (Streamable HTTP, resumption, the 2026 routing headers):
/// allowed when a preflight does not name its own list.
pub const MCP_REQUEST_HEADERS: &str =
    "authorization, content-type, mcp-protocol-version, mcp-session-id, last-event-id, mcp-method, mcp-name";

/// A server's origin policy.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Allowed origins, lowercased, without a trailing `/`; empty: any origin.
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// From the configured list (already validated as `scheme://host[:port]`).
    pub fn new(allowed: &[String]) -> Self {
        Self { allowed: allowed.iter().map(|o| o.trim_end_matches('/').to_ascii_lowercase()).collect() }
    }

    /// True when a request may proceed. `loopback_listener`: the request arrived on a loopback
    /// socket, where a foreign `Host` or `Origin` is the signature of DNS rebinding.
    /// `public_host` is the host of `public_url`, always accepted.
    pub fn allows(&self, request: &OriginFields<'_>, loopback_listener: bool, public_host: &str) -> bool {
        if loopback_listener {
            let host = request.host.and_then(|h| h.to_str().ok()).or(request.target_host);
            if !host.is_some_and(|h| is_local_or(host_part(h), public_host)) {
                return false;
            }
        }
        let Some(origin) = request.origin else { return true };
        let Ok(origin) = origin.to_str() else { return false };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if !self.allowed.is_empty() {
            return self.allowed.contains(&origin);
        }
        if loopback_listener {
            let host = url::Url::parse(&origin).ok().and_then(|u| u.host_str().map(str::to_owned));
            return host.is_some_and(|h| is_local_or(&h, public_host));
        }
        true
    }
}

/// The request fields the origin check reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct OriginFields<'a> {
    /// The first `Host` value.
    pub host: Option<&'a HeaderValue>,
    /// The host of an absolute-form target.
    pub target_host: Option<&'a str>,
    /// The first `Origin` value.
    pub origin: Option<&'a HeaderValue>,
}

/// `host` without its port (and without IPv6 brackets).
fn host_part(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn is_local_or(host: &str, public_host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.eq_ignore_ascii_case(public_host)
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// True for a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`).
pub fn is_preflight(request: &RequestHeader) -> bool {
    request.method == http::Method::OPTIONS
        && request.headers.contains_key(http::header::ORIGIN)
        && request.headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Adds the CORS headers for a request that carried an (allowed) `Origin`.
pub fn add_cors(request: &RequestHeader, response: &mut ResponseHeader) -> pingora::Result<()> {
    let Some(origin) = request.headers.get(http::header::ORIGIN) else { return Ok(()) };
    response.insert_header(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone())?;
    response.insert_header(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED)?;
    response.append_header(http::header::VARY, "Origin")?;
    Ok(())
}

/// The headers of a preflight answer.
pub fn preflight_response(request: &RequestHeader) -> pingora::Result<ResponseHeader> {
    let mut response = ResponseHeader::build(204, Some(6))?;
    add_cors(request, &mut response)?;
    response.insert_header(http::header::ACCESS_CONTROL_ALLOW_METHODS, METHODS)?;
    response.insert_header(http::header::ACCESS_CONTROL_ALLOW_HEADERS, allowed_headers(request))?;
    response.insert_header(http::header::ACCESS_CONTROL_MAX_AGE, "600")?;
    response.insert_header(http::header::CONTENT_LENGTH, "0")?;
    Ok(response)
}

/// The `Access-Control-Allow-Headers` of a preflight that was allowed: the list it asked for, or
/// else every header MCP clients send.
pub fn allowed_headers(request: &RequestHeader) -> HeaderValue {
    request
        .headers
        .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(MCP_REQUEST_HEADERS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/mcp", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    /// The fields the gateway hands the check (it gathers them while parsing the request).
    fn fields(request: &RequestHeader) -> OriginFields<'_> {
        OriginFields {
            host: request.headers.get(http::header::HOST),
            target_host: request.uri.host(),
            origin: request.headers.get(http::header::ORIGIN),
        }
    }

    #[test]
    fn an_allow_list_admits_only_its_origins() {
        let policy = OriginPolicy::new(&["https://app.example.com/".into()]);
        assert!(policy.allows(&fields(&req(&[("origin", "https://APP.example.com")])), false, "gw"));
        assert!(!policy.allows(&fields(&req(&[("origin", "https://evil.example")])), false, "gw"));
        assert!(policy.allows(&fields(&req(&[])), false, "gw"), "non-browser clients send no Origin");
    }

    #[test]
    fn a_loopback_listener_refuses_foreign_hosts_and_origins() {
        let policy = OriginPolicy::default();
        assert!(policy.allows(&fields(&req(&[("host", "127.0.0.1:8080")])), true, "mcp.example.com"));
        assert!(policy.allows(
            &fields(&req(&[("host", "localhost:8080"), ("origin", "http://localhost:3000")])),
            true,
            "x"
        ));
        assert!(policy.allows(&fields(&req(&[("host", "[::1]:8080")])), true, "x"));
        assert!(policy.allows(&fields(&req(&[("host", "mcp.example.com")])), true, "mcp.example.com"));
        assert!(!policy.allows(&fields(&req(&[("host", "evil.example:8080")])), true, "mcp.example.com"));
        assert!(!policy.allows(
            &fields(&req(&[("host", "127.0.0.1:8080"), ("origin", "https://evil.example")])),
            true,
            "x"
        ));
        assert!(
            policy.allows(
                &fields(&req(&[("host", "evil.example"), ("origin", "https://evil.example")])),
                false,
                "x"
            ),
            "public listeners accept any origin without a list"
        );
    }

    #[test]
    fn preflights_get_the_cors_answer() {
        let mut r = req(&[
            ("origin", "https://app"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "authorization, mcp-session-id"),
        ]);
        r.set_method(http::Method::OPTIONS);
        assert!(is_preflight(&r));
        let resp = preflight_response(&r).unwrap();
        assert_eq!(resp.status, 204);
        assert_eq!(resp.headers["access-control-allow-origin"], "https://app");
        assert_eq!(resp.headers["access-control-allow-headers"], "authorization, mcp-session-id");
        assert_eq!(resp.headers["access-control-expose-headers"], EXPOSED);
        r.remove_header("access-control-request-headers");
        let resp = preflight_response(&r).unwrap();
        assert_eq!(resp.headers["access-control-allow-headers"], MCP_REQUEST_HEADERS);
    }
}
