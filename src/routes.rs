//! Which MCP server a request path belongs to.
//!
//! Each server answers at its path prefix and at `/servers/<name>/mcp`. Prefixes match on whole
//! segments (`/git` does not match `/github`), and the longest prefix wins.

/// The route a request path matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    /// Index of the server in the registry.
    pub server: usize,
    /// Length of the matched gateway prefix in the request path (`0` for a root server).
    pub prefix_len: usize,
    /// The request came through `/servers/<name>/mcp` rather than the server's own prefix.
    pub via_alias: bool,
}

#[derive(Debug)]
struct Route {
    prefix: Box<str>,
    server: usize,
    via_alias: bool,
}

/// The compiled route table: prefixes sorted longest first.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// The alias path under which every server is also reachable.
pub fn alias_path(name: &str) -> String {
    format!("/servers/{name}/mcp")
}

impl RouteTable {
    /// Builds the table from `(prefix, server index, is alias)` entries. A prefix is `""` for
    /// the root server, otherwise it starts with `/` and has no trailing `/`.
    pub fn new(entries: impl IntoIterator<Item = (String, usize, bool)>) -> Self {
        let mut routes: Vec<Route> = entries
            .into_iter()
            .map(|(prefix, server, via_alias)| Route { prefix: prefix.into_boxed_str(), server, via_alias })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Self { routes }
    }

    /// Finds the server for a request path.
    pub fn find(&self, path: &str) -> Option<RouteMatch> {
        self.routes.iter().find_map(|route| {
            let rest = path.strip_prefix(&*route.prefix)?;
            (rest.is_empty() || rest.starts_with('/')).then_some(RouteMatch {
                server: route.server,
                prefix_len: route.prefix.len(),
                via_alias: route.via_alias,
            })
        })
    }
}

/// True when a request path has a `.` or `..` segment, written plainly or percent-encoded.
/// Such paths are refused: after normalisation by the upstream they could leave the upstream's
/// base path.
pub fn has_dot_segment(path: &str) -> bool {
    // Most paths have neither byte a dot segment is made of.
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
    path.split('/').any(|segment| {
        let mut dots = 0usize;
        let bytes = segment.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'.' {
                i += 1;
            } else if bytes[i] == b'%'
                && bytes.get(i + 1) == Some(&b'2')
                && matches!(bytes.get(i + 2), Some(b'e' | b'E'))
            {
                i += 3;
            } else {
                return false;
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::new([
            ("/git".to_owned(), 0, false),
            ("/github".to_owned(), 1, false),
            ("/github/enterprise".to_owned(), 2, false),
            (alias_path("github"), 1, true),
        ])
    }

    #[test]
    fn prefixes_match_whole_segments_and_the_longest_wins() {
        let t = table();
        assert_eq!(t.find("/git"), Some(RouteMatch { server: 0, prefix_len: 4, via_alias: false }));
        assert_eq!(t.find("/git/x"), Some(RouteMatch { server: 0, prefix_len: 4, via_alias: false }));
        assert_eq!(t.find("/github/x"), Some(RouteMatch { server: 1, prefix_len: 7, via_alias: false }));
        assert_eq!(t.find("/github/enterprise/mcp").map(|m| m.server), Some(2));
        assert_eq!(t.find("/gitlab"), None);
        assert_eq!(t.find("/"), None);
    }

    #[test]
    fn the_alias_reaches_the_same_server() {
        let m = table().find("/servers/github/mcp").unwrap();
        assert_eq!(m.server, 1);
        assert!(m.via_alias);
        assert_eq!(m.prefix_len, "/servers/github/mcp".len());
        assert_eq!(table().find("/servers/github/mcpx"), None);
    }

    #[test]
    fn a_root_server_catches_everything_else() {
        let t = RouteTable::new([(String::new(), 0, false), ("/a".to_owned(), 1, false)]);
        assert_eq!(t.find("/a/b").map(|m| m.server), Some(1));
        assert_eq!(t.find("/zzz"), Some(RouteMatch { server: 0, prefix_len: 0, via_alias: false }));
    }

    #[test]
    fn dot_segments_are_found_in_every_spelling() {
        for bad in ["/a/../b", "/a/./b", "/a/%2e%2E/b", "/a/.%2e", "/..", "/a/%2E"] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for good in ["/a/b", "/a/.well", "/a/...", "/a/b.c", "/", "/a/%2e%2e%2e"] {
            assert!(!has_dot_segment(good), "{good}");
        }
    }
}
