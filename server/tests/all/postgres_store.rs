//! A server on the PostgreSQL store (`--store postgres://...`): what it acknowledged is there
//! after a restart, and a restart of PostgreSQL itself is ridden out without restarting the
//! server (clear errors while it is down, everything working again once it is back).

use crate::support::{TestServer, http, test_config};
use blynk_testbed::postgres::{self, Postgres};

/// A server on `url`, with a data directory of its own (which holds none of the state).
async fn start_on(url: &str) -> (TestServer, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(data.path());
    config.store.url = Some(url.to_owned());
    (TestServer::start_in(data.path(), config).await, data)
}

async fn update(server: &TestServer, token: &str, query: &str) -> http::Response {
    http::get(
        server.http(),
        &format!("/external/api/update?token={token}&{query}"),
    )
    .await
}

async fn read(server: &TestServer, token: &str, pin: &str) -> String {
    http::get(
        server.http(),
        &format!("/external/api/get?token={token}&{pin}"),
    )
    .await
    .body
}

#[tokio::test]
async fn spec_3_10_a_server_on_postgres_keeps_acknowledged_values_across_a_restart() {
    let url = postgres::shared().fresh_database();
    let (mut first, _data) = start_on(&url).await;
    let token = first.demo_token();
    assert_eq!(update(&first, &token, "v1=42").await.status, 200);
    assert_eq!(update(&first, &token, "v3=hello").await.status, 200);
    first.stop().await;

    // Another data directory: everything comes from PostgreSQL.
    let (second, _other_data) = start_on(&url).await;
    assert_eq!(read(&second, &token, "v1").await, "42");
    assert_eq!(read(&second, &token, "v3").await, "hello");
    assert_eq!(
        second.server().admin_key.as_deref(),
        Some(crate::support::ADMIN_KEY),
        "the key the tests give at start"
    );
    assert!(!second.server().first_start);
}

#[tokio::test]
async fn spec_7_a_restart_of_postgres_is_503_on_writes_and_reads_then_ridden_out() {
    // A server of its own: the shared one must not go away under other tests.
    let database = Postgres::start().unwrap_or_else(|error| panic!("{error}"));
    let (server, _data) = start_on(&database.url("postgres")).await;
    let token = server.demo_token();
    assert_eq!(update(&server, &token, "v1=1").await.status, 200);

    database.stop();
    let refused = update(&server, &token, "v1=2").await;
    assert_eq!(
        refused.status, 503,
        "a write that cannot be stored is refused as unavailable: {}",
        refused.body
    );
    assert!(
        refused.body.contains("unavailable"),
        "the error says why: {}",
        refused.body
    );
    // Every request that needs the store says the same, reads and app writes alike: a client
    // tells "try again" from a request of its own that was wrong.
    let app_requests = [
        ("GET", "/api/devices/demo/history/V1", None),
        ("GET", "/api/devices/demo/events", None),
        (
            "PUT",
            "/api/devices/demo/values/V1",
            Some(serde_json::json!({ "value": 1, "wait_ms": 0 })),
        ),
        (
            "POST",
            "/api/devices",
            Some(serde_json::json!({ "name": "porch", "template": "light" })),
        ),
    ];
    for (method, path, body) in app_requests {
        let response = http::app(server.http(), method, path, body).await;
        assert_eq!(
            response.status, 503,
            "{method} {path} while the store is down: {}",
            response.body
        );
    }

    database.resume().unwrap();
    assert_eq!(
        update(&server, &token, "v1=3").await.status,
        200,
        "the store reconnects by itself"
    );
    assert_eq!(read(&server, &token, "v1").await, "3");
}
