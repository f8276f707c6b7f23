//! History retention, applied off the write path and shared by every backend: the writer runs
//! small trimming steps between its batches, each its own short transaction that deletes a
//! bounded number of rows, so a write never waits behind a large delete. This module decides
//! which pins are due and how far the sweep got; a backend only supplies the two queries
//! ([`TrimQueries`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use blynk_proto::Pin;

use crate::model::DeviceId;

/// How much history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Values kept per pin, newest first; 0 keeps any number.
    pub per_pin: u32,
    /// Values older than this are removed; `None` keeps them whatever their age.
    pub max_age: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            per_pin: 1000,
            max_age: None,
        }
    }
}

/// Most history rows one step deletes.
pub(crate) const ROWS_PER_STEP: u64 = 1000;
/// Most pins one step examines.
const PINS_PER_STEP: usize = 16;
/// Pause between two steps while there is work left.
const STEP_EVERY: Duration = Duration::from_millis(10);
/// A sweep over every pin (for the age rule, and pins not written since the start) starts this
/// long after the previous one started.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// The first sweep waits this long after opening, so that short-lived processes (the
/// command line) and start-up do not pay for it.
const FIRST_SWEEP_AFTER: Duration = Duration::from_secs(10);

/// The two queries a backend runs for a trimming step, inside the step's transaction.
pub(crate) trait TrimQueries {
    /// The backend's error.
    type Error;
    /// The first pin with history after `after` in (device, pin name) order.
    async fn next_pin_after(
        &mut self,
        after: &(DeviceId, String),
    ) -> Result<Option<(DeviceId, String)>, Self::Error>;
    /// Deletes at most `budget` of the pin's oldest rows that break a rule of `retention`
    /// (`cutoff_ms`: rows set before it break the age rule, if it is on); returns how many.
    async fn trim_pin(
        &mut self,
        device_id: DeviceId,
        pin: &str,
        retention: &Retention,
        cutoff_ms: Option<i64>,
        budget: u64,
    ) -> Result<u64, Self::Error>;
}

/// Where trimming stands: which pins are due and how far the sweep got.
pub(crate) struct Trimmer {
    retention: Retention,
    /// Inserts per pin since it was last trimmed.
    inserts: HashMap<(DeviceId, Pin), u32>,
    /// Pins with enough inserts to be worth trimming now.
    due: HashSet<(DeviceId, Pin)>,
    /// The last pin the running sweep trimmed; `None` when no sweep runs.
    sweep: Option<(DeviceId, String)>,
    next_sweep_at: Instant,
    next_step_at: Instant,
}

impl Trimmer {
    pub(crate) fn new(retention: Retention) -> Self {
        let now = Instant::now();
        Trimmer {
            retention,
            inserts: HashMap::new(),
            due: HashSet::new(),
            sweep: None,
            next_sweep_at: now + FIRST_SWEEP_AFTER,
            next_step_at: now,
        }
    }

    /// Whether any rule is on.
    fn enabled(&self) -> bool {
        self.retention.per_pin > 0 || self.retention.max_age.is_some()
    }

    /// Counts a history insert; a pin becomes due once its inserts reach a tenth of the count
    /// limit, so it never holds more than 10% over it for long.
    pub(crate) fn inserted(&mut self, device_id: DeviceId, pin: Pin) {
        if self.retention.per_pin == 0 {
            return;
        }
        let every = (self.retention.per_pin / 10).max(1);
        let inserts = self.inserts.entry((device_id, pin)).or_default();
        *inserts += 1;
        if *inserts >= every {
            self.inserts.remove(&(device_id, pin));
            self.due.insert((device_id, pin));
        }
    }

    /// Forgets what is known of a deleted device.
    pub(crate) fn forget(&mut self, device_id: DeviceId) {
        self.inserts.retain(|(device, _), _| *device != device_id);
        self.due.retain(|(device, _)| *device != device_id);
    }

    /// How long until a step is due, if any work is waiting or planned.
    pub(crate) fn next_step_in(&self, now: Instant) -> Option<Duration> {
        if !self.enabled() {
            return None;
        }
        let at = if self.has_work(now) {
            self.next_step_at
        } else {
            self.next_sweep_at
        };
        Some(at.saturating_duration_since(now))
    }

    fn has_work(&self, now: Instant) -> bool {
        !self.due.is_empty() || self.sweep.is_some() || now >= self.next_sweep_at
    }

    /// Whether a step should run now.
    pub(crate) fn step_due(&self, now: Instant) -> bool {
        self.enabled() && self.has_work(now) && now >= self.next_step_at
    }

    /// Starts a sweep over every pin now (from the first, even if one is running).
    pub(crate) fn start_sweep(&mut self) {
        let now = Instant::now();
        self.sweep = Some((DeviceId::MIN, String::new()));
        self.next_sweep_at = now + SWEEP_EVERY;
        self.next_step_at = now;
    }

    /// Whether work is left (a sweep running or pins due).
    pub(crate) fn busy(&self) -> bool {
        self.enabled() && self.has_work(Instant::now())
    }

    /// Puts the next step off (a step failed because the database is away).
    pub(crate) fn retry_later(&mut self, wait: Duration) {
        self.next_step_at = Instant::now() + wait;
    }

    /// Marks the start of a step (the caller opens its transaction next).
    pub(crate) fn begin_step(&mut self) {
        let now = Instant::now();
        if self.sweep.is_none() && now >= self.next_sweep_at {
            self.start_sweep();
        }
        self.next_step_at = now + STEP_EVERY;
    }

    /// The work of one step, inside the transaction the caller opened after
    /// [`begin_step`](Self::begin_step): at most [`PINS_PER_STEP`] pins examined and
    /// [`ROWS_PER_STEP`] rows deleted, due pins first, then the sweep. Returns the rows
    /// deleted.
    pub(crate) async fn trim_some<Q: TrimQueries>(
        &mut self,
        queries: &mut Q,
        now_ms: i64,
    ) -> Result<u64, Q::Error> {
        let retention = self.retention;
        let cutoff_ms = retention.max_age.map(|max_age| {
            now_ms.saturating_sub(i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX))
        });
        let mut budget = ROWS_PER_STEP;
        let mut pins = 0;
        while budget > 0 && pins < PINS_PER_STEP {
            let Some(&(device_id, pin)) = self.due.iter().next() else {
                break;
            };
            pins += 1;
            let deleted = queries
                .trim_pin(device_id, &pin.to_string(), &retention, cutoff_ms, budget)
                .await?;
            budget -= deleted;
            if budget > 0 {
                // Otherwise rows may be left: the pin stays due.
                self.due.remove(&(device_id, pin));
            }
        }
        while budget > 0 && pins < PINS_PER_STEP {
            let Some(after) = &self.sweep else {
                break;
            };
            let Some((device_id, pin)) = queries.next_pin_after(after).await? else {
                self.sweep = None;
                break;
            };
            pins += 1;
            let deleted = queries
                .trim_pin(device_id, &pin, &retention, cutoff_ms, budget)
                .await?;
            budget -= deleted;
            if budget > 0 {
                // Done with this pin; otherwise the next step starts on it again.
                self.sweep = Some((device_id, pin));
            }
        }
        Ok(ROWS_PER_STEP - budget)
    }
}
