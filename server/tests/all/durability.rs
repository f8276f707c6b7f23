//! SPEC 3.10: what the server acknowledged survives `kill -9` and a restart. The server runs as
//! its own process (the real binary) so that it can be killed.

use std::net::SocketAddr;
use std::path::Path;

use blynk_proto::Pin;
use blynk_testbed::Killed;
use blynk_testbed::server::{self, START_WITHIN, ServerCommand};
use serde_json::json;
use tokio::process::Command;

use rumqttc::QoS;

use crate::support::mqtt::{MqttDevice, Options};
use crate::support::native::{LoginOptions, NativeClient, Received};
use crate::support::{PATIENCE, http};

/// A server process, killed when dropped.
struct Process {
    child: Killed,
    http: SocketAddr,
    native: SocketAddr,
    mqtt: SocketAddr,
    token: String,
}

/// Starts the binary on `data` with ephemeral ports and reads its ready file.
fn start(data: &Path) -> Process {
    start_on(data, None)
}

/// Like [`start`], on the PostgreSQL database `store` when given (through `BLYNK_STORE`, the
/// setting's environment form).
fn start_on(data: &Path, store: Option<&str>) -> Process {
    let mut command = ServerCommand::new(env!("CARGO_BIN_EXE_blynk-server"), data)
        .mqtt_on_a_free_port()
        .unwrap()
        // Its logs go to the test's standard error, which no test captures: errors only (each
        // crash makes the next start warn of it).
        .log("error")
        .command();
    match store {
        Some(url) => command.env("BLYNK_STORE", url),
        None => command.env_remove("BLYNK_STORE"),
    };
    let (child, ready) = server::spawn(&mut command, &data.join("ready.json"), START_WITHIN)
        .unwrap_or_else(|error| panic!("{error}"));
    Process {
        http: ready.http,
        native: ready.native,
        mqtt: ready.mqtt().unwrap(),
        token: ready.demo_token().unwrap(),
        child: Killed(child),
    }
}

/// A new admin key for the data directory (`key rotate`, which a running server honours: the
/// key is stored hashed, so no command can print the one made at first start).
async fn admin_key(data: &Path) -> String {
    admin_key_on(data, None).await
}

