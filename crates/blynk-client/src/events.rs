//! The events the app WebSocket sends (`docs/api.md`), in either form: one event object per
//! message, or `{"type":"batch","events":[...]}`; a value event may stand for several changes of
//! its pin (`"coalesced": N`).
//!
//! Three readers, for three needs: [`for_each_event`] borrows from the message (a fast typed
//! view; anything it cannot read goes through a generic JSON value instead, so an unexpected
//! field never stops a reader), [`count_values`] only counts values and allocates nothing, and
//! [`json_events`] gives each event whole as JSON.

use serde::Deserialize;
use serde_json::Value;

/// The fields of an app event the typed view looks at.
#[derive(Debug, Default, Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: &'a str,
    #[serde(default)]
    device: Option<i64>,
    #[serde(borrow, default)]
    pin: Option<&'a str>,
    #[serde(default)]
    value: Option<i64>,
    #[serde(default)]
    coalesced: Option<u64>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(borrow, default)]
    status: Option<&'a str>,
    #[serde(borrow, default)]
    events: Option<Vec<Event<'a>>>,
}

/// One event, in the typed view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEvent<'a> {
    /// A pin's new integer value; `coalesced` is how many changes it stands for (1 when the
    /// server did not say). A value that is not an integer is [`AppEvent::Other`] here (read it
    /// with [`json_events`]).
    Value {
        /// The device's id.
        device: i64,
        /// The pin, e.g. `V3`.
        pin: &'a str,
        /// The value.
        value: i64,
        /// The changes of the pin it stands for.
        coalesced: u64,
    },
    /// A reply to a `write` request with a numeric `id`: `stored`, `pending`, `delivered`,
    /// `expired`, `superseded` or `error`.
    WriteReply {
        /// The request's id.
        id: u64,
        /// Its status.
        status: &'a str,
    },
    /// The answer to `watch`.
    Snapshot,
    /// Anything else (presence, property, event log, ...).
    Other,
}

fn visit<'a>(event: &Event<'a>, each: &mut impl FnMut(AppEvent<'a>)) {
    match event.kind {
        "batch" => {
            for inner in event.events.iter().flatten() {
                visit(inner, each);
            }
        }
        "value" => match (event.device, event.pin, event.value) {
            (Some(device), Some(pin), Some(value)) => each(AppEvent::Value {
                device,
                pin,
                value,
                coalesced: event.coalesced.unwrap_or(1).max(1),
            }),
            _ => each(AppEvent::Other),
        },
        "write" => match (event.id, event.status) {
            (Some(id), Some(status)) => each(AppEvent::WriteReply { id, status }),
            _ => each(AppEvent::Other),
        },
        "snapshot" => each(AppEvent::Snapshot),
        _ => each(AppEvent::Other),
    }
}

/// Calls `each` for every event of one WebSocket text message, in order; `false` when the
/// message was not JSON at all.
pub fn for_each_event(text: &[u8], mut each: impl FnMut(AppEvent<'_>)) -> bool {
    if let Ok(event) = serde_json::from_slice::<Event<'_>>(text) {
        visit(&event, &mut each);
        return true;
    }
    // Values that are not plain integers, escaped strings, ids that are strings: the slow path.
    let Ok(json) = serde_json::from_slice::<Value>(text) else {
        return false;
    };
    let events: Vec<&Value> = match json["type"].as_str() {
        Some("batch") => json["events"]
            .as_array()
            .map(|all| all.iter().collect())
            .unwrap_or_default(),
        _ => vec![&json],
    };
    for event in events {
        let parsed = Event {
            kind: event["type"].as_str().unwrap_or_default(),
            device: event["device"].as_i64(),
            pin: event["pin"].as_str(),
            value: event["value"].as_i64(),
            coalesced: event["coalesced"].as_u64(),
            id: event["id"].as_u64(),
            status: event["status"].as_str(),
            events: None,
        };
        visit(&parsed, &mut each);
    }
    true
}

