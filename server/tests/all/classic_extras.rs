//! The newer classic commands against the real server, with frames built as the C++ library
//! builds them: GROUP (SPEC 3.14), BRIDGE, INTERNAL time requests, DEBUG_PRINT; and the Blynk
//! IoT HTTP forms (`dataStreamId`, the timestamped upload).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::classic::{ClassicClient, body, frame, status};
use crate::support::http::{AppSocket, app_write, offline_write, stored};
use crate::support::{PATIENCE, TestServer, http};

const SHORT: Duration = Duration::from_millis(300);
const GROUP: u8 = 21;
const BRIDGE: u8 = 15;
const INTERNAL: u8 = 17;
const DEBUG_PRINT: u8 = 55;

fn now_ms() -> i64 {
    blynk_server::model::now_ms()
}

/// The history of a pin of a device, newest first: `(value, at, origin)`.
async fn history(server: &TestServer, device: &str, pin: &str) -> Vec<(Value, i64, String)> {
    http::app(
        server.http(),
        "GET",
        &format!("/api/devices/{device}/history/{pin}"),
        None,
    )
    .await
    .json()
    .as_array()
    .unwrap()
    .iter()
    .map(|point| {
        (
            point["value"].clone(),
            point["at"].as_i64().unwrap(),
            point["origin"].as_str().unwrap().to_owned(),
        )
    })
    .collect()
}

