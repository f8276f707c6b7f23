//! History retention on PostgreSQL: the two queries of a trimming step (the schedule is
//! shared, see [`crate::store::retention`]), each step its own short transaction.

use deadpool_postgres::ClientWrapper;

use crate::model::DeviceId;
use crate::store::retention::{Retention, TrimQueries, Trimmer};

/// Runs one bounded trimming step in its own transaction; returns the rows deleted.
pub(super) async fn step(
    trimmer: &mut Trimmer,
    client: &ClientWrapper,
    now_ms: i64,
) -> Result<u64, tokio_postgres::Error> {
    trimmer.begin_step();
    client.batch_execute("BEGIN").await?;
    match trimmer.trim_some(&mut Queries(client), now_ms).await {
        Ok(deleted) => {
            client.batch_execute("COMMIT").await?;
            Ok(deleted)
        }
        Err(error) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(error)
        }
    }
}

struct Queries<'a>(&'a ClientWrapper);

impl TrimQueries for Queries<'_> {
    type Error = tokio_postgres::Error;

    async fn next_pin_after(
        &mut self,
        (after_device, after_pin): &(DeviceId, String),
    ) -> Result<Option<(DeviceId, String)>, Self::Error> {
        let statement = self
            .0
            .prepare_cached(
                "SELECT device_id, pin FROM history WHERE (device_id, pin) > ($1, $2)
                 ORDER BY device_id, pin LIMIT 1",
            )
            .await?;
        match self
            .0
            .query_opt(&statement, &[after_device, after_pin])
            .await?
        {
            Some(row) => Ok(Some((row.try_get(0)?, row.try_get(1)?))),
            None => Ok(None),
        }
    }

    async fn trim_pin(
        &mut self,
        device_id: DeviceId,
        pin: &str,
        retention: &Retention,
        cutoff_ms: Option<i64>,
        budget: u64,
    ) -> Result<u64, Self::Error> {
        let client = self.0;
        let budget = i64::try_from(budget).unwrap_or(i64::MAX);
        let mut deleted = 0;
        if retention.per_pin > 0 {
            let statement = client
                .prepare_cached(
                    "DELETE FROM history WHERE device_id = $1 AND pin = $2 AND version IN (
                       SELECT version FROM history WHERE device_id = $1 AND pin = $2
                         AND version <= (SELECT version FROM history
                                         WHERE device_id = $1 AND pin = $2
                                         ORDER BY version DESC LIMIT 1 OFFSET $3)
                       ORDER BY version LIMIT $4)",
                )
                .await?;
            let keep = i64::from(retention.per_pin);
            deleted += client
                .execute(&statement, &[&device_id, &pin, &keep, &budget])
                .await? as i64;
        }
        if let Some(cutoff) = cutoff_ms
            && deleted < budget
        {
            let statement = client
                .prepare_cached(
                    "DELETE FROM history WHERE device_id = $1 AND pin = $2 AND version IN (
                       SELECT version FROM history WHERE device_id = $1 AND pin = $2
                         AND set_at < $3
                       ORDER BY version LIMIT $4)",
                )
                .await?;
            let left = budget - deleted;
            deleted += client
                .execute(&statement, &[&device_id, &pin, &cutoff, &left])
                .await? as i64;
        }
        Ok(deleted as u64)
    }
}
