//! The state-sync engine: the cache of every device's state in front of the durable store, the
//! registry of live device sessions, and the rules of SPEC section 3.
//!
//! Every change goes the same way: validate against the datastream, then, under the device's
//! lock and in one step, take a new per-device version, queue the change to the store (in
//! version order), forward it to the other side (the device session for an app write) and
//! publish it to the watching apps; the writer's acknowledgement waits until it is durable.
//! Sessions and the HTTP/app APIs only call this module; none of them touches the store, and
//! every refusal or failure reaches them as an [`EngineError`].

mod bus;
mod cluster;
mod delivery;
mod error;
pub mod events;
mod inbound;
mod membership;
mod operator_reads;
mod refresh;
mod remote;
mod routing;
mod sessions;
mod settings;
mod sync;
mod versions;
pub mod watch;
mod writes;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use blynk_proto::Pin;

pub use cluster::{BusError, BusSettings, announce_added};
pub use delivery::{Delivery, DeliveryReport, Outbound, OutboundQueue, Protocol};
pub use error::{EngineError, ErrorKind};
pub use sessions::Attached;
pub use settings::Settings;
pub use sync::{SyncItem, SyncSelection};
pub use writes::{AppWrite, DeviceWriteOutcome};

use crate::clock::Clock;
use crate::model::{
    DatastreamDef, Device, DeviceId, EventRecord, PendingCommand, PropertyRecord, StoredValue,
    Template, TemplateId, now_ms,
};
use crate::store::{Store, settle};
pub use crate::token::constant_time_eq;
use events::AppEvent;
use watch::{Watcher, WatcherList};

/// One device: its fixed description, its template, and its mutable state.
pub struct DeviceSlot {
    /// The device record.
    pub device: Device,
    /// Its template.
    pub template: Arc<Template>,
    state: Mutex<DeviceState>,
    /// The apps watching the device; an empty list when none does.
    watchers: WatcherList,
}

/// The mutable state of one device, guarded by its slot's lock (never held across an await).
#[derive(Default)]
struct DeviceState {
    values: HashMap<Pin, StoredValue>,
    properties: Vec<PropertyRecord>,
    /// The device's version counter and which versions a crash may have lost.
    versions: versions::VersionCounter,
    session: Option<delivery::SessionLink>,
    last_seen: Option<i64>,
    pending_commands: Vec<PendingCommand>,
    waiters: delivery::Waiters,
    deleted: bool,
    /// With a bus: which other node holds the session, and the rest (see `membership.rs`).
    cluster: Option<Box<membership::ClusterState>>,
}

impl DeviceState {
    /// Takes the device's next version.
    fn next_version(&mut self) -> u64 {
        self.versions.next()
    }
}

