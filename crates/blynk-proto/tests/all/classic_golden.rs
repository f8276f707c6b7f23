//! Golden bytes of the classic protocol: every sequence captured from real Blynk libraries.
//!
//! Frames a device sends are decoded and their meaning checked; frames the server sends are
//! built and compared with the captured bytes exactly. A classic header is `u8 command,
//! u16 message id, u16 length`, big-endian; the body is `\0`-separated UTF-8.

use core::num::NonZeroU16;

use blynk_proto::classic::{
    self, BridgeCommand, ClassicError, ClassicFrame, Command, Decoded, DeviceInfo, EventLog,
    GroupCommand, HardwareCommand, MAX_BODY, MessageIds, PropertyUpdate, Status, SyncRequest,
};
use blynk_proto::{Pin, Scalar, Value};

const TOKEN: &str = "Abcdefghijklmnopqrstuvwxyz012345";

/// Room for the largest classic frame.
const OUT: usize = classic::HEADER_LEN + MAX_BODY;

/// Decodes `bytes` as exactly one frame.
fn decode_one(bytes: &[u8]) -> ClassicFrame<'_> {
    match classic::decode(bytes, MAX_BODY).unwrap() {
        Decoded::Frame { frame, consumed } => {
            assert_eq!(consumed, bytes.len(), "one whole frame");
            frame
        }
        Decoded::NeedMore => panic!("a whole frame decoded as NeedMore"),
    }
}

/// Decodes the one frame of `bytes`, checks its command and id, and returns its body.
fn body_of(bytes: &[u8], command: Command, id: u16) -> &[u8] {
    let decoded = decode_one(bytes);
    assert_eq!((decoded.command, decoded.id), (command, id));
    decoded.body
}

fn id(id: u16) -> NonZeroU16 {
    NonZeroU16::new(id).unwrap()
}

fn token_frame() -> Vec<u8> {
    // HW_LOGIN (0x1d = 29), id 1, length 32, then the token.
    let mut frame = vec![0x1d, 0x00, 0x01, 0x00, 0x20];
    frame.extend_from_slice(TOKEN.as_bytes());
    frame
}

#[test]
fn captured_hw_login_carries_the_token() {
    let frame = token_frame();
    let body = body_of(&frame, Command::HwLogin, 1);
    assert_eq!(classic::parse_login(body).unwrap().as_str(), TOKEN);
    // The legacy LOGIN (2) of the Python library carries the same body, sometimes with a
    // trailing NUL.
    let mut legacy = vec![0x02, 0x00, 0x01, 0x00, 0x21];
    legacy.extend_from_slice(TOKEN.as_bytes());
    legacy.push(0);
    let decoded = decode_one(&legacy);
    assert_eq!(decoded.command, Command::Login);
    assert_eq!(classic::parse_login(body).unwrap().as_str(), TOKEN);
}

#[test]
fn captured_response_200_to_the_login_is_built_exactly() {
    let golden = [
        0x00, // RESPONSE
        0x00, 0x01, // the login's id, 1
        0x00, 0xc8, // status 200 in the length field
    ];
    let mut out = [0u8; OUT];
    assert_eq!(
        classic::encode_response(&mut out, id(1), Status::Ok).unwrap(),
        golden
    );
    let decoded = decode_one(&golden);
    assert_eq!(
        (decoded.command, decoded.id, decoded.status),
        (Command::Response, 1, Some(Status::Ok))
    );
    assert!(decoded.body.is_empty());
}

