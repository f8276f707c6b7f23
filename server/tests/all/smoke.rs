//! The server starts, serves each protocol, and restarts on its data.

use blynk_proto::Pin;
use blynk_proto::native::LoginResult;

use crate::support::native::{LoginOptions, NativeClient};
use crate::support::{TestServer, http};

#[tokio::test]
async fn first_start_creates_the_demo_and_every_port_answers() {
    let server = TestServer::start().await;
    let devices = http::app(server.http(), "GET", "/api/devices", None).await;
    assert_eq!(devices.status, 200);
    assert_eq!(devices.json()[0]["name"], "demo");
    let (_client, result) = NativeClient::login(
        server.native(),
        &server.demo_token(),
        LoginOptions::default(),
    )
    .await;
    assert!(matches!(result, LoginResult::Accepted { .. }));
    let _classic =
        crate::support::classic::ClassicClient::login(server.http(), &server.demo_token()).await;
    let _ = Pin::Virtual(0);
}
