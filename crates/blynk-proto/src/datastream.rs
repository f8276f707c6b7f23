//! The datastream model: what a pin of a template holds, and the validation every write passes.
//!
//! The device library and the server share this one definition, so a value the device would
//! accept is the value the server stores: numbers are clamped to `min`/`max` as Blynk does, and a
//! value of the wrong type is refused with an error naming the pin and the part.

use serde::{Deserialize, Serialize};

use crate::pin::Pin;
use crate::value::{Scalar, Value};

/// The type of the values a datastream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DatastreamType {
    /// Whole numbers; a double with no fractional part is accepted as one.
    Integer,
    /// Numbers; integers are accepted and kept as doubles.
    Double,
    /// Any text; numbers are accepted as they would print.
    String,
    /// A whole number naming one of a set of options (`min..=max`).
    Enum,
}

/// Whether a datastream is a state to restore or a momentary command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DatastreamKind {
    /// The latest value is the truth and is restored on reconnect (the default).
    State,
    /// A momentary action: delivered at most once, while the device is connected or within
    /// `ttl_seconds` of the write, and never replayed from a stored value.
    Command {
        /// How long an undelivered command stays pending.
        ttl_seconds: u32,
    },
}

/// The description of one datastream of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Datastream<'a> {
    /// The pin it is bound to.
    pub pin: Pin,
    /// A name for people.
    pub name: &'a str,
    /// The type of its values.
    pub value_type: DatastreamType,
    /// Numbers below are raised to it.
    pub min: Option<f64>,
    /// Numbers above are lowered to it.
    pub max: Option<f64>,
    /// What a sync returns before any value was stored.
    #[serde(borrow)]
    pub default: Option<Value<'a>>,
    /// "Sync with latest server value": returned by `sync_all` and re-sent on reconnect.
    pub sync: bool,
    /// State or command.
    pub kind: DatastreamKind,
}

/// Why a value was refused by a datastream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A part of the value is not of the datastream's type.
    #[error("{pin} holds {expected:?} values; part {part} of the value is not one")]
    WrongType {
        /// The pin written.
        pin: Pin,
        /// The datastream's type.
        expected: DatastreamType,
        /// The index of the offending part, from 0.
        part: usize,
    },
    /// A text part holds a `\0`: a classic device would read it as two parts.
    #[error("{pin}: part {part} of the value holds a NUL character, which is not allowed in text")]
    NulInText {
        /// The pin written.
        pin: Pin,
        /// The index of the offending part, from 0.
        part: usize,
    },
    /// The last part is empty text: a classic frame cannot carry it (its body would end in
    /// the separator, which readers drop).
    #[error(
        "{pin}: the last part of the value is empty text, which a classic device cannot receive"
    )]
    EmptyLastText {
        /// The pin written.
        pin: Pin,
    },
    /// The write went to another pin than the datastream's.
    #[error("value for {written} checked against the datastream of {datastream}")]
    WrongPin {
        /// The pin written.
        written: Pin,
        /// The datastream's pin.
        datastream: Pin,
    },
}

impl<'a> Datastream<'a> {
    /// A state datastream with no bounds, no default and no sync flag.
    pub fn new(pin: Pin, name: &'a str, value_type: DatastreamType) -> Self {
        Datastream {
            pin,
            name,
            value_type,
            min: None,
            max: None,
            default: None,
            sync: false,
            kind: DatastreamKind::State,
        }
    }

    /// Whether the datastream is a momentary command.
    pub fn is_command(&self) -> bool {
        matches!(self.kind, DatastreamKind::Command { .. })
    }

    /// Checks `value` against the type and brings numbers into `min..=max`.
    ///
    /// Returns the value to store: integers stay integers (clamped and rounded toward the
    /// bounds), doubles in a `Double` datastream stay doubles, text is only accepted by `String`.
    pub fn validate<'v>(
        &self,
        pin: Pin,
        mut value: Value<'v>,
    ) -> Result<Value<'v>, ValidationError> {
        if pin != self.pin {
            return Err(ValidationError::WrongPin {
                written: pin,
                datastream: self.pin,
            });
        }
        check_text(pin, &value)?;
        for (part, scalar) in value.parts_mut().iter_mut().enumerate() {
            let wrong_type = ValidationError::WrongType {
                pin,
                expected: self.value_type,
                part,
            };
            *scalar = match (self.value_type, *scalar) {
                (DatastreamType::String, any) => any,
                (DatastreamType::Double, Scalar::Int(int)) => {
                    Scalar::Double(self.clamp(int as f64))
                }
                (DatastreamType::Double, Scalar::Double(double)) => {
                    Scalar::Double(self.clamp(double))
                }
                (DatastreamType::Integer | DatastreamType::Enum, Scalar::Int(int)) => {
                    Scalar::Int(self.clamp_int(int))
                }
                (DatastreamType::Integer | DatastreamType::Enum, Scalar::Double(double))
                    if is_whole(double) =>
                {
                    Scalar::Int(self.clamp_int(double as i64))
                }
                _ => return Err(wrong_type),
            };
        }
        Ok(value)
    }

    fn clamp(&self, number: f64) -> f64 {
        let raised = match self.min {
            Some(min) if number < min => min,
            _ => number,
        };
        match self.max {
            Some(max) if raised > max => max,
            _ => raised,
        }
    }

    fn clamp_int(&self, number: i64) -> i64 {
        let raised = match self.min {
            Some(min) if (number as f64) < min => ceil(min),
            _ => number,
        };
        match self.max {
            Some(max) if (raised as f64) > max => floor(max),
            _ => raised,
        }
    }
}

