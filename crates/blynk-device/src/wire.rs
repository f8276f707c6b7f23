//! A small writer for the frames a device sends, byte for byte the encoding of
//! `blynk_proto::native::encode` (postcard: varints, zigzag, length-prefixed strings; see
//! `docs/protocol.md`), without serde.
//!
//! Why not `native::encode`: it is generic over every message of the protocol, and linking it
//! costs a firmware some 6 KiB of flash for messages a device never sends. Writing the seven
//! device messages by hand costs a tenth of that, and lets the outgoing queue keep a value's
//! wire bytes and copy them into a frame as they are. Unit tests check every message against
//! `native::encode`, and decoding stays with `blynk-proto`.

use blynk_proto::native::{HEADER_LEN, MAX_FRAME, PROTOCOL_VERSION};
use blynk_proto::{Pin, Scalar, Value};

/// The output did not have room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// Message codes of the native protocol (the variant index of `Message`).
pub(crate) mod code {
    pub(crate) const LOGIN: u8 = 0;
    pub(crate) const PING: u8 = 2;
    pub(crate) const PONG: u8 = 3;
    pub(crate) const WRITE: u8 = 4;
    pub(crate) const SYNC_REQUEST: u8 = 6;
    pub(crate) const PROPERTY: u8 = 9;
    pub(crate) const EVENT: u8 = 10;
}

/// Writes postcard-encoded fields into a slice, or only counts them.
pub(crate) struct Writer<'o> {
    out: Option<&'o mut [u8]>,
    pos: usize,
}

impl<'o> Writer<'o> {
    pub(crate) fn new(out: &'o mut [u8]) -> Self {
        Writer {
            out: Some(out),
            pos: 0,
        }
    }

