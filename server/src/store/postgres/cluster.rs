//! Which node holds each device, for nodes sharing the database (`--bus`). Each operation is
//! one transaction on a read connection, under the device's row lock (`FOR UPDATE`), so claims
//! and versions taken by nodes that do not hold the device serialize per device. Not queued
//! behind the writer: a release's `floor` already covers the versions still in its queue.

use deadpool_postgres::Object;

use crate::model::{DeviceId, now_ms};
use crate::store::{Claim, Lease, TAKEOVER_GAP};

/// Locks the device's holder row (made if missing): its holder, floor and highest stored
/// version.
async fn lock_holder(
    transaction: &tokio_postgres::Transaction<'_>,
    device_id: DeviceId,
) -> Result<(Option<String>, u64, u64), tokio_postgres::Error> {
    transaction
        .execute(
            "INSERT INTO device_holders (device_id, node, floor) VALUES ($1, NULL, 0)
             ON CONFLICT (device_id) DO NOTHING",
            &[&device_id],
        )
        .await?;
    let row = transaction
        .query_one(
            "SELECT node, floor FROM device_holders WHERE device_id = $1 FOR UPDATE",
            &[&device_id],
        )
        .await?;
    let (node, floor): (Option<String>, i64) = (row.get(0), row.get(1));
    let durable: i64 = transaction
        .query_opt(
            "SELECT version FROM device_versions WHERE device_id = $1",
            &[&device_id],
        )
        .await?
        .map_or(0, |row| row.get(0));
    Ok((node, floor as u64, durable as u64))
}

async fn set_holder(
    transaction: &tokio_postgres::Transaction<'_>,
    device_id: DeviceId,
    node: Option<&str>,
    floor: u64,
) -> Result<(), tokio_postgres::Error> {
    transaction
        .execute(
            "UPDATE device_holders SET node = $2, floor = $3 WHERE device_id = $1",
            &[&device_id, &node, &(floor as i64)],
        )
        .await
        .map(drop)
}

pub(super) async fn claim(
    mut client: Object,
    device_id: DeviceId,
    node: String,
) -> Result<Claim, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let (holder, floor, durable) = lock_holder(&transaction, device_id).await?;
    let base = durable.max(floor);
    let resume_at = match holder {
        Some(previous) if previous != node => base + TAKEOVER_GAP,
        _ => base,
    };
    set_holder(&transaction, device_id, Some(&node), resume_at).await?;
    transaction.commit().await?;
    Ok(Claim { durable, resume_at })
}

pub(super) async fn release(
    client: Object,
    device_id: DeviceId,
    node: String,
    version: u64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE device_holders SET node = NULL, floor = GREATEST(floor, $3)
             WHERE device_id = $1 AND node = $2",
            &[&device_id, &node, &(version as i64)],
        )
        .await
        .map(drop)
}

pub(super) async fn take_version(
    mut client: Object,
    device_id: DeviceId,
    node: String,
) -> Result<Option<u64>, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let (holder, floor, durable) = lock_holder(&transaction, device_id).await?;
    let base = durable.max(floor);
    let (keep, base) = match holder {
        Some(holder) if holder == node => (Some(holder), base),
        Some(holder) => {
            let alive = transaction
                .query_opt(
                    "SELECT 1 FROM nodes WHERE node = $1 AND lease_until >= $2",
                    &[&holder, &now_ms()],
                )
                .await?
                .is_some();
            if alive {
                return Ok(None);
            }
            // Its holder died without releasing it: jump past what it may have handed out.
            (None, base + TAKEOVER_GAP)
        }
        None => (None, base),
    };
    let version = base + 1;
    set_holder(&transaction, device_id, keep.as_deref(), version).await?;
    transaction.commit().await?;
    Ok(Some(version))
}

pub(super) async fn renew_lease(
    mut client: Object,
    node: String,
    ttl_ms: i64,
    reap: bool,
) -> Result<Lease, tokio_postgres::Error> {
    let now = now_ms();
    let transaction = client.transaction().await?;
    let live = transaction
        .query_opt(
            "SELECT 1 FROM nodes WHERE node = $1 AND lease_until >= $2",
            &[&node, &now],
        )
        .await?
        .is_some();
    transaction
        .execute(
            "INSERT INTO nodes (node, lease_until) VALUES ($1, $2)
             ON CONFLICT (node) DO UPDATE SET lease_until = excluded.lease_until",
            &[&node, &(now + ttl_ms)],
        )
        .await?;
    let mut lease = Lease {
        reaped: Vec::new(),
        lost: !live,
    };
    if reap {
        let dead: Vec<String> = transaction
            .query(
                "DELETE FROM nodes WHERE lease_until < $1 RETURNING node",
                &[&now],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if !dead.is_empty() {
            lease.reaped = transaction
                .query(
                    "WITH old AS (SELECT device_id, node FROM device_holders
                                  WHERE node = ANY($1) FOR UPDATE)
                     UPDATE device_holders SET node = NULL,
                       floor = GREATEST(floor, COALESCE((SELECT version FROM device_versions
                         WHERE device_versions.device_id = device_holders.device_id), 0)) + $2
                     FROM old WHERE device_holders.device_id = old.device_id
                     RETURNING device_holders.device_id, old.node",
                    &[&dead, &(TAKEOVER_GAP as i64)],
                )
                .await?
                .iter()
                .map(|row| (row.get::<_, i64>(0), row.get::<_, String>(1)))
                .collect();
        }
    }
    transaction.commit().await?;
    Ok(lease)
}

pub(super) async fn held_devices(
    client: Object,
) -> Result<Vec<(DeviceId, String)>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT device_holders.device_id, device_holders.node FROM device_holders
             JOIN nodes ON nodes.node = device_holders.node WHERE nodes.lease_until >= $1",
            &[&now_ms()],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

pub(super) async fn claim_command(client: Object, id: i64) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .execute("DELETE FROM pending_commands WHERE id = $1", &[&id])
        .await?
        == 1)
}
