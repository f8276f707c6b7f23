//! Values written to pins: one or more parts, each an integer, a double or a text.
//!
//! Blynk lets firmware write several values at once (`virtualWrite(V2, 1, 2.5, "abc")`); a
//! [`Value`] keeps those parts in order. Text parts borrow from the buffer they were decoded from.

use core::fmt;
use serde::de::{self, Deserialize, Deserializer};
use serde::{Serialize, Serializer};

use crate::text::{BoundedStr, TextError};
use crate::{MAX_TEXT_LEN, MAX_VALUE_PARTS};

/// The text of one value part.
pub type Text<'a> = BoundedStr<'a, MAX_TEXT_LEN>;

/// One part of a value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub enum Scalar<'a> {
    /// A whole number.
    Int(i64),
    /// A finite floating-point number.
    Double(f64),
    /// UTF-8 text of at most [`MAX_TEXT_LEN`] bytes.
    Text(#[serde(borrow)] Text<'a>),
}

impl<'a> Scalar<'a> {
    /// Reads a part the way the classic protocol sends it, as text: a decimal integer becomes
    /// [`Scalar::Int`], a finite decimal number [`Scalar::Double`], anything else stays text.
    pub fn from_classic_text(text: &'a str) -> Result<Self, ValueError> {
        if let Ok(int) = text.parse::<i64>() {
            return Ok(Scalar::Int(int));
        }
        if looks_numeric(text)
            && let Ok(double) = text.parse::<f64>()
            && double.is_finite()
        {
            return Ok(Scalar::Double(double));
        }
        Ok(Scalar::Text(Text::new(text)?))
    }

    /// The number this part holds, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::Int(int) => Some(int as f64),
            Scalar::Double(double) => Some(double),
            Scalar::Text(_) => None,
        }
    }

    fn check(&self) -> Result<(), ValueError> {
        match self {
            Scalar::Double(double) if !double.is_finite() => Err(ValueError::NotFinite),
            _ => Ok(()),
        }
    }
}

/// Only plain decimal notation counts as a number: `inf`, `nan` and `1e5` stay text, as they
/// would in the classic server, which kept every value as the string the device sent.
fn looks_numeric(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|&b| b == b'.').count() <= 1
        && digits.bytes().any(|b| b.is_ascii_digit())
}

impl fmt::Display for Scalar<'_> {
    /// Prints the part as the classic protocol carries it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(int) => write!(f, "{int}"),
            Scalar::Double(double) => write!(f, "{double}"),
            Scalar::Text(text) => f.write_str(text.as_str()),
        }
    }
}

/// Why a value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A value needs at least one part.
    #[error("a value needs at least one part")]
    Empty,
    /// More parts than [`MAX_VALUE_PARTS`].
    #[error("a value holds at most {max} parts")]
    TooManyParts {
        /// The bound.
        max: usize,
    },
    /// A text part is longer than [`MAX_TEXT_LEN`].
    #[error("a text part is {len} bytes long, the most allowed is {max}")]
    TextTooLong {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A double is NaN or infinite.
    #[error("a number must be finite")]
    NotFinite,
}

impl From<TextError> for ValueError {
    fn from(error: TextError) -> Self {
        match error {
            TextError::TooLong { len, max } => ValueError::TextTooLong { len, max },
            TextError::BadToken => ValueError::Empty,
        }
    }
}

/// A value of a pin: 1 to [`MAX_VALUE_PARTS`] parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Value<'a> {
    parts: heapless::Vec<Scalar<'a>, MAX_VALUE_PARTS>,
}

impl<'a> Value<'a> {
    /// A value of one integer.
    pub fn int(int: i64) -> Self {
        Self::one(Scalar::Int(int))
    }

    /// A value of one double; refuses NaN and infinities.
    pub fn double(double: f64) -> Result<Self, ValueError> {
        let scalar = Scalar::Double(double);
        scalar.check()?;
        Ok(Self::one(scalar))
    }

    /// A value of one text part.
    pub fn text(text: &'a str) -> Result<Self, ValueError> {
        Ok(Self::one(Scalar::Text(Text::new(text)?)))
    }

