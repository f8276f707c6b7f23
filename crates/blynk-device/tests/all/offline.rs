//! SPEC 3.8: writes made offline wait in the queue and are ordered against app writes.

use std::time::Duration;

use blynk_device::{Blynk, QueueError};
use blynk_proto::Pin;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;

use crate::support::{DemoDevice as _, Device, Dialer, Proxy, Seen, TestServer, eventually};

/// A device online through a proxy, then cut off with nowhere to reconnect to.
async fn offline_device(server: &TestServer) -> (Device, Proxy) {
    let proxy = Proxy::start(server.native()).await;
    let mut device = Device::start(&server.demo_token(), 10, Dialer::to(proxy.address));
    device.restored().await;
    device.dialer.set(None);
    proxy.cut_all();
    assert_eq!(
        device.next().await,
        Seen::Disconnected(blynk_device::Error::Closed)
    );
    eventually("the server to see the device go", || {
        !server.demo().is_online()
    })
    .await;
    (device, proxy)
}

/// Lets the clock move on, so that two writes get distinct times (the server orders by ms).
async fn tick() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

#[tokio::test]
async fn spec_3_8_an_offline_write_made_after_an_app_write_wins() {
    let server = TestServer::start().await;
    let (mut device, proxy) = offline_device(&server).await;

    server.app_write(Pin::Virtual(1), 10).await;
    tick().await;
    device.blynk.virtual_write(1, 20).unwrap();
    device.blynk.virtual_write(1, 30).unwrap(); // coalesced: the latest wins
    assert_eq!(device.blynk.queued(), 1);

    device.dialer.set(Some(proxy.address));
    assert_eq!(device.next().await, Seen::Connected);
    let (writes, _) = device.restored().await;
    // The synced 10 is held back: the device's own later write is on its way.
    assert!(writes.is_empty(), "{writes:?}");
    eventually("the offline write to be stored", || {
        server.stored_int(Pin::Virtual(1)) == Some(30)
    })
    .await;
    eventually("the ack", || device.blynk.queued() == 0).await;
    assert!(device.pending().is_empty());
    assert_eq!(device.blynk.overflow_count(), 0);
}

#[tokio::test]
async fn spec_3_8_an_offline_write_made_before_an_app_write_loses_and_the_device_converges() {
    let server = TestServer::start().await;
    let (mut device, proxy) = offline_device(&server).await;

    device.blynk.virtual_write(1, 20).unwrap();
    tick().await;
    server.app_write(Pin::Virtual(1), 10).await;

    device.dialer.set(Some(proxy.address));
    assert_eq!(device.next().await, Seen::Connected);
    let (writes, _) = device.restored().await;
    assert!(writes.is_empty(), "{writes:?}");
    // The server acks the older write and sends the app's value, which runs the handler.
    assert_eq!(device.next().await, Seen::Write(1, "10".into()));
    assert_eq!(server.stored_int(Pin::Virtual(1)), Some(10));
    eventually("the ack", || device.blynk.queued() == 0).await;
}

#[test]
fn spec_3_8_a_full_offline_queue_refuses_and_counts() {
    let blynk: Blynk<CriticalSectionRawMutex, 2, 64> = Blynk::new();
    blynk.virtual_write(1, 1).unwrap();
    blynk.virtual_write(2, 1).unwrap();
    assert_eq!(blynk.virtual_write(3, 1), Err(QueueError::Full));
    assert_eq!(blynk.log_event("x", None), Err(QueueError::Full));
    // Another value of a waiting pin replaces it: it always fits.
    blynk.virtual_write(2, 5).unwrap();
    assert_eq!(blynk.overflow_count(), 2);
    assert_eq!(blynk.queued(), 2);
    assert!(QueueError::Full.is_recoverable());
}
