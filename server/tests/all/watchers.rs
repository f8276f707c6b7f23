//! SPEC 3.13 for apps that read slowly: they get the latest state, not a disconnect; only one
//! that stops reading (or lets too many unmergeable events pile up) is closed, with a reason.

use std::collections::{BTreeMap, HashMap};

use blynk_proto::Pin;
use serde_json::{Value as Json, json};

use crate::support::http::{self, AppSocket, AppSocketEnd};
use crate::support::native::{LoginOptions, NativeClient, Received};
use crate::support::{PATIENCE, TestServer, eventually};

const V1: Pin = Pin::Virtual(1);
const V2: Pin = Pin::Virtual(2);

fn quiet() -> LoginOptions {
    LoginOptions {
        sync_on_connect: false,
        ..LoginOptions::default()
    }
}

/// Writes every value and waits for all their acks (skipping whatever else the device gets).
async fn write_all(device: &mut NativeClient, values: impl IntoIterator<Item = (Pin, i64)>) {
    let mut ids = Vec::new();
    for (pin, value) in values {
        ids.push(device.write_int(pin, value).await);
    }
    wait_acks(device, ids.len()).await;
}

async fn wait_acks(device: &mut NativeClient, count: usize) {
    for _ in 0..count {
        device
            .expect("ack", |message| match message {
                Received::Ack { .. } => Some(()),
                _ => None,
            })
            .await;
    }
}

/// Adds a device whose snapshot is large (256 datastreams with long defaults, about 80 KB).
async fn add_large_device(server: &TestServer) {
    let default = "x".repeat(200);
    let mut template = String::from("name = \"large\"\n");
    for n in 0..=255 {
        template.push_str(&format!(
            "[[datastream]]\npin = \"V{n}\"\nname = \"Datastream {n}\"\ntype = \"string\"\ndefault = \"{default}\"\n"
        ));
    }
    server.add_template(&template).await;
    server.add_device("large", "large").await;
}

/// Fills the app client's buffers and the server's socket toward it with snapshots of the large
/// device (several megabytes), so that the server has to hold what comes next.
async fn fill_the_client(app: &mut AppSocket) {
    for _ in 0..100 {
        app.send(json!({ "type": "watch", "devices": ["large"] }))
            .await;
    }
}

#[tokio::test]
async fn spec_3_13_a_watcher_that_reads_late_gets_every_pin_latest_value_and_every_report() {
    const VALUES: i64 = 4_000;
    const WRITES: usize = 20;
    const PORCH_VISITS: usize = 5;
    let server = TestServer::start().await;
    server.add_device("porch", "light").await;
    add_large_device(&server).await;
    let porch_token = {
        let engine = server.server().engine();
        engine.find_device("porch").unwrap().device.token.clone()
    };
    let porch_id = server
        .server()
        .engine()
        .find_device("porch")
        .unwrap()
        .device
        .id;
    let mut app = AppSocket::connect_slow(server.http()).await;
    let snapshot = app.watch(json!(["demo"])).await;
    let demo_id = snapshot["devices"][0]["id"].as_i64().unwrap();
    let (mut device, _) = NativeClient::login(server.native(), &server.demo_token(), quiet()).await;

    // From here on the app reads nothing for a while: its own writes, thousands of device
    // values on two pins and a device coming and going pile up for it.
    fill_the_client(&mut app).await;
    for n in 0..WRITES {
        app.send(json!({ "type": "write", "id": format!("w{n}"), "device": "demo", "pin": "V0", "value": n % 2 }))
            .await;
    }
    write_all(
        &mut device,
        (1..=VALUES).map(|n| if n % 2 == 0 { (V1, n % 256) } else { (V2, n) }),
    )
    .await;
    let engine = server.server().engine();
    let porch = engine.find_device("porch").unwrap();
    for _ in 0..PORCH_VISITS {
        let (visit, _) = NativeClient::login(server.native(), &porch_token, quiet()).await;
        eventually("porch online", || porch.is_online()).await;
        drop(visit);
        eventually("porch offline", || !porch.is_online()).await;
    }

    // Now it reads.
    let mut view: HashMap<String, (Json, u64)> = HashMap::new();
    for (pin, entry) in snapshot["devices"][0]["values"].as_object().unwrap() {
        view.insert(
            pin.clone(),
            (entry["value"].clone(), entry["version"].as_u64().unwrap()),
        );
    }
    let mut last_device_version = snapshot["devices"][0]["version"].as_u64().unwrap();
    let mut counted_device_values = 0u64;
    let mut coalesced = 0u64;
    let mut stored_replies = BTreeMap::new();
    let mut final_reports = BTreeMap::new();
    let mut porch_presence = Vec::new();
    let mut stored_latest: Option<Json> = None;
    loop {
        let event = app.recv().await;
        match event["type"].as_str().unwrap() {
            "value" => {
                assert_eq!(event["device"], demo_id);
                let version = event["version"].as_u64().unwrap();
                let pin = event["pin"].as_str().unwrap().to_owned();
                let newest_of_pin = view.get(&pin).map_or(0, |(_, version)| *version);
                assert!(
                    version > newest_of_pin,
                    "order per pin: {pin} version {version} after {newest_of_pin}"
                );
                // The device's own writes, from one session, are published in version order.
                if pin != "V0" {
                    assert!(
                        version > last_device_version,
                        "version order per device: {version} after {last_device_version}"
                    );
                    last_device_version = version;
                }
                let skipped = event["coalesced"].as_u64().unwrap_or(0);
                if pin != "V0" {
                    counted_device_values += 1 + skipped;
                }
                coalesced += skipped;
                view.insert(pin, (event["value"].clone(), version));
            }
            "write" => {
                let id = event["id"].as_str().unwrap().to_owned();
                let status = event["status"].as_str().unwrap().to_owned();
                let replies = match status.as_str() {
                    "stored" | "pending" => &mut stored_replies,
                    "delivered" | "expired" | "superseded" => &mut final_reports,
                    other => panic!("write {id}: {other}: {event}"),
                };
                assert!(
                    replies.insert(id, status).is_none(),
                    "one of each per write"
                );
            }
            "presence" if event["device"] == porch_id => {
                porch_presence.push(event["online"].as_bool().unwrap());
            }
            _ => {}
        }
        let all_reported = stored_replies.len() == WRITES && final_reports.len() == WRITES;
        if all_reported && porch_presence.len() == 2 * PORCH_VISITS {
            // Every write is stored by now: the latest values cannot change any more.
            if stored_latest.is_none() {
                let values = http::app(server.http(), "GET", "/api/devices/demo/values", None);
                stored_latest = Some(values.await.json());
            }
            let stored = stored_latest.as_ref().unwrap();
            let matches = stored.as_object().unwrap().iter().all(|(pin, entry)| {
                view.get(pin).is_some_and(|(value, version)| {
                    *value == entry["value"] && Some(*version) == entry["version"].as_u64()
                })
            });
            if matches {
                break;
            }
        }
    }
    assert_eq!(
        counted_device_values, VALUES as u64,
        "every device value is received or counted as coalesced"
    );
    assert_eq!(
        porch_presence,
        [true, false].repeat(PORCH_VISITS),
        "presence is never merged away"
    );
    assert!(
        coalesced > 0,
        "the app fell behind and got merged values (else the test proves nothing)"
    );
    assert_eq!(engine.app_watchers(), 1, "the slow app is still connected");
}

