//! HARDWARE (20) sub-commands and HARDWARE_SYNC (16) bodies, mapped onto [`Pin`] and [`Value`].

use core::num::NonZeroU16;

use super::body::Parts;
use super::frame::encode_frame;
use super::{BuildError, ClassicError, Command};
use crate::pin::{Pin, parse_pin_number};
use crate::value::Value;

/// A parsed HARDWARE body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardwareCommand<'a> {
    /// `vw\0pin\0v1[\0v2...]`: write a virtual pin.
    VirtualWrite {
        /// The pin number.
        pin: u8,
        /// The value parts, at least one.
        values: Parts<'a>,
    },
    /// `dw\0pin\0value`: write a digital pin.
    DigitalWrite {
        /// The pin number.
        pin: u8,
        /// The value.
        value: &'a str,
    },
    /// `aw\0pin\0value`: write an analog pin.
    AnalogWrite {
        /// The pin number.
        pin: u8,
        /// The value.
        value: &'a str,
    },
    /// `pm\0pin\0mode[\0pin\0mode...]`: set pin modes.
    PinMode {
        /// Pin/mode pairs.
        modes: Parts<'a>,
    },
    /// `vr\0pin`: read a virtual pin.
    VirtualRead {
        /// The pin number.
        pin: u8,
    },
    /// `dr\0pin`: read a digital pin.
    DigitalRead {
        /// The pin number.
        pin: u8,
    },
    /// `ar\0pin`: read an analog pin.
    AnalogRead {
        /// The pin number.
        pin: u8,
    },
}

impl<'a> HardwareCommand<'a> {
    /// Parses a HARDWARE body.
    pub fn parse(body: &'a [u8]) -> Result<Self, ClassicError> {
        let mut parts = Parts::new(body)?;
        let sub_command = parts.expect("sub-command")?;
        if sub_command == "pm" {
            return Ok(HardwareCommand::PinMode { modes: parts });
        }
        let pin_text = parts.expect("pin")?;
        let command = match sub_command {
            "vw" => {
                let pin = virtual_number(pin_text)?;
                if parts.is_empty() {
                    return Err(ClassicError::MissingPart { what: "value" });
                }
                HardwareCommand::VirtualWrite { pin, values: parts }
            }
            "dw" => HardwareCommand::DigitalWrite {
                pin: Pin::digital(parse_pin_number(pin_text)?)?.number(),
                value: parts.expect("value")?,
            },
            "aw" => HardwareCommand::AnalogWrite {
                pin: Pin::analog(parse_pin_number(pin_text)?)?.number(),
                value: parts.expect("value")?,
            },
            "vr" => HardwareCommand::VirtualRead {
                pin: virtual_number(pin_text)?,
            },
            "dr" => HardwareCommand::DigitalRead {
                pin: Pin::digital(parse_pin_number(pin_text)?)?.number(),
            },
            "ar" => HardwareCommand::AnalogRead {
                pin: Pin::analog(parse_pin_number(pin_text)?)?.number(),
            },
            _ => return Err(ClassicError::UnknownSubCommand),
        };
        Ok(command)
    }

    /// For a write (`vw`, `dw`, `aw`): the pin and the value in domain types.
    pub fn as_write(&self) -> Option<Result<(Pin, Value<'a>), ClassicError>> {
        let write = match *self {
            HardwareCommand::VirtualWrite { pin, values } => {
                Value::from_classic_parts(values).map(|value| (Pin::Virtual(pin), value))
            }
            HardwareCommand::DigitalWrite { pin, value } => {
                Value::from_classic_parts([value]).map(|value| (Pin::Digital(pin), value))
            }
            HardwareCommand::AnalogWrite { pin, value } => {
                Value::from_classic_parts([value]).map(|value| (Pin::Analog(pin), value))
            }
            _ => return None,
        };
        Some(write.map_err(ClassicError::from))
    }
}

fn virtual_number(text: &str) -> Result<u8, ClassicError> {
    Ok(Pin::virtual_pin(parse_pin_number(text)?)?.number())
}

/// The sub-command a write to `pin` travels as.
pub(super) const fn write_sub_command(pin: Pin) -> &'static str {
    match pin {
        Pin::Virtual(_) => "vw",
        Pin::Digital(_) => "dw",
        Pin::Analog(_) => "aw",
    }
}

/// Builds a HARDWARE write of `value` to `pin` (`vw`, `dw` or `aw` by the pin's kind).
pub fn encode_write<'o>(
    out: &'o mut [u8],
    id: NonZeroU16,
    max_body: usize,
    pin: Pin,
    value: &Value<'_>,
) -> Result<&'o [u8], BuildError> {
    encode_frame(out, Command::Hardware, id, max_body, |body| {
        body.part(write_sub_command(pin))?
            .part_display(pin.number())?
            .value(value)?;
        Ok(())
    })
}

/// A parsed HARDWARE_SYNC body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncRequest<'a> {
    /// Empty body: `syncAll()`.
    All,
    /// `vr\0p1\0p2...`: `syncVirtual(p1, p2, ...)`.
    Virtual(Parts<'a>),
}

impl<'a> SyncRequest<'a> {
    /// Parses a HARDWARE_SYNC body.
    pub fn parse(body: &'a [u8]) -> Result<Self, ClassicError> {
        let mut parts = Parts::new(body)?;
        match parts.next() {
            None => Ok(SyncRequest::All),
            Some("vr") if !parts.is_empty() => Ok(SyncRequest::Virtual(parts)),
            Some("vr") => Err(ClassicError::MissingPart { what: "pin" }),
            Some(_) => Err(ClassicError::UnknownSubCommand),
        }
    }

    /// For [`SyncRequest::Virtual`], the pins asked for, each checked.
    pub fn pins(&self) -> impl Iterator<Item = Result<Pin, ClassicError>> + 'a {
        let parts = match self {
            SyncRequest::All => None,
            SyncRequest::Virtual(parts) => Some(*parts),
        };
        parts
            .into_iter()
            .flatten()
            .map(|text| Ok(Pin::Virtual(virtual_number(text)?)))
    }
}

/// Builds a HARDWARE_SYNC request: all `sync` datastreams when `pins` is empty, else those
/// virtual pins.
pub fn encode_sync<'o>(
    out: &'o mut [u8],
    id: NonZeroU16,
    pins: &[u8],
) -> Result<&'o [u8], BuildError> {
    encode_frame(out, Command::HardwareSync, id, super::MAX_BODY, |body| {
        if !pins.is_empty() {
            body.part("vr")?;
            for pin in pins {
                body.part_display(pin)?;
            }
        }
        Ok(())
    })
}
