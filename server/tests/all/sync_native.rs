//! SPEC section 3 through the native protocol.

use std::time::Duration;

use blynk_proto::native::{ErrorCode, LoginResult};
use blynk_proto::{Pin, Value};
use serde_json::json;

use crate::support::http::{app_write, offline_write, stored};
use crate::support::native::{LoginOptions, NativeClient, Received};
use crate::support::{TestServer, http};

const V0: Pin = Pin::Virtual(0);
const V1: Pin = Pin::Virtual(1);
const V2: Pin = Pin::Virtual(2);
const V3: Pin = Pin::Virtual(3);
const V4: Pin = Pin::Virtual(4);

fn quiet() -> LoginOptions {
    LoginOptions {
        sync_on_connect: false,
        ..LoginOptions::default()
    }
}

#[tokio::test]
async fn spec_3_1_device_write_is_validated_clamped_stored_and_pushed_to_apps() {
    let server = TestServer::start().await;
    let mut app = crate::support::http::AppSocket::connect(server.http()).await;
    app.watch(json!(["demo"])).await;
    let (mut device, _) = NativeClient::login(server.native(), &server.demo_token(), quiet()).await;

    let id = device.write_int(V1, 300).await;
    let version = device
        .expect("ack", |m| match m {
            Received::Ack { id: got, version } if *got == id => Some(*version),
            _ => None,
        })
        .await;
    assert!(version.is_some());
    let event = app
        .expect(|m| m["type"] == "value" && m["pin"] == "V1")
        .await;
    assert_eq!(event["value"], 255, "clamped to the datastream's max");
    assert_eq!(event["origin"], "device");
    assert_eq!(stored(&server, "V1").await, Some(json!(255)));

    let id = device.write(V0, Value::text("on").unwrap(), None).await;
    let (code, detail) = device.expect_error(id).await;
    assert_eq!(code, ErrorCode::WrongType);
    assert!(detail.contains("V0"), "the error names the pin: {detail}");
    assert_eq!(
        stored(&server, "V0").await,
        None,
        "a refused value is not stored"
    );

    let id = device.write_int(Pin::Virtual(77), 1).await;
    let (code, _) = device.expect_error(id).await;
    assert_eq!(code, ErrorCode::UnknownPin);
}

#[tokio::test]
async fn spec_3_2_app_write_is_stored_then_forwarded_to_the_online_device() {
    let server = TestServer::start().await;
    let (mut device, _) = NativeClient::login(server.native(), &server.demo_token(), quiet()).await;
    let reply = app_write(&server, "V0", json!(1)).await;
    assert_eq!(reply["status"], "delivered");
    let update = device
        .expect("update", |m| match m {
            Received::Update { pin, value, .. } => Some((*pin, value.clone())),
            _ => None,
        })
        .await;
    assert_eq!(update, (V0, vec!["1".to_string()]));
}

#[tokio::test]
async fn spec_3_2_app_write_to_an_offline_device_is_kept_and_restored_at_reconnect() {
    let server = TestServer::start().await;
    let reply = offline_write(&server, "V0", json!(1)).await;
    assert_eq!(reply["status"], "pending");
    assert_eq!(reply["device_online"], false);
    let (mut device, result) = NativeClient::login(
        server.native(),
        &server.demo_token(),
        LoginOptions::default(),
    )
    .await;
    assert!(matches!(
        result,
        LoginResult::Accepted {
            sync_follows: true,
            ..
        }
    ));
    let (values, _) = device.collect_sync(0).await;
    assert!(values.contains(&(V0, vec!["1".to_string()])), "{values:?}");
}

