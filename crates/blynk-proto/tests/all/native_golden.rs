//! Golden bytes of the native protocol: the wire format is pinned, field by field.
//!
//! Each vector was derived by hand from postcard's format (`docs/protocol.md`): an enum is its
//! variant index as a varint, then its fields; `u8` is one raw byte; `u16`, `u32` and `u64`
//! are LEB128 varints (7 bits a byte, low bits first, high bit set on every byte but the last);
//! `i64` is zigzag-encoded (`0 -> 0, -1 -> 1, 1 -> 2, ...`) and then a varint; `f64` is 8 bytes
//! little-endian; `bool` is one byte 0 or 1; `Option` is a byte 0 (None) or 1 (Some) before the
//! value; a string or sequence is a varint length before its items.

use blynk_proto::native::{
    self, Ack, Decoded, DeviceInfo, Login, Message, SyncComplete, SyncPins, SyncRequest, Write,
};
use blynk_proto::{BoundedStr, Pin, Scalar, Token, Value};

use crate::strategies::frame_of;

const TOKEN: &str = "Abcdefghijklmnopqrstuvwxyz012345";
const HEADER: usize = native::HEADER_LEN;

/// Checks that `message` encodes to exactly `golden` and that `golden` decodes to `message`.
fn assert_golden(message: &Message<'_>, golden: &[u8]) {
    assert_eq!(frame_of(message), golden, "encoding of {message:?}");
    assert_eq!(
        native::decode(golden),
        Ok(Decoded::Frame {
            message: message.clone(),
            consumed: golden.len()
        })
    );
}

#[test]
fn golden_login() {
    let message = Message::Login(Login {
        protocol: 1,
        token: Token::new(TOKEN).unwrap(),
        info: DeviceInfo {
            firmware: BoundedStr::new("1.0").unwrap(),
            rx_buffer: 1024,
            heartbeat_seconds: 40,
            sync_on_connect: true,
            known_version: None,
        },
    });
    let mut golden = vec![
        0x01, // header: protocol version 1
        0x00, 0x2c, // header: payload length 44, u16 big-endian
        0x00, // Message::Login, variant 0
        0x01, // Login.protocol: u8 1, one raw byte
        0x20, // Login.token: string length 32
    ];
    golden.extend_from_slice(TOKEN.as_bytes()); // the 32 token bytes
    golden.extend_from_slice(&[
        0x03, b'1', b'.', b'0', // info.firmware: length 3, "1.0"
        0x80, 0x08, // info.rx_buffer: 1024 = 0b1000_0000000: low 7 bits 0 (+0x80), then 8
        0x28, // info.heartbeat_seconds: 40
        0x01, // info.sync_on_connect: true
        0x00, // info.known_version: None
    ]);
    assert_golden(&message, &golden);
}

#[test]
fn golden_write_v1_255() {
    let message = Message::Write(Write {
        id: 1,
        pin: Pin::Virtual(1),
        value: Value::int(255),
        age_ms: None,
    });
    let golden = [
        0x01, // header: protocol version 1
        0x00, 0x09, // header: payload length 9
        0x04, // Message::Write, variant 4
        0x01, // Write.id: 1
        0x00, // Write.pin: Pin::Virtual, variant 0
        0x01, // the pin number, u8 1
        0x01, // Write.value: 1 part
        0x00, // Scalar::Int, variant 0
        0xfe, 0x03, // 255 zigzag = 510 = 0b11_1111110: 0x7e + 0x80, then 3
        0x00, // Write.age_ms: None
    ];
    assert_golden(&message, &golden);
}

