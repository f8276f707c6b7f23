//! The light bulb of the state-syncing reference text, written once for every board.
//!
//! - The app switches the light on virtual pin `V0` (`BLYNK_WRITE(V0)`).
//! - The light is mirrored on the app's LED widget on `V1`: `virtual_write(1, 255)` when on,
//!   `0` when off.
//! - A physical button toggles the light and reports it with `virtual_write` on `V0` and `V1`,
//!   so the app shows what the hardware did even when nobody looked.
//! - On every connect the automatic sync restores `V0`, so after a network drop or a reset the
//!   light is exactly as the server holds it, app changes made meanwhile included.
//!
//! The button is read by interrupt (an edge wakes the task) or, with the `polling` feature, by
//! polling every 50 ms: the two variants of the reference text.
//!
//! A board plugs in its pins through two small traits, [`Led`] and [`Button`], and its network
//! through a [`Connector`], then runs [`run`] with the device's [`Config`] (token, firmware
//! name, a seed for the reconnect jitter):
//!
//! ```ignore
//! let config = blynk_device::Config::new(TOKEN).with_firmware("light-board-1.0");
//! let error = light::run(led, button, connector, config).await;
//! ```
#![no_std]
#![deny(missing_docs)]

use core::cell::RefCell;

use blynk_device::{
    Blynk, Config, Connector, Error, Firmware, Handlers, SyncDone, Value, ValueExt, log,
};
use embassy_futures::select::{Either, select};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_time::{Duration, Ticker, Timer};

/// The virtual pin the app switches the light with.
pub const POWER_PIN: u8 = 0;
/// The virtual pin of the app's LED widget that mirrors the light.
pub const LED_WIDGET_PIN: u8 = 1;
/// How often the polling variant reads the button.
pub const POLL_PERIOD: Duration = Duration::from_millis(50);
/// How long a button must stay pressed after an edge to count (contact bounce).
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// Splits a server address `host:port` (`192.168.1.20:8441`, `blynk.lan:8441`) into host and
/// port; without a port, the native device port 8441.
pub fn split_server(address: &str) -> (&str, u16) {
    match address.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().unwrap_or(NATIVE_PORT)),
        None => (address, NATIVE_PORT),
    }
}

/// The server's native device port.
pub const NATIVE_PORT: u16 = 8441;

/// The light: an LED, a relay, anything that is on or off.
pub trait Led {
    /// Switches it on or off.
    fn set(&mut self, on: bool);
}

/// The physical button.
pub trait Button {
    /// Whether the button is held down now.
    fn is_pressed(&mut self) -> bool;

    /// Waits for the button's next edge (any direction), by interrupt.
    #[allow(async_fn_in_trait)]
    async fn wait_for_edge(&mut self);
}

/// The type of the device's connection object.
pub type Device = Blynk<CriticalSectionRawMutex, 8, 128>;

/// The device's connection to the server, shared by the runner and the button.
static BLYNK: Device = Blynk::new();

/// The device's connection object, for boards that write other pins (a sensor, say) next to
/// the light, or a simulation's console.
pub fn device() -> &'static Device {
    &BLYNK
}

/// The light's state and its LED.
struct Lamp<L> {
    led: L,
    on: bool,
}

impl<L: Led> Lamp<L> {
    /// Sets the LED and mirrors it on the app's LED widget.
    fn set(&mut self, on: bool) {
        self.on = on;
        self.led.set(on);
        log!(info, "light {}", if on { "on" } else { "off" });
        // Queued, never blocking: while offline it goes out after the next login.
        let _ = BLYNK.virtual_write(LED_WIDGET_PIN, if on { 255 } else { 0 });
    }
}

/// The firmware context the runner hands to the handlers: the lamp, shared with the button.
struct Light<'a, L> {
    lamp: &'a RefCell<Lamp<L>>,
}

impl<L: Led> Firmware for Light<'_, L> {
    fn connected(&mut self) {
        log!(info, "connected");
    }

    fn disconnected(&mut self, reason: Error) {
        log!(info, "disconnected: {}", reason);
    }

    fn sync_complete(&mut self, sync: SyncDone) {
        if sync.automatic {
            log!(info, "restored by state sync ({} values)", sync.count);
        }
    }
}

