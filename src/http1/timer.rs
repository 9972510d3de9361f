//! A timeout that lives as long as a connection: one Tokio timer, moved later for each wait.
//!
//! A timeout per wait (Pingora's fast timeout) costs a registration in a shared timer tree, a
//! boxed future and a `Notify` waiter each time, ~600 instructions per request per timer. Moving
//! a registered Tokio timer later is one atomic update, and since the timer is never registered
//! afresh it never has to wake the runtime to shorten its sleep (which costs a system call).
//! When the old deadline comes round, Tokio's timer wheel sees the later one and files it again.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{sleep_until, Instant, Sleep};

/// The timer of one connection's waits; created on first use.
#[derive(Default)]
pub struct ConnectionTimer(Option<Pin<Box<Sleep>>>);

impl ConnectionTimer {
    /// What `work` gives, or `None` when it has not finished `limit` from now.
    pub async fn within<F: Future>(&mut self, limit: Duration, work: F) -> Option<F::Output> {
        let deadline = Instant::now() + limit;
        let timer = match &mut self.0 {
            Some(timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => self.0.insert(Box::pin(sleep_until(deadline))),
        };
        tokio::select! {
            biased;
            done = work => Some(done),
            () = timer.as_mut() => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_finishes_in_time_gives_its_result() {
        let mut timer = ConnectionTimer::default();
        assert_eq!(timer.within(Duration::from_secs(5), async { 7 }).await, Some(7));
    }

    #[tokio::test]
    async fn each_wait_gets_its_whole_limit_even_after_an_earlier_deadline_passed() {
        let mut timer = ConnectionTimer::default();
        assert_eq!(timer.within(Duration::from_millis(20), async { 1 }).await, Some(1));
        // The first deadline passes while this wait runs; the wait's own limit is longer.
        let slow = tokio::time::sleep(Duration::from_millis(80));
        assert_eq!(
            timer
                .within(Duration::from_secs(5), async {
                    slow.await;
                    2
                })
                .await,
            Some(2)
        );
        // A timer that has fired is set again for the next wait.
        let never = std::future::pending::<()>();
        assert_eq!(timer.within(Duration::from_millis(20), never).await, None);
        assert_eq!(timer.within(Duration::from_secs(5), async { 3 }).await, Some(3));
    }

    #[tokio::test]
    async fn work_still_pending_at_the_limit_is_given_up() {
        let mut timer = ConnectionTimer::default();
        let started = std::time::Instant::now();
        assert_eq!(timer.within(Duration::from_millis(30), std::future::pending::<()>()).await, None);
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