/// Refuses what a classic frame cannot carry: a NUL inside a text part, an empty last part.
/// Every write passes here, so no value a device could misread is ever stored or forwarded.
fn check_text(pin: Pin, value: &Value<'_>) -> Result<(), ValidationError> {
    for (part, scalar) in value.parts().iter().enumerate() {
        if let Scalar::Text(text) = scalar
            && text.as_str().contains('\0')
        {
            return Err(ValidationError::NulInText { pin, part });
        }
    }
    match value.parts().last() {
        Some(Scalar::Text(text)) if text.as_str().is_empty() => {
            Err(ValidationError::EmptyLastText { pin })
        }
        _ => Ok(()),
    }
}

/// Whether `number` is a whole number that an `i64` holds exactly (`core` has no `fract`).
fn is_whole(number: f64) -> bool {
    number.abs() < 9.0e15 && (number as i64) as f64 == number
}

/// The smallest whole number not below `number`, saturating at the `i64` range.
fn ceil(number: f64) -> i64 {
    let truncated = number as i64;
    if (truncated as f64) < number {
        truncated.saturating_add(1)
    } else {
        truncated
    }
}

/// The largest whole number not above `number`, saturating at the `i64` range.
fn floor(number: f64) -> i64 {
    let truncated = number as i64;
    if (truncated as f64) > number {
        truncated.saturating_sub(1)
    } else {
        truncated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led() -> Datastream<'static> {
        Datastream {
            min: Some(0.0),
            max: Some(255.0),
            sync: true,
            ..Datastream::new(Pin::Virtual(1), "LED", DatastreamType::Integer)
        }
    }

    #[test]
    fn spec_3_1_numbers_are_clamped_to_min_and_max() {
        let led = led();
        let high = led.validate(Pin::Virtual(1), Value::int(300)).unwrap();
        assert_eq!(high.parts(), &[Scalar::Int(255)]);
        let low = led.validate(Pin::Virtual(1), Value::int(-4)).unwrap();
        assert_eq!(low.parts(), &[Scalar::Int(0)]);
        let double = Datastream {
            max: Some(1.5),
            ..Datastream::new(Pin::Virtual(2), "t", DatastreamType::Double)
        };
        let clamped = double.validate(Pin::Virtual(2), Value::int(7)).unwrap();
        assert_eq!(clamped.parts(), &[Scalar::Double(1.5)]);
    }

    #[test]
    fn spec_3_1_wrong_type_is_rejected_with_pin_and_part() {
        let led = led();
        let text = Value::text("on").unwrap();
        assert_eq!(
            led.validate(Pin::Virtual(1), text),
            Err(ValidationError::WrongType {
                pin: Pin::Virtual(1),
                expected: DatastreamType::Integer,
                part: 0
            })
        );
        let fractional = Value::double(2.5).unwrap();
        assert!(led.validate(Pin::Virtual(1), fractional).is_err());
        let whole = Value::double(2.0).unwrap();
        assert_eq!(
            led.validate(Pin::Virtual(1), whole).unwrap().parts(),
            &[Scalar::Int(2)]
        );
    }

    #[test]
    fn string_datastream_accepts_every_part_unchanged() {
        let label = Datastream::new(Pin::Virtual(3), "label", DatastreamType::String);
        let value = Value::from_classic_parts(["1", "2.5", "abc"]).unwrap();
        assert_eq!(label.validate(Pin::Virtual(3), value.clone()), Ok(value));
    }

    #[test]
    fn spec_6_a_nul_inside_text_and_an_empty_last_part_are_refused() {
        extern crate std;
        use std::string::ToString;
        let label = Datastream::new(Pin::Virtual(3), "label", DatastreamType::String);
        let nul = Value::from_classic_parts(["ok", "x\0y"]).unwrap();
        assert_eq!(
            label.validate(Pin::Virtual(3), nul),
            Err(ValidationError::NulInText {
                pin: Pin::Virtual(3),
                part: 1
            })
        );
        let empty_last = Value::from_classic_parts(["a", ""]).unwrap();
        let refused = label.validate(Pin::Virtual(3), empty_last).unwrap_err();
        assert_eq!(
            refused,
            ValidationError::EmptyLastText {
                pin: Pin::Virtual(3)
            }
        );
        assert!(refused.to_string().starts_with("V3: "), "{refused}");
        let empty_first = Value::from_classic_parts(["", "a"]).unwrap();
        assert!(label.validate(Pin::Virtual(3), empty_first).is_ok());
    }
}