#[test]
fn captured_internal_info_gives_heartbeat_and_buffer() {
    let body: &[u8] = b"ver\x001.4.0\x00h-beat\x0040\x00buff-in\x004096\x00dev\x00Linux\x00build\x00Jan  1 2025 12:00:00";
    for trailing_nul in [false, true] {
        let mut frame = vec![0x11, 0x00, 0x02]; // INTERNAL (17), id 2
        let len = body.len() + usize::from(trailing_nul);
        frame.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        frame.extend_from_slice(body);
        if trailing_nul {
            // One Linux build of the C++ library ends the info frame with a NUL.
            frame.push(0);
        }
        let body = body_of(&frame, Command::Internal, 2);
        let info = DeviceInfo::parse(body).unwrap();
        assert_eq!(info.kind(), Some("ver"));
        assert_eq!(info.get("ver"), Some("1.4.0"));
        assert_eq!(info.heartbeat_seconds(), Some(40));
        assert_eq!(info.buffer_in(), Some(4096));
        assert_eq!(info.get("dev"), Some("Linux"));
        assert_eq!(info.get("build"), Some("Jan  1 2025 12:00:00"));
        assert_eq!(info.get("tmpl"), None);
        assert_eq!(info.pairs().count(), 5);
    }
}

#[test]
fn captured_sync_all_request_is_parsed_and_built() {
    let golden = [
        0x10, // HARDWARE_SYNC (16)
        0x00, 0x03, // id 3
        0x00, 0x00, // empty body: sync all
    ];
    let body = body_of(&golden, Command::HardwareSync, 3);
    let request = SyncRequest::parse(body).unwrap();
    assert_eq!(request, SyncRequest::All);
    assert_eq!(request.pins().count(), 0);
    let mut out = [0u8; OUT];
    assert_eq!(classic::encode_sync(&mut out, id(3), &[]).unwrap(), golden);
}

#[test]
fn spec_4_sync_replies_are_hardware_frames_reusing_the_request_id() {
    // The server's answers to the sync-all of id 3: one HARDWARE frame per pin, same id.
    let v0 = [
        0x14, // HARDWARE (20)
        0x00, 0x03, // the request's id, 3
        0x00, 0x07, // body length 7
        b'v', b'w', 0, b'0', 0, b'4', b'2', // "vw\0" "0\0" "42"
    ];
    let v1 = [
        0x14, 0x00, 0x03, // HARDWARE, id 3
        0x00, 0x06, // body length 6
        b'v', b'w', 0, b'1', 0, b'7', // "vw\0" "1\0" "7"
    ];
    let mut out = [0u8; OUT];
    let built = classic::encode_write(&mut out, id(3), MAX_BODY, Pin::Virtual(0), &Value::int(42));
    assert_eq!(built.unwrap(), v0);
    let built = classic::encode_write(&mut out, id(3), MAX_BODY, Pin::Virtual(1), &Value::int(7));
    assert_eq!(built.unwrap(), v1);
    // And they mean what they say.
    let write = HardwareCommand::parse(decode_one(&v0).body)
        .unwrap()
        .as_write()
        .unwrap()
        .unwrap();
    assert_eq!(write, (Pin::Virtual(0), Value::int(42)));
}

#[test]
fn captured_sync_virtual_request_lists_its_pins() {
    let golden = [
        0x10, 0x00, 0x04, // HARDWARE_SYNC, id 4
        0x00, 0x08, // body length 8
        b'v', b'r', 0, b'0', 0, b'1', 0, b'2', // "vr\0" "0\0" "1\0" "2"
    ];
    let body = body_of(&golden, Command::HardwareSync, 4);
    let pins: Vec<Pin> = SyncRequest::parse(body)
        .unwrap()
        .pins()
        .map(Result::unwrap)
        .collect();
    assert_eq!(pins, [Pin::Virtual(0), Pin::Virtual(1), Pin::Virtual(2)]);
    let mut out = [0u8; OUT];
    assert_eq!(
        classic::encode_sync(&mut out, id(4), &[0, 1, 2]).unwrap(),
        golden
    );
}

