//! Draining during a graceful upgrade or shutdown, and stopping as soon as the work is done.
//!
//! Once the process starts handing its sockets to a new process (or is told to stop), every
//! response says `Connection: close`, so clients move their connections over between requests
//! instead of losing one the old process drops while idle.
//!
//! On a graceful stop (`SIGTERM`, or `SIGQUIT` once the sockets are handed over) Pingora stops
//! accepting and then sleeps through its whole grace period (`grace_period_seconds`, 300 s by
//! default) whatever is left, so an idle gateway would take five minutes to exit and service
//! managers would end it with `SIGKILL`. Every request holds an [`InFlight`] mark from its first
//! phase to its end (an SSE stream to its last event); once a graceful stop has begun and no mark
//! is left, the process exits. Streams still open when the grace period ends are closed by
//! Pingora as before. `SIGINT` stays Pingora's fast stop.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::sync::broadcast;

static DRAINING: AtomicBool = AtomicBool::new(false);
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// How often a stopping process looks at what is still in flight.
const POLL: Duration = Duration::from_millis(20);
/// How long nothing must be in flight before the process exits: a connection accepted just before
/// the listeners closed may not have delivered its request head yet.
const SETTLE: Duration = Duration::from_millis(200);

/// True once the process is handing over or shutting down.
pub fn is_draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// Requests being served right now (gateway listeners only).
pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Acquire)
}

/// A request being served: counted from its creation until it is dropped. A graceful stop waits
/// for every one of them (up to the grace period).
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    /// Marks one more request in flight.
    pub fn enter() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Follows Pingora's execution phase: raises the drain flag, and ends the process once a graceful
/// stop has nothing left to wait for.
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
        let mut shutdown_open = true;
        loop {
            tokio::select! {
                changed = shutdown.changed(), if shutdown_open => {
                    DRAINING.store(true, Ordering::Relaxed);
                    // The sender lives as long as the server; keep following the phases.
                    shutdown_open = changed.is_ok();
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
                    // Only a graceful stop has a grace period; the listeners are closed by now.
                    Ok(ExecutionPhase::ShutdownGracePeriod) => {
                        DRAINING.store(true, Ordering::Relaxed);
                        exit_when_idle().await;
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    }
}

/// Waits until nothing has been in flight for [`SETTLE`], then ends the process. Pingora is asleep
/// in its grace period meanwhile and has nothing left to do for requests; if the grace period
/// ends first, Pingora closes what is left and exits itself.
async fn exit_when_idle() {
    let waiting = in_flight();
    tracing::info!(in_flight = waiting, "stopping: waiting for requests and streams in flight");
    let mut idle_since: Option<Instant> = None;
    loop {
        if in_flight() == 0 {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= SETTLE {
                tracing::info!("stopping: nothing left in flight, exiting");
                std::process::exit(0);
            }
        } else {
            idle_since = None;
        }
        tokio::time::sleep(POLL).await;
    }
}
