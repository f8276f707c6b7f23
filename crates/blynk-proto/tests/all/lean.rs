//! The lean codec (feature `lean`) against the serde codec: every message a device sends is
//! written byte for byte as `native::encode` writes it, and on any bytes at all the lean reader
//! gives what `native::decode` gives for the messages a server sends, and refuses the rest.

use blynk_proto::native::lean::{self, Full, Writer};
use blynk_proto::native::{
    self, Decoded, DeviceInfo, Direction, Event, FrameError, HEADER_LEN, Login, Message, Ping,
    Pong, Property, SyncPins, SyncRequest, Write,
};
use blynk_proto::{BoundedStr, Pin, Scalar, Token, Value};
use proptest::prelude::*;

use crate::strategies::{FRAME_BUFFER, Sizes, frame_of, message};

/// Bytes written by `body` into a fresh writer.
fn body(write: impl FnOnce(&mut Writer<'_>) -> Result<(), Full>) -> Vec<u8> {
    let mut out = vec![0u8; FRAME_BUFFER];
    let mut writer = Writer::new(&mut out);
    write(&mut writer).unwrap();
    let len = writer.len();
    out.truncate(len);
    out
}

/// The lean frame of a device message, or `None` for a message a device never sends.
fn lean_frame(message: &Message<'_>) -> Option<Vec<u8>> {
    let mut out = vec![0u8; FRAME_BUFFER];
    let len = match message {
        Message::Login(login) => lean::login(login, &mut out),
        Message::Ping(ping) => lean::ping(ping.id, &mut out),
        Message::Pong(pong) => lean::pong(pong.id, &mut out),
        Message::Write(write) => {
            let value = body(|w| w.value(&write.value));
            lean::write(write.id, write.pin, &value, write.age_ms, &mut out)
        }
        Message::SyncRequest(request) => match &request.pins {
            SyncPins::All => lean::sync_all(request.id, &mut out),
            SyncPins::Only(pins) => lean::sync_pins(request.id, pins, &mut out),
        },
        Message::Property(property) => {
            let body = body(|w| lean::property_body(w, property.name.as_str(), &property.value));
            assert_eq!(lean::property_name(&body), Some(property.name.as_str()));
            lean::property(property.id, property.pin, &body, &mut out)
        }
        Message::Event(event) => {
            let description = event.description.as_ref().map(|text| text.as_str());
            let body = body(|w| lean::event_body(w, event.code.as_str(), description));
            lean::event(event.id, &body, &mut out)
        }
        _ => return None,
    };
    out.truncate(len.unwrap());
    Some(out)
}

/// Bytes that look like the start of a frame more often than chance would have them.
fn frame_like() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(code, body)| {
        let mut bytes = vec![1, 0, (body.len() + 1) as u8, code % 14];
        bytes.extend(body);
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Every message a device sends, whatever its fields, comes out of the lean writer as the
    /// serde codec writes it; the lean reader reads back every message a server sends and
    /// refuses the device's own.
    #[test]
    fn the_lean_codec_matches_the_serde_codec_on_every_message(owned in message(Sizes::FULL)) {
        let sent = owned.message();
        let reference = frame_of(&sent);
        if let Some(ours) = lean_frame(&sent) {
            prop_assert_eq!(&ours, &reference, "{}", sent.name());
        } else {
            prop_assert_ne!(sent.direction(), Direction::DeviceToServer);
        }
        let read = lean::decode(&reference);
        if sent.direction() == Direction::DeviceToServer {
            let refused = matches!(read, Err(FrameError::Malformed { .. }));
            prop_assert!(refused, "{:?}", read);
        } else {
            prop_assert_eq!(read, native::decode(&reference));
        }
    }

    /// On arbitrary bytes the lean reader agrees with the serde codec on every message a
    /// server sends, and refuses the rest as malformed.
    #[test]
    fn the_lean_reader_agrees_with_the_serde_codec_on_any_bytes(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        frame_like(),
    ]) {
        let ours = lean::decode(&bytes);
        let device_only = bytes.len() > HEADER_LEN && [
            native::code::LOGIN,
            native::code::WRITE,
            native::code::SYNC_REQUEST,
            native::code::PROPERTY,
            native::code::EVENT,
        ].contains(&bytes[HEADER_LEN]);
        match native::decode(&bytes) {
            Ok(Decoded::Frame { .. })
            | Err(FrameError::TrailingBytes { .. } | FrameError::Malformed { .. })
                if device_only =>
            {
                let refused = matches!(ours, Err(FrameError::Malformed { .. }));
                prop_assert!(refused, "{:?}", ours);
            }
            reference => prop_assert_eq!(ours, reference),
        }
    }
}

