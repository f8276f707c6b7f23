//! Every way a native frame can be wrong gives its own typed error, as early as it can be seen.

use blynk_proto::native::decoder::Step;
use blynk_proto::native::{
    self, Decoded, EncodeError, FrameDecoder, FrameError, HEADER_LEN, MAX_FRAME, Message,
    PROTOCOL_VERSION, Ping, Write,
};
use blynk_proto::{Pin, Value};

use crate::strategies::{FRAME_BUFFER, frame_of};

/// A frame of `payload` with a correct header.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![PROTOCOL_VERSION];
    frame.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// What a fresh [`FrameDecoder`] says about `bytes`.
fn decoder_verdict(bytes: &[u8]) -> Result<(), FrameError> {
    let mut decoder = FrameDecoder::<FRAME_BUFFER>::new();
    decoder.feed(bytes);
    decoder.next_frame().map(|_| ())
}

#[test]
fn spec_4_native_bad_version_is_a_typed_error_on_the_first_byte() {
    for version in (0..=u8::MAX).filter(|&v| v != PROTOCOL_VERSION) {
        let expected = FrameError::BadVersion {
            got: version,
            expected: 1,
        };
        // One byte is enough: the rest of the header has not arrived.
        assert_eq!(native::decode(&[version]), Err(expected));
        assert_eq!(decoder_verdict(&[version]), Err(expected));
    }
    // A stray HTTP client is told apart on its first byte too.
    assert_eq!(
        native::decode(b"GET / HTTP/1.1\r\n"),
        Err(FrameError::BadVersion {
            got: b'G',
            expected: 1
        })
    );
    // A valid frame of another version is refused whole, never mis-decoded.
    let mut frame = frame_of(&Message::Ping(Ping { id: 7 }));
    frame[0] = 2;
    assert_eq!(
        native::decode(&frame),
        Err(FrameError::BadVersion {
            got: 2,
            expected: 1
        })
    );
}

#[test]
fn spec_4_oversized_frame_is_refused_before_any_payload_arrives() {
    let too_long = u16::try_from(MAX_FRAME + 1).unwrap().to_be_bytes();
    let header = [PROTOCOL_VERSION, too_long[0], too_long[1]];
    let expected = FrameError::FrameTooLong {
        len: MAX_FRAME + 1,
        max: MAX_FRAME,
    };
    assert_eq!(native::decode(&header), Err(expected));
    assert_eq!(decoder_verdict(&header), Err(expected));
    assert_eq!(
        native::decode(&[PROTOCOL_VERSION, 0xff, 0xff]),
        Err(FrameError::FrameTooLong {
            len: 65535,
            max: MAX_FRAME
        })
    );
    // Exactly MAX_FRAME is allowed: the decoder waits for the payload.
    let at_limit = u16::try_from(MAX_FRAME).unwrap().to_be_bytes();
    assert_eq!(
        native::decode(&[PROTOCOL_VERSION, at_limit[0], at_limit[1]]),
        Ok(Decoded::NeedMore)
    );
}

#[test]
fn a_small_decoder_refuses_frames_longer_than_its_buffer() {
    // A device with a 64-byte receive buffer: the header of a 62-byte payload is refused at once.
    let mut decoder = FrameDecoder::<64>::new();
    decoder.feed(&[PROTOCOL_VERSION, 0, 62]);
    assert_eq!(
        decoder.next_frame(),
        Err(FrameError::FrameTooLong { len: 62, max: 61 })
    );
    // 61 bytes fit.
    let mut decoder = FrameDecoder::<64>::new();
    decoder.feed(&[PROTOCOL_VERSION, 0, 61]);
    assert_eq!(decoder.next_frame(), Ok(Step::NeedMore));
}

#[test]
fn spec_4_empty_payload_is_a_typed_error() {
    assert_eq!(
        native::decode(&[PROTOCOL_VERSION, 0, 0]),
        Err(FrameError::Empty)
    );
    assert_eq!(
        decoder_verdict(&[PROTOCOL_VERSION, 0, 0]),
        Err(FrameError::Empty)
    );
}

