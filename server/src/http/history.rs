//! `GET /api/devices/{device}/history/{pin}`: a pin's past values. Without a range, the newest
//! `limit` values, newest first (JSON). With `from`, `to` or `format`, an export of the range,
//! oldest first, as CSV or JSON, streamed page by page: however long the range, the server holds
//! one page of it at a time.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use blynk_proto::Pin;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::app_api::{Caller, find_device, parse_pin};
use super::{ApiError, AppState};
use crate::engine::Engine;
use crate::model::{DeviceId, HistoryPoint};
use crate::store::HistoryRange;

/// Points read from the store per page of an export.
const PAGE: usize = 1000;

/// The query of a history request.
#[derive(Deserialize)]
pub struct HistoryQuery {
    limit: Option<usize>,
    /// The range's start: ms since the epoch, or an RFC 3339 time.
    from: Option<String>,
    /// The range's end (excluded), the same way; default now.
    to: Option<String>,
    /// `json` (the default) or `csv`.
    format: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

/// A time of the query: ms since the epoch, or an RFC 3339 time.
fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    text.parse::<jiff::Timestamp>()
        .map(|at| at.as_millisecond())
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "`{name}`: `{text}` is neither ms since the epoch nor an RFC 3339 time"
            ))
        })
}

/// `GET /api/devices/{device}/history/{pin}?limit=N` or `?from=&to=&format=csv|json`.
pub async fn history(
    _: Caller,
    State(state): State<AppState>,
    Path((device, pin)): Path<(String, String)>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let slot = find_device(&state, &device).await?;
    let pin = parse_pin(&pin)?;
    let export = query.from.is_some() || query.to.is_some() || query.format.is_some();
    if !export {
        let limit = query.limit.unwrap_or(100).min(1000);
        let points = state
            .engine
            .recent_history(slot.device.id, pin, limit)
            .await?;
        let json: Vec<_> = points.iter().map(point_json).collect();
        return Ok(axum::Json(json).into_response());
    }
    let format = match query.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format `{other}`: `csv` or `json` expected"
            )));
        }
    };
    let from = match &query.from {
        Some(text) => parse_time("from", text)?,
        None => 0,
    };
    let to = match &query.to {
        Some(text) => parse_time("to", text)?,
        // Just after now: a value set this millisecond is in.
        None => state.engine.clock().unix_ms() + 1,
    };
    if from > to {
        return Err(ApiError::BadRequest("`from` is after `to`".into()));
    }
    let limit = query.limit.unwrap_or(usize::MAX);
    // The first page is read before answering, so that a failing store is a clear error
    // rather than a cut-off download.
    let range = HistoryRange {
        from,
        to,
        after: None,
        limit: PAGE.min(limit),
    };
    let first = state.engine.history(slot.device.id, pin, range).await?;
    let export = Export {
        engine: state.engine.clone(),
        device_id: slot.device.id,
        pin,
        range,
        format,
        page: Some(first),
        left: limit,
        started: false,
        written: 0,
    };
    let stream = futures_util::stream::unfold(export, Export::next_chunk);
    let (content_type, extension) = match format {
        Format::Json => ("application/json", "json"),
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    let filename = format!(
        "attachment; filename=\"{}-{}.{extension}\"",
        slot.device
            .name
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        pin
    );
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, filename),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The JSON of a point.
fn point_json(point: &HistoryPoint) -> serde_json::Value {
    json!({
        "value": point.value.to_json(),
        "version": point.version,
        "at": point.set_at,
        "origin": point.origin.as_str(),
    })
}

/// An export being streamed: the page in hand, and where the next one starts.
struct Export {
    engine: std::sync::Arc<Engine>,
    device_id: DeviceId,
    pin: Pin,
    range: HistoryRange,
    format: Format,
    /// The page to write next; `None` once the last one is written.
    page: Option<Vec<HistoryPoint>>,
    /// Points still allowed by `limit`.
    left: usize,
    /// Whether the opening (CSV header, `[`) is written.
    started: bool,
    /// Points written so far.
    written: usize,
}

impl Export {
    /// The next piece of the body: one page's text, read from the store as it goes.
    async fn next_chunk(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        let mut text = String::new();
        if !self.started {
            self.started = true;
            text.push_str(match self.format {
                Format::Json => "[",
                Format::Csv => "time,at_ms,value,version,origin\n",
            });
        }
        let page = self.page.take()?;
        let full = page.len() == self.range.limit;
        self.left -= page.len();
        for point in &page {
            self.write_point(point, &mut text);
        }
        let last = page.last().map(|point| (point.set_at, point.version));
        if full && self.left > 0 {
            self.range.after = last;
            self.range.limit = PAGE.min(self.left);
            match self
                .engine
                .history(self.device_id, self.pin, self.range)
                .await
            {
                Ok(next) => self.page = Some(next),
                Err(error) => {
                    // The status is sent already: cutting the body short is the only way left
                    // to say the download is incomplete.
                    tracing::error!(%error, "history export failed midway");
                    return Some((Err(std::io::Error::other(error.to_string())), self));
                }
            }
        }
        if self.page.is_none() && self.format == Format::Json {
            text.push(']');
        }
        Some((Ok(Bytes::from(text)), self))
    }

    fn write_point(&mut self, point: &HistoryPoint, out: &mut String) {
        use std::fmt::Write as _;
        match self.format {
            Format::Json => {
                if self.written > 0 {
                    out.push(',');
                }
                out.push_str(&point_json(point).to_string());
            }
            Format::Csv => {
                let time = jiff::Timestamp::from_millisecond(point.set_at)
                    .map(|at| at.to_string())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{time},{},{},{},{}",
                    point.set_at,
                    csv_field(&point.value.to_json()),
                    point.version,
                    point.origin.as_str()
                );
            }
        }
        self.written += 1;
    }
}

/// A value as one CSV field: a number as it is, anything else quoted (a multi-part value as
/// its parts joined by `|`).
fn csv_field(value: &serde_json::Value) -> String {
    let text = match value {
        serde_json::Value::Number(number) => return number.to_string(),
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(parts) => parts
            .iter()
            .map(|part| match part {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("|"),
        other => other.to_string(),
    };
    format!("\"{}\"", text.replace('"', "\"\""))
}
