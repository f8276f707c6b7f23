//! The newer classic commands, beside the classic session's basics: GROUP batches (plain and
//! timestamped, SPEC 3.14), BRIDGE channels to other devices, INTERNAL time requests and
//! DEBUG_PRINT from devices. The session keeps one [`ClassicExtras`] per connection and calls
//! it from its dispatch; every reply is a pending future on the session's in-flight queue, so
//! replies keep the order of the frames they answer.

mod bridge;
mod group;
pub mod time;

use std::net::IpAddr;
use std::num::NonZeroU16;
use std::sync::Arc;

use blynk_proto::classic::{self, ClassicError, Command, HEADER_LEN, Status};
use blynk_proto::{Pin, Value};
use futures_util::stream::FuturesOrdered;

use super::Context;
use crate::engine::{DeviceSlot, Engine, WriteError};
use crate::model::Origin;

pub use bridge::MAX_BRIDGE_CHANNELS;
pub use group::MAX_GROUP_WRITES;

/// A reply that becomes known later (once a write is durable): the frame to send, if any.
pub type Pending = std::pin::Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;

/// The per-connection state of the newer classic commands.
pub struct ClassicExtras {
    peer: IpAddr,
    group: group::GroupBuffer,
    bridges: bridge::BridgeChannels,
}

impl ClassicExtras {
    /// State for a connection from `peer`.
    pub fn new(peer: IpAddr) -> Self {
        ClassicExtras {
            peer,
            group: group::GroupBuffer::default(),
            bridges: bridge::BridgeChannels::default(),
        }
    }

    /// Before any frame: a group left open is applied by the next frame that is neither a
    /// HARDWARE write nor a GROUP (the device has moved on without `e`).
    pub fn before_frame(
        &mut self,
        command: Command,
        engine: &Engine,
        slot: &Arc<DeviceSlot>,
        in_flight: &mut FuturesOrdered<Pending>,
    ) {
        if !matches!(command, Command::Hardware | Command::Group) {
            self.group.apply_open(engine, slot, in_flight);
        }
    }

    /// A GROUP frame.
    pub fn group(
        &mut self,
        engine: &Engine,
        slot: &Arc<DeviceSlot>,
        id: u16,
        body: &[u8],
        in_flight: &mut FuturesOrdered<Pending>,
    ) {
        self.group.frame(engine, slot, id, body, in_flight);
    }

    /// A device write: buffered when a group is open (true), else left to the caller (false).
    pub fn grouped_write(
        &mut self,
        engine: &Engine,
        slot: &Arc<DeviceSlot>,
        id: u16,
        pin: Pin,
        value: &Value<'_>,
        in_flight: &mut FuturesOrdered<Pending>,
    ) -> bool {
        self.group.write(engine, slot, id, pin, value, in_flight)
    }

    /// At disconnect: an open group is applied (its writes were received whole).
    pub fn finish(&mut self, engine: &Engine, slot: &Arc<DeviceSlot>) {
        // The replies have no connection to go to; the writes are queued to the store in the
        // engine's step, so dropping their futures loses nothing.
        let mut dropped = FuturesOrdered::new();
        self.group.apply_open(engine, slot, &mut dropped);
    }

    /// A BRIDGE frame.
    pub fn bridge(
        &mut self,
        context: &Context,
        slot: &Arc<DeviceSlot>,
        id: u16,
        body: &[u8],
        in_flight: &mut FuturesOrdered<Pending>,
    ) {
        self.bridges
            .frame(context, self.peer, slot, id, body, in_flight);
    }

    /// An INTERNAL time request (`rtc`, `utc`): the answer frame, or a refusal for an unknown
    /// one. `None` when the request has id 0 (no reply can carry it).
    pub fn time_request(
        &self,
        context: &Context,
        slot: &DeviceSlot,
        id: u16,
        kind: &str,
        what: Option<&str>,
    ) -> Option<Vec<u8>> {
        let id = NonZeroU16::new(id)?;
        let zone = time::device_timezone(slot, &context.timezone);
        let Some(parts) = time::answer(kind, what, &zone, crate::model::now_ms()) else {
            tracing::info!(
                device = slot.device.id,
                kind,
                what,
                "unknown time request refused"
            );
            return response(id.get(), Status::IllegalCommandBody);
        };
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut out = vec![0u8; HEADER_LEN + 256];
        classic::encode_parts(&mut out, Command::Internal, id, &parts)
            .ok()
            .map(<[u8]>::to_vec)
    }
}

/// DEBUG_PRINT (55) from a device: its text is logged at debug level; no reply (the Blynk
/// server sent none).
pub fn debug_print(slot: &DeviceSlot, body: &[u8]) {
    const MAX_LOGGED: usize = 256;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_LOGGED)]);
    tracing::debug!(device = slot.device.id, text = %text.trim_end_matches('\0'), "device debug print");
}

/// A status frame, or `None` for id 0: a reply with id 0 makes the libraries drop the
/// connection, so a frame sent with id 0 gets no reply.
fn response(id: u16, status: Status) -> Option<Vec<u8>> {
    let id = NonZeroU16::new(id)?;
    let mut out = vec![0u8; HEADER_LEN];
    classic::encode_response(&mut out, id, status).ok()?;
    Some(out)
}

/// A reply known now, queued behind the pending ones.
fn ready(frame: Option<Vec<u8>>) -> Pending {
    Box::pin(std::future::ready(frame))
}

/// The status a refused write gets, as for a device's own writes.
fn write_status(error: &WriteError) -> Status {
    match error {
        WriteError::UnknownPin(_) | WriteError::Invalid(_) => Status::IllegalCommandBody,
        WriteError::Deleted => Status::InvalidToken,
        WriteError::Store(_) | WriteError::ShuttingDown => Status::ServerException,
    }
}

/// Applies a device write measured at `made_at` and queues its reply: nothing once durable
/// (the classic server never acknowledged writes), an error status otherwise.
fn device_write(
    engine: &Engine,
    slot: &Arc<DeviceSlot>,
    id: u16,
    pin: Pin,
    value: &Value<'_>,
    made_at: Option<i64>,
    in_flight: &mut FuturesOrdered<Pending>,
) {
    match engine.device_write_at(slot, pin, value, made_at, Origin::Device) {
        Ok(durable) => {
            let device = slot.device.id;
            in_flight.push_back(Box::pin(async move {
                match durable.await {
                    Ok(_) => None,
                    Err(error) => {
                        tracing::error!(device, %pin, %error, "grouped device write not stored");
                        response(id, Status::ServerException)
                    }
                }
            }));
        }
        Err(error) => {
            tracing::info!(device = slot.device.id, %pin, %error, "grouped device write refused");
            in_flight.push_back(ready(response(id, write_status(&error))));
        }
    }
}

/// The status of a body that cannot be read.
fn body_status(error: &ClassicError) -> Status {
    match error {
        ClassicError::UnknownSubCommand => Status::IllegalCommand,
        ClassicError::BadToken => Status::InvalidToken,
        _ => Status::IllegalCommandBody,
    }
}
