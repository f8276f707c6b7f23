//! GROUP (21): `b` begins a group whose writes are applied together when `e` ends it;
//! `t\0<unix ms>` begins one whose writes were measured at that time (SPEC 3.14: older than the
//! pin's latest value means history only, with that time in the history).
//!
//! The writes are held until `e`, then applied back to back, so apps get them as one batch. A
//! group holds at most [`MAX_GROUP_WRITES`] writes: one more applies those so far and the group
//! goes on. A group never ended is applied by the next frame that is neither a HARDWARE write
//! nor a GROUP, or at disconnect. A `b` or `t` inside an open group applies it and begins anew.

use std::sync::Arc;

use blynk_proto::classic::{GroupCommand, Status};
use blynk_proto::{Pin, Value};

use super::{Answers, body_status};
use crate::engine::{DeviceSlot, Engine};
use crate::model::OwnedValue;
use crate::session::classic_reply::response;

/// The most writes one group holds before they are applied.
pub const MAX_GROUP_WRITES: usize = 64;

/// The group a connection has open, if any.
#[derive(Default)]
pub struct GroupBuffer {
    open: Option<OpenGroup>,
}

struct OpenGroup {
    /// When its writes were measured (ms since the epoch); `None`: as they are applied.
    made_at: Option<i64>,
    writes: Vec<(u16, Pin, OwnedValue)>,
}

impl GroupBuffer {
    /// A GROUP frame.
    pub fn frame(
        &mut self,
        engine: &Engine,
        slot: &Arc<DeviceSlot>,
        id: u16,
        body: &[u8],
        answers: &mut Answers<'_>,
    ) {
        let command = match GroupCommand::parse(body) {
            Ok(command) => command,
            Err(error) => {
                tracing::info!(device = slot.device.id, %error, "group frame refused");
                response(answers.out, id, body_status(&error));
                return;
            }
        };
        // Whatever it is, a group still open is complete now.
        self.apply_open(engine, slot, answers);
        let made_at = match command {
            GroupCommand::End => return,
            GroupCommand::Begin => None,
            GroupCommand::BeginAt { unix_ms } => Some(i64::try_from(unix_ms).unwrap_or(i64::MAX)),
        };
        self.open = Some(OpenGroup {
            made_at,
            writes: Vec::new(),
        });
    }

    /// Holds a write when a group is open (true); false when none is.
    pub fn write(
        &mut self,
        engine: &Engine,
        slot: &Arc<DeviceSlot>,
        id: u16,
        pin: Pin,
        value: &Value<'_>,
        answers: &mut Answers<'_>,
    ) -> bool {
        let Some(group) = &mut self.open else {
            return false;
        };
        if group.writes.len() == MAX_GROUP_WRITES {
            let made_at = group.made_at;
            let full = std::mem::take(&mut group.writes);
            tracing::debug!(
                device = slot.device.id,
                "group over {MAX_GROUP_WRITES} writes: applying those so far"
            );
            apply(engine, slot, made_at, full, answers);
        }
        if let Some(group) = &mut self.open {
            group.writes.push((id, pin, OwnedValue::from_value(value)));
        }
        true
    }

    /// Applies the open group, if any, and closes it.
    pub fn apply_open(
        &mut self,
        engine: &Engine,
        slot: &Arc<DeviceSlot>,
        answers: &mut Answers<'_>,
    ) {
        if let Some(group) = self.open.take() {
            apply(engine, slot, group.made_at, group.writes, answers);
        }
    }
}

fn apply(
    engine: &Engine,
    slot: &Arc<DeviceSlot>,
    made_at: Option<i64>,
    writes: Vec<(u16, Pin, OwnedValue)>,
    answers: &mut Answers<'_>,
) {
    for (id, pin, value) in writes {
        match value.as_value() {
            Ok(value) => super::device_write(engine, slot, id, pin, &value, made_at, answers),
            Err(_) => response(answers.out, id, Status::IllegalCommandBody),
        }
    }
}
