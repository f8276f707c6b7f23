//! Every classic body parser over one body, and every accessor of what they return; a body that
//! parses as a HARDWARE write is re-encoded (or refused with an error, never a panic).
//!
//! Shared by `never_panics` and the `classic_decoder` fuzz target (`fuzz/`), which includes
//! this file by path, so both check the same parsers.

use std::num::NonZeroU16;

use blynk_proto::Value;
use blynk_proto::classic::{
    self, BridgeCommand, DeviceInfo, EventLog, GroupCommand, HardwareCommand, PropertyUpdate,
    SyncRequest,
};

/// Runs every classic body parser over `body`, and every accessor of what they return.
pub fn parse_classic_body(body: &[u8]) {
    if let Ok(command) = HardwareCommand::parse(body)
        && let Some(Ok((pin, value))) = command.as_write()
    {
        reencode(pin, &value);
    }
    if let Ok(request) = SyncRequest::parse(body) {
        let _ = request.pins().count();
    }
    if let Ok(info) = DeviceInfo::parse(body) {
        let _ = info.pairs().count();
        let _ = (info.kind(), info.get("ver"));
        let _ = (info.heartbeat_seconds(), info.buffer_in());
    }
    if let Ok(property) = PropertyUpdate::parse(body) {
        let _ = Value::from_classic_parts(property.values);
    }
    let _ = EventLog::parse(body);
    let _ = classic::parse_login(body);
    let _ = GroupCommand::parse(body);
    if let Ok(bridge) = BridgeCommand::parse(body) {
        let _ = bridge.as_write();
    }
}

/// Encodes a write of `value` to `pin` into a frame of the largest body.
fn reencode(pin: blynk_proto::Pin, value: &Value<'_>) {
    let mut out = vec![0u8; classic::HEADER_LEN + classic::MAX_BODY];
    let _ = classic::encode_write(&mut out, NonZeroU16::MIN, classic::MAX_BODY, pin, value);
}
