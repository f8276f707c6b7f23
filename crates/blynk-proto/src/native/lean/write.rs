//! The writer of the lean codec: the seven messages a device sends, as frames, byte for byte
//! what [`encode`](crate::native::encode) writes for them.
//!
//! Writes, properties and events are built from value bytes encoded beforehand ([`Writer::value`],
//! [`property_body`], [`event_body`]), so that a device's outgoing queue can keep a message's
//! wire bytes and copy them into a frame as they are, with the id and age of the moment it is
//! sent.

use super::variant;
use crate::native::frame::write_header;
use crate::native::{HEADER_LEN, Login, MAX_FRAME, code};
#[cfg(doc)]
use crate::native::{SyncPins, SyncRequest};
use crate::{Pin, Scalar, Value};

/// The output did not have room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Writes postcard-encoded fields into a slice, or only counts them.
#[derive(Debug)]
pub struct Writer<'o> {
    out: Option<&'o mut [u8]>,
    pos: usize,
}

impl<'o> Writer<'o> {
    /// A writer into `out`.
    pub fn new(out: &'o mut [u8]) -> Self {
        Writer {
            out: Some(out),
            pos: 0,
        }
    }

    /// A writer that only counts the bytes it would write.
    pub fn counting() -> Self {
        Writer { out: None, pos: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<(), Full> {
        let end = self.pos + bytes.len();
        if let Some(out) = self.out.as_deref_mut() {
            out.get_mut(self.pos..end)
                .ok_or(Full)?
                .copy_from_slice(bytes);
        }
        self.pos = end;
        Ok(())
    }

    fn byte(&mut self, byte: u8) -> Result<(), Full> {
        self.bytes(&[byte])
    }

    /// An unsigned LEB128 varint, as postcard writes `u16`, `u32`, `u64`, `usize` and variant
    /// indices.
    fn varint(&mut self, mut value: u64) -> Result<(), Full> {
        loop {
            let low = (value & 0x7F) as u8;
            value >>= 7;
            if value == 0 {
                return self.byte(low);
            }
            self.byte(low | 0x80)?;
        }
    }

    fn variant(&mut self, index: u32) -> Result<(), Full> {
        self.varint(u64::from(index))
    }

    fn bool(&mut self, value: bool) -> Result<(), Full> {
        self.byte(u8::from(value))
    }

    fn str(&mut self, text: &str) -> Result<(), Full> {
        self.varint(text.len() as u64)?;
        self.bytes(text.as_bytes())
    }

    fn option<T>(
        &mut self,
        value: Option<T>,
        write: impl FnOnce(&mut Self, T) -> Result<(), Full>,
    ) -> Result<(), Full> {
        match value {
            None => self.byte(0),
            Some(value) => {
                self.byte(1)?;
                write(self, value)
            }
        }
    }

    fn pin(&mut self, pin: Pin) -> Result<(), Full> {
        self.variant(match pin {
            Pin::Virtual(_) => variant::PIN_VIRTUAL,
            Pin::Digital(_) => variant::PIN_DIGITAL,
            Pin::Analog(_) => variant::PIN_ANALOG,
        })?;
        self.byte(pin.number())
    }

    /// A value: the part count, then each part (variant, then zigzag integer, little-endian
    /// double or string). These are the bytes [`write()`] takes.
    pub fn value(&mut self, value: &Value<'_>) -> Result<(), Full> {
        self.varint(value.parts().len() as u64)?;
        for part in value.parts() {
            match part {
                Scalar::Int(int) => {
                    self.variant(variant::SCALAR_INT)?;
                    self.varint(((int << 1) ^ (int >> 63)) as u64)?;
                }
                Scalar::Double(double) => {
                    self.variant(variant::SCALAR_DOUBLE)?;
                    self.bytes(&double.to_le_bytes())?;
                }
                Scalar::Text(text) => {
                    self.variant(variant::SCALAR_TEXT)?;
                    self.str(text.as_str())?;
                }
            }
        }
        Ok(())
    }
}

/// The fields of a [`Property`](crate::native::Property) after its pin: the name, then the
/// value. These are the bytes [`property`] takes.
pub fn property_body(w: &mut Writer<'_>, name: &str, value: &Value<'_>) -> Result<(), Full> {
    w.str(name)?;
    w.value(value)
}

/// The fields of an [`Event`](crate::native::Event) after its id: the code, then the optional
/// description. These are the bytes [`event`] takes.
pub fn event_body(w: &mut Writer<'_>, code: &str, description: Option<&str>) -> Result<(), Full> {
    w.str(code)?;
    w.option(description, Writer::str)
}

/// The property name at the start of bytes written by [`property_body`].
pub fn property_name(body: &[u8]) -> Option<&str> {
    super::read::Reader::new(body).text()
}

impl<'o> Writer<'o> {
    /// A writer of one frame at the start of `out`: the payload goes after the header's room,
    /// at most [`MAX_FRAME`] bytes of it. Straight-line code rather than a closure per
    /// message, which would make one copy of the framing per message in the firmware.
    fn frame(out: &'o mut [u8]) -> Result<Self, Full> {
        let room = out.len().min(HEADER_LEN + MAX_FRAME);
        if room < HEADER_LEN {
            return Err(Full);
        }
        Ok(Writer {
            out: out.get_mut(..room),
            pos: HEADER_LEN,
        })
    }

    /// A frame begun with its message code and id, as every message a device sends but the
    /// login begins.
    fn message(out: &'o mut [u8], code: u8, id: u16) -> Result<Self, Full> {
        let mut w = Writer::frame(out)?;
        w.byte(code)?;
        w.varint(u64::from(id))?;
        Ok(w)
    }

    /// Fills the header of a frame begun with [`Writer::frame`]; returns the frame's length.
    fn finish(self) -> Result<usize, Full> {
        let out = self.out.ok_or(Full)?;
        write_header(out, self.pos - HEADER_LEN).ok_or(Full)?;
        Ok(self.pos)
    }
}

/// A [`Login`] frame.
pub fn login(login: &Login<'_>, out: &mut [u8]) -> Result<usize, Full> {
    let mut w = Writer::frame(out)?;
    w.byte(code::LOGIN)?;
    w.byte(login.protocol)?;
    w.str(login.token.as_str())?;
    let info = &login.info;
    w.str(info.firmware.as_str())?;
    w.varint(u64::from(info.rx_buffer))?;
    w.varint(u64::from(info.heartbeat_seconds))?;
    w.bool(info.sync_on_connect)?;
    w.option(info.known_version, Writer::varint)?;
    w.finish()
}

/// A [`Ping`](crate::native::Ping) frame.
pub fn ping(id: u16, out: &mut [u8]) -> Result<usize, Full> {
    Writer::message(out, code::PING, id)?.finish()
}

/// A [`Pong`](crate::native::Pong) frame.
pub fn pong(id: u16, out: &mut [u8]) -> Result<usize, Full> {
    Writer::message(out, code::PONG, id)?.finish()
}

/// A [`SyncRequest`] frame of [`SyncPins::All`].
pub fn sync_all(id: u16, out: &mut [u8]) -> Result<usize, Full> {
    let mut w = Writer::message(out, code::SYNC_REQUEST, id)?;
    w.variant(variant::SYNC_ALL)?;
    w.finish()
}

/// A [`SyncRequest`] frame of [`SyncPins::Only`] these pins (at most
/// [`MAX_SYNC_PINS`](crate::MAX_SYNC_PINS) of them, which the caller keeps to). The pins are a
/// slice rather than a [`SyncRequest`], so that a device need not copy them into one.
pub fn sync_pins(id: u16, pins: &[Pin], out: &mut [u8]) -> Result<usize, Full> {
    let mut w = Writer::message(out, code::SYNC_REQUEST, id)?;
    w.variant(variant::SYNC_ONLY)?;
    w.varint(pins.len() as u64)?;
    for pin in pins {
        w.pin(*pin)?;
    }
    w.finish()
}

/// The most bytes a [`SyncRequest`] frame of [`SyncPins::Only`] takes besides its pins
/// (header, code, id, variant, pin count); each pin adds [`SYNC_REQUEST_PIN`].
pub const SYNC_REQUEST_ENVELOPE: usize = HEADER_LEN + 1 + 3 + 1 + 1;
/// The bytes one pin adds to a [`SyncRequest`] frame (variant, number).
pub const SYNC_REQUEST_PIN: usize = 2;
// The pin count fits one varint byte.
const _: () = assert!(crate::MAX_SYNC_PINS < 0x80);

/// A [`Write`](crate::native::Write) frame whose value was encoded by [`Writer::value`].
pub fn write(
    id: u16,
    pin: Pin,
    value: &[u8],
    age_ms: Option<u32>,
    out: &mut [u8],
) -> Result<usize, Full> {
    let mut w = Writer::message(out, code::WRITE, id)?;
    w.pin(pin)?;
    w.bytes(value)?;
    w.option(age_ms.map(u64::from), Writer::varint)?;
    w.finish()
}

/// A [`Property`](crate::native::Property) frame whose name and value were encoded by
/// [`property_body`].
pub fn property(id: u16, pin: Pin, body: &[u8], out: &mut [u8]) -> Result<usize, Full> {
    let mut w = Writer::message(out, code::PROPERTY, id)?;
    w.pin(pin)?;
    w.bytes(body)?;
    w.finish()
}

/// An [`Event`](crate::native::Event) frame whose code and description were encoded by
/// [`event_body`].
pub fn event(id: u16, body: &[u8], out: &mut [u8]) -> Result<usize, Full> {
    let mut w = Writer::message(out, code::EVENT, id)?;
    w.bytes(body)?;
    w.finish()
}
