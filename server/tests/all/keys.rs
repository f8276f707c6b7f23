//! SPEC 6 (secrets at rest) and scoped API keys: the admin key is stored hashed and shown on
//! first start only, `key rotate` replaces it, `?key=` works on the WebSocket only, and each
//! scope (`admin`, `read`, `control`) is enforced on REST and on the WebSocket with a 403 that
//! names the missing scope.

use std::time::Instant;

use serde_json::{Value, json};

use crate::support::http::{self, AppSocket, AppSocketEnd};
use crate::support::{ADMIN_KEY, PATIENCE, TestServer, server_command, test_config};

/// Makes a key through the app API and returns its secret.
async fn create_key(server: &TestServer, body: Value) -> String {
    let created = http::app(server.http(), "POST", "/api/keys", Some(body)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    assert!(
        created.get("hash").is_none(),
        "no hash in answers: {created}"
    );
    created["key"].as_str().unwrap().to_owned()
}

/// Asserts a 403 whose body names the missing scope.
fn assert_missing_scope(response: &http::Response, scope: &str) {
    assert_eq!(response.status, 403, "{}", response.body);
    let body = response.json();
    assert_eq!(body["error"]["missing_scope"], scope, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("`{scope}`")),
        "the message names the scope: {message}"
    );
}

/// Every byte of the data directory's files, to search for secrets.
fn data_bytes(data: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            bytes.extend(std::fs::read(path).unwrap());
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn spec_6_admin_key_is_stored_hashed_and_shown_on_first_start_only() {
    let dir = tempfile::tempdir().unwrap();
    let first = blynk_server::start(test_config(dir.path())).await.unwrap();
    let key = first
        .admin_key
        .clone()
        .expect("the first start shows the admin key");
    let http = first.http_address;
    let works = http::app_with_key(http, &key, "GET", "/api/devices", None).await;
    assert_eq!(works.status, 200, "{}", works.body);
    first.shutdown().await;
    assert!(
        !contains(&data_bytes(dir.path()), &key),
        "the admin key is in the data directory in plain text"
    );

    let second = blynk_server::start(test_config(dir.path())).await.unwrap();
    assert_eq!(second.admin_key, None, "a later start shows no key");
    assert!(!second.first_start);
    let works = http::app_with_key(second.http_address, &key, "GET", "/api/devices", None).await;
    assert_eq!(
        works.status, 200,
        "the stored key still works: {}",
        works.body
    );
    second.shutdown().await;
}

#[tokio::test]
async fn spec_6_plain_admin_key_of_an_older_data_directory_becomes_a_hash() {
    use blynk_server::store::sqlite::{Durability, SqliteStore};
    use blynk_server::store::{Store, settle};
    let dir = tempfile::tempdir().unwrap();
    let legacy = "legacy-admin-key-0123456789abcdef";
    {
        let store = SqliteStore::open(
            &dir.path().join(blynk_server::DATABASE_FILE),
            Durability::Full,
        )
        .unwrap();
        settle(store.set_setting("admin_key", legacy))
            .await
            .unwrap();
    }
    let server = blynk_server::start(test_config(dir.path())).await.unwrap();
    assert_eq!(
        server.admin_key, None,
        "the existing key is kept, not replaced"
    );
    let works = http::app_with_key(server.http_address, legacy, "GET", "/api/devices", None).await;
    assert_eq!(works.status, 200, "{}", works.body);
    let keys = server.keys().list();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0].name.as_str(), keys[0].scope),
        ("admin", blynk_server::keys::Scope::Admin)
    );
    server.shutdown().await;
    let store = SqliteStore::open(
        &dir.path().join(blynk_server::DATABASE_FILE),
        Durability::Full,
    )
    .unwrap();
    assert_eq!(
        settle(store.setting("admin_key")).await.unwrap().as_deref(),
        Some(""),
        "the plain key is overwritten"
    );
}

#[tokio::test]
async fn spec_6_key_rotate_prints_a_new_key_and_the_old_one_stops_working() {
    let server = TestServer::start().await;
    let output = server_command(&server.data, &["key", "rotate"]).await;
    assert!(output.status.success(), "{output:?}");
    let new_key = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(new_key.len() >= 32, "`{new_key}`");
    // The running server takes the new key at once (an unknown key reloads the ring).
    let works = http::app_with_key(server.http(), &new_key, "GET", "/api/devices", None).await;
    assert_eq!(works.status, 200, "{}", works.body);
    // The old one stops working within the reload period (on the server's clock, moved on).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let old = http::app(server.http(), "GET", "/api/devices", None).await;
        if old.status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the old key still works");
        server.advance(blynk_server::keys::RELOAD_EVERY);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // `blynk-server key` alone cannot print a hashed key; it says what to do instead.
    let output = server_command(&server.data, &["key"]).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("key rotate"));
}

