//! BRIDGE (15): a device binds a channel to another device by its token
//! (`<channel>\0i\0<token>`, answered 200), then writes that device's pins through it
//! (`<channel>\0vw\0<pin>\0<value>...`, also `dw` and `aw`). A bridge write is an app-side
//! write of the target device with origin `bridge`: validated, stored, forwarded to the target
//! if it is online (its handler runs) and published to its watchers; nothing is sent back on
//! success, as for a device's own writes.
//!
//! Refusals, with the Blynk server's statuses: a token of no device, 9 (and it counts as a
//! failed login of the connection's address); a write on a channel never bound, 6; more than
//! [`MAX_BRIDGE_CHANNELS`] channels, 6; a pin without datastream or a bad value, 11.

use std::net::IpAddr;
use std::sync::Arc;

use blynk_proto::classic::{BridgeCommand, Status};
use futures_util::FutureExt;

use super::{Answers, body_status};
use crate::engine::DeviceSlot;
use crate::login_limiter::Verdict;
use crate::model::{Origin, OwnedValue};
use crate::session::Context;
use crate::session::classic_reply::response;
use crate::session::refusal::classic_status;

/// The most channels one connection may bind (the library's bridges are one per widget).
pub const MAX_BRIDGE_CHANNELS: usize = 16;

/// The channels a connection has bound.
#[derive(Default)]
pub struct BridgeChannels {
    bound: Vec<(u8, Arc<DeviceSlot>)>,
}

impl BridgeChannels {
    /// A BRIDGE frame.
    pub fn frame(
        &mut self,
        context: &Context,
        peer: IpAddr,
        slot: &Arc<DeviceSlot>,
        id: u16,
        body: &[u8],
        answers: &mut Answers<'_>,
    ) {
        let device = slot.device.id;
        let command = match BridgeCommand::parse(body) {
            Ok(command) => command,
            Err(error) => {
                if matches!(error, blynk_proto::classic::ClassicError::BadToken) {
                    let _ = context.login_limiter.record_failure(peer);
                }
                tracing::info!(device, %error, "bridge frame refused");
                return response(answers.out, id, body_status(&error));
            }
        };
        match command {
            BridgeCommand::Bind { channel, token } => {
                let status = self.bind(context, peer, device, channel, token.as_str());
                response(answers.out, id, status);
            }
            BridgeCommand::Write { .. } => match command.as_write() {
                Some(Ok((channel, pin, value))) => {
                    let Some(target) = self.target(channel) else {
                        tracing::info!(device, channel, "bridge write on a channel never bound");
                        return response(answers.out, id, Status::NotAllowed);
                    };
                    let value = OwnedValue::from_value(&value);
                    let engine = context.engine.clone();
                    let mut write = Box::pin(async move {
                        let Ok(value) = value.as_value() else {
                            return Some((id, Status::IllegalCommandBody));
                        };
                        match engine.app_write(&target, pin, &value, Origin::Bridge).await {
                            Ok(_) => None,
                            Err(error) => {
                                tracing::info!(device, target = target.device.id, %pin, %error, "bridge write refused");
                                Some((id, classic_status(&error)))
                            }
                        }
                    });
                    // Take the write's version now, in frame order; only durability is awaited
                    // later. A future that finished at once must not be polled again.
                    match (&mut write).now_or_never() {
                        Some(Some((id, status))) => response(answers.out, id, status),
                        Some(None) => {}
                        None => answers.in_flight.push(write),
                    }
                }
                Some(Err(error)) => {
                    tracing::info!(device, %error, "bridge write refused");
                    response(answers.out, id, Status::IllegalCommandBody);
                }
                None => response(answers.out, id, Status::IllegalCommand),
            },
        }
    }

    fn bind(
        &mut self,
        context: &Context,
        peer: IpAddr,
        device: crate::model::DeviceId,
        channel: u8,
        token: &str,
    ) -> Status {
        let Some(target) = context.engine.authenticate(token) else {
            return match context.login_limiter.record_failure(peer) {
                Verdict::Counted => {
                    tracing::info!(device, channel, "bridge token refused: no device has it");
                    Status::InvalidToken
                }
                Verdict::Limited { .. } => {
                    tracing::warn!(device, %peer, "bridge token refused: no device has it, too many failed logins from this address");
                    Status::QuotaLimit
                }
            };
        };
        if let Some((_, slot)) = self.bound.iter_mut().find(|(bound, _)| *bound == channel) {
            *slot = target;
        } else if self.bound.len() < MAX_BRIDGE_CHANNELS {
            self.bound.push((channel, target));
        } else {
            tracing::info!(
                device,
                channel,
                "bridge refused: {MAX_BRIDGE_CHANNELS} channels already bound"
            );
            return Status::NotAllowed;
        }
        Status::Ok
    }

    fn target(&self, channel: u8) -> Option<Arc<DeviceSlot>> {
        self.bound
            .iter()
            .find(|(bound, _)| *bound == channel)
            .map(|(_, slot)| slot.clone())
    }
}