#[test]
fn captured_virtual_write_v1_255() {
    let golden = [
        0x14, 0x00, 0x05, // HARDWARE, id 5
        0x00, 0x08, // body length 8
        b'v', b'w', 0, b'1', 0, b'2', b'5', b'5', // "vw\0" "1\0" "255"
    ];
    let body = body_of(&golden, Command::Hardware, 5);
    let command = HardwareCommand::parse(body).unwrap();
    assert!(matches!(
        command,
        HardwareCommand::VirtualWrite { pin: 1, .. }
    ));
    assert_eq!(
        command.as_write().unwrap().unwrap(),
        (Pin::Virtual(1), Value::int(255))
    );
    // The same write built on this side is byte for byte the captured one.
    let mut out = [0u8; OUT];
    assert_eq!(
        classic::encode_write(&mut out, id(5), MAX_BODY, Pin::Virtual(1), &Value::int(255))
            .unwrap(),
        golden
    );
}

#[test]
fn captured_multi_value_write_parses_int_double_and_text() {
    let mut golden = vec![
        0x14, 0x00, 0x06, // HARDWARE, id 6
        0x00, 0x14, // body length 20
    ];
    // The C++ library prints doubles with 7 decimals.
    golden.extend_from_slice(b"vw\x002\x001\x002.5000000\x00abc");
    let decoded = decode_one(&golden);
    assert_eq!(decoded.id, 6);
    let (pin, value) = HardwareCommand::parse(decoded.body)
        .unwrap()
        .as_write()
        .unwrap()
        .unwrap();
    assert_eq!(pin, Pin::Virtual(2));
    assert_eq!(
        value.parts(),
        &[
            Scalar::Int(1),
            Scalar::Double(2.5),
            Scalar::Text(blynk_proto::BoundedStr::new("abc").unwrap())
        ]
    );
}

#[test]
fn captured_set_property() {
    let mut golden = vec![
        0x13, 0x00, 0x07, // PROPERTY (19), id 7
        0x00, 0x0f, // body length 15
    ];
    golden.extend_from_slice(b"1\x00color\x00#FF0000");
    let body = body_of(&golden, Command::Property, 7);
    let property = PropertyUpdate::parse(body).unwrap();
    assert_eq!(property.pin, Pin::Virtual(1));
    assert_eq!(property.name.as_str(), "color");
    let value = Value::from_classic_parts(property.values).unwrap();
    assert_eq!(value, Value::text("#FF0000").unwrap());
    let mut out = [0u8; OUT];
    assert_eq!(
        classic::encode_parts(
            &mut out,
            Command::Property,
            id(7),
            &["1", "color", "#FF0000"]
        )
        .unwrap(),
        golden
    );
}

#[test]
fn captured_log_event() {
    let mut golden = vec![
        0x40, 0x00, 0x08, // EVENT_LOG (64), id 8
        0x00, 0x10, // body length 16
    ];
    golden.extend_from_slice(b"overheat\x00too hot");
    let body = body_of(&golden, Command::EventLog, 8);
    let event = EventLog::parse(body).unwrap();
    assert_eq!(event.code.as_str(), "overheat");
    assert_eq!(event.description, Some("too hot"));
    let mut out = [0u8; OUT];
    assert_eq!(
        classic::encode_parts(&mut out, Command::EventLog, id(8), &["overheat", "too hot"])
            .unwrap(),
        golden
    );
    // The description is optional.
    let bare = EventLog::parse(b"overheat").unwrap();
    assert_eq!(bare.description, None);
}

#[test]
fn captured_multi_value_app_write_is_built_exactly() {
    let mut golden = vec![
        0x14, // HARDWARE
        0x01, 0xf4, // id 500
        0x00, 0x0a, // body length 10
    ];
    golden.extend_from_slice(b"vw\x002\x00x\x00y\x00z");
    let parts =
        ["x", "y", "z"].map(|text| Scalar::Text(blynk_proto::BoundedStr::new(text).unwrap()));
    let value = Value::from_parts(&parts).unwrap();
    let mut out = [0u8; OUT];
    assert_eq!(
        classic::encode_write(&mut out, id(0x01f4), MAX_BODY, Pin::Virtual(2), &value).unwrap(),
        golden
    );
    let (pin, back) = HardwareCommand::parse(decode_one(&golden).body)
        .unwrap()
        .as_write()
        .unwrap()
        .unwrap();
    assert_eq!((pin, back), (Pin::Virtual(2), value));
}

