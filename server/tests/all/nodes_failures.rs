//! Several nodes when things fail (SPEC 7): a node killed with `kill -9` under load, the bus
//! stopped and started again, two nodes writing to one device at once. Nodes share one store
//! (`Store`: one SQLite file here, PostgreSQL in `nodes_postgres.rs`) and a real nats-server.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use blynk_proto::Pin;
use serde_json::json;
use tokio::sync::Mutex;

use crate::support::cluster::{Store, next_update_or_sync, node, wait_presence};
use crate::support::http::{Response, app};
use crate::support::native::{LoginOptions, NativeClient, Received};
use crate::support::node::NodeProcess;
use crate::support::{PATIENCE, TestServer, nats_server};

/// Per device, the versions and values of its acknowledged writes.
type Acknowledged = HashMap<i64, Vec<(u64, i64)>>;

/// Devices' heartbeat in these tests (seconds): a node's lease is 1.5 of it.
const HEARTBEAT: u16 = 2;

/// SPEC 7: `kill -9` of the node holding 100 devices under write load loses no acknowledged
/// write; the devices go offline within 2.3 heartbeats, come back on another node, and are
/// restored there.
pub async fn node_killed_under_load(store: Store) {
    const DEVICES: usize = 100;
    let nats = nats_server();
    let survivor = node(&store, &nats.url(), HEARTBEAT).await;
    let engine = survivor.server().engine().clone();
    let template = engine.find_template("light").unwrap();
    let mut tokens = Vec::new();
    for index in 0..DEVICES {
        let slot = engine
            .create_device(&format!("unit-{index}"), &template)
            .await
            .unwrap();
        tokens.push((slot.device.id, slot.device.token.clone()));
    }
    let mut victim =
        NodeProcess::start(store.dir.path(), &nats.url(), HEARTBEAT, &store.toml()).await;

    // Every device on the victim, writing V1 as fast as it is acknowledged.
    let acknowledged: Arc<Mutex<Acknowledged>> = Arc::default();
    let mut writers = tokio::task::JoinSet::new();
    for (device, token) in tokens.clone() {
        let (mut client, _) =
            NativeClient::login(victim.native, &token, LoginOptions::default()).await;
        let acknowledged = acknowledged.clone();
        writers.spawn(async move {
            for value in 1.. {
                // V1 holds 0 to 255.
                let value = value % 200;
                let id = client.write_int(Pin::Virtual(1), value).await;
                loop {
                    match client.recv_within(PATIENCE).await {
                        Ok(Some(Received::Ack {
                            id: got,
                            version: Some(version),
                        })) if got == id => {
                            acknowledged
                                .lock()
                                .await
                                .entry(device)
                                .or_default()
                                .push((version, value));
                            break;
                        }
                        Ok(Some(_)) => {}
                        // Closed by the kill (or silent): stop.
                        Ok(None) | Err(()) => return,
                    }
                }
            }
        });
    }
    for index in [0, DEVICES / 2, DEVICES - 1] {
        wait_presence(&survivor, &format!("unit-{index}"), true).await;
    }
    // App writes through the survivor, routed to the victim, at the same time.
    let app_acknowledged: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let app_writer = {
        let app_acknowledged = app_acknowledged.clone();
        let http = survivor.http();
        tokio::spawn(async move {
            for round in 0u64.. {
                let name = format!("unit-{}", round as usize % DEVICES);
                let response = app(
                    http,
                    "PUT",
                    &format!("/api/devices/{name}/values/V0"),
                    Some(json!({ "value": round % 2 })),
                )
                .await;
                if response.status == 200 {
                    let version = response.json()["version"].as_u64().unwrap();
                    app_acknowledged.lock().await.push((name, version));
                }
            }
        })
    };
    // Under load for a moment, then killed.
    let loaded_until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < loaded_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    victim.kill();
    let killed_at = tokio::time::Instant::now();
    while writers.join_next().await.is_some() {}

    // Offline everywhere within 2.3 heartbeats, though nobody told the survivor.
    for index in 0..DEVICES {
        wait_presence(&survivor, &format!("unit-{index}"), false).await;
    }
    let offline_after = killed_at.elapsed();
    assert!(
        offline_after < Duration::from_millis(2300 * u64::from(HEARTBEAT)),
        "offline only after {offline_after:?}"
    );
    app_writer.abort();

    // Every acknowledged write is in the store.
    let acknowledged = acknowledged.lock().await.clone();
    assert!(
        acknowledged.values().map(Vec::len).sum::<usize>() > DEVICES,
        "the load ran"
    );
    for (device, writes) in &acknowledged {
        let history = crate::support::settle_history(&survivor, *device, Pin::Virtual(1)).await;
        let stored: HashMap<u64, String> = history
            .into_iter()
            .map(|point| (point.version, point.value.to_json().to_string()))
            .collect();
        for (version, value) in writes {
            assert_eq!(
                stored.get(version),
                Some(&value.to_string()),
                "device {device}: acknowledged write {value} (version {version}) lost"
            );
        }
    }
    let app_acknowledged = app_acknowledged.lock().await.clone();
    assert!(!app_acknowledged.is_empty(), "the app load ran");
    for (name, version) in &app_acknowledged {
        let slot = engine.find_device(name).unwrap();
        let history =
            crate::support::settle_history(&survivor, slot.device.id, Pin::Virtual(0)).await;
        assert!(
            history.iter().any(|point| point.version == *version),
            "{name}: acknowledged app write (version {version}) lost"
        );
    }

    // The devices come back on the survivor and are restored to what the store holds.
    for (device, token) in &tokens {
        let (mut client, _) =
            NativeClient::login(survivor.native(), token, LoginOptions::default()).await;
        let (value, version) = next_update_or_sync(&mut client, Pin::Virtual(1)).await;
        let latest = crate::support::settle_history(&survivor, *device, Pin::Virtual(1)).await;
        let newest = latest.iter().max_by_key(|point| point.version).unwrap();
        assert_eq!(
            version, newest.version,
            "device {device} restored to the newest value"
        );
        assert_eq!(value, vec![newest.value.to_json().to_string()]);
        if let Some(writes) = acknowledged.get(device) {
            let last_acknowledged = writes.iter().map(|(v, _)| *v).max().unwrap();
            assert!(version >= last_acknowledged);
        }
        // Its next write gets a version above every one handed out before the kill.
        let id = client.write_int(Pin::Virtual(1), -1).await;
        let next = client
            .expect("an ack", |received| match received {
                Received::Ack { id: got, version } if *got == id => Some(*version),
                _ => None,
            })
            .await
            .unwrap();
        assert!(
            next > version,
            "device {device}: version {next} after {version}"
        );
        // Online again.
        let name = engine.device(*device).unwrap().device.name.clone();
        wait_presence(&survivor, &name, true).await;
    }
}

