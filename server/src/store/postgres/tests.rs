//! What only the PostgreSQL store has (the behaviour both backends share is tested in
//! `store::tests`): a statement the server refuses, two nodes writing one device, and a
//! server that goes away and comes back.

use super::*;
use crate::model::{OwnedScalar, OwnedValue};
use crate::store::settle;
use crate::store::tests::{Fixture, add_device, latest_of, pin, version_of, versions_in, write};
use blynk_testbed::Postgres;

#[tokio::test]
async fn a_write_postgres_refuses_fails_alone_in_its_batch() {
    let fixture = Fixture::postgres();
    let store = fixture.open(Retention::default()).await;
    let device = add_device(&*store, "one").await;
    let (release, held) = store.hold_writer();
    let before = store.put_value(write(device, pin(0), 1, 1, true));
    // PostgreSQL's text cannot hold a NUL character: the statement is refused.
    let refused = store.put_property(
        device,
        PropertyRecord {
            pin: pin(0),
            name: "bad\0name".into(),
            value: OwnedValue(vec![OwnedScalar::Int(1)]),
        },
    );
    let after = store.put_value(write(device, pin(0), 2, 2, true));
    drop(release);
    settle(held).await.unwrap();
    settle(before).await.unwrap();
    assert!(matches!(
        settle(refused).await,
        Err(StoreError::Database(_))
    ));
    settle(after).await.unwrap();
    let history = settle(store.history(device, pin(0), 10)).await.unwrap();
    assert_eq!(versions_in(&history), vec![2, 1]);
}

#[tokio::test]
async fn a_latest_value_never_replaces_a_newer_one_written_by_another_node() {
    let fixture = Fixture::postgres();
    let first_node = fixture.open(Retention::default()).await;
    let second_node = fixture.open(Retention::default()).await;
    let device = add_device(&*first_node, "one").await;
    settle(first_node.put_value(write(device, pin(0), 5, 5, true)))
        .await
        .unwrap();
    settle(second_node.put_value(write(device, pin(0), 3, 3, true)))
        .await
        .unwrap();

    let snapshot = settle(second_node.load()).await.unwrap();
    assert_eq!(latest_of(&snapshot, device, pin(0)), Some(5));
    assert_eq!(version_of(&snapshot, device), Some(5));
    let history = settle(second_node.history(device, pin(0), 10))
        .await
        .unwrap();
    assert_eq!(versions_in(&history), vec![5, 3], "both are in the history");
}

#[tokio::test]
async fn the_store_rides_out_a_restart_of_postgres() {
    // A server of its own: the shared one must not go away under other tests.
    let database = Postgres::start().unwrap_or_else(|error| panic!("{error}"));
    let store = PostgresStore::open(&database.url("postgres"), Retention::default())
        .await
        .unwrap();
    let device = add_device(&store, "one").await;
    settle(store.put_value(write(device, pin(0), 1, 1, true)))
        .await
        .unwrap();

    database.stop();
    assert!(matches!(
        settle(store.put_value(write(device, pin(0), 2, 2, true))).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        settle(store.load()).await,
        Err(StoreError::Unavailable(_))
    ));

    database.resume().unwrap();
    settle(store.put_value(write(device, pin(0), 3, 3, true)))
        .await
        .unwrap();
    let snapshot = settle(store.load()).await.unwrap();
    assert_eq!(latest_of(&snapshot, device, pin(0)), Some(3));
    let history = settle(store.history(device, pin(0), 10)).await.unwrap();
    assert_eq!(
        versions_in(&history),
        vec![3, 1],
        "the write refused while it was down is not there"
    );
}
