//! What travels between the engine and a live device session: the values the engine sends it
//! ([`Outbound`], through an [`OutboundQueue`]), the engine's handle on it ([`SessionLink`]),
//! and the bookkeeping that turns a stored app write into a delivered one ([`Delivery`],
//! [`Waiters`]).
//!
//! Both the write paths (`writes.rs`) and the session registry (`sessions.rs`) use these; neither
//! imports the other.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use blynk_proto::Pin;
use futures_util::task::AtomicWaker;
use tokio::sync::{Notify, oneshot};

use crate::model::OwnedValue;

/// Most app writes per device waiting to be reported delivered.
const MAX_WAITERS: usize = 1024;

pub use crate::model::Protocol;

/// Values waiting in a session's queue beyond which it counts as behind: a new value of a pin
/// then replaces the older one still waiting (the device needs the latest state, not every
/// step), as the app watchers do.
pub const COALESCE_AFTER: usize = 64;

/// A value for a session to send to its device: an app write, or a command. Sessions are
/// closed through their kill signal, so this is the only message.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The pin.
    pub pin: Pin,
    /// The value.
    pub value: Arc<OwnedValue>,
    /// Its version.
    pub version: u64,
    /// For a command: its pending id, to be claimed before sending.
    pub command: Option<i64>,
}

/// A session's queue of values from the engine: empty, it holds no buffer (an idle
/// connection costs one small allocation here); bounded; merged per pin once behind.
pub(super) struct QueueShared {
    state: Mutex<QueueState>,
    /// The session's task, woken when a value arrives (one receiver, so no waiter list: the
    /// receiving future is a pointer, which keeps every idle session's task small).
    ready: AtomicWaker,
}

struct QueueState {
    entries: VecDeque<Outbound>,
    /// Most entries that cannot be merged away.
    capacity: usize,
    /// Set when the session was dropped for falling too far behind.
    overflowed: bool,
}

impl QueueShared {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The session's end of its queue.
pub struct OutboundQueue {
    shared: Arc<QueueShared>,
}

impl std::fmt::Debug for OutboundQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundQueue")
            .field("waiting", &self.shared.lock().entries.len())
            .finish()
    }
}

impl OutboundQueue {
    /// A queue for one session, holding at most `capacity` values that cannot be merged.
    pub(super) fn new(capacity: usize) -> Self {
        OutboundQueue {
            shared: Arc::new(QueueShared {
                state: Mutex::new(QueueState {
                    entries: VecDeque::new(),
                    capacity: capacity.max(1),
                    overflowed: false,
                }),
                ready: AtomicWaker::new(),
            }),
        }
    }

    pub(super) fn shared(&self) -> Arc<QueueShared> {
        self.shared.clone()
    }

    /// The next value, waiting for one; `None` once the engine dropped the session for falling
    /// too far behind. Cancel-safe.
    pub fn recv(&mut self) -> impl Future<Output = Option<Outbound>> + '_ {
        std::future::poll_fn(|cx| {
            // Register before looking, so a value queued in between wakes this task.
            self.shared.ready.register(cx.waker());
            match self.try_recv() {
                Ok(outbound) => Poll::Ready(Some(outbound)),
                Err(true) => Poll::Ready(None),
                Err(false) => Poll::Pending,
            }
        })
    }

    /// Whether the engine dropped the session for falling too far behind.
    pub fn overflowed(&self) -> bool {
        self.shared.lock().overflowed
    }

    /// The next value if one waits; `Err(true)` once the session overflowed, `Err(false)` when
    /// nothing waits.
    pub fn try_recv(&mut self) -> Result<Outbound, bool> {
        let mut state = self.shared.lock();
        match state.entries.pop_front() {
            Some(outbound) => {
                if state.entries.is_empty() {
                    // Free the buffer a burst grew, so an idle session holds none.
                    state.entries = VecDeque::new();
                }
                Ok(outbound)
            }
            None => Err(state.overflowed),
        }
    }
}

/// The engine's side of a live session.
pub(super) struct SessionLink {
    pub id: u64,
    pub outbound: Arc<QueueShared>,
    pub protocol: Protocol,
    /// Ends the session even when its queue is full.
    pub kill: Arc<Notify>,
}

impl SessionLink {
    /// Asks the session to end; it detaches itself, which updates presence.
    pub fn close(&self) {
        self.kill.notify_one();
    }

    /// Queues a value for the device. Once the session is behind, a value replaces the older
    /// value of its pin still waiting (a command never does, nor is replaced). A session
    /// whose queue is full of what cannot be merged reads too slowly: it is closed, and the
    /// device gets the latest values at its next sync. `false` when not queued.
    pub fn forward(&self, outbound: Outbound) -> bool {
        let was_empty = {
            let mut state = self.outbound.lock();
            if state.overflowed {
                return false;
            }
            let merges = state.entries.len() >= COALESCE_AFTER && outbound.command.is_none();
            // The newest waiting value of the pin: replacing it keeps the pin's values in order.
            if merges
                && let Some(waiting) = state
                    .entries
                    .iter_mut()
                    .rev()
                    .find(|waiting| waiting.command.is_none() && waiting.pin == outbound.pin)
            {
                // The session reports the newer version delivered, which settles the
                // waiters of the older one too.
                *waiting = outbound;
                return true;
            }
            if state.entries.len() >= state.capacity {
                state.overflowed = true;
                drop(state);
                tracing::warn!(
                    session = self.id,
                    "device session reads too slowly; closing it"
                );
                self.close();
                self.outbound.ready.wake();
                return false;
            }
            state.entries.push_back(outbound);
            state.entries.len() == 1
        };
        if was_empty {
            self.outbound.ready.wake();
        }
        true
    }
}

