//! The store's behaviour, the same tests on each backend: SQLite on a file in a temporary
//! directory, PostgreSQL on a fresh database of a real server (the harness the integration
//! tests use). Coalesced group commits, call order, retention, versions after a reopen,
//! settings and names, events, and what another process adds.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use blynk_proto::Pin;
use tokio::sync::oneshot;

use super::postgres::PostgresStore;
use super::retention::Retention;
use super::sqlite::{Durability, EVENTS_PER_DEVICE, SqliteStore};
use super::*;
use crate::model::{DatastreamDef, Origin, OwnedScalar, OwnedValue, now_ms};

/// Where a test's store lives; opening it twice gives two stores on one database (a restart,
/// or the command line beside the server).
pub(crate) enum Fixture {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

/// An open store of either backend.
pub(crate) enum Opened {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Fixture {
    pub(crate) fn sqlite() -> Self {
        Fixture::Sqlite(tempfile::tempdir().unwrap())
    }

    pub(crate) fn postgres() -> Self {
        Fixture::Postgres(blynk_testbed::postgres::shared().fresh_database())
    }

    pub(crate) async fn open(&self, retention: Retention) -> Opened {
        match self {
            Fixture::Sqlite(directory) => Opened::Sqlite(
                SqliteStore::open_with_retention(
                    &directory.path().join("store.db"),
                    Durability::Process,
                    retention,
                )
                .unwrap(),
            ),
            Fixture::Postgres(url) => {
                Opened::Postgres(PostgresStore::open(url, retention).await.unwrap())
            }
        }
    }
}

impl Opened {
    /// Holds the writer until the returned sender is dropped, so that everything queued
    /// meanwhile lands in one batch.
    pub(crate) fn hold_writer(&self) -> (oneshot::Sender<()>, Ticket) {
        match self {
            Opened::Sqlite(store) => store.hold_writer(),
            Opened::Postgres(store) => store.hold_writer(),
        }
    }

    fn trim_history(&self) -> Ticket<u64> {
        match self {
            Opened::Sqlite(store) => store.trim_history(),
            Opened::Postgres(store) => store.trim_history(),
        }
    }
}

impl Deref for Opened {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        match self {
            Opened::Sqlite(store) => store,
            Opened::Postgres(store) => store,
        }
    }
}

/// Runs each named test once per backend: `store::tests::sqlite::NAME` and
/// `store::tests::postgres::NAME`.
macro_rules! on_each_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Fixture::sqlite()).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Fixture::postgres()).await
            })*
        }
    };
}

on_each_backend!(
    a_batch_keeps_the_highest_version_as_latest_and_every_version_in_history,
    a_batch_applies_a_delete_and_the_values_around_it_in_call_order,
    retention_by_count_keeps_the_newest_values_of_each_pin,
    history_is_trimmed_by_count_in_the_background_after_a_batch,
    retention_by_age_removes_values_older_than_the_limit,
    load_counts_history_only_writes_and_pending_commands_in_versions,
    load_returns_what_was_stored_after_a_reopen,
    settings_and_names_are_kept_and_taken_names_refused,
    events_keep_the_newest_per_device_newest_first,
    refresh_finds_a_device_added_by_another_process,
    load_device_reads_that_device_only,
);

pub(crate) fn pin(number: u32) -> Pin {
    Pin::virtual_pin(number).unwrap()
}

