//! What the firmware's calls and the runner share: the outgoing queue and the connection
//! status behind one blocking mutex, and the signal that wakes the runner.
//!
//! [`Blynk`](crate::Blynk) is the firmware's handle on it and [`Runner`](crate::Runner) the
//! connection's; both depend on this module, and neither on the other's internals.

use core::cell::RefCell;

use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::signal::Signal;

use crate::error::Error;
use crate::outbox::Outbox;

/// The connection as the firmware sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Status {
    /// Logged in to the server now.
    pub connected: bool,
    /// The automatic sync of the current connection completed: the device holds the server's
    /// state.
    pub synced: bool,
    /// How many logins succeeded since start.
    pub logins: u32,
    /// Why the last connection ended, or the last attempt failed.
    pub last_error: Option<Error>,
    /// Set when the runner stopped for good, with the reason (a rejected token, say).
    pub stopped: Option<Error>,
}

/// The state under the mutex.
pub(crate) struct Shared<const SLOTS: usize, const BYTES: usize> {
    pub(crate) outbox: Outbox<SLOTS, BYTES>,
    pub(crate) status: Status,
}

/// The shared state and the runner's wake-up signal, over a caller-chosen [`RawMutex`].
pub(crate) struct Link<M: RawMutex, const SLOTS: usize, const BYTES: usize> {
    shared: Mutex<M, RefCell<Shared<SLOTS, BYTES>>>,
    wake: Signal<M, ()>,
}

impl<M: RawMutex, const SLOTS: usize, const BYTES: usize> Link<M, SLOTS, BYTES> {
    /// An empty queue and a disconnected status; `const`, for a `static`.
    pub(crate) const fn new() -> Self {
        Link {
            shared: Mutex::new(RefCell::new(Shared {
                outbox: Outbox::new(),
                status: Status {
                    connected: false,
                    synced: false,
                    logins: 0,
                    last_error: None,
                    stopped: None,
                },
            })),
            wake: Signal::new(),
        }
    }

    /// Runs `f` on the shared state under the mutex; keep it to a few copies.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Shared<SLOTS, BYTES>) -> R) -> R {
        self.shared.lock(|shared| f(&mut shared.borrow_mut()))
    }

    /// The signal that wakes the runner when something was queued.
    pub(crate) fn wake(&self) -> &Signal<M, ()> {
        &self.wake
    }
}