#[tokio::test]
async fn spec_6_query_key_is_refused_on_rest_routes() {
    let server = TestServer::start().await;
    let query = http::get(server.http(), &format!("/api/devices?key={ADMIN_KEY}")).await;
    assert_eq!(query.status, 401, "{}", query.body);
    assert!(query.body.contains("/api/ws only"), "{}", query.body);
    // The WebSocket, which browsers open without headers, takes it.
    let mut socket = AppSocket::connect(server.http()).await;
    socket.watch(json!("all")).await;
}

#[tokio::test]
async fn read_key_reads_and_watches_but_is_refused_writes_and_admin_calls() {
    let server = TestServer::start().await;
    let read = create_key(&server, json!({ "name": "viewer", "scope": "read" })).await;
    let http = server.http();

    for path in [
        "/api/devices",
        "/api/templates",
        "/api/devices/demo/values",
        "/api/devices/demo/history/V0",
        "/api/devices/demo/events",
        "/api/devices/demo/properties",
    ] {
        let response = http::app_with_key(http, &read, "GET", path, None).await;
        assert_eq!(response.status, 200, "{path}: {}", response.body);
    }
    let me = http::app_with_key(http, &read, "GET", "/api/me", None)
        .await
        .json();
    assert_eq!(
        me,
        json!({ "name": "viewer", "scope": "read", "templates": [], "devices": [], "created_at": me["created_at"] })
    );
    let details = http::app_with_key(http, &read, "GET", "/api/devices/demo", None)
        .await
        .json();
    assert!(
        details.get("token").is_none(),
        "device tokens are for admin keys: {details}"
    );

    let write = http::app_with_key(
        http,
        &read,
        "PUT",
        "/api/devices/demo/values/V0",
        Some(json!({ "value": 1 })),
    )
    .await;
    assert_missing_scope(&write, "control");
    let refused: [(&str, &str, Option<Value>); 5] = [
        (
            "POST",
            "/api/devices",
            Some(json!({ "name": "x", "template": "light" })),
        ),
        ("DELETE", "/api/devices/demo", None),
        (
            "POST",
            "/api/templates",
            Some(json!({ "name": "t", "datastreams": [] })),
        ),
        ("GET", "/api/keys", None),
        ("DELETE", "/api/keys/admin", None),
    ];
    for (method, path, body) in refused {
        let response = http::app_with_key(http, &read, method, path, body).await;
        assert_missing_scope(&response, "admin");
    }
    // Nothing was written.
    let values = http::app(http, "GET", "/api/devices/demo/values", None)
        .await
        .json();
    assert!(values.get("V0").is_none(), "{values}");

    // The WebSocket: a snapshot without the token, then a refused write.
    let mut socket = AppSocket::connect_with_key(http, &read).await;
    let snapshot = socket.watch(json!(["demo"])).await;
    assert!(snapshot["devices"][0].get("token").is_none(), "{snapshot}");
    socket
        .send(json!({ "type": "write", "id": "w1", "device": "demo", "pin": "V0", "value": 1 }))
        .await;
    let reply = socket.expect(|message| message["id"] == "w1").await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["code"], 403);
    assert_eq!(reply["missing_scope"], "control");
    // A value written by someone else still reaches a read key's watch.
    http::app_write(&server, "V2", json!(7)).await;
    let value = socket
        .expect(|message| message["type"] == "value" && message["pin"] == "V2")
        .await;
    assert_eq!(value["value"], 7);
}

#[tokio::test]
async fn control_key_writes_only_to_its_templates_and_devices() {
    let server = TestServer::start().await;
    server.add_device("porch", "light").await;
    server
        .add_template(
            "name = \"other\"\n[[datastream]]\npin = \"V0\"\nname = \"X\"\ntype = \"integer\"\n",
        )
        .await;
    server.add_device("pump", "other").await;
    let http = server.http();
    let by_template = create_key(
        &server,
        json!({ "name": "lights", "scope": "control", "templates": ["light"] }),
    )
    .await;
    let by_device = create_key(
        &server,
        json!({ "name": "porch-only", "scope": "control", "devices": ["porch"] }),
    )
    .await;
    let write = |key: String, device: &'static str| async move {
        http::app_with_key(
            http,
            &key,
            "PUT",
            &format!("/api/devices/{device}/values/V0"),
            Some(json!({ "value": 1, "wait_ms": 0 })),
        )
        .await
    };
    for device in ["demo", "porch"] {
        let response = write(by_template.clone(), device).await;
        assert_eq!(response.status, 200, "{device}: {}", response.body);
    }
    assert_missing_scope(&write(by_template.clone(), "pump").await, "control");
    assert_eq!(write(by_device.clone(), "porch").await.status, 200);
    assert_missing_scope(&write(by_device.clone(), "demo").await, "control");
    // A control key reads like a read key, and is no admin.
    let values =
        http::app_with_key(http, &by_device, "GET", "/api/devices/pump/values", None).await;
    assert_eq!(values.status, 200);
    let keys = http::app_with_key(http, &by_device, "GET", "/api/keys", None).await;
    assert_missing_scope(&keys, "admin");

    // The same on the WebSocket.
    let mut socket = AppSocket::connect_with_key(http, &by_device).await;
    socket.watch(json!("all")).await;
    socket
        .send(json!({ "type": "write", "id": "ok", "device": "porch", "pin": "V0", "value": 0 }))
        .await;
    let reply = socket.expect(|message| message["id"] == "ok").await;
    assert!(
        reply["status"] == "stored" || reply["status"] == "pending",
        "{reply}"
    );
    socket
        .send(json!({ "type": "write", "id": "no", "device": "demo", "pin": "V0", "value": 0 }))
        .await;
    let reply = socket.expect(|message| message["id"] == "no").await;
    assert_eq!(reply["code"], 403, "{reply}");
    assert_eq!(reply["missing_scope"], "control");
}

