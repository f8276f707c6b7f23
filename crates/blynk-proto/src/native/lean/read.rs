//! The reader of the lean codec: the eight messages a server sends, giving exactly what
//! [`decode`](crate::native::decode) gives for them.
//!
//! It makes the same checks (varint widths, `bool` and `Option` tags, UTF-8, string bounds, 1
//! to 8 finite value parts, no trailing bytes) and refuses a device's own messages (login,
//! write, sync request, property, event) as [`FrameError::Malformed`]: a device never receives
//! them.

use super::variant;
use crate::native::frame::split_frame;
use crate::native::{
    Ack, Decoded, ErrorCode, ErrorReply, FrameError, LoginRejection, LoginResult, MAX_FRAME,
    Message, Ping, Pong, SyncComplete, SyncedValue, Update, code,
};
use crate::text::BoundedStr;
use crate::{MAX_VALUE_PARTS, Pin, Scalar, Value};

/// Decodes one frame from the start of `buffer`, like [`decode`](crate::native::decode), for
/// the messages a server sends; a device's own messages are [`FrameError::Malformed`].
pub fn decode(buffer: &[u8]) -> Result<Decoded<'_>, FrameError> {
    decode_within(buffer, MAX_FRAME)
}

/// [`decode`] for a reader whose buffer holds payloads of at most `max` bytes: a longer frame
/// is [`FrameError::FrameTooLong`] as soon as its header is in.
// Kept out of line: inlined into a device's connection loop it took some 400 bytes more of
// flash on thumbv6m and 600 on thumbv7em (measured with `size/measure.sh` and `cargo xtask
// build`).
#[inline(never)]
pub fn decode_within(buffer: &[u8], max: usize) -> Result<Decoded<'_>, FrameError> {
    let Some((payload, consumed)) = split_frame(buffer, max)? else {
        return Ok(Decoded::NeedMore);
    };
    let mut reader = Reader::new(payload);
    match reader.message() {
        Some(message) if reader.bytes.is_empty() => Ok(Decoded::Frame { message, consumed }),
        Some(_) => Err(FrameError::TrailingBytes {
            extra: reader.bytes.len(),
        }),
        None => Err(FrameError::Malformed {
            len: payload.len(),
            code: payload.first().copied().unwrap_or_default(),
        }),
    }
}

/// Reads postcard fields from a payload; `None` is "malformed".
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

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

    /// An `Option<u64>`: a tag byte, then the value when the tag is 1.
    fn option_u64(&mut self) -> Option<Option<u64>> {
        match self.byte()? {
            0 => Some(None),
            1 => self.u64().map(Some),
            _ => None,
        }
    }

    /// A length-prefixed UTF-8 string.
    #[inline(never)]
    pub(super) fn text(&mut self) -> Option<&'a str> {
        let len = self.len()?;
        core::str::from_utf8(self.take(len)?).ok()
    }

    fn str<const N: usize>(&mut self) -> Option<BoundedStr<'a, N>> {
        BoundedStr::new(self.text()?).ok()
    }

    fn pin(&mut self) -> Option<Pin> {
        let kind = self.variant()?;
        let number = self.byte()?;
        match kind {
            variant::PIN_VIRTUAL => Some(Pin::Virtual(number)),
            variant::PIN_DIGITAL => Some(Pin::Digital(number)),
            variant::PIN_ANALOG => Some(Pin::Analog(number)),
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
                variant::SCALAR_INT => {
                    let zigzag = self.u64()?;
                    Scalar::Int(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64))
                }
                variant::SCALAR_DOUBLE => {
                    let bytes = self.take(8)?.first_chunk::<8>()?;
                    Scalar::Double(f64::from_le_bytes(*bytes))
                }
                variant::SCALAR_TEXT => Scalar::Text(self.str()?),
                _ => return None,
            };
            parts.push(part).ok()?;
        }
        // Refuses an empty value and a NaN or infinity, as the serde codec does.
        Value::from_parts(&parts).ok()
    }

    /// An [`ErrorCode`]: its variants in declaration order.
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

    /// A [`LoginResult`], and in it a [`LoginRejection`]: variants in declaration order.
    fn login_result(&mut self) -> Option<LoginResult> {
        Some(match self.variant()? {
            variant::LOGIN_ACCEPTED => LoginResult::Accepted {
                heartbeat_seconds: self.u16()?,
                version: self.u64()?,
                sync_follows: self.bool()?,
            },
            variant::LOGIN_REJECTED => LoginResult::Rejected(match self.variant()? {
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

    /// One message a server sends; `None` for anything else. The message code is a `u32`
    /// variant index like any other, so it is read as a varint too.
    fn message(&mut self) -> Option<Message<'a>> {
        let code = u8::try_from(self.variant()?).ok()?;
        Some(match code {
            code::LOGIN_RESULT => Message::LoginResult(self.login_result()?),
            code::PING => Message::Ping(Ping { id: self.u16()? }),
            code::PONG => Message::Pong(Pong { id: self.u16()? }),
            code::UPDATE => Message::Update(Update {
                pin: self.pin()?,
                value: self.value()?,
                version: self.u64()?,
            }),
            code::SYNCED_VALUE => Message::SyncedValue(SyncedValue {
                id: self.u16()?,
                pin: self.pin()?,
                value: self.value()?,
                version: self.u64()?,
            }),
            code::SYNC_COMPLETE => Message::SyncComplete(SyncComplete {
                id: self.u16()?,
                count: self.u16()?,
                version: self.u64()?,
            }),
            code::ACK => Message::Ack(Ack {
                id: self.u16()?,
                version: self.option_u64()?,
            }),
            code::ERROR => Message::Error(ErrorReply {
                id: self.u16()?,
                code: self.error_code()?,
                detail: self.str()?,
            }),
            _ => return None,
        })
    }
}
