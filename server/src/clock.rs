//! The server's clock: the time stamped on records (Unix milliseconds) and the time its timers
//! wait on (heartbeat silence, login deadline, MQTT keep-alive, command TTLs). The engine and
//! the sessions read it from the server's state instead of the system, so a test can move it
//! forward: a 2.3-heartbeat timeout or a command's TTL then passes in no real time, and a
//! loaded machine cannot make such a test late or early.
//!
//! [`Clock::system`] (the default) is the system's clocks. [`Clock::manual`] runs at real
//! speed plus an offset that only [`Clock::advance`] changes: real time still passes (the store
//! and the sockets take what they take), and a timer waiting on the clock wakes at once when
//! an advance carries it past its deadline. Tokio's own paused time does not fit the server
//! tests: it jumps to the next timer whenever the runtime is idle, which it also is while the
//! store's writer thread commits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

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

    /// The instant of tokio's timers at which this clock reads `at`: what a timer kept across
    /// a loop (a pinned `tokio::time::Sleep`) is set to. Such a loop also waits on
    /// [`Clock::advances`] and sets its timer again when the clock moves.
    pub fn timer_deadline(&self, at: Instant) -> Instant {
        at.checked_sub(self.offset()).unwrap_or_else(Instant::now)
    }

    /// What wakes a waiter when a test moves the clock forward; never fires on the system clock.
    pub fn advances(&self) -> Advances {
        Advances(self.manual.as_ref().map(|offset| offset.subscribe()))
    }

    /// Waits until the clock reaches `deadline` (an instant of [`Clock::now`]).
    pub async fn sleep_until(&self, deadline: Instant) {
        let mut advances = self.advances();
        while self.now() < deadline {
            tokio::select! {
                () = tokio::time::sleep_until(self.timer_deadline(deadline)) => {}
                () = advances.next() => {}
            }
        }
    }

    /// Runs `future` for at most `limit` of this clock; `None` when the time ran out first.
    pub async fn timeout<T>(&self, limit: Duration, future: impl Future<Output = T>) -> Option<T> {
        let deadline = self.now() + limit;
        tokio::select! {
            output = future => Some(output),
            () = self.sleep_until(deadline) => None,
        }
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
