//! Test support: a real `blynk-server` on 127.0.0.1 over a temporary data directory (the
//! server's `test-util` feature, with what these tests ask of its demo device), a device
//! (the real runner over tokio sockets) that reports what its firmware sees on a channel, and a
//! TCP proxy that can cut or silence connections.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blynk_device::{Blynk, ConnectError, Connector, Error, Firmware, Handlers, SyncDone, Value};
use blynk_proto::Pin;
use blynk_server::engine::DeviceSlot;
use blynk_server::model::{Origin, OwnedScalar, OwnedValue};
pub use blynk_server::test_util::{TestServer, eventually};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embedded_io_adapters::tokio_1::FromTokio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How long a test waits for the device to see something that should happen at once (longer
/// than the server's tests: a reconnect waits out a backoff first).
pub const PATIENCE: Duration = Duration::from_secs(10);

/// What the device tests ask of the server about its demo device (V0 0..1 sync, V1 0..255 sync,
/// V2 not synced, V3 string default "auto" sync, V4 command), through its engine.
pub trait DemoDevice {
    /// The demo device's slot in the engine.
    fn demo(&self) -> Arc<DeviceSlot>;
    /// An app writes an integer to a pin of the demo device.
    async fn app_write(&self, pin: Pin, value: i64);
    /// The demo device's stored value of `pin`, as an integer.
    fn stored_int(&self, pin: Pin) -> Option<i64>;
}

impl DemoDevice for TestServer {
    fn demo(&self) -> Arc<DeviceSlot> {
        self.server()
            .engine()
            .authenticate(&self.demo_token())
            .unwrap()
    }

    async fn app_write(&self, pin: Pin, value: i64) {
        let engine = self.server().engine();
        engine
            .app_write(&self.demo(), pin, &Value::int(value), Origin::App)
            .await
            .unwrap();
    }

    fn stored_int(&self, pin: Pin) -> Option<i64> {
        match self.demo().value(pin)?.value.0.as_slice() {
            [OwnedScalar::Int(int)] => Some(*int),
            _ => None,
        }
    }
}

/// A stored value made of one integer.
pub fn int_value(int: i64) -> OwnedValue {
    OwnedValue(vec![OwnedScalar::Int(int)])
}

/// What the device's firmware saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Connected,
    Disconnected(Error),
    SyncComplete(SyncDone),
    /// A handler ran: virtual pin, value as text.
    Write(u8, String),
    Digital(u8, bool),
}

/// The test firmware: reports everything on a channel.
pub struct Recorder {
    seen: mpsc::UnboundedSender<Seen>,
}

impl Firmware for Recorder {
    fn connected(&mut self) {
        let _ = self.seen.send(Seen::Connected);
    }
    fn disconnected(&mut self, reason: Error) {
        let _ = self.seen.send(Seen::Disconnected(reason));
    }
    fn sync_complete(&mut self, sync: SyncDone) {
        let _ = self.seen.send(Seen::SyncComplete(sync));
    }
    fn digital_write(&mut self, pin: u8, high: bool) {
        let _ = self.seen.send(Seen::Digital(pin, high));
    }
}

static HANDLERS: Handlers<Recorder, 0> =
    Handlers::new().on_default(|recorder: &mut Recorder, pin, value| {
        let _ = recorder.seen.send(Seen::Write(pin, value.to_string()));
    });

/// A connector that dials whatever address the test sets, or refuses while there is none
/// (the server is down), and counts its attempts.
#[derive(Clone, Default)]
pub struct Dialer {
    pub target: Arc<Mutex<Option<SocketAddr>>>,
    pub attempts: Arc<AtomicU32>,
}

impl Dialer {
    pub fn to(address: SocketAddr) -> Self {
        let dialer = Dialer::default();
        dialer.set(Some(address));
        dialer
    }

    pub fn set(&self, address: Option<SocketAddr>) {
        *self.target.lock().unwrap() = address;
    }

    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl Connector for Dialer {
    type Connection<'c> = FromTokio<TcpStream>;

    async fn connect(&mut self) -> Result<Self::Connection<'_>, ConnectError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let target = *self.target.lock().unwrap();
        let address = target.ok_or(ConnectError::Refused)?;
        let stream = TcpStream::connect(address)
            .await
            .map_err(|_| ConnectError::Refused)?;
        stream.set_nodelay(true).unwrap();
        Ok(FromTokio::new(stream))
    }
}

/// The device object of the tests.
pub type TestBlynk = Blynk<CriticalSectionRawMutex, 16, 512>;

/// A device running the real runner in a tokio task.
pub struct Device {
    pub blynk: &'static TestBlynk,
    pub dialer: Dialer,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: JoinHandle<Error>,
}

