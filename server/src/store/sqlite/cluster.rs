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

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> Connection {
        let connection = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&connection).unwrap();
        connection
            .execute(
                "INSERT INTO device_versions (device_id, version) VALUES (1, 10)",
                [],
            )
            .unwrap();
        connection
    }

    #[test]
    fn a_claim_after_a_release_goes_on_without_a_gap() {
        let connection = database();
        assert_eq!(
            claim(&connection, 1, "a").unwrap(),
            Claim {
                durable: 10,
                resume_at: 10
            }
        );
        // A handed out versions up to 15 (some not yet stored) and let the device go.
        release(&connection, 1, "a", 15).unwrap();
        assert_eq!(claim(&connection, 1, "b").unwrap().resume_at, 15);
    }

    #[test]
    fn a_claim_that_replaces_a_holder_jumps_past_what_it_may_have_handed_out() {
        let connection = database();
        claim(&connection, 1, "a").unwrap();
        let taken = claim(&connection, 1, "b").unwrap();
        assert_eq!(taken.durable, 10);
        assert_eq!(taken.resume_at, 10 + TAKEOVER_GAP);
        // A's late release changes nothing: B holds it.
        release(&connection, 1, "a", 12).unwrap();
        assert_eq!(holder(&connection, 1).unwrap().0.as_deref(), Some("b"));
    }

    #[test]
    fn a_version_for_a_held_device_is_refused_while_its_holder_lives() {
        let connection = database();
        renew_lease(&connection, "a", 1_000, false, 0).unwrap();
        claim(&connection, 1, "a").unwrap();
        assert_eq!(take_version(&connection, 1, "b", 500).unwrap(), None);
        // Its lease ran out: the version jumps past what it may have handed out.
        assert_eq!(
            take_version(&connection, 1, "b", 2_000).unwrap(),
            Some(10 + TAKEOVER_GAP + 1)
        );
        assert_eq!(
            take_version(&connection, 1, "b", 2_000).unwrap(),
            Some(10 + TAKEOVER_GAP + 2)
        );
    }

    #[test]
    fn a_node_whose_lease_ran_out_loses_its_devices_to_the_next_renewal() {
        let connection = database();
        assert!(
            renew_lease(&connection, "a", 1_000, false, 0).unwrap().lost,
            "first lease"
        );
        claim(&connection, 1, "a").unwrap();
        renew_lease(&connection, "b", 1_000, true, 500).unwrap();
        assert_eq!(
            held_devices(&connection, 500).unwrap(),
            vec![(1, "a".to_owned())]
        );
        let lease = renew_lease(&connection, "b", 1_000, true, 1_500).unwrap();
        assert_eq!(lease.reaped, vec![(1, "a".to_owned())]);
        assert!(held_devices(&connection, 1_500).unwrap().is_empty());
        assert_eq!(
            claim(&connection, 1, "b").unwrap().resume_at,
            10 + TAKEOVER_GAP
        );
        assert!(
            renew_lease(&connection, "a", 1_000, true, 1_600)
                .unwrap()
                .lost
        );
    }

    #[test]
    fn a_pending_command_is_claimed_once() {
        let connection = database();
        connection
            .execute(
                "INSERT INTO pending_commands (id, device_id, pin, value, version, expires_at)
                 VALUES (7, 1, 'V4', '1', 11, 99)",
                [],
            )
            .unwrap();
        assert!(claim_command(&connection, 7).unwrap());
        assert!(!claim_command(&connection, 7).unwrap());
    }
}
