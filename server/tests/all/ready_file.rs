//! `--ready-file`: the document a program that starts the server reads instead of the banner, and
//! where the banner and the logs go.

use std::process::Command;

use blynk_testbed::Killed;
use blynk_testbed::server::{self, START_WITHIN, ServerCommand};

use crate::support::http;

/// The binary on `data`, every port ephemeral, its logs into `log`.
fn server_command(data: &std::path::Path, log: std::fs::File) -> Command {
    let mut command = ServerCommand::new(env!("CARGO_BIN_EXE_blynk-server"), data)
        .log("info")
        .command();
    command
        .env_remove("BLYNK_ADMIN_KEY")
        .env_remove("BLYNK_STORE")
        .stderr(log);
    command
}

/// Starts the server and reads its ready file at `ready`.
fn start(mut command: Command, ready: &std::path::Path) -> (Killed, server::Ready) {
    let (child, ready) =
        server::spawn(&mut command, ready, START_WITHIN).unwrap_or_else(|error| panic!("{error}"));
    (Killed(child), ready)
}

/// Stops the server as a supervisor does (SIGTERM) and waits for it.
fn terminate(mut server: Killed) {
    let exit = server::terminate(&mut server.0, START_WITHIN).expect("a stop within 20 s");
    assert!(exit.success(), "{exit}");
}

#[tokio::test]
async fn the_ready_file_names_the_bound_ports_and_the_admin_key_of_the_first_start_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ready = dir.path().join("ready.json");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (child, first) = start(server_command(&data, log), &ready);
    assert_ne!(first.http.port(), 0);
    assert_ne!(first.native.port(), 0);
    assert_eq!(first.mqtt, None, "MQTT is off");
    assert!(!first.tls);
    // The key made on this first start opens the app API.
    let key = first.admin_key.clone().expect("the first start's key");
    let me = http::app_with_key(first.http, &key, "GET", "/api/me", None).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let token = first.demo_token().unwrap();
    let device = http::get(first.http, &format!("/{token}/isHardwareConnected")).await;
    assert_eq!(device.status, 200, "{}", device.body);
    terminate(child);
    assert!(!ready.exists(), "a clean stop removes the ready file");

    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .unwrap();
    let (child, again) = start(server_command(&data, log), &ready);
    assert_eq!(again.admin_key, None, "only its hash is kept");
    assert_eq!(again.demo_token.as_deref(), Some(token.as_str()));
    terminate(child);

    // The logs went to standard error, without colours since it is not a terminal.
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("server listening"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "ANSI escapes in {logs}");
    assert!(!logs.contains(&key), "the admin key stays out of the logs");
}
