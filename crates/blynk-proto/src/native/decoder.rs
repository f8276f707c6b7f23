//! An incremental frame decoder over a fixed buffer, for byte streams that arrive in pieces.
//!
//! Feed it whatever the socket returned; take frames out until it says it needs more. It never
//! allocates and never panics, whatever the bytes.

use super::Message;
use super::frame::{FrameError, HEADER_LEN, decode_payload, split_frame};

/// What one step of the decoder produced.
// A message is a few hundred bytes and lives on the stack; boxing it would need an allocator.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Step<'a> {
    /// No whole frame is buffered; feed more bytes.
    NeedMore,
    /// One frame. It borrows the decoder until the next call.
    Frame(Message<'a>),
}

/// Buffers a byte stream of `N` bytes at most and yields the frames in it.
///
/// `N` must hold the largest frame the peer may send: `HEADER_LEN + MAX_FRAME` for a server, or
/// the `rx_buffer` a device announced. A frame longer than the buffer is refused as
/// [`FrameError::FrameTooLong`].
#[derive(Debug)]
pub struct FrameDecoder<const N: usize> {
    buffer: [u8; N],
    filled: usize,
    /// Bytes at the start of the buffer taken by the frame returned last.
    yielded: usize,
    failed: Option<FrameError>,
}

impl<const N: usize> Default for FrameDecoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameDecoder<N> {
    const FITS_A_HEADER: () = assert!(N > HEADER_LEN, "a decoder buffer must exceed the header");

    /// An empty decoder.
    pub const fn new() -> Self {
        let () = Self::FITS_A_HEADER;
        FrameDecoder {
            buffer: [0; N],
            filled: 0,
            yielded: 0,
            failed: None,
        }
    }

    /// Copies as many of `input` as fit; returns how many were taken. Feed the rest after the
    /// buffered frames have been taken out with [`next_frame`](Self::next_frame).
    pub fn feed(&mut self, input: &[u8]) -> usize {
        self.drop_yielded();
        let free = self.buffer.get_mut(self.filled..).unwrap_or_default();
        let taken = free.len().min(input.len());
        if let (Some(dst), Some(src)) = (free.get_mut(..taken), input.get(..taken)) {
            dst.copy_from_slice(src);
        }
        self.filled += taken;
        taken
    }

    /// The free part of the buffer, for reading from a socket straight into it; report how
    /// many bytes were read with [`commit`](Self::commit).
    pub fn spare(&mut self) -> &mut [u8] {
        self.drop_yielded();
        self.buffer.get_mut(self.filled..).unwrap_or_default()
    }

    /// Marks `count` bytes of [`spare`](Self::spare) as filled.
    pub fn commit(&mut self, count: usize) {
        self.filled = (self.filled + count).min(N);
    }

    /// Takes the next whole frame out of the buffer.
    ///
    /// After an error the stream is out of step and every later call returns the same error;
    /// [`reset`](Self::reset) before reusing the decoder on a new connection.
    pub fn next_frame(&mut self) -> Result<Step<'_>, FrameError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        self.drop_yielded();
        let Self {
            buffer,
            filled,
            yielded,
            failed,
        } = self;
        let buffered = buffer.get(..*filled).unwrap_or_default();
        // Split borrows: the message borrows `buffer` while an error is kept in `failed`.
        let frame = split_frame(buffered, N - HEADER_LEN).and_then(|frame| match frame {
            None => Ok(None),
            Some((payload, consumed)) => Ok(Some((decode_payload(payload)?, consumed))),
        });
        match frame {
            Ok(None) => Ok(Step::NeedMore),
            Ok(Some((message, consumed))) => {
                *yielded = consumed;
                Ok(Step::Frame(message))
            }
            Err(error) => {
                *failed = Some(error);
                Err(error)
            }
        }
    }

    /// Forgets everything buffered and any error.
    pub fn reset(&mut self) {
        self.filled = 0;
        self.yielded = 0;
        self.failed = None;
    }

    /// How many bytes are buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.filled - self.yielded
    }

    fn drop_yielded(&mut self) {
        if self.yielded > 0 {
            self.buffer.copy_within(self.yielded..self.filled, 0);
            self.filled -= self.yielded;
            self.yielded = 0;
        }
    }
}
