//! The SQL of each write other than a value, run by the writer inside its batch's
//! transaction. An answer for the one write (a name taken, a template missing) is the inner
//! result, and leaves the transaction usable; an error of PostgreSQL is the outer one.

use deadpool_postgres::ClientWrapper;
use tokio_postgres::types::ToSql;

use super::values::write_values;
use super::work::{Done, Work};
use crate::model::{Device, Template, TemplateId, now_ms};
use crate::store::StoreError;
use crate::store::sqlite::EVENTS_PER_DEVICE;

/// Applies one operation other than a value.
pub(super) async fn apply(
    client: &ClientWrapper,
    work: &Work,
) -> Result<Result<Done, StoreError>, tokio_postgres::Error> {
    match work {
        Work::Value(write) => write_values(client, &[write])
            .await
            .map(|()| Ok(Done::Unit)),
        Work::SetSetting(key, value) => {
            let statement = client
                .prepare_cached(
                    "INSERT INTO settings (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .await?;
            client.execute(&statement, &[key, value]).await?;
            Ok(Ok(Done::Unit))
        }
        Work::CreateTemplate(template) => create_template(client, template).await,
        Work::CreateDevice {
            name,
            template_id,
            token,
        } => create_device(client, name, *template_id, token).await,
        Work::DeleteDevice(device_id) => {
            // One statement: every data-modifying part of a WITH runs.
            let statement = client
                .prepare_cached(
                    "WITH latest AS (DELETE FROM latest_values WHERE device_id = $1),
                          past AS (DELETE FROM history WHERE device_id = $1),
                          props AS (DELETE FROM properties WHERE device_id = $1),
                          happened AS (DELETE FROM events WHERE device_id = $1),
                          commands AS (DELETE FROM pending_commands WHERE device_id = $1),
                          versions AS (DELETE FROM device_versions WHERE device_id = $1)
                     DELETE FROM devices WHERE id = $1",
                )
                .await?;
            client.execute(&statement, &[device_id]).await?;
            Ok(Ok(Done::Unit))
        }
        Work::PutProperty(device_id, property) => {
            let statement = client
                .prepare_cached(
                    "INSERT INTO properties (device_id, pin, name, value) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (device_id, pin, name) DO UPDATE SET value = excluded.value",
                )
                .await?;
            let (pin, value) = (property.pin.to_string(), property.value.to_store_text());
            client
                .execute(&statement, &[device_id, &pin, &property.name, &value])
                .await?;
            Ok(Ok(Done::Unit))
        }
        Work::AppendEvent(device_id, event) => {
            let insert = client
                .prepare_cached(
                    "INSERT INTO events (device_id, code, description, at) VALUES ($1, $2, $3, $4)",
                )
                .await?;
            let trim = client
                .prepare_cached(
                    "DELETE FROM events WHERE device_id = $1 AND id <= (
                       SELECT id FROM events WHERE device_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
                )
                .await?;
            let event: [&(dyn ToSql + Sync); 4] =
                [device_id, &event.code, &event.description, &event.at];
            let bound: [&(dyn ToSql + Sync); 2] = [device_id, &EVENTS_PER_DEVICE];
            tokio::try_join!(
                client.execute(&insert, &event),
                client.execute(&trim, &bound)
            )?;
            Ok(Ok(Done::Unit))
        }
        Work::AddPendingCommand(command) => {
            let (insert, raise) = tokio::try_join!(
                client.prepare_cached(
                    "INSERT INTO pending_commands (device_id, pin, value, version, expires_at)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                ),
                client.prepare_cached(
                    "INSERT INTO device_versions (device_id, version) VALUES ($1, $2)
                     ON CONFLICT (device_id) DO UPDATE SET
                       version = GREATEST(device_versions.version, excluded.version)",
                ),
            )?;
            let (pin, value) = (command.pin.to_string(), command.value.to_store_text());
            let version = command.version as i64;
            let row: [&(dyn ToSql + Sync); 5] = [
                &command.device_id,
                &pin,
                &value,
                &version,
                &command.expires_at,
            ];
            let raised: [&(dyn ToSql + Sync); 2] = [&command.device_id, &version];
            let (row, _) = tokio::try_join!(
                client.query_one(&insert, &row),
                client.execute(&raise, &raised),
            )?;
            Ok(Ok(Done::Id(row.try_get(0)?)))
        }
        Work::RemovePendingCommand(id) => {
            let statement = client
                .prepare_cached("DELETE FROM pending_commands WHERE id = $1")
                .await?;
            client.execute(&statement, &[id]).await?;
            Ok(Ok(Done::Unit))
        }
        Work::SetLastSeen(device_id, at) => {
            let statement = client
                .prepare_cached("UPDATE devices SET last_seen = $2 WHERE id = $1")
                .await?;
            client.execute(&statement, &[device_id, at]).await?;
            Ok(Ok(Done::Unit))
        }
        Work::Flush => Ok(Ok(Done::Unit)),
        #[cfg(test)]
        Work::Hold(held) => {
            let held = held.lock().ok().and_then(|mut held| held.take());
            if let Some(held) = held {
                let _ = held.await;
            }
            Ok(Ok(Done::Unit))
        }
    }
}

async fn create_template(
    client: &ClientWrapper,
    template: &Template,
) -> Result<Result<Done, StoreError>, tokio_postgres::Error> {
    let definitions = match template
        .datastreams
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(definitions) => definitions,
        Err(error) => return Ok(Err(StoreError::Database(error.to_string()))),
    };
    let row = client
        .query_opt(
            "INSERT INTO templates (name, created_at) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING RETURNING id",
            &[&template.name, &now_ms()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Err(StoreError::Conflict(format!(
            "template `{}`",
            template.name
        ))));
    };
    let id: TemplateId = row.try_get(0)?;
    let positions: Vec<i32> = (0..definitions.len() as i32).collect();
    client
        .execute(
            "INSERT INTO datastreams (template_id, position, definition)
             SELECT $1, * FROM UNNEST($2::INTEGER[], $3::TEXT[])",
            &[&id, &positions, &definitions],
        )
        .await?;
    Ok(Ok(Done::Template(Template {
        id,
        ..template.clone()
    })))
}

async fn create_device(
    client: &ClientWrapper,
    name: &str,
    template_id: TemplateId,
    token: &str,
) -> Result<Result<Done, StoreError>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "INSERT INTO devices (name, template_id, token, created_at)
             SELECT $1, id, $3, $4 FROM templates WHERE id = $2
             ON CONFLICT (token) DO NOTHING RETURNING id",
            &[&name, &template_id, &token, &now_ms()],
        )
        .await?;
    let Some(row) = row else {
        let template = client
            .query_opt("SELECT 1 FROM templates WHERE id = $1", &[&template_id])
            .await?;
        return Ok(Err(match template {
            None => StoreError::NotFound(format!("template {template_id}")),
            Some(_) => StoreError::Conflict("a device with this token".into()),
        }));
    };
    Ok(Ok(Done::Device(Device {
        id: row.try_get(0)?,
        name: name.to_owned(),
        template_id,
        token: token.to_owned(),
        last_seen: None,
    })))
}
