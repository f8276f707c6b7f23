//! Arbitrary bytes from the network never make a decoder or parser panic or over-read (SPEC 6).
//!
//! Purely random bytes rarely get past the first check, so the inputs are biased: valid
//! headers with random payloads, valid frames with a few bytes changed, and classic bodies
//! assembled from the words the classic parsers look for.

use blynk_proto::classic::{self, MAX_BODY};
use blynk_proto::native::decoder::Step;
use blynk_proto::native::{self, Decoded, FrameDecoder, HEADER_LEN, MAX_FRAME, PROTOCOL_VERSION};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::classic_bodies::parse_classic_body;
use crate::strategies::{FRAME_BUFFER, Sizes, frame_of, message};

/// Decoding garbage is cheap; many cases reach many error paths.
const NATIVE_CASES: u32 = 8192;
/// Each case feeds a few kilobytes through the stream decoder.
const STREAM_CASES: u32 = 2048;
/// Parsing a short body is very cheap.
const CLASSIC_CASES: u32 = 8192;

/// Bytes that look more or less like native frames.
fn native_bytes() -> impl Strategy<Value = Vec<u8>> {
    let random = vec(any::<u8>(), 0..64);
    let with_header = (
        any::<u16>(),
        0u16..64,
        vec(any::<u8>(), 0..96),
        any::<bool>(),
    )
        .prop_map(|(long_len, short_len, payload, short)| {
            let len = if short { short_len } else { long_len };
            let mut frame = vec![PROTOCOL_VERSION];
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&payload);
            frame
        });
    let mutated = (
        message(Sizes::SMALL),
        vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    )
        .prop_map(|(owned, changes)| {
            let mut frame = frame_of(&owned.message());
            for (index, byte) in changes {
                // Keep the header valid most of the time, so that the payload decoder is hit.
                let at = HEADER_LEN + index.index(frame.len() - HEADER_LEN);
                frame[at] = byte;
            }
            frame
        });
    prop_oneof![1 => random, 2 => with_header, 3 => mutated]
}

/// Checks what a decoded native frame may be: within bounds, and a message that re-encodes
/// and decodes to itself.
fn check_native_frame(
    message: &native::Message<'_>,
    consumed: usize,
    available: usize,
) -> Result<(), TestCaseError> {
    prop_assert!(consumed <= available);
    prop_assert!(consumed <= HEADER_LEN + MAX_FRAME);
    let again = frame_of(message);
    prop_assert!(again.len() <= consumed, "re-encoding grew the frame");
    match native::decode(&again) {
        Ok(Decoded::Frame { message: back, .. }) => prop_assert_eq!(&back, message),
        other => prop_assert!(false, "re-encoded frame decoded as {:?}", other),
    }
    Ok(())
}

/// Body bytes assembled from the words the classic parsers look for.
fn classic_body() -> impl Strategy<Value = Vec<u8>> {
    const WORDS: &[&[u8]] = &[
        b"vw",
        b"vr",
        b"dw",
        b"aw",
        b"dr",
        b"ar",
        b"pm",
        b"b",
        b"t",
        b"e",
        b"i",
        b"Abcdefghijklmnopqrstuvwxyz012345",
        b"1700000000000",
        b"ver",
        b"h-beat",
        b"buff-in",
        b"0",
        b"1",
        b"255",
        b"256",
        b"-3",
        b"2.5",
        b"1e5",
        b"inf",
        b"abc",
        b"color",
        b"\0",
        b"\0",
        b"\0",
        b"\xff",
        b"\xc3",
        b"\xc3\xa9",
        b"99999999999",
        b"",
    ];
    let words = vec(prop::sample::select(WORDS), 0..24).prop_map(|words| words.concat());
    prop_oneof![3 => words, 1 => vec(any::<u8>(), 0..64)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(NATIVE_CASES))]

    #[test]
    fn spec_6_arbitrary_bytes_never_panic_the_native_decoder(bytes in native_bytes()) {
        if let Ok(Decoded::Frame { message, consumed }) = native::decode(&bytes) {
            check_native_frame(&message, consumed, bytes.len())?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(STREAM_CASES))]

    #[test]
    fn spec_6_arbitrary_streams_never_panic_the_frame_decoder(
        pieces in vec(native_bytes(), 1..8),
        chunk in 1usize..700,
    ) {
        let stream = pieces.concat();
        let mut decoder = FrameDecoder::<FRAME_BUFFER>::new();
        'stream: for piece in stream.chunks(chunk) {
            let mut rest = piece;
            while !rest.is_empty() {
                let taken = decoder.feed(rest);
                rest = &rest[taken..];
                let mut frames = 0;
                loop {
                    let before = decoder.buffered();
                    // The message borrows the decoder: check it, then measure what it took.
                    let outcome = match decoder.next_frame() {
                        Ok(Step::Frame(message)) => {
                            let canonical = frame_of(&message).len();
                            check_native_frame(&message, canonical, before)?;
                            Ok(Some(canonical))
                        }
                        Ok(Step::NeedMore) => Ok(None),
                        Err(error) => Err(error),
                    };
                    match outcome {
                        Ok(Some(canonical)) => {
                            let consumed = before - decoder.buffered();
                            prop_assert!(consumed >= canonical);
                            prop_assert!(consumed <= HEADER_LEN + MAX_FRAME);
                            frames += 1;
                        }
                        Ok(None) => break,
                        Err(error) => {
                            // Errors are sticky: the stream is out of step for good.
                            prop_assert_eq!(decoder.next_frame(), Err(error));
                            break 'stream;
                        }
                    }
                }
                if taken == 0 && frames == 0 {
                    // The buffer is full without a frame: impossible for a valid header,
                    // which is refused as too long first.
                    prop_assert!(false, "decoder stuck with a full buffer");
                }
            }
        }
        prop_assert!(decoder.buffered() <= FRAME_BUFFER);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CLASSIC_CASES))]

    #[test]
    fn spec_6_arbitrary_bytes_never_panic_the_classic_decoder(
        header in vec(any::<u8>(), 0..=classic::HEADER_LEN),
        body in classic_body(),
        max_body in prop_oneof![0usize..300, Just(MAX_BODY), Just(usize::MAX)],
    ) {
        let bytes = [header.as_slice(), body.as_slice()].concat();
        if let Ok(classic::Decoded::Frame { frame, consumed }) = classic::decode(&bytes, max_body) {
            prop_assert!(consumed <= bytes.len());
            prop_assert!(consumed <= classic::HEADER_LEN + max_body.min(MAX_BODY));
            prop_assert_eq!(consumed, classic::HEADER_LEN + frame.body.len());
            parse_classic_body(frame.body);
        }
    }

    #[test]
    fn spec_6_arbitrary_bodies_never_panic_the_classic_parsers(body in classic_body()) {
        parse_classic_body(&body);
    }
}
