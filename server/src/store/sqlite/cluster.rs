//! Which node holds each device, for several nodes sharing one store (`--bus`). On SQLite this
//! serves nodes on one machine sharing the database file (the tests do); the writer's batch
//! transaction plays the part of PostgreSQL's row locks.

use rusqlite::{Connection, OptionalExtension, params};

use crate::model::DeviceId;
use crate::store::{Claim, Lease, TAKEOVER_GAP};

/// The device's holder (if any) and floor, and its highest stored version.
fn holder(
    connection: &Connection,
    device_id: DeviceId,
) -> rusqlite::Result<(Option<String>, u64, u64)> {
    let (node, floor) = connection
        .prepare_cached("SELECT node, floor FROM device_holders WHERE device_id = ?1")?
        .query_row([device_id], |row| {
            Ok((row.get::<_, Option<String>>(0)?, row.get::<_, i64>(1)?))
        })
        .optional()?
        .unwrap_or((None, 0));
    let durable: i64 = connection
        .prepare_cached("SELECT version FROM device_versions WHERE device_id = ?1")?
        .query_row([device_id], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    Ok((node, floor as u64, durable as u64))
}

fn set_holder(
    connection: &Connection,
    device_id: DeviceId,
    node: Option<&str>,
    floor: u64,
) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO device_holders (device_id, node, floor) VALUES (?1, ?2, ?3)
             ON CONFLICT (device_id) DO UPDATE SET node = excluded.node, floor = excluded.floor",
        )?
        .execute(params![device_id, node, floor as i64])
        .map(drop)
}

pub(super) fn claim(
    connection: &Connection,
    device_id: DeviceId,
    node: &str,
) -> rusqlite::Result<Claim> {
    let (holder, floor, durable) = holder(connection, device_id)?;
    let base = durable.max(floor);
    let resume_at = match holder {
        Some(previous) if previous != node => base + TAKEOVER_GAP,
        _ => base,
    };
    set_holder(connection, device_id, Some(node), resume_at)?;
    Ok(Claim { durable, resume_at })
}

pub(super) fn release(
    connection: &Connection,
    device_id: DeviceId,
    node: &str,
    version: u64,
) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "UPDATE device_holders SET node = NULL, floor = max(floor, ?3)
             WHERE device_id = ?1 AND node = ?2",
        )?
        .execute(params![device_id, node, version as i64])
        .map(drop)
}

pub(super) fn take_version(
    connection: &Connection,
    device_id: DeviceId,
    node: &str,
    now: i64,
) -> rusqlite::Result<Option<u64>> {
    let (holder, floor, durable) = holder(connection, device_id)?;
    let base = durable.max(floor);
    let (keep, base) = match holder {
        Some(holder) if holder == node => (Some(holder), base),
        Some(holder) => {
            let alive: Option<i64> = connection
                .prepare_cached("SELECT 1 FROM nodes WHERE node = ?1 AND lease_until >= ?2")?
                .query_row(params![holder, now], |row| row.get(0))
                .optional()?;
            if alive.is_some() {
                return Ok(None);
            }
            // Its holder died without releasing it: jump past what it may have handed out.
            (None, base + TAKEOVER_GAP)
        }
        None => (None, base),
    };
    let version = base + 1;
    set_holder(connection, device_id, keep.as_deref(), version)?;
    Ok(Some(version))
}

pub(super) fn renew_lease(
    connection: &Connection,
    node: &str,
    ttl_ms: i64,
    reap: bool,
    now: i64,
) -> rusqlite::Result<Lease> {
    let live: Option<i64> = connection
        .prepare_cached("SELECT 1 FROM nodes WHERE node = ?1 AND lease_until >= ?2")?
        .query_row(params![node, now], |row| row.get(0))
        .optional()?;
    connection
        .prepare_cached(
            "INSERT INTO nodes (node, lease_until) VALUES (?1, ?2)
             ON CONFLICT (node) DO UPDATE SET lease_until = excluded.lease_until",
        )?
        .execute(params![node, now + ttl_ms])?;
    let mut lease = Lease {
        reaped: Vec::new(),
        lost: live.is_none(),
    };
    if reap {
        lease.reaped = connection
            .prepare_cached(
                "SELECT device_id, node FROM device_holders
                 WHERE node IN (SELECT node FROM nodes WHERE lease_until < ?1)",
            )?
            .query_map([now], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        connection
            .prepare_cached(
                "UPDATE device_holders SET node = NULL,
                   floor = max(floor, coalesce((SELECT version FROM device_versions
                     WHERE device_versions.device_id = device_holders.device_id), 0)) + ?2
                 WHERE node IN (SELECT node FROM nodes WHERE lease_until < ?1)",
            )?
            .execute(params![now, TAKEOVER_GAP as i64])?;
        connection
            .prepare_cached("DELETE FROM nodes WHERE lease_until < ?1")?
            .execute([now])?;
    }
    Ok(lease)
}

pub(super) fn held_devices(
    connection: &Connection,
    now: i64,
) -> rusqlite::Result<Vec<(DeviceId, String)>> {
    connection
        .prepare_cached(
            "SELECT device_holders.device_id, device_holders.node FROM device_holders
             JOIN nodes ON nodes.node = device_holders.node WHERE nodes.lease_until >= ?1",
        )?
        .query_map([now], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect()
}

pub(super) fn claim_command(connection: &Connection, id: i64) -> rusqlite::Result<bool> {
    Ok(connection
        .prepare_cached("DELETE FROM pending_commands WHERE id = ?1")?
        .execute([id])?
        == 1)
}