impl DeviceSlot {
    fn new(device: Device, template: Arc<Template>, versions: versions::VersionCounter) -> Self {
        DeviceSlot {
            device,
            template,
            state: Mutex::new(DeviceState {
                versions,
                ..DeviceState::default()
            }),
            watchers: WatcherList::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DeviceState> {
        // A panic while holding the lock cannot leave the state half-written in a way that
        // matters more than losing the device, so a poisoned lock is taken over.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a session is attached.
    pub fn is_online(&self) -> bool {
        self.lock().is_online()
    }

    /// The datastream bound to `pin`, or the error for a pin the template does not bind.
    pub fn datastream(&self, pin: Pin) -> Result<&DatastreamDef, EngineError> {
        self.template
            .datastream(pin)
            .ok_or(EngineError::UnknownPin(pin))
    }

    /// The protocol of the connected session, if any.
    pub fn protocol(&self) -> Option<Protocol> {
        self.lock().session.as_ref().map(|session| session.protocol)
    }

    /// When the device was last connected (now, when it is).
    pub fn last_seen(&self) -> Option<i64> {
        let state = self.lock();
        if state.is_online() {
            Some(now_ms())
        } else {
            state.last_seen
        }
    }

    /// The latest value of every pin.
    pub fn values(&self) -> Vec<(Pin, StoredValue)> {
        let mut values: Vec<_> = self
            .lock()
            .values
            .iter()
            .map(|(pin, stored)| (*pin, stored.clone()))
            .collect();
        values.sort_by_key(|(pin, _)| *pin);
        values
    }

    /// The latest value of one pin.
    pub fn value(&self, pin: Pin) -> Option<StoredValue> {
        self.lock().values.get(&pin).cloned()
    }

    /// Every property set by the device.
    pub fn properties(&self) -> Vec<PropertyRecord> {
        self.lock().properties.clone()
    }

    /// The highest value version of the device.
    pub fn version(&self) -> u64 {
        self.lock().versions.current()
    }

    /// Registers `watcher` for this device's events; false if it was already. A snapshot read
    /// afterwards misses no change: a change published after this returns is queued for the
    /// watcher (one published before may be queued too; its version tells it apart).
    pub fn watch(self: &Arc<Self>, watcher: &Watcher) -> bool {
        if !watcher.remember(self) {
            return false;
        }
        // Under the device's lock, which publication holds, so no event is half-seen.
        let _state = self.lock();
        self.watchers.add(watcher.shared());
        true
    }

    /// Queues an event for every watcher of the device, without waiting. Called under the
    /// device's lock, so watchers get a device's events in version order.
    fn publish(&self, event: AppEvent) {
        // No watcher is not an error.
        self.watchers.send(event);
    }
}

/// The engine; share it as `Arc<Engine>`.
pub struct Engine {
    store: Arc<dyn Store>,
    templates: RwLock<HashMap<TemplateId, Arc<Template>>>,
    devices: RwLock<HashMap<DeviceId, Arc<DeviceSlot>>>,
    by_token: RwLock<HashMap<u64, Vec<Arc<DeviceSlot>>>>,
    token_hasher: RandomState,
    /// The apps, for events about every device (presence, devices added and removed).
    global: Arc<WatcherList>,
    next_session: AtomicU64,
    with_pending_commands: Mutex<HashSet<DeviceId>>,
    /// Set by [`Engine::close`]: no version is handed out any more.
    closing: AtomicBool,
    /// Where versions start after a crash (see `versions.rs`).
    floor: versions::Floor,
    metrics: crate::metrics::Metrics,
    /// The bus to the other nodes, if any (set once, by [`Engine::join_bus`]).
    cluster: OnceLock<Arc<membership::Cluster>>,
    /// The time of records, presence and command TTLs, and of the sessions' timers.
    clock: Clock,
}

impl Engine {
    /// Loads the store's state into a new engine that serves: it marks the run as started in
    /// the store (see `versions.rs`), so call [`Engine::close`] at a clean shutdown.
    pub async fn open(store: Arc<dyn Store>) -> Result<Arc<Self>, EngineError> {
        Self::load(store, true, Clock::system()).await
    }

    /// Like [`Engine::open`], on `clock` (tests pass one they move forward).
    pub async fn open_with_clock(
        store: Arc<dyn Store>,
        clock: Clock,
    ) -> Result<Arc<Self>, EngineError> {
        Self::load(store, true, clock).await
    }

    /// Loads the store's state for a command-line tool that manages devices and templates
    /// beside a running server: it takes no writes of values and leaves the run mark alone.
    pub async fn open_for_tools(store: Arc<dyn Store>) -> Result<Arc<Self>, EngineError> {
        Self::load(store, false, Clock::system()).await
    }

    async fn load(
        store: Arc<dyn Store>,
        serving: bool,
        clock: Clock,
    ) -> Result<Arc<Self>, EngineError> {
        let snapshot = settle(store.load()).await?;
        let highest = snapshot
            .versions
            .iter()
            .map(|(_, version)| *version)
            .max()
            .unwrap_or(0);
        let floor = if serving {
            versions::Floor::at_start(store.as_ref(), highest).await?
        } else {
            versions::Floor::default()
        };
        let engine = Engine {
            store: store.clone(),
            templates: RwLock::default(),
            devices: RwLock::default(),
            by_token: RwLock::default(),
            token_hasher: RandomState::new(),
            global: Arc::default(),
            next_session: AtomicU64::new(1),
            with_pending_commands: Mutex::default(),
            closing: AtomicBool::new(!serving),
            floor,
            metrics: crate::metrics::Metrics::new(store.metrics()),
            cluster: OnceLock::new(),
            clock,
        };
        for template in snapshot.templates {
            write_lock(&engine.templates).insert(template.id, Arc::new(template));
        }
        for device in snapshot.devices {
            let Some(template) = read_lock(&engine.templates)
                .get(&device.template_id)
                .cloned()
            else {
                tracing::error!(device = device.id, "device of an unknown template skipped");
                continue;
            };
            let last_seen = device.last_seen;
            let slot = Arc::new(DeviceSlot::new(device, template, engine.floor.counter(0)));
            slot.lock().last_seen = last_seen;
            engine.index(slot);
        }
        let devices = read_lock(&engine.devices).clone();
        for (device_id, pin, stored) in snapshot.values {
            if let Some(slot) = devices.get(&device_id) {
                slot.lock().values.insert(pin, stored);
            }
        }
        for (device_id, property) in snapshot.properties {
            if let Some(slot) = devices.get(&device_id) {
                slot.lock().properties.push(property);
            }
        }
        for (device_id, version) in snapshot.versions {
            if let Some(slot) = devices.get(&device_id) {
                slot.lock().versions = engine.floor.counter(version);
            }
        }
        for command in snapshot.pending_commands {
            if let Some(slot) = devices.get(&command.device_id) {
                lock(&engine.with_pending_commands).insert(command.device_id);
                // The latest command of a pin wins, also over ones a store kept from before.
                let pending = &mut slot.lock().pending_commands;
                match pending.iter_mut().find(|other| other.pin == command.pin) {
                    Some(other) if other.version < command.version => {
                        drop(engine.store.remove_pending_command(other.id));
                        *other = command;
                    }
                    Some(_) => drop(engine.store.remove_pending_command(command.id)),
                    None => pending.push(command),
                }
            }
        }
        Ok(Arc::new(engine))
    }

    /// Refuses a new version when the device was deleted or the engine is closing.
    fn check_open(&self, state: &DeviceState) -> Result<(), EngineError> {
        if state.deleted {
            return Err(EngineError::deleted());
        }
        if self.closing.load(Ordering::SeqCst) {
            return Err(EngineError::shutting_down());
        }
        Ok(())
    }

    /// Stops handing out versions, then marks the run as ended cleanly in the store, after
    /// everything already queued: the next start then goes on from the durable versions
    /// instead of opening a new epoch (see `versions.rs`).
    pub async fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        // A write that saw the engine open holds its device's lock until its change is queued:
        // taking every lock once means all of them are queued before the mark.
        for slot in self.devices() {
            drop(slot.lock());
        }
        if let Err(error) = versions::Floor::mark_clean(self.store.as_ref()).await {
            tracing::error!(%error, "could not mark the shutdown as clean");
        }
    }

    /// The clock of records and timers, which the sessions share.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    fn token_key(&self, token: &str) -> u64 {
        self.token_hasher.hash_one(token)
    }

    /// Takes a device out of the index, marked deleted, its session closed; `None`: not there.
    fn unindex(&self, id: DeviceId) -> Option<Arc<DeviceSlot>> {
        let slot = write_lock(&self.devices).remove(&id)?;
        let key = self.token_key(&slot.device.token);
        if let Some(candidates) = write_lock(&self.by_token).get_mut(&key) {
            candidates.retain(|candidate| candidate.device.id != id);
        }
        {
            let mut state = slot.lock();
            state.deleted = true;
            if let Some(session) = &state.session {
                session.close();
            }
        }
        Some(slot)
    }

    /// Indexes a device's slot, unless the device is indexed already: a device created here can
    /// also be picked up by [`Engine::run_refresh`] between its commit and this call, and two
    /// slots of one device would split its sessions from its watchers. Returns the one slot of
    /// the device, and whether it is the one given.
    fn index(&self, slot: Arc<DeviceSlot>) -> (Arc<DeviceSlot>, bool) {
        // Lock order: `devices`, then `by_token`.
        let mut devices = write_lock(&self.devices);
        if let Some(existing) = devices.get(&slot.device.id) {
            return (existing.clone(), false);
        }
        devices.insert(slot.device.id, slot.clone());
        let key = self.token_key(&slot.device.token);
        write_lock(&self.by_token)
            .entry(key)
            .or_default()
            .push(slot.clone());
        (slot, true)
    }

    /// The device whose token is `token`. The lookup goes through a keyed hash and the final
    /// comparison takes the same time whatever the bytes, so response times leak nothing of
    /// other devices' tokens.
    pub fn authenticate(&self, token: &str) -> Option<Arc<DeviceSlot>> {
        let candidates = read_lock(&self.by_token)
            .get(&self.token_key(token))
            .cloned()?;
        candidates
            .into_iter()
            .find(|slot| constant_time_eq(slot.device.token.as_bytes(), token.as_bytes()))
    }

    /// A device by id.
    pub fn device(&self, id: DeviceId) -> Option<Arc<DeviceSlot>> {
        read_lock(&self.devices).get(&id).cloned()
    }

    /// A device by id or by name.
    pub fn find_device(&self, key: &str) -> Option<Arc<DeviceSlot>> {
        if let Ok(id) = key.parse::<DeviceId>()
            && let Some(slot) = self.device(id)
        {
            return Some(slot);
        }
        read_lock(&self.devices)
            .values()
            .find(|slot| slot.device.name == key)
            .cloned()
    }

    /// Every device, by id.
    pub fn devices(&self) -> Vec<Arc<DeviceSlot>> {
        let mut devices: Vec<_> = read_lock(&self.devices).values().cloned().collect();
        devices.sort_by_key(|slot| slot.device.id);
        devices
    }

    /// Every template, by id.
    pub fn templates(&self) -> Vec<Arc<Template>> {
        let mut templates: Vec<_> = read_lock(&self.templates).values().cloned().collect();
        templates.sort_by_key(|template| template.id);
        templates
    }

    /// A template by id or name.
    pub fn find_template(&self, key: &str) -> Option<Arc<Template>> {
        let templates = read_lock(&self.templates);
        if let Ok(id) = key.parse::<TemplateId>()
            && let Some(template) = templates.get(&id)
        {
            return Some(template.clone());
        }
        templates
            .values()
            .find(|template| template.name == key)
            .cloned()
    }

    /// Stores a new template.
    pub async fn create_template(&self, template: Template) -> Result<Arc<Template>, EngineError> {
        template.check().map_err(EngineError::Invalid)?;
        let stored = Arc::new(settle(self.store.create_template(template)).await?);
        write_lock(&self.templates).insert(stored.id, stored.clone());
        self.announce_meta(cluster::wire::MetaMessage::Added);
        Ok(stored)
    }

    /// Stores a new device of `template` with a fresh token.
    pub async fn create_device(
        &self,
        name: &str,
        template: &Template,
    ) -> Result<Arc<DeviceSlot>, EngineError> {
        if name.trim().is_empty() || name.len() > blynk_proto::MAX_NAME_LEN {
            return Err(EngineError::Invalid(format!(
                "`name`: a device name is 1 to {} bytes",
                blynk_proto::MAX_NAME_LEN
            )));
        }
        // Names identify devices in the API and the command line, so they are unique; a name
        // made only of digits would be read as an id.
        if read_lock(&self.devices)
            .values()
            .any(|slot| slot.device.name == name)
        {
            return Err(EngineError::Conflict(format!(
                "device `{name}` already exists"
            )));
        }
        if name.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(EngineError::Invalid(
                "`name`: a device name needs a character other than a digit".into(),
            ));
        }
        let template = self
            .find_template(&template.id.to_string())
            .ok_or_else(|| EngineError::NotFound(format!("template `{}`", template.name)))?;
        let token = crate::token::new_token();
        let device = settle(self.store.create_device(name, template.id, &token)).await?;
        let (slot, new) = self.index(Arc::new(DeviceSlot::new(
            device,
            template,
            self.floor.counter(0),
        )));
        if new {
            let _ = self
                .global
                .send(events::device_changed(slot.device.id, true));
        }
        self.announce_meta(cluster::wire::MetaMessage::Added);
        Ok(slot)
    }