/// SPEC 7: the bus stopped for 5 s then started again, then (on PostgreSQL) the database
/// restarted: clear errors while either is down, and everything converges afterwards without
/// restarting a node.
pub async fn bus_outage(store: Store, database: Option<&blynk_testbed::Postgres>) {
    let nats = nats_server();
    let a = node(&store, &nats.url(), HEARTBEAT).await;
    let b = node(&store, &nats.url(), HEARTBEAT).await;
    let token = a.demo_token();
    let (mut device, _) = NativeClient::login(a.native(), &token, LoginOptions::default()).await;
    wait_presence(&b, "demo", true).await;

    nats.stop();
    // A write through B cannot reach the device's node: a clear error, not a hang.
    let response = put_demo_v1(&b, json!({ "value": 3 })).await;
    assert_ne!(response.status, 200, "{}", response.body);
    assert!(
        response.body.contains("bus") || response.body.contains("node"),
        "{}",
        response.body
    );
    // The device goes on writing to its own node meanwhile; B cannot hear it.
    let id = device.write_int(Pin::Virtual(1), 200).await;
    let written = device
        .expect("an ack", |received| match received {
            Received::Ack { id: got, version } if *got == id => Some(*version),
            _ => None,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    nats.resume().unwrap_or_else(|error| panic!("{error}"));

    // Without restarting a node: B reads what it missed from the store, and writes flow again.
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    loop {
        let values = app(b.http(), "GET", "/api/devices/demo/values", None)
            .await
            .json();
        if values["V1"]["version"] == json!(written) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never caught up: {values}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    write_until_delivered(&b, &mut device, 4, PATIENCE * 2, Duration::from_millis(100)).await;

    let Some(database) = database else {
        return;
    };
    database.stop();
    // Nothing is acknowledged while the store is away, and the error says why.
    let response = put_demo_v1(&b, json!({ "value": 5 })).await;
    assert_ne!(response.status, 200, "{}", response.body);
    let id = device.write_int(Pin::Virtual(1), 6).await;
    let refused = device
        .expect("an answer", |received| match received {
            Received::Ack { id: got, version } if *got == id => Some(format!("ack {version:?}")),
            Received::Error { id: got, .. } if *got == id => Some("error".to_owned()),
            _ => None,
        })
        .await;
    assert_eq!(refused, "error");
    database.resume().unwrap();
    // Back without restarting a node: writes from B reach the device on A again.
    write_until_delivered(&b, &mut device, 7, PATIENCE * 3, Duration::from_millis(200)).await;
    wait_presence(&b, "demo", true).await;
}

/// `PUT /api/devices/demo/values/V1` with `body` through `node`.
async fn put_demo_v1(node: &TestServer, body: serde_json::Value) -> Response {
    app(
        node.http(),
        "PUT",
        "/api/devices/demo/values/V1",
        Some(body),
    )
    .await
}

/// Writes `value` to the demo device's V1 through `node`, again every `pause` while the write is
/// refused (a bus or store coming back), until it is delivered within `patience`; then the
/// device must receive it.
async fn write_until_delivered(
    node: &TestServer,
    device: &mut NativeClient,
    value: i64,
    patience: Duration,
    pause: Duration,
) {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let response = put_demo_v1(node, json!({ "value": value, "wait_ms": 1000 })).await;
        if response.status == 200 {
            assert_eq!(response.json()["status"], "delivered", "{}", response.body);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes never resumed: {}",
            response.body
        );
        tokio::time::sleep(pause).await;
    }
    let (received, _) = crate::support::cluster::next_update(device, Pin::Virtual(1)).await;
    assert_eq!(received, vec![value.to_string()]);
}

/// SPEC 7: a write the bus client held while the bus was away reaches the device's node after
/// its sender has answered the app with an error: the holder refuses it, so a write the user
/// was told failed never lands later over newer values.
pub async fn late_write_is_refused(store: Store) {
    let nats = nats_server();
    let a = node(&store, &nats.url(), HEARTBEAT).await;
    let b = node(&store, &nats.url(), HEARTBEAT).await;
    let token = a.demo_token();
    let (mut device, _) = NativeClient::login(a.native(), &token, LoginOptions::default()).await;
    wait_presence(&b, "demo", true).await;
    let device_id = a.server().engine().find_device("demo").unwrap().device.id;

    // What a node's bus client sends once the bus is back: a request made seconds ago, whose
    // sender stopped waiting for the answer long since.
    let made_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 5_000;
    let request = json!({
        "pin": "V1",
        "value": "3",
        "origin": "app",
        "expires_at": made_at + 1_000,
    });
    let bus = async_nats::connect(nats.url()).await.unwrap();
    let reply = bus
        .request(
            format!("blynk.dev.{device_id}.write"),
            serde_json::to_vec(&request).unwrap().into(),
        )
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["kind"], "failed", "{reply}");

    // The device gets the next write and never the late one, and its node holds the next one.
    write_until_delivered(&b, &mut device, 4, PATIENCE, Duration::from_millis(100)).await;
    let values = app(a.http(), "GET", "/api/devices/demo/values", None)
        .await
        .json();
    assert_eq!(values["V1"]["value"], json!(4), "{values}");
}

/// SPEC 7 and 3.13: two nodes writing one device at once, held by a node and then by none:
/// versions unique and ordered, and every node's view equals the store's at the end.
pub async fn two_nodes_write_one_device(store: Store) {
    const WRITES: u64 = 40;
    let nats = nats_server();
    let a = node(&store, &nats.url(), HEARTBEAT).await;
    let b = node(&store, &nats.url(), HEARTBEAT).await;
    let token = a.demo_token();
    let (device, _) = NativeClient::login(a.native(), &token, LoginOptions::default()).await;
    wait_presence(&b, "demo", true).await;
    let mut device = Some(device);
    let mut versions = Vec::new();
    for phase in ["held by A", "held by none"] {
        if phase == "held by none" {
            drop(device.take());
            wait_presence(&b, "demo", false).await;
            wait_presence(&a, "demo", false).await;
        }
        // Held by none, no device can receive a write: no waiting for its delivery (the
        // default wait is a second per write).
        let wait_ms = if phase == "held by none" { 0 } else { 1000 };
        let mut tasks = tokio::task::JoinSet::new();
        for (node, http) in [("a", a.http()), ("b", b.http())] {
            tasks.spawn(async move {
                let mut got = Vec::new();
                for round in 0..WRITES {
                    let value = format!("{node}{round}");
                    let response = app(
                        http,
                        "PUT",
                        "/api/devices/demo/values/V3",
                        Some(json!({ "value": value, "wait_ms": wait_ms })),
                    )
                    .await;
                    assert_eq!(response.status, 200, "{}", response.body);
                    got.push((response.json()["version"].as_u64().unwrap(), value));
                }
                got
            });
        }
        let mut phase_versions = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let got = done.unwrap();
            assert!(
                got.windows(2).all(|pair| pair[0].0 < pair[1].0),
                "{phase}: one writer's versions increase"
            );
            phase_versions.extend(got);
        }
        versions.extend(phase_versions);
    }
    let distinct: HashSet<u64> = versions.iter().map(|(version, _)| *version).collect();
    assert_eq!(
        distinct.len(),
        versions.len(),
        "versions unique across nodes"
    );
    // Each version holds the value written with it, and the newest is every node's view.
    let device_id = a.server().engine().find_device("demo").unwrap().device.id;
    let history = crate::support::settle_history(&a, device_id, Pin::Virtual(3)).await;
    let stored: HashMap<u64, String> = history
        .iter()
        .map(|point| (point.version, point.value.to_json().to_string()))
        .collect();
    for (version, value) in &versions {
        assert_eq!(
            stored.get(version),
            Some(&json!(value).to_string()),
            "version {version}"
        );
    }
    let newest = history.iter().max_by_key(|point| point.version).unwrap();
    for node in [&a, &b] {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let values = app(node.http(), "GET", "/api/devices/demo/values", None)
                .await
                .json();
            if values["V3"]["version"] == json!(newest.version) {
                assert_eq!(values["V3"]["value"], newest.value.to_json());
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a node's view differs: {values}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_7_a_node_killed_under_load_loses_no_acknowledged_write_sqlite() {
    node_killed_under_load(Store::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_7_the_bus_stopped_for_5_s_then_everything_converges_sqlite() {
    bus_outage(Store::sqlite(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_7_two_nodes_writing_one_device_keep_versions_unique_sqlite() {
    two_nodes_write_one_device(Store::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_7_a_write_reported_failed_while_the_bus_was_down_is_never_applied_later_sqlite() {
    late_write_is_refused(Store::sqlite()).await;
}
