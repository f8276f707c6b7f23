//! What apps and operators read through the engine beyond the cached state: the metrics
//! scrape, a pin's history (recent values, or a time range for charts and exports), a device's
//! events; and the flush at shutdown.

use blynk_proto::Pin;

use super::{Engine, EngineError};
use crate::model::{DeviceId, EventRecord, HistoryPoint};
use crate::store::{HistoryRange, settle};

impl Engine {
    /// The metrics as a scrape shows them, with the connections and pending commands of now.
    pub fn render_metrics(&self) -> String {
        let devices = self.devices();
        let pending = devices
            .iter()
            .map(|slot| slot.lock().pending_commands.len())
            .sum();
        let online = devices.iter().filter_map(|slot| slot.protocol());
        self.metrics.render(online, self.app_watchers(), pending)
    }

    /// A page of a pin's history in a time range, oldest first: what charts and exports read.
    pub async fn history(
        &self,
        device_id: DeviceId,
        pin: Pin,
        range: HistoryRange,
    ) -> Result<Vec<HistoryPoint>, EngineError> {
        Ok(settle(self.store.history_range(device_id, pin, range)).await?)
    }

    /// The `limit` most recent values of a pin, newest first.
    pub async fn recent_history(
        &self,
        device_id: DeviceId,
        pin: Pin,
        limit: usize,
    ) -> Result<Vec<HistoryPoint>, EngineError> {
        Ok(settle(self.store.history(device_id, pin, limit)).await?)
    }

    /// The `limit` most recent events a device logged, newest first.
    pub async fn events(
        &self,
        device_id: DeviceId,
        limit: usize,
    ) -> Result<Vec<EventRecord>, EngineError> {
        Ok(settle(self.store.events(device_id, limit)).await?)
    }

    /// Waits until everything queued to the store so far is durable (at shutdown).
    pub async fn flush(&self) -> Result<(), EngineError> {
        Ok(settle(self.store.flush()).await?)
    }
}
