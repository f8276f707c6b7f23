//! Classic frames built on this side parse back to what was meant, and limits are enforced.

use core::num::NonZeroU16;

use blynk_proto::classic::{
    self, BridgeCommand, BuildError, ClassicError, Command, Decoded, GroupCommand, HardwareCommand,
    MAX_BODY, SyncRequest,
};
use blynk_proto::{MAX_TEXT_LEN, MAX_VALUE_PARTS, Pin, Scalar, Value};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::strategies::{OwnedScalar, finite_f64, pin, value_of};

/// Building and parsing a classic write is cheap.
const WRITE_CASES: u32 = 2048;
/// Sync requests are small.
const SYNC_CASES: u32 = 512;

const OUT: usize = classic::HEADER_LEN + MAX_BODY;

/// Text that survives the classic round trip exactly: no `\0` (the part separator), not empty
/// (an empty last part is indistinguishable from the tolerated trailing `\0`), and not numeric
/// (the classic protocol carries numbers as text, so "42" comes back as an integer). Starting
/// with a character that no number starts with guarantees the last.
fn classic_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z#_ ][^\\x00]{0,60}",
        1 => (1..=MAX_TEXT_LEN).prop_map(|len| "t".repeat(len)),
    ]
    .prop_map(|mut text| {
        while text.len() > MAX_TEXT_LEN {
            text.pop();
        }
        text
    })
}

fn classic_scalar() -> impl Strategy<Value = OwnedScalar> {
    prop_oneof![
        any::<i64>().prop_map(OwnedScalar::Int),
        finite_f64().prop_map(OwnedScalar::Double),
        classic_text().prop_map(OwnedScalar::Text),
    ]
}

/// A pin and a value it can carry: several parts on a virtual pin, one on a digital or analog
/// pin (`dw` and `aw` carry one value).
fn classic_write() -> impl Strategy<Value = (Pin, Vec<OwnedScalar>)> {
    pin().prop_flat_map(|pin| {
        let parts = if pin.is_virtual() { MAX_VALUE_PARTS } else { 1 };
        (Just(pin), vec(classic_scalar(), 1..=parts))
    })
}

/// Checks that a part came back as the one sent: integers and texts exactly, doubles by value
/// (a whole double such as 2.0 travels as "2" and comes back as an integer).
fn assert_same_part(sent: &Scalar<'_>, back: &Scalar<'_>) -> Result<(), TestCaseError> {
    match sent {
        Scalar::Double(double) => {
            prop_assert!(
                !matches!(back, Scalar::Text(_)),
                "{:?} came back as text",
                sent
            );
            prop_assert_eq!(back.as_f64(), Some(*double));
        }
        exact => prop_assert_eq!(back, exact),
    }
    Ok(())
}