#[tokio::test]
async fn spec_3_3_reconnect_resends_every_sync_datastream_with_app_changes_made_meanwhile() {
    let server = TestServer::start().await;
    let token = server.demo_token();
    let (mut device, _) = NativeClient::login(server.native(), &token, quiet()).await;
    for (pin, value) in [(V1, 10), (V2, 5)] {
        let id = device.write_int(pin, value).await;
        device
            .expect("ack", |m| {
                matches!(m, Received::Ack { id: got, .. } if *got == id).then_some(())
            })
            .await;
    }
    drop(device);
    offline_write(&server, "V0", json!(1)).await;
    offline_write(&server, "V1", json!(20)).await;

    let (mut device, _) =
        NativeClient::login(server.native(), &token, LoginOptions::default()).await;
    let (mut values, end) = device.collect_sync(0).await;
    values.sort();
    assert_eq!(
        values,
        vec![
            (V0, vec!["1".into()]),
            (V1, vec!["20".into()]),
            (V3, vec!["auto".into()])
        ],
        "every sync datastream, the app's changes included, and never the unsynced V2"
    );
    assert_eq!(end.count, 3);
}

#[tokio::test]
async fn spec_3_3_a_device_may_opt_out_of_the_automatic_sync() {
    let server = TestServer::start().await;
    offline_write(&server, "V0", json!(1)).await;
    let (mut device, result) =
        NativeClient::login(server.native(), &server.demo_token(), quiet()).await;
    assert!(matches!(
        result,
        LoginResult::Accepted {
            sync_follows: false,
            ..
        }
    ));
    device.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn spec_3_4_sync_all_returns_only_sync_datastreams() {
    let server = TestServer::start().await;
    offline_write(&server, "V1", json!(7)).await;
    offline_write(&server, "V2", json!(9)).await;
    let (mut device, _) = NativeClient::login(server.native(), &server.demo_token(), quiet()).await;
    let id = device.sync(None).await;
    let (mut values, end) = device.collect_sync(id).await;
    values.sort();
    assert_eq!(
        values,
        vec![(V1, vec!["7".into()]), (V3, vec!["auto".into()])]
    );
    assert_eq!(end.count, 2);
}

#[tokio::test]
async fn spec_3_5_sync_virtual_returns_listed_pins_whether_or_not_flagged_sync() {
    let server = TestServer::start().await;
    offline_write(&server, "V1", json!(7)).await;
    offline_write(&server, "V2", json!(9)).await;
    let (mut device, _) = NativeClient::login(server.native(), &server.demo_token(), quiet()).await;
    let id = device.sync(Some(&[V2, V1])).await;
    let (values, _) = device.collect_sync(id).await;
    assert_eq!(values, vec![(V2, vec!["9".into()]), (V1, vec!["7".into()])]);
}

#[tokio::test]
async fn spec_3_6_unset_pin_without_default_gets_no_reply_and_one_with_default_gets_it() {
    let server = TestServer::start().await;
    let (mut device, _) = NativeClient::login(server.native(), &server.demo_token(), quiet()).await;
    let id = device.sync(Some(&[V0, V3, V2])).await;
    let (values, end) = device.collect_sync(id).await;
    assert_eq!(values, vec![(V3, vec!["auto".into()])]);
    assert_eq!(end.count, 1);
}

#[tokio::test]
async fn spec_3_7_every_native_sync_ends_with_a_complete_marker_carrying_count_and_version() {
    let server = TestServer::start().await;
    let (mut device, _) = NativeClient::login(server.native(), &server.demo_token(), quiet()).await;
    let id = device.write_int(V0, 1).await;
    let version = device
        .expect("ack", |m| match m {
            Received::Ack { id: got, version } if *got == id => *version,
            _ => None,
        })
        .await;
    let id = device.sync(None).await;
    let (values, end) = device.collect_sync(id).await;
    assert_eq!(usize::from(end.count), values.len());
    assert_eq!(end.version, version);
}

#[tokio::test]
async fn spec_3_8_offline_write_made_before_a_later_app_write_loses_and_the_device_is_corrected() {
    let server = TestServer::start().await;
    offline_write(&server, "V0", json!(0)).await;
    let (mut device, _) = NativeClient::login(server.native(), &server.demo_token(), quiet()).await;
    // The button was pressed 60 s ago, before the app switched the light off.
    let id = device.write(V0, Value::int(1), Some(60_000)).await;
    device
        .expect("ack", |m| {
            matches!(m, Received::Ack { id: got, .. } if *got == id).then_some(())
        })
        .await;
    let correction = device
        .expect("update", |m| match m {
            Received::Update { pin, value, .. } => Some((*pin, value.clone())),
            _ => None,
        })
        .await;
    assert_eq!(correction, (V0, vec!["0".to_string()]));
    assert_eq!(stored(&server, "V0").await, Some(json!(0)));
    let history = http::app(server.http(), "GET", "/api/devices/demo/history/V0", None)
        .await
        .json();
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|point| point["value"] == 1 && point["origin"] == "device"),
        "the losing write is kept in the history: {history}"
    );
}

