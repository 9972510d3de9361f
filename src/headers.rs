//! What the gateway removes from a request before it goes upstream.

use pingora::http::RequestHeader;

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and are never forwarded.
/// `transfer-encoding` is left to Pingora, which frames the upstream body itself.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Removes hop-by-hop headers, including any header the `Connection` header names.
pub fn strip_hop_by_hop(request: &mut RequestHeader) {
    let named: Vec<String> = request
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty() && token != "close" && token != "keep-alive")
        .collect();
    for name in named.iter().map(String::as_str).chain(HOP_BY_HOP) {
        // Never let `Connection: transfer-encoding` or `content-length` strip the framing headers.
        if name != "transfer-encoding" && name != "content-length" && name != "host" {
            request.remove_header(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut req = RequestHeader::build("POST", b"/mcp", None).unwrap();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("mcp-session-id", "abc"),
            ("content-length", "2"),
        ] {
            req.insert_header(k, v).unwrap();
        }
        strip_hop_by_hop(&mut req);
        let left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["mcp-session-id", "content-length"]);
    }

    #[test]
    fn connection_cannot_name_the_framing_headers() {
        let mut req = RequestHeader::build("POST", b"/mcp", None).unwrap();
        req.insert_header("connection", "content-length, transfer-encoding")
            .unwrap();
        req.insert_header("content-length", "2").unwrap();
        strip_hop_by_hop(&mut req);
        assert!(req.headers.get("content-length").is_some());
    }
}