/// The fate of an app write, reported after "stored".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The device received the value (or a newer one of the same pin).
    Delivered,
    /// A command whose ttl passed before its device connected.
    Expired,
    /// The device itself wrote the pin again before receiving this value, or (a command) a
    /// newer command of the pin replaced it while the device was away.
    Superseded,
}

impl Delivery {
    /// The name used by the app API.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Expired => "expired",
            Delivery::Superseded => "superseded",
        }
    }
}

/// A one-shot delivery report for an app write.
pub type DeliveryReport = oneshot::Receiver<Delivery>;

/// An app write waiting to be reported delivered.
struct Waiter {
    pin: Pin,
    version: u64,
    report: oneshot::Sender<Delivery>,
}

/// The app writes of one device waiting for their fate, oldest first.
#[derive(Default)]
pub(super) struct Waiters(Vec<Waiter>);

impl Waiters {
    /// Registers a write of `pin` at `version`; the receiver resolves with its fate.
    pub fn add(&mut self, pin: Pin, version: u64) -> DeliveryReport {
        let (report, receiver) = oneshot::channel();
        if self.0.len() >= MAX_WAITERS {
            // The oldest waiter's app is told nothing more; the value itself stays stored.
            self.0.remove(0);
        }
        self.0.push(Waiter {
            pin,
            version,
            report,
        });
        receiver
    }

    /// Reports `fate` to the waiters of `pin` that `matches(version)` selects, and forgets them.
    pub fn settle(&mut self, pin: Pin, fate: Delivery, matches: impl Fn(u64) -> bool) {
        if !self.0.iter().any(|waiter| waiter.pin == pin) {
            return;
        }
        let mut kept = Vec::with_capacity(self.0.len());
        for waiter in self.0.drain(..) {
            if waiter.pin == pin && matches(waiter.version) {
                let _ = waiter.report.send(fate);
            } else {
                kept.push(waiter);
            }
        }
        self.0 = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(capacity: usize) -> (SessionLink, OutboundQueue) {
        let queue = OutboundQueue::new(capacity);
        let link = SessionLink {
            id: 1,
            outbound: queue.shared(),
            protocol: Protocol::Native,
            kill: Arc::new(Notify::new()),
        };
        (link, queue)
    }

    fn value(pin: u8, version: u64, command: Option<i64>) -> Outbound {
        Outbound {
            pin: Pin::Virtual(pin),
            value: Arc::new(OwnedValue(Vec::new())),
            version,
            command,
        }
    }

    #[test]
    fn a_session_that_keeps_up_gets_every_value_in_order() {
        let (link, mut queue) = link(256);
        for version in 1..=10 {
            assert!(link.forward(value(0, version, None)));
        }
        let got: Vec<u64> = std::iter::from_fn(|| queue.try_recv().ok())
            .map(|outbound| outbound.version)
            .collect();
        assert_eq!(got, (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn a_session_behind_gets_the_latest_value_of_each_pin_and_every_command() {
        let (link, mut queue) = link(COALESCE_AFTER + 4);
        // Far more values than the queue holds, on two pins, and two commands among them.
        for version in 1..=10_000 {
            let command = (version % 5_000 == 0).then_some(version as i64);
            let pin = if command.is_some() {
                9
            } else {
                (version % 2) as u8
            };
            assert!(link.forward(value(pin, version, command)), "never dropped");
        }
        let got: Vec<Outbound> = std::iter::from_fn(|| queue.try_recv().ok()).collect();
        let latest = |pin: u8| {
            got.iter()
                .filter(|outbound| outbound.pin == Pin::Virtual(pin))
                .map(|outbound| outbound.version)
                .max()
        };
        assert_eq!(latest(0), Some(9_998));
        assert_eq!(latest(1), Some(9_999));
        let commands: Vec<Option<i64>> = got.iter().filter_map(|o| o.command.map(Some)).collect();
        assert_eq!(commands, vec![Some(5_000), Some(10_000)]);
        for pin in [0, 1] {
            let versions: Vec<u64> = got
                .iter()
                .filter(|outbound| outbound.pin == Pin::Virtual(pin))
                .map(|outbound| outbound.version)
                .collect();
            assert!(
                versions.windows(2).all(|pair| pair[0] < pair[1]),
                "in order"
            );
        }
    }

    #[test]
    fn a_queue_full_of_commands_closes_the_session() {
        let (link, mut queue) = link(COALESCE_AFTER);
        for id in 0..COALESCE_AFTER as i64 {
            assert!(link.forward(value(0, id as u64 + 1, Some(id))));
        }
        assert!(!link.forward(value(0, 1_000, Some(1_000))));
        while queue.try_recv().is_ok() {}
        assert_eq!(queue.try_recv().err(), Some(true), "the session is told");
    }
}
