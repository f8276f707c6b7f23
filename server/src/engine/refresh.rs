//! Templates and devices created in the store by another process: the `device add` command
//! beside a running server (polled every two seconds), or another node (told over the bus).

use std::sync::Arc;

use super::{DeviceSlot, Engine, events, read_lock, write_lock};
use crate::store::settle;

impl Engine {
    /// Picks up templates and devices that another process (the `device add` command) created
    /// in the store, every two seconds until `shutdown` fires. With a bus, the other nodes say
    /// when they create one instead, and this loop is not run.
    pub async fn run_refresh(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            self.pick_up_created().await;
        }
    }

    /// A device by id or by name ([`Engine::find_device`]); with a bus, one this node does not
    /// know yet is looked for in the store too: a device another node created a moment ago is
    /// found before the bus tells this node, so an app that creates a device through one node
    /// can use it through another at once.
    pub async fn find_device_anywhere(&self, key: &str) -> Option<Arc<DeviceSlot>> {
        if let Some(slot) = self.find_device(key) {
            return Some(slot);
        }
        self.look_in_store().await?;
        self.find_device(key)
    }

    /// Before a device login is checked: with a bus, a token this node does not know yet makes
    /// it look in the store, so a device created through another node a moment ago can log in
    /// here before the bus announcement arrives.
    pub async fn learn_token(&self, token: &str) {
        if self.authenticate(token).is_none() {
            self.look_in_store().await;
        }
    }

    /// Picks up what the store holds and this node does not, one look at a time; `None`
    /// without a bus (one process: nothing is created elsewhere but by the command line).
    async fn look_in_store(&self) -> Option<()> {
        let cluster = self.cluster.get()?;
        let _one_at_a_time = cluster.store_look.lock().await;
        self.pick_up_created().await;
        Some(())
    }

    /// Indexes the templates and devices the store holds and this engine does not.
    pub(super) async fn pick_up_created(&self) {
        let newest_template = read_lock(&self.templates)
            .keys()
            .copied()
            .max()
            .unwrap_or(0);
        let newest_device = read_lock(&self.devices).keys().copied().max().unwrap_or(0);
        let Ok((templates, devices)) =
            settle(self.store.created_since(newest_template, newest_device)).await
        else {
            return;
        };
        for template in templates {
            write_lock(&self.templates)
                .entry(template.id)
                .or_insert_with(|| Arc::new(template));
        }
        for device in devices {
            let template = read_lock(&self.templates).get(&device.template_id).cloned();
            if let Some(template) = template
                && self.device(device.id).is_none()
            {
                let (id, name) = (device.id, device.name.clone());
                if self
                    .index(Arc::new(DeviceSlot::new(
                        device,
                        template,
                        self.floor.counter(0),
                    )))
                    .1
                {
                    tracing::info!(device = id, %name, "device added by another process");
                    let _ = self.global.send(events::device_changed(id, true));
                }
            }
        }
    }
}
