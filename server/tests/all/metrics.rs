//! `GET /metrics`: who may read it, and that its figures follow what the server does.

use std::collections::HashMap;

use blynk_proto::Pin;
use blynk_proto::native::LoginResult;
use serde_json::json;

use crate::support::http::{self, AppSocket, offline_write};
use crate::support::native::{LoginOptions, NativeClient, Received};
use crate::support::{ADMIN_KEY, PATIENCE, TestServer};

const V1: Pin = Pin::Virtual(1);
const METRICS_TOKEN: &str = "scrape-only-token";

/// One scrape, as `name{labels}` to value.
async fn scrape(server: &TestServer) -> HashMap<String, f64> {
    let auth = format!("Bearer {METRICS_TOKEN}");
    let response = http::request(
        server.http(),
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response
        .body
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("a sample line");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn figure(scrape: &HashMap<String, f64>, name: &str) -> f64 {
    *scrape
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing from the scrape: {scrape:?}"))
}

#[tokio::test]
async fn metrics_open_to_the_admin_key_or_the_metrics_token_only() {
    let server = TestServer::start_with(|config| {
        config.metrics_token = Some(METRICS_TOKEN.into());
    })
    .await;
    let status = |headers: Vec<(&'static str, String)>| {
        let address = server.http();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            http::request(address, "GET", "/metrics", &headers, None)
                .await
                .status
        }
    };
    assert_eq!(status(vec![]).await, 401);
    assert_eq!(
        status(vec![("Authorization", "Bearer wrong".into())]).await,
        401
    );
    assert_eq!(
        status(vec![("Authorization", format!("Bearer {METRICS_TOKEN}"))]).await,
        200
    );
    assert_eq!(
        status(vec![("Authorization", format!("Bearer {ADMIN_KEY}"))]).await,
        200
    );
    // The metrics token opens nothing else.
    let devices = http::request(
        server.http(),
        "GET",
        "/api/devices",
        &[("Authorization", &format!("Bearer {METRICS_TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(devices.status, 401);
}

#[tokio::test]
async fn metrics_follow_logins_writes_connections_commands_and_the_rate_limit_under_load() {
    const DEVICES: usize = 16;
    const WRITES: usize = 40;
    let server = TestServer::start_with(|config| {
        config.metrics_token = Some(METRICS_TOKEN.into());
        // Each loaded device stays inside its burst; the flooding one does not.
        config.limits.messages_per_second = 1;
        config.limits.message_burst = 60;
    })
    .await;
    let before = scrape(&server).await;
    assert_eq!(
        figure(&before, "blynk_writes_total{origin=\"device\"}"),
        0.0
    );

    // A command for the offline demo device waits.
    let reply = offline_write(&server, "V4", json!(1)).await;
    assert_eq!(reply["status"], "pending");

    let mut app = AppSocket::connect(server.http()).await;
    app.watch(json!(["demo"])).await;

    let (_, refused) = NativeClient::login(
        server.native(),
        "nosuchtoken000000000000000000000",
        LoginOptions::default(),
    )
    .await;
    assert!(matches!(refused, LoginResult::Rejected(_)), "{refused:?}");

    let mut tokens = Vec::new();
    for index in 0..DEVICES {
        tokens.push(server.add_device(&format!("load-{index}"), "light").await);
    }
    let mut devices = Vec::new();
    for token in &tokens {
        let (device, result) =
            NativeClient::login(server.native(), token, LoginOptions::default()).await;
        assert!(matches!(result, LoginResult::Accepted { .. }), "{result:?}");
        devices.push(device);
    }
    let during = scrape(&server).await;
    assert_eq!(
        figure(&during, "blynk_connections{protocol=\"native\"}"),
        DEVICES as f64
    );
    assert_eq!(figure(&during, "blynk_connections{protocol=\"app\"}"), 1.0);
    assert_eq!(figure(&during, "blynk_pending_commands"), 1.0);

    // Every device writes at once; each waits for all its acknowledgements.
    let writers = devices.into_iter().map(|mut device| {
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for value in 0..WRITES {
                ids.push(device.write_int(V1, value as i64).await);
            }
            let mut acked = 0;
            while acked < ids.len() {
                match device.recv().await {
                    Some(Received::Ack { .. }) => acked += 1,
                    Some(_) => {}
                    None => panic!("closed before every write was acknowledged"),
                }
            }
            device
        })
    });
    let mut devices = Vec::new();
    for writer in writers {
        devices.push(writer.await.unwrap());
    }

    // One device floods past its burst: the excess is dropped and counted.
    let flood = 200;
    for value in 0..flood {
        devices[0].write_int(V1, value).await;
    }

    // Each write of the flood is either stored or dropped, once the device's frames are handled;
    // each stored one is committed soon after.
    let expected = (DEVICES * WRITES) as f64 + flood as f64;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let after = loop {
        let after = scrape(&server).await;
        let handled = figure(&after, "blynk_writes_total{origin=\"device\"}")
            + figure(&after, "blynk_rate_limited_messages_total");
        let committed = figure(&after, "blynk_store_batch_size_sum")
            - figure(&before, "blynk_store_batch_size_sum");
        let stored = figure(&after, "blynk_writes_total{origin=\"device\"}");
        if (handled >= expected && committed >= stored) || tokio::time::Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let delta = |name: &str| figure(&after, name) - before.get(name).copied().unwrap_or(0.0);
    assert_eq!(
        delta("blynk_device_logins_total{result=\"ok\"}"),
        DEVICES as f64
    );
    assert_eq!(delta("blynk_device_logins_total{result=\"failed\"}"), 1.0);
    assert_eq!(delta("blynk_writes_total{origin=\"app\"}"), 1.0);
    // The loaded writes, and the flood's writes inside its burst (the rest were dropped).
    let device_writes = delta("blynk_writes_total{origin=\"device\"}");
    let dropped = delta("blynk_rate_limited_messages_total");
    assert!(dropped >= (flood - 60) as f64, "dropped {dropped}");
    assert_eq!(
        device_writes + dropped,
        expected,
        "every device write was either stored or dropped"
    );
    // Every stored write was committed, in fewer commits than writes.
    let commits = delta("blynk_store_commit_seconds_count");
    let committed = delta("blynk_store_batch_size_sum");
    assert!(committed >= device_writes, "{committed} < {device_writes}");
    assert!(commits >= 1.0 && commits <= committed, "{commits} commits");
    assert!(delta("blynk_app_messages_total") >= 1.0);
    assert!(figure(&after, "blynk_store_queue_depth") >= 0.0);

    drop(devices);
    drop(app);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let end = scrape(&server).await;
        if figure(&end, "blynk_connections{protocol=\"native\"}") == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections never fell to 0"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
