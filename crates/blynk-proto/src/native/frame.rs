//! The native frame: a 3-byte header, then one postcard-encoded [`Message`].
//!
//! ```text
//! +---------+----------------+---------------------------+
//! | version | payload length | payload                   |
//! | u8      | u16 big-endian | postcard(Message), 1..=MAX_FRAME bytes |
//! +---------+----------------+---------------------------+
//! ```
//!
//! The version comes first so that a peer of another version, or a stray HTTP client, is told
//! apart on its first byte; the length comes before the payload so that an oversized frame is
//! refused before a single payload byte is buffered.

use super::{MAX_FRAME, Message, PROTOCOL_VERSION};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 3;

/// Why a byte stream is not a valid frame. After any of these the stream cannot be trusted
/// further: the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame header announces a payload longer than the limit.
    #[error("frame of {len} bytes is longer than the limit of {max}")]
    FrameTooLong {
        /// The announced payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {got}, this side speaks {expected}")]
    BadVersion {
        /// The version in the header.
        got: u8,
        /// [`PROTOCOL_VERSION`].
        expected: u8,
    },
    /// The header announces an empty payload.
    #[error("frame has an empty payload")]
    Empty,
    /// The payload is not a valid message.
    #[error("frame payload of {len} bytes is not a valid message (code {code})")]
    Malformed {
        /// The payload length.
        len: usize,
        /// The first payload byte, the message code.
        code: u8,
    },
    /// The payload holds a valid message followed by extra bytes.
    #[error("frame payload has {extra} bytes after the message")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The output buffer is too small for the frame.
    #[error("output buffer of {available} bytes is too small for the frame")]
    BufferTooSmall {
        /// The buffer's length.
        available: usize,
    },
    /// The message is larger than a frame may be.
    #[error("message of {len} bytes is longer than the frame limit of {max}")]
    FrameTooLong {
        /// The encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The outcome of decoding from the start of a buffer.
// A message is a few hundred bytes and lives on the stack; boxing it would need an allocator.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<'a> {
    /// The buffer holds no whole frame yet.
    NeedMore,
    /// A whole frame: the message, and how many bytes of the buffer it took.
    Frame {
        /// The decoded message, borrowing from the buffer.
        message: Message<'a>,
        /// Header plus payload length.
        consumed: usize,
    },
}

/// Encodes `message` as one frame at the start of `out`; returns the frame's bytes.
pub fn encode<'o>(message: &Message<'_>, out: &'o mut [u8]) -> Result<&'o [u8], EncodeError> {
    let available = out.len();
    let (header, body) = out
        .split_at_mut_checked(HEADER_LEN)
        .ok_or(EncodeError::BufferTooSmall { available })?;
    let room = body.len().min(MAX_FRAME);
    let payload_len = match postcard::to_slice(message, body.get_mut(..room).unwrap_or_default()) {
        Ok(payload) => payload.len(),
        Err(postcard::Error::SerializeBufferFull) if room == MAX_FRAME => {
            let len = encoded_len(message);
            return Err(EncodeError::FrameTooLong {
                len,
                max: MAX_FRAME,
            });
        }
        Err(_) => return Err(EncodeError::BufferTooSmall { available }),
    };
    write_header(header, payload_len).ok_or(EncodeError::BufferTooSmall { available })?;
    out.get(..HEADER_LEN + payload_len)
        .ok_or(EncodeError::BufferTooSmall { available })
}

/// The payload length of `message`, however large.
pub fn encoded_len(message: &Message<'_>) -> usize {
    postcard::experimental::serialized_size(message).unwrap_or(usize::MAX)
}

/// Writes the header of a frame with a payload of `payload_len` bytes into the first
/// [`HEADER_LEN`] bytes of `header`; `None` when `header` is shorter. The one header writer of
/// both codecs.
pub(crate) fn write_header(header: &mut [u8], payload_len: usize) -> Option<()> {
    let [version, len_high, len_low] = header.first_chunk_mut::<HEADER_LEN>()?;
    *version = PROTOCOL_VERSION;
    // Callers never pass more than MAX_FRAME <= u16::MAX (asserted in the parent module).
    [*len_high, *len_low] = (payload_len as u16).to_be_bytes();
    Some(())
}

/// Finds the frame at the start of `buffer`: its payload and the bytes the whole frame takes,
/// or `None` until all of it is there. The one header parser of both codecs and of the
/// stream decoders.
///
/// A payload may be at most `max` bytes (and never more than [`MAX_FRAME`]): a reader with a
/// smaller buffer refuses a frame it could never hold as soon as the header is in. The version
/// is checked on the first byte and the length on the third, so a bad peer is refused before
/// its payload arrives.
pub(crate) fn split_frame(buffer: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(&version) = buffer.first() else {
        return Ok(None);
    };
    if version != PROTOCOL_VERSION {
        return Err(FrameError::BadVersion {
            got: version,
            expected: PROTOCOL_VERSION,
        });
    }
    let Some(&[_, high, low]) = buffer.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([high, low]));
    let max = max.min(MAX_FRAME);
    if len > max {
        return Err(FrameError::FrameTooLong { len, max });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    Ok(buffer
        .get(HEADER_LEN..HEADER_LEN + len)
        .map(|payload| (payload, HEADER_LEN + len)))
}

/// Decodes one frame from the start of `buffer`.
///
/// Returns [`Decoded::NeedMore`] until a whole frame is there. The version is checked on the
/// first byte and the length on the third, so a bad peer is refused before its payload arrives.
pub fn decode(buffer: &[u8]) -> Result<Decoded<'_>, FrameError> {
    Ok(match split_frame(buffer, MAX_FRAME)? {
        None => Decoded::NeedMore,
        Some((payload, consumed)) => Decoded::Frame {
            message: decode_payload(payload)?,
            consumed,
        },
    })
}

/// Decodes one whole payload into a message.
pub(crate) fn decode_payload(payload: &[u8]) -> Result<Message<'_>, FrameError> {
    match postcard::take_from_bytes::<Message<'_>>(payload) {
        Ok((message, [])) => Ok(message),
        Ok((_, rest)) => Err(FrameError::TrailingBytes { extra: rest.len() }),
        Err(_) => Err(FrameError::Malformed {
            len: payload.len(),
            code: payload.first().copied().unwrap_or_default(),
        }),
    }
}
