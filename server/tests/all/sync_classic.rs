//! SPEC sections 3 and 4 through the classic Blynk protocol, with raw byte frames as the Blynk
//! libraries send them.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::classic::{ClassicClient, body, frame, ok, status};
use crate::support::http::{app_write, offline_write, stored};
use crate::support::{TestServer, http};

const SHORT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn spec_4_classic_login_29_is_answered_200_with_the_same_id() {
    let server = TestServer::start().await;
    let mut client = ClassicClient::connect(server.http()).await;
    // The captured sequence: 1d 00 01 00 20 <token>, answered 00 00 01 00 c8.
    client
        .send_raw(&frame(29, 1, server.demo_token().as_bytes()))
        .await;
    let reply = client.recv().await.unwrap();
    assert_eq!(reply, ok(1));
    // INTERNAL info frame, answered 200 (blynklib blocks until it is).
    let info = body(&[
        "ver", "1.4.0", "h-beat", "40", "buff-in", "4096", "dev", "Linux",
    ]);
    client.send_raw(&frame(17, 2, &info)).await;
    assert_eq!(client.recv().await.unwrap(), ok(2));
}

#[tokio::test]
async fn spec_4_classic_legacy_login_2_works_too() {
    let server = TestServer::start().await;
    let mut client = ClassicClient::connect(server.http()).await;
    client
        .send_raw(&frame(2, 7, server.demo_token().as_bytes()))
        .await;
    assert_eq!(client.recv().await.unwrap(), ok(7));
}

#[tokio::test]
async fn spec_4_classic_bad_token_gets_status_9_and_the_connection_closes() {
    let server = TestServer::start().await;
    let mut client = ClassicClient::connect(server.http()).await;
    client
        .send_raw(&frame(29, 1, b"0123456789abcdef0123456789abcdef"))
        .await;
    assert_eq!(client.recv().await.unwrap(), status(1, 9));
    client.expect_closed().await;
}

#[tokio::test]
async fn spec_4_classic_ping_is_answered_200_with_the_same_id() {
    let server = TestServer::start().await;
    let mut client = ClassicClient::login(server.http(), &server.demo_token()).await;
    let id = client.send(6, &[]).await;
    assert_eq!(client.recv().await.unwrap(), ok(id));
}

#[tokio::test]
async fn spec_3_1_classic_virtual_write_reaches_apps_clamped_and_unacknowledged() {
    let server = TestServer::start().await;
    let mut app = http::AppSocket::connect(server.http()).await;
    app.watch(json!(["demo"])).await;
    let mut client = ClassicClient::login(server.http(), &server.demo_token()).await;
    client.virtual_write(1, &["300"]).await;
    let event = app
        .expect(|m| m["type"] == "value" && m["pin"] == "V1")
        .await;
    assert_eq!(event["value"], 255);
    client.expect_silence(SHORT).await;
}

#[tokio::test]
async fn spec_3_1_classic_wrong_type_gets_status_11_and_is_not_stored() {
    let server = TestServer::start().await;
    let mut client = ClassicClient::login(server.http(), &server.demo_token()).await;
    let id = client.virtual_write(0, &["on"]).await;
    assert_eq!(client.recv().await.unwrap(), status(id, 11));
    assert_eq!(stored(&server, "V0").await, None);
}

#[tokio::test]
async fn spec_4_classic_unknown_command_gets_status_2() {
    let server = TestServer::start().await;
    let mut client = ClassicClient::login(server.http(), &server.demo_token()).await;
    let id = client.send(99, b"x").await;
    assert_eq!(client.recv().await.unwrap(), status(id, 2));
    let id = client.send(20, &body(&["zz", "1"])).await;
    assert_eq!(client.recv().await.unwrap(), status(id, 2));
    // The connection survives both.
    let id = client.send(6, &[]).await;
    assert_eq!(client.recv().await.unwrap(), ok(id));
}

#[tokio::test]
async fn spec_3_1_classic_multi_value_write_is_stored_whole() {
    let server = TestServer::start().await;
    server
        .add_template("name = \"multi\"\n[[datastream]]\npin = \"V2\"\nname = \"Mix\"\ntype = \"string\"\nsync = true\n")
        .await;
    let token = server.add_device("mixer", "multi").await;
    let mut client = ClassicClient::login(server.http(), &token).await;
    // The captured frame of virtualWrite(V2, 1, 2.5, "abc").
    client
        .send_raw(&frame(20, 6, b"vw\x002\x001\x002.5000000\x00abc"))
        .await;
    client.expect_silence(SHORT).await;
    let values = http::app(server.http(), "GET", "/api/devices/mixer/values", None)
        .await
        .json();
    assert_eq!(values["V2"]["value"], json!(["1", "2.5", "abc"]));
    let id = client.sync(None).await;
    let replies = client.collect_sync(id, SHORT).await;
    assert_eq!(replies, vec![vec!["vw", "2", "1", "2.5", "abc"]]);
}

