//! The outgoing queue: every write, property and event the firmware makes waits here until the
//! server acknowledges it, online or offline alike, in caller-sized memory.
//!
//! - **Coalesced per pin** (SPEC 3.8): a write replaces the waiting write of the same pin (the
//!   latest wins), a property the waiting one of the same pin and name; events are kept apart.
//! - **Bounded**: `SLOTS` entries whose encoded values share an arena of `BYTES` bytes. What does
//!   not fit is refused with [`QueueError::Full`] and counted, never dropped silently.
//! - **Aged**: each entry remembers when it was made. One made before the current connection
//!   (offline, or sent on a connection that dropped before its ack) is sent with its age, so the
//!   server orders it against app writes made in the meantime.
//! - **At least once**: an entry leaves the queue on its `Ack` (or `Error`); entries sent on a
//!   connection that drops are sent again on the next one.
//! - **No flicker back**: while a write of a pin waits, values of that pin from the server
//!   (sync or update) are not applied; the server either stores the write, or answers with an
//!   `Update` carrying the value that won. If a skipped value turns out newer than the stored
//!   write, the pin is synced again.
//!
//! Sync requests are kept here too, as bit sets of virtual pins, so that repeated calls merge
//! and a request cut off by a disconnection is sent again.
//!
//! Longer than 600 lines because its unit tests sit beside it: they reach the arena and the slots,
//! which the crate keeps private; the queue itself is about 520 lines.

use blynk_proto::native::lean::{self, Full, Writer};
use blynk_proto::text::BoundedStr;
use blynk_proto::{MAX_SYNC_PINS, Pin, Value};
use embassy_time::Instant;

use crate::error::QueueError;
use crate::log::pin_letter;

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A pin value: the value's wire bytes in the arena.
    Write,
    /// A widget property: the name's and the value's wire bytes.
    Property,
    /// An event: the code's and the optional description's wire bytes.
    Event,
}

/// One waiting message; its encoded body is `arena[start..start + len]`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: Kind,
    pin: Pin,
    start: u16,
    len: u16,
    made_at: Instant,
    /// The message id it was sent with on the current connection; 0 while unsent.
    sent_id: u16,
    /// When it was last sent.
    sent_at: Instant,
    /// Whether it was sent before: a repeated write always carries its age.
    repeated: bool,
    /// The newest version of this pin that arrived from the server and was not applied.
    skipped_version: Option<u64>,
}

/// Sync requests waiting to be sent, or sent and not yet complete.
#[derive(Debug, Clone, Copy)]
struct SyncRequests {
    all: bool,
    all_sent_id: u16,
    pins: [u8; 32],
    pins_sent: [u8; 32],
    pins_sent_id: u16,
}

/// The queue: `SLOTS` entries, `BYTES` bytes of encoded bodies.
pub(crate) struct Outbox<const SLOTS: usize, const BYTES: usize> {
    entries: heapless::Vec<Entry, SLOTS>,
    arena: [u8; BYTES],
    used: usize,
    overflows: u32,
    refused: u32,
    next_id: u16,
    sync: SyncRequests,
}

impl<const SLOTS: usize, const BYTES: usize> Outbox<SLOTS, BYTES> {
    const OFFSETS_FIT: () = assert!(BYTES <= u16::MAX as usize, "BYTES must fit a u16");

    pub(crate) const fn new() -> Self {
        let () = Self::OFFSETS_FIT;
        Outbox {
            entries: heapless::Vec::new(),
            arena: [0; BYTES],
            used: 0,
            overflows: 0,
            refused: 0,
            next_id: 1,
            sync: SyncRequests {
                all: false,
                all_sent_id: 0,
                pins: [0; 32],
                pins_sent: [0; 32],
                pins_sent_id: 0,
            },
        }
    }

    /// Queues a write of `pin`, replacing a waiting write of the same pin.
    pub(crate) fn write(
        &mut self,
        pin: Pin,
        value: &Value<'_>,
        now: Instant,
    ) -> Result<(), QueueError> {
        self.push(Kind::Write, pin, None, now, |w| w.value(value))
    }

