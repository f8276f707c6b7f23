//! Per-device version numbers that are never handed out twice, even across a crash (SPEC 3.10).
//!
//! A version is taken in memory and reaches the store a moment later (forward-then-commit), so a
//! crash can lose versions that a device or an app has already seen. A clean shutdown commits
//! everything and says so in the store; the next start goes on from the durable versions. A
//! start without that mark follows a crash: every device's counter then resumes at a new epoch,
//! `epoch << EPOCH_SHIFT`, above every version any earlier run handed out. The epoch counts
//! those starts and is stored before any version is handed out. `2^40` versions per device and
//! epoch keep versions below `2^53`, exact in JavaScript, for 8,191 crashes.

use crate::store::{Store, StoreError, settle};

/// The epoch's place in a version: an epoch spans `2^40` versions.
const EPOCH_SHIFT: u32 = 40;
/// The setting that says the last run ended cleanly (`1`) or is running (`0`).
const CLEAN_SHUTDOWN: &str = "clean_shutdown";
/// The setting holding the number of starts that followed a crash.
const VERSION_EPOCH: &str = "version_epoch";

/// Where device counters start in this run (the default: from the durable versions).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Floor {
    start: u64,
}

impl Floor {
    /// Reads how the last run ended, opens a new epoch if it crashed, and marks this run as
    /// running, durably, before any version is handed out. `highest` is the highest durable
    /// version of any device.
    pub async fn at_start(store: &dyn Store, highest: u64) -> Result<Self, StoreError> {
        let clean = settle(store.setting(CLEAN_SHUTDOWN)).await?;
        // A store that never held a version has nothing a crash could have lost.
        let crashed = highest > 0 && clean.as_deref() != Some("1");
        let mut start = 0;
        if crashed {
            let stored: u64 = settle(store.setting(VERSION_EPOCH))
                .await?
                .and_then(|epoch| epoch.parse().ok())
                .unwrap_or(0);
            let epoch = (stored + 1).max((highest >> EPOCH_SHIFT) + 1);
            settle(store.set_setting(VERSION_EPOCH, &epoch.to_string())).await?;
            start = epoch << EPOCH_SHIFT;
            tracing::warn!(
                epoch,
                "the last run did not shut down cleanly: versions resume at a new epoch, and \
                 devices that saw a version lost in the crash get a full resync"
            );
        }
        settle(store.set_setting(CLEAN_SHUTDOWN, "0")).await?;
        Ok(Floor { start })
    }

    /// The counter of a device whose highest durable version is `durable`.
    pub fn counter(&self, durable: u64) -> VersionCounter {
        let resumed_at = durable.max(self.start);
        VersionCounter {
            current: resumed_at,
            durable_at_start: durable,
            resumed_at,
        }
    }

    /// Marks the run as ended cleanly; call once nothing more is handed out and all is queued.
    pub async fn mark_clean(store: &dyn Store) -> Result<(), StoreError> {
        settle(store.set_setting(CLEAN_SHUTDOWN, "1")).await
    }
}

/// One device's version counter.
#[derive(Debug, Clone, Default)]
pub(super) struct VersionCounter {
    current: u64,
    /// The highest version the store held for the device at start.
    durable_at_start: u64,
    /// Where the counter resumed: versions above `durable_at_start` up to here may have been
    /// seen before a crash and are lost.
    resumed_at: u64,
}

impl VersionCounter {
    /// The counter of a device this node just claimed from the store (several nodes): it
    /// resumes at `resume_at` (or `at_least`, what this node itself handed out), and trusts
    /// what a device saw up to `durable` (see [`crate::store::Claim`]).
    pub fn claimed(durable: u64, resume_at: u64, at_least: u64) -> Self {
        let resumed_at = resume_at.max(durable);
        VersionCounter {
            current: resumed_at.max(at_least),
            durable_at_start: durable,
            resumed_at,
        }
    }

    /// Raises the counter to a version another node handed out, so that the next one is above.
    pub fn observe(&mut self, version: u64) {
        self.current = self.current.max(version);
    }

    /// Takes the next version.
    pub fn next(&mut self) -> u64 {
        self.current += 1;
        self.current
    }

    /// The last version handed out (or loaded).
    pub fn current(&self) -> u64 {
        self.current
    }

    /// Whether a device that has seen every version up to `known` holds state the server still
    /// has, so a delta resync from `known` is right: not when `known` lies among the versions a
    /// crash lost, nor when it was never handed out (SPEC 3.10, 3.11).
    pub fn trusts(&self, known: u64) -> bool {
        known <= self.durable_at_start || (known > self.resumed_at && known <= self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_start_goes_on_from_the_durable_version() {
        let mut counter = Floor { start: 0 }.counter(7);
        assert_eq!(counter.next(), 8);
        assert!(counter.trusts(7));
        assert!(counter.trusts(8));
        assert!(!counter.trusts(9), "never handed out");
    }

    #[test]
    fn after_a_crash_versions_resume_above_every_lost_one() {
        let floor = Floor {
            start: 3 << EPOCH_SHIFT,
        };
        let mut counter = floor.counter(7);
        let next = counter.next();
        assert!(next > (2 << EPOCH_SHIFT) + 1_000_000, "above the old epoch");
        assert!(counter.trusts(7), "durable: a delta is right");
        assert!(!counter.trusts(8), "lost in the crash: full resync");
        assert!(counter.trusts(next));
    }
}
