//! Device sessions: one task per connected device, native or classic, between the socket and
//! the engine.

pub mod classic;
pub mod native;

use std::sync::Arc;

use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;
use crate::engine::Engine;
use crate::limits::LoginLimiter;

/// What every session shares.
pub struct Context {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The limits in force.
    pub limits: Limits,
    /// Failed logins per address.
    pub login_limiter: LoginLimiter,
    /// The connection cap.
    pub connections: Arc<Semaphore>,
    /// Turns true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
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
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            shutdown,
            tls,
        }
    }
}

/// The most in-flight (not yet durable) writes per session before it stops reading.
pub const MAX_IN_FLIGHT: usize = 64;