/// `BLYNK_WRITE(V0)`: the app's power switch (and the synced value on connect).
fn power<L: Led>(light: &mut Light<'_, L>, value: &Value<'_>) {
    light.lamp.borrow_mut().set(value.as_bool());
}

/// The button toggles the light and tells the app: `V0` (the switch) and `V1` (the LED widget).
fn toggle<L: Led>(lamp: &RefCell<Lamp<L>>) {
    let mut lamp = lamp.borrow_mut();
    let on = !lamp.on;
    lamp.set(on);
    let _ = BLYNK.virtual_write(POWER_PIN, i64::from(on));
}

/// The interrupt variant: sleeps until the button's edge, then checks it is still held.
async fn button_by_interrupt<L: Led, B: Button>(lamp: &RefCell<Lamp<L>>, mut button: B) -> ! {
    loop {
        button.wait_for_edge().await;
        Timer::after(DEBOUNCE).await;
        if button.is_pressed() {
            toggle(lamp);
            // One press, one toggle: wait for the release before the next.
            while button.is_pressed() {
                button.wait_for_edge().await;
                Timer::after(DEBOUNCE).await;
            }
        }
    }
}

/// The polling variant: reads the button every [`POLL_PERIOD`] and toggles on each press.
async fn button_by_polling<L: Led, B: Button>(lamp: &RefCell<Lamp<L>>, mut button: B) -> ! {
    let mut ticker = Ticker::every(POLL_PERIOD);
    let mut was_pressed = button.is_pressed();
    loop {
        ticker.next().await;
        let pressed = button.is_pressed();
        if pressed && !was_pressed {
            toggle(lamp);
        }
        was_pressed = pressed;
    }
}

/// Runs the light until the server refuses the device for good (a wrong token), and returns
/// that error. Network errors are retried with backoff and never end it.
pub async fn run<L: Led, B: Button, K: Connector>(
    led: L,
    button: B,
    mut connector: K,
    config: Config<'_>,
) -> Error {
    let lamp = RefCell::new(Lamp { led, on: false });
    // Off until the automatic sync says otherwise; not reported, the server's value wins.
    lamp.borrow_mut().led.set(false);
    let handlers = Handlers::<Light<'_, L>, 1>::new().on_write(POWER_PIN, power::<L>);
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 128]);
    let mut runner = BLYNK.runner(config, &mut rx, &mut tx);
    let mut light = Light { lamp: &lamp };
    let connection = runner.run(&mut connector, &mut light, &handlers);
    let button = async {
        if cfg!(feature = "polling") {
            button_by_polling(&lamp, button).await
        } else {
            button_by_interrupt(&lamp, button).await
        }
    };
    match select(connection, button).await {
        Either::First(error) => error,
        Either::Second(never) => never,
    }
}

/// Runs the light over an embassy-net stack whose address comes from DHCP: waits for the
/// address, connects to `server` (`host:port`, see [`split_server`]) and runs [`run`]. When the
/// server refuses the device for good (a wrong token), logs why and parks: a board has nothing
/// else to do then.
#[cfg(feature = "embassy-net")]
pub async fn run_on_stack<L: Led, B: Button>(
    stack: embassy_net::Stack<'_>,
    server: &str,
    led: L,
    button: B,
    config: Config<'_>,
) -> ! {
    use blynk_device::net::{Host, TcpConnector};

    log!(info, "waiting for an address from DHCP");
    stack.wait_config_up().await;
    if let Some(v4) = stack.config_v4() {
        log!(info, "address {}", v4.address);
    }
    let (host, port) = split_server(server);
    let (mut rx, mut tx) = ([0u8; 1024], [0u8; 1024]);
    let connector = TcpConnector::new(stack, Host::parse(host), port, &mut rx, &mut tx);
    log!(info, "connecting to {}", server);
    let error = run(led, button, connector, config).await;
    log!(
        error,
        "the server refused the device for good: {}; check BLYNK_TOKEN",
        error
    );
    loop {
        Timer::after(Duration::from_secs(3600)).await;
    }
}
