//! SPEC section 6, what a device may store and send: properties only on datastream pins with
//! known names, the latest pending command per pin, a request rate per token on the HTTP device
//! API, and no NUL (or empty last part) in a text value, on every protocol; and the data
//! directory and database files private to the server's user.

use blynk_proto::native::{ErrorCode, Message, Property};
use blynk_proto::text::BoundedStr;
use blynk_proto::{Pin, Value};
use rumqttc::QoS;
use serde_json::json;

use crate::support::classic::{ClassicClient, frame};
use crate::support::http::{self, AppSocket, app, get};
use crate::support::mqtt::{MqttDevice, Options};
use crate::support::native::{LoginOptions, NativeClient, Received};
use crate::support::{PATIENCE, TestServer};

const V4: Pin = Pin::Virtual(4);

fn quiet() -> LoginOptions {
    LoginOptions {
        sync_on_connect: false,
        ..LoginOptions::default()
    }
}

#[tokio::test]
async fn spec_6_properties_only_on_datastream_pins() {
    let server = TestServer::start().await;
    let token = server.demo_token();
    let set = |query: String| {
        let address = server.http();
        async move { get(address, &format!("/external/api/update/property?{query}")).await }
    };

    // The attack: thousands of properties on pins without a datastream, or with made-up names.
    for n in 0..200 {
        let pin = set(format!("token={token}&pin=V{}&label=x{n}", 100 + n % 100)).await;
        assert_eq!(pin.status, 400, "{}", pin.body);
        let name = set(format!("token={token}&pin=V1&p{n}=x")).await;
        assert_eq!(name.status, 400, "{}", name.body);
    }
    let refused = set(format!("token={token}&pin=V150&label=x")).await;
    assert!(
        refused.body.contains("V150") && refused.body.contains("datastream"),
        "{}",
        refused.body
    );
    let refused = set(format!("token={token}&pin=V1&p7=x")).await;
    assert!(
        refused.body.contains("`p7` is not a known property"),
        "{}",
        refused.body
    );
    let long = "x".repeat(300);
    let refused = set(format!("token={token}&pin=V1&label={long}")).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    // A known property of a datastream pin is kept, and only it.
    let kept = set(format!("token={token}&pin=V1&label=Kitchen")).await;
    assert_eq!(kept.status, 200, "{}", kept.body);

    let mut classic = ClassicClient::login(server.http(), &token).await;
    classic
        .send_raw(&frame(19, 7, b"200\x00color\x00#FF0000"))
        .await;
    // Classic: PROPERTY (19) on a pin without a datastream, or of an unknown name, gets
    // status 11 (illegal command body).
    let answer = classic.recv().await.unwrap();
    assert_eq!((answer.command, answer.id, answer.length), (0, 7, 11));
    classic.send_raw(&frame(19, 8, b"1\x00p99\x00x")).await;
    let answer = classic.recv().await.unwrap();
    assert_eq!((answer.command, answer.id, answer.length), (0, 8, 11));
    drop(classic);

    // Native: an error naming the pin.
    let (mut device, _) = NativeClient::login(server.native(), &token, quiet()).await;
    let property = |id, pin, name| {
        Message::Property(Property {
            id,
            pin,
            name: BoundedStr::new(name).unwrap(),
            value: Value::text("x").unwrap(),
        })
    };
    device.send(&property(1, Pin::Virtual(200), "color")).await;
    let (code, detail) = device.expect_error(1).await;
    assert_eq!(code, ErrorCode::UnknownPin);
    assert!(detail.contains("V200"), "{detail}");
    device.send(&property(2, Pin::Virtual(1), "p5")).await;
    let (code, detail) = device.expect_error(2).await;
    assert_eq!(code, ErrorCode::IllegalCommand);
    assert!(detail.contains("p5"), "{detail}");
    drop(device);

    // MQTT: an error on downlink/error.
    let (mut mqtt, _) = MqttDevice::connect(server.mqtt(), &token, Options::default()).await;
    mqtt.subscribe("downlink/error", QoS::AtMostOnce).await;
    mqtt.publish("ds/LED/prop/p3", QoS::AtLeastOnce, "x").await;
    let error = mqtt.expect_publish("downlink/error").await;
    assert!(error.contains("`p3` is not a known property"), "{error}");

    let properties = app(server.http(), "GET", "/api/devices/demo/properties", None)
        .await
        .json();
    assert_eq!(
        properties,
        json!([{ "pin": "V1", "name": "label", "value": "Kitchen" }])
    );
}

