//! A decoder for the frames a device receives, giving exactly what
//! `blynk_proto::native::decode` gives for them, without serde.
//!
//! Why: the generic decoder of `blynk-proto` deserializes every message of the protocol, and
//! linking it costs a firmware some 6 KiB of flash for messages only a server receives. This one
//! reads the eight messages a server sends (login result, ping, pong, update, synced value, sync
//! complete, ack, error) with the same checks (varint widths, `bool` and `Option` tags, UTF-8,
//! string bounds, 1 to 8 finite value parts, no trailing bytes) and refuses the device's own
//! messages as malformed. A property test in `tests/all/session_props.rs` compares the two on
//! arbitrary bytes.

use blynk_proto::native::{
    Ack, Decoded, ErrorCode, ErrorReply, FrameError, HEADER_LEN, LoginRejection, LoginResult,
    MAX_FRAME, Message, PROTOCOL_VERSION, Ping, Pong, SyncComplete, SyncedValue, Update,
};
use blynk_proto::text::BoundedStr;
use blynk_proto::{MAX_VALUE_PARTS, Pin, Scalar, Value};

/// Reads postcard fields from a payload; `None` is "malformed".
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.bytes.split_at_checked(count)?;
        self.bytes = rest;
        Some(taken)
    }

    /// A varint of a `bits`-bit unsigned integer, as postcard reads it: at most
    /// `ceil(bits / 7)` bytes, and the last one may not carry more bits than remain.
    fn varint(&mut self, bits: u32) -> Option<u64> {
        let max_bytes = bits.div_ceil(7);
        let last_max = (1u8 << (bits % 7)) - 1;
        let mut value: u64 = 0;
        for index in 0..max_bytes {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7F).checked_shl(7 * index).unwrap_or(0);
            if byte & 0x80 == 0 {
                if index == max_bytes - 1 && byte > last_max {
                    return None;
                }
                return Some(value);
            }
        }
        None
    }

    fn u16(&mut self) -> Option<u16> {
        self.varint(16).and_then(|value| u16::try_from(value).ok())
    }

    fn u64(&mut self) -> Option<u64> {
        self.varint(64)
    }

    /// An enum's variant index (postcard writes it as a `u32` varint).
    fn variant(&mut self) -> Option<u32> {
        self.varint(32).and_then(|value| u32::try_from(value).ok())
    }

    /// A length (postcard writes `usize` varints, of the platform's width).
    fn len(&mut self) -> Option<usize> {
        self.varint(usize::BITS)
            .and_then(|value| usize::try_from(value).ok())
    }

    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn option<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.byte()? {
            0 => Some(None),
            1 => read(self).map(Some),
            _ => None,
        }
    }

    fn str<const N: usize>(&mut self) -> Option<BoundedStr<'a, N>> {
        let len = self.len()?;
        let text = core::str::from_utf8(self.take(len)?).ok()?;
        BoundedStr::new(text).ok()
    }

    fn pin(&mut self) -> Option<Pin> {
        let kind = self.variant()?;
        let number = self.byte()?;
        match kind {
            0 => Some(Pin::Virtual(number)),
            1 => Some(Pin::Digital(number)),
            2 => Some(Pin::Analog(number)),
            _ => None,
        }
    }

    fn value(&mut self) -> Option<Value<'a>> {
        let count = self.len()?;
        if count > MAX_VALUE_PARTS {
            return None;
        }
        let mut parts = heapless::Vec::<Scalar<'a>, MAX_VALUE_PARTS>::new();
        for _ in 0..count {
            let part = match self.variant()? {
                0 => {
                    let zigzag = self.u64()?;
                    Scalar::Int(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64))
                }
                1 => {
                    let bytes = self.take(8)?.first_chunk::<8>()?;
                    Scalar::Double(f64::from_le_bytes(*bytes))
                }
                2 => Scalar::Text(self.str()?),
                _ => return None,
            };
            parts.push(part).ok()?;
        }
        // Refuses an empty value and a NaN or infinity, as blynk-proto does.
        Value::from_parts(&parts).ok()
    }

    fn error_code(&mut self) -> Option<ErrorCode> {
        Some(match self.variant()? {
            0 => ErrorCode::IllegalCommand,
            1 => ErrorCode::UnknownPin,
            2 => ErrorCode::WrongType,
            3 => ErrorCode::RateLimited,
            4 => ErrorCode::NotLoggedIn,
            5 => ErrorCode::Internal,
            _ => return None,
        })
    }

    fn login_result(&mut self) -> Option<LoginResult> {
        Some(match self.variant()? {
            0 => LoginResult::Accepted {
                heartbeat_seconds: self.u16()?,
                version: self.u64()?,
                sync_follows: self.bool()?,
            },
            1 => LoginResult::Rejected(match self.variant()? {
                0 => LoginRejection::InvalidToken,
                1 => LoginRejection::UnsupportedVersion {
                    server: self.byte()?,
                },
                2 => LoginRejection::TooManyAttempts {
                    retry_after_seconds: self.u16()?,
                },
                3 => LoginRejection::ServerBusy,
                _ => return None,
            }),
            _ => return None,
        })
    }

    /// One message a server sends; `None` for anything else.
    fn message(&mut self) -> Option<Message<'a>> {
        Some(match self.variant()? {
            1 => Message::LoginResult(self.login_result()?),
            2 => Message::Ping(Ping { id: self.u16()? }),
            3 => Message::Pong(Pong { id: self.u16()? }),
            5 => Message::Update(Update {
                pin: self.pin()?,
                value: self.value()?,
                version: self.u64()?,
            }),
            7 => Message::SyncedValue(SyncedValue {
                id: self.u16()?,
                pin: self.pin()?,
                value: self.value()?,
                version: self.u64()?,
            }),
            8 => Message::SyncComplete(SyncComplete {
                id: self.u16()?,
                count: self.u16()?,
                version: self.u64()?,
            }),
            11 => Message::Ack(Ack {
                id: self.u16()?,
                version: self.option(Self::u64)?,
            }),
            12 => Message::Error(ErrorReply {
                id: self.u16()?,
                code: self.error_code()?,
                detail: self.str()?,
            }),
            _ => return None,
        })
    }
}

