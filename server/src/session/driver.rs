//! The one loop every device session runs, whatever its protocol: login under a deadline,
//! attach, then read frames, answer requests in order, forward what the engine queues, and end
//! on silence, a kill from the engine or shutdown; detach and one log line at the end.
//!
//! A protocol plugs in through [`Protocol`]: its codec, its login and what each frame means.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::connection::{Codec, Connection, Framing, Outgoing, ReadError, Transport};
use super::in_flight::InFlight;
use super::{Context, Ending, MAX_IN_FLIGHT};
use crate::engine::{self, Attached, DeviceSlot, Outbound, OutboundQueue, SyncItem, SyncSelection};
use crate::model::OwnedValue;

/// A protocol's side of a device session: login and dispatch. The driver owns the connection,
/// the loop and the engine registration.
pub trait Protocol: Send + Sized + 'static {
    /// How frames are read.
    type Codec: Codec;
    /// What a request in flight yields for [`Protocol::answer`] to turn into frames.
    type Done: Send + 'static;
    /// The protocol's name in log lines.
    const NAME: &'static str;
    /// The protocol, for the engine's registry.
    const ENGINE_PROTOCOL: engine::Protocol;
    /// When set, nothing from the engine is sent before the device's first frame after login,
    /// or this long after it: some clients wait for the answer to their first frame and would
    /// misread anything else.
    const PUSH_GRACE: Option<Duration>;

    /// Reads the login and answers a refusal (logged). `Some` holds the session and the sync the
    /// device asked for, to be computed when it attaches.
    fn login<T: Transport>(
        connection: &mut Connection<T>,
        peer: SocketAddr,
        context: &Arc<Context>,
    ) -> impl Future<Output = Option<(Self, Option<SyncSelection>)>> + Send;

    /// Accepts the login once attached, and sends the automatic sync if one was asked for.
    fn welcome<T: Transport>(
        &mut self,
        connection: &mut Connection<T>,
        sync: Vec<SyncItem>,
    ) -> impl Future<Output = std::io::Result<()>> + Send;

    /// The device this session serves.
    fn slot(&self) -> &Arc<DeviceSlot>;

    /// How frames go out after the login.
    fn framing(&self) -> Framing;

    /// How long the device may stay silent before it counts as gone; read after every frame,
    /// so a frame may change it.
    fn silence(&self) -> Duration;

    /// Handles one frame: immediate answers go to `out`, requests that wait on the engine to
    /// `in_flight` (answered in order by [`Protocol::answer`]).
    fn handle(
        &mut self,
        frame: <Self::Codec as Codec>::Frame<'_>,
        out: &mut Outgoing,
        in_flight: &mut InFlight<Self::Done>,
    );

    /// Turns a finished request into its answer.
    fn answer(&mut self, done: Self::Done, out: &mut Outgoing);

    /// Queues a value from the engine (an app write or a command) for the device; `false` when
    /// it cannot be sent (too large for the device).
    fn push(
        &mut self,
        pin: blynk_proto::Pin,
        value: &OwnedValue,
        version: u64,
        out: &mut Outgoing,
    ) -> bool;

    /// Messages dropped by the rate limit, for the last log line.
    fn dropped(&self) -> u64;

    /// Called once the session has ended, before the device is detached: what the protocol
    /// still holds (such as writes received but not yet applied) is settled here. Nothing can
    /// be sent any more.
    fn finish(&mut self) {}
}

