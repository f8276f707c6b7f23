//! What a device may store as widget properties (SPEC 6): only on a pin bound to a datastream,
//! only the names widgets know, and a bounded size per pin, so a device token cannot grow the
//! server's memory and the device's details without bound.

use std::fmt;

use blynk_proto::Pin;

use crate::model::{OwnedScalar, OwnedValue, PropertyRecord, Template};

/// The property names a device may set (Blynk's widget properties, and `timezone` for the time
/// requests of classic devices). `docs/api.md` lists them too.
pub const KNOWN_PROPERTIES: &[&str] = &[
    "label",
    "color",
    "min",
    "max",
    "step",
    "onLabel",
    "offLabel",
    "labels",
    "onColor",
    "offColor",
    "onBackColor",
    "offBackColor",
    "textColor",
    "isDisabled",
    "isHidden",
    "url",
    "urls",
    "opacity",
    "scale",
    "rotation",
    "page",
    "fontSize",
    "isOnPlay",
    "timezone",
];

/// The most bytes one property value may take, its parts printed and separated.
pub const MAX_PROPERTY_VALUE_BYTES: usize = 255;

/// The most bytes the property values of one pin may take together.
pub const MAX_PROPERTY_BYTES_PER_PIN: usize = 2048;

/// Why a property was refused; the message names the pin and the property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyRefusal {
    /// No datastream is bound to the pin.
    NoDatastream {
        /// The pin.
        pin: Pin,
    },
    /// The name is not one of [`KNOWN_PROPERTIES`].
    UnknownName {
        /// The pin.
        pin: Pin,
        /// The name given (cut to a readable length).
        name: String,
    },
    /// The value is too long, or holds a NUL.
    BadValue {
        /// The pin.
        pin: Pin,
        /// The property.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The pin's properties would pass [`MAX_PROPERTY_BYTES_PER_PIN`].
    PinFull {
        /// The pin.
        pin: Pin,
    },
}

impl fmt::Display for PropertyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropertyRefusal::NoDatastream { pin } => write!(
                f,
                "{pin}: properties are only kept for pins bound to a datastream"
            ),
            PropertyRefusal::UnknownName { pin, name } => write!(
                f,
                "{pin}: `{name}` is not a known property (label, color, min, max, ...; see the API documentation)"
            ),
            PropertyRefusal::BadValue { pin, name, reason } => {
                write!(f, "{pin}: property `{name}`: {reason}")
            }
            PropertyRefusal::PinFull { pin } => write!(
                f,
                "{pin}: its properties would take more than {MAX_PROPERTY_BYTES_PER_PIN} bytes"
            ),
        }
    }
}

impl std::error::Error for PropertyRefusal {}

/// Checks `property` for a device of `template` that holds `existing` properties.
pub fn check(
    template: &Template,
    existing: &[PropertyRecord],
    property: &PropertyRecord,
) -> Result<(), PropertyRefusal> {
    let pin = property.pin;
    if template.datastream(pin).is_none() {
        return Err(PropertyRefusal::NoDatastream { pin });
    }
    if !KNOWN_PROPERTIES.contains(&property.name.as_str()) {
        let name: String = property.name.chars().take(32).collect();
        return Err(PropertyRefusal::UnknownName { pin, name });
    }
    let bad_value = |reason| PropertyRefusal::BadValue {
        pin,
        name: property.name.clone(),
        reason,
    };
    if property
        .value
        .0
        .iter()
        .any(|part| matches!(part, OwnedScalar::Text(text) if text.contains('\0')))
    {
        return Err(bad_value("a NUL character is not allowed in text"));
    }
    let size = value_bytes(&property.value);
    if size > MAX_PROPERTY_VALUE_BYTES {
        return Err(bad_value("the value is longer than 255 bytes"));
    }
    let others: usize = existing
        .iter()
        .filter(|other| other.pin == pin && other.name != property.name)
        .map(|other| value_bytes(&other.value))
        .sum();
    if others + size > MAX_PROPERTY_BYTES_PER_PIN {
        return Err(PropertyRefusal::PinFull { pin });
    }
    Ok(())
}

/// The bytes of a value as printed: its parts and one separator between each two.
fn value_bytes(value: &OwnedValue) -> usize {
    let parts = value.text_parts();
    parts.iter().map(String::len).sum::<usize>() + parts.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::light_template;

    fn record(pin: u8, name: &str, text: &str) -> PropertyRecord {
        PropertyRecord {
            pin: Pin::Virtual(pin),
            name: name.into(),
            value: OwnedValue(vec![OwnedScalar::Text(text.into())]),
        }
    }

    #[test]
    fn spec_6_properties_only_known_names_on_datastream_pins() {
        let light = light_template();
        assert_eq!(check(&light, &[], &record(0, "label", "Power")), Ok(()));
        assert_eq!(
            check(&light, &[], &record(200, "label", "x")),
            Err(PropertyRefusal::NoDatastream {
                pin: Pin::Virtual(200)
            })
        );
        let unknown = check(&light, &[], &record(0, "p12345", "x")).unwrap_err();
        assert!(
            unknown
                .to_string()
                .contains("`p12345` is not a known property")
        );
        assert!(check(&light, &[], &record(0, "label", "a\0b")).is_err());
        let long = "x".repeat(MAX_PROPERTY_VALUE_BYTES + 1);
        assert!(check(&light, &[], &record(0, "label", &long)).is_err());
    }

    #[test]
    fn spec_6_properties_of_a_pin_are_capped_in_bytes() {
        let light = light_template();
        let full_value = "x".repeat(MAX_PROPERTY_VALUE_BYTES);
        let mut existing = Vec::new();
        for name in KNOWN_PROPERTIES {
            let property = record(0, name, &full_value);
            if check(&light, &existing, &property).is_ok() {
                existing.push(property);
            }
        }
        let kept: usize = existing.iter().map(|p| value_bytes(&p.value)).sum();
        assert!(kept <= MAX_PROPERTY_BYTES_PER_PIN, "{kept}");
        assert_eq!(
            existing.len(),
            MAX_PROPERTY_BYTES_PER_PIN / MAX_PROPERTY_VALUE_BYTES
        );
        // Replacing a property already set is measured without its old value.
        assert_eq!(check(&light, &existing, &existing[0].clone()), Ok(()));
        // Another pin has a budget of its own.
        assert_eq!(check(&light, &existing, &record(1, "label", "LED")), Ok(()));
    }
}