#[tokio::test]
async fn spec_3_13_a_watcher_whose_unmergeable_backlog_overflows_is_closed_with_a_reason() {
    let server = TestServer::start_with(|config| {
        config.limits.watch_backlog = 16;
        config.limits.watch_stall_seconds = 5;
    })
    .await;
    add_large_device(&server).await;
    let mut app = AppSocket::connect_slow(server.http()).await;
    app.watch(json!(["demo"])).await;
    fill_the_client(&mut app).await;
    let engine = server.server().engine();
    // Properties are never merged: more of them than the backlog closes the app.
    for n in 0..1_000 {
        if engine.app_watchers() == 0 {
            break;
        }
        let path = format!(
            "/external/api/update/property?token={}&pin=V1&label=n{n}",
            server.demo_token()
        );
        assert_eq!(http::get(server.http(), &path).await.status, 200);
    }
    eventually("the server closes the app", || engine.app_watchers() == 0).await;
    assert_closed_with(&mut app, "too slow").await;
    assert_slow_app_counted(engine);
}

#[tokio::test]
async fn spec_3_13_a_watcher_that_stops_reading_is_closed_with_a_reason() {
    let server = TestServer::start_with(|config| config.limits.watch_stall_seconds = 1).await;
    add_large_device(&server).await;
    let mut app = AppSocket::connect_slow(server.http()).await;
    app.watch(json!(["demo"])).await;
    fill_the_client(&mut app).await;
    let engine = server.server().engine();
    eventually("the server closes the app", || engine.app_watchers() == 0).await;
    assert_closed_with(&mut app, "read nothing").await;
    assert_slow_app_counted(engine);
}

/// The metrics count the app closed for being slow (counted before its close frame is sent).
fn assert_slow_app_counted(engine: &blynk_server::engine::Engine) {
    let metrics = engine.render_metrics();
    assert!(
        metrics
            .lines()
            .any(|line| line == "blynk_slow_sessions_closed_total{client=\"app\"} 1"),
        "{metrics}"
    );
}

/// Reads what the server had sent, then expects its close frame: code 1008 and the reason.
async fn assert_closed_with(app: &mut AppSocket, reason: &str) {
    // Bounded: the client's buffers hold far fewer messages than this.
    for _ in 0..100_000 {
        match app.next_event(PATIENCE).await {
            Ok(_) => continue,
            Err(AppSocketEnd::Closed(code, text)) => {
                assert_eq!(code, 1008);
                assert!(text.contains(reason), "close reason: {text}");
                return;
            }
            Err(AppSocketEnd::Dropped(why)) => panic!("closed without a close frame: {why}"),
        }
    }
    panic!("no close frame");
}
