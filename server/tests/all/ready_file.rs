//! `--ready-file`: the document a program that starts the server reads instead of the banner, and
//! where the banner and the logs go.

use tokio::process::Command;

use crate::support::http;
use crate::support::process::ServerProcess;

/// The binary on `data`, every port ephemeral, its logs into `log`.
fn server_command(data: &std::path::Path, log: std::fs::File) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_blynk-server"));
    command
        .args([
            "--bind",
            "127.0.0.1",
            "--http-port",
            "0",
            "--native-port",
            "0",
        ])
        .args(["--mqtt-port", "0", "--data"])
        .arg(data)
        .env("BLYNK_LOG", "info")
        .env_remove("BLYNK_ADMIN_KEY")
        .env_remove("BLYNK_STORE")
        .stderr(log);
    command
}

/// Stops the server as a supervisor does (SIGTERM) and waits for it.
async fn terminate(mut server: ServerProcess) {
    let pid = server.child.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = server.child.wait().await.unwrap();
    assert!(exit.success(), "{exit}");
}

#[tokio::test]
async fn the_ready_file_names_the_bound_ports_and_the_admin_key_of_the_first_start_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ready = dir.path().join("ready.json");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let first = ServerProcess::start(server_command(&data, log), &ready).await;
    assert_ne!(first.ready.http.port(), 0);
    assert_ne!(first.ready.native.port(), 0);
    assert_eq!(first.ready.mqtt, None, "MQTT is off");
    assert!(!first.ready.tls);
    // The key made on this first start opens the app API.
    let key = first
        .ready
        .admin_key
        .clone()
        .expect("the first start's key");
    let me = http::app_with_key(first.ready.http, &key, "GET", "/api/me", None).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let token = first.demo_token();
    let device = http::get(first.ready.http, &format!("/{token}/isHardwareConnected")).await;
    assert_eq!(device.status, 200, "{}", device.body);
    terminate(first).await;
    assert!(!ready.exists(), "a clean stop removes the ready file");

    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .unwrap();
    let again = ServerProcess::start(server_command(&data, log), &ready).await;
    assert_eq!(again.ready.admin_key, None, "only its hash is kept");
    assert_eq!(again.ready.demo_token.as_deref(), Some(token.as_str()));
    terminate(again).await;

    // The logs went to standard error, without colours since it is not a terminal.
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("server listening"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "ANSI escapes in {logs}");
    assert!(!logs.contains(&key), "the admin key stays out of the logs");
}
