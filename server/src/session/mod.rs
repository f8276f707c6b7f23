//! Device sessions: one task per connected device, native or classic, between the socket and
//! the engine. One connection type and one loop ([`driver`]) serve every protocol; each
//! protocol's module holds only its login and what its frames mean.
//!
//! Dependencies point one way: `native` and `classic` use `driver`, which uses `connection` and
//! `in_flight`; those two use nothing else here. `classic` uses `classic_extras` (GROUP, BRIDGE,
//! time requests); both write their answers with `classic_reply`. What an engine error becomes
//! on each protocol (MQTT's too) is in `refusal`.

pub mod classic;
pub mod classic_extras;
mod classic_reply;
pub mod connection;
mod driver;
mod in_flight;
pub mod native;
pub(crate) mod refusal;

use std::sync::Arc;

use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;
use crate::engine::Engine;
use crate::login_limiter::LoginLimiter;
use crate::net::address::{AddressRange, PerAddressCap};

/// What every session shares.
pub struct Context {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The limits in force.
    pub limits: Limits,
    /// Failed device logins (tokens) per address.
    pub login_limiter: LoginLimiter,
    /// Failed admin logins (the app API's key) per address: a bucket of its own, so that bad
    /// device tokens do not count against the admin and the reverse.
    pub admin_login_limiter: LoginLimiter,
    /// The connection cap.
    pub connections: Arc<Semaphore>,
    /// The per-address connection cap.
    pub per_address: Arc<PerAddressCap>,
    /// Turns true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
    /// The zone of time requests for devices without a `timezone` property of their own.
    pub timezone: jiff::tz::TimeZone,
    /// Reverse proxies trusted for `X-Forwarded-For` and exempt from the per-address cap.
    pub trusted_proxies: Vec<AddressRange>,
}

impl Context {
    /// A context for `engine` under `limits`.
    pub fn new(
        engine: Arc<Engine>,
        limits: Limits,
        shutdown: watch::Receiver<bool>,
        tls: Option<TlsAcceptor>,
    ) -> Self {
        Context {
            engine,
            login_limiter: LoginLimiter::new(limits.failed_logins_per_minute),
            admin_login_limiter: LoginLimiter::new(limits.failed_logins_per_minute),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            per_address: PerAddressCap::new(limits.max_connections_per_address),
            limits,
            shutdown,
            tls,
            timezone: jiff::tz::TimeZone::UTC,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The most in-flight (not yet durable) writes per session before it stops reading.
pub const MAX_IN_FLIGHT: usize = 64;

/// Why a session ended, for its log line; `E` is the protocol's frame error.
#[derive(Debug)]
pub(crate) enum Ending<E> {
    /// The device closed the connection.
    Closed,
    /// The socket failed.
    Io(std::io::Error),
    /// The device sent a frame that cannot be read; the stream is out of step.
    Frame(E),
    /// Nothing arrived for 2.3 heartbeats.
    Silent(std::time::Duration),
    /// The engine closed the session (replaced, too slow, deleted).
    Engine(&'static str),
    /// The server is shutting down.
    Shutdown,
}

impl<E: std::fmt::Display> std::fmt::Display for Ending<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Closed => f.write_str("closed by the device"),
            Ending::Io(error) => write!(f, "I/O error: {error}"),
            Ending::Frame(error) => write!(f, "bad frame: {error}"),
            Ending::Silent(after) => write!(f, "silent for {after:?} (2.3 x heartbeat)"),
            Ending::Engine(reason) => f.write_str(reason),
            Ending::Shutdown => f.write_str("server shutting down"),
        }
    }
}
