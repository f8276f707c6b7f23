//! Stream types: a TCP stream with or without TLS, and a stream that replays sniffed bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::address::AddressSlot;

/// A TCP connection, in the clear or inside TLS.
pub enum MaybeTls {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_flush(cx),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            MaybeTls::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A stream whose first bytes were read to tell protocols apart; they are read again first.
///
/// It also holds the connection's slots under the server's connection caps, released on drop.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    position: usize,
    inner: S,
    _slot: Option<ConnectionSlot>,
    /// Boxed: only HTTP connections have one, and every device session carries this field.
    idle: Option<Box<Idle>>,
}

/// A connection's places under the server-wide and the per-address connection caps.
pub struct ConnectionSlot {
    /// The server-wide cap's permit.
    pub server: tokio::sync::OwnedSemaphorePermit,
    /// The per-address cap's slot.
    pub address: AddressSlot,
}

/// When a connection last did something whole (received a request or a WebSocket message).
/// Its idle deadline counts from there, so bytes that finish nothing (a trickle) do not keep it
/// open.
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    /// Milliseconds from `origin` to the last activity.
    last: AtomicU64,
}

impl Activity {
    /// Activity now.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    /// Records activity now.
    pub fn touch(&self) {
        let elapsed = Instant::now().duration_since(self.origin).as_millis();
        self.last.fetch_max(
            u64::try_from(elapsed).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// An idle deadline: `limit` after the last [`Activity`].
struct Idle {
    limit: Duration,
    activity: Arc<Activity>,
    deadline: Pin<Box<Sleep>>,
}

impl Idle {
    /// Whether the deadline passed; otherwise the task is woken when it may have.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            // The timer is moved only when it fires, not on every activity.
            let due = self.activity.last() + self.limit;
            if due <= Instant::now() {
                return true;
            }
            self.deadline.as_mut().reset(due);
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
}

impl<S> Prefixed<S> {
    /// Replays `prefix`, then reads from `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            position: 0,
            inner,
            _slot: None,
            idle: None,
        }
    }

    /// Fails reads and writes that wait once `limit` passed since the last `activity`.
    pub fn with_idle_timeout(mut self, limit: Duration, activity: Arc<Activity>) -> Self {
        self.idle = Some(Box::new(Idle {
            limit,
            deadline: Box::pin(tokio::time::sleep_until(activity.last() + limit)),
            activity,
        }));
        self
    }

    /// Keeps `slot` until the stream is dropped.
    pub fn holding(mut self, slot: ConnectionSlot) -> Self {
        self._slot = Some(slot);
        self
    }

    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.idle.as_mut().is_some_and(|idle| idle.expired(cx))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this.prefix.get(this.position..)
            && !rest.is_empty()
        {
            let count = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..count]);
            this.position += count;
            if this.position == this.prefix.len() {
                this.prefix = Vec::new();
                this.position = 0;
            }
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending if this.idle_expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // A client that stops reading holds the connection no longer than an idle one.
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending if this.idle_expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
