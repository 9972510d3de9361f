//! Draining during a graceful upgrade or shutdown: once the process starts handing its sockets to
//! a new process (or is told to stop), every response says `Connection: close`, so clients move
//! their connections over between requests instead of losing one the old process drops while idle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::sync::broadcast;

static DRAINING: AtomicBool = AtomicBool::new(false);

/// True once the process is handing over or shutting down.
pub fn is_draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// Follows Pingora's execution phase and raises the drain flag.
pub struct DrainWatch {
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

impl DrainWatch {
    /// Watches the phases from `Server::watch_execution_phase`.
    pub fn new(phases: broadcast::Receiver<ExecutionPhase>) -> Self {
        Self { phases: Mutex::new(Some(phases)) }
    }
}

#[async_trait]
impl BackgroundService for DrainWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().ok().and_then(|mut p| p.take()) else { return };
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    DRAINING.store(true, Ordering::Relaxed);
                    if changed.is_err() {
                        break;
                    }
                }
                phase = phases.recv() => match phase {
                    Ok(
                        ExecutionPhase::GracefulUpgradeTransferringFds
                        | ExecutionPhase::GracefulUpgradeCloseTimeout
                        | ExecutionPhase::GracefulTerminate
                        | ExecutionPhase::ShutdownStarted,
                    ) => {
                        if !DRAINING.swap(true, Ordering::Relaxed) {
                            tracing::info!("draining: responses now close their connections");
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    }
}
