//! SPEC section 3 and 4 through the MQTT device API, with real MQTT clients: rumqttc here, and
//! Debian's `mosquitto_pub`/`mosquitto_sub` in the last test.
//!
//! The demo template: `Power` (V0, 0..1, sync), `LED` (V1, 0..255, sync), `Uptime` (V2, not
//! sync), `Mode` (V3, string, default "auto", sync), `Identify` (V4, command, ttl 60 s).

use std::process::Stdio;
use std::time::Duration;

use rumqttc::mqttbytes::v4::{Packet, Publish, Subscribe};
use rumqttc::{ConnectReturnCode, Incoming, QoS, SubscribeReasonCode};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::http::{AppSocket, app_write, offline_write, stored};
use crate::support::mqtt::{MqttDevice, Options, RawMqtt};
use crate::support::{PATIENCE, TestServer};

fn client(id: &str) -> Options {
    Options {
        client_id: id.into(),
        ..Options::default()
    }
}

async fn connect(server: &TestServer) -> MqttDevice {
    MqttDevice::connect(server.mqtt(), &server.demo_token(), client("lamp"))
        .await
        .0
}

/// Publishes a request and collects the values published on `downlink/ds/...` until the end
/// marker, whose payload (the count) comes last.
async fn sync_reply(device: &mut MqttDevice, topic: &str, payload: &str) -> Vec<(String, String)> {
    device.publish(topic, QoS::AtMostOnce, payload).await;
    let mut values = Vec::new();
    loop {
        let (topic, payload) = device
            .expect("a sync reply", |packet| match packet {
                Incoming::Publish(publish) => Some((
                    publish.topic.clone(),
                    String::from_utf8_lossy(&publish.payload).into_owned(),
                )),
                _ => None,
            })
            .await;
        if topic == "downlink/get/ds/done" {
            assert_eq!(
                payload,
                values.len().to_string(),
                "the marker counts the values"
            );
            return values;
        }
        if let Some(name) = topic.strip_prefix("downlink/ds/") {
            values.push((name.to_owned(), payload));
        }
    }
}

#[tokio::test]
async fn spec_4_mqtt_login_is_user_device_with_the_token_as_password() {
    let server = TestServer::start().await;
    let (_device, session_present) =
        MqttDevice::connect(server.mqtt(), &server.demo_token(), client("lamp")).await;
    assert!(!session_present, "a clean session starts empty");
    let refused = MqttDevice::try_connect(server.mqtt(), "wrong-token", client("x")).await;
    assert_eq!(refused.err(), Some(ConnectReturnCode::NotAuthorized));
    let wrong_user = Options {
        username: "admin".into(),
        ..client("y")
    };
    let refused = MqttDevice::try_connect(server.mqtt(), &server.demo_token(), wrong_user).await;
    assert_eq!(refused.err(), Some(ConnectReturnCode::NotAuthorized));
}

#[tokio::test]
async fn spec_6_failed_mqtt_logins_count_toward_the_address_limit() {
    let server = TestServer::start_with(|config| config.limits.failed_logins_per_minute = 2).await;
    for _ in 0..2 {
        let refused = MqttDevice::try_connect(server.mqtt(), "wrong-token", client("x")).await;
        assert_eq!(refused.err(), Some(ConnectReturnCode::NotAuthorized));
    }
    let locked = MqttDevice::try_connect(server.mqtt(), "wrong-token", client("x")).await;
    assert_eq!(locked.err(), Some(ConnectReturnCode::ServiceUnavailable));
}

#[tokio::test]
async fn spec_3_1_mqtt_publish_by_name_is_validated_stored_and_reaches_app_watchers() {
    let server = TestServer::start().await;
    let mut app = AppSocket::connect(server.http()).await;
    app.watch(json!(["demo"])).await;
    let mut device = connect(&server).await;

    device.publish_acked("ds/LED", "300").await;
    let event = app
        .expect(|m| m["type"] == "value" && m["pin"] == "V1")
        .await;
    assert_eq!(event["value"], 255, "clamped to the datastream's max");
    assert_eq!(event["origin"], "device");
    // By pin, as a convenience; multi-part values are `\0`-separated.
    device.publish_acked("ds/V2", "42").await;
    assert_eq!(stored(&server, "V2").await, Some(json!(42)));
    device.publish_acked("ds/Mode", "eco\0night").await;
    assert_eq!(stored(&server, "V3").await, Some(json!(["eco", "night"])));
}

