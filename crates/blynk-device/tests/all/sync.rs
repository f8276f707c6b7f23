//! Values both ways: app writes run handlers, device writes reach apps, and the three syncs.

use blynk_device::SyncDone;
use blynk_proto::Pin;
use blynk_server::engine::watch::{Queued, WatchLimits, Watcher};

use crate::support::{DemoDevice as _, Device, Dialer, Seen, TestServer, eventually, int_value};

#[tokio::test]
async fn spec_3_2_app_writes_run_the_pin_handlers() {
    let server = TestServer::start().await;
    let mut device = Device::start(&server.demo_token(), 10, Dialer::to(server.native()));
    assert_eq!(device.next().await, Seen::Connected);
    device.restored().await;

    server.app_write(Pin::Virtual(0), 1).await;
    server.app_write(Pin::Virtual(1), 200).await;
    assert_eq!(device.next().await, Seen::Write(0, "1".into()));
    assert_eq!(device.next().await, Seen::Write(1, "200".into()));
}

#[tokio::test]
async fn spec_3_1_virtual_write_reaches_a_watching_app() {
    let server = TestServer::start().await;
    let device = Device::online(&server).await;
    let slot = server.demo();
    let app = Watcher::new(WatchLimits::default());
    slot.watch(&app);

    device.blynk.virtual_write(1, 255).unwrap();
    let event = tokio::time::timeout(crate::support::PATIENCE, async {
        let mut taken = Vec::new();
        loop {
            app.ready().await;
            app.take(&mut taken, usize::MAX).unwrap();
            for entry in taken.drain(..) {
                if let Queued::Event { event, .. } = entry {
                    let event: serde_json::Value =
                        serde_json::from_str(&event.to_json_text()).unwrap();
                    if event["type"] == "value" {
                        return event;
                    }
                }
            }
        }
    })
    .await
    .expect("the app saw no value");
    assert_eq!(event["pin"], "V1");
    assert_eq!(event["value"], 255);
    assert_eq!(event["origin"], "device");
    let stored = slot.value(Pin::Virtual(1)).unwrap();
    assert_eq!(*stored.value, int_value(255));
    eventually("the write's ack", || device.blynk.queued() == 0).await;
}

#[tokio::test]
async fn spec_3_1_multi_part_writes_properties_and_events_reach_the_server() {
    let server = TestServer::start().await;
    let device = Device::online(&server).await;
    let slot = server.demo();

    device.blynk.virtual_write(3, ("on", 2, 2.5)).unwrap();
    device.blynk.set_property(1, "color", "#FF0000").unwrap();
    device.blynk.log_event("overheat", Some("too hot")).unwrap();
    eventually("every message acknowledged", || device.blynk.queued() == 0).await;
    let stored = slot.value(Pin::Virtual(3)).unwrap();
    assert_eq!(stored.value.text_parts(), ["on", "2", "2.5"]);
    let properties = slot.properties();
    assert!(
        properties
            .iter()
            .any(|p| p.pin == Pin::Virtual(1) && p.name == "color"),
        "{properties:?}"
    );
    assert_eq!(device.blynk.refused_count(), 0);
}

#[tokio::test]
async fn spec_3_3_and_3_7_login_restores_sync_datastreams_then_says_sync_complete() {
    let server = TestServer::start().await;
    // Set while the device is away: V0 (sync) and V2 (not sync). V1 (sync) is never set and has
    // no default; V3 (sync) has the default "auto".
    server.app_write(Pin::Virtual(0), 1).await;
    server.app_write(Pin::Virtual(2), 7).await;
    let mut device = Device::start(&server.demo_token(), 10, Dialer::to(server.native()));
    assert_eq!(device.next().await, Seen::Connected);
    let (writes, done) = device.restored().await;
    assert_v0_and_v3(writes, done, true);
    assert!(device.blynk.status().synced);
}

#[tokio::test]
async fn spec_3_4_and_3_6_sync_all_returns_only_sync_datastreams_and_skips_never_set_ones() {
    let server = TestServer::start().await;
    let mut device = Device::online(&server).await;
    server.app_write(Pin::Virtual(0), 1).await;
    server.app_write(Pin::Virtual(2), 7).await;
    assert_eq!(device.next().await, Seen::Write(0, "1".into()));
    assert_eq!(device.next().await, Seen::Write(2, "7".into()));

    device.blynk.sync_all();
    let mut writes = Vec::new();
    let done = loop {
        match device.next().await {
            Seen::SyncComplete(done) => break done,
            seen => writes.push(seen),
        }
    };
    // V0 (stored) and V3 (its default); not V2 (not `sync`), not V1 (never set, no default).
    assert_v0_and_v3(writes, done, false);
}

/// Checks a sync that returned V0 (stored, `1`) and V3 (its default, `auto`), in any order, and
/// nothing else; `automatic` says whether it was the sync of a login.
fn assert_v0_and_v3(mut writes: Vec<Seen>, done: SyncDone, automatic: bool) {
    writes.sort_by_key(|seen| format!("{seen:?}"));
    assert_eq!(
        writes,
        [Seen::Write(0, "1".into()), Seen::Write(3, "auto".into())]
    );
    assert_eq!(
        done,
        SyncDone {
            automatic,
            count: 2
        }
    );
}

#[tokio::test]
async fn spec_3_5_sync_virtual_returns_the_listed_pins_flagged_or_not() {
    let server = TestServer::start().await;
    server.app_write(Pin::Virtual(2), 7).await;
    let mut device = Device::online(&server).await;

    // V2 is not `sync` but listed; V1 is listed but was never set and has no default.
    device.blynk.sync_virtual(&[2, 1]);
    assert_eq!(device.next().await, Seen::Write(2, "7".into()));
    assert_eq!(
        device.next().await,
        Seen::SyncComplete(SyncDone {
            automatic: false,
            count: 1
        })
    );
}
