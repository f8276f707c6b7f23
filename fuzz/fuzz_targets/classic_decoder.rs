//! The classic frame decoder and every body parser over what it yields; whatever parses as a
//! HARDWARE write re-encodes (or is refused with an error, never a panic).

#![no_main]

use std::num::NonZeroU16;

use blynk_proto::Value;
use blynk_proto::classic::{
    self, BridgeCommand, DeviceInfo, EventLog, GroupCommand, HardwareCommand, PropertyUpdate,
    SyncRequest,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the body limit, as a peer's `buff-in` would.
    let Some((limit, bytes)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max_body = usize::from(u16::from_be_bytes(*limit));
    let mut rest = bytes;
    while let Ok(classic::Decoded::Frame { frame, consumed }) = classic::decode(rest, max_body) {
        assert!(consumed > 0 && consumed <= rest.len());
        parse_body(frame.body);
        rest = &rest[consumed..];
    }
    // Bodies on their own, as a GROUP or a WebSocket message would carry them.
    parse_body(bytes);
});

fn parse_body(body: &[u8]) {
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

fn reencode(pin: blynk_proto::Pin, value: &Value<'_>) {
    let mut out = vec![0u8; classic::HEADER_LEN + classic::MAX_BODY];
    let _ = classic::encode_write(&mut out, NonZeroU16::MIN, classic::MAX_BODY, pin, value);
}
