//! REST calls: JSON answers, keep-alive connections, streamed exports, refusals.

use std::time::Duration;

use blynk_client::{Client, Endpoint, Error, StatusCode, device_path};
use serde_json::json;

use blynk_server::test_util::TestServer;

use crate::{client, client_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_answer_json_and_a_keep_alive_connection_serves_several() {
    let server = TestServer::start().await;
    let client = client(&server);
    let devices = client.get("/api/devices").await.unwrap();
    assert!(
        devices
            .as_array()
            .unwrap()
            .iter()
            .any(|device| device["name"] == "demo"),
        "{devices}"
    );
    let mut connection = client.connect().await.unwrap();
    let path = format!("{}/values/V1", device_path("demo").unwrap());
    for value in 1..=3 {
        let answer = connection
            .put(
                &path,
                &json!({ "value": value, "wait_ms": 0 }),
                Duration::ZERO,
            )
            .await
            .unwrap();
        assert!(answer["version"].is_number(), "{answer}");
    }
    let stored = connection.get(&path).await.unwrap();
    assert_eq!(stored["value"], 3, "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_carries_its_status_message_and_body() {
    let server = TestServer::start().await;
    let error = client(&server).get("/api/devices/nope").await.unwrap_err();
    let Error::Refused {
        status,
        message,
        body,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(*status, StatusCode::NOT_FOUND);
    assert!(message.contains("nope"), "{message}");
    assert!(String::from_utf8_lossy(body).contains("\"error\""));

    let wrong = client_with(&server, "not-the-key-0123456789");
    let error = wrong.get("/api/devices").await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED), "{error}");

    // A read-only key may not write: 403 and the scope it lacks.
    let made = client(&server)
        .post("/api/keys", &json!({ "name": "viewer", "scope": "read" }))
        .await
        .unwrap();
    let viewer = client_with(&server, made["key"].as_str().unwrap());
    let error = viewer
        .put(
            "/api/devices/demo/values/V1",
            &json!({ "value": 1 }),
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    let Error::Refused {
        status,
        missing_scope,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(*status, StatusCode::FORBIDDEN);
    assert_eq!(missing_scope.as_deref(), Some("control"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_arrives_line_by_line() {
    let server = TestServer::start().await;
    let client = client(&server);
    for value in [10, 11, 12] {
        client
            .put(
                "/api/devices/demo/values/V1",
                &json!({ "value": value }),
                Duration::ZERO,
            )
            .await
            .unwrap();
    }
    let mut lines = Vec::new();
    client
        .get_lines("/api/devices/demo/history/V1?format=csv", |line| {
            lines.push(line.to_owned())
        })
        .await
        .unwrap();
    assert!(lines[0].starts_with("time,at_ms,value"), "{lines:?}");
    let values: Vec<&str> = lines[1..]
        .iter()
        .filter(|line| !line.is_empty())
        .map(|line| line.split(',').nth(2).unwrap())
        .collect();
    assert_eq!(values, ["10", "11", "12"], "{lines:?}");
}

#[tokio::test]
async fn no_server_is_a_connect_error_and_a_bad_url_is_named() {
    // A port that was free a moment ago: nothing listens there.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::new(Endpoint::parse(&format!("http://{address}")).unwrap(), "k").unwrap();
    let error = client.get("/api/devices").await.unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(error.to_string().contains("cannot reach the server at"));
    let error = Endpoint::parse("ftp://example").unwrap_err();
    assert!(error.to_string().contains("http:// or https://"), "{error}");
}