impl Device {
    /// Starts a device with `token` and a heartbeat of `heartbeat` seconds, dialing `dialer`.
    pub fn start(token: &str, heartbeat: u16, dialer: Dialer) -> Device {
        let blynk: &'static TestBlynk = Box::leak(Box::new(Blynk::new()));
        let token: &'static str = Box::leak(token.to_owned().into_boxed_str());
        let rx: &'static mut [u8] = Box::leak(vec![0u8; 1024].into_boxed_slice());
        let tx: &'static mut [u8] = Box::leak(vec![0u8; 512].into_boxed_slice());
        let config = blynk_device::Config::new(token)
            .with_firmware("test-1.0")
            .with_heartbeat(heartbeat)
            .with_reconnect(50, 400)
            .with_seed(7);
        let (sender, seen) = mpsc::unbounded_channel();
        let mut connector = dialer.clone();
        let task = tokio::spawn(async move {
            let mut runner = blynk.runner(config, rx, tx);
            let mut recorder = Recorder { seen: sender };
            runner.run(&mut connector, &mut recorder, &HANDLERS).await
        });
        Device {
            blynk,
            dialer,
            seen,
            task,
        }
    }

    /// The demo device of `server` (heartbeat 10 s, dialing the server directly), once online
    /// and restored by the automatic sync.
    pub async fn online(server: &TestServer) -> Device {
        let mut device = Device::start(&server.demo_token(), 10, Dialer::to(server.native()));
        device.restored().await;
        device
    }

    /// The next thing the firmware saw.
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(PATIENCE, self.seen.recv())
            .await
            .expect("the firmware saw nothing in time")
            .expect("the runner ended")
    }

    /// Skips what the firmware saw until `wanted`; returns what was skipped.
    pub async fn until(&mut self, wanted: &Seen) -> Vec<Seen> {
        let mut skipped = Vec::new();
        loop {
            let seen = self.next().await;
            if &seen == wanted {
                return skipped;
            }
            skipped.push(seen);
        }
    }

    /// Waits for the end of the automatic sync after a login; returns the handler calls.
    pub async fn restored(&mut self) -> (Vec<Seen>, SyncDone) {
        let mut writes = Vec::new();
        loop {
            match self.next().await {
                Seen::SyncComplete(done) if done.automatic => return (writes, done),
                seen @ Seen::Write(..) => writes.push(seen),
                _ => {}
            }
        }
    }

    /// Whether anything arrived that was not taken yet.
    pub fn pending(&mut self) -> Vec<Seen> {
        let mut rest = Vec::new();
        while let Ok(seen) = self.seen.try_recv() {
            rest.push(seen);
        }
        rest
    }

    /// The runner's result, once it stopped.
    pub async fn stopped(&mut self) -> Error {
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("the runner did not stop")
            .unwrap()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy between device and server that can go silent (stop forwarding, keeping the
/// sockets open: a half-open connection as a dead router makes it) or cut every connection.
pub struct Proxy {
    pub address: SocketAddr,
    silent: watch::Sender<bool>,
    cut: watch::Sender<u32>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (silent, silent_rx) = watch::channel(false);
        let (cut, cut_rx) = watch::channel(0u32);
        let task = tokio::spawn(async move {
            while let Ok((device, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (device_read, device_write) = device.into_split();
                let (server_read, server_write) = server.into_split();
                for (from, to) in [
                    (
                        Box::new(device_read) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(server_write) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(server_read), Box::new(device_write)),
                ] {
                    tokio::spawn(forward(from, to, silent_rx.clone(), cut_rx.clone()));
                }
            }
        });
        Proxy {
            address,
            silent,
            cut,
            task,
        }
    }

    /// Stops (`true`) or resumes (`false`) forwarding on every connection.
    pub fn set_silent(&self, silent: bool) {
        self.silent.send_replace(silent);
    }

    /// Closes every open connection.
    pub fn cut_all(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut_all();
    }
}

async fn forward(
    mut from: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    mut to: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    mut silent: watch::Receiver<bool>,
    mut cut: watch::Receiver<u32>,
) {
    cut.mark_unchanged();
    let mut buffer = [0u8; 4096];
    loop {
        // While silent, nothing is read, so nothing moves either way.
        while *silent.borrow_and_update() {
            tokio::select! {
                changed = silent.changed() => if changed.is_err() { return },
                _ = cut.changed() => return,
            }
        }
        tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(count) => {
                    if to.write_all(&buffer[..count]).await.is_err() {
                        return;
                    }
                }
            },
            _ = silent.changed() => {}
            _ = cut.changed() => return,
        }
    }
}
