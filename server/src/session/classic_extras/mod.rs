//! The newer classic commands, beside the classic session's basics: GROUP batches (plain and
//! timestamped, SPEC 3.14), BRIDGE channels to other devices, INTERNAL time requests and
//! DEBUG_PRINT from devices. The classic session makes one [`ClassicExtras`] at a connection's
//! first GROUP or BRIDGE frame and calls it from its dispatch, as the driver expects: answers
//! known at once go to the outgoing frames, writes waiting for durability to the in-flight queue
//! (answered in frame order).

mod bridge;
mod group;
pub mod time;

use std::net::IpAddr;
use std::num::NonZeroU16;
use std::sync::Arc;

use blynk_proto::classic::{self, ClassicError, Command, HEADER_LEN, Status};
use blynk_proto::{Pin, Value};

use super::Context;
use super::classic_reply::{Done, response};
use super::connection::Outgoing;
use super::in_flight::InFlight;
use crate::engine::{DeviceSlot, Engine};
use crate::model::Origin;
use crate::session::refusal::classic_status;

pub use bridge::MAX_BRIDGE_CHANNELS;
pub use group::MAX_GROUP_WRITES;

/// Where the answers to a frame go: frames known at once, and writes waiting for durability
/// (answered in frame order by the driver).
pub struct Answers<'a> {
    /// Frames to send now.
    pub out: &'a mut Outgoing,
    /// Requests answered once done.
    pub in_flight: &'a mut InFlight<Done>,
}

/// The per-connection state of the newer classic commands.
pub struct ClassicExtras {
    peer: IpAddr,
    /// The open group, which takes the device's writes while it is open
    /// ([`group::GroupBuffer::write`]).
    pub(super) group: group::GroupBuffer,
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
        answers: &mut Answers<'_>,
    ) {
        if !matches!(command, Command::Hardware | Command::Group) {
            self.group.apply_open(engine, slot, answers);
        }
    }

    /// A GROUP or BRIDGE frame (`command`); any other command is not theirs and is ignored.
    pub fn frame(
        &mut self,
        command: Command,
        context: &Context,
        slot: &Arc<DeviceSlot>,
        id: u16,
        body: &[u8],
        answers: &mut Answers<'_>,
    ) {
        match command {
            Command::Group => self.group.frame(&context.engine, slot, id, body, answers),
            Command::Bridge => self
                .bridges
                .frame(context, self.peer, slot, id, body, answers),
            _ => {}
        }
    }

    /// At disconnect: an open group is applied (its writes were received whole).
    pub fn finish(&mut self, engine: &Engine, slot: &Arc<DeviceSlot>) {
        // The replies have no connection to go to; the writes are queued to the store when they
        // are made, so dropping their answers loses nothing.
        let mut answers = Answers {
            out: &mut Outgoing::default(),
            in_flight: &mut InFlight::default(),
        };
        self.group.apply_open(engine, slot, &mut answers);
    }
}

/// An INTERNAL time request (`rtc`, `utc`): its answer, or a refusal for an unknown one,
/// queued in `out`. Nothing for id 0 (no reply can carry it).
pub fn time_request(
    context: &Context,
    slot: &DeviceSlot,
    id: u16,
    kind: &str,
    what: Option<&str>,
    out: &mut Outgoing,
) {
    let Some(id) = NonZeroU16::new(id) else {
        return;
    };
    let zone = time::device_timezone(slot, &context.timezone);
    let Some(parts) = time::answer(kind, what, &zone, crate::model::now_ms()) else {
        tracing::info!(
            device = slot.device.id,
            kind,
            what,
            "unknown time request refused"
        );
        return response(out, id.get(), Status::IllegalCommandBody);
    };
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let _ = out.frame(HEADER_LEN + 256, |buf| {
        classic::encode_parts(buf, Command::Internal, id, &parts).map(<[u8]>::len)
    });
}

/// DEBUG_PRINT (55) from a device: its text is logged at debug level; no reply (the Blynk
/// server sent none).
pub fn debug_print(slot: &DeviceSlot, body: &[u8]) {
    const MAX_LOGGED: usize = 256;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_LOGGED)]);
    tracing::debug!(device = slot.device.id, text = %text.trim_end_matches('\0'), "device debug print");
}

/// Applies a device write measured at `made_at` and queues its answer: nothing once durable
/// (the classic server never acknowledged writes), an error status otherwise.
fn device_write(
    engine: &Engine,
    slot: &Arc<DeviceSlot>,
    id: u16,
    pin: Pin,
    value: &Value<'_>,
    made_at: Option<i64>,
    answers: &mut Answers<'_>,
) {
    match engine.device_write_at(slot, pin, value, made_at, Origin::Device) {
        Ok(durable) => {
            let device = slot.device.id;
            answers.in_flight.push(async move {
                match durable.await {
                    Ok(_) => None,
                    Err(error) => {
                        tracing::error!(device, %pin, %error, "grouped device write not stored");
                        Some((id, classic_status(&error)))
                    }
                }
            });
        }
        Err(error) => {
            tracing::info!(device = slot.device.id, %pin, %error, "grouped device write refused");
            response(answers.out, id, classic_status(&error));
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
