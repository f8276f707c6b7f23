//! The SQLite store against real database files: coalesced group commits, call order,
//! retention, versions after a restart, and the cheap refresh check.

use std::sync::Arc;
use std::time::Duration;

use blynk_proto::Pin;
use rusqlite::Connection;

use super::reader::Reader;
use super::*;
use crate::model::{Origin, OwnedScalar, OwnedValue, StoredValue, now_ms};
use crate::store::settle;

fn pin(number: u32) -> Pin {
    Pin::virtual_pin(number).unwrap()
}

fn write(device_id: DeviceId, pin: Pin, number: i64, version: u64, latest: bool) -> ValueWrite {
    ValueWrite {
        device_id,
        pin,
        stored: StoredValue {
            value: Arc::new(OwnedValue(vec![OwnedScalar::Int(number)])),
            version,
            set_at: now_ms(),
            origin: Origin::Device,
        },
        latest,
    }
}

fn open(directory: &tempfile::TempDir, retention: Retention) -> SqliteStore {
    SqliteStore::open_with_retention(
        &directory.path().join("store.db"),
        Durability::Process,
        retention,
    )
    .unwrap()
}

/// Holds the writer thread until the returned sender is dropped, so that everything queued
/// meanwhile lands in one batch.
fn hold_writer(store: &SqliteStore) -> (std::sync::mpsc::Sender<()>, Ticket) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let ticket = store.submit(move |_| {
        let _ = held.recv();
        Ok(())
    });
    (release, ticket)
}

async fn add_device(store: &SqliteStore, name: &str) -> DeviceId {
    let template = match settle(store.create_template(Template {
        id: 0,
        name: "plain".into(),
        datastreams: Vec::new(),
    }))
    .await
    {
        Ok(template) => template.id,
        Err(StoreError::Conflict(_)) => 1,
        Err(error) => panic!("{error}"),
    };
    settle(store.create_device(name, template, &format!("token-{name}")))
        .await
        .unwrap()
        .id
}

fn versions_in(history: &[HistoryPoint]) -> Vec<u64> {
    history.iter().map(|point| point.version).collect()
}

fn latest_of(snapshot: &Snapshot, device_id: DeviceId, wanted: Pin) -> Option<u64> {
    snapshot
        .values
        .iter()
        .find(|(device, pin, _)| *device == device_id && *pin == wanted)
        .map(|(_, _, stored)| stored.version)
}

fn version_of(snapshot: &Snapshot, device_id: DeviceId) -> Option<u64> {
    snapshot
        .versions
        .iter()
        .find(|(device, _)| *device == device_id)
        .map(|(_, version)| *version)
}

#[tokio::test]
async fn a_batch_keeps_the_highest_version_as_latest_and_every_version_in_history() {
    let directory = tempfile::tempdir().unwrap();
    let store = open(&directory, Retention::default());
    let device = add_device(&store, "one").await;
    let (release, held) = hold_writer(&store);
    let mut tickets = Vec::new();
    for version in 1..=5 {
        tickets.push(store.put_value(write(device, pin(0), version as i64, version, true)));
    }
    // History only (a command, or a write older than the latest): newer, yet not the latest.
    tickets.push(store.put_value(write(device, pin(0), 6, 6, false)));
    tickets.push(store.put_value(write(device, pin(1), 7, 7, true)));
    drop(release);
    settle(held).await.unwrap();
    for ticket in tickets {
        settle(ticket).await.unwrap();
    }

    let history = settle(store.history(device, pin(0), 100)).await.unwrap();
    assert_eq!(versions_in(&history), vec![6, 5, 4, 3, 2, 1]);
    let snapshot = settle(store.load()).await.unwrap();
    assert_eq!(latest_of(&snapshot, device, pin(0)), Some(5));
    assert_eq!(latest_of(&snapshot, device, pin(1)), Some(7));
    assert_eq!(version_of(&snapshot, device), Some(7));
}

#[tokio::test]
async fn a_batch_applies_a_delete_and_the_values_around_it_in_call_order() {
    let directory = tempfile::tempdir().unwrap();
    let store = open(&directory, Retention::default());
    let device = add_device(&store, "one").await;
    let (release, held) = hold_writer(&store);
    let before = store.put_value(write(device, pin(0), 1, 1, true));
    let delete = store.delete_device(device);
    let after = store.put_value(write(device, pin(1), 2, 2, true));
    drop(release);
    settle(held).await.unwrap();
    settle(before).await.unwrap();
    settle(delete).await.unwrap();
    settle(after).await.unwrap();

    assert!(
        settle(store.history(device, pin(0), 10))
            .await
            .unwrap()
            .is_empty(),
        "the value written before the delete went with the device"
    );
    let history = settle(store.history(device, pin(1), 10)).await.unwrap();
    assert_eq!(
        versions_in(&history),
        vec![2],
        "the value written after stays"
    );
}

