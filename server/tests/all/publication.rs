//! SPEC 3.13: every change that becomes durable reaches every watching app exactly once, in
//! version order, whatever happens to the connection that made it.

use blynk_proto::Pin;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::TestServer;
use crate::support::classic::ClassicClient;
use crate::support::http::AppSocket;
use crate::support::native::{LoginOptions, NativeClient};

/// How many devices write and hang up at once, one after the other.
const WRITERS: i64 = 5;

/// Collects the watcher's `V2` values of the demo device until `last` arrives.
async fn watched_values(app: &mut AppSocket, last: i64) -> Vec<(i64, u64)> {
    let mut seen = Vec::new();
    loop {
        let event = app
            .expect(|event| event["type"] == "value" && event["pin"] == "V2")
            .await;
        let value = event["value"].as_i64().expect("an integer value");
        let version = event["version"].as_u64().expect("a version");
        seen.push((value, version));
        if value == last {
            return seen;
        }
    }
}

fn assert_each_once_in_order(seen: &[(i64, u64)], first: i64) {
    let values: Vec<i64> = seen.iter().map(|(value, _)| *value).collect();
    let expected: Vec<i64> = (first..first + WRITERS).collect();
    assert_eq!(values, expected, "every write once, in order");
    assert!(
        seen.windows(2).all(|pair| pair[0].1 < pair[1].1),
        "versions increase: {seen:?}"
    );
}

#[tokio::test]
async fn spec_3_13_classic_device_that_writes_and_hangs_up_reaches_watchers() {
    let server = TestServer::start().await;
    let mut app = AppSocket::connect(server.http()).await;
    app.watch(json!(["demo"])).await;
    for value in 1001..1001 + WRITERS {
        let mut device = ClassicClient::login(server.http(), &server.demo_token()).await;
        device.virtual_write(2, &[&value.to_string()]).await;
        // Hang up at once: the write's acknowledgement has no one to go to.
        device.stream.shutdown().await.unwrap();
        drop(device);
    }
    let seen = watched_values(&mut app, 1000 + WRITERS).await;
    assert_each_once_in_order(&seen, 1001);
    assert_eq!(
        crate::support::http::stored(&server, "V2").await,
        Some(Value::from(1000 + WRITERS))
    );
}

#[tokio::test]
async fn spec_3_13_native_device_that_writes_and_hangs_up_reaches_watchers() {
    let server = TestServer::start().await;
    let mut app = AppSocket::connect(server.http()).await;
    app.watch(json!(["demo"])).await;
    for value in 2001..2001 + WRITERS {
        let options = LoginOptions {
            sync_on_connect: false,
            ..LoginOptions::default()
        };
        let (mut device, _) =
            NativeClient::login(server.native(), &server.demo_token(), options).await;
        device.write_int(Pin::Virtual(2), value).await;
        device.stream.shutdown().await.unwrap();
        drop(device);
    }
    let seen = watched_values(&mut app, 2000 + WRITERS).await;
    assert_each_once_in_order(&seen, 2001);
    assert_eq!(
        crate::support::http::stored(&server, "V2").await,
        Some(Value::from(2000 + WRITERS))
    );
}