pub(crate) fn write(
    device_id: DeviceId,
    pin: Pin,
    number: i64,
    version: u64,
    latest: bool,
) -> ValueWrite {
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

/// History retention of the count tests: the 10 newest values of each pin.
const TEN_PER_PIN: Retention = Retention {
    per_pin: 10,
    max_age: None,
};

pub(crate) async fn add_device(store: &dyn Store, name: &str) -> DeviceId {
    let template = match settle(store.create_template(Template {
        id: 0,
        name: "plain".into(),
        datastreams: Vec::new(),
    }))
    .await
    {
        Ok(template) => template.id,
        Err(StoreError::Conflict(_)) => settle(store.load()).await.unwrap().templates[0].id,
        Err(error) => panic!("{error}"),
    };
    settle(store.create_device(name, template, &format!("token-{name}")))
        .await
        .unwrap()
        .id
}

pub(crate) fn versions_in(history: &[HistoryPoint]) -> Vec<u64> {
    history.iter().map(|point| point.version).collect()
}

pub(crate) fn latest_of(snapshot: &Snapshot, device_id: DeviceId, wanted: Pin) -> Option<u64> {
    snapshot
        .values
        .iter()
        .find(|(device, pin, _)| *device == device_id && *pin == wanted)
        .map(|(_, _, stored)| stored.version)
}

pub(crate) fn version_of(snapshot: &Snapshot, device_id: DeviceId) -> Option<u64> {
    snapshot
        .versions
        .iter()
        .find(|(device, _)| *device == device_id)
        .map(|(_, version)| *version)
}

async fn a_batch_keeps_the_highest_version_as_latest_and_every_version_in_history(
    fixture: Fixture,
) {
    let store = fixture.open(Retention::default()).await;
    let device = add_device(&*store, "one").await;
    let (release, held) = store.hold_writer();
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

async fn a_batch_applies_a_delete_and_the_values_around_it_in_call_order(fixture: Fixture) {
    let store = fixture.open(Retention::default()).await;
    let device = add_device(&*store, "one").await;
    let (release, held) = store.hold_writer();
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

async fn retention_by_count_keeps_the_newest_values_of_each_pin(fixture: Fixture) {
    let store = fixture.open(TEN_PER_PIN).await;
    let device = add_device(&*store, "one").await;
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

async fn history_is_trimmed_by_count_in_the_background_after_a_batch(fixture: Fixture) {
    let store = fixture.open(TEN_PER_PIN).await;
    let device = add_device(&*store, "one").await;
    let (release, held) = store.hold_writer();
    let tickets: Vec<Ticket> = (1..=30)
        .map(|version| store.put_value(write(device, pin(0), 0, version, true)))
        .collect();
    drop(release);
    settle(held).await.unwrap();
    for ticket in tickets {
        settle(ticket).await.unwrap();
    }
    // The writer trims a due pin in steps at most 10 ms apart, with no further write needed to
    // wake it. The 30 writes may have landed in one batch or, on a loaded machine, in two (the
    // second then waits for the next step): either way the pin is trimmed within a moment.
    let kept: Vec<u64> = (21..=30).rev().collect();
    let mut history = Vec::new();
    for _ in 0..200 {
        settle(store.flush()).await.unwrap();
        history = settle(store.history(device, pin(0), 100)).await.unwrap();
        if versions_in(&history) == kept {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(versions_in(&history), kept);
}

async fn retention_by_age_removes_values_older_than_the_limit(fixture: Fixture) {
    let store = fixture
        .open(Retention {
            per_pin: 0,
            max_age: Some(Duration::from_secs(30 * 86_400)),
        })
        .await;
    let device = add_device(&*store, "one").await;
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

async fn load_counts_history_only_writes_and_pending_commands_in_versions(fixture: Fixture) {
    let (first, second) = {
        let store = fixture.open(Retention::default()).await;
        let first = add_device(&*store, "one").await;
        let second = add_device(&*store, "two").await;
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
    let reopened = fixture.open(Retention::default()).await;
    let snapshot = settle(reopened.load()).await.unwrap();
    assert_eq!(version_of(&snapshot, first), Some(7));
    assert_eq!(version_of(&snapshot, second), Some(9));
}

/// What a node reads when it takes a device's session: that device's values, properties,
/// pending commands and version, none of another device's, and no templates or devices.
async fn load_device_reads_that_device_only(fixture: Fixture) {
    let store = fixture.open(Retention::default()).await;
    let first = add_device(&*store, "one").await;
    let second = add_device(&*store, "two").await;
    let property = |device_id| {
        store.put_property(
            device_id,
            PropertyRecord {
                pin: pin(1),
                name: "label".into(),
                value: OwnedValue(vec![OwnedScalar::Text(format!("device {device_id}"))]),
            },
        )
    };
    let command = |device_id, version| PendingCommand {
        id: 0,
        device_id,
        pin: pin(4),
        value: Arc::new(OwnedValue(vec![OwnedScalar::Int(1)])),
        version,
        expires_at: now_ms() + 60_000,
    };
    for ticket in [
        store.put_value(write(first, pin(0), 10, 1, true)),
        store.put_value(write(second, pin(0), 20, 2, true)),
        store.put_value(write(second, pin(1), 21, 3, true)),
        property(first),
        property(second),
    ] {
        settle(ticket).await.unwrap();
    }
    for (device_id, version) in [(first, 5), (second, 6)] {
        let ticket = store.add_pending_command(command(device_id, version));
        settle(ticket).await.unwrap();
    }

    let only = settle(store.load_device(second)).await.unwrap();
    assert!(only.templates.is_empty() && only.devices.is_empty());
    let mut values: Vec<_> = only
        .values
        .iter()
        .map(|(device, pin, stored)| (*device, *pin, stored.value.to_string()))
        .collect();
    values.sort();
    assert_eq!(
        values,
        vec![
            (second, pin(0), "20".to_owned()),
            (second, pin(1), "21".to_owned())
        ]
    );
    assert_eq!(only.properties.len(), 1);
    assert_eq!(only.properties[0].0, second);
    assert_eq!(
        only.properties[0].1.value.to_string(),
        format!("device {second}")
    );
    assert_eq!(
        only.pending_commands
            .iter()
            .map(|command| (command.device_id, command.version))
            .collect::<Vec<_>>(),
        vec![(second, 6)]
    );
    assert_eq!(only.versions, vec![(second, 6)]);
}

async fn load_returns_what_was_stored_after_a_reopen(fixture: Fixture) {
    let expires_at = now_ms() + 60_000;
    let (device, kept_command) = {
        let store = fixture.open(Retention::default()).await;
        let template = settle(store.create_template(Template {
            id: 0,
            name: "lamp".into(),
            datastreams: vec![DatastreamDef {
                pin: pin(0),
                name: "Power".into(),
                value_type: blynk_proto::DatastreamType::Integer,
                min: Some(0.0),
                max: Some(1.0),
                default: None,
                sync: true,
                kind: Default::default(),
                ttl: None,
            }],
        }))
        .await
        .unwrap();
        let device = settle(store.create_device("lamp 1", template.id, "lamp-token"))
            .await
            .unwrap()
            .id;
        let mut value = write(device, pin(0), 1, 1, true);
        value.stored.value = Arc::new(OwnedValue(vec![
            OwnedScalar::Text("on".into()),
            OwnedScalar::Double(0.5),
        ]));
        let property = PropertyRecord {
            pin: pin(0),
            name: "label".into(),
            value: OwnedValue(vec![OwnedScalar::Text("Kitchen".into())]),
        };
        let command = |version| PendingCommand {
            id: 0,
            device_id: device,
            pin: pin(0),
            value: Arc::new(OwnedValue(vec![OwnedScalar::Int(1)])),
            version,
            expires_at,
        };
        let tickets = [
            store.put_value(value),
            store.put_property(device, property),
            store.set_last_seen(device, 1234),
        ];
        let delivered = settle(store.add_pending_command(command(2))).await.unwrap();
        let kept = settle(store.add_pending_command(command(3))).await.unwrap();
        for ticket in tickets {
            settle(ticket).await.unwrap();
        }
        settle(store.remove_pending_command(delivered))
            .await
            .unwrap();
        (device, kept)
    };

    let snapshot = settle(fixture.open(Retention::default()).await.load())
        .await
        .unwrap();
    assert_eq!(snapshot.templates.len(), 1);
    assert_eq!(snapshot.templates[0].datastreams[0].name, "Power");
    assert_eq!(snapshot.devices.len(), 1);
    assert_eq!(snapshot.devices[0].token, "lamp-token");
    assert_eq!(snapshot.devices[0].last_seen, Some(1234));
    let (_, _, stored) = &snapshot.values[0];
    assert_eq!(stored.value.to_string(), "on,0.5");
    assert_eq!(snapshot.properties[0].1.name, "label");
    assert_eq!(
        snapshot
            .pending_commands
            .iter()
            .map(|command| (command.id, command.device_id, command.version))
            .collect::<Vec<_>>(),
        vec![(kept_command, device, 3)],
        "the delivered command is gone, the other waits"
    );
}

async fn settings_and_names_are_kept_and_taken_names_refused(fixture: Fixture) {
    let store = fixture.open(Retention::default()).await;
    assert_eq!(settle(store.setting("admin_key")).await.unwrap(), None);
    settle(store.set_setting("admin_key", "first"))
        .await
        .unwrap();
    settle(store.set_setting("admin_key", "second"))
        .await
        .unwrap();
    assert_eq!(
        settle(store.setting("admin_key")).await.unwrap().as_deref(),
        Some("second")
    );
    for (key, value) in [("api_key.b", "2"), ("api_key.a", "1"), ("api_keys", "x")] {
        settle(store.set_setting(key, value)).await.unwrap();
    }
    assert_eq!(
        settle(store.settings_with_prefix("api_key."))
            .await
            .unwrap(),
        vec![
            ("api_key.a".to_owned(), "1".to_owned()),
            ("api_key.b".to_owned(), "2".to_owned())
        ],
        "only the keys under the prefix, ordered by key"
    );

    let plain = || Template {
        id: 0,
        name: "plain".into(),
        datastreams: Vec::new(),
    };
    let template = settle(store.create_template(plain())).await.unwrap();
    assert!(matches!(
        settle(store.create_template(plain())).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        settle(store.create_device("ghost", template.id + 100, "ghost-token")).await,
        Err(StoreError::NotFound(_))
    ));
    // Refused writes leave the rest of their batch alone.
    let device = settle(store.create_device("one", template.id, "one-token"))
        .await
        .unwrap();
    assert_eq!(device.template_id, template.id);
}

async fn events_keep_the_newest_per_device_newest_first(fixture: Fixture) {
    let store = fixture.open(Retention::default()).await;
    let device = add_device(&*store, "one").await;
    let extra = 5;
    let tickets: Vec<Ticket> = (0..EVENTS_PER_DEVICE + extra)
        .map(|at| {
            store.append_event(
                device,
                EventRecord {
                    code: "tick".into(),
                    description: Some(format!("event {at}")),
                    at,
                },
            )
        })
        .collect();
    for ticket in tickets {
        settle(ticket).await.unwrap();
    }
    let events = settle(store.events(device, 1000)).await.unwrap();
    assert_eq!(events.len() as i64, EVENTS_PER_DEVICE);
    assert_eq!(events[0].at, EVENTS_PER_DEVICE + extra - 1, "newest first");
    assert_eq!(events.last().unwrap().at, extra, "the oldest went");
}

async fn refresh_finds_a_device_added_by_another_process(fixture: Fixture) {
    let server = fixture.open(Retention::default()).await;
    let first = add_device(&*server, "one").await;
    let (templates, devices) = settle(server.created_since(0, 0)).await.unwrap();
    assert_eq!((templates.len(), devices.len()), (1, 1));
    let template = templates[0].id;

    // The `device add` command (or another node) opens the same database with a store of its
    // own.
    let command_line = fixture.open(Retention::default()).await;
    let added = add_device(&*command_line, "two").await;
    let (templates, devices) = settle(server.created_since(template, first)).await.unwrap();
    assert!(templates.is_empty());
    assert_eq!(
        devices.iter().map(|device| device.id).collect::<Vec<_>>(),
        vec![added]
    );
    let (templates, devices) = settle(server.created_since(template, added)).await.unwrap();
    assert!(templates.is_empty() && devices.is_empty());
}