/// The values one message accounts for, whether it is one event or a batch: each value event,
/// plus the older values of its pin it replaced (`"coalesced":N`). It scans the bytes as the
/// server writes them (compact JSON) and allocates nothing: the reader for counting many
/// thousand events a second.
pub fn count_values(text: &[u8]) -> u64 {
    let (value, coalesced) = (b"\"type\":\"value\"", b"\"coalesced\":");
    let mut count = 0;
    let mut rest = text;
    while let Some(at) = find(rest, value) {
        count += 1;
        rest = &rest[at + value.len()..];
    }
    let mut rest = text;
    while let Some(at) = find(rest, coalesced) {
        rest = &rest[at + coalesced.len()..];
        let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
        // The event itself is counted above; `coalesced` adds the older values it replaced.
        count += std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|number| number.parse::<u64>().ok())
            .unwrap_or(0);
    }
    count
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The events of one message, each with its JSON text: the message itself, or each event of a
/// batch in order (written again from the parsed JSON). Nothing for a message that is not JSON.
pub fn json_events(text: &str) -> Vec<(Value, String)> {
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    match message {
        Value::Object(mut batch) if batch.get("type").and_then(Value::as_str) == Some("batch") => {
            match batch.remove("events") {
                Some(Value::Array(events)) => events
                    .into_iter()
                    .map(|event| {
                        let text = event.to_string();
                        (event, text)
                    })
                    .collect(),
                _ => Vec::new(),
            }
        }
        event => vec![(event, text.to_owned())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> Vec<String> {
        let mut seen = Vec::new();
        assert!(for_each_event(text.as_bytes(), |event| seen.push(format!("{event:?}"))));
        seen
    }

    #[test]
    fn a_single_event_and_a_batch_read_alike() {
        let one = r#"{"type":"value","device":3,"pin":"V2","value":7,"version":9,"at":1,"origin":"device"}"#;
        let batch = format!(
            r#"{{"type":"batch","events":[{one},{{"type":"value","device":3,"pin":"V5","value":8,"coalesced":4}},{{"type":"presence","device":3,"online":true}}]}}"#
        );
        let first = r#"Value { device: 3, pin: "V2", value: 7, coalesced: 1 }"#;
        assert_eq!(typed(one), [first]);
        assert_eq!(
            typed(&batch),
            [
                first,
                r#"Value { device: 3, pin: "V5", value: 8, coalesced: 4 }"#,
                "Other"
            ]
        );
        assert_eq!(count_values(one.as_bytes()), 1);
        assert_eq!(count_values(batch.as_bytes()), 1 + 1 + 4);
    }

    #[test]
    fn write_replies_and_unusual_values_are_read() {
        assert_eq!(
            typed(r#"{"type":"write","id":12,"status":"stored","version":3}"#),
            [r#"WriteReply { id: 12, status: "stored" }"#]
        );
        assert_eq!(
            typed(r#"{"type":"value","device":1,"pin":"V0","value":"text"}"#),
            ["Other"]
        );
        // An escaped pin name cannot be borrowed: the slow path reads it.
        assert_eq!(
            typed(r#"{"type":"value","device":1,"pin":"V\u0031","value":2}"#),
            [r#"Value { device: 1, pin: "V1", value: 2, coalesced: 1 }"#]
        );
        assert!(!for_each_event(b"not json", |_| {}));
    }

    #[test]
    fn a_batch_gives_its_events_whole_in_order_and_a_lone_event_its_text() {
        let batch = r#"{"type":"batch","events":[{"type":"value","pin":"V1","value":1},{"type":"presence","online":true}]}"#;
        let events = json_events(batch);
        let kinds: Vec<&str> = events
            .iter()
            .map(|(event, _)| event["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["value", "presence"]);
        assert!(events.iter().all(|(_, text)| !text.contains("batch")));
        let alone = r#"{"type":"value", "pin":"V1"}"#;
        assert_eq!(json_events(alone)[0].1, alone);
        assert!(json_events("not json").is_empty());
    }
}