    /// Queues a property, replacing a waiting one of the same pin and name.
    pub(crate) fn property(
        &mut self,
        pin: Pin,
        name: &str,
        value: &Value<'_>,
        now: Instant,
    ) -> Result<(), QueueError> {
        BoundedStr::<{ blynk_proto::MAX_NAME_LEN }>::new(name).map_err(|_| QueueError::TooLong)?;
        self.push(Kind::Property, pin, Some(name), now, |w| {
            lean::property_body(w, name, value)
        })
    }

    /// Queues an event.
    pub(crate) fn event(
        &mut self,
        code: &str,
        description: Option<&str>,
        now: Instant,
    ) -> Result<(), QueueError> {
        BoundedStr::<{ blynk_proto::MAX_NAME_LEN }>::new(code).map_err(|_| QueueError::TooLong)?;
        if let Some(text) = description {
            BoundedStr::<{ blynk_proto::MAX_TEXT_LEN }>::new(text)
                .map_err(|_| QueueError::TooLong)?;
        }
        self.push(Kind::Event, Pin::Virtual(0), None, now, |w| {
            lean::event_body(w, code, description)
        })
    }

    fn push(
        &mut self,
        kind: Kind,
        pin: Pin,
        name: Option<&str>,
        now: Instant,
        body: impl Fn(&mut Writer<'_>) -> Result<(), Full>,
    ) -> Result<(), QueueError> {
        let mut counter = Writer::counting();
        body(&mut counter).map_err(|_| QueueError::Full)?;
        let size = counter.len();
        let existing = self.find(kind, pin, name);
        let replaced = existing.and_then(|index| self.entries.get(index));
        let free_bytes = BYTES - self.used + replaced.map_or(0, |entry| usize::from(entry.len));
        let free_slots = SLOTS - self.entries.len() + usize::from(replaced.is_some());
        if size > free_bytes || free_slots == 0 {
            self.overflows = self.overflows.saturating_add(1);
            log!(
                warn,
                "outgoing queue full: message for {}{} dropped ({} dropped so far)",
                pin_letter(pin),
                pin.number(),
                self.overflows
            );
            return Err(QueueError::Full);
        }
        let skipped_version = existing
            .and_then(|index| self.remove(index))
            .and_then(|entry| entry.skipped_version);
        let start = self.used;
        let mut writer = Writer::new(self.arena.get_mut(start..).unwrap_or_default());
        body(&mut writer).map_err(|_| QueueError::Full)?;
        let len = writer.len();
        let entry = Entry {
            kind,
            pin,
            // Both fit: BYTES <= u16::MAX is asserted at compile time.
            start: start as u16,
            len: len as u16,
            made_at: now,
            sent_id: 0,
            sent_at: now,
            repeated: false,
            skipped_version,
        };
        self.entries.push(entry).map_err(|_| QueueError::Full)?;
        self.used += len;
        Ok(())
    }

    /// The entry a new message of this kind, pin and name replaces.
    fn find(&self, kind: Kind, pin: Pin, name: Option<&str>) -> Option<usize> {
        self.entries.iter().position(|entry| {
            entry.kind == kind
                && entry.pin == pin
                && match entry.kind {
                    Kind::Write => true,
                    Kind::Property => self.property_name(entry) == name,
                    Kind::Event => false,
                }
        })
    }

    fn body(&self, entry: &Entry) -> &[u8] {
        let start = usize::from(entry.start);
        self.arena
            .get(start..start + usize::from(entry.len))
            .unwrap_or_default()
    }

    fn property_name(&self, entry: &Entry) -> Option<&str> {
        lean::property_name(self.body(entry))
    }

    /// Takes an entry out and closes the gap its body left in the arena.
    fn remove(&mut self, index: usize) -> Option<Entry> {
        if index >= self.entries.len() {
            return None;
        }
        let entry = self.entries.remove(index);
        let (start, len) = (usize::from(entry.start), usize::from(entry.len));
        self.arena.copy_within(start + len..self.used, start);
        self.used -= len;
        for other in self.entries.iter_mut() {
            if other.start > entry.start {
                other.start -= entry.len;
            }
        }
        Some(entry)
    }

    /// A fresh message id, never 0 (0 marks the automatic sync).
    pub(crate) fn take_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Encodes as many unsent messages as fit into `out`; returns the bytes written. Entries
    /// made before `connected_at`, and entries sent before, carry their age. A message too
    /// large for an empty `out` is dropped and counted as refused.
    pub(crate) fn fill(&mut self, out: &mut [u8], connected_at: Instant, now: Instant) -> usize {
        let mut pos = 0;
        let mut index = 0;
        while let Some(entry) = self.entries.get(index).copied() {
            if entry.sent_id != 0 {
                index += 1;
                continue;
            }
            let id = self.next_id;
            let age_ms = (entry.made_at < connected_at || entry.repeated).then(|| {
                let age = now.saturating_duration_since(entry.made_at).as_millis();
                u32::try_from(age).unwrap_or(u32::MAX)
            });
            let room = out.get_mut(pos..).unwrap_or_default();
            match encode_entry(&entry, self.body(&entry), id, age_ms, room) {
                Ok(written) => {
                    pos += written;
                    self.take_id();
                    if let Some(sent) = self.entries.get_mut(index) {
                        sent.sent_id = id;
                        sent.sent_at = now;
                    }
                    index += 1;
                }
                Err(Full) if pos > 0 => return pos,
                Err(Full) => {
                    log!(
                        warn,
                        "message for {}{} does not fit the transmit buffer: dropped",
                        pin_letter(entry.pin),
                        entry.pin.number()
                    );
                    self.refused = self.refused.saturating_add(1);
                    self.remove(index);
                }
            }
        }
        pos + self.fill_sync(out.get_mut(pos..).unwrap_or_default())
    }

    fn fill_sync(&mut self, out: &mut [u8]) -> usize {
        let mut pos = 0;
        if self.sync.all && self.sync.all_sent_id == 0 {
            let id = self.next_id;
            let all = lean::sync_all(id, out);
            match all {
                Ok(len) => pos += len,
                Err(Full) => return 0,
            }
            self.take_id();
            self.sync.all = false;
            self.sync.all_sent_id = id;
        }
        if self.sync.pins_sent_id == 0 && self.sync.pins.iter().any(|bits| *bits != 0) {
            let mut pins = heapless::Vec::<Pin, MAX_SYNC_PINS>::new();
            let mut taken = [0u8; 32];
            // As many pins as fit the room left; the rest go in the next request.
            let room_left = out.len().saturating_sub(pos);
            let fit = (room_left.saturating_sub(lean::SYNC_REQUEST_ENVELOPE)
                / lean::SYNC_REQUEST_PIN)
                .min(MAX_SYNC_PINS);
            for number in 0..=u8::MAX {
                let (byte, bit) = (usize::from(number / 8), 1u8 << (number % 8));
                let wanted = self.sync.pins.get(byte).is_some_and(|bits| bits & bit != 0);
                if wanted {
                    if pins.len() >= fit || pins.push(Pin::Virtual(number)).is_err() {
                        break;
                    }
                    if let Some(bits) = taken.get_mut(byte) {
                        *bits |= bit;
                    }
                }
            }
            let id = self.next_id;
            let room = out.get_mut(pos..).unwrap_or_default();
            let only = if pins.is_empty() {
                Err(Full)
            } else {
                lean::sync_pins(id, &pins, room)
            };
            if let Ok(len) = only {
                pos += len;
                self.take_id();
                for (bits, sent) in self.sync.pins.iter_mut().zip(taken) {
                    *bits &= !sent;
                }
                self.sync.pins_sent = taken;
                self.sync.pins_sent_id = id;
            }
        }
        pos
    }

    /// Whether a value of `pin` from the server should be applied: not while a write of the
    /// pin waits (the server orders that write against it and tells the device the winner).
    pub(crate) fn should_apply(&mut self, pin: Pin, version: u64) -> bool {
        match self
            .entries
            .iter_mut()
            .find(|entry| entry.kind == Kind::Write && entry.pin == pin)
        {
            Some(entry) => {
                entry.skipped_version =
                    Some(entry.skipped_version.map_or(version, |v| v.max(version)));
                false
            }
            None => true,
        }
    }

    /// The server stored message `id`; `version` is the version a write got (`None` when it
    /// lost to a newer app write, in which case an `Update` with the winner follows).
    pub(crate) fn acked(&mut self, id: u16, version: Option<u64>) {
        let Some(index) = self.sent(id) else {
            return;
        };
        let Some(entry) = self.remove(index) else {
            return;
        };
        if let (Some(skipped), Some(stored)) = (entry.skipped_version, version)
            && skipped > stored
        {
            // The value skipped while the write waited is newer than the write: fetch it.
            self.request_pin(entry.pin);
        }
    }

    /// The server refused message `id`: it leaves the queue and is counted.
    pub(crate) fn refused(&mut self, id: u16) {
        let Some(index) = self.sent(id) else {
            return;
        };
        self.refused = self.refused.saturating_add(1);
        if let Some(entry) = self.remove(index)
            && entry.skipped_version.is_some()
        {
            self.request_pin(entry.pin);
        }
    }

    /// Message `id` was dropped by the server's rate limit: send it again later.
    pub(crate) fn retry(&mut self, id: u16) {
        if let Some(index) = self.sent(id)
            && let Some(entry) = self.entries.get_mut(index)
        {
            entry.sent_id = 0;
            entry.repeated = true;
        }
    }

    /// Sends again what waited longer than `patience` for its ack: a message the server
    /// dropped without a word (over its rate limit) must not hold its pin forever.
    pub(crate) fn retry_unacked(&mut self, now: Instant, patience: embassy_time::Duration) {
        for entry in self.entries.iter_mut() {
            if entry.sent_id != 0 && now.saturating_duration_since(entry.sent_at) > patience {
                entry.sent_id = 0;
                entry.repeated = true;
            }
        }
    }

    fn sent(&self, id: u16) -> Option<usize> {
        if id == 0 {
            return None;
        }
        self.entries.iter().position(|entry| entry.sent_id == id)
    }

    /// The connection dropped: everything sent and not acknowledged is sent again on the next.
    pub(crate) fn connection_lost(&mut self) {
        for entry in self.entries.iter_mut() {
            if entry.sent_id != 0 {
                entry.sent_id = 0;
                entry.repeated = true;
            }
        }
        let sync = &mut self.sync;
        if sync.all_sent_id != 0 {
            sync.all = true;
            sync.all_sent_id = 0;
        }
        for (bits, sent) in sync.pins.iter_mut().zip(sync.pins_sent) {
            *bits |= sent;
        }
        sync.pins_sent = [0; 32];
        sync.pins_sent_id = 0;
    }

    /// Asks for every datastream flagged `sync`.
    pub(crate) fn request_all(&mut self) {
        self.sync.all = true;
    }

    /// Asks for one pin; only virtual pins can be asked for.
    pub(crate) fn request_pin(&mut self, pin: Pin) {
        if let Pin::Virtual(number) = pin
            && let Some(bits) = self.sync.pins.get_mut(usize::from(number / 8))
        {
            *bits |= 1 << (number % 8);
        }
    }

    /// A sync finished.
    pub(crate) fn sync_complete(&mut self, id: u16) {
        if id == 0 {
            return;
        }
        if id == self.sync.all_sent_id {
            self.sync.all_sent_id = 0;
        }
        if id == self.sync.pins_sent_id {
            self.sync.pins_sent = [0; 32];
            self.sync.pins_sent_id = 0;
        }
    }

    /// Messages refused because the queue was full.
    pub(crate) fn overflows(&self) -> u32 {
        self.overflows
    }

    /// Messages the server refused, or too large for the transmit buffer.
    pub(crate) fn refused_count(&self) -> u32 {
        self.refused
    }

    /// Messages waiting (unsent, or sent and not yet acknowledged).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether anything waits to be sent on the current connection.
    pub(crate) fn has_unsent(&self) -> bool {
        self.entries.iter().any(|entry| entry.sent_id == 0)
            || (self.sync.all && self.sync.all_sent_id == 0)
            || (self.sync.pins_sent_id == 0 && self.sync.pins.iter().any(|bits| *bits != 0))
    }
}

/// Builds the frame of one entry from its stored wire bytes.
fn encode_entry(
    entry: &Entry,
    body: &[u8],
    id: u16,
    age_ms: Option<u32>,
    out: &mut [u8],
) -> Result<usize, Full> {
    match entry.kind {
        Kind::Write => lean::write(id, entry.pin, body, age_ms, out),
        Kind::Property => lean::property(id, entry.pin, body, out),
        Kind::Event => lean::event(id, body, out),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use blynk_proto::native::{Decoded, Message, SyncPins, decode};

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// Queues a write of `int` to virtual pin `pin`, made at `ms`.
    fn write_int<const S: usize, const B: usize>(
        outbox: &mut Outbox<S, B>,
        pin: u8,
        int: i64,
        ms: u64,
    ) {
        outbox
            .write(Pin::Virtual(pin), &Value::int(int), at(ms))
            .unwrap();
    }

    /// Decodes every frame of `bytes`, calling `each` with the message.
    fn frames(mut bytes: &[u8], mut each: impl FnMut(Message<'_>)) {
        while !bytes.is_empty() {
            let Ok(Decoded::Frame { message, consumed }) = decode(bytes) else {
                panic!("not a frame");
            };
            each(message);
            bytes = &bytes[consumed..];
        }
    }

    fn sent_writes<const S: usize, const B: usize>(
        outbox: &mut Outbox<S, B>,
        connected_at: u64,
        now: u64,
    ) -> Vec<(u16, Pin, i64, Option<u32>)> {
        let mut out = [0u8; 512];
        let len = outbox.fill(&mut out, at(connected_at), at(now));
        let mut writes = Vec::new();
        frames(&out[..len], |message| {
            if let Message::Write(write) = message {
                let blynk_proto::Scalar::Int(int) = write.value.parts()[0] else {
                    panic!("not an int");
                };
                writes.push((write.id, write.pin, int, write.age_ms));
            }
        });
        writes
    }

    #[test]
    fn spec_3_8_writes_coalesce_per_pin_latest_wins_with_their_age() {
        let mut outbox = Outbox::<4, 64>::new();
        write_int(&mut outbox, 1, 1, 100);
        write_int(&mut outbox, 2, 7, 150);
        write_int(&mut outbox, 1, 2, 200);
        assert_eq!(outbox.len(), 2);
        // Connected at 1000, sent at 1500: both were made offline and carry their age.
        let writes = sent_writes(&mut outbox, 1000, 1500);
        assert_eq!(
            writes.iter().map(|w| (w.1, w.2, w.3)).collect::<Vec<_>>(),
            [
                (Pin::Virtual(2), 7, Some(1350)),
                (Pin::Virtual(1), 2, Some(1300))
            ]
        );
        // Nothing is sent twice on one connection; acks empty the queue.
        assert!(sent_writes(&mut outbox, 1000, 1600).is_empty());
        for (id, ..) in writes {
            outbox.acked(id, Some(9));
        }
        assert_eq!(outbox.len(), 0);
        assert_eq!(outbox.used, 0);
    }

    #[test]
    fn online_writes_have_no_age_and_unacked_ones_are_resent_after_a_drop() {
        let mut outbox = Outbox::<4, 64>::new();
        write_int(&mut outbox, 1, 1, 2000);
        let first = sent_writes(&mut outbox, 1000, 2000);
        assert_eq!(first[0].3, None);
        outbox.connection_lost();
        let again = sent_writes(&mut outbox, 5000, 5000);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].3, Some(3000));
        // The ack of the first send is for an id no longer waiting: ignored.
        outbox.acked(first[0].0, Some(3));
        assert_eq!(outbox.len(), 1);
    }

    #[test]
    fn overflow_is_refused_and_counted() {
        let mut outbox = Outbox::<2, 64>::new();
        write_int(&mut outbox, 1, 1, 0);
        write_int(&mut outbox, 2, 1, 0);
        assert_eq!(
            outbox.write(Pin::Virtual(3), &Value::int(1), at(0)),
            Err(QueueError::Full)
        );
        // Replacing a waiting pin still works when full.
        write_int(&mut outbox, 2, 5, 0);
        assert_eq!(outbox.overflows(), 1);
        let mut small = Outbox::<8, 16>::new();
        let long = "x".repeat(40);
        assert_eq!(
            small.write(Pin::Virtual(1), &Value::text(&long).unwrap(), at(0)),
            Err(QueueError::Full)
        );
        assert_eq!(small.overflows(), 1);
    }

    #[test]
    fn values_of_a_pin_with_a_waiting_write_are_held_back() {
        let mut outbox = Outbox::<4, 64>::new();
        write_int(&mut outbox, 1, 1, 0);
        assert!(!outbox.should_apply(Pin::Virtual(1), 12));
        assert!(outbox.should_apply(Pin::Virtual(2), 13));
        let writes = sent_writes(&mut outbox, 0, 0);
        // The write was stored as version 10, older than the skipped 12: sync V1 again.
        outbox.acked(writes[0].0, Some(10));
        let mut out = [0u8; 64];
        let len = outbox.fill(&mut out, at(0), at(0));
        let mut asked = None;
        frames(&out[..len], |message| {
            if let Message::SyncRequest(request) = message {
                asked = Some(request.pins);
            }
        });
        let mut only = heapless::Vec::new();
        only.push(Pin::Virtual(1)).unwrap();
        assert_eq!(asked, Some(SyncPins::Only(only)));
        assert!(outbox.should_apply(Pin::Virtual(1), 14));
    }

    #[test]
    fn properties_coalesce_by_pin_and_name_events_do_not() {
        let mut outbox = Outbox::<8, 256>::new();
        for (name, text) in [
            ("color", "#FF0000"),
            ("label", "Lamp"),
            ("color", "#00FF00"),
        ] {
            let value = Value::text(text).unwrap();
            outbox
                .property(Pin::Virtual(1), name, &value, at(0))
                .unwrap();
        }
        outbox.event("overheat", Some("too hot"), at(0)).unwrap();
        outbox.event("overheat", None, at(0)).unwrap();
        assert_eq!(outbox.len(), 4);
        let mut out = [0u8; 256];
        let len = outbox.fill(&mut out, at(0), at(0));
        let mut names = Vec::new();
        frames(&out[..len], |message| match message {
            Message::Property(p) => names.push(std::format!("{}={}", p.name, p.value)),
            Message::Event(e) => names.push(std::format!("event {}", e.code)),
            _ => {}
        });
        assert_eq!(
            names,
            [
                "label=Lamp",
                "color=#00FF00",
                "event overheat",
                "event overheat"
            ]
        );
        assert_eq!(
            outbox.event(&"x".repeat(65), None, at(0)),
            Err(QueueError::TooLong)
        );
    }

    #[test]
    fn a_sync_of_many_pins_is_split_to_fit_a_small_buffer() {
        let mut outbox = Outbox::<2, 32>::new();
        for pin in 0..40 {
            outbox.request_pin(Pin::Virtual(pin));
        }
        let mut asked = Vec::new();
        let mut out = [0u8; 40];
        for _ in 0..10 {
            let len = outbox.fill(&mut out, at(0), at(0));
            frames(&out[..len], |message| {
                if let Message::SyncRequest(request) = message {
                    let SyncPins::Only(pins) = request.pins else {
                        panic!("not Only");
                    };
                    asked.extend(pins.iter().map(|pin| pin.number()));
                    outbox.sync_complete(request.id);
                }
            });
        }
        assert_eq!(asked, (0..40).collect::<Vec<u8>>());
        assert!(!outbox.has_unsent());
    }

    #[test]
    fn sync_requests_merge_and_survive_a_drop() {
        let mut outbox = Outbox::<2, 32>::new();
        outbox.request_pin(Pin::Virtual(3));
        outbox.request_pin(Pin::Virtual(1));
        outbox.request_all();
        let mut out = [0u8; 128];
        let len = outbox.fill(&mut out, at(0), at(0));
        let mut requests = Vec::new();
        frames(&out[..len], |message| {
            if let Message::SyncRequest(request) = message {
                requests.push(request);
            }
        });
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].pins, SyncPins::All);
        assert!(!outbox.has_unsent());
        outbox.connection_lost();
        assert!(outbox.has_unsent());
        let len = outbox.fill(&mut out, at(0), at(0));
        let mut ids = Vec::new();
        frames(&out[..len], |message| {
            if let Message::SyncRequest(request) = message {
                ids.push(request.id);
            }
        });
        for id in ids {
            outbox.sync_complete(id);
        }
        outbox.connection_lost();
        assert!(!outbox.has_unsent());
    }
}
