//! What operators read through the engine: the metrics scrape, and a pin's history in a time
//! range (charts, exports).

use blynk_proto::Pin;

use super::Engine;
use crate::model::{DeviceId, HistoryPoint};
use crate::store::{HistoryRange, StoreError, settle};

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
    ) -> Result<Vec<HistoryPoint>, StoreError> {
        settle(self.store.history_range(device_id, pin, range)).await
    }
}
