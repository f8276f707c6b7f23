//! One device connection, whatever its protocol: the transport (TCP, TLS or WebSocket), the bytes
//! received and not yet parsed, the frames waiting to be sent, and how they go out.
//!
//! An idle connection holds no buffer: reads land in a chunk on the stack and are copied into the
//! inbox only when they arrive, the inbox is freed once every frame in it is handled, and the
//! outgoing frames are freed once written.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

/// The most bytes one read takes from the socket: a stack buffer, so it costs an idle
/// connection nothing.
const READ_CHUNK: usize = 4096;

/// How a protocol's frames are read out of a byte stream.
pub trait Codec {
    /// A decoded frame, borrowing from the inbox.
    type Frame<'a>;
    /// Why bytes cannot be read as a frame; the stream is out of step after it.
    type Error: std::fmt::Display + Send;

    /// The first whole frame of `bytes` and how many bytes it took; `None` when the frame is not
    /// all there yet.
    fn decode(bytes: &[u8]) -> Result<Option<(Self::Frame<'_>, usize)>, Self::Error>;
}

/// A byte stream that sends whole frames: TCP (plain or TLS), or binary WebSocket messages.
pub trait Transport: Send {
    /// Waits for bytes and appends them to `inbox`; 0 at the end of the stream. Cancel-safe:
    /// bytes are appended only when the read completes, and waiting holds no buffer.
    fn read(&mut self, inbox: &mut Vec<u8>) -> impl Future<Output = io::Result<usize>> + Send;
    /// Sends `bytes` in one socket write (one message over WebSocket).
    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Closes the stream.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// [`Transport`] over a byte stream.
pub struct StreamIo<S>(S);

impl<S> StreamIo<S> {
    /// Wraps a stream.
    pub fn new(stream: S) -> Self {
        StreamIo(stream)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for StreamIo<S> {
    fn read(&mut self, inbox: &mut Vec<u8>) -> impl Future<Output = io::Result<usize>> + Send {
        std::future::poll_fn(move |cx| {
            // The chunk lives only during this poll: while the socket has nothing, the waiting
            // future holds no buffer at all.
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            ready!(Pin::new(&mut self.0).poll_read(cx, &mut buf))?;
            inbox.extend_from_slice(buf.filled());
            Poll::Ready(Ok(buf.filled().len()))
        })
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes).await?;
        self.0.flush().await
    }

    async fn close(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

/// How queued frames go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Everything queued in one socket write (native: a batch of acks costs one syscall).
    Batched,
    /// One frame per socket write, at least `gap` apart: classic libraries parse one frame per
    /// read, and the legacy Python one even loses frames that arrive back to back.
    FramePerWrite {
        /// The least time between two frames; zero for none.
        gap: Duration,
    },
}

/// Bytes received and not yet parsed.
#[derive(Default)]
pub struct Inbox {
    bytes: Vec<u8>,
    start: usize,
}

impl Inbox {
    /// The bytes not parsed yet.
    pub fn pending(&self) -> &[u8] {
        self.bytes.get(self.start..).unwrap_or_default()
    }

    /// Marks `count` bytes as parsed; frees the buffer once all are.
    pub fn consume(&mut self, count: usize) {
        self.start += count;
        if self.start >= self.bytes.len() {
            // Handled everything: an idle connection keeps no buffer.
            self.bytes = Vec::new();
            self.start = 0;
        }
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
    }
}

/// Frames waiting to be sent, with where each ends (for [`Framing::FramePerWrite`]).
#[derive(Default)]
pub struct Outgoing {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Outgoing {
    /// Appends one frame that `encode` writes into at most `max_len` bytes and whose length it
    /// returns. On error nothing is appended.
    pub fn frame<E>(
        &mut self,
        max_len: usize,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<(), E> {
        let start = self.bytes.len();
        self.bytes.resize(start + max_len, 0);
        match encode(self.bytes.get_mut(start..).unwrap_or_default()) {
            Ok(len) => {
                self.bytes.truncate(start + len.min(max_len));
                self.ends.push(self.bytes.len());
                Ok(())
            }
            Err(error) => {
                self.bytes.truncate(start);
                Err(error)
            }
        }
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// How many bytes are queued.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// A device connection: its transport, inbox and outgoing frames.
pub struct Connection<T> {
    transport: T,
    /// Bytes received and not parsed yet.
    pub inbox: Inbox,
    /// Frames to send at the next [`Connection::flush`]; bounded by what one step of the session
    /// queues (a flush follows every step).
    pub outgoing: Outgoing,
    framing: Framing,
    last_sent: Option<Instant>,
}

impl<T: Transport> Connection<T> {
    /// A connection over `transport`, sending frames [`Framing::Batched`] until told otherwise.
    pub fn new(transport: T) -> Self {
        Connection {
            transport,
            inbox: Inbox::default(),
            outgoing: Outgoing::default(),
            framing: Framing::Batched,
            last_sent: None,
        }
    }

    /// Changes how frames go out from now on.
    pub fn set_framing(&mut self, framing: Framing) {
        self.framing = framing;
    }

    /// Reads more bytes into the inbox; 0 at the end of the stream. Cancel-safe.
    pub async fn fill(&mut self) -> io::Result<usize> {
        self.inbox.compact();
        self.transport.read(&mut self.inbox.bytes).await
    }

    /// Reads until the inbox holds a whole frame of `C` (then decode it from
    /// [`Inbox::pending`]). `Ok(false)` when the stream ended first.
    pub async fn fill_frame<C: Codec>(&mut self) -> Result<bool, ReadError<C::Error>> {
        loop {
            match C::decode(self.inbox.pending()) {
                Ok(Some(_)) => return Ok(true),
                Ok(None) => {}
                Err(error) => return Err(ReadError::Frame(error)),
            }
            match self.fill().await {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(error) => return Err(ReadError::Io(error)),
            }
        }
    }

    /// Sends the outgoing frames as the framing says, then frees their buffer.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.outgoing.is_empty() {
            return Ok(());
        }
        let Outgoing { bytes, ends } = std::mem::take(&mut self.outgoing);
        match self.framing {
            Framing::Batched => self.transport.write(&bytes).await,
            Framing::FramePerWrite { gap } => {
                let mut start = 0;
                for end in ends {
                    if !gap.is_zero() {
                        if let Some(last_sent) = self.last_sent {
                            tokio::time::sleep_until(last_sent + gap).await;
                        }
                        self.last_sent = Some(Instant::now());
                    }
                    self.transport
                        .write(bytes.get(start..end).unwrap_or_default())
                        .await?;
                    start = end;
                }
                Ok(())
            }
        }
    }

    /// Closes the transport.
    pub async fn close(&mut self) {
        self.transport.close().await;
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum ReadError<E> {
    /// The socket failed.
    Io(io::Error),
    /// The bytes are not a frame.
    Frame(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fully_parsed_inbox_holds_no_buffer() {
        let mut inbox = Inbox::default();
        inbox.bytes.extend_from_slice(&[1, 2, 3, 4]);
        inbox.consume(2);
        assert_eq!(inbox.pending(), &[3, 4]);
        inbox.consume(2);
        assert!(inbox.pending().is_empty());
        assert_eq!(inbox.bytes.capacity(), 0);
    }

    /// A transport that records each write.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
    }

    impl Transport for Recorder {
        async fn read(&mut self, _inbox: &mut Vec<u8>) -> io::Result<usize> {
            Ok(0)
        }

        async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.writes.push(bytes.to_vec());
            Ok(())
        }

        async fn close(&mut self) {}
    }

    fn queue(connection: &mut Connection<Recorder>, frames: &[&[u8]]) {
        for frame in frames {
            let queued = connection.outgoing.frame(8, |buf| {
                buf.get_mut(..frame.len()).ok_or(())?.copy_from_slice(frame);
                Ok::<_, ()>(frame.len())
            });
            assert_eq!(queued, Ok(()));
        }
    }

    #[tokio::test]
    async fn batched_frames_go_out_in_one_write_and_the_buffer_is_freed() {
        let mut connection = Connection::new(Recorder::default());
        queue(&mut connection, &[b"abc", b"de"]);
        assert_eq!(connection.outgoing.len(), 5);
        connection.flush().await.unwrap();
        assert_eq!(connection.transport.writes, vec![b"abcde".to_vec()]);
        assert_eq!(connection.outgoing.bytes.capacity(), 0);
    }

    #[tokio::test]
    async fn frame_per_write_sends_each_frame_alone_spaced_by_the_gap() {
        let mut connection = Connection::new(Recorder::default());
        let gap = Duration::from_millis(20);
        connection.set_framing(Framing::FramePerWrite { gap });
        queue(&mut connection, &[b"abc", b"de"]);
        let started = Instant::now();
        connection.flush().await.unwrap();
        assert_eq!(
            connection.transport.writes,
            vec![b"abc".to_vec(), b"de".to_vec()]
        );
        assert!(started.elapsed() >= gap);
        assert_eq!(connection.outgoing.bytes.capacity(), 0);
    }

    #[test]
    fn a_frame_that_does_not_fit_leaves_nothing_queued() {
        let mut connection = Connection::new(Recorder::default());
        queue(&mut connection, &[b"abc"]);
        let failed = connection
            .outgoing
            .frame(4, |_| Err::<usize, _>("too long"));
        assert_eq!(failed, Err("too long"));
        assert_eq!(connection.outgoing.len(), 3);
        assert_eq!(connection.outgoing.ends, vec![3]);
    }
}
