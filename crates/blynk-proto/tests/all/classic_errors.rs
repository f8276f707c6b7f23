//! Every way a classic frame or body can be wrong gives its own typed error.

use blynk_proto::classic::{
    self, ClassicError, Decoded, DeviceInfo, EventLog, HardwareCommand, MAX_BODY, PropertyUpdate,
    SyncRequest,
};
use blynk_proto::{PinParseError, ValueError};

#[test]
fn spec_6_classic_body_over_the_limit_is_refused_on_the_header() {
    // HARDWARE, id 1, announcing 4097 bytes: refused before any body byte arrives.
    let header = [0x14, 0x00, 0x01, 0x10, 0x01];
    assert_eq!(
        classic::decode(&header, MAX_BODY),
        Err(ClassicError::BodyTooLong {
            len: 4097,
            max: MAX_BODY
        })
    );
    // The caller's limit (a device's buff-in) applies, and is itself capped at MAX_BODY.
    let header = [0x14, 0x00, 0x01, 0x01, 0x01];
    assert_eq!(
        classic::decode(&header, 256),
        Err(ClassicError::BodyTooLong { len: 257, max: 256 })
    );
    assert_eq!(classic::decode(&header, 257), Ok(Decoded::NeedMore));
    let header = [0x14, 0x00, 0x01, 0xff, 0xff];
    assert_eq!(
        classic::decode(&header, usize::MAX),
        Err(ClassicError::BodyTooLong {
            len: 65535,
            max: MAX_BODY
        })
    );
}

#[test]
fn a_response_is_whole_at_five_bytes_whatever_its_status() {
    // The length field of a RESPONSE is a status, not a body length.
    let frame = [0x00, 0x00, 0x07, 0xff, 0xff];
    let Ok(Decoded::Frame { frame, consumed }) = classic::decode(&frame, 0) else {
        panic!("a response is one header");
    };
    assert_eq!(consumed, classic::HEADER_LEN);
    assert_eq!(frame.status, Some(classic::Status::Other(65535)));
}

#[test]
fn truncated_classic_frames_need_more() {
    let frame = b"\x14\x00\x05\x00\x08vw\x001\x00255";
    for end in 0..frame.len() {
        assert_eq!(
            classic::decode(&frame[..end], MAX_BODY),
            Ok(Decoded::NeedMore),
            "{end}"
        );
    }
}

#[test]
fn spec_6_invalid_utf8_is_a_typed_error_with_its_offset() {
    let at = |offset| Some(ClassicError::InvalidUtf8 { offset });
    assert_eq!(HardwareCommand::parse(b"vw\x001\x00\xff").err(), at(5));
    assert_eq!(SyncRequest::parse(b"vr\x00\xc3").err(), at(3));
    assert_eq!(DeviceInfo::parse(b"\xfe").err(), at(0));
    assert_eq!(PropertyUpdate::parse(b"1\x00color\x00\x80").err(), at(8));
    assert_eq!(EventLog::parse(b"o\xe2\x82").err(), at(1));
    assert_eq!(classic::parse_login(b"\xff").err(), at(0));
}

#[test]
fn malformed_hardware_bodies_name_what_is_wrong() {
    let cases: &[(&[u8], ClassicError)] = &[
        (
            b"",
            ClassicError::MissingPart {
                what: "sub-command",
            },
        ),
        (b"vw", ClassicError::MissingPart { what: "pin" }),
        (b"vw\x001", ClassicError::MissingPart { what: "value" }),
        (b"dw\x0013", ClassicError::MissingPart { what: "value" }),
        (b"xx\x001\x002", ClassicError::UnknownSubCommand),
        (
            b"vw\x00V1\x002",
            ClassicError::BadPin(PinParseError::NotANumber),
        ),
        (
            b"vw\x00256\x002",
            ClassicError::BadPin(PinParseError::OutOfRange {
                number: 256,
                max: 255,
            }),
        ),
        (
            b"dw\x0064\x001",
            ClassicError::BadPin(PinParseError::OutOfRange {
                number: 64,
                max: 63,
            }),
        ),
        (
            b"ar\x0099999999999",
            ClassicError::BadPin(PinParseError::NotANumber),
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(
            HardwareCommand::parse(body),
            Err(*expected),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // Reads and pin modes are no writes.
    assert!(
        HardwareCommand::parse(b"vr\x001")
            .unwrap()
            .as_write()
            .is_none()
    );
    assert!(
        HardwareCommand::parse(b"pm\x001\x00out")
            .unwrap()
            .as_write()
            .is_none()
    );
}

#[test]
fn malformed_values_are_refused_by_as_write() {
    let nine = b"vw\x001\x001\x002\x003\x004\x005\x006\x007\x008\x009";
    let command = HardwareCommand::parse(nine).unwrap();
    assert_eq!(
        command.as_write(),
        Some(Err(ClassicError::BadValue(ValueError::TooManyParts {
            max: blynk_proto::MAX_VALUE_PARTS
        })))
    );
    let mut long = b"vw\x001\x00".to_vec();
    long.extend_from_slice(&[b'x'; blynk_proto::MAX_TEXT_LEN + 1]);
    assert_eq!(
        HardwareCommand::parse(&long).unwrap().as_write(),
        Some(Err(ClassicError::BadValue(ValueError::TextTooLong {
            len: blynk_proto::MAX_TEXT_LEN + 1,
            max: blynk_proto::MAX_TEXT_LEN
        })))
    );
}

#[test]
fn malformed_sync_property_event_and_login_bodies_are_refused() {
    assert_eq!(
        SyncRequest::parse(b"vr"),
        Err(ClassicError::MissingPart { what: "pin" })
    );
    assert_eq!(
        SyncRequest::parse(b"dr\x001"),
        Err(ClassicError::UnknownSubCommand)
    );
    let request = SyncRequest::parse(b"vr\x001\x00x\x00300").unwrap();
    let pins: Vec<_> = request.pins().collect();
    assert_eq!(pins[0], Ok(blynk_proto::Pin::Virtual(1)));
    assert_eq!(
        pins[1],
        Err(ClassicError::BadPin(PinParseError::NotANumber))
    );
    assert!(matches!(
        pins[2],
        Err(ClassicError::BadPin(PinParseError::OutOfRange {
            number: 300,
            ..
        }))
    ));

    assert_eq!(
        PropertyUpdate::parse(b"1\x00color"),
        Err(ClassicError::MissingPart {
            what: "property value"
        })
    );
    let long_name = format!("1\x00{}\x00x", "n".repeat(blynk_proto::MAX_NAME_LEN + 1));
    assert_eq!(
        PropertyUpdate::parse(long_name.as_bytes()),
        Err(ClassicError::MissingPart {
            what: "short property name"
        })
    );
    assert_eq!(
        EventLog::parse(b""),
        Err(ClassicError::MissingPart { what: "event code" })
    );
    assert_eq!(classic::parse_login(b"short"), Err(ClassicError::BadToken));
    assert_eq!(
        classic::parse_login(b""),
        Err(ClassicError::MissingPart { what: "token" })
    );
}