#[tokio::test]
async fn retention_by_count_keeps_the_newest_values_of_each_pin() {
    let directory = tempfile::tempdir().unwrap();
    let store = open(
        &directory,
        Retention {
            per_pin: 10,
            max_age: None,
        },
    );
    let device = add_device(&store, "one").await;
    let mut tickets = Vec::new();
    for version in 1..=25 {
        tickets.push(store.put_value(write(device, pin(0), 0, version, true)));
    }
    for version in 26..=30 {
        tickets.push(store.put_value(write(device, pin(1), 0, version, true)));
    }
    for ticket in tickets {
        settle(ticket).await.unwrap();
    }
    settle(store.trim_history()).await.unwrap();

    let history = settle(store.history(device, pin(0), 100)).await.unwrap();
    assert_eq!(versions_in(&history), (16..=25).rev().collect::<Vec<_>>());
    let history = settle(store.history(device, pin(1), 100)).await.unwrap();
    assert_eq!(history.len(), 5, "a pin under the limit keeps everything");
    let snapshot = settle(store.load()).await.unwrap();
    assert_eq!(
        version_of(&snapshot, device),
        Some(30),
        "trimming the history never lowers a device's version"
    );
}

#[tokio::test]
async fn history_is_trimmed_by_count_in_the_background_after_a_batch() {
    let directory = tempfile::tempdir().unwrap();
    let store = open(
        &directory,
        Retention {
            per_pin: 10,
            max_age: None,
        },
    );
    let device = add_device(&store, "one").await;
    let (release, held) = hold_writer(&store);
    let tickets: Vec<Ticket> = (1..=30)
        .map(|version| store.put_value(write(device, pin(0), 0, version, true)))
        .collect();
    drop(release);
    settle(held).await.unwrap();
    for ticket in tickets {
        settle(ticket).await.unwrap();
    }
    // The writer runs a trimming step right after the batch that made the pin due, before it
    // takes the next operation: once this flush settles, the step has run.
    settle(store.flush()).await.unwrap();

    let history = settle(store.history(device, pin(0), 100)).await.unwrap();
    assert_eq!(versions_in(&history), (21..=30).rev().collect::<Vec<_>>());
}

#[tokio::test]
async fn retention_by_age_removes_values_older_than_the_limit() {
    let directory = tempfile::tempdir().unwrap();
    let store = open(
        &directory,
        Retention {
            per_pin: 0,
            max_age: Some(Duration::from_secs(30 * 86_400)),
        },
    );
    let device = add_device(&store, "one").await;
    let forty_days_ago = now_ms() - 40 * 86_400_000;
    let mut tickets = Vec::new();
    for version in 1..=5 {
        let mut old = write(device, pin(0), 0, version, true);
        if version <= 3 {
            old.stored.set_at = forty_days_ago;
        }
        tickets.push(store.put_value(old));
    }
    for ticket in tickets {
        settle(ticket).await.unwrap();
    }
    assert_eq!(settle(store.trim_history()).await.unwrap(), 3);

    let history = settle(store.history(device, pin(0), 100)).await.unwrap();
    assert_eq!(versions_in(&history), vec![5, 4]);
}

#[tokio::test]
async fn load_counts_history_only_writes_and_pending_commands_in_versions() {
    let directory = tempfile::tempdir().unwrap();
    let (first, second) = {
        let store = open(&directory, Retention::default());
        let first = add_device(&store, "one").await;
        let second = add_device(&store, "two").await;
        settle(store.put_value(write(first, pin(0), 1, 3, true)))
            .await
            .unwrap();
        settle(store.put_value(write(first, pin(0), 1, 7, false)))
            .await
            .unwrap();
        settle(store.add_pending_command(PendingCommand {
            id: 0,
            device_id: second,
            pin: pin(4),
            value: Arc::new(OwnedValue(vec![OwnedScalar::Int(1)])),
            version: 9,
            expires_at: now_ms() + 60_000,
        }))
        .await
        .unwrap();
        (first, second)
    };
    let reopened = open(&directory, Retention::default());
    let snapshot = settle(reopened.load()).await.unwrap();
    assert_eq!(version_of(&snapshot, first), Some(7));
    assert_eq!(version_of(&snapshot, second), Some(9));
}

#[tokio::test]
async fn the_migration_records_versions_of_a_database_from_before_it() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("store.db");
    {
        let old = Connection::open(&path).unwrap();
        old.execute_batch(schema::MIGRATIONS[0]).unwrap();
        old.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO history VALUES (1, 'V0', 12, '1', 0, 'device');
             INSERT INTO latest_values VALUES (1, 'V0', '1', 10, 0, 'device');
             INSERT INTO latest_values VALUES (2, 'V0', '1', 4, 0, 'device');
             INSERT INTO pending_commands VALUES (1, 2, 'V1', '1', 5, 0);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path, Durability::Process).unwrap();
    let snapshot = settle(store.load()).await.unwrap();
    assert_eq!(version_of(&snapshot, 1), Some(12));
    assert_eq!(version_of(&snapshot, 2), Some(5));
}