#[tokio::test]
async fn spec_3_1_mqtt_value_of_the_wrong_type_is_refused_on_downlink_error() {
    let server = TestServer::start().await;
    let mut device = connect(&server).await;
    device.subscribe("downlink/error", QoS::AtMostOnce).await;

    device.publish("ds/Power", QoS::AtLeastOnce, "on").await;
    let error = device.expect_publish("downlink/error").await;
    assert!(
        error.contains("ds/Power") && error.contains("V0"),
        "{error}"
    );
    assert_eq!(
        stored(&server, "V0").await,
        None,
        "a refused value is not stored"
    );

    device.publish("ds/Nothing", QoS::AtMostOnce, "1").await;
    let error = device.expect_publish("downlink/error").await;
    assert!(error.contains("no datastream `Nothing`"), "{error}");
    device.publish("what/ever", QoS::AtMostOnce, "1").await;
    let error = device.expect_publish("downlink/error").await;
    assert!(error.contains("not a topic of this server"), "{error}");
}

#[tokio::test]
async fn spec_3_2_app_write_reaches_an_mqtt_subscriber_and_its_puback_means_delivered() {
    let server = TestServer::start().await;
    let mut device = connect(&server).await;
    let granted = device.subscribe("downlink/ds/+", QoS::AtLeastOnce).await;
    assert_eq!(
        granted,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    let answer = app_write(&server, "V0", json!(1)).await;
    assert_eq!(device.expect_publish("downlink/ds/Power").await, "1");
    assert_eq!(answer["status"], "delivered", "{answer}");
}

#[tokio::test]
async fn spec_3_4_and_3_6_get_ds_all_returns_exactly_the_sync_datastreams_then_done() {
    let server = TestServer::start().await;
    offline_write(&server, "V1", json!(7)).await;
    offline_write(&server, "V2", json!(5)).await;
    let mut device = connect(&server).await;
    device.subscribe("downlink/#", QoS::AtLeastOnce).await;

    // Power: sync, but neither value nor default: nothing. Uptime: not sync. Identify: command.
    let values = sync_reply(&mut device, "get/ds/all", "").await;
    assert_eq!(
        values,
        vec![
            ("LED".to_string(), "7".to_string()),
            ("Mode".to_string(), "auto".to_string()),
        ]
    );
    // SPEC 3.5: listed datastreams whether flagged sync or not.
    let values = sync_reply(&mut device, "get/ds", "Uptime,Power").await;
    assert_eq!(values, vec![("Uptime".to_string(), "5".to_string())]);
}

#[tokio::test]
async fn spec_3_9_mqtt_presence_follows_the_connection_and_keep_alive() {
    let server = TestServer::start().await;
    let mut app = AppSocket::connect(server.http()).await;
    app.watch(json!(["demo"])).await;
    let presence = |online: bool| {
        move |m: &serde_json::Value| m["type"] == "presence" && m["online"] == online
    };

    let device = connect(&server).await;
    app.expect(presence(true)).await;
    device.client.disconnect().await.unwrap();
    app.expect(presence(false)).await;

    // Keep-alive 60 s and then silence: offline after 90 s (MQTT 3.1.1 section 3.1.2.10), on
    // the server's clock, which the test moves.
    let (mut raw, connack) = RawMqtt::connect(server.mqtt(), &server.demo_token(), 60, None).await;
    assert!(matches!(connack, Packet::ConnAck(ref ack) if ack.code == ConnectReturnCode::Success));
    app.expect(presence(true)).await;
    // The silence is counted from this packet on.
    raw.send(Packet::PingReq).await;
    assert_eq!(raw.read().await, Some(Packet::PingResp));
    server.advance(Duration::from_secs(89));
    let early = tokio::time::timeout(Duration::from_millis(300), raw.read()).await;
    assert!(
        early.is_err(),
        "closed or sent {early:?} before 1.5 keep-alives"
    );
    server.advance(Duration::from_secs(2));
    raw.expect_closed(PATIENCE).await;
    app.expect(presence(false)).await;
}

#[tokio::test]
async fn spec_3_12_a_pending_command_is_delivered_once_on_subscribe() {
    let server = TestServer::start().await;
    let answer = offline_write(&server, "V4", json!(1)).await;
    assert_eq!(answer["status"], "pending");

    let mut device = connect(&server).await;
    device.subscribe("downlink/ds/+", QoS::AtLeastOnce).await;
    assert_eq!(device.expect_publish("downlink/ds/Identify").await, "1");
    device.client.disconnect().await.unwrap();
    device.expect_end().await;

    let mut device = connect(&server).await;
    device.subscribe("downlink/#", QoS::AtLeastOnce).await;
    let values = sync_reply(&mut device, "get/ds/all", "").await;
    assert!(
        values.iter().all(|(name, _)| name != "Identify"),
        "never replayed: {values:?}"
    );
    let values = sync_reply(&mut device, "get/ds", "Identify").await;
    assert!(values.is_empty(), "never replayed: {values:?}");
}

#[tokio::test]
async fn spec_3_3_mqtt_persistent_session_keeps_its_subscriptions_and_gets_what_changed_while_away()
{
    let server = TestServer::start().await;
    let persistent = Options {
        clean_session: false,
        ..client("kitchen-lamp")
    };
    let (mut device, present) =
        MqttDevice::connect(server.mqtt(), &server.demo_token(), persistent.clone()).await;
    assert!(!present);
    device.subscribe("downlink/ds/+", QoS::AtLeastOnce).await;
    device
        .subscribe("downlink/get/ds/done", QoS::AtLeastOnce)
        .await;
    let answer = app_write(&server, "V1", json!(5)).await;
    assert_eq!(device.expect_publish("downlink/ds/LED").await, "5");
    assert_eq!(answer["status"], "delivered", "{answer}");
    device.client.disconnect().await.unwrap();
    device.expect_end().await;

    // Changed while away: Power. LED the device already has.
    offline_write(&server, "V0", json!(1)).await;
    let (mut device, present) =
        MqttDevice::connect(server.mqtt(), &server.demo_token(), persistent).await;
    assert!(present, "the session was kept");
    assert_eq!(device.expect_publish("downlink/ds/Power").await, "1");
    assert_eq!(
        device.expect_publish("downlink/get/ds/done").await,
        "1",
        "only what changed"
    );
    // Its subscriptions came back with it.
    app_write(&server, "V0", json!(0)).await;
    assert_eq!(device.expect_publish("downlink/ds/Power").await, "0");

    let (_clean, present) =
        MqttDevice::connect(server.mqtt(), &server.demo_token(), client("kitchen-lamp")).await;
    assert!(!present, "a clean session forgets it");
}

#[tokio::test]
async fn mqtt_will_message_is_stored_when_the_connection_drops_without_disconnect() {
    let server = TestServer::start().await;
    let mut app = AppSocket::connect(server.http()).await;
    app.watch(json!(["demo"])).await;
    let will = Some(("ds/Mode", "lost"));
    let (raw, _) = RawMqtt::connect(server.mqtt(), &server.demo_token(), 30, will).await;
    drop(raw);
    let event = app
        .expect(|m| m["type"] == "value" && m["pin"] == "V3")
        .await;
    assert_eq!(event["value"], "lost");

    let (mut raw, _) = RawMqtt::connect(
        server.mqtt(),
        &server.demo_token(),
        30,
        Some(("ds/Mode", "gone")),
    )
    .await;
    raw.send(Packet::Disconnect).await;
    raw.expect_closed(PATIENCE).await;
    app.expect(|m| m["type"] == "presence" && m["online"] == false)
        .await;
    assert_eq!(
        stored(&server, "V3").await,
        Some(json!("lost")),
        "no will after DISCONNECT"
    );
}

#[tokio::test]
async fn spec_3_14_mqtt_timestamped_batch_is_ordered_by_measurement_time() {
    let server = TestServer::start().await;
    let mut device = connect(&server).await;
    device.subscribe("downlink/error", QoS::AtMostOnce).await;
    let now = blynk_server::model::now_ms();
    let batch = json!([[now - 1_000, 6], [now - 2_000, 5]]).to_string();
    device
        .publish_acked("ds/LED/timestamped_batch", batch)
        .await;
    assert_eq!(
        stored(&server, "V1").await,
        Some(json!(6)),
        "the newest point is the latest"
    );

    app_write(&server, "V1", json!(9)).await;
    let older = json!([[now - 500, 1]]).to_string();
    device
        .publish_acked("ds/LED/timestamped_batch", older)
        .await;
    assert_eq!(
        stored(&server, "V1").await,
        Some(json!(9)),
        "measured before the app write: history only"
    );

    let future = json!([[now + 3_600_000, 2]]).to_string();
    device
        .publish("ds/LED/timestamped_batch", QoS::AtLeastOnce, future)
        .await;
    let error = device.expect_publish("downlink/error").await;
    assert!(error.contains("in the future"), "{error}");
    assert_eq!(stored(&server, "V1").await, Some(json!(9)));
}

#[tokio::test]
async fn mqtt_batch_properties_and_events_reach_apps() {
    let server = TestServer::start().await;
    let mut app = AppSocket::connect(server.http()).await;
    app.watch(json!(["demo"])).await;
    let mut device = connect(&server).await;

    device
        .publish_acked("batch_ds", r#"{"Power": 1, "LED": 200}"#)
        .await;
    assert_eq!(stored(&server, "V0").await, Some(json!(1)));
    assert_eq!(stored(&server, "V1").await, Some(json!(200)));

    device.publish_acked("ds/LED/prop/label", "Kitchen").await;
    let property = app.expect(|m| m["type"] == "property").await;
    assert_eq!(
        (property["pin"].as_str(), property["value"].as_str()),
        (Some("V1"), Some("Kitchen"))
    );

    device.publish_acked("event/overheat", "too hot").await;
    let event = app.expect(|m| m["type"] == "event").await;
    assert_eq!(
        (event["code"].as_str(), event["description"].as_str()),
        (Some("overheat"), Some("too hot"))
    );
}

#[tokio::test]
async fn mqtt_refuses_qos_2_and_wildcards_outside_downlink() {
    let server = TestServer::start().await;
    let mut device = connect(&server).await;
    assert_eq!(
        device.subscribe("#", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Failure]
    );
    assert_eq!(
        device.subscribe("+/ds/+", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Failure]
    );
    // QoS 2 subscriptions are granted as QoS 1.
    assert_eq!(
        device.subscribe("downlink/error", QoS::ExactlyOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    drop(device);

    // A QoS 2 publish is explained on downlink/error, then the connection closes. (A raw
    // connection: rumqttc drops what it read when the connection closes right after.)
    let (mut raw, _) = RawMqtt::connect(server.mqtt(), &server.demo_token(), 30, None).await;
    raw.send(Packet::Subscribe(Subscribe::new(
        "downlink/error",
        QoS::AtMostOnce,
    )))
    .await;
    let mut publish = Publish::new("ds/Power", QoS::ExactlyOnce, "1");
    publish.pkid = 1;
    raw.send(Packet::Publish(publish)).await;
    let mut error = None;
    while let Some(packet) = raw.read().await {
        if let Packet::Publish(publish) = packet {
            error = Some(String::from_utf8_lossy(&publish.payload).into_owned());
        }
    }
    let error = error.expect("an error on downlink/error before the close");
    assert!(error.contains("QoS 2"), "{error}");
    assert_eq!(stored(&server, "V0").await, None);
}

#[tokio::test]
async fn mqtt_oversized_packet_or_missing_connect_closes_only_that_connection() {
    let server = TestServer::start_with(|config| config.limits.login_timeout_seconds = 1).await;
    let mut device = connect(&server).await;
    let other = server.add_device("other", "light").await;

    let (mut raw, _) = RawMqtt::connect(server.mqtt(), &other, 30, None).await;
    // A PUBLISH announcing 256 MB: refused before anything is buffered.
    tokio::io::AsyncWriteExt::write_all(&mut raw.stream, &[0x30, 0xff, 0xff, 0xff, 0x7f])
        .await
        .unwrap();
    raw.expect_closed(PATIENCE).await;

    // No CONNECT within the login deadline.
    let mut silent = tokio::net::TcpStream::connect(server.mqtt()).await.unwrap();
    let mut byte = [0u8; 1];
    let read = server
        .advance_until(
            Duration::from_secs(1),
            tokio::io::AsyncReadExt::read(&mut silent, &mut byte),
        )
        .await;
    assert!(matches!(read, Ok(0) | Err(_)));

    device.publish_acked("ds/LED", "3").await;
    assert_eq!(
        stored(&server, "V1").await,
        Some(json!(3)),
        "the other device is unaffected"
    );
}

/// The path of a program, if installed.
fn program(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|path| path.is_file())
}

#[tokio::test]
async fn mosquitto_clients_are_devices_unchanged() {
    let (Some(publisher), Some(subscriber)) = (program("mosquitto_pub"), program("mosquitto_sub"))
    else {
        let uid = std::process::Command::new("id").arg("-u").output();
        let root = uid.is_ok_and(|output| output.stdout.starts_with(b"0\n"));
        assert!(
            !root,
            "mosquitto_pub/mosquitto_sub are missing: `apt-get install mosquitto-clients` (cargo xtask test installs them)"
        );
        eprintln!(
            "SKIPPED: mosquitto_pub/mosquitto_sub are not installed and this is not root; `cargo xtask test` installs mosquitto-clients"
        );
        return;
    };
    let server = TestServer::start().await;
    let mut app = AppSocket::connect(server.http()).await;
    app.watch(json!(["demo"])).await;
    let (host, port) = (
        server.mqtt().ip().to_string(),
        server.mqtt().port().to_string(),
    );
    let token = server.demo_token();
    let common = ["-h", &host, "-p", &port, "-u", "device", "-P", &token];

    let mut sub = Command::new(subscriber)
        .args(common)
        .args([
            "-i",
            "mosquitto-sub",
            "-q",
            "1",
            "-t",
            "downlink/ds/+",
            "-v",
            "-C",
            "1",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    app.expect(|m| m["type"] == "presence" && m["online"] == true)
        .await;
    // The subscription follows the CONNECT at once; a write forwarded before it is held for it.
    app_write(&server, "V0", json!(1)).await;
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("mosquitto_sub printed nothing")
        .unwrap();
    assert_eq!(line.as_deref(), Some("downlink/ds/Power 1"));
    let status = tokio::time::timeout(PATIENCE, sub.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());

    let status = Command::new(publisher)
        .args(common)
        .args(["-i", "mosquitto-pub", "-q", "1", "-t", "ds/LED", "-m", "42"])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let event = app
        .expect(|m| m["type"] == "value" && m["pin"] == "V1")
        .await;
    assert_eq!(event["value"], 42);
}

#[tokio::test]
async fn spec_6_mqtt_speaks_tls_with_the_same_setting() {
    let (server, tls) = crate::tls::tls_server().await;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = tokio::net::TcpStream::connect(server.mqtt()).await.unwrap();
    let mut stream = tls.connect(name, tcp).await.unwrap();

    let mut connect = rumqttc::mqttbytes::v4::Connect::new("tls-device");
    connect.login = Some(rumqttc::mqttbytes::v4::Login::new(
        "device",
        server.demo_token(),
    ));
    let mut out = bytes::BytesMut::new();
    Packet::Connect(connect).write(&mut out, 1024).unwrap();
    let mut publish = Publish::new("ds/LED", QoS::AtLeastOnce, "9");
    publish.pkid = 1;
    Packet::Publish(publish).write(&mut out, 1024).unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, &out)
        .await
        .unwrap();
    let mut inbox = bytes::BytesMut::new();
    let mut packets = Vec::new();
    while packets.len() < 2 {
        match Packet::read(&mut inbox, 1024) {
            Ok(packet) => packets.push(packet),
            Err(_) => {
                let read = tokio::time::timeout(
                    PATIENCE,
                    tokio::io::AsyncReadExt::read_buf(&mut stream, &mut inbox),
                )
                .await
                .expect("no answer over TLS")
                .unwrap();
                assert!(read > 0, "closed; got {packets:?}");
            }
        }
    }
    assert!(matches!(&packets[0], Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success));
    assert!(matches!(&packets[1], Packet::PubAck(ack) if ack.pkid == 1));
    // (HTTP speaks TLS too now: the engine is asked directly.)
    let demo = server.server().engine().find_device("demo").unwrap();
    let stored = demo.value(blynk_proto::Pin::Virtual(1)).unwrap();
    assert_eq!(stored.value.to_json(), json!(9));
}

#[tokio::test]
async fn spec_6_mqtt_publishes_over_the_rate_limit_are_dropped_and_said_so() {
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 1;
        config.limits.message_burst = 3;
    })
    .await;
    let mut device = connect(&server).await;
    device.subscribe("downlink/error", QoS::AtMostOnce).await;
    for value in 1..=10 {
        device
            .publish("ds/Uptime", QoS::AtMostOnce, value.to_string())
            .await;
    }
    let error = device.expect_publish("downlink/error").await;
    assert!(error.contains("rate limit"), "{error}");
    let latest = stored(&server, "V2").await;
    assert_ne!(latest, Some(json!(10)), "the excess was dropped");
}

#[tokio::test]
async fn spec_5_a_broker_on_the_standard_mqtt_port_does_not_keep_the_server_from_starting() {
    // Hold the standard port as a broker would (if another program holds it already, the
    // server meets the same situation).
    let _broker = std::net::TcpListener::bind("127.0.0.1:1883");
    let server = TestServer::start_with(|config| {
        config.mqtt_port = blynk_server::config::MqttPort::Standard;
    })
    .await;
    assert_eq!(server.server().mqtt_address, None, "MQTT is off");
    let reply =
        crate::support::http::get(server.http(), "/external/api/isHardwareConnected?token=x").await;
    assert!(
        (400..500).contains(&reply.status),
        "the server serves and refuses the bad token: {}",
        reply.status
    );
}
