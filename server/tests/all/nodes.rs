//! Several nodes on one store, linked by a real nats-server (SPEC 7): writes routed to the node
//! holding the device, events and presence on every node, a device moving between nodes.
//! These nodes share one SQLite file on this machine; `nodes_postgres.rs` runs them on
//! PostgreSQL, as several machines would.

use std::time::Duration;

use blynk_proto::Pin;
use serde_json::json;

use crate::support::PATIENCE;
use crate::support::cluster::{Nodes, Store, next_update, next_update_or_sync, wait_presence};
use crate::support::http::{AppSocket, app, write_value};
use crate::support::native::{LoginOptions, NativeClient, Received};

/// SPEC 7: a device on node A, apps and HTTP clients on B and C.
pub async fn device_on_one_node_writes_on_the_others(store: Store) {
    let cluster = Nodes::start(&store, 3, 10).await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let token = a.demo_token();
    let mut watcher_b = AppSocket::connect(b.http()).await;
    watcher_b.watch(json!(["demo"])).await;
    let mut watcher_c = AppSocket::connect(c.http()).await;
    watcher_c.watch(json!(["demo"])).await;

    let (mut device_a, _) = NativeClient::login(a.native(), &token, LoginOptions::default()).await;
    // Presence is seen on every node.
    for node in [b, c] {
        wait_presence(node, "demo", true).await;
    }
    watcher_b
        .expect(|event| event["type"] == "presence" && event["online"] == true)
        .await;

    // An app write on B reaches the device on A, and B's app hears it was delivered.
    let written = write_value(b.http(), "demo", "V1", json!(42), 2000).await;
    let (value, version) = next_update(&mut device_a, Pin::Virtual(1)).await;
    assert_eq!(value, vec!["42".to_string()]);
    assert_eq!(written["version"], json!(version));
    assert_eq!(written["status"], "delivered", "{written}");
    assert_eq!(written["device_online"], true);

    // The HTTP device API on C too.
    let response = app(
        c.http(),
        "GET",
        &format!("/external/api/update?token={token}&V1=77"),
        None,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let (value, _) = next_update(&mut device_a, Pin::Virtual(1)).await;
    assert_eq!(value, vec!["77".to_string()]);

    // A device write on A reaches the apps on B and C.
    device_a.write_int(Pin::Virtual(1), 9).await;
    for watcher in [&mut watcher_b, &mut watcher_c] {
        watcher
            .expect(|event| event["type"] == "value" && event["pin"] == "V1" && event["value"] == 9)
            .await;
    }
    // Offline everywhere once it leaves.
    drop(device_a);
    for node in [b, c] {
        wait_presence(node, "demo", false).await;
    }
}

/// SPEC 7 and 3.2: a write while no node holds the device waits for its sync, on another node.
pub async fn unheld_write_then_sync_elsewhere(store: Store) {
    let cluster = Nodes::start(&store, 2, 10).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let token = a.demo_token();
    // Held by A, then gone: B's write finds no holder and is stored.
    let (device_a, _) = NativeClient::login(a.native(), &token, LoginOptions::default()).await;
    wait_presence(b, "demo", true).await;
    drop(device_a);
    wait_presence(b, "demo", false).await;
    let written = write_value(b.http(), "demo", "V1", json!(5), 0).await;
    assert_eq!(written["device_online"], false, "{written}");
    // The device comes back on B (the other node): it gets the write in its sync, and the
    // versions it holds go on from there.
    let (mut device_b, _) = NativeClient::login(b.native(), &token, LoginOptions::default()).await;
    let (value, version) = next_update_or_sync(&mut device_b, Pin::Virtual(1)).await;
    assert_eq!(value, vec!["5".to_string()]);
    assert_eq!(json!(version), written["version"]);
    let later = write_value(a.http(), "demo", "V1", json!(6), 2000).await;
    assert!(
        later["version"].as_u64() > written["version"].as_u64(),
        "{later}"
    );
    assert_eq!(later["status"], "delivered", "{later}");
}

/// SPEC 7: templates and devices added on one node appear on the others at once.
pub async fn added_devices_appear_everywhere(store: Store) {
    let cluster = Nodes::start(&store, 2, 10).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let token = a.add_device("porch", "light").await;
    // No polling: B knows it as soon as the bus says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        if app(b.http(), "GET", "/api/devices/porch", None)
            .await
            .status
            == 200
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never learnt of the device"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_device, result) = NativeClient::login(b.native(), &token, LoginOptions::default()).await;
    assert!(
        matches!(result, blynk_proto::native::LoginResult::Accepted { .. }),
        "{result:?}"
    );

    // A device created through A logs in on B at once, and an app uses it through C (here B
    // again) at once, without waiting for the bus: a node looks in the store for a device or
    // token it does not know yet.
    let created = app(
        a.http(),
        "POST",
        "/api/devices",
        Some(json!({ "name": "gate", "template": "light" })),
    )
    .await;
    assert!(matches!(created.status, 200 | 201), "{}", created.body);
    let token = created.json()["token"].as_str().unwrap().to_owned();
    let (_gate, result) = NativeClient::login(b.native(), &token, LoginOptions::default()).await;
    assert!(
        matches!(result, blynk_proto::native::LoginResult::Accepted { .. }),
        "{result:?}"
    );
    let written = app(
        b.http(),
        "PUT",
        "/api/devices/gate/values/V1",
        Some(json!({ "value": 7 })),
    )
    .await;
    assert_eq!(written.status, 200, "{}", written.body);
}

/// SPEC 7: an app write through B just as the device leaves its node A is answered (stored
/// for the device's next sync), never left to time out: A answers the requests that reach it
/// after the release "not held", and B then stores the write itself.
pub async fn write_as_the_device_leaves(store: Store) {
    let cluster = Nodes::start(&store, 2, 10).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let token = a.demo_token();
    for value in 0..6 {
        let (device, _) = NativeClient::login(a.native(), &token, LoginOptions::default()).await;
        drop(device);
        // No waiting for a delivery that cannot come (the default wait is a second).
        let response = app(
            b.http(),
            "PUT",
            "/api/devices/demo/values/V1",
            Some(json!({ "value": value, "wait_ms": 0 })),
        )
        .await;
        assert_eq!(response.status, 200, "write {value}: {}", response.body);
    }
    let (mut device, _) = NativeClient::login(a.native(), &token, LoginOptions::default()).await;
    let (value, _) = next_update_or_sync(&mut device, Pin::Virtual(1)).await;
    assert_eq!(
        value,
        vec!["5".to_string()],
        "the last write is the one kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_7_device_on_one_node_app_and_http_writes_on_the_others() {
    device_on_one_node_writes_on_the_others(Store::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_7_a_write_while_no_node_holds_the_device_waits_for_its_sync_on_another_node() {
    unheld_write_then_sync_elsewhere(Store::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_7_an_app_write_as_the_device_leaves_its_node_is_answered() {
    write_as_the_device_leaves(Store::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_7_templates_and_devices_added_on_one_node_appear_on_the_others_at_once() {
    added_devices_appear_everywhere(Store::sqlite()).await;
}

/// `docs/operations.md`: two nodes behind HAProxy (TCP mode). A device connects through it,
/// apps on either node reach it; when its node stops, it connects through HAProxy again, lands
/// on the other node and is restored there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_behind_haproxy_serve_a_device_through_it() {
    let store = Store::sqlite();
    let mut cluster = Nodes::start(&store, 2, 10).await;
    let proxy = crate::support::haproxy::HaProxy::start(&[
        cluster.nodes[0].native(),
        cluster.nodes[1].native(),
    ])
    .await;
    let token = cluster.nodes[0].demo_token();
    let (mut device, _) = NativeClient::login(proxy.address, &token, LoginOptions::default()).await;
    for node in &cluster.nodes {
        wait_presence(node, "demo", true).await;
    }
    let holder = cluster
        .nodes
        .iter()
        .position(|node| {
            node.server()
                .engine()
                .find_device("demo")
                .unwrap()
                .protocol()
                .is_some()
        })
        .expect("one node holds the device");
    let other = 1 - holder;
    let written = write_value(cluster.nodes[other].http(), "demo", "V1", json!(12), 2000).await;
    assert_eq!(written["status"], "delivered", "{written}");
    let (value, _) = next_update(&mut device, Pin::Virtual(1)).await;
    assert_eq!(value, vec!["12".to_string()]);

    // Its node stops: the device reconnects through HAProxy and lands on the other one.
    cluster.nodes[holder].stop().await;
    device.expect_closed().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut device = loop {
        let mut client = NativeClient::connect(proxy.address).await;
        let login = blynk_proto::native::Message::Login(blynk_proto::native::Login {
            protocol: blynk_proto::native::PROTOCOL_VERSION,
            token: blynk_proto::text::Token::new(&token).unwrap(),
            info: blynk_proto::native::DeviceInfo {
                firmware: blynk_proto::text::BoundedStr::new("test-1.0").unwrap(),
                rx_buffer: 2048,
                heartbeat_seconds: 10,
                sync_on_connect: true,
                known_version: None,
            },
        });
        client.send(&login).await;
        if let Ok(Some(Received::LoginResult(_))) = client.recv_within(PATIENCE).await {
            break client;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the device never got through HAProxy to the other node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (value, _) = next_update_or_sync(&mut device, Pin::Virtual(1)).await;
    assert_eq!(value, vec!["12".to_string()], "restored on the other node");
    wait_presence(&cluster.nodes[other], "demo", true).await;
}
