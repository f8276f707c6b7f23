//! One HTTP connection of the shared port, served by hyper's HTTP/1 directly (rather than
//! `axum::serve`, which sets no timer): the request headers must arrive within a deadline
//! (which also ends an idle keep-alive connection) and within a size limit, a request's body
//! within its own deadline, and each request names its client, the peer or, behind a trusted
//! proxy, the address it forwarded for.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, Response};
use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::address::{AddressRange, forwarded_client};
use super::io::{Activity, MaybeTls, Prefixed};
use crate::http::PeerAddr;
use crate::session::Context;

/// The most bytes of a request line and headers. hyper's default (about 400 KiB) let a few
/// hundred slow clients hold tens of megabytes; the longest legitimate request here is a device
/// API URL with a few dozen values.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Serves HTTP on `stream` until the client leaves, a deadline passes, or the server shuts down
/// (requests in progress finish first).
pub async fn serve(
    stream: Prefixed<MaybeTls>,
    peer: SocketAddr,
    activity: Arc<Activity>,
    router: Router,
    context: Arc<Context>,
) {
    let limits = &context.limits;
    let body_deadline = Duration::from_secs(limits.http_body_seconds.max(1));
    let header_deadline = Duration::from_secs(limits.http_header_seconds.max(1));
    let trusted = context.trusted_proxies.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        activity.touch();
        let client = client_of(peer, request.headers(), &trusted);
        let mut request = request.map(|body| {
            Body::new(DeadlineBody {
                inner: body,
                peer: client,
                deadline: Instant::now() + body_deadline,
                timer: None,
            })
        });
        request
            .extensions_mut()
            .insert(ConnectInfo(PeerAddr(client)));
        request.extensions_mut().insert(activity.clone());
        let mut router = router.clone();
        async move {
            let response: Response<Body> = match router.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_deadline)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_header_size(MAX_HEADER_BYTES);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut shutdown = context.shutdown.clone();
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        log_ending(peer, &error, header_deadline);
    }
}

/// One log line for a connection ended by a limit; other endings (a client that left) only
/// at debug level.
fn log_ending(peer: SocketAddr, error: &hyper::Error, header_deadline: Duration) {
    let idle = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
    if error.is_timeout() {
        tracing::info!(%peer, "HTTP connection closed: no whole request headers within {header_deadline:?}");
    } else if error.is_parse_too_large() {
        tracing::info!(%peer, "HTTP connection closed: request headers over {MAX_HEADER_BYTES} bytes");
    } else if idle {
        tracing::info!(%peer, "HTTP connection closed: idle for too long");
    } else {
        tracing::debug!(%peer, %error, "HTTP connection closed");
    }
}

/// The client a request comes from: `peer`, or behind a trusted proxy the address it names in
/// `X-Forwarded-For` (port 0: unknown).
fn client_of(peer: SocketAddr, headers: &HeaderMap, trusted: &[AddressRange]) -> SocketAddr {
    if trusted.is_empty() {
        return peer;
    }
    let values = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>();
    let client: IpAddr = forwarded_client(peer.ip(), values.into_iter(), trusted);
    if client == peer.ip() {
        peer
    } else {
        SocketAddr::new(client, 0)
    }
}

/// A request body that fails once its deadline passes: a client that trickles a body (or
/// announces one and sends nothing) holds the connection no longer than that.
struct DeadlineBody {
    inner: Incoming,
    /// For the log line.
    peer: SocketAddr,
    deadline: Instant,
    /// Made only when the body is waited for: most requests have none.
    timer: Option<Pin<Box<Sleep>>>,
}

/// Why a request body was cut.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the request body did not arrive in time")]
    Deadline,
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|frame| frame.map_err(BodyError::from))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::info!(peer = %this.peer, "HTTP request refused: its body did not arrive in time");
                        Poll::Ready(Some(Err(BodyError::Deadline)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
