//! Payloads of the uplink topics: values as text (`\0` between parts), `batch_ds` JSON objects,
//! timestamped batches, and the datastream lists of `get/ds`.

use crate::model::OwnedValue;

/// Most points in one timestamped batch (the packet size bounds it too).
pub const MAX_BATCH_POINTS: usize = 1_000;
/// How far in the future a timestamp may be (clocks of small devices drift); later ones are
/// refused rather than stored with a made-up time.
pub const MAX_CLOCK_SKEW_MS: i64 = 5_000;

/// Why a payload cannot be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PayloadError {
    /// Not UTF-8 text.
    #[error("the payload is not UTF-8 text")]
    NotText,
    /// Not the JSON the topic takes.
    #[error("the payload is not {expected}: {reason}")]
    Json {
        /// What the topic takes.
        expected: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A value the protocol cannot carry.
    #[error("value: {0}")]
    Value(String),
    /// Too many points.
    #[error("a timestamped batch holds at most {MAX_BATCH_POINTS} points")]
    TooManyPoints,
}

fn text(payload: &[u8]) -> Result<&str, PayloadError> {
    std::str::from_utf8(payload).map_err(|_| PayloadError::NotText)
}

/// A value published on `ds/<name>`: text, parts separated by `\0` as in Blynk.
pub fn value(payload: &[u8]) -> Result<OwnedValue, PayloadError> {
    OwnedValue::from_text_parts(text(payload)?.split('\0'))
        .map_err(|error| PayloadError::Value(error.to_string()))
}

/// A `batch_ds` payload: `{"name": value, ...}`; a value is a number, a string, or an array of
/// them (parts).
pub fn batch(payload: &[u8]) -> Result<Vec<(String, OwnedValue)>, PayloadError> {
    let expected = "a JSON object of datastream names to values";
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(payload)
        .map_err(|error| PayloadError::Json {
            expected,
            reason: error.to_string(),
        })?;
    json.into_iter()
        .map(|(name, value)| {
            let value = OwnedValue::from_json(&value)
                .map_err(|reason| PayloadError::Value(format!("{name}: {reason}")))?;
            Ok((name, value))
        })
        .collect()
}

/// A timestamped batch: `[[unix_ms, value], ...]`, returned oldest first.
pub fn timestamped(payload: &[u8]) -> Result<Vec<(i64, OwnedValue)>, PayloadError> {
    let expected = "a JSON array of [unix_ms, value] pairs";
    let json_error = |reason: String| PayloadError::Json { expected, reason };
    let points: Vec<(i64, serde_json::Value)> =
        serde_json::from_slice(payload).map_err(|error| json_error(error.to_string()))?;
    if points.len() > MAX_BATCH_POINTS {
        return Err(PayloadError::TooManyPoints);
    }
    let mut points = points
        .into_iter()
        .map(|(at, value)| {
            let value = OwnedValue::from_json(&value)
                .map_err(|reason| PayloadError::Value(format!("at {at}: {reason}")))?;
            Ok((at, value))
        })
        .collect::<Result<Vec<_>, PayloadError>>()?;
    // Oldest first, so that the newest point is the one left as the latest value.
    points.sort_by_key(|(at, _)| *at);
    Ok(points)
}

/// The age to store a point measured at `at` with, `now` being the server's time: `None` when
/// `at` is further in the future than [`MAX_CLOCK_SKEW_MS`].
pub fn age_ms(at: i64, now: i64) -> Option<u32> {
    if at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
        return None;
    }
    Some(u32::try_from(now.saturating_sub(at).max(0)).unwrap_or(u32::MAX))
}

/// The datastream names of a `get/ds` payload: comma-separated, blanks ignored.
pub fn names(payload: &[u8]) -> Result<Vec<&str>, PayloadError> {
    Ok(text(payload)?
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OwnedScalar;

    #[test]
    fn values_are_text_with_parts_separated_by_nul() {
        assert_eq!(value(b"42").unwrap().0, vec![OwnedScalar::Int(42)]);
        let parts = value(b"1\x002.5\x00abc").unwrap();
        assert_eq!(parts.0.len(), 3);
        assert_eq!(value(&[0xff, 0xfe]), Err(PayloadError::NotText));
    }

    #[test]
    fn batches_and_timestamped_batches_are_read_oldest_first() {
        let written = batch(br#"{"Power": 1, "Mode": "eco"}"#).unwrap();
        assert_eq!(written.len(), 2);
        assert!(batch(b"[1]").is_err());
        let points = timestamped(b"[[2000, 5], [1000, 4]]").unwrap();
        assert_eq!(points[0].0, 1000);
        assert_eq!(points[1].1.0, vec![OwnedScalar::Int(5)]);
        assert!(timestamped(b"[[1000]]").is_err());
        assert!(timestamped(br#"[["x", 1]]"#).is_err());
    }

    #[test]
    fn spec_3_14_ages_are_clamped_and_future_times_refused() {
        assert_eq!(age_ms(1_000, 3_000), Some(2_000));
        assert_eq!(age_ms(3_000 + MAX_CLOCK_SKEW_MS, 3_000), Some(0));
        assert_eq!(age_ms(3_001 + MAX_CLOCK_SKEW_MS, 3_000), None);
        assert_eq!(age_ms(i64::MIN, 3_000), Some(u32::MAX));
    }

    #[test]
    fn get_lists_names_separated_by_commas() {
        assert_eq!(names(b"Power, LED,,").unwrap(), vec!["Power", "LED"]);
    }
}
