//! History retention on SQLite: the two queries of a trimming step (the schedule is shared,
//! see [`crate::store::retention`]), each step its own short write transaction.

use futures_util::FutureExt as _;
use rusqlite::{Connection, OptionalExtension, params};

use crate::model::DeviceId;
use crate::store::retention::{Retention, TrimQueries, Trimmer};

/// Runs one bounded trimming step in its own transaction; returns the rows deleted.
pub(super) fn step(
    trimmer: &mut Trimmer,
    connection: &Connection,
    now_ms: i64,
) -> rusqlite::Result<u64> {
    trimmer.begin_step();
    connection.execute_batch("BEGIN IMMEDIATE")?;
    // The queries below are synchronous: the future is complete at its first poll.
    let deleted = trimmer
        .trim_some(&mut Queries(connection), now_ms)
        .now_or_never()
        .unwrap_or(Ok(0));
    match deleted {
        Ok(_) => connection.execute_batch("COMMIT")?,
        Err(_) => {
            let _ = connection.execute_batch("ROLLBACK");
        }
    }
    deleted
}

struct Queries<'a>(&'a Connection);

impl TrimQueries for Queries<'_> {
    type Error = rusqlite::Error;

    async fn next_pin_after(
        &mut self,
        (after_device, after_pin): &(DeviceId, String),
    ) -> rusqlite::Result<Option<(DeviceId, String)>> {
        self.0
            .prepare_cached(
                "SELECT device_id, pin FROM history WHERE (device_id, pin) > (?1, ?2)
                 ORDER BY device_id, pin LIMIT 1",
            )?
            .query_row(params![after_device, after_pin], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
    }

    async fn trim_pin(
        &mut self,
        device_id: DeviceId,
        pin: &str,
        retention: &Retention,
        cutoff_ms: Option<i64>,
        budget: u64,
    ) -> rusqlite::Result<u64> {
        let connection = self.0;
        let mut deleted = 0;
        if retention.per_pin > 0 {
            deleted += connection
                .prepare_cached(
                    "DELETE FROM history WHERE device_id = ?1 AND pin = ?2 AND version IN (
                       SELECT version FROM history WHERE device_id = ?1 AND pin = ?2
                         AND version <= (SELECT version FROM history
                                         WHERE device_id = ?1 AND pin = ?2
                                         ORDER BY version DESC LIMIT 1 OFFSET ?3)
                       ORDER BY version LIMIT ?4)",
                )?
                .execute(params![
                    device_id,
                    pin,
                    retention.per_pin,
                    i64::try_from(budget).unwrap_or(i64::MAX)
                ])? as u64;
        }
        if let Some(cutoff) = cutoff_ms
            && deleted < budget
        {
            deleted += connection
                .prepare_cached(
                    "DELETE FROM history WHERE device_id = ?1 AND pin = ?2 AND version IN (
                       SELECT version FROM history WHERE device_id = ?1 AND pin = ?2
                         AND set_at < ?3
                       ORDER BY version LIMIT ?4)",
                )?
                .execute(params![
                    device_id,
                    pin,
                    cutoff,
                    i64::try_from(budget - deleted).unwrap_or(i64::MAX)
                ])? as u64;
        }
        Ok(deleted)
    }
}
