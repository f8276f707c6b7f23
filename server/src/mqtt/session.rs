//! One MQTT device connection: CONNECT with the token as password, then publishes (writes,
//! batches, properties, events, value requests), subscriptions under `downlink/`, and the app
//! writes the engine forwards, published on the device's matching subscriptions.
//!
//! Acknowledgements follow the other protocols: a QoS 1 PUBLISH gets its PUBACK only once what
//! it carried is durable (or was refused, which `downlink/error` explains), and a value sent with
//! QoS 1 counts as delivered only when the device's PUBACK comes back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use blynk_proto::Pin;
use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PingResp, PubAck, Publish, SubAck, Subscribe,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ending::Ending;
use super::login::{admit, read_connect};
use super::persistent::{MAX_SUBSCRIPTIONS, SavedSession, Subscription};
use super::topics;
use super::{MAX_PACKET, Mqtt};
use crate::config::Limits;
use crate::engine::{DeviceSlot, Outbound, OutboundQueue, Protocol, SyncItem, SyncSelection};
use crate::limits::RateLimiter;
use crate::model::OwnedValue;
use crate::session::{Context, MAX_IN_FLIGHT};

/// Values sent with QoS 1 and not yet acknowledged before the session stops taking more from
/// the engine (whose queue then fills, and closes a device that never acknowledges).
const MAX_UNACKED: usize = 64;
/// Values held for a device that has not yet subscribed to their topic: at most one per
/// datastream, so this bounds only templates larger than any real one.
const MAX_HELD: usize = 256;
/// The longest keep-alive honoured; a longer one is treated as this.
const MAX_KEEP_ALIVE_SECONDS: u16 = 3600;

