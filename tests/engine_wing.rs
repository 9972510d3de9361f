//! The HTTP/1 engine (`src/http1/`) knows nothing of MCP: no file in it imports the gateway's
//! routing, registry, authentication, header policy or upstream selection.

use std::path::Path;

/// The crate's MCP modules, which the engine must not name.
const MCP_MODULES: &[&str] = &[
    "registry",
    "agent_auth",
    "app_auth",
    "headers",
    "upstream",
    "routes",
    "gateway",
    "identity",
    "tokens",
    "origin",
    "affinity",
    "config",
    "error_body",
    "sse_endpoint",
    "metrics",
    "drain",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/http1 is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_http1_engine_imports_no_mcp_module() {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http1"), &mut files);
    assert!(files.len() > 5, "the engine's files were not found: {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a source file");
        for (n, line) in text.lines().enumerate() {
            for module in MCP_MODULES {
                let named = format!("crate::{module}");
                if let Some(at) = line.find(&named) {
                    let next = line[at + named.len()..].chars().next();
                    if !next.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "the HTTP/1 engine reaches into MCP modules:\n{}", found.join("\n"));
}