/// Serves one device connection until it ends.
pub fn serve<P: Protocol, T: Transport>(
    transport: T,
    peer: SocketAddr,
    context: Arc<Context>,
) -> impl Future<Output = ()> + Send {
    let mut connection = Connection::new(transport);
    // A block, not an `async fn`: it uses what it captures in place, where an `async fn` keeps a
    // second copy of its arguments in the task for its whole life.
    async move {
        // The login's future is boxed: it is large and short-lived, and an idle session should
        // not carry its room for the rest of its life. Its result is taken apart in the pattern
        // itself: a named temporary would keep room for a second copy of the session.
        let Some((
            mut session,
            Attached {
                session_id,
                outbound,
                sync,
                replaced_previous,
                kill,
            },
        )) = Box::pin(admit::<P, T>(&mut connection, peer, &context)).await
        else {
            return;
        };
        let slot = session.slot().clone();
        tracing::info!(
            %peer, device = slot.device.id, name = %slot.device.name, session = session_id,
            replaced = replaced_previous, "device connected ({})", P::NAME
        );
        let welcomed = Box::pin(session.welcome(&mut connection, sync)).await;
        connection.set_framing(session.framing());
        let ending = match welcomed {
            Err(error) => Ending::Io(error),
            Ok(()) => run(&mut connection, &mut session, outbound, &kill, &context).await,
        };
        session.finish();
        context.engine.detach(&slot, session_id);
        connection.close().await;
        tracing::info!(
            %peer, device = slot.device.id, dropped = session.dropped(), reason = %ending,
            "device disconnected ({})", P::NAME
        );
    }
}

/// The login under its deadline, then the engine registration; `None` (logged, connection
/// closed) when the device is not let in.
async fn admit<P: Protocol, T: Transport>(
    connection: &mut Connection<T>,
    peer: SocketAddr,
    context: &Arc<Context>,
) -> Option<(P, Attached)> {
    let login_timeout = Duration::from_secs(context.limits.login_timeout_seconds);
    let clock = context.engine.clock();
    let login = clock
        .timeout(login_timeout, P::login(connection, peer, context))
        .await;
    match login {
        Some(Some((session, sync))) => {
            let slot = session.slot();
            let queue = context.limits.send_queue;
            if !context.engine.prepare_attach(slot).await {
                connection.close().await;
                return None;
            }
            match context.engine.attach(slot, P::ENGINE_PROTOCOL, queue, sync) {
                Some(attached) => return Some((session, attached)),
                None => {
                    tracing::info!(%peer, device = slot.device.id, "{} connection closed: device deleted", P::NAME);
                }
            }
        }
        Some(None) => {}
        None => {
            tracing::info!(%peer, "{} connection closed: no login within {login_timeout:?}", P::NAME);
        }
    };
    connection.close().await;
    None
}

