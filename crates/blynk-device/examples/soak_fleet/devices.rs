//! The devices: one `Blynk` object and runner per device, as tasks of one thread, and the
//! writer of each device (V1 = 1, 2, 3, ..., the next only once the previous one is
//! acknowledged, so the server must hold every one of them).
//!
//! A write counts as acknowledged when the device's queue is empty again and the server refused
//! nothing: the library keeps a write queued until the server's acknowledgement (SPEC 3.10).

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use blynk_device::{Blynk, Config, ConnectError, Connector, Firmware, Handlers, ValueExt};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embedded_io_adapters::tokio_1::FromTokio;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// A device's queue: a few slots are plenty, it writes one pin.
type Device = Blynk<NoopRawMutex, 4, 64>;

/// What the soak tracks of one device.
pub struct Tracked {
    pub name: String,
    pub blynk: &'static Device,
    /// The latest V0 the device received (app writes and syncs).
    pub v0: Rc<Cell<Option<i64>>>,
    /// Every V1 value whose write was acknowledged, in order.
    pub acknowledged: RefCell<Vec<i64>>,
    /// The device's writer has a write waiting for its acknowledgement.
    pub waiting: Cell<bool>,
}

/// The firmware of a soak device: it keeps what arrives on V0.
struct Soaked {
    v0: Rc<Cell<Option<i64>>>,
}

impl Firmware for Soaked {}

static HANDLERS: Handlers<Soaked, 1> = Handlers::new().on_write(0, |device: &mut Soaked, value| {
    device.v0.set(value.as_int())
});

/// Connects over tokio's TCP, from `source` when given, within 10 s.
struct Tcp {
    server: SocketAddr,
    source: Option<IpAddr>,
}

impl Connector for Tcp {
    type Connection<'c> = FromTokio<TcpStream>;

    async fn connect(&mut self) -> Result<Self::Connection<'_>, ConnectError> {
        let socket = TcpSocket::new_v4().map_err(|_| ConnectError::Refused)?;
        if let Some(source) = self.source {
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|_| ConnectError::Refused)?;
        }
        let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(self.server))
            .await
            .map_err(|_| ConnectError::Refused)?
            .map_err(|_| ConnectError::Refused)?;
        let _ = stream.set_nodelay(true);
        Ok(FromTokio::new(stream))
    }
}

/// Every device of this process.
pub struct Fleet {
    pub devices: Vec<Rc<Tracked>>,
}

impl Fleet {
    /// Starts one runner task per `(name, token)`.
    pub fn start(
        devices: &[(String, String)],
        server: SocketAddr,
        source: Option<IpAddr>,
        heartbeat: u16,
    ) -> Fleet {
        let mut tracked = Vec::new();
        for (index, (name, token)) in devices.iter().enumerate() {
            // Each device's object lives as long as the process, as a firmware's `static` does.
            let blynk: &'static Device = Box::leak(Box::new(Blynk::new()));
            let token: &'static str = Box::leak(token.clone().into_boxed_str());
            let v0 = Rc::new(Cell::new(None));
            let mut firmware = Soaked { v0: v0.clone() };
            let mut connector = Tcp { server, source };
            let seed = u32::try_from(index).unwrap_or(0) ^ std::process::id();
            tokio::task::spawn_local(async move {
                let config = Config::new(token)
                    .with_firmware("soak-1.0")
                    .with_heartbeat(heartbeat)
                    .with_reconnect(500, 8_000)
                    .with_seed(seed);
                let (mut rx, mut tx) = ([0u8; 512], [0u8; 256]);
                let mut runner = blynk.runner(config, &mut rx, &mut tx);
                let error = runner.run(&mut connector, &mut firmware, &HANDLERS).await;
                eprintln!("a device stopped for good: {error}");
            });
            tracked.push(Rc::new(Tracked {
                name: name.clone(),
                blynk,
                v0,
                acknowledged: RefCell::new(Vec::new()),
                waiting: Cell::new(false),
            }));
        }
        Fleet { devices: tracked }
    }

    /// Waits until every device has logged in and completed its automatic sync (or `within`
    /// passes); how many have.
    pub async fn wait_ready(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let synced = self
                .devices
                .iter()
                .filter(|device| device.blynk.status().synced)
                .count();
            if synced == self.devices.len() || Instant::now() >= deadline {
                return synced;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One writer task per device, until `stop`: V1 = next number every 1 to 5 s, the next only
    /// once the previous one is acknowledged.
    pub fn start_writers(&self, stop: Rc<Cell<bool>>) -> Vec<JoinHandle<()>> {
        self.devices
            .iter()
            .enumerate()
            .map(|(index, device)| {
                let (device, stop) = (device.clone(), stop.clone());
                let mut dice = 0x9E37_79B9_u32 ^ (index as u32).wrapping_mul(2_654_435_761);
                tokio::task::spawn_local(async move {
                    let mut next = 1_i64;
                    while !stop.get() {
                        dice ^= dice << 13;
                        dice ^= dice >> 17;
                        dice ^= dice << 5;
                        let pause = 1_000 + u64::from(dice % 4_000);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                        if stop.get() {
                            break;
                        }
                        write_and_wait(&device, next).await;
                        next += 1;
                    }
                })
            })
            .collect()
    }

    /// Waits (at most `within`) until every device is logged in, has nothing queued and holds
    /// the V0 the apps last had acknowledged (`acknowledged_v0` of its name); how many do not.
    pub async fn settle(
        &self,
        acknowledged_v0: impl Fn(&str) -> Option<i64>,
        within: Duration,
    ) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let unsettled = self
                .devices
                .iter()
                .filter(|device| {
                    !device.blynk.is_connected()
                        || device.blynk.queued() != 0
                        || device.v0.get() != acknowledged_v0(&device.name)
                })
                .count();
            if unsettled == 0 || Instant::now() >= deadline {
                return unsettled;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Writes V1 = `value` and waits until it is acknowledged (the queue is empty) or refused.
async fn write_and_wait(device: &Tracked, value: i64) {
    let refused_before = device.blynk.refused_count();
    if device.blynk.virtual_write(1, value).is_err() {
        return;
    }
    device.waiting.set(true);
    while device.blynk.queued() != 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    device.waiting.set(false);
    if device.blynk.refused_count() == refused_before {
        device.acknowledged.borrow_mut().push(value);
    }
}
