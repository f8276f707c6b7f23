//! The app WebSocket: watch, live values, writes and their replies, a refused upgrade.

use std::time::Duration;

use blynk_client::events::{AppEvent, for_each_event, json_events};
use blynk_client::{AppReceiver, AppSocket, Error, StatusCode};
use serde_json::json;

use blynk_server::test_util::TestServer;

use crate::{client, client_with};

/// How long anything that should happen at once may take.
const PATIENCE: Duration = Duration::from_secs(15);

/// Reads until an event `wanted` accepts; every message must come within [`PATIENCE`].
async fn until(socket: &mut AppReceiver, mut wanted: impl FnMut(AppEvent<'_>) -> bool) {
    for _ in 0..1000 {
        let text = tokio::time::timeout(PATIENCE, socket.recv())
            .await
            .expect("a message in time")
            .unwrap();
        let mut found = false;
        for_each_event(text.as_bytes(), |event| found |= wanted(event));
        if found {
            return;
        }
    }
    panic!("not among 1000 messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_gets_the_snapshot_then_live_values() {
    let server = TestServer::start().await;
    let client = client(&server);
    let mut socket: AppSocket = client.websocket().await.unwrap();
    socket.watch(&["demo"]).await.unwrap();
    let snapshot = tokio::time::timeout(PATIENCE, socket.recv())
        .await
        .unwrap()
        .unwrap();
    let events = json_events(&snapshot);
    assert_eq!(events[0].0["type"], "snapshot", "{snapshot}");
    assert_eq!(events[0].0["devices"][0]["name"], "demo");
    let (_sender, mut receiver) = socket.split();
    client
        .put(
            "/api/devices/demo/values/V1",
            &json!({ "value": 42 }),
            Duration::ZERO,
        )
        .await
        .unwrap();
    until(&mut receiver, |event| {
        matches!(
            event,
            AppEvent::Value {
                pin: "V1",
                value: 42,
                ..
            }
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_answered_stored_or_pending() {
    let server = TestServer::start().await;
    let demo_id = client(&server).get("/api/devices/demo").await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let (mut sender, mut receiver) = client(&server).websocket().await.unwrap().split();
    for id in 1..=3 {
        let write =
            json!({ "type": "write", "id": id, "device": demo_id, "pin": "V1", "value": id });
        sender.feed_text(write.to_string()).await.unwrap();
    }
    sender.flush().await.unwrap();
    let mut answered = Vec::new();
    until(&mut receiver, |event| {
        if let AppEvent::WriteReply { id, status } = event
            && matches!(status, "stored" | "pending")
        {
            answered.push(id);
        }
        answered.len() == 3
    })
    .await;
    answered.sort_unstable();
    assert_eq!(answered, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_at_the_upgrade() {
    let server = TestServer::start().await;
    let error = client_with(&server, "not-the-key-0123456789")
        .websocket()
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&error, Error::Refused { status, .. } if *status == StatusCode::UNAUTHORIZED),
        "{error:?}"
    );
}