/// Serves one MQTT connection until it ends.
pub async fn serve<S>(mut stream: S, peer: SocketAddr, mqtt: Arc<Mqtt>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let context = mqtt.context.clone();
    let mut inbox = BytesMut::with_capacity(512);
    let login_timeout = Duration::from_secs(context.limits.login_timeout_seconds);
    let connect = match context
        .engine
        .clock()
        .timeout(login_timeout, read_connect(&mut stream, &mut inbox, peer))
        .await
    {
        Some(Some(connect)) => connect,
        Some(None) => {
            let _ = stream.shutdown().await;
            return;
        }
        None => {
            tracing::info!(%peer, "MQTT connection closed: no CONNECT within {login_timeout:?}");
            let _ = stream.shutdown().await;
            return;
        }
    };
    if let Some(login) = &connect.login {
        context.engine.learn_token(&login.password).await;
    }
    let slot = match admit(&connect, peer, &context) {
        Ok(slot) => slot,
        Err(code) => {
            let mut out = BytesMut::new();
            let _ = ConnAck::new(code, false).write(&mut out);
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    let saved = mqtt
        .sessions
        .resume(slot.device.id, &connect.client_id, connect.clean_session);
    // A resumed session gets what changed while it was away, as MQTT delivers a persistent
    // session's queued messages on reconnect: here the latest values, not every one.
    let resync = saved.as_ref().map(|saved| SyncSelection::Reconnect {
        known_version: Some(saved.known_version),
    });
    if !context.engine.prepare_attach(&slot).await {
        return;
    }
    let Some(mut attached) =
        context
            .engine
            .attach(&slot, Protocol::Mqtt, context.limits.send_queue, resync)
    else {
        tracing::info!(%peer, device = slot.device.id, "MQTT connection closed: device deleted");
        return;
    };
    tracing::info!(
        %peer, device = slot.device.id, name = %slot.device.name, session = attached.session_id,
        client_id = %connect.client_id, clean = connect.clean_session,
        resumed = saved.is_some(), keep_alive = connect.keep_alive,
        replaced = attached.replaced_previous, "device connected (mqtt)"
    );
    let mut session = Session {
        slot: slot.clone(),
        context: context.clone(),
        rate: RateLimiter::new(
            context.limits.messages_per_second,
            context.limits.message_burst,
        ),
        out: BytesMut::with_capacity(256),
        sent_qos0: Vec::new(),
        next_packet_id: 0,
        unacked: HashMap::new(),
        held: Vec::new(),
        subscriptions: Vec::new(),
        newest_sent: HashMap::new(),
    };
    let session_present = saved.is_some();
    if let Some(saved) = saved {
        session.subscriptions = saved.subscriptions;
    }
    let _ = ConnAck::new(ConnectReturnCode::Success, session_present).write(&mut session.out);
    if session_present {
        // Computed under the same lock as the registration: nothing forwarded can precede it.
        session.send_sync(std::mem::take(&mut attached.sync));
    }
    let ending = match session.flush(&mut stream).await {
        Err(error) => Ending::Io(error),
        Ok(()) => {
            session
                .run(
                    &mut stream,
                    &mut inbox,
                    &mut attached.outbound,
                    attached.kill.clone(),
                    connect.keep_alive,
                )
                .await
        }
    };
    if ending.publishes_will()
        && let Some(will) = &connect.last_will
    {
        session.publish_will(will).await;
    }
    if !connect.clean_session {
        let saved = SavedSession {
            subscriptions: std::mem::take(&mut session.subscriptions),
            known_version: session.known_version(&mut attached.outbound),
        };
        mqtt.sessions
            .save(slot.device.id, &connect.client_id, saved);
    }
    context.engine.detach(&slot, attached.session_id);
    let _ = stream.shutdown().await;
    tracing::info!(%peer, device = slot.device.id, dropped = session.rate.dropped(), reason = %ending, "device disconnected (mqtt)");
}

/// What a handled packet asks the loop to send, in the order the packets came.
pub(super) enum Reply {
    /// The PUBACK of a QoS 1 publish.
    PubAck(u16),
    /// A refusal for `downlink/error` (and the log).
    Error(String),
    /// The answer to `get/ds` or `get/ds/all`: the values, then the end marker. The values are
    /// read when the answer is written, not when the request came: an MQTT device has no
    /// versions to tell an old value from a new one, so an app write forwarded in between must
    /// not be followed by the older value it replaced.
    Sync(SyncSelection),
}

pub(super) type InFlight = std::pin::Pin<Box<dyn Future<Output = Vec<Reply>> + Send>>;

pub(super) fn ready(replies: Vec<Reply>) -> InFlight {
    Box::pin(std::future::ready(replies))
}

pub(super) struct Session {
    pub(super) slot: Arc<DeviceSlot>,
    pub(super) context: Arc<Context>,
    rate: RateLimiter,
    /// Bytes to send at the next flush.
    out: BytesMut,
    /// Values in `out` sent with QoS 0: delivered once `out` is written.
    sent_qos0: Vec<(Pin, u64)>,
    next_packet_id: u16,
    /// Values sent with QoS 1, by packet id, until the device's PUBACK.
    unacked: HashMap<u16, (Pin, u64)>,
    /// Values (and unclaimed commands) no subscription matched yet.
    held: Vec<Outbound>,
    subscriptions: Vec<Subscription>,
    /// The newest version sent of each pin.
    newest_sent: HashMap<Pin, u64>,
}

impl Session {
    async fn run<S>(
        &mut self,
        stream: &mut S,
        inbox: &mut BytesMut,
        outbound: &mut OutboundQueue,
        kill: Arc<tokio::sync::Notify>,
        keep_alive: u16,
    ) -> Ending
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        // MQTT 3.1.1 section 3.1.2.10: silent for 1.5 keep-alives means gone. A client that
        // turns keep-alive off gets the classic devices' default heartbeat rule instead, so
        // that no connection stays open forever.
        let silence = match keep_alive.min(MAX_KEEP_ALIVE_SECONDS) {
            0 => Limits::silence_timeout(self.context.limits.default_heartbeat_seconds),
            seconds => Duration::from_millis(u64::from(seconds) * 1500),
        };
        // On the server's clock, which a test may move.
        let clock = self.context.engine.clock().clone();
        let mut deadline = clock.now() + silence;
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        let mut shutdown = self.context.shutdown.clone();
        loop {
            // Handle every whole packet already buffered, unless too many writes are in flight.
            while in_flight.len() < MAX_IN_FLIGHT {
                let packet = match Packet::read(inbox, MAX_PACKET) {
                    Ok(packet) => packet,
                    Err(CodecError::InsufficientBytes(_)) => break,
                    Err(error) => return Ending::Malformed(error),
                };
                // Only whole packets renew the deadline: a trickle of bytes does not.
                deadline = clock.now() + silence;
                if let Some(ending) = self.handle(packet, &mut in_flight).await {
                    let _ = self.flush(stream).await;
                    return ending;
                }
            }
            if let Err(error) = self.flush(stream).await {
                return Ending::Io(error);
            }
            let can_read = in_flight.len() < MAX_IN_FLIGHT;
            let can_send = self.unacked.len() < MAX_UNACKED;
            tokio::select! {
                read = read_more(stream, inbox), if can_read => match read {
                    Ok(0) => return Ending::Closed,
                    Ok(_) => {}
                    Err(error) => return Ending::Io(error),
                },
                Some(replies) = in_flight.next(), if !in_flight.is_empty() => {
                    self.reply(replies);
                    // The replies that are ready as well go out in the same socket write.
                    while let Poll::Ready(Some(more)) =
                        std::future::poll_fn(|cx| Poll::Ready(in_flight.poll_next_unpin(cx))).await
                    {
                        self.reply(more);
                    }
                }
                message = outbound.recv(), if can_send => match message {
                    Some(message) => self.forward(message).await,
                    None => {
                        self.context.engine.metrics().slow_device_closed();
                        return Ending::Engine("dropped by the server (too slow to read)");
                    }
                },
                () = kill.notified() => {
                    if outbound.overflowed() {
                        self.context.engine.metrics().slow_device_closed();
                    }
                    return Ending::Engine("closed by the server (replaced by a newer connection, too slow to read, or deleted)");
                }
                () = tokio::time::sleep_until(clock.timer_deadline(deadline)) => {
                    if clock.now() >= deadline {
                        return Ending::Silent(silence);
                    }
                }
                _ = shutdown.changed() => return Ending::Shutdown,
            }
        }
    }

    /// The highest version below every value the device has not received: the device's
    /// version, lowered for values still queued, held or unacknowledged. Drains `outbound`.
    fn known_version(&self, outbound: &mut OutboundQueue) -> u64 {
        // Read first: a value forwarded after this has a higher version, so it counts as
        // missed even if it lands in the queue after the drain below.
        let version = self.slot.version();
        let mut missed: Vec<u64> = self.unacked.values().map(|(_, version)| *version).collect();
        missed.extend(self.held.iter().map(|held| held.version));
        // A value written to the buffer but not to the socket was not received either.
        missed.extend(self.sent_qos0.iter().map(|(_, version)| *version));
        while let Ok(queued) = outbound.try_recv() {
            missed.push(queued.version);
        }
        missed
            .into_iter()
            .map(|version| version.saturating_sub(1))
            .fold(version, u64::min)
    }

    /// Writes what is waiting, then reports the QoS 0 values in it delivered.
    async fn flush<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        stream.write_all(&self.out).await?;
        stream.flush().await?;
        self.out.clear();
        if self.out.capacity() > 4 * MAX_PACKET {
            self.out = BytesMut::with_capacity(256);
        }
        for (pin, version) in std::mem::take(&mut self.sent_qos0) {
            self.context.engine.delivered(&self.slot, pin, version);
        }
        Ok(())
    }

    /// Handles one packet; `Some` ends the session.
    async fn handle(
        &mut self,
        packet: Packet,
        in_flight: &mut FuturesOrdered<InFlight>,
    ) -> Option<Ending> {
        let counted = matches!(
            packet,
            Packet::Publish(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) | Packet::PingReq
        );
        // Every request counts, pings included, as on the classic server: a flood is a flood.
        // A dropped QoS 1 publish is not acknowledged, so the client sends it again after it
        // reconnects; `downlink/error` says why, at most once a minute.
        if counted && !self.rate.allow() {
            self.context.engine.metrics().rate_limited(1);
            if self.rate.warn_device(self.slot.device.id) {
                in_flight.push_back(ready(vec![Reply::Error(
                    "message rate limit exceeded; messages are being dropped".into(),
                )]));
            }
            return None;
        }
        match packet {
            Packet::Publish(publish) => return self.publish(publish, in_flight),
            Packet::Subscribe(subscribe) => self.subscribe(subscribe).await,
            Packet::Unsubscribe(unsubscribe) => {
                self.subscriptions
                    .retain(|subscription| !unsubscribe.topics.contains(&subscription.filter));
                let _ = UnsubAck::new(unsubscribe.pkid).write(&mut self.out);
            }
            Packet::PubAck(ack) => {
                if let Some((pin, version)) = self.unacked.remove(&ack.pkid) {
                    self.context.engine.delivered(&self.slot, pin, version);
                }
            }
            Packet::PingReq => {
                let _ = PingResp.write(&mut self.out);
            }
            Packet::Disconnect => return Some(Ending::Disconnected),
            Packet::Connect(_) => return Some(Ending::Violation("a second CONNECT")),
            Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => {
                return Some(Ending::Violation(
                    "a QoS 2 packet (QoS 2 is not supported; use QoS 0 or 1)",
                ));
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Some(Ending::Violation("a packet only a server sends"));
            }
        }
        None
    }

    /// Turns replies into packets.
    pub(super) fn reply(&mut self, replies: Vec<Reply>) {
        for reply in replies {
            match reply {
                Reply::PubAck(pkid) => {
                    let _ = PubAck::new(pkid).write(&mut self.out);
                }
                Reply::Error(reason) => {
                    tracing::info!(device = self.slot.device.id, %reason, "MQTT publish refused");
                    self.send(topics::ERROR, reason.into_bytes(), QoS::AtMostOnce, None);
                }
                Reply::Sync(selection) => {
                    let items = self.context.engine.sync_items(&self.slot, &selection);
                    self.send_sync(items);
                }
            }
        }
    }

    /// Publishes sync values on their subscribed topics, then the end marker with their count.
    fn send_sync(&mut self, items: Vec<SyncItem>) {
        let mut count = 0usize;
        for item in items {
            if self.send_value(item.pin, &item.value, item.version) {
                count += 1;
            }
        }
        self.send(
            topics::SYNC_DONE,
            count.to_string().into_bytes(),
            QoS::AtMostOnce,
            None,
        );
    }

    /// The highest QoS among the subscriptions matching `topic`, or `None` when none does.
    fn subscribed(&self, topic: &str) -> Option<QoS> {
        self.subscriptions
            .iter()
            .filter(|subscription| topics::filter_matches(topic, &subscription.filter))
            .map(|subscription| subscription.qos)
            .reduce(|best, qos| if qos > best { qos } else { best })
    }

    /// Publishes to the device if it subscribed to `topic`, at most with `max_qos`; `value` is
    /// the pin and version to report delivered. Returns whether it was sent.
    fn send(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        max_qos: QoS,
        value: Option<(Pin, u64)>,
    ) -> bool {
        let Some(granted) = self.subscribed(topic) else {
            return false;
        };
        let qos = if granted < max_qos { granted } else { max_qos };
        let mut publish = Publish::new(topic, qos, payload);
        if qos == QoS::AtLeastOnce {
            publish.pkid = self.packet_id();
            if let Some(value) = value {
                self.unacked.insert(publish.pkid, value);
            }
        } else if let Some(value) = value {
            self.sent_qos0.push(value);
        }
        let _ = publish.write(&mut self.out);
        true
    }

    /// Publishes a value on `downlink/ds/<name>` if the device subscribed to it.
    ///
    /// A value older than one already sent for its pin is skipped (a value queued before a sync
    /// answer that carried a newer one): the device has no versions to sort them by.
    fn send_value(&mut self, pin: Pin, value: &OwnedValue, version: u64) -> bool {
        if self
            .newest_sent
            .get(&pin)
            .is_some_and(|newest| *newest > version)
        {
            return false;
        }
        let topic = topics::value_topic(&self.slot.template, pin);
        let payload = value.text_parts().join("\0").into_bytes();
        let sent = self.send(&topic, payload, QoS::AtLeastOnce, Some((pin, version)));
        if sent {
            self.newest_sent.insert(pin, version);
        }
        sent
    }

    /// A packet id not in use by an unacknowledged publish (never 0).
    fn packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
            if !self.unacked.contains_key(&self.next_packet_id) {
                return self.next_packet_id;
            }
        }
    }

    /// A value from the engine (an app write, or a command): sent if the device subscribed to
    /// its topic, else held until it does; a command is claimed only when it is sent.
    async fn forward(&mut self, outbound: Outbound) {
        let topic = topics::value_topic(&self.slot.template, outbound.pin);
        if self.subscribed(&topic).is_none() {
            self.hold(outbound);
            return;
        }
        if let Some(command_id) = outbound.command
            && !self
                .context
                .engine
                .claim_command(&self.slot, command_id)
                .await
        {
            return;
        }
        self.send_value(outbound.pin, &outbound.value, outbound.version);
    }

    /// Keeps a value for a later subscription: the latest per datastream, every command.
    fn hold(&mut self, outbound: Outbound) {
        if outbound.command.is_none()
            && let Some(older) = self
                .held
                .iter_mut()
                .find(|held| held.command.is_none() && held.pin == outbound.pin)
        {
            if older.version < outbound.version {
                *older = outbound;
            }
            return;
        }
        if self.held.len() >= MAX_HELD {
            // An unclaimed command stays pending in the engine; a state value is in the store,
            // where `get/ds` finds it.
            tracing::warn!(
                device = self.slot.device.id,
                "values for unsubscribed topics: oldest dropped"
            );
            self.held.remove(0);
        }
        self.held.push(outbound);
    }

    /// SUBSCRIBE: filters under `downlink/` are granted (QoS 2 is granted as 1), others refused;
    /// then held values that now match are sent.
    async fn subscribe(&mut self, subscribe: Subscribe) {
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        for filter in subscribe.filters {
            let qos = if filter.qos == QoS::AtMostOnce {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            let existing = self
                .subscriptions
                .iter()
                .position(|subscription| subscription.filter == filter.path);
            let code = if !topics::allowed_filter(&filter.path) {
                tracing::info!(device = self.slot.device.id, filter = %filter.path, "MQTT subscription refused: only topics under downlink/ are published");
                SubscribeReasonCode::Failure
            } else if let Some(index) = existing {
                self.subscriptions[index].qos = qos;
                SubscribeReasonCode::Success(qos)
            } else if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                tracing::info!(device = self.slot.device.id, filter = %filter.path, "MQTT subscription refused: {MAX_SUBSCRIPTIONS} already");
                SubscribeReasonCode::Failure
            } else {
                self.subscriptions.push(Subscription {
                    filter: filter.path,
                    qos,
                });
                SubscribeReasonCode::Success(qos)
            };
            codes.push(code);
        }
        let _ = SubAck::new(subscribe.pkid, codes).write(&mut self.out);
        for held in std::mem::take(&mut self.held) {
            self.forward(held).await;
        }
    }
}

/// Reads more bytes. Cancel-safe: bytes land in the buffer only when the read completes.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    inbox: &mut BytesMut,
) -> std::io::Result<usize> {
    inbox.reserve(512);
    stream.read_buf(inbox).await
}