/// Waits until the pin's history holds `value`; returns that point.
async fn history_point(
    server: &TestServer,
    device: &str,
    pin: &str,
    value: Value,
) -> (Value, i64, String) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(point) = history(server, device, pin)
            .await
            .into_iter()
            .find(|point| point.0 == value)
        {
            return point;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{value} never reached the history of {pin}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a timestamped group of one write as `Blynk.beginGroup(at)`, `virtualWrite`,
/// `endGroup()` do; the group frames with message id 0.
async fn timestamped_group(device: &mut ClassicClient, at: i64, pin: u8, value: &str) {
    let mut bytes = frame(GROUP, 0, &body(&["t", &at.to_string()]));
    let pin = pin.to_string();
    bytes.extend(frame(20, device.next_id(), &body(&["vw", &pin, value])));
    bytes.extend(frame(GROUP, 0, b"e"));
    device.send_raw(&bytes).await;
}

#[tokio::test]
async fn spec_3_14_timestamped_group_older_than_an_app_write_goes_to_history_only() {
    let server = TestServer::start().await;
    let mut device = ClassicClient::login(server.http(), &server.demo_token()).await;
    app_write(&server, "V3", json!("fromapp")).await;
    // The device uploads a reading it measured a minute before the app's write.
    let measured = now_ms() - 60_000;
    timestamped_group(&mut device, measured, 3, "olddevice").await;
    let point = history_point(&server, "demo", "V3", json!("olddevice")).await;
    assert_eq!(point.1, measured, "the history keeps the measured time");
    assert_eq!(point.2, "device");
    assert_eq!(stored(&server, "V3").await, Some(json!("fromapp")));
    // Group frames with id 0 get no reply; the forwarded app write is all the device gets.
    while let Ok(Some(frame)) = device.recv_within(SHORT).await {
        assert_eq!(
            frame.command, 20,
            "nothing but the forwarded app write: {frame:?}"
        );
    }
}

#[tokio::test]
async fn spec_3_14_timestamped_group_newer_than_the_latest_value_wins() {
    let server = TestServer::start().await;
    let mut device = ClassicClient::login(server.http(), &server.demo_token()).await;
    app_write(&server, "V3", json!("fromapp")).await;
    let measured = now_ms();
    timestamped_group(&mut device, measured, 3, "newdevice").await;
    let point = history_point(&server, "demo", "V3", json!("newdevice")).await;
    assert_eq!(point.1, measured);
    assert_eq!(stored(&server, "V3").await, Some(json!("newdevice")));
}

#[tokio::test]
async fn spec_3_14_plain_group_reaches_apps_as_consecutive_writes() {
    let server = TestServer::start().await;
    let mut app = AppSocket::connect(server.http()).await;
    app.watch(json!(["demo"])).await;
    let mut device = ClassicClient::login(server.http(), &server.demo_token()).await;
    let mut bytes = frame(GROUP, 0, b"b");
    bytes.extend(frame(20, device.next_id(), &body(&["vw", "1", "10"])));
    bytes.extend(frame(20, device.next_id(), &body(&["vw", "2", "20"])));
    bytes.extend(frame(GROUP, 0, b"e"));
    device.send_raw(&bytes).await;
    let first = app.expect(|event| event["type"] == "value").await;
    let second = app.expect(|event| event["type"] == "value").await;
    assert_eq!((&first["pin"], &first["value"]), (&json!("V1"), &json!(10)));
    assert_eq!(
        (&second["pin"], &second["value"]),
        (&json!("V2"), &json!(20))
    );
    assert_eq!(
        second["version"].as_u64(),
        first["version"].as_u64().map(|version| version + 1),
        "one batch: consecutive versions"
    );
    device.expect_silence(SHORT).await;
}

#[tokio::test]
async fn a_group_never_ended_is_applied_by_the_next_other_frame_or_at_disconnect() {
    let server = TestServer::start().await;
    let mut device = ClassicClient::login(server.http(), &server.demo_token()).await;
    let mut bytes = frame(GROUP, 0, b"b");
    bytes.extend(frame(20, device.next_id(), &body(&["vw", "1", "5"])));
    device.send_raw(&bytes).await;
    let ping = device.send(6, &[]).await;
    assert_eq!(device.recv().await, Some(status(ping, 200)));
    assert_eq!(
        stored(&server, "V1").await,
        Some(json!(5)),
        "applied by the ping"
    );

    let mut bytes = frame(GROUP, 0, &body(&["t", &now_ms().to_string()]));
    bytes.extend(frame(20, device.next_id(), &body(&["vw", "1", "6"])));
    device.send_raw(&bytes).await;
    drop(device);
    history_point(&server, "demo", "V1", json!(6)).await;
    assert_eq!(
        stored(&server, "V1").await,
        Some(json!(6)),
        "applied at disconnect"
    );
}

#[tokio::test]
async fn a_bad_group_frame_or_grouped_write_gets_an_error_with_its_id() {
    let server = TestServer::start().await;
    let mut device = ClassicClient::login(server.http(), &server.demo_token()).await;
    let bad = device.send(GROUP, &body(&["t", "soon"])).await;
    assert_eq!(device.recv().await, Some(status(bad, 11)));
    let unknown = device.send(GROUP, b"x").await;
    assert_eq!(device.recv().await, Some(status(unknown, 2)));
    device.send_raw(&frame(GROUP, 0, b"b")).await;
    let no_datastream = device.virtual_write(99, &["1"]).await;
    device.send_raw(&frame(GROUP, 0, b"e")).await;
    assert_eq!(device.recv().await, Some(status(no_datastream, 11)));
}

#[tokio::test]
async fn bridge_write_reaches_the_target_device_and_its_watchers_with_origin_bridge() {
    let server = TestServer::start().await;
    let target_token = server.add_device("lamp", "light").await;
    let mut target = ClassicClient::login(server.http(), &target_token).await;
    let mut app = AppSocket::connect(server.http()).await;
    app.watch(json!(["lamp"])).await;
    let mut source = ClassicClient::login(server.http(), &server.demo_token()).await;
    // WidgetBridge bridge(V10); bridge.setAuthToken(T); bridge.virtualWrite(V1, 42).
    let bind = source
        .send(BRIDGE, &body(&["10", "i", &target_token]))
        .await;
    assert_eq!(source.recv().await, Some(status(bind, 200)));
    source.send(BRIDGE, &body(&["10", "vw", "1", "42"])).await;
    let forwarded = target.recv().await.unwrap();
    assert_eq!(forwarded.command, 20);
    assert_eq!(forwarded.parts(), ["vw", "1", "42"]);
    let event = app
        .expect(|event| event["type"] == "value" && event["pin"] == "V1")
        .await;
    assert_eq!(
        (&event["value"], &event["origin"]),
        (&json!(42), &json!("bridge"))
    );
    let point = history_point(&server, "lamp", "V1", json!(42)).await;
    assert_eq!(point.2, "bridge");
    source.expect_silence(SHORT).await;
    // The target being offline loses nothing: the value waits for its sync.
    drop(target);
    source.send(BRIDGE, &body(&["10", "dw", "9", "1"])).await;
    source.send(BRIDGE, &body(&["10", "vw", "1", "43"])).await;
    history_point(&server, "lamp", "V1", json!(43)).await;
}

#[tokio::test]
async fn bridge_refusals_use_the_classic_statuses_and_bad_tokens_count_as_failed_logins() {
    let server = TestServer::start_with(|config| config.limits.failed_logins_per_minute = 2).await;
    let mut device = ClassicClient::login(server.http(), &server.demo_token()).await;
    let unbound = device.send(BRIDGE, &body(&["1", "vw", "1", "1"])).await;
    assert_eq!(
        device.recv().await,
        Some(status(unbound, 6)),
        "channel never bound"
    );
    let bind = device
        .send(BRIDGE, &body(&["1", "i", &server.demo_token()]))
        .await;
    assert_eq!(device.recv().await, Some(status(bind, 200)));
    let no_datastream = device.send(BRIDGE, &body(&["1", "vw", "99", "1"])).await;
    assert_eq!(device.recv().await, Some(status(no_datastream, 11)));
    let read = device.send(BRIDGE, &body(&["1", "vr", "1"])).await;
    assert_eq!(
        device.recv().await,
        Some(status(read, 2)),
        "a bridge only writes"
    );
    let wrong = "Zbcdefghijklmnopqrstuvwxyz012345";
    for _ in 0..2 {
        let id = device.send(BRIDGE, &body(&["2", "i", wrong])).await;
        assert_eq!(device.recv().await, Some(status(id, 9)));
    }
    // Like failed logins: once the address failed too often, a wrong token is answered with
    // 1 (quota), and a right one still binds (SPEC 6).
    let limited = device.send(BRIDGE, &body(&["2", "i", wrong])).await;
    assert_eq!(device.recv().await, Some(status(limited, 1)));
    let bound = device
        .send(BRIDGE, &body(&["2", "i", &server.demo_token()]))
        .await;
    assert_eq!(device.recv().await, Some(status(bound, 200)));
}

async fn time_request(device: &mut ClassicClient, what: &[&str]) -> Vec<String> {
    let id = device.send(INTERNAL, &body(what)).await;
    let reply = device.recv().await.unwrap();
    assert_eq!((reply.command, reply.id), (INTERNAL, id), "{reply:?}");
    reply.parts()
}

#[tokio::test]
async fn time_requests_are_answered_as_internal_frames_with_the_request_id() {
    let server = TestServer::start_with(|config| config.timezone = "Europe/Berlin".into()).await;
    let mut device = ClassicClient::login(server.http(), &server.demo_token()).await;
    let before = now_ms();
    let time = time_request(&mut device, &["utc", "time"]).await;
    assert_eq!(time[..2], ["utc", "time"]);
    let at: i64 = time[2].parse().unwrap();
    assert!(
        at >= before && at <= now_ms(),
        "{at} is the server's time in ms"
    );
    assert_eq!(
        time_request(&mut device, &["utc", "tz_name"]).await,
        ["utc", "tz_name", "Europe/Berlin"]
    );
    let rule = time_request(&mut device, &["utc", "tz_rule"]).await;
    assert_eq!(rule, ["utc", "tz_rule", "CET-1CEST,M3.5.0/2,M10.5.0/3"]);
    let rtc = time_request(&mut device, &["rtc", "sync"]).await;
    let local: i64 = rtc[1].parse().unwrap();
    let offset = local - now_ms() / 1000;
    assert!(
        (3590..=7210).contains(&offset),
        "local time is UTC+1 or +2: {offset}"
    );
    let unknown = device.send(INTERNAL, &body(&["utc", "moon"])).await;
    assert_eq!(device.recv().await, Some(status(unknown, 11)));

    // A device's own `timezone` property wins over the server's.
    let token = server.demo_token();
    let set = http::get(
        server.http(),
        &format!("/external/api/update/property?token={token}&pin=V0&timezone=America/New_York"),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(
        time_request(&mut device, &["utc", "tz_name"]).await,
        ["utc", "tz_name", "America/New_York"]
    );
}

#[tokio::test]
async fn debug_print_is_logged_and_gets_no_reply() {
    let server = TestServer::start().await;
    let mut device = ClassicClient::login(server.http(), &server.demo_token()).await;
    device.send(DEBUG_PRINT, b"heap 21344").await;
    device.expect_silence(SHORT).await;
    let ping = device.send(6, &[]).await;
    assert_eq!(
        device.recv().await,
        Some(status(ping, 200)),
        "still connected"
    );
}

#[tokio::test]
async fn spec_4_http_datastream_id_names_the_virtual_pin() {
    let server = TestServer::start().await;
    let token = server.demo_token();
    let update = http::get(
        server.http(),
        &format!("/external/api/update?token={token}&dataStreamId=1&value=9"),
    )
    .await;
    assert_eq!(update.status, 200, "{}", update.body);
    let read = http::get(
        server.http(),
        &format!("/external/api/get?token={token}&dataStreamId=1"),
    )
    .await;
    assert_eq!((read.status, read.body.as_str()), (200, "9"));
    let bad = http::get(
        server.http(),
        &format!("/external/api/get?token={token}&dataStreamId=V1"),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"]["message"].is_string());
}

async fn upload(server: &TestServer, query: &str, points: &str) -> http::Response {
    let token = server.demo_token();
    http::request(
        server.http(),
        "POST",
        &format!("/external/api/batch/update?token={token}&{query}"),
        &[],
        Some(points),
    )
    .await
}

#[tokio::test]
async fn spec_3_14_http_timestamped_upload_is_ordered_by_the_points_times() {
    let server = TestServer::start().await;
    offline_write(&server, "V1", json!(100)).await;
    let now = now_ms();
    let (older, old) = (now - 120_000, now - 60_000);
    // Out of order in the request; both older than the app's write.
    let sent = upload(
        &server,
        "pin=V1",
        &format!("[[{old}, 6], [{older}, \"5\"]]"),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(stored(&server, "V1").await, Some(json!(100)));
    let points = history(&server, "demo", "V1").await;
    assert!(
        points.contains(&(json!(5), older, "http".into())),
        "{points:?}"
    );
    assert!(
        points.contains(&(json!(6), old, "http".into())),
        "{points:?}"
    );
    // A point newer than the latest value wins.
    let newer = now_ms();
    let sent = upload(&server, "dataStreamId=1", &format!("[[{newer}, 7]]")).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(stored(&server, "V1").await, Some(json!(7)));
}

#[tokio::test]
async fn http_timestamped_upload_limits_are_clear_json_errors() {
    let server = TestServer::start().await;
    let now = now_ms();
    let month_ago = now - 31 * 24 * 3600 * 1000;
    let future = now + 3_600_000;
    let too_many: Vec<String> = (0..1001).map(|i| format!("[{}, 1]", now - i)).collect();
    let too_many = format!("[{}]", too_many.join(","));
    for (query, body, expected) in [
        ("pin=V1", format!("[[{month_ago}, 1]]"), "days old"),
        ("pin=V1", format!("[[{future}, 1]]"), "future"),
        ("pin=V1", too_many, "limit is 1000"),
        ("pin=V1", "not json".to_owned(), "not JSON"),
        ("pin=V1", format!("[[{now}]]"), "point 0"),
        ("pin=V1", format!("[[{now}, [1]]]"), "point 0"),
        ("pin=V1", format!("[[{now}, 1], [{now}, \"x\"]]"), "point 1"),
        ("pin=V99", format!("[[{now}, 1]]"), "no datastream"),
        ("", format!("[[{now}, 1]]"), "missing"),
    ] {
        let answer = upload(&server, query, &body).await;
        assert_eq!(answer.status, 400, "{query} {body}: {}", answer.body);
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.contains(expected),
            "{message:?} should say {expected:?}"
        );
    }
    assert_eq!(
        stored(&server, "V1").await,
        None,
        "nothing refused was written"
    );
}
