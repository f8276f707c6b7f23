//! What watching costs in memory: heap bytes per watched device for one app watching 1,000 and
//! 19,000 devices, and for its queue once it is behind, counted by an instrumented allocator (no
//! timing). Run it with
//! `cargo bench -p blynk-server --bench watch_memory`.

use std::alloc::System;
use std::sync::Arc;

use blynk_proto::{Pin, Value};
use blynk_server::engine::Engine;
use blynk_server::engine::watch::{WatchLimits, Watcher, WatcherList};
use blynk_server::model::{Origin, Template};
use blynk_server::store::Store;
use blynk_server::store::sqlite::{Durability, SqliteStore};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes allocated and not freed since `region` began.
fn live(region: &Region<'_, System>) -> isize {
    let change = region.change();
    change.bytes_allocated as isize - change.bytes_deallocated as isize + change.bytes_reallocated
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("bench.db"), Durability::Process).expect("a store"),
    );
    let engine = Engine::open(store).await.expect("the engine");
    let template = engine
        .create_template(blynk_server::bootstrap::light_template())
        .await
        .expect("a template");
    let template: &Template = &template;
    const DEVICES: usize = 19_000;
    for index in 0..DEVICES {
        engine
            .create_device(&format!("device-{index}"), template)
            .await
            .expect("a device");
    }
    let devices = engine.devices();
    println!(
        "an unwatched device's list of watchers: {} bytes",
        std::mem::size_of::<WatcherList>()
    );
    for count in [1_000, DEVICES] {
        let region = Region::new(ALLOCATOR);
        let watcher = Watcher::new(WatchLimits::default());
        engine.watch_all(&watcher);
        for slot in &devices[..count] {
            slot.watch(&watcher);
        }
        let bytes = live(&region);
        println!(
            "one app watching {count} devices: {bytes} bytes, {:.0} bytes per watched device",
            bytes as f64 / count as f64
        );
        if count == DEVICES {
            // The same app, behind: it read nothing while three pins of every device changed
            // twice, so its queue holds the newest value of each of them. What dropping it
            // frees is what it cost (the values it queued are shared with the engine).
            for round in 0..2 {
                for slot in &devices {
                    for pin in 0..3 {
                        engine
                            .app_write(slot, Pin::Virtual(pin), &Value::int(round), Origin::App)
                            .await
                            .expect("a write");
                    }
                }
            }
            let region = Region::new(ALLOCATOR);
            drop(watcher);
            let bytes = -live(&region);
            println!(
                "the same app behind, after 2 x 3 changes of each device: {bytes} bytes, {:.0} \
                 bytes per watched device",
                bytes as f64 / count as f64
            );
            continue;
        }
        drop(watcher);
    }
}
