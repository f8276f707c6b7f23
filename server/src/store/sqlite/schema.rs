//! The SQLite schema: one migration per entry, applied in order and counted by
//! `PRAGMA user_version`. Applied migrations are never edited; a change is a new entry.

use rusqlite::Connection;

use super::database;
use crate::store::StoreError;

/// Every migration, oldest first.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE templates (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE datastreams (
    template_id INTEGER NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (template_id, position)
);
CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    template_id INTEGER NOT NULL REFERENCES templates(id),
    token TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_seen INTEGER
);
CREATE TABLE latest_values (
    device_id INTEGER NOT NULL,
    pin TEXT NOT NULL,
    value TEXT NOT NULL,
    version INTEGER NOT NULL,
    set_at INTEGER NOT NULL,
    origin TEXT NOT NULL,
    PRIMARY KEY (device_id, pin)
) WITHOUT ROWID;
CREATE TABLE history (
    device_id INTEGER NOT NULL,
    pin TEXT NOT NULL,
    version INTEGER NOT NULL,
    value TEXT NOT NULL,
    set_at INTEGER NOT NULL,
    origin TEXT NOT NULL,
    PRIMARY KEY (device_id, pin, version)
) WITHOUT ROWID;
CREATE TABLE properties (
    device_id INTEGER NOT NULL,
    pin TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (device_id, pin, name)
) WITHOUT ROWID;
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL,
    code TEXT NOT NULL,
    description TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX events_by_device ON events (device_id, id);
CREATE TABLE pending_commands (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL,
    pin TEXT NOT NULL,
    value TEXT NOT NULL,
    version INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
"#,
    // The highest version each device has stored (values, history-only writes and commands),
    // kept up to date by every write, so that loading never scans the history.
    r#"
CREATE TABLE device_versions (
    device_id INTEGER PRIMARY KEY,
    version INTEGER NOT NULL
);
INSERT INTO device_versions (device_id, version)
    SELECT device_id, MAX(version) FROM history GROUP BY device_id;
INSERT INTO device_versions (device_id, version)
    SELECT device_id, MAX(version) FROM latest_values WHERE true GROUP BY device_id
    ON CONFLICT (device_id) DO UPDATE SET version = max(version, excluded.version);
INSERT INTO device_versions (device_id, version)
    SELECT device_id, MAX(version) FROM pending_commands WHERE true GROUP BY device_id
    ON CONFLICT (device_id) DO UPDATE SET version = max(version, excluded.version);
"#,
    // Several nodes sharing the store: which node holds each device (`floor`: where its next
    // holder's counter resumes at least), and each node's lease.
    r#"
CREATE TABLE device_holders (
    device_id INTEGER PRIMARY KEY,
    node TEXT,
    floor INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE nodes (node TEXT PRIMARY KEY, lease_until INTEGER NOT NULL);
"#,
];

/// Applies the migrations `connection`'s database lacks. Each runs in its own write
/// transaction that first re-reads the count, so two processes opening one new file at once
/// do not both apply it.
pub(super) fn migrate(connection: &Connection) -> Result<(), StoreError> {
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        connection
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(database)?;
        let applied = connection
            .query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
            .map_err(database);
        let outcome = applied.and_then(|applied| {
            if usize::try_from(applied).unwrap_or(0) > index {
                return Ok(());
            }
            connection
                .execute_batch(&format!(
                    "{migration}; PRAGMA user_version = {};",
                    index + 1
                ))
                .map_err(database)
        });
        match outcome {
            Ok(()) => connection.execute_batch("COMMIT").map_err(database)?,
            Err(error) => {
                let _ = connection.execute_batch("ROLLBACK");
                return Err(error);
            }
        }
    }
    Ok(())
}