#[test]
fn golden_multi_part_write() {
    // virtual_write(V2, 1, 2.5, "abc"), queued offline 1.5 s ago.
    let parts = [
        Scalar::Int(1),
        Scalar::Double(2.5),
        Scalar::Text(BoundedStr::new("abc").unwrap()),
    ];
    let message = Message::Write(Write {
        id: 2,
        pin: Pin::Virtual(2),
        value: Value::from_parts(&parts).unwrap(),
        age_ms: Some(1500),
    });
    let golden = [
        0x01, // header: protocol version 1
        0x00, 0x18, // header: payload length 24
        0x04, // Message::Write, variant 4
        0x02, // Write.id: 2
        0x00, 0x02, // Write.pin: Pin::Virtual, V2
        0x03, // Write.value: 3 parts
        0x00, 0x02, // Scalar::Int, 1 zigzag = 2
        0x01, // Scalar::Double, variant 1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x40, // 2.5 = 0x4004_0000_0000_0000, LE
        0x02, 0x03, b'a', b'b', b'c', // Scalar::Text, length 3, "abc"
        0x01, // Write.age_ms: Some
        0xdc, 0x0b, // 1500 = 11 * 128 + 92: 92 + 0x80 = 0xdc, then 11
    ];
    assert_golden(&message, &golden);
}

#[test]
fn golden_sync_request_all_and_only() {
    let all = Message::SyncRequest(SyncRequest {
        id: 3,
        pins: SyncPins::All,
    });
    let golden_all = [
        0x01, // header: protocol version 1
        0x00, 0x03, // header: payload length 3
        0x06, // Message::SyncRequest, variant 6
        0x03, // SyncRequest.id: 3
        0x00, // SyncRequest.pins: SyncPins::All, variant 0
    ];
    assert_golden(&all, &golden_all);

    let only = Message::SyncRequest(SyncRequest {
        id: 4,
        pins: SyncPins::Only(
            heapless::Vec::from_slice(&[Pin::Virtual(0), Pin::Digital(13), Pin::Analog(0)])
                .unwrap(),
        ),
    });
    let golden_only = [
        0x01, // header: protocol version 1
        0x00, 0x0a, // header: payload length 10
        0x06, // Message::SyncRequest, variant 6
        0x04, // SyncRequest.id: 4
        0x01, // SyncRequest.pins: SyncPins::Only, variant 1
        0x03, // 3 pins
        0x00, 0x00, // Pin::Virtual(0)
        0x01, 0x0d, // Pin::Digital(13)
        0x02, 0x00, // Pin::Analog(0)
    ];
    assert_golden(&only, &golden_only);
}

#[test]
fn golden_sync_complete() {
    let message = Message::SyncComplete(SyncComplete {
        id: 3,
        count: 2,
        version: 300,
    });
    let golden = [
        0x01, // header: protocol version 1
        0x00, 0x05, // header: payload length 5
        0x08, // Message::SyncComplete, variant 8
        0x03, // SyncComplete.id: 3
        0x02, // SyncComplete.count: 2
        0xac, 0x02, // SyncComplete.version: 300 = 2 * 128 + 44: 44 + 0x80 = 0xac, then 2
    ];
    assert_golden(&message, &golden);
}

#[test]
fn golden_ack() {
    let message = Message::Ack(Ack {
        id: 1,
        version: Some(7),
    });
    let golden = [
        0x01, // header: protocol version 1
        0x00, 0x04, // header: payload length 4
        0x0b, // Message::Ack, variant 11
        0x01, // Ack.id: 1
        0x01, // Ack.version: Some
        0x07, // 7
    ];
    assert_golden(&message, &golden);
}

#[test]
fn golden_varints_at_their_boundaries() {
    // u16 ids take 1 to 3 bytes; negative integers are zigzag-encoded.
    let cases: [(u16, &[u8]); 4] = [
        (127, &[0x7f]),
        (128, &[0x80, 0x01]),
        (16_384, &[0x80, 0x80, 0x01]),
        (u16::MAX, &[0xff, 0xff, 0x03]),
    ];
    for (id, varint) in cases {
        let frame = frame_of(&Message::Ping(native::Ping { id }));
        assert_eq!(&frame[4..], varint, "id {id}");
    }
    let minus_one = frame_of(&Message::Write(Write {
        id: 0,
        pin: Pin::Virtual(0),
        value: Value::int(-1),
        age_ms: None,
    }));
    // ... 0x01 part, 0x00 Int, 0x01 = zigzag(-1), 0x00 None.
    assert_eq!(
        &minus_one[HEADER..],
        &[0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00]
    );
}
