//! Real PostgreSQL and nats-server processes for the tests, benchmarks and xtask commands of
//! several nodes: each on a free loopback port, with its files in a temporary directory, and
//! stopped on every exit path (a [`Drop`], and a watchdog process for the paths that skip it:
//! a `static`, a panic that aborts, a killed test binary). And the one way every program starts
//! a `blynk-server` child ([`server`]).
//!
//! Standard library only (serde_json aside, for a server's ready file) and blocking: a start
//! takes from a few milliseconds (nats-server) to about a second (PostgreSQL's `initdb`), which
//! async tests can afford to block on.
//!
//! - [`postgres::Postgres`]: Debian's `postgresql` package, run as the `postgres` user when this
//!   process is root; a fresh database per test, stop and resume for outage tests, a durable
//!   variant for figures.
//! - [`nats::NatsServer`]: Debian's `nats-server` package; stop and resume for outage tests.
//! - [`server`]: a `blynk-server` child as every program that starts one starts it (its command
//!   line, [`server::spawn`] and the wait for its ready file).
//! - [`python::ensure_venv`]: the Python virtualenv of the Python client tests and device kinds.

pub mod nats;
pub mod postgres;
mod process;
pub mod python;
pub mod server;
mod watchdog;

pub use nats::NatsServer;
pub use postgres::Postgres;
pub use process::{Error, Killed};
