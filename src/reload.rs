//! Configuration reload: SIGHUP, a watch on the config file (and the files it refers to), and
//! `POST /reload` on the admin listener. Each reload reads, validates and compiles the file and
//! swaps the registry atomically; any error keeps the running config. Requests in flight finish on
//! the registry they started with.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::ConfigErrors;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Quiet time after the last file event before reloading (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(300);
/// The longest a reload waits for writes to settle.
const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The new config is live.
    Applied {
        /// Its digest.
        hash: String,
    },
    /// Nothing changed.
    Unchanged {
        /// The running digest.
        hash: String,
    },
    /// The file is invalid; the running config stays.
    Invalid(ConfigErrors),
    /// The change needs new sockets (listeners or the admin address): it takes an upgrade
    /// (`run -u`), and nothing of it was applied.
    NeedsUpgrade(String),
}

impl ReloadOutcome {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Applied { .. } => "ok",
            Self::Unchanged { .. } => "unchanged",
            Self::Invalid(_) => "error",
            Self::NeedsUpgrade(_) => "needs_upgrade",
        }
    }
}

/// Reloads the config file into the live registry.
pub struct Reloader {
    path: PathBuf,
    registry: Arc<ArcSwap<Registry>>,
    lock: Mutex<()>,
}

impl Reloader {
    /// A reloader of `path` into `registry`; records the running config in the metrics.
    pub fn new(path: PathBuf, registry: Arc<ArcSwap<Registry>>) -> Self {
        record_config(&registry.load());
        Self { path, registry, lock: Mutex::new(()) }
    }

    /// The live registry.
    pub fn registry(&self) -> &Arc<ArcSwap<Registry>> {
        &self.registry
    }

    /// Reloads now (blocking: it reads files and resolves upstream names; call it off the
    /// request path, e.g. in `spawn_blocking`). `trigger` names the cause in the log.
    pub fn reload(&self, trigger: &str) -> ReloadOutcome {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.registry.load_full();
        let outcome = match Registry::load(&self.path, Some(&current)) {
            Err(errors) => {
                for line in errors.to_string().lines() {
                    tracing::error!(trigger, "config reload failed, keeping the running config: {line}");
                }
                ReloadOutcome::Invalid(errors)
            }
            Ok(next) if next.hash == current.hash => ReloadOutcome::Unchanged { hash: next.hash },
            Ok(next) if next.listeners != current.listeners || next.admin_addr != current.admin_addr => {
                let why = "the listeners or the admin address changed: that needs new sockets, so it takes an upgrade (run -u); nothing was applied".to_owned();
                tracing::warn!(trigger, "{why}");
                ReloadOutcome::NeedsUpgrade(why)
            }
            Ok(next) => {
                for warning in &next.warnings {
                    tracing::warn!("{warning}");
                }
                let hash = next.hash.clone();
                let next = Arc::new(next);
                record_config(&next);
                self.registry.store(next.clone());
                tracing::info!(trigger, hash = %hash, servers = next.servers.len(), "config reloaded");
                warm_new_providers(next);
                ReloadOutcome::Applied { hash }
            }
        };
        Metrics::global().config_reloads.with_label_values(&[outcome.label()]).inc();
        outcome
    }

    /// Reloads on a blocking thread.
    pub async fn reload_async(self: &Arc<Self>, trigger: &'static str) -> ReloadOutcome {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.reload(trigger))
            .await
            .unwrap_or_else(|e| ReloadOutcome::NeedsUpgrade(format!("the reload task failed: {e}")))
    }
}

fn record_config(registry: &Registry) {
    let metrics = Metrics::global();
    metrics.config_info.reset();
    metrics.config_info.with_label_values(&[&registry.hash]).set(1);
    let loaded = registry.loaded_at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    metrics.config_loaded_at.set(loaded);
}

/// Fetches keys of providers that came with this config (kept ones already have theirs).
fn warm_new_providers(registry: Arc<Registry>) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move { registry.warm_key_sets().await });
    }
}

/// Reloads on SIGHUP. (Pingora does not handle SIGHUP; `main` ignores it until this runs.)
pub struct SighupReload(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for SighupReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::error!("cannot install the SIGHUP handler, reload with POST /reload instead: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = hangups.recv() => {
                    self.0.reload_async("sighup").await;
                }
            }
        }
    }
}

/// Reloads when the config file or a file it refers to changes.
pub struct FileWatchReload(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for FileWatchReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<PathBuf>>();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                if is_edit(&event.kind) {
                    let _ = tx.send(event.paths);
                }
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(
                    "cannot watch the config file, reload with SIGHUP or POST /reload instead: {e}"
                );
                return;
            }
        };
        let mut watched_dirs: HashSet<PathBuf> = HashSet::new();
        let mut first = true;
        loop {
            let files: HashSet<PathBuf> =
                self.0.registry().load().watched.iter().map(|p| absolute(p)).collect();
            // Watch folders, not files: editors replace a file by renaming a new one over it.
            for dir in files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)) {
                if !watched_dirs.contains(&dir) && watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok() {
                    watched_dirs.insert(dir);
                }
            }
            if std::mem::take(&mut first) {
                // The sockets were bound before this service started: catch an edit made meanwhile.
                let registry = self.0.registry().load_full();
                if registry.digest_on_disk(&self.0.path).is_some_and(|d| d != registry.hash) {
                    self.0.reload_async("file").await;
                }
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(paths) = rx.recv() => {
                    if !paths.iter().any(|p| files.contains(&absolute(p))) {
                        continue;
                    }
                    // Let the writes to the watched files settle (other files in the folder, such as
                    // a log, do not count), but never wait longer than MAX_DEBOUNCE.
                    let deadline = tokio::time::Instant::now() + MAX_DEBOUNCE;
                    let mut quiet_until = tokio::time::Instant::now() + DEBOUNCE;
                    while let Ok(Some(more)) = tokio::time::timeout_at(quiet_until.min(deadline), rx.recv()).await {
                        if more.iter().any(|p| files.contains(&absolute(p))) {
                            quiet_until = tokio::time::Instant::now() + DEBOUNCE;
                        }
                    }
                    self.0.reload_async("file").await;
                }
            }
        }
    }
}

/// True for the events that can change a file's content: not opening or reading it (a reload
/// reads the file, so counting reads would make every reload start the next one).
fn is_edit(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}
