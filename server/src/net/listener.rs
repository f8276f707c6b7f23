//! Accept loops: the native port, the MQTT port, and the shared port where classic Blynk hardware and HTTP are
//! told apart by their first byte (a classic login starts with command 29 or 2, HTTP with a
//! letter), as the classic server did.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::address::{AddressSlot, is_trusted};
use super::http_conn;
use super::io::{Activity, ConnectionSlot, MaybeTls, Prefixed};
use crate::session::connection::StreamIo;
use crate::session::{Context, classic, native};

/// Time a TLS handshake or the first byte may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes a slot under the server-wide cap and one under the peer's per-address cap (trusted
/// proxies have none), or logs the refusal.
fn take_slot(context: &Context, peer: SocketAddr, port: &str) -> Option<ConnectionSlot> {
    let Ok(server) = context.connections.clone().try_acquire_owned() else {
        tracing::warn!(%peer, port, "connection refused: the server is at its connection limit");
        return None;
    };
    let address = if is_trusted(&context.trusted_proxies, peer.ip()) {
        AddressSlot::exempt()
    } else {
        let Some(address) = context.per_address.take(peer.ip()) else {
            tracing::warn!(%peer, port, cap = context.limits.max_connections_per_address,
                "connection refused: too many connections from this address");
            return None;
        };
        address
    };
    Some(ConnectionSlot { server, address })
}

async fn wrap(context: &Context, stream: TcpStream, peer: SocketAddr) -> Option<MaybeTls> {
    let _ = stream.set_nodelay(true);
    match &context.tls {
        None => Some(MaybeTls::Plain(stream)),
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => Some(MaybeTls::Tls(Box::new(stream))),
                Ok(Err(error)) => {
                    tracing::info!(%peer, %error, "connection closed: TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::info!(%peer, "connection closed: TLS handshake timed out");
                    None
                }
            }
        }
    }
}

/// The next connection with its slot under the cap, or `None` at shutdown. Accept errors (such
/// as running out of file descriptors) are logged and retried after a pause.
async fn accept_next(
    listener: &TcpListener,
    context: &Context,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    port: &str,
) -> Option<(TcpStream, SocketAddr, ConnectionSlot)> {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, port, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return None,
        };
        if let Some(slot) = take_slot(context, peer, port) {
            return Some((stream, peer, slot));
        }
    }
}

/// Accepts native device connections until shutdown.
pub async fn run_native(listener: TcpListener, context: Arc<Context>) {
    let mut shutdown = context.shutdown.clone();
    while let Some((stream, peer, slot)) =
        accept_next(&listener, &context, &mut shutdown, "native").await
    {
        tokio::spawn(serve_native(stream, peer, slot, context.clone()));
    }
}

/// One native connection's task: TLS if configured, then the session in a task of its own,
/// sized to the session alone (the TLS handshake's future is larger than a whole idle session).
async fn serve_native(
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
    context: Arc<Context>,
) {
    if let Some(stream) = wrap(&context, stream, peer).await {
        let stream = Prefixed::new(Vec::new(), stream).holding(slot);
        tokio::spawn(native::serve(stream, peer, context));
    }
}

/// Accepts MQTT device connections until shutdown.
pub async fn run_mqtt(listener: TcpListener, mqtt: Arc<crate::mqtt::Mqtt>) {
    let context = mqtt.context.clone();
    let mut shutdown = context.shutdown.clone();
    while let Some((stream, peer, slot)) =
        accept_next(&listener, &context, &mut shutdown, "mqtt").await
    {
        let (context, mqtt) = (context.clone(), mqtt.clone());
        tokio::spawn(async move {
            let _slot = slot;
            if let Some(stream) = wrap(&context, stream, peer).await {
                crate::mqtt::serve(stream, peer, mqtt).await;
            }
        });
    }
}

/// Accepts connections on the shared port until shutdown: classic hardware sessions and HTTP
/// connections (served by `router`) each run in a task of their own.
pub async fn run_shared(listener: TcpListener, context: Arc<Context>, router: Router) {
    let mut shutdown = context.shutdown.clone();
    while let Some((stream, peer, slot)) =
        accept_next(&listener, &context, &mut shutdown, "shared").await
    {
        tokio::spawn(serve_shared(
            stream,
            peer,
            slot,
            context.clone(),
            router.clone(),
        ));
    }
}

/// One connection's task on the shared port: TLS if configured, then the first byte says
/// classic hardware or HTTP.
async fn serve_shared(
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
    context: Arc<Context>,
    router: Router,
) {
    let Some(mut stream) = wrap(&context, stream, peer).await else {
        return;
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(Ok(_)) => return,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "connection closed before its first byte");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "connection closed: nothing sent within {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    }
    let stream = Prefixed::new(first.to_vec(), stream).holding(slot);
    if is_classic_login(first[0]) {
        // A task of its own, sized to the session alone: this one, which sniffed the byte and
        // did the TLS handshake, ends here.
        tokio::spawn(classic::serve(StreamIo::new(stream), peer, context));
    } else {
        let activity = Activity::new();
        let idle = Duration::from_secs(context.limits.http_idle_seconds.max(1));
        let stream = stream.with_idle_timeout(idle, activity.clone());
        http_conn::serve(stream, peer, activity, router, context).await;
    }
}

/// Whether a first byte starts a classic hardware login (HW_LOGIN 29 or LOGIN 2).
pub fn is_classic_login(byte: u8) -> bool {
    byte == blynk_proto::classic::Command::HwLogin.code()
        || byte == blynk_proto::classic::Command::Login.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `make` returns, without making one.
    fn future_size<A, F: Future>(_make: impl Fn(A) -> F) -> usize {
        size_of::<F>()
    }

    /// A session's task is one allocation of its future's size, kept while the connection
    /// lasts: the bulk of what an idle connection costs the server. Neither the TLS handshake
    /// nor the first-byte sniffing may count in it, and the bound guards against regressions
    /// (`--nocapture` prints the sizes).
    #[test]
    fn a_session_task_holds_the_session_alone() {
        type Args = (Prefixed<MaybeTls>, SocketAddr, Arc<Context>);
        let native =
            future_size(|(stream, peer, context): Args| native::serve(stream, peer, context));
        let classic = future_size(|(stream, peer, context): Args| {
            classic::serve(StreamIo::new(stream), peer, context)
        });
        let handshake = future_size(
            |(context, stream, peer): (&'static Context, TcpStream, SocketAddr)| {
                wrap(context, stream, peer)
            },
        );
        println!(
            "session task: native {native} bytes, classic {classic} bytes; TLS handshake {handshake} bytes"
        );
        assert!(native < handshake && classic < handshake);
        // The classic session also keeps the device's address for bridge tokens and the
        // GROUP/BRIDGE state's pointer (`session/classic.rs`).
        assert!(native <= 1100 && classic <= 1120);
    }
}