async fn admin_key_on(data: &Path, store: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_blynk-server"));
    if let Some(url) = store {
        command.args(["--store", url]);
    }
    let output = command
        .arg("--data")
        .arg(data)
        .args(["key", "rotate"])
        .output()
        .await
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn spec_3_10_acknowledged_writes_survive_kill_9_and_restart() {
    acknowledged_writes_survive_kill_9_and_restart(None).await;
}

#[tokio::test]
async fn spec_3_10_acknowledged_writes_survive_kill_9_and_restart_on_postgres() {
    let url = blynk_testbed::postgres::shared().fresh_database();
    acknowledged_writes_survive_kill_9_and_restart(Some(&url)).await;
}

async fn acknowledged_writes_survive_kill_9_and_restart(store: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_on(dir.path(), store);
    let options = LoginOptions {
        sync_on_connect: false,
        ..LoginOptions::default()
    };
    let (mut device, _) = NativeClient::login(server.native, &server.token, options).await;
    // Pipelined writes: all in flight at once, so they share group commits.
    let mut ids = Vec::new();
    for value in 0..200 {
        ids.push(device.write_int(Pin::Virtual(1), value % 256).await);
    }
    let mut acked = 0;
    while acked < ids.len() {
        device
            .expect("ack", |m| matches!(m, Received::Ack { .. }).then_some(()))
            .await;
        acked += 1;
    }
    // MQTT with QoS 1: the PUBACK comes only once the write is durable, so every publish
    // acknowledged here must survive the crash.
    let (mut mqtt, _) = MqttDevice::connect(server.mqtt, &server.token, Options::default()).await;
    for value in 0..100 {
        mqtt.publish("ds/Uptime", QoS::AtLeastOnce, value.to_string())
            .await;
    }
    for _ in 0..100 {
        mqtt.expect("PUBACK", |packet| {
            matches!(packet, rumqttc::Incoming::PubAck(_)).then_some(())
        })
        .await;
    }
    let update = http::get(
        server.http,
        &format!("/external/api/update?token={}&v0=1", server.token),
    )
    .await;
    assert_eq!(update.status, 200);

    server.child.kill();

    // On PostgreSQL, a new data directory: the state is all in the database.
    let other_dir = tempfile::tempdir().unwrap();
    let data = if store.is_some() {
        other_dir.path()
    } else {
        dir.path()
    };
    let restarted = start_on(data, store);
    let key = admin_key_on(data, store).await;
    let auth = format!("Bearer {key}");
    let values = http::request(
        restarted.http,
        "GET",
        "/api/devices/demo/values",
        &[("Authorization", &auth)],
        None,
    )
    .await
    .json();
    assert_eq!(values["V1"]["value"], json!(199));
    assert_eq!(values["V0"]["value"], json!(1));
    assert_eq!(
        values["V2"]["value"],
        json!(99),
        "every PUBACKed MQTT write"
    );
    let history = http::request(
        restarted.http,
        "GET",
        "/api/devices/demo/history/V1?limit=1000",
        &[("Authorization", &auth)],
        None,
    )
    .await
    .json();
    assert_eq!(
        history.as_array().unwrap().len(),
        200,
        "every acknowledged write is in the history"
    );
}

#[tokio::test]
async fn a_device_added_from_the_command_line_logs_in_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_blynk-server"))
        .arg("--data")
        .arg(dir.path())
        .args(["device", "add", "--template", "light", "--name", "kitchen"])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(
        blynk_proto::text::is_token(&token),
        "prints the token: {token}"
    );
    // The running server picks the device up within two seconds.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let reply = http::get(server.http, &format!("/{token}/isHardwareConnected")).await;
        if reply.status == 200 {
            assert_eq!(reply.body, "false");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new device was never picked up: {}",
            reply.body
        );
        // Slowly: each miss counts as a failed login for this address.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// An app WebSocket on a server process, with its admin key.
async fn app_socket(
    server: &Process,
    key: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://{}/api/ws?key={key}", server.http);
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The latest value and version of a pin of the demo device.
async fn latest(server: &Process, key: &str, pin: &str) -> (serde_json::Value, u64) {
    let values = http::request(
        server.http,
        "GET",
        "/api/devices/demo/values",
        &[("Authorization", &format!("Bearer {key}"))],
        None,
    )
    .await
    .json();
    let version = values[pin]["version"].as_u64().expect("a version");
    (values[pin]["value"].clone(), version)
}

/// Streams app writes to a native device of a server process and kills the server with
/// `kill -9` mid-stream. Returns the last `V1` value and version the device received.
async fn crash_mid_stream(mut server: Process, key: &str, known: Option<u64>) -> (String, u64) {
    use futures_util::SinkExt;
    let options = LoginOptions {
        sync_on_connect: known.is_some(),
        known_version: known,
        ..LoginOptions::default()
    };
    let (mut device, _) = NativeClient::login(server.native, &server.token, options).await;
    if known.is_some() {
        device.collect_sync(0).await;
    }
    // App writes pipelined as fast as the socket takes them: each is forwarded to the device
    // before it commits, so killing the server mid-stream loses some the device has seen. Fewer
    // than a device session's send queue holds, so a slow scheduler cannot make it overflow.
    let mut app = app_socket(&server, key).await;
    for value in 0..200 {
        let write = json!({ "type": "write", "id": value, "device": "demo", "pin": "V1", "value": value % 256 });
        app.send(tokio_tungstenite::tungstenite::Message::Text(
            write.to_string().into(),
        ))
        .await
        .unwrap();
    }
    let mut seen = None;
    let update = |message: &Received| match message {
        Received::Update {
            pin: Pin::Virtual(1),
            value,
            version,
        } => Some((value[0].clone(), *version)),
        _ => None,
    };
    // Until the device has seen the 100th write or a later one: a session that falls behind
    // gets the latest value of a pin rather than every one, so fewer than 100 updates may come.
    for _ in 0..200 {
        let (value, version) = device.expect("an app write", update).await;
        let reached = value.parse::<i64>().is_ok_and(|value| value >= 99);
        seen = Some((value, version));
        if reached {
            break;
        }
    }
    server.child.kill();
    // What the server had already sent before it died counts as seen too.
    while let Ok(Some(message)) = device
        .recv_within(std::time::Duration::from_millis(200))
        .await
    {
        if let Some(update) = update(&message) {
            seen = Some(update);
        }
    }
    seen.unwrap()
}

#[tokio::test]
async fn spec_3_10_crashes_reuse_no_version_and_a_device_that_saw_a_lost_one_is_fully_resynced() {
    let dir = tempfile::tempdir().unwrap();
    let key = admin_key(dir.path()).await;
    // Two crashes in a row: the second run's versions, forwarded and lost too, must not
    // collide with the third run's either.
    let (_, first_seen) = crash_mid_stream(start(dir.path()), &key, None).await;
    let (seen_value, seen_version) =
        crash_mid_stream(start(dir.path()), &key, Some(first_seen)).await;
    assert!(seen_version > first_seen);

    let restarted = start(dir.path());
    let options = LoginOptions {
        sync_on_connect: true,
        known_version: Some(seen_version),
        ..LoginOptions::default()
    };
    let (mut device, _) = NativeClient::login(restarted.native, &restarted.token, options).await;
    let (synced, _) = device.collect_sync(0).await;
    let device_value = synced
        .iter()
        .find(|(pin, _)| *pin == Pin::Virtual(1))
        .map_or(seen_value, |(_, value)| value[0].clone());
    let (server_value, _) = latest(&restarted, &key, "V1").await;
    assert_eq!(
        json!(device_value.parse::<i64>().unwrap()),
        server_value,
        "after the sync the device holds the server's durable value"
    );

    let update = http::get(
        restarted.http,
        &format!("/external/api/update?token={}&v1=7", restarted.token),
    )
    .await;
    assert_eq!(update.status, 200);
    let (_, new_version) = latest(&restarted, &key, "V1").await;
    assert!(
        new_version > seen_version,
        "a version seen before a crash ({seen_version}) is not handed out again ({new_version})"
    );
}

#[tokio::test]
async fn spec_3_10_a_clean_restart_goes_on_from_the_durable_versions() {
    let mut server = crate::support::TestServer::start().await;
    let first = http::app_write(&server, "V1", json!(10)).await;
    server.restart().await;
    let second = http::app_write(&server, "V1", json!(11)).await;
    let (first, second) = (
        first["version"].as_u64().unwrap(),
        second["version"].as_u64().unwrap(),
    );
    assert_eq!(
        second,
        first + 1,
        "after a clean shutdown no version was lost, so none is skipped"
    );
}
