//! Which stored values a sync returns (SPEC 3.3 to 3.6, 3.11, 3.12).

use std::sync::Arc;

use blynk_proto::Pin;

use super::{DeviceSlot, DeviceState, Engine};
use crate::model::OwnedValue;

/// What a device asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncSelection {
    /// `sync_all()`: every datastream flagged `sync`.
    All,
    /// `sync_virtual(..)`: these pins, flagged `sync` or not.
    Pins(Vec<Pin>),
    /// The automatic sync after a native login: like `All`, but only what changed after
    /// `known_version` when the device kept its state (delta resync, SPEC 3.11).
    Reconnect {
        /// The highest version the device has seen, if it kept its state.
        known_version: Option<u64>,
    },
}

/// One value a sync returns.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncItem {
    /// The pin.
    pub pin: Pin,
    /// The stored value, or the datastream's default.
    pub value: Arc<OwnedValue>,
    /// The stored version; 0 for a default.
    pub version: u64,
}

impl Engine {
    /// The values a sync of `selection` returns, in template order (listed order for pins).
    pub fn sync_items(&self, slot: &DeviceSlot, selection: &SyncSelection) -> Vec<SyncItem> {
        let state = slot.lock();
        select(slot, &state, selection)
    }
}

/// The selection rules. Commands are never returned; a datastream with neither a stored value
/// nor a default returns nothing; a default is only sent in a full sync.
pub(super) fn select(
    slot: &DeviceSlot,
    state: &DeviceState,
    selection: &SyncSelection,
) -> Vec<SyncItem> {
    let item = |pin: Pin, with_default: bool, newer_than: Option<u64>| -> Option<SyncItem> {
        let datastream = slot.template.datastream(pin)?;
        if datastream.is_command() {
            return None;
        }
        match state.values.get(&pin) {
            Some(stored) if newer_than.is_none_or(|known| stored.version > known) => {
                Some(SyncItem {
                    pin,
                    value: stored.value.clone(),
                    version: stored.version,
                })
            }
            Some(_) => None,
            None if with_default => datastream.default.clone().map(|value| SyncItem {
                pin,
                value: Arc::new(value),
                version: 0,
            }),
            None => None,
        }
    };
    // A device that saw versions a crash lost, or that were never handed out here, holds state
    // the server does not: it gets everything, as after a reset (SPEC 3.10).
    let selection = match selection {
        SyncSelection::Reconnect {
            known_version: Some(known),
        } if !state.versions.trusts(*known) => {
            tracing::info!(
                device = slot.device.id,
                known,
                "device presented a version the server does not hold: full resync"
            );
            &SyncSelection::Reconnect {
                known_version: None,
            }
        }
        other => other,
    };
    let synced_pins = || {
        slot.template
            .datastreams
            .iter()
            .filter(|d| d.sync)
            .map(|d| d.pin)
    };
    match selection {
        SyncSelection::All => synced_pins()
            .filter_map(|pin| item(pin, true, None))
            .collect(),
        SyncSelection::Reconnect {
            known_version: None,
        } => synced_pins()
            .filter_map(|pin| item(pin, true, None))
            .collect(),
        SyncSelection::Reconnect {
            known_version: Some(known),
        } => synced_pins()
            .filter_map(|pin| item(pin, false, Some(*known)))
            .collect(),
        SyncSelection::Pins(pins) => {
            let mut seen = Vec::with_capacity(pins.len());
            pins.iter()
                .filter(|pin| {
                    let first = !seen.contains(*pin);
                    seen.push(**pin);
                    first
                })
                .filter_map(|pin| item(*pin, true, None))
                .collect()
        }
    }
}