#[tokio::test]
async fn spec_6_pending_commands_latest_wins() {
    let server = TestServer::start().await;
    let token = server.demo_token();
    let mut app_socket = AppSocket::connect(server.http()).await;
    app_socket.watch(json!(["demo"])).await;
    let write = |id: &str, value: i64| json!({ "type": "write", "id": id, "device": "demo", "pin": "V4", "value": value });
    app_socket.send(write("w1", 1)).await;
    app_socket
        .expect(|m| m["id"] == "w1" && m["status"] == "pending")
        .await;
    app_socket.send(write("w2", 2)).await;
    // The first command is replaced at once, and the app is told.
    app_socket
        .expect(|m| m["id"] == "w1" && m["status"] == "superseded")
        .await;

    // The attack: many writes to the command pin of an offline device (its values are 0 or 1).
    for n in 3..=60 {
        let written = get(
            server.http(),
            &format!("/external/api/update?token={token}&V4={}", n % 2),
        )
        .await;
        assert_eq!(written.status, 200, "{}", written.body);
    }
    app_socket.send(write("last", 0)).await;
    let last = app_socket
        .expect(|m| m["id"] == "last" && m["status"] == "pending")
        .await;
    let last_version = last["version"].as_u64().unwrap();

    // The device gets one command for the pin, the latest, not a burst.
    let (mut device, _) = NativeClient::login(server.native(), &token, quiet()).await;
    let update = device
        .expect("command", |m| match m {
            Received::Update {
                pin,
                value,
                version,
            } => Some((*pin, value.clone(), *version)),
            _ => None,
        })
        .await;
    assert_eq!(update, (V4, vec!["0".to_string()], last_version));
    device
        .expect_silence(std::time::Duration::from_millis(300))
        .await;
    // And it stays that way across a restart: the store kept only the latest. (The app's socket
    // is closed first: the server's shutdown would wait 5 s for a client that reads nothing.)
    drop(device);
    drop(app_socket);
    let mut server = server;
    server.restart().await;
    let (mut device, _) = NativeClient::login(server.native(), &token, quiet()).await;
    device
        .expect_silence(std::time::Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn spec_6_http_device_api_is_rate_limited_per_token() {
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 1;
        config.limits.message_burst = 5;
    })
    .await;
    let token = server.demo_token();
    let other = server.add_device("other", "light").await;
    let mut refused = Vec::new();
    for n in 0..20 {
        let answer = get(
            server.http(),
            &format!("/external/api/update?token={token}&V1={n}"),
        )
        .await;
        if answer.status != 200 {
            refused.push(answer);
        }
    }
    // Five in a burst, then about one a second: most of 20 quick requests are refused.
    assert!(refused.len() >= 10, "only {} refused", refused.len());
    assert!(refused.iter().all(|answer| answer.status == 429));
    assert!(
        refused[0].body.contains("rate limit exceeded"),
        "{}",
        refused[0].body
    );
    // Another device's token is not affected.
    let answer = get(
        server.http(),
        &format!("/external/api/update?token={other}&V1=1"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn spec_6_nul_inside_a_text_value_is_refused_naming_the_pin() {
    let server = TestServer::start().await;
    let token = server.demo_token();
    let mut classic = ClassicClient::login(server.http(), &token).await;

    // HTTP device API: a NUL inside the value, and an empty last part.
    for query in [
        format!("update?token={token}&pin=V3&value=x%00y"),
        format!("update?token={token}&V3=x%00y"),
        format!("update?token={token}&V3=a&V3="),
        format!("update?token={token}&V3="),
    ] {
        let answer = get(server.http(), &format!("/external/api/{query}")).await;
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        assert!(answer.body.contains("V3"), "{query}: {}", answer.body);
    }
    // The app API, REST and WebSocket.
    let answer = app(
        server.http(),
        "PUT",
        "/api/devices/demo/values/V3",
        Some(json!({ "value": "a\u{0000}b" })),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("V3") && answer.body.contains("NUL"));
    let mut app_socket = AppSocket::connect(server.http()).await;
    app_socket
        .send(json!({ "type": "write", "id": "n", "device": "demo", "pin": "V3", "value": ["a", "b\u{0000}c"] }))
        .await;
    let reply = app_socket.expect(|m| m["id"] == "n").await;
    assert_eq!(reply["status"], "error");
    assert_eq!(
        reply["code"], 400,
        "the status the REST write gets: {reply}"
    );
    assert!(reply["message"].as_str().unwrap().contains("V3"), "{reply}");

    // Native and MQTT devices (of a second device: one connection per device) are refused the
    // same way.
    let other = server.add_device("other", "light").await;
    let (mut device, _) = NativeClient::login(server.native(), &other, quiet()).await;
    let id = device
        .write(Pin::Virtual(3), Value::text("x\0y").unwrap(), None)
        .await;
    let (_, detail) = device.expect_error(id).await;
    assert!(detail.contains("V3") && detail.contains("NUL"), "{detail}");
    drop(device);
    let (mut mqtt, _) = MqttDevice::connect(server.mqtt(), &other, Options::default()).await;
    mqtt.subscribe("downlink/error", QoS::AtMostOnce).await;
    mqtt.publish("ds/Mode", QoS::AtLeastOnce, "eco\0").await;
    let error = mqtt.expect_publish("downlink/error").await;
    assert!(error.contains("V3"), "{error}");

    // None of it reached the classic device: the next frame it gets is the next good value.
    let good = get(
        server.http(),
        &format!("/external/api/update?token={token}&V3=fine"),
    )
    .await;
    assert_eq!(good.status, 200, "{}", good.body);
    let pushed = tokio::time::timeout(PATIENCE, async {
        loop {
            let frame = classic.recv().await.expect("connection open");
            if frame.command == 20 {
                return frame.parts();
            }
        }
    })
    .await
    .expect("the good value reached the device");
    assert_eq!(pushed, ["vw", "3", "fine"]);
    assert_eq!(http::stored(&server, "V3").await, Some(json!("fine")));
}

#[cfg(unix)]
#[tokio::test]
async fn spec_6_data_directory_and_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    // A data directory and database an older version left open to every user.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let database = data.join(blynk_server::DATABASE_FILE);
    std::fs::write(&database, b"").unwrap();
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();

    let server = TestServer::start_in(&data, crate::support::test_config(&data)).await;
    let written = get(
        server.http(),
        &format!("/external/api/update?token={}&V1=1", server.demo_token()),
    )
    .await;
    assert_eq!(written.status, 200, "{}", written.body);
    assert_eq!(mode(&data), 0o700);
    let files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(
        files.len() >= 2,
        "the database and its write-ahead log: {files:?}"
    );
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }

    // A data directory the server creates is private from the start.
    let fresh = dir.path().join("fresh");
    let _second = TestServer::start_in(&fresh, crate::support::test_config(&fresh)).await;
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join(blynk_server::DATABASE_FILE)), 0o600);
}
