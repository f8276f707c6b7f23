//! Test support: the shared pieces (a real server on 127.0.0.1:0 over a temporary data
//! directory, the binary as a child process, the HTTP and app WebSocket clients) come from the
//! server's `test-util` feature; the clients of each device protocol and the multi-node
//! harnesses are the server tests' own. A real PostgreSQL and nats-server come from the
//! `blynk-testbed` crate.

#![allow(dead_code)]

pub mod classic;
pub mod cluster;
pub mod haproxy;
pub mod mqtt;
pub mod native;
pub mod node;

pub use blynk_server::test_util::*;

/// A real nats-server for one test (`blynk-testbed`), killed when dropped.
///
/// # Panics
///
/// When it cannot start (not installed, say): the message says why.
pub fn nats_server() -> blynk_testbed::NatsServer {
    blynk_testbed::NatsServer::start().unwrap_or_else(|error| panic!("{error}"))
}

/// Runs `blynk-server --data DATA ARGS...` (a command beside a running server, such as `key` or
/// `backup`) to its end and returns its output.
pub async fn server_command(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_blynk-server"))
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .await
        .unwrap()
}