    /// Deletes a device, closing its session.
    pub async fn delete_device(&self, id: DeviceId) -> Result<(), EngineError> {
        self.unindex(id)
            .ok_or_else(|| EngineError::NotFound(format!("device {id}")))?;
        settle(self.store.delete_device(id)).await?;
        let _ = self.global.send(events::device_changed(id, false));
        self.announce_meta(cluster::wire::MetaMessage::Deleted { device: id });
        Ok(())
    }

    /// Registers `watcher` for events about every device (presence, devices added and
    /// removed).
    pub fn watch_all(&self, watcher: &Watcher) {
        watcher.watch_all(&self.global);
    }

    /// How many app connections are watching.
    pub fn app_watchers(&self) -> usize {
        self.global.len()
    }

    /// Stores a property set by a device and shows it to apps; never synced to hardware.
    /// Refused ([`EngineError::Property`]) unless [`crate::properties::check`] allows it (SPEC 6).
    ///
    /// Queued and published before this returns (SPEC 3.13); the future resolves once durable.
    pub fn set_property(
        &self,
        slot: &DeviceSlot,
        property: PropertyRecord,
    ) -> Result<impl Future<Output = Result<(), EngineError>> + Send + 'static, EngineError> {
        let ticket = {
            let mut state = slot.lock();
            crate::properties::check(&slot.template, &state.properties, &property)?;
            self.publish(
                slot,
                events::property(
                    slot.device.id,
                    property.pin,
                    &property.name,
                    &property.value,
                ),
            );
            let ticket = self.store.put_property(slot.device.id, property.clone());
            match state
                .properties
                .iter_mut()
                .find(|p| p.pin == property.pin && p.name == property.name)
            {
                Some(existing) => existing.value = property.value,
                None => state.properties.push(property),
            }
            ticket
        };
        Ok(async move { Ok(settle(ticket).await?) })
    }

    /// Stores an event logged by a device and shows it to apps.
    ///
    /// Queued and published before this returns (SPEC 3.13); the future resolves once durable.
    pub fn log_event(
        &self,
        slot: &DeviceSlot,
        code: &str,
        description: Option<&str>,
    ) -> impl Future<Output = Result<(), EngineError>> + Send + 'static {
        let event = EventRecord {
            code: code.to_owned(),
            description: description.map(str::to_owned),
            at: self.clock.unix_ms(),
        };
        let ticket = {
            // Under the device's lock, so it reaches the apps in order with the values.
            let _state = slot.lock();
            self.publish(slot, events::logged(slot.device.id, &event));
            self.store.append_event(slot.device.id, event)
        };
        async move { Ok(settle(ticket).await?) }
    }

    /// Queues an event for the device's watchers here and, with a bus, on every other node.
    /// Called under the device's lock, so both get a device's events in version order.
    fn publish(&self, slot: &DeviceSlot, event: AppEvent) {
        self.tell_other_nodes(|| membership::Outgoing::Event(event.clone()));
        slot.publish(event);
    }

    fn session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
