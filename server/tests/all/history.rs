//! History export: `GET /api/devices/{device}/history/{pin}?from=&to=&format=csv|json`.

use blynk_proto::{Pin, Value};
use blynk_server::model::Origin;

use crate::support::{TestServer, http};

const V2: Pin = Pin::Virtual(2);
/// More than one page of the export (1,000 points), so paging is exercised.
const POINTS: i64 = 2_345;
/// The time of the first point (ms since the epoch); one point a second after it.
const START: i64 = 1_700_000_000_000;

/// A server whose demo device has `POINTS` values of V2, one a second from `START`, value i.
async fn server_with_history() -> TestServer {
    let server = TestServer::start_with(|config| config.store.history_per_pin = 0).await;
    let engine = server.server().engine();
    let slot = engine.find_device("demo").unwrap();
    let mut writes = Vec::new();
    for i in 0..POINTS {
        let write = engine
            .device_write_at(
                &slot,
                V2,
                &Value::int(i),
                Some(START + i * 1000),
                Origin::Http,
            )
            .unwrap();
        writes.push(write);
    }
    for write in writes {
        write.await.unwrap();
    }
    server
}

#[tokio::test]
async fn history_export_streams_every_point_of_the_range_oldest_first_as_csv_and_json() {
    let server = server_with_history().await;
    let csv = http::app(
        server.http(),
        "GET",
        &format!("/api/devices/demo/history/V2?from={START}&format=csv"),
        None,
    )
    .await;
    assert_eq!(csv.status, 200, "{}", csv.body);
    let mut lines = csv.body.lines();
    assert_eq!(lines.next(), Some("time,at_ms,value,version,origin"));
    let rows: Vec<Vec<&str>> = lines.map(|line| line.split(',').collect()).collect();
    assert_eq!(rows.len(), POINTS as usize);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[1], (START + i as i64 * 1000).to_string(), "{row:?}");
        assert_eq!(row[2], i.to_string(), "{row:?}");
        assert_eq!(row[4], "http");
    }
    assert_eq!(rows[0][0], "2023-11-14T22:13:20Z");

    // A range in RFC 3339 times: [START + 10 s, START + 20 s).
    let json = http::app(
        server.http(),
        "GET",
        "/api/devices/demo/history/V2?from=2023-11-14T22:13:30Z&to=2023-11-14T22:13:40Z&format=json",
        None,
    )
    .await;
    assert_eq!(json.status, 200, "{}", json.body);
    let values: Vec<i64> = json
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|point| point["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, (10..20).collect::<Vec<_>>());

    // The whole history as JSON (no `to`: up to now), capped by `limit` across pages.
    let capped = http::app(
        server.http(),
        "GET",
        "/api/devices/demo/history/V2?from=0&limit=1500",
        None,
    )
    .await
    .json();
    let capped = capped.as_array().unwrap();
    assert_eq!(capped.len(), 1500);
    assert_eq!(capped[1499]["value"], 1499);
}

#[tokio::test]
async fn history_export_refuses_bad_ranges_formats_and_missing_keys() {
    let server = TestServer::start().await;
    for query in ["from=yesterday", "format=xml", "from=2000&to=1000"] {
        let response = http::app(
            server.http(),
            "GET",
            &format!("/api/devices/demo/history/V1?{query}"),
            None,
        )
        .await;
        assert_eq!(response.status, 400, "{query}: {}", response.body);
    }
    let anonymous = http::get(server.http(), "/api/devices/demo/history/V1?format=csv").await;
    assert_eq!(anonymous.status, 401);
    // An empty range is an empty export, not an error.
    let empty = http::app(
        server.http(),
        "GET",
        "/api/devices/demo/history/V1?from=0&to=1&format=csv",
        None,
    )
    .await;
    assert_eq!(
        (empty.status, empty.body.as_str()),
        (200, "time,at_ms,value,version,origin\n")
    );
}