fn id(id: u16) -> NonZeroU16 {
    NonZeroU16::new(id).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(WRITE_CASES))]

    #[test]
    fn classic_writes_parse_back_to_the_same_pin_and_value(
        (pin, parts) in classic_write(),
        message_id in 1..=u16::MAX,
    ) {
        let value = value_of(&parts);
        let mut out = [0u8; OUT];
        let frame = classic::encode_write(&mut out, id(message_id), MAX_BODY, pin, &value).unwrap();
        let Decoded::Frame { frame: decoded, consumed } = classic::decode(frame, MAX_BODY).unwrap()
        else {
            return Err(TestCaseError::fail("a whole frame decoded as NeedMore"));
        };
        prop_assert_eq!(consumed, frame.len());
        prop_assert_eq!(decoded.command, Command::Hardware);
        prop_assert_eq!(decoded.id, message_id);
        let (pin_back, value_back) =
            HardwareCommand::parse(decoded.body).unwrap().as_write().unwrap().unwrap();
        prop_assert_eq!(pin_back, pin);
        prop_assert_eq!(value_back.parts().len(), value.parts().len());
        for (sent, back) in value.parts().iter().zip(value_back.parts()) {
            assert_same_part(sent, back)?;
        }
    }

    #[test]
    fn bridge_writes_parse_back_to_the_same_channel_pin_and_value(
        (pin, parts) in classic_write(),
        channel in 0u8..=255,
        message_id in 1..=u16::MAX,
    ) {
        let value = value_of(&parts);
        let mut out = [0u8; OUT];
        let frame =
            classic::encode_bridge_write(&mut out, id(message_id), channel, pin, &value).unwrap();
        let Decoded::Frame { frame: decoded, .. } = classic::decode(frame, MAX_BODY).unwrap()
        else {
            return Err(TestCaseError::fail("a whole frame decoded as NeedMore"));
        };
        prop_assert_eq!(decoded.command, Command::Bridge);
        let (channel_back, pin_back, value_back) =
            BridgeCommand::parse(decoded.body).unwrap().as_write().unwrap().unwrap();
        prop_assert_eq!(channel_back, channel);
        prop_assert_eq!(pin_back, pin);
        prop_assert_eq!(value_back.parts().len(), value.parts().len());
        for (sent, back) in value.parts().iter().zip(value_back.parts()) {
            assert_same_part(sent, back)?;
        }
    }

    #[test]
    fn timestamped_groups_parse_back_to_the_same_time(unix_ms in any::<u64>(), message_id in 0..=u16::MAX) {
        let mut out = [0u8; OUT];
        // The library sends GROUP frames with any id, 0 included; the codec takes only
        // non-zero ids, so build with 1 and patch the header.
        let mut frame = classic::encode_group(&mut out, id(1), GroupCommand::BeginAt { unix_ms })
            .unwrap()
            .to_vec();
        frame[1..3].copy_from_slice(&message_id.to_be_bytes());
        let Decoded::Frame { frame: decoded, .. } = classic::decode(&frame, MAX_BODY).unwrap()
        else {
            return Err(TestCaseError::fail("a whole frame decoded as NeedMore"));
        };
        prop_assert_eq!(decoded.command, Command::Group);
        prop_assert_eq!(decoded.id, message_id);
        prop_assert_eq!(GroupCommand::parse(decoded.body), Ok(GroupCommand::BeginAt { unix_ms }));
    }

    #[test]
    fn classic_bodies_over_the_limit_are_refused_when_built_and_when_decoded(
        (pin, parts) in classic_write(),
        cut in 1usize..64,
    ) {
        let value = value_of(&parts);
        let mut out = [0u8; OUT];
        let exact = classic::encode_write(&mut out, id(1), MAX_BODY, pin, &value).unwrap().to_vec();
        let body_len = exact.len() - classic::HEADER_LEN;

        // A limit equal to the body lets it through, byte for byte the same.
        let mut again = [0u8; OUT];
        prop_assert_eq!(
            classic::encode_write(&mut again, id(1), body_len, pin, &value).unwrap(),
            exact.as_slice()
        );
        // A smaller one refuses it with a typed error naming the limit.
        let limit = body_len.saturating_sub(cut);
        match classic::encode_write(&mut again, id(1), limit, pin, &value) {
            Err(BuildError::BodyTooLong { len, max }) => {
                prop_assert_eq!(max, limit);
                prop_assert!(len > limit && len <= body_len);
            }
            other => prop_assert!(false, "expected BodyTooLong, got {:?}", other),
        }
        // A receiver with a smaller buffer refuses the header before the body arrives.
        prop_assert_eq!(
            classic::decode(&exact[..classic::HEADER_LEN], limit),
            Err(ClassicError::BodyTooLong { len: body_len, max: limit })
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(SYNC_CASES))]

    #[test]
    fn classic_sync_requests_parse_back_to_the_same_pins(
        pins in vec(any::<u8>(), 0..=blynk_proto::MAX_SYNC_PINS),
        message_id in 1..=u16::MAX,
    ) {
        let mut out = [0u8; OUT];
        let frame = classic::encode_sync(&mut out, id(message_id), &pins).unwrap();
        let Decoded::Frame { frame: decoded, .. } = classic::decode(frame, MAX_BODY).unwrap() else {
            return Err(TestCaseError::fail("a whole frame decoded as NeedMore"));
        };
        prop_assert_eq!(decoded.command, Command::HardwareSync);
        let request = SyncRequest::parse(decoded.body).unwrap();
        if pins.is_empty() {
            prop_assert_eq!(request, SyncRequest::All);
        }
        let back: Vec<Pin> = request.pins().map(Result::unwrap).collect();
        let sent: Vec<Pin> = pins.iter().map(|&n| Pin::Virtual(n)).collect();
        prop_assert_eq!(back, sent);
    }
}

