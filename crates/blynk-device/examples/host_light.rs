//! The light bulb of the reference text, on the host: the app switches the light on V0, the
//! device mirrors it on the app's LED widget on V1 (255/0), and a "button" (the line `press` on
//! standard input) toggles the light and reports it. After a reconnect the automatic sync
//! restores the light exactly, app changes made meanwhile included.
//!
//! ```text
//! cargo run -p blynk-device --example host_light -- --server 127.0.0.1:8441 --token TOKEN
//! ```
//!
//! It prints one line per thing a person would see (`connected`, `V0 = 1`, `LED on`,
//! `sync complete`, and `Vn = value` for every other pin it receives) and reads commands on
//! standard input: `press`, `write V2 42` for a `virtual_write`, `sync V2 V3` for a
//! `sync_virtual`. The dashboard's browser tests and the conformance suite drive it this way.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use blynk_device::{
    Blynk, Config, ConnectError, Connector, Error, Firmware, Handlers, SyncDone, ValueExt,
};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embedded_io_adapters::tokio_1::FromTokio;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;

static BLYNK: Blynk<CriticalSectionRawMutex, 16, 512> = Blynk::new();

/// The light's state, shared by the handler (app writes) and the button.
static LIGHT_ON: AtomicBool = AtomicBool::new(false);

struct Light;

impl Light {
    fn set(on: bool) {
        LIGHT_ON.store(on, Ordering::SeqCst);
        println!("LED {}", if on { "on" } else { "off" });
        // Mirror the light on the LED widget, as the reference example does.
        let _ = BLYNK.virtual_write(1, if on { 255 } else { 0 });
    }
}

impl Firmware for Light {
    fn connected(&mut self) {
        println!("connected");
    }

    fn disconnected(&mut self, reason: Error) {
        println!("disconnected: {reason}");
    }

    fn sync_complete(&mut self, sync: SyncDone) {
        if sync.automatic {
            println!("sync complete ({} values)", sync.count);
        }
    }
}

/// `BLYNK_WRITE(V0)`: the app's power switch; `BLYNK_WRITE_DEFAULT`: every other pin is shown.
static HANDLERS: Handlers<Light, 1> = Handlers::new()
    .on_write(0, |_: &mut Light, value| {
        let on = value.as_bool();
        println!("V0 = {}", u8::from(on));
        Light::set(on);
    })
    .on_default(|_: &mut Light, pin, value| println!("V{pin} = {value}"));

/// Connects over tokio's TCP.
struct Tcp(SocketAddr);

impl Connector for Tcp {
    type Connection<'c> = FromTokio<TcpStream>;

    async fn connect(&mut self) -> Result<Self::Connection<'_>, ConnectError> {
        let stream = TcpStream::connect(self.0)
            .await
            .map_err(|_| ConnectError::Refused)?;
        let _ = stream.set_nodelay(true);
        Ok(FromTokio::new(stream))
    }
}

/// The button and the console: `press` toggles the light, `write Vn value` writes a pin.
async fn console() {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["press"] => {
                let on = !LIGHT_ON.load(Ordering::SeqCst);
                Light::set(on);
                let _ = BLYNK.virtual_write(0, i64::from(on));
            }
            ["sync", pins @ ..] if !pins.is_empty() => {
                let pins: Vec<u8> = pins
                    .iter()
                    .filter_map(|pin| pin.trim_start_matches(['V', 'v']).parse().ok())
                    .collect();
                BLYNK.sync_virtual(&pins);
            }
            ["write", pin, value] => {
                let pin = pin.trim_start_matches(['V', 'v']).parse::<u8>();
                match (pin, value.parse::<i64>()) {
                    (Ok(pin), Ok(number)) => drop(BLYNK.virtual_write(pin, number)),
                    (Ok(pin), Err(_)) => drop(BLYNK.virtual_write(pin, *value)),
                    _ => eprintln!("usage: write V2 42"),
                }
            }
            [] => {}
            _ => eprintln!("commands: press | write Vn value | sync Vn [Vm ...]"),
        }
    }
    // Without a console (standard input closed), the light keeps running.
    std::future::pending::<()>().await;
}

fn argument(name: &str) -> Option<String> {
    let mut args = std::env::args().skip_while(|arg| arg != name);
    args.next()?;
    args.next()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (Some(server), Some(token)) = (argument("--server"), argument("--token")) else {
        eprintln!("usage: host_light --server HOST:PORT --token TOKEN [--heartbeat SECONDS]");
        std::process::exit(2);
    };
    let Ok(address) = server.parse::<SocketAddr>() else {
        eprintln!("--server must be an address such as 127.0.0.1:8441");
        std::process::exit(2);
    };
    let heartbeat = argument("--heartbeat")
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or(10);
    let config = Config::new(&token)
        .with_firmware("host-light-1.0")
        .with_heartbeat(heartbeat)
        .with_seed(std::process::id());
    let (mut rx, mut tx) = ([0u8; 1024], [0u8; 512]);
    let mut runner = BLYNK.runner(config, &mut rx, &mut tx);
    let (mut connector, mut light) = (Tcp(address), Light);
    let run = runner.run(&mut connector, &mut light, &HANDLERS);
    tokio::select! {
        error = run => {
            println!("stopped: {error}");
            std::process::exit(1);
        }
        () = console() => {}
    }
}
