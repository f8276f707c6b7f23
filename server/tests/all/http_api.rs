//! The HTTP device API (Blynk IoT and classic forms) and the app API's REST side.

use serde_json::json;

use crate::support::native::{LoginOptions, NativeClient};
use crate::support::{TestServer, http};

#[tokio::test]
async fn spec_4_http_update_and_get_in_the_blynk_iot_forms() {
    let server = TestServer::start().await;
    let token = server.demo_token();
    let address = server.http();
    assert_eq!(
        http::get(
            address,
            &format!("/external/api/update?token={token}&v1=100")
        )
        .await
        .status,
        200
    );
    let read = http::get(address, &format!("/external/api/get?token={token}&v1")).await;
    assert_eq!((read.status, read.body.as_str()), (200, "100"));
    assert_eq!(
        http::get(
            address,
            &format!("/external/api/update?token={token}&pin=V1&value=7")
        )
        .await
        .status,
        200
    );
    assert_eq!(
        http::get(address, &format!("/external/api/get?token={token}&pin=V1"))
            .await
            .body,
        "7"
    );
    let batch = http::get(
        address,
        &format!("/external/api/batch/update?token={token}&v0=1&v1=2"),
    )
    .await;
    assert_eq!(batch.status, 200);
    let both = http::get(address, &format!("/external/api/get?token={token}&v0&v1"))
        .await
        .json();
    assert_eq!(both, json!({ "v0": "1", "v1": "2" }));
}

#[tokio::test]
async fn spec_4_http_multi_value_update_by_repeating_value() {
    let server = TestServer::start().await;
    server
        .add_template(
            "name = \"m\"\n[[datastream]]\npin = \"V5\"\nname = \"Mix\"\ntype = \"string\"\n",
        )
        .await;
    let token = server.add_device("m1", "m").await;
    let update = http::get(
        server.http(),
        &format!("/external/api/update?token={token}&pin=V5&value=a&value=b&value=3"),
    )
    .await;
    assert_eq!(update.status, 200, "{}", update.body);
    let read = http::get(
        server.http(),
        &format!("/external/api/get?token={token}&v5"),
    )
    .await
    .json();
    assert_eq!(read, json!(["a", "b", "3"]));
}

#[tokio::test]
async fn spec_4_http_classic_forms() {
    let server = TestServer::start().await;
    let token = server.demo_token();
    let address = server.http();
    assert_eq!(
        http::get(address, &format!("/{token}/update/V1?value=42"))
            .await
            .status,
        200
    );
    let read = http::get(address, &format!("/{token}/get/V1")).await;
    assert_eq!(read.json(), json!(["42"]));
    assert_eq!(
        http::get(address, &format!("/{token}/isHardwareConnected"))
            .await
            .body,
        "false"
    );
    let _device = NativeClient::login(server.native(), &token, LoginOptions::default()).await;
    assert_eq!(
        http::get(address, &format!("/{token}/isHardwareConnected"))
            .await
            .body,
        "true"
    );
    assert_eq!(
        http::get(
            address,
            &format!("/external/api/isHardwareConnected?token={token}")
        )
        .await
        .body,
        "true"
    );
}

