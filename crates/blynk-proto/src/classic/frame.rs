//! Classic frames: the 5-byte header, decoding from a stream buffer and encoding into one.

use core::num::NonZeroU16;

use super::body::BodyWriter;
use super::{BuildError, ClassicError, Command, Status};

/// Bytes in a classic header.
pub const HEADER_LEN: usize = 5;

/// The longest body this codec accepts or builds: the largest `buff-in` a Blynk library
/// announces (Linux, 4096). Callers pass a smaller limit where they know one.
pub const MAX_BODY: usize = 4096;

/// One classic frame; the body borrows the decoded buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassicFrame<'a> {
    /// The command.
    pub command: Command,
    /// The message id (the peer may send 0; this side never does).
    pub id: u16,
    /// The body; empty for a [`Command::Response`].
    pub body: &'a [u8],
    /// For a [`Command::Response`], the status it carries.
    pub status: Option<Status>,
}

/// The outcome of decoding from the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// No whole frame is buffered yet.
    NeedMore,
    /// One frame, and how many bytes of the buffer it took.
    Frame {
        /// The frame.
        frame: ClassicFrame<'a>,
        /// Header plus body length.
        consumed: usize,
    },
}

/// Decodes one frame from the start of `buffer`, refusing bodies longer than `max_body`
/// (capped at [`MAX_BODY`]) as soon as the header is in.
pub fn decode(buffer: &[u8], max_body: usize) -> Result<Decoded<'_>, ClassicError> {
    let Some(&[code, id_high, id_low, len_high, len_low]) = buffer.first_chunk::<HEADER_LEN>()
    else {
        return Ok(Decoded::NeedMore);
    };
    let command = Command::from_code(code);
    let id = u16::from_be_bytes([id_high, id_low]);
    let length = u16::from_be_bytes([len_high, len_low]);
    if command == Command::Response {
        let frame = ClassicFrame {
            command,
            id,
            body: &[],
            status: Some(Status::from_code(length)),
        };
        return Ok(Decoded::Frame {
            frame,
            consumed: HEADER_LEN,
        });
    }
    let len = usize::from(length);
    let max = max_body.min(MAX_BODY);
    if len > max {
        return Err(ClassicError::BodyTooLong { len, max });
    }
    match buffer.get(HEADER_LEN..HEADER_LEN + len) {
        Some(body) => {
            let frame = ClassicFrame {
                command,
                id,
                body,
                status: None,
            };
            Ok(Decoded::Frame {
                frame,
                consumed: HEADER_LEN + len,
            })
        }
        None => Ok(Decoded::NeedMore),
    }
}

/// Builds a status reply: `00 id id status status`.
pub fn encode_response(
    out: &mut [u8],
    id: NonZeroU16,
    status: Status,
) -> Result<&[u8], BuildError> {
    let available = out.len();
    let header = out
        .first_chunk_mut::<HEADER_LEN>()
        .ok_or(BuildError::BufferTooSmall {
            needed: HEADER_LEN,
            available,
        })?;
    write_header(header, Command::Response, id, status.code());
    Ok(header.as_slice())
}

/// Builds a frame whose body `write_body` writes, into `out`; refuses bodies longer than
/// `max_body` (the peer's `buff-in`, capped at [`MAX_BODY`]).
pub fn encode_frame<F>(
    out: &mut [u8],
    command: Command,
    id: NonZeroU16,
    max_body: usize,
    write_body: F,
) -> Result<&[u8], BuildError>
where
    F: FnOnce(&mut BodyWriter<'_>) -> Result<(), BuildError>,
{
    let available = out.len();
    let (header, body) =
        out.split_first_chunk_mut::<HEADER_LEN>()
            .ok_or(BuildError::BufferTooSmall {
                needed: HEADER_LEN,
                available,
            })?;
    let mut writer = BodyWriter::new(body, max_body.min(MAX_BODY));
    write_body(&mut writer)?;
    let len = writer.len();
    // The writer caps the body at MAX_BODY, which fits in u16.
    write_header(header, command, id, len as u16);
    out.get(..HEADER_LEN + len)
        .ok_or(BuildError::BufferTooSmall {
            needed: HEADER_LEN + len,
            available,
        })
}

fn write_header(header: &mut [u8; HEADER_LEN], command: Command, id: NonZeroU16, length: u16) {
    let [id_high, id_low] = id.get().to_be_bytes();
    let [len_high, len_low] = length.to_be_bytes();
    *header = [command.code(), id_high, id_low, len_high, len_low];
}

const _: () = assert!(MAX_BODY <= u16::MAX as usize);