    /// A value made of `parts`, in order.
    pub fn from_parts(parts: &[Scalar<'a>]) -> Result<Self, ValueError> {
        if parts.is_empty() {
            return Err(ValueError::Empty);
        }
        for part in parts {
            part.check()?;
        }
        let parts = heapless::Vec::from_slice(parts).map_err(|_| ValueError::TooManyParts {
            max: MAX_VALUE_PARTS,
        })?;
        Ok(Value { parts })
    }

    /// Reads the `\0`-separated text parts of a classic body, e.g. `["1", "2.5", "abc"]`.
    pub fn from_classic_parts<I>(parts: I) -> Result<Self, ValueError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut value = heapless::Vec::new();
        for text in parts {
            value
                .push(Scalar::from_classic_text(text)?)
                .map_err(|_| ValueError::TooManyParts {
                    max: MAX_VALUE_PARTS,
                })?;
        }
        if value.is_empty() {
            return Err(ValueError::Empty);
        }
        Ok(Value { parts: value })
    }

    fn one(scalar: Scalar<'a>) -> Self {
        let mut parts = heapless::Vec::new();
        // A fresh vector always has room for one part (MAX_VALUE_PARTS >= 1 is asserted below).
        let _ = parts.push(scalar);
        Value { parts }
    }

    /// The parts, in order; never empty.
    pub fn parts(&self) -> &[Scalar<'a>] {
        &self.parts
    }

    /// The first part.
    pub fn first(&self) -> Option<&Scalar<'a>> {
        self.parts.first()
    }

    /// The parts, for in-place normalisation (clamping) by the validator.
    pub(crate) fn parts_mut(&mut self) -> &mut [Scalar<'a>] {
        &mut self.parts
    }
}

const _: () = assert!(MAX_VALUE_PARTS >= 1);

impl fmt::Display for Value<'_> {
    /// Prints the parts separated by commas, for people (logs, the command line).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, part) in self.parts.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{part}")?;
        }
        Ok(())
    }
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.parts.serialize(serializer)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Value<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let parts = heapless::Vec::<Scalar<'a>, MAX_VALUE_PARTS>::deserialize(deserializer)?;
        if parts.is_empty() {
            return Err(de::Error::invalid_length(0, &"at least one part"));
        }
        if parts.iter().any(|part| part.check().is_err()) {
            return Err(de::Error::invalid_value(
                de::Unexpected::Other("NaN or infinity"),
                &"a finite number",
            ));
        }
        Ok(Value { parts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn classic_text_becomes_the_narrowest_scalar() {
        assert_eq!(Scalar::from_classic_text("42"), Ok(Scalar::Int(42)));
        assert_eq!(Scalar::from_classic_text("-7"), Ok(Scalar::Int(-7)));
        assert_eq!(
            Scalar::from_classic_text("2.5000000"),
            Ok(Scalar::Double(2.5))
        );
        for text in ["abc", "inf", "NaN", "1e5", "", ".", "1.2.3", "#FF0000"] {
            assert!(
                matches!(Scalar::from_classic_text(text), Ok(Scalar::Text(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn value_bounds_are_enforced() {
        assert_eq!(Value::from_parts(&[]), Err(ValueError::Empty));
        let nine = [Scalar::Int(1); MAX_VALUE_PARTS + 1];
        assert_eq!(
            Value::from_parts(&nine),
            Err(ValueError::TooManyParts {
                max: MAX_VALUE_PARTS
            })
        );
        assert_eq!(Value::double(f64::NAN), Err(ValueError::NotFinite));
        let long = "x".repeat(MAX_TEXT_LEN + 1);
        assert_eq!(
            Value::text(&long),
            Err(ValueError::TextTooLong {
                len: MAX_TEXT_LEN + 1,
                max: MAX_TEXT_LEN
            })
        );
    }

    #[test]
    fn multi_part_value_prints_every_part() {
        let value = Value::from_classic_parts(["1", "2.5", "abc"]).unwrap();
        assert_eq!(value.parts().len(), 3);
        assert_eq!(value.to_string(), "1,2.5,abc");
    }
}