#[test]
fn whole_doubles_travel_as_integers_and_fractions_as_plain_decimals() {
    let mut out = [0u8; OUT];
    let cases: [(f64, &[u8]); 4] = [
        (2.0, b"vw\x001\x002"),
        (2.5, b"vw\x001\x002.5"),
        (-0.125, b"vw\x001\x00-0.125"),
        // No exponent notation: the classic parsers read plain decimals only.
        (1e21, b"vw\x001\x001000000000000000000000"),
    ];
    for (double, body) in cases {
        let value = Value::double(double).unwrap();
        let frame =
            classic::encode_write(&mut out, id(9), MAX_BODY, Pin::Virtual(1), &value).unwrap();
        assert_eq!(&frame[classic::HEADER_LEN..], body, "{double}");
    }
}

#[test]
fn digital_and_analog_writes_use_their_sub_commands() {
    let mut out = [0u8; OUT];
    let frame =
        classic::encode_write(&mut out, id(1), MAX_BODY, Pin::Digital(13), &Value::int(1)).unwrap();
    assert_eq!(&frame[classic::HEADER_LEN..], b"dw\x0013\x001");
    let frame =
        classic::encode_write(&mut out, id(1), MAX_BODY, Pin::Analog(3), &Value::int(512)).unwrap();
    assert_eq!(&frame[classic::HEADER_LEN..], b"aw\x003\x00512");
}

#[test]
fn building_into_a_too_small_buffer_is_a_typed_error() {
    // A write of 255 to V1 makes a frame of 13 bytes; both sizes count the header.
    let write_into = |size: usize| {
        let mut out = vec![0u8; size];
        let frame =
            classic::encode_write(&mut out, id(1), MAX_BODY, Pin::Virtual(1), &Value::int(255));
        frame.map(|frame| frame.len())
    };
    let too_small = |needed, available| Err(BuildError::BufferTooSmall { needed, available });
    assert_eq!(write_into(4), too_small(classic::HEADER_LEN, 4));
    assert_eq!(write_into(12), too_small(13, 12));
    assert_eq!(write_into(13), Ok(13));
}

#[test]
fn no_classic_body_is_built_beyond_max_body() {
    let long = "x".repeat(MAX_BODY + 1);
    let mut out = vec![0u8; classic::HEADER_LEN + MAX_BODY + 10];
    assert_eq!(
        classic::encode_parts(&mut out, Command::DebugPrint, id(1), &[&long]),
        Err(BuildError::BodyTooLong {
            len: MAX_BODY + 1,
            max: MAX_BODY
        })
    );
    // A caller's limit above MAX_BODY is capped at it.
    let value = Value::int(1);
    let frame = classic::encode_write(&mut out, id(1), usize::MAX, Pin::Virtual(1), &value);
    assert!(frame.is_ok());
    assert_eq!(
        classic::encode_frame(&mut out, Command::DebugPrint, id(1), usize::MAX, |body| {
            body.part(&long).map(|_| ())
        }),
        Err(BuildError::BodyTooLong {
            len: MAX_BODY + 1,
            max: MAX_BODY
        })
    );
}