#[test]
fn captured_ping_and_its_answer() {
    let ping = [
        0x06, // PING
        0x01, 0xf5, // id 501
        0x00, 0x00, // empty body
    ];
    let mut out = [0u8; OUT];
    assert_eq!(
        classic::encode_parts(&mut out, Command::Ping, id(0x01f5), &[]).unwrap(),
        ping
    );
    let decoded = decode_one(&ping);
    assert_eq!(decoded.command, Command::Ping);
    assert!(decoded.body.is_empty());
    // The device answers 200 with the ping's id; so does the server to a device's ping.
    let pong = [0x00, 0x01, 0xf5, 0x00, 0xc8];
    let decoded = decode_one(&pong);
    assert_eq!(
        (decoded.command, decoded.id, decoded.status),
        (Command::Response, 0x01f5, Some(Status::Ok))
    );
    assert_eq!(
        classic::encode_response(&mut out, id(0x01f5), Status::Ok).unwrap(),
        pong
    );
}

#[test]
fn a_captured_session_decodes_frame_by_frame_from_one_buffer() {
    let mut stream = token_frame();
    stream.extend_from_slice(&[0x10, 0x00, 0x03, 0x00, 0x00]);
    stream.extend_from_slice(&[0x14, 0x00, 0x05, 0x00, 0x08]);
    stream.extend_from_slice(b"vw\x001\x00255");
    stream.extend_from_slice(&[0x00, 0x01, 0xf5, 0x00, 0xc8]);
    let mut seen = Vec::new();
    let mut rest = stream.as_slice();
    while !rest.is_empty() {
        let Decoded::Frame { frame, consumed } = classic::decode(rest, 1024).unwrap() else {
            panic!("whole frames are buffered");
        };
        seen.push((frame.command, frame.id));
        rest = &rest[consumed..];
    }
    assert_eq!(
        seen,
        [
            (Command::HwLogin, 1),
            (Command::HardwareSync, 3),
            (Command::Hardware, 5),
            (Command::Response, 0x01f5)
        ]
    );
}

#[test]
fn command_and_status_codes_match_the_reference_table() {
    let commands = [
        (0, Command::Response),
        (2, Command::Login),
        (6, Command::Ping),
        (15, Command::Bridge),
        (16, Command::HardwareSync),
        (17, Command::Internal),
        (19, Command::Property),
        (20, Command::Hardware),
        (21, Command::Group),
        (29, Command::HwLogin),
        (41, Command::Redirect),
        (55, Command::DebugPrint),
        (64, Command::EventLog),
        (65, Command::EventClear),
    ];
    for (code, command) in commands {
        assert_eq!(Command::from_code(code), command);
    }
    for code in 0..=u8::MAX {
        assert_eq!(Command::from_code(code).code(), code);
    }
    let statuses = [
        (200, Status::Ok),
        (1, Status::QuotaLimit),
        (2, Status::IllegalCommand),
        (4, Status::AlreadyRegistered),
        (5, Status::NotAuthenticated),
        (6, Status::NotAllowed),
        (7, Status::DeviceNotInNetwork),
        (9, Status::InvalidToken),
        (11, Status::IllegalCommandBody),
        (19, Status::ServerException),
    ];
    for (code, status) in statuses {
        assert_eq!(Status::from_code(code), status);
    }
    for code in 0..=u16::MAX {
        assert_eq!(Status::from_code(code).code(), code);
    }
}

#[test]
fn spec_4_message_ids_are_never_zero_and_wrap_to_one() {
    let mut ids = MessageIds::default();
    assert_eq!(ids.next_id().get(), 1);
    for expected in 2..=u16::MAX {
        assert_eq!(ids.next_id().get(), expected);
    }
    // After 65535 comes 1, never 0.
    assert_eq!(ids.next_id().get(), 1);
    assert_eq!(ids.next_id().get(), 2);
}

