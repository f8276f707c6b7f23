//! Reads what the app WebSocket sends, in either form: one event object per message, or
//! `{"type":"batch","events":[...]}`; a value event may stand for several changes of its pin
//! (`"coalesced": N`). The typed reader borrows from the message; anything it cannot read goes
//! through a generic JSON value instead, so an unexpected field never stops a measurement.

use serde::Deserialize;

/// The fields of an app event the generator looks at.
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

/// One event, as the scenarios see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEvent<'a> {
    /// A pin's new value (integers only: the load template has integer datastreams).
    /// `coalesced` is how many changes it stands for (1 when the server did not say).
    Value {
        device: i64,
        pin: u32,
        value: i64,
        coalesced: u64,
    },
    /// A reply to a `write` request: `stored`, `pending`, `delivered`, an error, ...
    WriteReply { id: u64, status: &'a str },
    /// The answer to `watch`.
    Snapshot,
    /// Anything else (presence, property, event log, ...).
    Other,
}

fn virtual_pin_number(pin: &str) -> Option<u32> {
    pin.strip_prefix('V')?.parse().ok()
}

fn visit<'a>(event: &Event<'a>, each: &mut impl FnMut(AppEvent<'a>)) {
    match event.kind {
        "batch" => {
            for inner in event.events.iter().flatten() {
                visit(inner, each);
            }
        }
        "value" => match (
            event.device,
            event.pin.and_then(virtual_pin_number),
            event.value,
        ) {
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

/// Calls `each` for every event of one WebSocket text message; `false` when the message was
/// not JSON at all.
pub fn for_each_event(text: &[u8], mut each: impl FnMut(AppEvent<'_>)) -> bool {
    if let Ok(event) = serde_json::from_slice::<Event<'_>>(text) {
        visit(&event, &mut each);
        return true;
    }
    // Values that are not plain integers, escaped strings, ids that are strings: the slow path.
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(text) else {
        return false;
    };
    let events: Vec<&serde_json::Value> = match json["type"].as_str() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn events_of(text: &str) -> Vec<String> {
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
        assert_eq!(
            events_of(one),
            ["Value { device: 3, pin: 2, value: 7, coalesced: 1 }"]
        );
        assert_eq!(
            events_of(&batch),
            [
                "Value { device: 3, pin: 2, value: 7, coalesced: 1 }",
                "Value { device: 3, pin: 5, value: 8, coalesced: 4 }",
                "Other"
            ]
        );
    }

    #[test]
    fn write_replies_and_unusual_values_are_read() {
        assert_eq!(
            events_of(r#"{"type":"write","id":12,"status":"stored","version":3}"#),
            [r#"WriteReply { id: 12, status: "stored" }"#]
        );
        assert_eq!(
            events_of(r#"{"type":"value","device":1,"pin":"V0","value":"text"}"#),
            ["Other"]
        );
    }
}
