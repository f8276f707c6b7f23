//! `blynk-device`: the device side of the Blynk-compatible state-sync platform, `#![no_std]`
//! and without an allocator (Blynk's `virtualWrite`, `syncAll`, `syncVirtual` in Rust).
//!
//! # The parts
//!
//! - [`Blynk`]: the shared device object, in a `static`. Any task calls
//!   [`virtual_write`](Blynk::virtual_write), [`sync_all`](Blynk::sync_all),
//!   [`sync_virtual`](Blynk::sync_virtual), [`set_property`](Blynk::set_property),
//!   [`log_event`](Blynk::log_event): each only queues (never blocks on the network) and wakes
//!   the runner. The queue is bounded, coalesced per pin, and counts what it cannot hold
//!   ([`overflow_count`](Blynk::overflow_count)).
//! - [`Runner`]: the future that owns the connection: connect, login, automatic sync, handler
//!   calls, heartbeat, reconnect with backoff and jitter. Run it next to the firmware's tasks
//!   (`join`, `select`, or its own embassy task).
//! - [`Handlers`]: `BLYNK_WRITE(Vn)` as a `const` table of `fn(&mut C, &Value)` over the
//!   firmware's context `C`; [`Firmware`]: connected, disconnected and sync-complete callbacks
//!   and digital/analog pins, all optional.
//! - [`Connector`]: how to open a connection: any `embedded_io_async::{Read, Write}`. With the
//!   `embassy-net` feature, `net::TcpConnector` connects an embassy-net `Stack` by name or
//!   address; on the host, wrap a tokio `TcpStream` in `embedded_io_adapters::tokio_1::FromTokio`.
//! - [`session::Session`]: the protocol state machine without I/O, driven by the runner and by
//!   tests.
//!
//! Memory is the caller's: the queue is sized by `Blynk`'s const generics, the frame buffers
//! are slices given to the runner, handler tables are sized by `N`. Time comes from
//! `embassy-time`, so the same code runs on a board and on the host (`embassy-time/std`).
//!
//! # A lamp and a button
//!
//! The app switches a lamp on V0; a physical button shows its state on the app's LED widget on
//! V1 (`virtual_write(1, 255)`), polled every 50 ms:
//!
//! ```no_run
//! use blynk_device::{Blynk, Config, Connector, Firmware, Handlers, ValueExt};
//! use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
//! use embassy_time::{Duration, Ticker};
//!
//! struct Lamp { on: bool }
//! impl Firmware for Lamp {}
//!
//! static BLYNK: Blynk<CriticalSectionRawMutex> = Blynk::new();
//! static HANDLERS: Handlers<Lamp, 1> =
//!     Handlers::new().on_write(0, |lamp: &mut Lamp, value| lamp.on = value.as_bool()); // BLYNK_WRITE(V0)
//!
//! async fn button(pressed: impl Fn() -> bool) {
//!     let (mut ticker, mut was) = (Ticker::every(Duration::from_millis(50)), false);
//!     loop {
//!         ticker.next().await;
//!         if pressed() != was {
//!             was = !was;
//!             let _ = BLYNK.virtual_write(1, if was { 255 } else { 0 });
//!         }
//!     }
//! }
//!
//! async fn firmware(mut connector: impl Connector, pressed: impl Fn() -> bool) {
//!     let (mut rx, mut tx) = ([0u8; 256], [0u8; 128]);
//!     let config = Config::new("abcdEFGH0123456789_-abcdefghijkl").with_firmware("1.0.0");
//!     let mut runner = BLYNK.runner(config, &mut rx, &mut tx);
//!     let mut lamp = Lamp { on: false };
//!     let run = runner.run(&mut connector, &mut lamp, &HANDLERS);
//!     embassy_futures::join::join(run, button(pressed)).await;
//! }
//! ```
//!
//! With an interrupt instead of polling, the button task waits for an edge (embassy's
//! `ExtiInput`, say) and writes the level:
//!
//! ```ignore
//! loop {
//!     button.wait_for_any_edge().await;
//!     let _ = BLYNK.virtual_write(1, if button.is_low() { 255 } else { 0 });
//! }
//! ```
//!
//! # Offline writes and the automatic sync (SPEC 3.8)
//!
//! While offline, writes wait in the queue, the latest per pin, each with the time it was made.
//! On reconnect the server first sends the automatic sync; then the queued writes go out with
//! their age, and the server orders each against app writes made in the meantime. Values of a
//! pin whose write waits are not applied (the device's own value is newer from its point of
//! view); the server either stores the write (the device is right) or, when an app wrote the pin
//! later than the device, acknowledges the write and sends an `Update` with the app's value,
//! which reaches the handler like any app write. So the device converges on whatever the server
//! holds, and the apps see the write that was made last.
//!
//! # Features
//!
//! - `embassy-net`: `net::TcpConnector`.
//! - `defmt`, `log`: log lines through either; without them, logging compiles to nothing.
//!
//! Firmware on the library can log the same way with [`log!`], which checks the `defmt` and
//! `log` features of the crate that calls it.
#![no_std]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

#[macro_use]
mod log;

mod backoff;
mod blynk;
mod connector;
mod error;
mod handlers;
mod outbox;
mod runner;
pub mod session;
mod shared;
mod value;

#[cfg(feature = "embassy-net")]
pub mod net;

pub use backoff::{Backoff, Prng};
pub use blynk::Blynk;
pub use blynk_proto::{Pin, Scalar, Value};
pub use connector::Connector;
pub use error::{ConnectError, Error, QueueError};
pub use handlers::{DefaultHandler, Firmware, Handlers, SyncDone, WriteHandler};
pub use runner::{Config, Runner};
pub use shared::Status;
pub use value::{IntoScalar, IntoValue, ValueExt};