#[tokio::test]
async fn refresh_finds_a_device_added_by_another_process_and_nothing_when_nothing_changed() {
    let directory = tempfile::tempdir().unwrap();
    let server = open(&directory, Retention::default());
    let first = add_device(&server, "one").await;
    let (templates, devices) = settle(server.created_since(0, 0)).await.unwrap();
    assert_eq!((templates.len(), devices.len()), (1, 1));

    // The `device add` command opens the same file with a store of its own.
    let command_line = open(&directory, Retention::default());
    let added = add_device(&command_line, "two").await;
    let (templates, devices) = settle(server.created_since(1, first)).await.unwrap();
    assert!(templates.is_empty());
    assert_eq!(
        devices.iter().map(|device| device.id).collect::<Vec<_>>(),
        vec![added]
    );
}

#[test]
fn the_refresh_check_runs_no_query_when_nothing_was_committed() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("store.db");
    let writer = SqliteStore::open(&path, Durability::Process).unwrap();
    let mut reader = Reader::new(Connection::open(&path).unwrap());
    assert!(
        reader.created_since(0, 0).unwrap().is_some(),
        "the first check looks"
    );
    assert!(
        reader.created_since(0, 0).unwrap().is_none(),
        "nothing committed since: no lookup"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let device = runtime.block_on(add_device(&writer, "one"));
    let (_, devices) = reader.created_since(0, 0).unwrap().expect("a commit since");
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].id, device);
    assert!(reader.created_since(0, 0).unwrap().is_none());
}

#[tokio::test]
async fn a_write_settles_beside_four_million_history_rows() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("store.db");
    let pins: Vec<Pin> = (0..4).map(pin).collect();
    {
        let store = SqliteStore::open(&path, Durability::Process).unwrap();
        let mut tickets = Vec::new();
        let template = settle(store.create_template(Template {
            id: 0,
            name: "plain".into(),
            datastreams: Vec::new(),
        }))
        .await
        .unwrap();
        for number in 0..1000 {
            tickets.push(store.create_device(
                &format!("device {number}"),
                template.id,
                &format!("token-{number}"),
            ));
        }
        for ticket in tickets {
            settle(ticket).await.unwrap();
        }
    }
    assert_eq!(fill_history(&path, &pins, 1000).unwrap(), 4_000_000);

    let store = SqliteStore::open(&path, Durability::Process).unwrap();
    let snapshot = settle(store.load()).await.unwrap();
    assert_eq!(snapshot.devices.len(), 1000);
    let device = snapshot.devices[500].id;
    assert_eq!(version_of(&snapshot, device), Some(4000));
    settle(store.put_value(write(device, pin(2), 42, 4001, true)))
        .await
        .unwrap();
    let history = settle(store.history(device, pin(2), 2)).await.unwrap();
    assert_eq!(versions_in(&history), vec![4001, 3999]);
    assert_eq!(
        history[0].value,
        OwnedValue(vec![OwnedScalar::Int(42)]),
        "the write is stored"
    );
}

#[tokio::test]
async fn history_range_pages_through_a_time_range_oldest_first_even_across_equal_times() {
    let directory = tempfile::tempdir().unwrap();
    let store = open(&directory, Retention::default());
    let device = add_device(&store, "d").await;
    // Versions 1..=9; three points share each time, and version order is not time order.
    let times = [300, 100, 200, 100, 300, 200, 100, 400, 200];
    for (index, at) in times.iter().enumerate() {
        let mut value = write(device, pin(1), index as i64, index as u64 + 1, true);
        value.stored.set_at = *at;
        settle(store.put_value(value)).await.unwrap();
    }
    let mut range = crate::store::HistoryRange {
        from: 100,
        to: 400,
        after: None,
        limit: 2,
    };
    let mut read = Vec::new();
    for _ in 0..10 {
        let page = settle(store.history_range(device, pin(1), range))
            .await
            .unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        range.after = Some((last.set_at, last.version));
        read.extend(page.iter().map(|point| (point.set_at, point.version)));
    }
    // Every point in [100, 400), once, by time then version: what the trait's filter keeps.
    assert_eq!(
        read,
        [
            (100, 2),
            (100, 4),
            (100, 7),
            (200, 3),
            (200, 6),
            (200, 9),
            (300, 1),
            (300, 5)
        ]
    );
    let everything = settle(store.history(device, pin(1), 100)).await.unwrap();
    let whole = crate::store::HistoryRange {
        after: None,
        limit: usize::MAX,
        ..range
    };
    assert_eq!(
        everything.iter().filter(|point| whole.holds(point)).count(),
        read.len()
    );
}
