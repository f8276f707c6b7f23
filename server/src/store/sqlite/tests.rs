//! The SQLite store's own cases (the behaviour every backend shares is tested in
//! `store::tests`): a migration of an old file, the refresh check that runs no query, and a
//! write beside a large history.

use blynk_proto::Pin;
use rusqlite::Connection;

use super::reader::Reader;
use super::*;
use crate::model::{OwnedScalar, OwnedValue};
use crate::store::settle;
use crate::store::tests::{add_device, pin, version_of, write};

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
    assert_eq!(
        history
            .iter()
            .map(|point| point.version)
            .collect::<Vec<_>>(),
        vec![4001, 3999]
    );
    assert_eq!(
        history[0].value,
        OwnedValue(vec![OwnedScalar::Int(42)]),
        "the write is stored"
    );
}

#[tokio::test]
async fn history_range_pages_through_a_time_range_oldest_first_even_across_equal_times() {
    let directory = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&directory.path().join("store.db"), Durability::Process).unwrap();
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

#[tokio::test]
async fn spec_7_a_database_another_process_keeps_locked_is_unavailable_then_works_again() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("store.db");
    let store = SqliteStore::open(&path, Durability::Process).unwrap();
    settle(store.set_setting("before", "1")).await.unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    // The writer waits the busy timeout (5 s), then gives up: not a broken database.
    let refused = settle(store.set_setting("during", "1")).await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "{refused:?}"
    );
    other.execute_batch("ROLLBACK").unwrap();
    settle(store.set_setting("after", "1")).await.unwrap();
    assert_eq!(
        settle(store.setting("after")).await.unwrap().as_deref(),
        Some("1")
    );
}

#[test]
fn busy_and_locked_are_unavailable_other_errors_are_database_errors() {
    let sqlite = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
    assert!(matches!(
        database(sqlite(rusqlite::ffi::SQLITE_BUSY)),
        StoreError::Unavailable(_)
    ));
    assert!(matches!(
        database(sqlite(rusqlite::ffi::SQLITE_LOCKED)),
        StoreError::Unavailable(_)
    ));
    assert!(matches!(
        database(sqlite(rusqlite::ffi::SQLITE_CORRUPT)),
        StoreError::Database(_)
    ));
}