#[tokio::test]
async fn spec_3_2_app_write_reaches_a_classic_device_as_one_hardware_frame_with_a_nonzero_id() {
    let server = TestServer::start().await;
    let mut client = ClassicClient::login(server.http(), &server.demo_token()).await;
    app_write(&server, "V0", json!(1)).await;
    app_write(&server, "V1", json!(42)).await;
    let first = client.recv().await.unwrap();
    let second = client.recv().await.unwrap();
    for (frame, expected) in [(&first, ["vw", "0", "1"]), (&second, ["vw", "1", "42"])] {
        assert_eq!(frame.command, 20);
        assert_ne!(frame.id, 0, "id 0 makes the clients drop the connection");
        assert_eq!(frame.parts(), expected);
    }
    assert_ne!(first.id, second.id);
}

#[tokio::test]
async fn spec_4_classic_pushes_wait_for_the_devices_first_frame_after_login() {
    let server = TestServer::start().await;
    let mut client = ClassicClient::connect(server.http()).await;
    let id = client.send(29, server.demo_token().as_bytes()).await;
    assert_eq!(client.recv().await.unwrap(), ok(id));
    // Stored (and so queued for the device) before the device says anything after its login.
    app_write(&server, "V1", json!(42)).await;
    // The libraries wait for the answer to their first frame and would misread anything else.
    let ping = client.send(6, &[]).await;
    assert_eq!(client.recv().await.unwrap(), ok(ping));
    let push = client.recv().await.unwrap();
    assert_eq!(
        (push.command, push.parts()),
        (20, vec!["vw".into(), "1".into(), "42".into()])
    );
}

#[tokio::test]
async fn spec_4_classic_pushes_start_after_a_grace_when_the_device_sends_nothing() {
    let server = TestServer::start().await;
    let mut client = ClassicClient::connect(server.http()).await;
    let id = client.send(29, server.demo_token().as_bytes()).await;
    assert_eq!(client.recv().await.unwrap(), ok(id));
    app_write(&server, "V1", json!(43)).await;
    // Held while the 2 s grace runs, then sent once the server's clock (which the test moves)
    // passes it.
    client.expect_silence(Duration::from_millis(300)).await;
    server.advance(Duration::from_secs(2));
    let push = client.recv().await.unwrap();
    assert_eq!(
        (push.command, push.parts()),
        (20, vec!["vw".into(), "1".into(), "43".into()])
    );
}

#[tokio::test]
async fn spec_3_3_classic_devices_get_no_push_at_login_only_on_request() {
    let server = TestServer::start().await;
    offline_write(&server, "V0", json!(1)).await;
    let mut client = ClassicClient::login(server.http(), &server.demo_token()).await;
    client.expect_silence(SHORT).await;
    let id = client.sync(None).await;
    let replies = client.collect_sync(id, SHORT).await;
    assert!(
        replies.contains(&vec!["vw".to_string(), "0".into(), "1".into()]),
        "{replies:?}"
    );
}

#[tokio::test]
async fn spec_3_4_classic_sync_all_replies_reuse_the_request_id_one_frame_per_pin() {
    let server = TestServer::start().await;
    offline_write(&server, "V0", json!(1)).await;
    offline_write(&server, "V1", json!(7)).await;
    offline_write(&server, "V2", json!(3)).await;
    let mut client = ClassicClient::login(server.http(), &server.demo_token()).await;
    let id = client.sync(None).await;
    let mut replies = client.collect_sync(id, SHORT).await;
    replies.sort();
    assert_eq!(
        replies,
        vec![
            vec!["vw", "0", "1"],
            vec!["vw", "1", "7"],
            vec!["vw", "3", "auto"]
        ]
    );
}

#[tokio::test]
async fn spec_3_5_classic_sync_virtual_returns_listed_pins_synced_or_not() {
    let server = TestServer::start().await;
    offline_write(&server, "V2", json!(3)).await;
    let mut client = ClassicClient::login(server.http(), &server.demo_token()).await;
    // The captured syncVirtual(V0, V1, V2) frame, with a fresh id.
    client.send_raw(&frame(16, 40, b"vr\x000\x001\x002")).await;
    let replies = client.collect_sync(40, SHORT).await;
    assert_eq!(
        replies,
        vec![vec!["vw", "2", "3"]],
        "V0 and V1 were never set and have no default"
    );
}

#[tokio::test]
async fn spec_3_6_classic_default_is_returned_for_a_never_set_pin() {
    let server = TestServer::start().await;
    let mut client = ClassicClient::login(server.http(), &server.demo_token()).await;
    let id = client.sync(Some(&[3, 0])).await;
    assert_eq!(
        client.collect_sync(id, SHORT).await,
        vec![vec!["vw", "3", "auto"]]
    );
}