#[tokio::test]
async fn spec_4_http_property_update_is_stored_and_never_a_value() {
    let server = TestServer::start().await;
    let token = server.demo_token();
    let set = http::get(
        server.http(),
        &format!(
            "/external/api/update/property?token={token}&pin=V1&label=Kitchen&color=%23FF0000"
        ),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let properties = http::app(server.http(), "GET", "/api/devices/demo/properties", None)
        .await
        .json();
    assert_eq!(properties.as_array().unwrap().len(), 2);
    assert!(
        properties
            .as_array()
            .unwrap()
            .contains(&json!({ "pin": "V1", "name": "color", "value": "#FF0000" }))
    );
    let values = http::app(server.http(), "GET", "/api/devices/demo/values", None)
        .await
        .json();
    assert_eq!(values, json!({}));
}

#[tokio::test]
async fn spec_4_http_errors_are_json_with_a_message_and_the_right_status() {
    let server = TestServer::start().await;
    let token = server.demo_token();
    let address = server.http();
    let cases = [
        (
            "/external/api/update?token=00000000000000000000000000000000&v1=1".to_string(),
            401,
        ),
        (format!("/external/api/update?token={token}&v0=on"), 400),
        (format!("/external/api/update?token={token}&v99=1"), 400),
        (format!("/external/api/update?token={token}&x1=1"), 400),
        (format!("/external/api/get?token={token}&v0"), 404),
        (format!("/external/api/update?token={token}"), 400),
        ("/external/api/get?v1".to_string(), 400),
        ("/no/such/route/at/all".to_string(), 404),
    ];
    for (path, expected) in cases {
        let response = http::get(address, &path).await;
        assert_eq!(response.status, expected, "{path}: {}", response.body);
        let message = response.json()["error"]["message"]
            .as_str()
            .map(str::to_owned);
        assert!(
            message.is_some_and(|m| !m.is_empty()),
            "{path}: {}",
            response.body
        );
    }
}

#[tokio::test]
async fn spec_4_app_api_errors_are_json_with_a_message_and_the_right_status() {
    let server = TestServer::start().await;
    let write = |value| Some(json!({ "value": value, "wait_ms": 0 }));
    let device = |name: &str| Some(json!({ "name": name, "template": "light" }));
    let cases = [
        ("GET", "/api/devices/nosuch", None, 404),
        ("GET", "/api/devices/nosuch/values", None, 404),
        ("GET", "/api/devices/nosuch/history/V1", None, 404),
        ("GET", "/api/devices/nosuch/events", None, 404),
        ("PUT", "/api/devices/nosuch/values/V1", write(json!(1)), 404),
        ("DELETE", "/api/devices/nosuch", None, 404),
        ("GET", "/api/devices/demo/values/V77", None, 404),
        // A value the datastream refuses, a pin without one: the client's mistake.
        (
            "PUT",
            "/api/devices/demo/values/V0",
            write(json!("on")),
            400,
        ),
        ("PUT", "/api/devices/demo/values/V99", write(json!(1)), 400),
        ("GET", "/api/devices/demo/history/X1", None, 400),
        ("POST", "/api/devices", device("1234"), 400),
        ("POST", "/api/devices", device(""), 400),
        ("POST", "/api/devices", device("demo"), 409),
        (
            "POST",
            "/api/devices",
            Some(json!({ "name": "porch", "template": "nosuch" })),
            404,
        ),
    ];
    for (method, path, body, expected) in cases {
        let response = http::app(server.http(), method, path, body).await;
        assert_eq!(
            response.status, expected,
            "{method} {path}: {}",
            response.body
        );
        let message = response.json()["error"]["message"]
            .as_str()
            .map(str::to_owned);
        assert!(
            message.is_some_and(|m| !m.is_empty()),
            "{method} {path}: {}",
            response.body
        );
    }
}

#[tokio::test]
async fn spec_3_10_http_write_answered_200_is_stored() {
    let server = TestServer::start().await;
    let token = server.demo_token();
    assert_eq!(
        http::get(
            server.http(),
            &format!("/external/api/update?token={token}&v1=9")
        )
        .await
        .status,
        200
    );
    let values = http::app(server.http(), "GET", "/api/devices/demo/values", None)
        .await
        .json();
    assert_eq!(values["V1"]["origin"], "http");
}

#[tokio::test]
async fn app_api_needs_the_admin_key() {
    let server = TestServer::start().await;
    let anonymous = http::get(server.http(), "/api/devices").await;
    assert_eq!(anonymous.status, 401);
    let wrong = http::request(
        server.http(),
        "GET",
        "/api/devices",
        &[("Authorization", "Bearer nope")],
        None,
    )
    .await;
    assert_eq!(wrong.status, 401);
}

#[tokio::test]
async fn app_api_creates_templates_and_devices_with_tokens() {
    let server = TestServer::start().await;
    let template = json!({
        "name": "thermostat",
        "datastreams": [
            { "pin": "V0", "name": "Target", "type": "double", "min": 5.0, "max": 30.0, "sync": true },
            { "pin": "V1", "name": "Reading", "type": "double" },
        ]
    });
    let created = http::app(
        server.http(),
        "POST",
        "/api/templates",
        Some(template.clone()),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let duplicate = http::app(server.http(), "POST", "/api/templates", Some(template)).await;
    assert_eq!(duplicate.status, 409);
    let bad = http::app(server.http(), "POST", "/api/templates", Some(json!({ "name": "x", "datastreams": [{ "pin": "V300", "name": "a", "type": "integer" }] }))).await;
    assert_eq!(bad.status, 400);

    let device = http::app(
        server.http(),
        "POST",
        "/api/devices",
        Some(json!({ "name": "hall", "template": "thermostat" })),
    )
    .await;
    assert_eq!(device.status, 201, "{}", device.body);
    let token = device.json()["token"].as_str().unwrap().to_owned();
    let taken = http::app(
        server.http(),
        "POST",
        "/api/devices",
        Some(json!({ "name": "hall", "template": "thermostat" })),
    )
    .await;
    assert_eq!(taken.status, 409, "device names are unique: {}", taken.body);
    assert!(blynk_proto::text::is_token(&token));
    let write = http::app(
        server.http(),
        "PUT",
        "/api/devices/hall/values/V0",
        Some(json!({ "value": 50, "wait_ms": 0 })),
    )
    .await
    .json();
    assert_eq!(write["status"], "pending");
    let value = http::app(server.http(), "GET", "/api/devices/hall/values/V0", None)
        .await
        .json();
    assert_eq!(value["value"], 30.0, "clamped to max");
    let history = http::app(server.http(), "GET", "/api/devices/hall/history/V0", None)
        .await
        .json();
    assert_eq!(history.as_array().unwrap().len(), 1);

    let removed = http::app(server.http(), "DELETE", "/api/devices/hall", None).await;
    assert_eq!(removed.status, 204);
    let gone = http::get(
        server.http(),
        &format!("/external/api/get?token={token}&v0"),
    )
    .await;
    assert_eq!(
        gone.status, 401,
        "the token of a deleted device no longer works"
    );
}
