//! Blynk IoT's MQTT topics: what a device publishes (uplink), what it may subscribe to
//! (downlink), and how datastreams are named in them.

use blynk_proto::Pin;
use rumqttc::mqttbytes::{matches, valid_filter};

use crate::model::{DatastreamDef, Template};

/// Where app writes and sync replies for a datastream are published: `downlink/ds/<name>`.
pub const DOWNLINK_DS: &str = "downlink/ds/";
/// The end of a `get/ds` or `get/ds/all` answer (SPEC 3.7; Blynk itself has none).
pub const SYNC_DONE: &str = "downlink/get/ds/done";
/// Where refusals are published.
pub const ERROR: &str = "downlink/error";
/// Every topic the server publishes starts with this.
const DOWNLINK: &str = "downlink/";

/// A topic a device publishes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplink<'a> {
    /// `ds/<name>`: a write; the payload is the value, parts `\0`-separated.
    Write {
        /// The datastream, by name or pin.
        datastream: &'a str,
    },
    /// `batch_ds`: a JSON object of datastream name to value.
    Batch,
    /// `ds/<name>/timestamped_batch`: `[[unix_ms, value], ...]` (SPEC 3.14).
    TimestampedBatch {
        /// The datastream, by name or pin.
        datastream: &'a str,
    },
    /// `ds/<name>/prop/<property>`: a widget property; the payload is its value.
    Property {
        /// The datastream, by name or pin.
        datastream: &'a str,
        /// The property (`label`, `color`, ...).
        property: &'a str,
    },
    /// `event/<code>`: a logged event; the payload, if any, is its description.
    Event {
        /// The event's code.
        code: &'a str,
    },
    /// `get/ds`: the values of the comma-separated datastreams of the payload (SPEC 3.5).
    Get,
    /// `get/ds/all`: the values of every `sync` datastream (SPEC 3.4).
    GetAll,
}

/// Reads a topic a device published to; `None` when it is not one of Blynk's.
pub fn parse_uplink(topic: &str) -> Option<Uplink<'_>> {
    let non_empty = |text: &'_ str| !text.is_empty();
    match topic {
        "batch_ds" => return Some(Uplink::Batch),
        "get/ds" => return Some(Uplink::Get),
        "get/ds/all" => return Some(Uplink::GetAll),
        _ => {}
    }
    if let Some(code) = topic.strip_prefix("event/") {
        return non_empty(code).then_some(Uplink::Event { code });
    }
    let rest = topic.strip_prefix("ds/").filter(|rest| non_empty(rest))?;
    if let Some(datastream) = rest.strip_suffix("/timestamped_batch") {
        return non_empty(datastream).then_some(Uplink::TimestampedBatch { datastream });
    }
    if let Some((datastream, property)) = rest.rsplit_once("/prop/") {
        return (non_empty(datastream) && non_empty(property)).then_some(Uplink::Property {
            datastream,
            property,
        });
    }
    Some(Uplink::Write { datastream: rest })
}

/// The datastream a topic names: by its `name` first, else by pin (`V1`) as a convenience.
pub fn find_datastream<'t>(template: &'t Template, name: &str) -> Option<&'t DatastreamDef> {
    template
        .datastreams
        .iter()
        .find(|datastream| datastream.name == name)
        .or_else(|| {
            let pin: Pin = name.parse().ok()?;
            template.datastream(pin)
        })
}

/// The topic a datastream's values are published on.
pub fn value_topic(template: &Template, pin: Pin) -> String {
    match template.datastream(pin) {
        Some(datastream) => format!("{DOWNLINK_DS}{}", datastream.name),
        None => format!("{DOWNLINK_DS}{pin}"),
    }
}

/// Whether a device may subscribe to `filter`: a valid filter under `downlink/`, the only
/// topics the server publishes to. Wildcards elsewhere (`#`, `+/ds/+`) are refused.
pub fn allowed_filter(filter: &str) -> bool {
    filter.starts_with(DOWNLINK) && valid_filter(filter)
}

/// Whether a topic the server publishes matches a subscription filter.
pub fn filter_matches(topic: &str, filter: &str) -> bool {
    matches(topic, filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uplink_topics_are_read_as_blynk_names_them() {
        assert_eq!(
            parse_uplink("ds/Power"),
            Some(Uplink::Write {
                datastream: "Power"
            })
        );
        assert_eq!(parse_uplink("batch_ds"), Some(Uplink::Batch));
        assert_eq!(
            parse_uplink("ds/Temp/timestamped_batch"),
            Some(Uplink::TimestampedBatch { datastream: "Temp" })
        );
        assert_eq!(
            parse_uplink("ds/Temp/prop/color"),
            Some(Uplink::Property {
                datastream: "Temp",
                property: "color"
            })
        );
        assert_eq!(
            parse_uplink("event/overheat"),
            Some(Uplink::Event { code: "overheat" })
        );
        assert_eq!(parse_uplink("get/ds"), Some(Uplink::Get));
        assert_eq!(parse_uplink("get/ds/all"), Some(Uplink::GetAll));
        for bad in [
            "",
            "ds/",
            "event/",
            "ds//prop/x",
            "ds/x/prop/",
            "other",
            "/ds/x",
        ] {
            assert_eq!(parse_uplink(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_downlink_filters_are_allowed() {
        for good in [
            "downlink/#",
            "downlink/ds/+",
            "downlink/ds/Power",
            "downlink/error",
        ] {
            assert!(allowed_filter(good), "{good}");
        }
        for bad in ["#", "+/ds/+", "ds/Power", "downlink/#/x", "downlink/ds+"] {
            assert!(!allowed_filter(bad), "{bad}");
        }
        assert!(filter_matches("downlink/ds/Power", "downlink/ds/+"));
        assert!(filter_matches("downlink/get/ds/done", "downlink/#"));
        assert!(!filter_matches("downlink/error", "downlink/ds/+"));
    }
}