    /// A writer that only counts the bytes it would write.
    pub(crate) fn counting() -> Self {
        Writer { out: None, pos: 0 }
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> Result<(), Full> {
        let end = self.pos + bytes.len();
        if let Some(out) = self.out.as_deref_mut() {
            out.get_mut(self.pos..end)
                .ok_or(Full)?
                .copy_from_slice(bytes);
        }
        self.pos = end;
        Ok(())
    }

    pub(crate) fn byte(&mut self, byte: u8) -> Result<(), Full> {
        self.bytes(&[byte])
    }

    /// An unsigned LEB128 varint, as postcard writes `u16`, `u32` and `u64`.
    pub(crate) fn varint(&mut self, mut value: u64) -> Result<(), Full> {
        loop {
            let low = (value & 0x7F) as u8;
            value >>= 7;
            if value == 0 {
                return self.byte(low);
            }
            self.byte(low | 0x80)?;
        }
    }

    pub(crate) fn bool(&mut self, value: bool) -> Result<(), Full> {
        self.byte(u8::from(value))
    }

    pub(crate) fn str(&mut self, text: &str) -> Result<(), Full> {
        self.varint(text.len() as u64)?;
        self.bytes(text.as_bytes())
    }

    pub(crate) fn option_u64(&mut self, value: Option<u64>) -> Result<(), Full> {
        match value {
            None => self.byte(0),
            Some(value) => {
                self.byte(1)?;
                self.varint(value)
            }
        }
    }

    pub(crate) fn pin(&mut self, pin: Pin) -> Result<(), Full> {
        let kind = match pin {
            Pin::Virtual(_) => 0,
            Pin::Digital(_) => 1,
            Pin::Analog(_) => 2,
        };
        self.byte(kind)?;
        self.byte(pin.number())
    }

    /// A value: the part count, then each part (variant, then zigzag integer, little-endian
    /// double or string).
    pub(crate) fn value(&mut self, value: &Value<'_>) -> Result<(), Full> {
        self.varint(value.parts().len() as u64)?;
        for part in value.parts() {
            match part {
                Scalar::Int(int) => {
                    self.byte(0)?;
                    self.varint(((int << 1) ^ (int >> 63)) as u64)?;
                }
                Scalar::Double(double) => {
                    self.byte(1)?;
                    self.bytes(&double.to_le_bytes())?;
                }
                Scalar::Text(text) => {
                    self.byte(2)?;
                    self.str(text.as_str())?;
                }
            }
        }
        Ok(())
    }
}

/// Builds one frame: reserves the header, lets `body` write the payload, then fills the
/// header in; returns the frame's length.
pub(crate) fn frame(
    out: &mut [u8],
    body: impl FnOnce(&mut Writer<'_>) -> Result<(), Full>,
) -> Result<usize, Full> {
    let (header, payload) = out.split_at_mut_checked(HEADER_LEN).ok_or(Full)?;
    let room = payload.len().min(MAX_FRAME);
    let mut writer = Writer::new(payload.get_mut(..room).ok_or(Full)?);
    body(&mut writer)?;
    let len = writer.len();
    let [version, high, low] = header else {
        return Err(Full);
    };
    *version = PROTOCOL_VERSION;
    // `len <= MAX_FRAME <= u16::MAX` (asserted in blynk-proto).
    [*high, *low] = (len as u16).to_be_bytes();
    Ok(HEADER_LEN + len)
}

/// Reads a string written by [`Writer::str`] from the start of `bytes`; returns it and the
/// rest. Only for bytes this library wrote.
pub(crate) fn read_str(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let mut len: usize = 0;
    let mut shift = 0;
    let mut rest = bytes;
    loop {
        let (&byte, tail) = rest.split_first()?;
        rest = tail;
        len |= usize::from(byte & 0x7F).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let (text, rest) = rest.split_at_checked(len)?;
    Some((core::str::from_utf8(text).ok()?, rest))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use blynk_proto::native::{
        self, DeviceInfo, Event, Login, Message, Ping, Pong, Property, SyncPins, SyncRequest, Write,
    };
    use blynk_proto::text::{BoundedStr, Token};

    fn reference(message: &Message<'_>) -> Vec<u8> {
        let mut out = [0u8; 600];
        native::encode(message, &mut out).unwrap().to_vec()
    }

    fn ours(body: impl FnOnce(&mut Writer<'_>) -> Result<(), Full>) -> Vec<u8> {
        let mut out = [0u8; 600];
        let len = frame(&mut out, body).unwrap();
        out[..len].to_vec()
    }

    #[test]
    fn every_device_message_matches_blynk_proto_byte_for_byte() {
        let token = "abcdEFGH0123456789_-abcdefghijkl";
        let login = Message::Login(Login {
            protocol: 1,
            token: Token::new(token).unwrap(),
            info: DeviceInfo {
                firmware: BoundedStr::new("1.2.3").unwrap(),
                rx_buffer: 1024,
                heartbeat_seconds: 45,
                sync_on_connect: true,
                known_version: Some(300),
            },
        });
        assert_eq!(
            reference(&login),
            ours(|w| {
                w.byte(code::LOGIN)?;
                w.byte(1)?;
                w.str(token)?;
                w.str("1.2.3")?;
                w.varint(1024)?;
                w.varint(45)?;
                w.bool(true)?;
                w.option_u64(Some(300))
            })
        );
        let value = Value::from_parts(&[
            Scalar::Int(-70000),
            Scalar::Double(2.5),
            Scalar::Text(BoundedStr::new("abc").unwrap()),
            Scalar::Int(i64::MIN),
            Scalar::Int(i64::MAX),
        ])
        .unwrap();
        let write = Message::Write(Write {
            id: 300,
            pin: Pin::Analog(7),
            value: value.clone(),
            age_ms: Some(1500),
        });
        assert_eq!(
            reference(&write),
            ours(|w| {
                w.byte(code::WRITE)?;
                w.varint(300)?;
                w.pin(Pin::Analog(7))?;
                w.value(&value)?;
                w.option_u64(Some(1500))
            })
        );
        let mut pins = heapless::Vec::new();
        pins.push(Pin::Virtual(200)).unwrap();
        pins.push(Pin::Digital(3)).unwrap();
        let sync = Message::SyncRequest(SyncRequest {
            id: 9,
            pins: SyncPins::Only(pins),
        });
        assert_eq!(
            reference(&sync),
            ours(|w| {
                w.byte(code::SYNC_REQUEST)?;
                w.varint(9)?;
                w.byte(1)?;
                w.varint(2)?;
                w.pin(Pin::Virtual(200))?;
                w.pin(Pin::Digital(3))
            })
        );
        let property = Message::Property(Property {
            id: 2,
            pin: Pin::Virtual(1),
            name: BoundedStr::new("color").unwrap(),
            value: Value::text("#FF0000").unwrap(),
        });
        assert_eq!(
            reference(&property),
            ours(|w| {
                w.byte(code::PROPERTY)?;
                w.varint(2)?;
                w.pin(Pin::Virtual(1))?;
                w.str("color")?;
                w.value(&Value::text("#FF0000").unwrap())
            })
        );
        let event = Message::Event(Event {
            id: 3,
            code: BoundedStr::new("overheat").unwrap(),
            description: Some(BoundedStr::new("too hot").unwrap()),
        });
        assert_eq!(
            reference(&event),
            ours(|w| {
                w.byte(code::EVENT)?;
                w.varint(3)?;
                w.str("overheat")?;
                w.byte(1)?;
                w.str("too hot")
            })
        );
        assert_eq!(
            reference(&Message::Ping(Ping { id: 65535 })),
            ours(|w| {
                w.byte(code::PING)?;
                w.varint(65535)
            })
        );
        assert_eq!(
            reference(&Message::Pong(Pong { id: 0 })),
            ours(|w| {
                w.byte(code::PONG)?;
                w.varint(0)
            })
        );
    }

    #[test]
    fn a_full_output_is_an_error_and_strings_read_back() {
        let mut out = [0u8; 5];
        assert_eq!(frame(&mut out, |w| w.str("too long")), Err(Full));
        let mut buffer = [0u8; 300];
        let mut writer = Writer::new(&mut buffer);
        let long = "x".repeat(200);
        writer.str(&long).unwrap();
        writer.byte(7).unwrap();
        let (text, rest) = read_str(&buffer).unwrap();
        assert_eq!((text, rest[0]), (long.as_str(), 7));
    }
}
