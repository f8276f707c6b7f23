//! Pins: virtual `V0..=V255`, digital `D0..=D63` and analog `A0..=A63`, as Blynk names them.

use core::fmt;
use core::str::FromStr;
use serde::{Deserialize, Serialize};

/// Highest digital pin number.
pub const MAX_DIGITAL_PIN: u8 = 63;
/// Highest analog pin number.
pub const MAX_ANALOG_PIN: u8 = 63;

/// One addressable pin of a device.
///
/// Virtual pins carry any value and are the datastreams of Blynk; digital and analog pins map
/// to the hardware pins of the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Pin {
    /// `V0..=V255`.
    Virtual(u8),
    /// `D0..=D63`.
    Digital(u8),
    /// `A0..=A63`.
    Analog(u8),
}

/// Why a pin name or number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PinParseError {
    /// The name does not start with `V`, `D` or `A`.
    #[error("pin name must start with V, D or A")]
    UnknownKind,
    /// The number part is not a decimal number.
    #[error("pin number is not a decimal number")]
    NotANumber,
    /// The number is above the highest pin of its kind.
    #[error("pin number {number} is above the highest, {max}")]
    OutOfRange {
        /// The number that was given.
        number: u32,
        /// The highest number allowed for this kind of pin.
        max: u8,
    },
}

impl Pin {
    /// Builds a digital pin, refusing numbers above [`MAX_DIGITAL_PIN`].
    pub fn digital(number: u32) -> Result<Self, PinParseError> {
        bounded(number, MAX_DIGITAL_PIN).map(Pin::Digital)
    }

    /// Builds an analog pin, refusing numbers above [`MAX_ANALOG_PIN`].
    pub fn analog(number: u32) -> Result<Self, PinParseError> {
        bounded(number, MAX_ANALOG_PIN).map(Pin::Analog)
    }

    /// Builds a virtual pin, refusing numbers above 255.
    pub fn virtual_pin(number: u32) -> Result<Self, PinParseError> {
        bounded(number, u8::MAX).map(Pin::Virtual)
    }

    /// The pin number without its kind.
    pub const fn number(self) -> u8 {
        match self {
            Pin::Virtual(n) | Pin::Digital(n) | Pin::Analog(n) => n,
        }
    }

    /// Whether this is a virtual pin.
    pub const fn is_virtual(self) -> bool {
        matches!(self, Pin::Virtual(_))
    }

    /// Whether the number is inside the range of its kind (decoded pins are checked with this).
    pub const fn is_valid(self) -> bool {
        match self {
            Pin::Virtual(_) => true,
            Pin::Digital(n) => n <= MAX_DIGITAL_PIN,
            Pin::Analog(n) => n <= MAX_ANALOG_PIN,
        }
    }
}

fn bounded(number: u32, max: u8) -> Result<u8, PinParseError> {
    match u8::try_from(number) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(PinParseError::OutOfRange { number, max }),
    }
}

/// Parses the decimal number of a pin: ASCII digits only, at most 10 of them.
pub(crate) fn parse_pin_number(text: &str) -> Result<u32, PinParseError> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PinParseError::NotANumber);
    }
    text.parse().map_err(|_| PinParseError::NotANumber)
}

impl FromStr for Pin {
    type Err = PinParseError;

    /// Parses `V1`, `v1`, `D13`, `A0`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let mut chars = name.chars();
        let kind = chars.next().ok_or(PinParseError::UnknownKind)?;
        let number = parse_pin_number(chars.as_str())?;
        match kind.to_ascii_uppercase() {
            'V' => Pin::virtual_pin(number),
            'D' => Pin::digital(number),
            'A' => Pin::analog(number),
            _ => Err(PinParseError::UnknownKind),
        }
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::Virtual(n) => write!(f, "V{n}"),
            Pin::Digital(n) => write!(f, "D{n}"),
            Pin::Analog(n) => write!(f, "A{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_kind() {
        for name in ["V0", "V255", "D13", "A63"] {
            let pin: Pin = name.parse().unwrap();
            let mut buf = heapless::String::<8>::new();
            core::fmt::write(&mut buf, format_args!("{pin}")).unwrap();
            assert_eq!(buf.as_str(), name);
        }
        assert_eq!("v7".parse::<Pin>(), Ok(Pin::Virtual(7)));
    }

    #[test]
    fn refuses_out_of_range_and_junk() {
        assert_eq!(
            "V256".parse::<Pin>(),
            Err(PinParseError::OutOfRange {
                number: 256,
                max: 255
            })
        );
        assert_eq!(
            "D64".parse::<Pin>(),
            Err(PinParseError::OutOfRange {
                number: 64,
                max: 63
            })
        );
        assert_eq!("X1".parse::<Pin>(), Err(PinParseError::UnknownKind));
        assert_eq!("V".parse::<Pin>(), Err(PinParseError::NotANumber));
        assert_eq!("V+1".parse::<Pin>(), Err(PinParseError::NotANumber));
        assert_eq!("".parse::<Pin>(), Err(PinParseError::UnknownKind));
    }
}