#[tokio::test]
async fn spec_4_classic_device_buff_in_is_respected() {
    let server = TestServer::start().await;
    let mut client = ClassicClient::connect(server.http()).await;
    let id = client.send(29, server.demo_token().as_bytes()).await;
    assert_eq!(client.recv().await.unwrap(), ok(id));
    let id = client
        .send(
            17,
            &body(&["ver", "0.6.1", "h-beat", "10", "buff-in", "32"]),
        )
        .await;
    assert_eq!(client.recv().await.unwrap(), ok(id));
    let long = "x".repeat(60);
    app_write(&server, "V3", json!(long)).await;
    client.expect_silence(SHORT).await;
    app_write(&server, "V3", json!("short")).await;
    assert_eq!(
        client.recv().await.unwrap().parts(),
        vec!["vw", "3", "short"]
    );
}

#[tokio::test]
async fn spec_4_classic_property_and_event_log_are_stored_and_answered() {
    let server = TestServer::start().await;
    let mut client = ClassicClient::login(server.http(), &server.demo_token()).await;
    // The captured setProperty(V1, "color", "#FF0000") and logEvent("overheat", "too hot").
    client
        .send_raw(&frame(19, 7, b"1\x00color\x00#FF0000"))
        .await;
    assert_eq!(client.recv().await.unwrap(), ok(7));
    client.send_raw(&frame(64, 8, b"overheat\x00too hot")).await;
    assert_eq!(client.recv().await.unwrap(), ok(8));
    let properties = http::app(server.http(), "GET", "/api/devices/demo/properties", None)
        .await
        .json();
    assert_eq!(
        properties,
        json!([{ "pin": "V1", "name": "color", "value": "#FF0000" }])
    );
    let events = http::app(server.http(), "GET", "/api/devices/demo/events", None)
        .await
        .json();
    assert_eq!(events[0]["code"], "overheat");
}

#[tokio::test]
async fn spec_6_classic_rate_limit_drops_the_excess_with_status_1_once() {
    let server = TestServer::start_with(|config| {
        config.limits.messages_per_second = 2;
        config.limits.message_burst = 5;
    })
    .await;
    let mut client = ClassicClient::login(server.http(), &server.demo_token()).await;
    let mut ids = Vec::new();
    for value in 0..20 {
        ids.push(client.virtual_write(1, &[&value.to_string()]).await);
    }
    let first = client.recv().await.unwrap();
    assert_eq!(
        (first.command, first.length),
        (0, 1),
        "status 1: quota limit"
    );
    client.expect_silence(SHORT).await;
    let stored = stored(&server, "V1").await.unwrap();
    assert!(
        stored.as_i64().unwrap() < 10,
        "the excess was dropped, not stored: {stored}"
    );
}

#[tokio::test]
async fn spec_4_classic_hardware_over_websocket_at_websockets() {
    let server = TestServer::start().await;
    let url = format!("ws://{}/websockets", server.http());
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    socket
        .send(Message::Binary(
            frame(29, 1, server.demo_token().as_bytes()).into(),
        ))
        .await
        .unwrap();
    let reply = socket.next().await.unwrap().unwrap().into_data();
    assert_eq!(reply.as_ref(), &[0, 0, 1, 0, 200]);
    socket
        .send(Message::Binary(
            frame(20, 2, &body(&["vw", "1", "9"])).into(),
        ))
        .await
        .unwrap();
    app_write(&server, "V0", json!(1)).await;
    let pushed = socket.next().await.unwrap().unwrap().into_data();
    assert_eq!(&pushed[5..], b"vw\x000\x001");
    assert_eq!(stored(&server, "V1").await, Some(json!(9)));
}

#[tokio::test]
async fn spec_3_9_classic_presence_follows_the_connection() {
    let server = TestServer::start().await;
    let client = ClassicClient::login(server.http(), &server.demo_token()).await;
    let connected = http::get(
        server.http(),
        &format!("/{}/isHardwareConnected", server.demo_token()),
    )
    .await;
    assert_eq!(connected.body, "true");
    drop(client);
    crate::support::eventually("the device to go offline", || {
        !server
            .server()
            .engine()
            .find_device("demo")
            .unwrap()
            .is_online()
    })
    .await;
}

#[tokio::test]
async fn spec_3_12_command_for_an_offline_classic_device_arrives_after_login_once_and_is_never_synced()
 {
    let server = TestServer::start().await;
    let reply = offline_write(&server, "V4", json!(1)).await;
    assert_eq!(reply["status"], "pending");
    let mut client = ClassicClient::login(server.http(), &server.demo_token()).await;
    let command = client.recv().await.unwrap();
    assert_eq!(
        (command.command, command.parts()),
        (20, vec!["vw".to_string(), "4".into(), "1".into()])
    );
    let id = client.sync(Some(&[4])).await;
    assert!(
        client.collect_sync(id, SHORT).await.is_empty(),
        "sync_virtual never replays a command"
    );
    drop(client);
    let mut again = ClassicClient::login(server.http(), &server.demo_token()).await;
    again.expect_silence(SHORT).await;
}
