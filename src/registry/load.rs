//! Loading a config file into a registry: read, parse, digest, compile.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Registry;
use crate::config::{parse_yaml, ConfigError, ConfigErrors};

impl Registry {
    /// Reads, validates and compiles the config at `path`; on a reload `previous` is the running
    /// registry, whose unchanged parts are taken over. Relative paths in the file are relative to
    /// its folder.
    pub fn load(path: &Path, previous: Option<&Registry>) -> Result<Registry, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::one(ConfigError::new("", format!("cannot read {}: {e}", path.display())))
        })?;
        let config = parse_yaml(&text)?;
        let base_dir = base_dir(path);
        let mut watched = vec![path.to_path_buf()];
        watched.extend(config.referenced_files().iter().map(|f| base_dir.join(f)));
        let hash = digest(&text, &watched[1..]);
        let mut registry = Registry::compile_after(config, &base_dir, previous)?;
        registry.hash = hash;
        registry.watched = watched;
        Ok(registry)
    }
}

impl Registry {
    /// The digest the config at `path` and the files this registry watches have now (`None` when
    /// the file cannot be read): different from [`Registry::hash`] when they changed on disk.
    pub fn digest_on_disk(&self, path: &Path) -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        Some(digest(&text, self.watched.get(1..).unwrap_or_default()))
    }
}

/// The folder relative paths in the config file are taken from.
fn base_dir(path: &Path) -> PathBuf {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()
}

/// SHA-256 over the config text and every referenced file, short hex.
fn digest(text: &str, files: &[PathBuf]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    for file in files {
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update([0]);
        if let Ok(bytes) = std::fs::read(file) {
            hasher.update(&bytes);
        }
        hasher.update([0]);
    }
    hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Registry {
    /// Fetches every remote key set that has none yet, so the first requests do not wait for it
    /// (at start, and for providers a reload brought; kept providers already have their keys).
    pub async fn warm_key_sets(&self) {
        for provider in self.providers.values() {
            if let Some(remote) = provider.remote_keys() {
                remote.warm().await;
            }
        }
    }
}