#[test]
fn every_device_message_at_its_limits_matches_the_serde_codec_byte_for_byte() {
    let value = Value::from_parts(&[
        Scalar::Int(-70000),
        Scalar::Double(2.5),
        Scalar::Text(BoundedStr::new("abc").unwrap()),
        Scalar::Int(i64::MIN),
        Scalar::Int(i64::MAX),
    ])
    .unwrap();
    let mut pins = heapless::Vec::new();
    pins.push(Pin::Virtual(200)).unwrap();
    pins.push(Pin::Digital(3)).unwrap();
    let messages = [
        Message::Login(Login {
            protocol: 1,
            token: Token::new("abcdEFGH0123456789_-abcdefghijkl").unwrap(),
            info: DeviceInfo {
                firmware: BoundedStr::new("1.2.3").unwrap(),
                rx_buffer: u16::MAX,
                heartbeat_seconds: 45,
                sync_on_connect: true,
                known_version: Some(u64::MAX),
            },
        }),
        Message::Write(Write {
            id: 300,
            pin: Pin::Analog(7),
            value: value.clone(),
            age_ms: Some(u32::MAX),
        }),
        Message::Write(Write {
            id: u16::MAX,
            pin: Pin::Virtual(255),
            value: value.clone(),
            age_ms: None,
        }),
        Message::SyncRequest(SyncRequest {
            id: 9,
            pins: SyncPins::Only(pins),
        }),
        Message::SyncRequest(SyncRequest {
            id: 0,
            pins: SyncPins::All,
        }),
        Message::Property(Property {
            id: 2,
            pin: Pin::Virtual(1),
            name: BoundedStr::new("color").unwrap(),
            value: Value::text("#FF0000").unwrap(),
        }),
        Message::Event(Event {
            id: 3,
            code: BoundedStr::new("overheat").unwrap(),
            description: Some(BoundedStr::new("too hot").unwrap()),
        }),
        Message::Event(Event {
            id: 4,
            code: BoundedStr::new("boot").unwrap(),
            description: None,
        }),
        Message::Ping(Ping { id: 65535 }),
        Message::Pong(Pong { id: 0 }),
    ];
    for message in &messages {
        assert_eq!(
            lean_frame(message).unwrap(),
            frame_of(message),
            "{message:?}"
        );
    }
}

#[test]
fn a_frame_longer_than_the_reader_holds_is_refused_on_its_header() {
    let value = Value::from_parts(&[Scalar::Int(1); 8]).unwrap();
    let update = frame_of(&Message::Update(native::Update {
        pin: Pin::Virtual(1),
        value,
        version: 7,
    }));
    let payload = update.len() - HEADER_LEN;
    assert_eq!(
        lean::decode_within(&update[..HEADER_LEN], payload - 1),
        Err(FrameError::FrameTooLong {
            len: payload,
            max: payload - 1
        })
    );
    assert!(matches!(
        lean::decode_within(&update, payload),
        Ok(Decoded::Frame { .. })
    ));
}

#[test]
fn a_full_output_is_an_error_not_a_short_frame() {
    // Header, code, and 300 as a two-byte varint.
    let mut out = [0u8; 6];
    assert_eq!(lean::ping(300, &mut out[..5]), Err(Full));
    assert_eq!(lean::ping(300, &mut out), Ok(6));
    let mut small = [0u8; 3];
    let mut writer = Writer::new(&mut small);
    assert_eq!(writer.value(&Value::text("too long").unwrap()), Err(Full));
    let mut counter = Writer::counting();
    counter.value(&Value::text("too long").unwrap()).unwrap();
    assert_eq!(counter.len(), 1 + 1 + 1 + 8);
}
