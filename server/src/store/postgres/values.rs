//! The one statement shape for values: a run of value writes becomes three `UNNEST` array
//! statements (history, latest values, device versions) sent together. The writer uses it for a
//! batch's values and the SQL of single operations for a lone value.

use std::collections::HashMap;

use blynk_proto::Pin;
use deadpool_postgres::ClientWrapper;
use tokio_postgres::types::ToSql;

use crate::model::DeviceId;
use crate::store::ValueWrite;

/// Every write goes to the history (the later of two with one version wins); per pin, the
/// highest version of those that become the latest value is upserted once, and never over a
/// higher version already there (another node's); per device, the highest version is recorded
/// once. The three statements are sent without waiting between
/// them.
pub(super) async fn write_values(
    client: &ClientWrapper,
    writes: &[&ValueWrite],
) -> Result<(), tokio_postgres::Error> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut history: HashMap<(DeviceId, Pin, u64), &ValueWrite> = HashMap::new();
    let mut latest: HashMap<(DeviceId, Pin), &ValueWrite> = HashMap::new();
    let mut versions: HashMap<DeviceId, i64> = HashMap::new();
    for write in writes {
        history.insert((write.device_id, write.pin, write.stored.version), write);
        if write.latest {
            latest
                .entry((write.device_id, write.pin))
                .and_modify(|best| {
                    if best.stored.version < write.stored.version {
                        *best = write;
                    }
                })
                .or_insert(write);
        }
        let version = write.stored.version as i64;
        versions
            .entry(write.device_id)
            .and_modify(|highest| *highest = (*highest).max(version))
            .or_insert(version);
    }
    let history = Columns::of(history.into_values());
    let latest = Columns::of(latest.into_values());
    let (devices, highest): (Vec<DeviceId>, Vec<i64>) = versions.into_iter().unzip();
    let (history_statement, latest_statement, version_statement) = tokio::try_join!(
        client.prepare_cached(
            "INSERT INTO history (device_id, pin, version, value, set_at, origin)
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[], $6::TEXT[])
             ON CONFLICT (device_id, pin, version) DO UPDATE SET
               value = excluded.value, set_at = excluded.set_at, origin = excluded.origin",
        ),
        client.prepare_cached(
            "INSERT INTO latest_values (device_id, pin, version, value, set_at, origin)
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[], $6::TEXT[])
             ON CONFLICT (device_id, pin) DO UPDATE SET
               value = excluded.value, version = excluded.version,
               set_at = excluded.set_at, origin = excluded.origin
             WHERE latest_values.version <= excluded.version",
        ),
        client.prepare_cached(
            "INSERT INTO device_versions (device_id, version)
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[])
             ON CONFLICT (device_id) DO UPDATE SET
               version = GREATEST(device_versions.version, excluded.version)",
        ),
    )?;
    let (history, latest) = (history.params(), latest.params());
    let versions: [&(dyn ToSql + Sync); 2] = [&devices, &highest];
    tokio::try_join!(
        client.execute(&history_statement, &history),
        client.execute(&latest_statement, &latest),
        client.execute(&version_statement, &versions),
    )?;
    Ok(())
}

/// Values as the columns of an `UNNEST`.
#[derive(Default)]
struct Columns {
    device_ids: Vec<DeviceId>,
    pins: Vec<String>,
    versions: Vec<i64>,
    values: Vec<String>,
    set_ats: Vec<i64>,
    origins: Vec<&'static str>,
}

impl Columns {
    fn of<'a>(writes: impl Iterator<Item = &'a ValueWrite>) -> Self {
        let mut columns = Columns::default();
        for write in writes {
            columns.device_ids.push(write.device_id);
            columns.pins.push(write.pin.to_string());
            columns.versions.push(write.stored.version as i64);
            columns.values.push(write.stored.value.to_store_text());
            columns.set_ats.push(write.stored.set_at);
            columns.origins.push(write.stored.origin.as_str());
        }
        columns
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.device_ids,
            &self.pins,
            &self.versions,
            &self.values,
            &self.set_ats,
            &self.origins,
        ]
    }
}
