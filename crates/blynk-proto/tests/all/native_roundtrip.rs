//! Every native message survives encode + decode unchanged, whole and through the frame decoder.

use blynk_proto::native::decoder::Step;
use blynk_proto::native::{
    self, Decoded, Direction, FrameDecoder, HEADER_LEN, MAX_FRAME, Message, PROTOCOL_VERSION,
    Property, Write,
};
use blynk_proto::{BoundedStr, MAX_NAME_LEN, MAX_TEXT_LEN, MAX_VALUE_PARTS, Pin, Scalar, Value};
use proptest::prelude::*;

use crate::strategies::{FRAME_BUFFER, Sizes, frame_of, message};

/// Encoding is cheap; 512 cases of full-size messages cover every variant many times.
const ROUND_TRIP_CASES: u32 = 2048;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(ROUND_TRIP_CASES))]

    #[test]
    fn every_message_round_trips_through_encode_and_decode(owned in message(Sizes::FULL)) {
        let sent = owned.message();
        let mut buffer = [0u8; FRAME_BUFFER];
        let frame = native::encode(&sent, &mut buffer).unwrap();

        // The header: version, then the payload length, big-endian.
        prop_assert_eq!(frame[0], PROTOCOL_VERSION);
        let payload_len = usize::from(u16::from_be_bytes([frame[1], frame[2]]));
        prop_assert_eq!(payload_len + HEADER_LEN, frame.len());
        prop_assert!(payload_len <= MAX_FRAME);
        prop_assert_eq!(payload_len, native::frame::encoded_len(&sent));
        // The first payload byte is the message code of the table.
        prop_assert_eq!(frame[HEADER_LEN], sent.code());

        match native::decode(frame).unwrap() {
            Decoded::Frame { message, consumed } => {
                prop_assert_eq!(consumed, frame.len());
                prop_assert_eq!(message, sent);
            }
            Decoded::NeedMore => prop_assert!(false, "a whole frame decoded as NeedMore"),
        }
    }

    #[test]
    fn every_message_round_trips_through_the_frame_decoder(owned in message(Sizes::FULL)) {
        let sent = owned.message();
        let frame = frame_of(&sent);
        let mut decoder = FrameDecoder::<FRAME_BUFFER>::new();
        prop_assert_eq!(decoder.feed(&frame), frame.len());
        match decoder.next_frame().unwrap() {
            Step::Frame(message) => prop_assert_eq!(message, sent),
            Step::NeedMore => prop_assert!(false, "a whole frame decoded as NeedMore"),
        }
        prop_assert_eq!(decoder.next_frame().unwrap(), Step::NeedMore);
        prop_assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn every_strict_prefix_of_a_frame_needs_more(owned in message(Sizes::SMALL)) {
        let frame = frame_of(&owned.message());
        for end in 0..frame.len() {
            prop_assert_eq!(native::decode(&frame[..end]), Ok(Decoded::NeedMore));
        }
    }
}

#[test]
fn spec_4_every_frame_has_a_compile_time_maximum_size_the_largest_messages_fit() {
    // The largest value: every part a text of the longest length, in the message with the
    // widest envelope around a value (a property also carries a name).
    let long_text = "x".repeat(MAX_TEXT_LEN);
    let long_name = "n".repeat(MAX_NAME_LEN);
    let parts = [Scalar::Text(BoundedStr::new(&long_text).unwrap()); MAX_VALUE_PARTS];
    let value = Value::from_parts(&parts).unwrap();
    let largest = [
        Message::Property(Property {
            id: u16::MAX,
            pin: Pin::Virtual(u8::MAX),
            name: BoundedStr::new(&long_name).unwrap(),
            value: value.clone(),
        }),
        Message::Write(Write {
            id: u16::MAX,
            pin: Pin::Virtual(u8::MAX),
            value,
            age_ms: Some(u32::MAX),
        }),
    ];
    for message in largest {
        let frame = frame_of(&message);
        assert!(
            frame.len() <= HEADER_LEN + MAX_FRAME,
            "{} bytes",
            frame.len()
        );
        let Decoded::Frame { message: back, .. } = native::decode(&frame).unwrap() else {
            panic!("a whole frame decoded as NeedMore");
        };
        assert_eq!(back, message);
    }
}

#[test]
fn message_codes_and_directions_match_the_table() {
    use blynk_proto::native::{Ack, Ping, Pong, SyncComplete, SyncPins, SyncRequest};
    let value = Value::int(1);
    let table: [(Message<'_>, u8, &str, Direction); 8] = [
        (Message::Ping(Ping { id: 1 }), 2, "ping", Direction::Both),
        (Message::Pong(Pong { id: 1 }), 3, "pong", Direction::Both),
        (
            Message::Write(Write {
                id: 1,
                pin: Pin::Virtual(1),
                value,
                age_ms: None,
            }),
            4,
            "write",
            Direction::DeviceToServer,
        ),
        (
            Message::SyncRequest(SyncRequest {
                id: 1,
                pins: SyncPins::All,
            }),
            6,
            "sync-request",
            Direction::DeviceToServer,
        ),
        (
            Message::SyncComplete(SyncComplete {
                id: 1,
                count: 0,
                version: 0,
            }),
            8,
            "sync-complete",
            Direction::ServerToDevice,
        ),
        (
            Message::Ack(Ack {
                id: 1,
                version: None,
            }),
            11,
            "ack",
            Direction::ServerToDevice,
        ),
        (
            Message::LoginResult(blynk_proto::native::LoginResult::Rejected(
                blynk_proto::native::LoginRejection::ServerBusy,
            )),
            1,
            "login-result",
            Direction::ServerToDevice,
        ),
        (
            Message::Error(blynk_proto::native::ErrorReply {
                id: 0,
                code: blynk_proto::native::ErrorCode::NotLoggedIn,
                detail: BoundedStr::new("log in first").unwrap(),
            }),
            12,
            "error",
            Direction::Both,
        ),
    ];
    // The table in the `native` module's documentation, for people: code -> direction.
    let documented: Vec<(u8, &str)> = include_str!("../../src/native/mod.rs")
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.strip_prefix("//! |")?.split('|').collect();
            Some((cells.first()?.trim().parse().ok()?, cells.get(2)?.trim()))
        })
        .collect();
    let codes: Vec<u8> = documented.iter().map(|(code, _)| *code).collect();
    assert_eq!(codes, (0..=native::code::ERROR).collect::<Vec<u8>>());
    for (message, code, name, direction) in table {
        assert_eq!(message.code(), code, "{name}");
        assert_eq!(message.name(), name);
        assert_eq!(message.direction(), direction, "{name}");
        // The code is what goes on the wire: the first payload byte.
        assert_eq!(frame_of(&message)[HEADER_LEN], code, "{name}");
        let in_docs = match direction {
            Direction::DeviceToServer => "device → server",
            Direction::ServerToDevice => "server → device",
            Direction::Both => "both",
        };
        assert_eq!(documented[usize::from(code)].1, in_docs, "{name}");
    }
}

#[test]
fn login_rejections_tell_recoverable_from_final() {
    use blynk_proto::native::LoginRejection;
    assert!(!LoginRejection::InvalidToken.is_recoverable());
    assert!(!LoginRejection::UnsupportedVersion { server: 2 }.is_recoverable());
    assert!(
        LoginRejection::TooManyAttempts {
            retry_after_seconds: 60
        }
        .is_recoverable()
    );
    assert!(LoginRejection::ServerBusy.is_recoverable());
}
