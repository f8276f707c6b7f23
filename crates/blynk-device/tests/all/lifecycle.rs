//! The connection lifecycle: restart and restore, a refused token, the heartbeat.

use std::time::{Duration, Instant};

use blynk_device::{Error, SyncDone};
use blynk_proto::Pin;
use blynk_proto::native::LoginRejection;

use crate::support::{DemoDevice as _, Device, Dialer, PATIENCE, Proxy, Seen, TestServer};

#[tokio::test]
async fn spec_3_3_and_3_11_after_a_server_restart_the_device_is_restored_with_what_changed() {
    let mut server = TestServer::start().await;
    let dialer = Dialer::to(server.native());
    let mut device = Device::start(&server.demo_token(), 10, dialer.clone());
    device.restored().await;
    server.app_write(Pin::Virtual(0), 1).await;
    assert_eq!(device.next().await, Seen::Write(0, "1".into()));

    // The server goes down; while the device cannot reach it, it comes back on the same data
    // and an app writes V1.
    dialer.set(None);
    server.stop().await;
    assert!(matches!(device.next().await, Seen::Disconnected(_)));
    server.restart().await;
    server.app_write(Pin::Virtual(1), 42).await;
    dialer.set(Some(server.native()));

    assert_eq!(device.next().await, Seen::Connected);
    let (writes, done) = device.restored().await;
    // Delta resync: the device kept its state, so only what changed since comes back (not V0,
    // not V3's default).
    assert_eq!(writes, [Seen::Write(1, "42".into())]);
    assert_eq!(
        done,
        SyncDone {
            automatic: true,
            count: 1
        }
    );
    assert_eq!(device.blynk.status().logins, 2);
}

#[tokio::test]
async fn a_bad_token_stops_retrying_and_says_why() {
    let server = TestServer::start().await;
    let dialer = Dialer::to(server.native());
    let mut device = Device::start("unknownTokenunknownTokenunknownT", 10, dialer.clone());
    let blynk = device.blynk;
    assert_eq!(
        device.stopped().await,
        Error::LoginRejected(LoginRejection::InvalidToken)
    );
    assert_eq!(dialer.attempts(), 1, "a refused token is not retried");
    let status = blynk.status();
    assert_eq!(
        status.stopped,
        Some(Error::LoginRejected(LoginRejection::InvalidToken))
    );
    assert!(!status.connected);

    // A token of the wrong format never reaches the network.
    let dialer = Dialer::to(server.native());
    let mut device = Device::start("short", 10, dialer.clone());
    assert_eq!(device.stopped().await, Error::BadToken);
    assert_eq!(dialer.attempts(), 0);
}

#[tokio::test]
async fn an_unreachable_server_is_retried_with_backoff_until_it_is_there() {
    let server = TestServer::start().await;
    let dialer = Dialer::default();
    let mut device = Device::start(&server.demo_token(), 10, dialer.clone());
    crate::support::eventually("three failed attempts", || dialer.attempts() >= 3).await;
    assert!(matches!(
        device.blynk.status().last_error,
        Some(Error::Connect(_))
    ));
    dialer.set(Some(server.native()));
    assert_eq!(device.next().await, Seen::Connected);
}

#[tokio::test]
async fn spec_3_9_a_silent_server_is_detected_after_2_3_heartbeats() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.native()).await;
    let mut device = Device::start(&server.demo_token(), 1, Dialer::to(proxy.address));
    device.restored().await;

    // The route goes dead without a FIN or RST: nothing moves either way.
    proxy.set_silent(true);
    let silent_since = Instant::now();
    let seen = device.next().await;
    let after = silent_since.elapsed();
    assert_eq!(seen, Seen::Disconnected(Error::HeartbeatTimeout));
    // 2.3 heartbeats of silence counted from the last byte received, which came at most one
    // heartbeat (a pong) before the proxy went silent.
    assert!(
        after >= Duration::from_millis(1200) && after <= Duration::from_millis(3500),
        "detected after {after:?}"
    );

    proxy.set_silent(false);
    assert_eq!(device.next().await, Seen::Connected);
    device.restored().await;
}

#[tokio::test]
async fn spec_3_9_pings_keep_an_idle_device_online() {
    let server = TestServer::start().await;
    let mut device = Device::start(&server.demo_token(), 1, Dialer::to(server.native()));
    device.restored().await;
    // Idle for more than 2.3 heartbeats on both sides: the pings keep the connection.
    let idle = tokio::time::timeout(Duration::from_millis(3500), device.next()).await;
    assert!(idle.is_err(), "unexpected {idle:?}");
    assert!(server.demo().is_online());
    assert!(device.blynk.is_connected());
    let _ = PATIENCE;
}
