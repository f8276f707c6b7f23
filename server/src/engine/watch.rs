//! Watchers: one bounded queue per app connection, however many devices it watches, fed by the
//! engine without ever waiting.
//!
//! The engine publishes under the device's lock, so what a watcher queues is in version order
//! per device. A watcher that keeps up gets every event. Once [`COALESCE_AFTER`] entries or more
//! wait for it, a new value of a pin replaces the older value of that pin still waiting
//! (the older one is dropped and the newer one queued at the end, so what the client sees is the
//! published sequence with some values left out: no order changes, and the latest value of every
//! pin always arrives). State sync needs the latest value of each pin, not every one. Every other
//! entry (presence, properties, logged events, devices added or removed, write reports,
//! snapshots) is kept; more than [`WatchLimits::backlog`] of them waiting closes the watcher.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use blynk_proto::Pin;
use tokio::sync::Notify;

use super::events::AppEvent;
use crate::model::DeviceId;

/// Entries waiting from which a watcher counts as behind, and values start to be merged.
pub const COALESCE_AFTER: usize = 64;

/// Bounds of one watcher.
#[derive(Debug, Clone, Copy)]
pub struct WatchLimits {
    /// Most entries that cannot be merged (every kind but values) waiting for one watcher;
    /// one more closes it.
    pub backlog: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits { backlog: 65_536 }
    }
}

/// One entry taken from a watcher's queue, in the order it was queued.
#[derive(Debug, Clone, PartialEq)]
pub enum Queued {
    /// An event the engine published; `coalesced` counts the older values of the pin it
    /// replaced (0 for all but values).
    Event {
        /// The event.
        event: AppEvent,
        /// How many older values of the same pin were dropped in its favour.
        coalesced: u32,
    },
    /// A message for this client only (a write report), sent like an event.
    Report(String),
    /// A message for this client only that travels alone (a snapshot).
    Standalone(String),
}

/// Why a watcher was closed.
pub type CloseReason = Arc<str>;

/// A watcher's queue and its wake-up, shared by the engine (pushing) and the connection
/// (taking).
pub(super) struct Shared {
    queue: Mutex<Queue>,
    ready: Notify,
    limits: WatchLimits,
}

struct Queue {
    /// Waiting entries; `None` is a value dropped for a newer one of its pin.
    entries: VecDeque<Option<Queued>>,
    /// The sequence number of `entries[0]`.
    first: u64,
    /// Where the newest waiting value of each pin is (by sequence number).
    newest_value: HashMap<(DeviceId, Pin), u64>,
    /// The `None`s in `entries`.
    dropped: usize,
    /// Waiting entries that are not values.
    unmergeable: usize,
    closed: Option<CloseReason>,
}

impl Queue {
    fn waiting(&self) -> usize {
        self.entries.len() - self.dropped
    }

    fn push(&mut self, entry: Queued, limits: &WatchLimits) {
        if self.closed.is_some() {
            return;
        }
        let key = match &entry {
            Queued::Event { event, .. } => event.coalesce_key(),
            _ => None,
        };
        let Some(key) = key else {
            if self.unmergeable >= limits.backlog {
                self.close(format!(
                    "too slow: more than {} events waiting that cannot be merged",
                    limits.backlog
                ));
                return;
            }
            self.unmergeable += 1;
            self.entries.push_back(Some(entry));
            return;
        };
        let mut entry = entry;
        let behind = self.waiting() >= COALESCE_AFTER;
        if behind
            && let Some(&older) = self.newest_value.get(&key)
            && let Some(older_count) = self.drop_value((older - self.first) as usize)
            && let Queued::Event { coalesced, .. } = &mut entry
        {
            *coalesced = coalesced.saturating_add(older_count).saturating_add(1);
        }
        self.newest_value
            .insert(key, self.first + self.entries.len() as u64);
        self.entries.push_back(Some(entry));
        if self.dropped > COALESCE_AFTER && self.dropped > self.entries.len() / 2 {
            self.compact();
        }
    }

    /// Drops the value waiting at `index`; returns how many values it had replaced itself.
    fn drop_value(&mut self, index: usize) -> Option<u32> {
        let slot = self.entries.get_mut(index)?;
        if !matches!(slot, Some(Queued::Event { .. })) {
            return None;
        }
        let Some(Queued::Event { coalesced, .. }) = slot.take() else {
            return None;
        };
        self.dropped += 1;
        Some(coalesced)
    }

    /// Removes the dropped entries and renumbers the rest.
    fn compact(&mut self) {
        self.entries.retain(Option::is_some);
        self.dropped = 0;
        self.newest_value.clear();
        for (index, entry) in self.entries.iter().enumerate() {
            if let Some(Queued::Event { event, .. }) = entry
                && let Some(key) = event.coalesce_key()
            {
                self.newest_value.insert(key, self.first + index as u64);
            }
        }
    }