#[tokio::test]
async fn admin_manages_keys_and_a_revoked_key_stops_at_once() {
    let server = TestServer::start().await;
    let http = server.http();
    let second_admin = create_key(&server, json!({ "name": "ops", "scope": "admin" })).await;
    let reader = create_key(&server, json!({ "name": "viewer", "scope": "read" })).await;
    let listed = http::app_with_key(http, &second_admin, "GET", "/api/keys", None).await;
    assert_eq!(listed.status, 200);
    let names: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|key| {
            assert!(
                key.get("key").is_none() && key.get("hash").is_none(),
                "{key}"
            );
            key["name"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(names, ["admin", "ops", "viewer"]);

    let duplicate = http::app(
        http,
        "POST",
        "/api/keys",
        Some(json!({ "name": "viewer", "scope": "read" })),
    )
    .await;
    assert_eq!(duplicate.status, 409);
    let no_targets = http::app(
        http,
        "POST",
        "/api/keys",
        Some(json!({ "name": "c", "scope": "control" })),
    )
    .await;
    assert_eq!(no_targets.status, 400, "{}", no_targets.body);
    let unknown_device = http::app(
        http,
        "POST",
        "/api/keys",
        Some(json!({ "name": "c", "scope": "control", "devices": ["nope"] })),
    )
    .await;
    assert_eq!(unknown_device.status, 400, "{}", unknown_device.body);

    let mut watching = AppSocket::connect_with_key(http, &reader).await;
    watching.watch(json!("all")).await;
    let revoked = http::app(http, "DELETE", "/api/keys/viewer", None).await;
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    let after = http::app_with_key(http, &reader, "GET", "/api/devices", None).await;
    assert_eq!(after.status, 401);
    // A WebSocket opened with the key is closed too, with the reason, within the reload period
    // of the server's clock (moved on).
    let ending = server
        .advance_until(blynk_server::keys::RELOAD_EVERY, async {
            loop {
                match watching.next_event(PATIENCE).await {
                    Ok(_) => continue,
                    Err(ending) => break ending,
                }
            }
        })
        .await;
    match ending {
        AppSocketEnd::Closed(code, reason) => {
            assert_eq!(code, 1008);
            assert!(reason.contains("revoked"), "{reason}");
        }
        other => panic!("closed without a reason: {other:?}"),
    }

    // The last admin key cannot be revoked (that would lock everyone out).
    assert_eq!(
        http::app(http, "DELETE", "/api/keys/ops", None)
            .await
            .status,
        204
    );
    let last = http::app(http, "DELETE", "/api/keys/admin", None).await;
    assert_eq!(last.status, 409, "{}", last.body);
    assert!(last.body.contains("key rotate"), "{}", last.body);
}

#[tokio::test]
async fn key_commands_create_list_and_revoke_keys_for_a_running_server() {
    let server = TestServer::start().await;
    let run = |args: &'static [&'static str]| server_command(&server.data, args);
    let created = run(&[
        "key", "create", "porch", "--scope", "control", "--device", "demo",
    ])
    .await;
    assert!(created.status.success(), "{created:?}");
    let secret = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let me = http::app_with_key(server.http(), &secret, "GET", "/api/me", None).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["scope"], "control");

    let listed = run(&["key", "list"]).await;
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("porch") && listed.contains("device demo"),
        "{listed}"
    );
    assert!(!listed.contains(&secret));

    let bad = run(&["key", "create", "x", "--scope", "root"]).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected admin, read or control"));

    assert!(run(&["key", "revoke", "porch"]).await.status.success());
    // Within the reload period, on the server's clock (moved on).
    let deadline = Instant::now() + PATIENCE;
    while http::app_with_key(server.http(), &secret, "GET", "/api/me", None)
        .await
        .status
        != 401
    {
        assert!(Instant::now() < deadline, "the revoked key still works");
        server.advance(blynk_server::keys::RELOAD_EVERY);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
