//! The server's clock: the time stamped on records (Unix milliseconds) and the time its timers
//! wait on (heartbeat silence, the classic push grace, MQTT keep-alive, command TTLs). The engine and
//! the sessions read it from the server's state instead of the system, so a test can move it
//! forward: a 2.3-heartbeat timeout or a command's TTL then passes in no real time, and a
//! loaded machine cannot make such a test late or early.
//!
//! [`Clock::system`] (the default) is the system's clocks. [`Clock::manual`] runs at real
//! speed plus an offset that only [`Clock::advance`] changes: real time still passes (the store
//! and the sockets take what they take), and a timer on the clock fires within
//! [`MANUAL_RECHECK`] of an advance that carries it past its deadline; so does a login deadline
//! ([`Clock::timeout`]), which a test passes by advancing again until the connection closes (it
//! cannot know when the server started it). Tokio's own paused time does not fit the server
//! tests: it jumps to the next timer whenever the runtime is idle, which it also is while the
//! store's writer thread commits.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How often a timer set with [`Clock::timer_deadline`] looks at a manual clock.
pub const MANUAL_RECHECK: Duration = Duration::from_millis(20);

/// A clock: the system's, or one a test moves forward. Cheap to clone.
#[derive(Clone, Default)]
pub struct Clock {
    /// The offset a test added, in milliseconds, and its watchers; none for the system clock.
    manual: Option<Arc<watch::Sender<u64>>>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.manual {
            None => f.write_str("Clock::system"),
            Some(offset) => write!(f, "Clock::manual(+{} ms)", *offset.borrow()),
        }
    }
}

impl Clock {
    /// The system's clocks.
    pub fn system() -> Self {
        Clock::default()
    }

    /// A clock at real speed that [`Clock::advance`] moves forward (tests).
    pub fn manual() -> Self {
        Clock {
            manual: Some(Arc::new(watch::channel(0).0)),
        }
    }

    /// Moves a manual clock forward by `by` and wakes every timer waiting on it; does nothing
    /// to the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(offset) = &self.manual {
            let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
            offset.send_modify(|offset| *offset = offset.saturating_add(by));
        }
    }

    fn offset(&self) -> Duration {
        self.manual.as_ref().map_or(Duration::ZERO, |offset| {
            Duration::from_millis(*offset.borrow())
        })
    }

    /// Now, for deadlines and durations.
    pub fn now(&self) -> Instant {
        Instant::now() + self.offset()
    }

    /// Now in milliseconds since the Unix epoch, the time stamped on every record.
    pub fn unix_ms(&self) -> i64 {
        let offset = i64::try_from(self.offset().as_millis()).unwrap_or(i64::MAX);
        crate::model::now_ms().saturating_add(offset)
    }

    /// The instant a tokio timer is set to for the moment this clock reads `at`. On a manual
    /// clock it is at most [`MANUAL_RECHECK`] away, so that a timer set with it notices an
    /// advance without subscribing to the clock (a subscription would grow every idle
    /// session): the loop that owns the timer checks [`Clock::now`] when it fires and sets it
    /// again.
    pub fn timer_deadline(&self, at: Instant) -> Instant {
        if self.manual.is_none() {
            return at;
        }
        let real = at.checked_sub(self.offset()).unwrap_or_else(Instant::now);
        real.min(Instant::now() + MANUAL_RECHECK)
    }

    /// `future` under a deadline `after` from now on this clock: `None` when the deadline
    /// passes first. On a manual clock the deadline is looked at every [`MANUAL_RECHECK`], so
    /// an advance past it ends the wait.
    pub async fn timeout<F: Future>(&self, after: Duration, future: F) -> Option<F::Output> {
        let deadline = self.now() + after;
        let mut future = std::pin::pin!(future);
        loop {
            tokio::select! {
                output = &mut future => return Some(output),
                () = tokio::time::sleep_until(self.timer_deadline(deadline)) => {
                    if self.now() >= deadline {
                        return None;
                    }
                }
            }
        }
    }

    /// What wakes a waiter when a test moves the clock forward; never fires on the system clock.
    pub fn advances(&self) -> Advances {
        Advances(self.manual.as_ref().map(|offset| offset.subscribe()))
    }
}

/// The moves of a manual clock, from [`Clock::advances`].
pub struct Advances(Option<watch::Receiver<u64>>);

impl Advances {
    /// Waits for the next move of the clock; forever on the system clock.
    pub async fn next(&mut self) {
        match &mut self.0 {
            Some(offset) => {
                if offset.changed().await.is_err() {
                    // The clock is gone with the server: nothing moves it any more.
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}