#[test]
fn captured_group_frames_begin_timestamped_and_end() {
    // Blynk.beginGroup(1700000000123): GROUP (0x15 = 21), "t\0<ms>", no trailing NUL.
    let begin_at = b"\x15\x00\x07\x00\x0ft\x001700000000123";
    let frame = decode_one(begin_at);
    assert_eq!(frame.command, Command::Group);
    assert_eq!(frame.id, 7);
    assert_eq!(
        GroupCommand::parse(frame.body),
        Ok(GroupCommand::BeginAt {
            unix_ms: 1_700_000_000_123
        })
    );
    let mut out = [0u8; OUT];
    let built = classic::encode_group(
        &mut out,
        id(7),
        GroupCommand::BeginAt {
            unix_ms: 1_700_000_000_123,
        },
    )
    .unwrap();
    assert_eq!(built, begin_at);
    // Blynk.beginGroup() and Blynk.endGroup(), here with message id 0, which the library may
    // send for them.
    let begin = decode_one(b"\x15\x00\x00\x00\x01b");
    assert_eq!(begin.id, 0);
    assert_eq!(GroupCommand::parse(begin.body), Ok(GroupCommand::Begin));
    let end = decode_one(b"\x15\x00\x00\x00\x01e");
    assert_eq!(GroupCommand::parse(end.body), Ok(GroupCommand::End));
    assert_eq!(
        GroupCommand::parse(b"x"),
        Err(ClassicError::UnknownSubCommand)
    );
    assert!(GroupCommand::parse(b"t\0-5").is_err());
    assert!(GroupCommand::parse(b"t").is_err());
}

#[test]
fn captured_bridge_bind_and_virtual_write() {
    // WidgetBridge bridge(V1); bridge.setAuthToken(T): "1\0i\0<token>".
    let mut bind = vec![0x0f, 0x00, 0x03, 0x00, 0x24];
    bind.extend_from_slice(b"1\0i\0");
    bind.extend_from_slice(TOKEN.as_bytes());
    let frame = decode_one(&bind);
    assert_eq!(frame.command, Command::Bridge);
    match BridgeCommand::parse(frame.body).unwrap() {
        BridgeCommand::Bind { channel, token } => {
            assert_eq!(channel, 1);
            assert_eq!(token.as_str(), TOKEN);
        }
        other => panic!("expected a bind, got {other:?}"),
    }
    let mut out = [0u8; OUT];
    assert_eq!(
        classic::encode_bridge_bind(&mut out, id(3), 1, TOKEN).unwrap(),
        bind.as_slice()
    );
    // bridge.virtualWrite(V5, 1): "1\0vw\05\01".
    let write = b"\x0f\x00\x04\x00\x08\x31\x00vw\x005\x001";
    let frame = decode_one(write);
    let (channel, pin, value) = BridgeCommand::parse(frame.body)
        .unwrap()
        .as_write()
        .unwrap()
        .unwrap();
    assert_eq!((channel, pin), (1, Pin::Virtual(5)));
    assert_eq!(value.parts(), &[Scalar::Int(1)]);
    let built = classic::encode_bridge_write(&mut out, id(4), 1, Pin::Virtual(5), &value).unwrap();
    assert_eq!(built, write);
    // bridge.digitalWrite(9, HIGH): "1\0dw\09\01".
    let digital = BridgeCommand::parse(b"1\0dw\x009\x001").unwrap();
    assert_eq!(digital.as_write().unwrap().unwrap().1, Pin::Digital(9));
    // A bridge only writes; a bad token or channel is refused.
    assert_eq!(
        BridgeCommand::parse(b"1\0vr\x005"),
        Err(ClassicError::UnknownSubCommand)
    );
    assert_eq!(
        BridgeCommand::parse(b"1\0i\0short"),
        Err(ClassicError::BadToken)
    );
    assert!(BridgeCommand::parse(b"x\0i\0short").is_err());
    assert!(BridgeCommand::parse(b"1").is_err());
}