    fn take(&mut self, out: &mut Vec<Queued>, max: usize) {
        let mut taken = 0;
        while taken < max {
            let Some(entry) = self.entries.pop_front() else {
                break;
            };
            let sequence = self.first;
            self.first += 1;
            let Some(entry) = entry else {
                self.dropped -= 1;
                continue;
            };
            match &entry {
                Queued::Event { event, .. } => match event.coalesce_key() {
                    Some(key) => {
                        if self.newest_value.get(&key) == Some(&sequence) {
                            self.newest_value.remove(&key);
                        }
                    }
                    None => self.unmergeable -= 1,
                },
                _ => self.unmergeable -= 1,
            }
            out.push(entry);
            taken += 1;
        }
        if self.entries.is_empty() {
            // Gives the memory of a burst back.
            if self.entries.capacity() > 4 * COALESCE_AFTER {
                self.entries = VecDeque::new();
            }
            if self.newest_value.capacity() > 4 * COALESCE_AFTER {
                self.newest_value = HashMap::new();
            }
        }
    }

    fn close(&mut self, reason: String) {
        if self.closed.is_none() {
            self.closed = Some(reason.into());
        }
        self.entries = VecDeque::new();
        self.newest_value = HashMap::new();
        self.dropped = 0;
        self.unmergeable = 0;
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues an entry; false once the watcher is closed.
    fn push(&self, entry: Queued) -> bool {
        let (wake, open) = {
            let mut queue = self.lock();
            let was_empty = queue.entries.is_empty();
            queue.push(entry, &self.limits);
            let open = queue.closed.is_none();
            (was_empty || !open, open)
        };
        if wake {
            self.ready.notify_one();
        }
        open
    }

    fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }
}

/// The receiving end of one watcher, owned by one app connection. Dropping it unregisters it
/// from every device it watches.
pub struct Watcher {
    shared: Arc<Shared>,
    /// Each device watched, to unregister from when dropped.
    watched: Mutex<HashMap<DeviceId, Arc<super::DeviceSlot>>>,
    /// The engine's list for events about every device, once registered there.
    everyone: Mutex<Option<Arc<WatcherList>>>,
}

impl Watcher {
    /// A watcher with nothing watched yet.
    pub fn new(limits: WatchLimits) -> Self {
        Watcher {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    entries: VecDeque::new(),
                    first: 0,
                    newest_value: HashMap::new(),
                    dropped: 0,
                    unmergeable: 0,
                    closed: None,
                }),
                ready: Notify::new(),
                limits,
            }),
            watched: Mutex::default(),
            everyone: Mutex::default(),
        }
    }

    /// Registers with the list of events about every device.
    pub(super) fn watch_all(&self, everyone: &Arc<WatcherList>) {
        let mut registered = super::lock(&self.everyone);
        if registered.is_none() {
            everyone.add(&self.shared);
            *registered = Some(everyone.clone());
        }
    }

    /// Records a device this watcher was registered with; false if it already was.
    pub(super) fn remember(&self, slot: &Arc<super::DeviceSlot>) -> bool {
        super::lock(&self.watched)
            .insert(slot.device.id, slot.clone())
            .is_none()
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Queues a message for this client only: a report (sent like an event) or a standalone
    /// message. Counts toward the backlog bound.
    pub fn send_to_client(&self, entry: Queued) {
        let _open = self.shared.push(entry);
    }

    /// Closes the watcher with a reason (nothing more is queued).
    pub fn close(&self, reason: &str) {
        self.shared.lock().close(reason.to_owned());
        self.shared.ready.notify_one();
    }

    /// Waits until something is waiting or the watcher was closed.
    pub async fn ready(&self) {
        loop {
            {
                let queue = self.shared.lock();
                if !queue.entries.is_empty() || queue.closed.is_some() {
                    return;
                }
            }
            self.shared.ready.notified().await;
        }
    }

    /// Waits until the watcher is closed; the reason.
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(reason) = &self.shared.lock().closed {
                return reason.clone();
            }
            // A wake-up meant for `ready` is not lost: `ready` looks at the queue first.
            self.shared.ready.notified().await;
        }
    }

    /// Takes up to `max` waiting entries, in order, into `out`; the reason if it was closed.
    pub fn take(&self, out: &mut Vec<Queued>, max: usize) -> Result<(), CloseReason> {
        let mut queue = self.shared.lock();
        if let Some(reason) = &queue.closed {
            return Err(reason.clone());
        }
        queue.take(out, max);
        Ok(())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.lock().close("gone".to_owned());
        let watched = std::mem::take(&mut *super::lock(&self.watched));
        for slot in watched.values() {
            slot.watchers.remove(&self.shared);
        }
        if let Some(everyone) = super::lock(&self.everyone).take() {
            everyone.remove(&self.shared);
        }
    }
}

/// The watchers of one device (or of every device's presence, for the engine): what an
/// unwatched device costs is this empty list.
#[derive(Default)]
pub struct WatcherList {
    watchers: RwLock<Vec<Arc<Shared>>>,
}

impl WatcherList {
    /// Queues `event` for every watcher, without waiting; returns how many got it.
    pub fn send(&self, event: AppEvent) -> usize {
        let mut closed = false;
        let reached = {
            let watchers = super::read_lock(&self.watchers);
            let Some((last, others)) = watchers.split_last() else {
                return 0;
            };
            for watcher in others {
                closed |= !watcher.push(Queued::Event {
                    event: event.clone(),
                    coalesced: 0,
                });
            }
            closed |= !last.push(Queued::Event {
                event,
                coalesced: 0,
            });
            watchers.len()
        };
        if closed {
            // A closed watcher gets nothing more; its connection is on its way out.
            super::write_lock(&self.watchers).retain(|watcher| !watcher.is_closed());
        }
        reached
    }