/// Decodes one frame from the start of `buffer`, like `blynk_proto::native::decode`, for the
/// messages a server sends; the device's own messages are [`FrameError::Malformed`].
pub(crate) fn decode(buffer: &[u8]) -> Result<Decoded<'_>, FrameError> {
    let Some(&version) = buffer.first() else {
        return Ok(Decoded::NeedMore);
    };
    if version != PROTOCOL_VERSION {
        return Err(FrameError::BadVersion {
            got: version,
            expected: PROTOCOL_VERSION,
        });
    }
    let Some(&[_, high, low]) = buffer.first_chunk::<HEADER_LEN>() else {
        return Ok(Decoded::NeedMore);
    };
    let len = usize::from(u16::from_be_bytes([high, low]));
    if len > MAX_FRAME {
        return Err(FrameError::FrameTooLong {
            len,
            max: MAX_FRAME,
        });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let Some(payload) = buffer.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(Decoded::NeedMore);
    };
    let code = payload.first().copied().unwrap_or_default();
    let mut reader = Reader { bytes: payload };
    match reader.message() {
        Some(message) if reader.bytes.is_empty() => Ok(Decoded::Frame {
            message,
            consumed: HEADER_LEN + len,
        }),
        Some(_) => Err(FrameError::TrailingBytes {
            extra: reader.bytes.len(),
        }),
        None => Err(FrameError::Malformed { len, code }),
    }
}

/// The same decoder, public for the differential property test against blynk-proto.
#[doc(hidden)]
pub fn decode_for_tests(buffer: &[u8]) -> Result<Decoded<'_>, FrameError> {
    decode(buffer)
}