#[tokio::test]
async fn spec_3_8_offline_write_made_after_the_app_write_wins() {
    let server = TestServer::start().await;
    offline_write(&server, "V0", json!(0)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (mut device, _) = NativeClient::login(server.native(), &server.demo_token(), quiet()).await;
    // Made 10 ms ago: after the app write.
    let id = device.write(V0, Value::int(1), Some(10)).await;
    let version = device
        .expect("ack", |m| match m {
            Received::Ack { id: got, version } if *got == id => Some(*version),
            _ => None,
        })
        .await;
    assert!(version.is_some(), "stored as the latest value");
    assert_eq!(stored(&server, "V0").await, Some(json!(1)));
    device.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn spec_3_9_apps_see_the_device_go_online_and_offline() {
    let server = TestServer::start().await;
    let mut app = crate::support::http::AppSocket::connect(server.http()).await;
    let snapshot = app.watch(json!(["demo"])).await;
    assert_eq!(snapshot["devices"][0]["online"], false);
    let (device, _) = NativeClient::login(server.native(), &server.demo_token(), quiet()).await;
    let online = app.expect(|m| m["type"] == "presence").await;
    assert_eq!(online["online"], true);
    drop(device);
    let offline = app.expect(|m| m["type"] == "presence").await;
    assert_eq!(offline["online"], false);
}

/// Sends a ping and waits for its pong: the server's silence is counted from this frame on.
async fn ping(device: &mut NativeClient, id: u16) {
    device
        .send(&blynk_proto::native::Message::Ping(
            blynk_proto::native::Ping { id },
        ))
        .await;
    assert_eq!(device.recv().await, Some(Received::Pong(id)));
}

/// Whether the app API shows the demo device online.
async fn demo_online(server: &TestServer) -> bool {
    let devices = http::app(server.http(), "GET", "/api/devices", None)
        .await
        .json();
    devices[0]["online"] == true
}

#[tokio::test]
async fn spec_3_9_a_silent_device_is_offline_after_2_3_heartbeats() {
    let server = TestServer::start().await;
    let options = LoginOptions {
        heartbeat_seconds: 10,
        ..quiet()
    };
    let (mut device, _) = NativeClient::login(server.native(), &server.demo_token(), options).await;
    ping(&mut device, 1).await;
    // 2.2 heartbeats of silence on the server's clock: still online. (The server's clock
    // moves; 23 s of real time would outlast the test's patience.)
    server.advance(Duration::from_secs(22));
    device.expect_silence(Duration::from_millis(200)).await;
    assert!(demo_online(&server).await, "offline before 2.3 heartbeats");
    // Past 2.3: closed and offline.
    server.advance(Duration::from_millis(1500));
    device.expect_closed().await;
    assert!(!demo_online(&server).await);
}

#[tokio::test]
async fn spec_3_9_pings_keep_a_device_online() {
    let server = TestServer::start().await;
    let options = LoginOptions {
        heartbeat_seconds: 10,
        ..quiet()
    };
    let (mut device, _) = NativeClient::login(server.native(), &server.demo_token(), options).await;
    // 3.6 heartbeats in all, with a ping every 0.9: the connection stays.
    for id in 1..=4u16 {
        server.advance(Duration::from_secs(9));
        ping(&mut device, id).await;
    }
    assert!(demo_online(&server).await);
    // Without them, the same clock closes it.
    server.advance(Duration::from_secs(24));
    device.expect_closed().await;
}

#[tokio::test]
async fn spec_3_11_delta_resync_sends_only_what_changed_since_the_known_version() {
    let server = TestServer::start().await;
    let token = server.demo_token();
    offline_write(&server, "V0", json!(1)).await;
    offline_write(&server, "V1", json!(100)).await;
    let (mut device, _) =
        NativeClient::login(server.native(), &token, LoginOptions::default()).await;
    let (_, end) = device.collect_sync(0).await;
    drop(device);
    offline_write(&server, "V1", json!(200)).await;

    let kept_state = LoginOptions {
        known_version: Some(end.version),
        ..LoginOptions::default()
    };
    let (mut device, _) = NativeClient::login(server.native(), &token, kept_state).await;
    let (values, _) = device.collect_sync(0).await;
    assert_eq!(values, vec![(V1, vec!["200".into()])], "only the change");
    drop(device);

    let (mut device, _) =
        NativeClient::login(server.native(), &token, LoginOptions::default()).await;
    let (values, _) = device.collect_sync(0).await;
    assert_eq!(values.len(), 3, "after a reset, everything: {values:?}");
}

#[tokio::test]
async fn spec_3_12_command_for_an_offline_device_is_delivered_once_and_never_synced() {
    let server = TestServer::start().await;
    let token = server.demo_token();
    let reply = offline_write(&server, "V4", json!(1)).await;
    assert_eq!(reply["status"], "pending");
    assert_eq!(reply["command"], true);

    let (mut device, _) =
        NativeClient::login(server.native(), &token, LoginOptions::default()).await;
    let (values, _) = device.collect_sync(0).await;
    assert!(
        values.iter().all(|(pin, _)| *pin != V4),
        "a command is never in a sync"
    );
    let update = device
        .expect("command", |m| match m {
            Received::Update { pin, value, .. } => Some((*pin, value.clone())),
            _ => None,
        })
        .await;
    assert_eq!(update, (V4, vec!["1".to_string()]));
    let id = device.sync(Some(&[V4])).await;
    let (values, _) = device.collect_sync(id).await;
    assert!(values.is_empty(), "sync_virtual never replays a command");
    drop(device);

    let (mut device, _) =
        NativeClient::login(server.native(), &token, LoginOptions::default()).await;
    device.collect_sync(0).await;
    device.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn spec_3_12_command_expires_after_its_ttl_and_the_app_is_told() {
    let server = TestServer::start().await;
    server
        .add_template(
            r#"
            name = "door"
            [[datastream]]
            pin = "V0"
            name = "Open"
            type = "integer"
            kind = "command"
            ttl = 60
            "#,
        )
        .await;
    let token = server.add_device("garage", "door").await;
    let mut app = crate::support::http::AppSocket::connect(server.http()).await;
    app.send(json!({ "type": "write", "id": "w1", "device": "garage", "pin": "V0", "value": 1 }))
        .await;
    let first = app
        .expect(|m| m["type"] == "write" && m["id"] == "w1")
        .await;
    assert_eq!(first["status"], "pending");
    // A second before its ttl the command still waits (the expiry runs at once when the clock
    // moves, and twice a second besides).
    server.advance(Duration::from_secs(59));
    let early = tokio::time::timeout(
        Duration::from_millis(700),
        app.expect(|m| m["type"] == "write" && m["id"] == "w1"),
    )
    .await;
    assert!(early.is_err(), "reported before its ttl: {early:?}");
    server.advance(Duration::from_secs(2));
    let last = app
        .expect(|m| m["type"] == "write" && m["id"] == "w1")
        .await;
    assert_eq!(last["status"], "expired");

    let (mut device, _) =
        NativeClient::login(server.native(), &token, LoginOptions::default()).await;
    device.collect_sync(0).await;
    device.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn spec_3_2_app_sees_pending_then_delivered_when_the_device_reconnects() {
    let server = TestServer::start().await;
    let mut app = crate::support::http::AppSocket::connect(server.http()).await;
    app.send(json!({ "type": "write", "id": 7, "device": "demo", "pin": "V0", "value": 1 }))
        .await;
    let first = app.expect(|m| m["type"] == "write" && m["id"] == 7).await;
    assert_eq!(first["status"], "pending");
    let (mut device, _) = NativeClient::login(
        server.native(),
        &server.demo_token(),
        LoginOptions::default(),
    )
    .await;
    device.collect_sync(0).await;
    let last = app.expect(|m| m["type"] == "write" && m["id"] == 7).await;
    assert_eq!(last["status"], "delivered");
}

#[tokio::test]
async fn one_device_connected_twice_keeps_the_newer_connection() {
    let server = TestServer::start().await;
    let token = server.demo_token();
    let (mut older, _) = NativeClient::login(server.native(), &token, quiet()).await;
    let (mut newer, _) = NativeClient::login(server.native(), &token, quiet()).await;
    older.expect_closed().await;
    app_write(&server, "V0", json!(1)).await;
    let update = newer
        .expect("update", |m| match m {
            Received::Update { pin, value, .. } => Some((*pin, value.clone())),
            _ => None,
        })
        .await;
    assert_eq!(
        update,
        (V0, vec!["1".to_string()]),
        "the newer connection gets the write"
    );
    let devices = http::app(server.http(), "GET", "/api/devices", None)
        .await
        .json();
    assert_eq!(
        devices[0]["online"], true,
        "the replaced connection leaving does not mark it offline"
    );
}

#[tokio::test]
async fn properties_and_events_from_a_device_reach_apps() {
    use blynk_proto::native::{Event, Message, Property};
    use blynk_proto::text::BoundedStr;
    let server = TestServer::start().await;
    let mut app = crate::support::http::AppSocket::connect(server.http()).await;
    app.watch(json!(["demo"])).await;
    let (mut device, _) = NativeClient::login(server.native(), &server.demo_token(), quiet()).await;
    let property = Property {
        id: 1,
        pin: V1,
        name: BoundedStr::new("color").unwrap(),
        value: Value::text("#FF0000").unwrap(),
    };
    device.send(&Message::Property(property)).await;
    device
        .expect("ack", |m| {
            matches!(m, Received::Ack { id: 1, .. }).then_some(())
        })
        .await;
    let seen = app.expect(|m| m["type"] == "property").await;
    assert_eq!(
        (
            seen["pin"].as_str(),
            seen["name"].as_str(),
            seen["value"].as_str()
        ),
        (Some("V1"), Some("color"), Some("#FF0000"))
    );
    let event = Event {
        id: 2,
        code: BoundedStr::new("overheat").unwrap(),
        description: Some(BoundedStr::new("too hot").unwrap()),
    };
    device.send(&Message::Event(event)).await;
    device
        .expect("ack", |m| {
            matches!(m, Received::Ack { id: 2, .. }).then_some(())
        })
        .await;
    let seen = app.expect(|m| m["type"] == "event").await;
    assert_eq!(seen["code"], "overheat");
    let events = http::app(server.http(), "GET", "/api/devices/demo/events", None)
        .await
        .json();
    assert_eq!(events[0]["description"], "too hot");
    // Properties are never synced to hardware.
    let id = device.sync(None).await;
    let (values, _) = device.collect_sync(id).await;
    assert!(
        values
            .iter()
            .all(|(_, value)| value != &vec!["#FF0000".to_string()])
    );
}