    pub(super) fn add(&self, watcher: &Arc<Shared>) {
        super::write_lock(&self.watchers).push(watcher.clone());
    }

    fn remove(&self, watcher: &Arc<Shared>) {
        super::write_lock(&self.watchers).retain(|other| !Arc::ptr_eq(other, watcher));
    }

    /// How many watchers there are.
    pub fn len(&self) -> usize {
        super::read_lock(&self.watchers).len()
    }

    /// Whether nobody watches.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::events;
    use crate::model::{Origin, OwnedScalar, OwnedValue, StoredValue};

    fn stored(version: u64) -> StoredValue {
        StoredValue {
            value: Arc::new(OwnedValue(vec![OwnedScalar::Int(version as i64)])),
            version,
            set_at: 0,
            origin: Origin::Device,
        }
    }

    fn value(device: DeviceId, pin: u8, version: u64) -> AppEvent {
        events::value(device, Pin::Virtual(pin), &stored(version))
    }

    fn push(watcher: &Watcher, event: AppEvent) {
        watcher.shared().push(Queued::Event {
            event,
            coalesced: 0,
        });
    }

    fn take_all(watcher: &Watcher) -> Vec<Queued> {
        let mut out = Vec::new();
        watcher.take(&mut out, usize::MAX).unwrap();
        out
    }

    #[test]
    fn a_watcher_that_keeps_up_gets_every_value() {
        let watcher = Watcher::new(WatchLimits::default());
        for version in 1..=10 {
            push(&watcher, value(1, 0, version));
        }
        let taken = take_all(&watcher);
        assert_eq!(taken.len(), 10);
        assert!(
            taken
                .iter()
                .all(|entry| matches!(entry, Queued::Event { coalesced: 0, .. }))
        );
    }

    #[test]
    fn a_watcher_behind_gets_the_newest_value_of_each_pin_in_version_order() {
        let watcher = Watcher::new(WatchLimits::default());
        let mut version = 0;
        let mut presence_sent = 0;
        for round in 0..2_000u64 {
            for pin in 0..4 {
                version += 1;
                push(&watcher, value(1, pin, version));
            }
            if round % 100 == 0 {
                push(
                    &watcher,
                    events::presence(1, round % 200 == 0, round as i64),
                );
                presence_sent += 1;
            }
        }
        let taken = take_all(&watcher);
        // Never more than the unmerged head, the newest value of each pin and the presence.
        assert!(
            taken.len() <= COALESCE_AFTER + 4 + presence_sent,
            "{}",
            taken.len()
        );
        let mut last_version = 0;
        let mut newest = HashMap::new();
        let mut values_counted = 0u64;
        let mut presence_seen = 0;
        for entry in &taken {
            let Queued::Event { event, coalesced } = entry else {
                panic!("only events were queued");
            };
            match event {
                AppEvent::Value { pin, stored, .. } => {
                    assert!(stored.version > last_version, "version order per device");
                    last_version = stored.version;
                    newest.insert(*pin, stored.version);
                    values_counted += 1 + u64::from(*coalesced);
                }
                AppEvent::Presence { .. } => presence_seen += 1,
                _ => panic!("unexpected event"),
            }
        }
        assert_eq!(
            presence_seen, presence_sent,
            "presence is never merged away"
        );
        assert_eq!(values_counted, version, "every value is counted");
        for pin in 0..4u8 {
            assert_eq!(newest[&Pin::Virtual(pin)], version - 3 + u64::from(pin));
        }
    }

    #[test]
    fn too_many_unmergeable_events_close_the_watcher_with_a_reason() {
        let watcher = Watcher::new(WatchLimits { backlog: 8 });
        for at in 0..8 {
            push(&watcher, events::presence(1, true, at));
        }
        assert_eq!(take_all(&watcher).len(), 8, "the bound itself is fine");
        for at in 0..9 {
            push(&watcher, events::presence(1, true, at));
        }
        let reason = watcher.take(&mut Vec::new(), 1).unwrap_err();
        assert!(reason.contains("too slow"), "{reason}");
    }

    #[test]
    fn values_never_close_a_watcher() {
        let watcher = Watcher::new(WatchLimits { backlog: 8 });
        for version in 1..=100_000 {
            push(&watcher, value(1, (version % 16) as u8, version));
        }
        let taken = take_all(&watcher);
        assert!(taken.len() <= COALESCE_AFTER + 16);
    }

    #[tokio::test]
    async fn ready_wakes_on_the_first_event() {
        let watcher = Arc::new(Watcher::new(WatchLimits::default()));
        let waiting = tokio::spawn({
            let watcher = watcher.clone();
            async move { watcher.ready().await }
        });
        tokio::task::yield_now().await;
        push(&watcher, events::presence(1, true, 0));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
    }
}