#[test]
fn spec_4_malformed_payload_is_a_typed_error() {
    let cases: &[(&str, Vec<u8>)] = &[
        // Code 13 names no message.
        ("unknown message code", vec![13, 1]),
        ("code beyond one byte", vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
        // A ping without its id.
        ("truncated ping", vec![2]),
        // A login whose token has 31 characters.
        ("short token", {
            let mut payload = vec![0, 1, 31];
            payload.extend_from_slice(&[b'a'; 31]);
            payload.extend_from_slice(&[0, 0x80, 0x08, 40, 1, 0]);
            payload
        }),
        // A write of a value with no parts.
        ("empty value", vec![4, 1, 0, 1, 0, 0]),
        // A write of a NaN.
        ("NaN", {
            let mut payload = vec![4, 1, 0, 1, 1, 1];
            payload.extend_from_slice(&f64::NAN.to_le_bytes());
            payload.push(0);
            payload
        }),
        // A write of nine parts.
        ("nine parts", {
            let mut payload = vec![4, 1, 0, 1, 9];
            payload.extend_from_slice(&[0, 2].repeat(9));
            payload.push(0);
            payload
        }),
        // A text part of 256 bytes (length varint 0x80 0x02).
        ("text too long", {
            let mut payload = vec![4, 1, 0, 1, 1, 2, 0x80, 0x02];
            payload.extend_from_slice(&[b'x'; 256]);
            payload.push(0);
            payload
        }),
        // A text part that is not UTF-8.
        ("invalid UTF-8", vec![4, 1, 0, 1, 1, 2, 1, 0xff, 0]),
        // A pin kind that does not exist.
        ("pin kind 3", vec![4, 1, 3, 1, 1, 0, 2, 0]),
        // A bool that is neither 0 nor 1.
        ("bool 2", vec![1, 0, 40, 0, 2]),
    ];
    for (what, payload) in cases {
        let expected = FrameError::Malformed {
            len: payload.len(),
            code: payload[0],
        };
        let frame = framed(payload);
        assert_eq!(native::decode(&frame), Err(expected), "{what}");
        assert_eq!(decoder_verdict(&frame), Err(expected), "{what}");
    }
}

#[test]
fn spec_4_trailing_bytes_after_a_message_are_a_typed_error() {
    // Ping { id: 5 } is `02 05`; one byte more is not part of any message.
    let frame = framed(&[2, 5, 0]);
    assert_eq!(
        native::decode(&frame),
        Err(FrameError::TrailingBytes { extra: 1 })
    );
    assert_eq!(
        decoder_verdict(&frame),
        Err(FrameError::TrailingBytes { extra: 1 })
    );
}

#[test]
fn spec_4_truncated_frame_waits_and_bytes_after_a_frame_are_left_alone() {
    let frame = frame_of(&Message::Ping(Ping { id: 300 }));
    for end in 0..frame.len() {
        assert_eq!(native::decode(&frame[..end]), Ok(Decoded::NeedMore));
    }
    // The next frame's bytes are not this frame's: `consumed` stops at its end.
    let mut two = frame.clone();
    two.extend_from_slice(&[PROTOCOL_VERSION, 0]);
    assert_eq!(
        native::decode(&two),
        Ok(Decoded::Frame {
            message: Message::Ping(Ping { id: 300 }),
            consumed: frame.len()
        })
    );
}

#[test]
fn decoder_errors_are_sticky_until_reset() {
    let good = frame_of(&Message::Ping(Ping { id: 1 }));
    let mut stream = good.clone();
    stream.extend_from_slice(&[9, 9, 9]);
    stream.extend_from_slice(&good);

    let mut decoder = FrameDecoder::<FRAME_BUFFER>::new();
    decoder.feed(&stream);
    assert_eq!(
        decoder.next_frame(),
        Ok(Step::Frame(Message::Ping(Ping { id: 1 })))
    );
    let bad_version = Err(FrameError::BadVersion {
        got: 9,
        expected: 1,
    });
    assert_eq!(decoder.next_frame(), bad_version);
    // The stream is out of step: the good frame after the garbage is never trusted.
    assert_eq!(decoder.next_frame(), bad_version);

    decoder.reset();
    assert_eq!(decoder.buffered(), 0);
    decoder.feed(&good);
    assert_eq!(
        decoder.next_frame(),
        Ok(Step::Frame(Message::Ping(Ping { id: 1 })))
    );
}

#[test]
fn encoding_into_a_too_small_buffer_is_a_typed_error() {
    let write = Message::Write(Write {
        id: 1,
        pin: Pin::Virtual(1),
        value: Value::int(255),
        age_ms: None,
    });
    let mut header_only = [0u8; HEADER_LEN - 1];
    assert_eq!(
        native::encode(&write, &mut header_only),
        Err(EncodeError::BufferTooSmall {
            available: HEADER_LEN - 1
        })
    );
    // The frame is 12 bytes; 11 are not enough.
    let mut short = [0u8; 11];
    assert_eq!(
        native::encode(&write, &mut short),
        Err(EncodeError::BufferTooSmall { available: 11 })
    );
    let mut exact = [0u8; 12];
    assert_eq!(native::encode(&write, &mut exact).unwrap().len(), 12);
}