/// The session loop, until the connection ends.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would store its arguments twice in every idle session"
)]
fn run<'a, P: Protocol, T: Transport>(
    connection: &'a mut Connection<T>,
    session: &'a mut P,
    mut outbound: OutboundQueue,
    kill: &'a Notify,
    context: &'a Context,
) -> impl Future<Output = Ending<<P::Codec as Codec>::Error>> + Send + 'a {
    // A block rather than an `async fn`, for the reason given in `serve`.
    async move {
        let engine = &context.engine;
        let slot = session.slot().clone();
        let mut in_flight = InFlight::default();
        let mut shutdown = context.shutdown.clone();
        // The silence and the grace are counted on the server's clock, which a test may move.
        let clock = engine.clock();
        let mut last_frame = clock.now();
        let grace_ends = P::PUSH_GRACE.map(|grace| last_frame + grace);
        let mut ready = grace_ends.is_none();
        // One timer serves the silence and the push grace. It is moved earlier when it must be,
        // and otherwise re-armed only when it fires: a busy device costs one timer update per
        // silence period, not one per frame.
        let wake_at = |last_frame: Instant, ready: bool, silence: Duration| {
            let silent_at = last_frame + silence;
            match grace_ends {
                Some(grace_ends) if !ready => silent_at.min(grace_ends),
                _ => silent_at,
            }
        };
        let timer = tokio::time::sleep_until(clock.timer_deadline(wake_at(
            last_frame,
            ready,
            session.silence(),
        )));
        tokio::pin!(timer);
        let mut dropped_counted = 0;
        loop {
            // Handle every whole frame already buffered, unless too many requests are in flight.
            while in_flight.len() < MAX_IN_FLIGHT {
                let consumed = match P::Codec::decode(connection.inbox.pending()) {
                    Ok(None) => break,
                    Ok(Some((frame, consumed))) => {
                        session.handle(frame, &mut connection.outgoing, &mut in_flight);
                        consumed
                    }
                    Err(error) => return Ending::Frame(error),
                };
                connection.inbox.consume(consumed);
                // Only whole frames count as signs of life: a trickle of bytes that never
                // finishes one does not keep the session open.
                last_frame = clock.now();
                if let Err(error) = connection.flush().await {
                    return Ending::Io(error);
                }
                ready = true;
            }
            // What the rate limit dropped of the frames just handled, counted once per read.
            let dropped = session.dropped();
            if dropped > dropped_counted {
                engine.metrics().rate_limited(dropped - dropped_counted);
                dropped_counted = dropped;
            }
            // From the last frame, with the silence the frames read since may have changed.
            let due = clock.timer_deadline(wake_at(last_frame, ready, session.silence()));
            if due < timer.deadline() {
                timer.as_mut().reset(due);
            }
            let can_read = in_flight.len() < MAX_IN_FLIGHT;
            tokio::select! {
                read = connection.fill(), if can_read => match read {
                    Ok(0) => return Ending::Closed,
                    Ok(_) => {}
                    Err(error) => return Ending::Io(error),
                },
                () = in_flight.oldest_done(), if !in_flight.is_empty() => {
                    // Every answer ready goes out in this flush: one socket write for a batch of
                    // acks when the framing batches.
                    while let Some(done) = in_flight.pop_done() {
                        session.answer(done, &mut connection.outgoing);
                    }
                    if let Err(error) = connection.flush().await {
                        return Ending::Io(error);
                    }
                }
                message = outbound.recv(), if ready => match message {
                    Some(message) => {
                        let Outbound { pin, value, version, command } = message;
                        if let Some(command_id) = command
                            && !engine.claim_command(&slot, command_id).await
                        {
                            continue;
                        }
                        if session.push(pin, &value, version, &mut connection.outgoing) {
                            if let Err(error) = connection.flush().await {
                                return Ending::Io(error);
                            }
                            engine.delivered(&slot, pin, version);
                        }
                    }
                    None => {
                        engine.metrics().slow_device_closed();
                        return Ending::Engine("dropped by the server (too slow to read)");
                    }
                },
                () = kill.notified() => {
                    if outbound.overflowed() {
                        engine.metrics().slow_device_closed();
                    }
                    return Ending::Engine("closed by the server (replaced by a newer connection, too slow to read, or deleted)");
                }
                () = &mut timer => {
                    let now = clock.now();
                    if now >= last_frame + session.silence() {
                        return Ending::Silent(session.silence());
                    }
                    if grace_ends.is_some_and(|grace_ends| now >= grace_ends) {
                        ready = true;
                    }
                    timer
                        .as_mut()
                        .reset(clock.timer_deadline(wake_at(last_frame, ready, session.silence())));
                }
                _ = shutdown.changed() => return Ending::Shutdown,
            }
        }
    }
}

/// Reads until the login frame is whole, for the protocol to decode from the inbox.
/// `Err(None)`: the connection ended or failed first; `Err(Some(error))`: the first frame is
/// malformed. Both are logged.
pub(super) async fn read_login_frame<P: Protocol, T: Transport>(
    connection: &mut Connection<T>,
    peer: SocketAddr,
) -> Result<(), Option<<P::Codec as Codec>::Error>> {
    match connection.fill_frame::<P::Codec>().await {
        Ok(true) => Ok(()),
        Ok(false) => Err(None),
        Err(ReadError::Io(error)) => {
            // Over WebSocket, also a message over the size limit.
            tracing::info!(%peer, %error, "{} connection closed before its login", P::NAME);
            Err(None)
        }
        Err(ReadError::Frame(error)) => {
            tracing::info!(%peer, %error, "{} connection refused: bad first frame", P::NAME);
            Err(Some(error))
        }
    }
}
