//! A stream of frames arriving in arbitrary pieces yields exactly the frames sent, in order.

use blynk_proto::native::decoder::Step;
use blynk_proto::native::{FrameDecoder, Message};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::strategies::{FRAME_BUFFER, OwnedMessage, Sizes, frame_of, message};

/// Each case splits a stream of small frames at every byte: a few hundred decodes per case.
const EVERY_SPLIT_CASES: u32 = 512;
/// Each case feeds up to six full-size frames in random pieces.
const RANDOM_CHUNK_CASES: u32 = 1024;

/// How the bytes reach the decoder.
#[derive(Debug, Clone, Copy)]
enum Feeding {
    /// `feed(&chunk)`, as from a slice the caller already holds.
    Feed,
    /// A read straight into `spare()`, then `commit(n)`, as from a socket.
    SpareAndCommit,
}

/// Feeds `chunks` into one decoder the way a connection loop does (feed, take frames until
/// `NeedMore`, feed the rest) and checks that the frames are `expected`, in order.
fn check_stream<'c>(
    chunks: impl IntoIterator<Item = &'c [u8]>,
    expected: &[Message<'_>],
    feeding: Feeding,
) -> Result<(), TestCaseError> {
    let mut decoder = FrameDecoder::<FRAME_BUFFER>::new();
    let mut seen = 0;
    for chunk in chunks {
        let mut rest = chunk;
        loop {
            let taken = match feeding {
                Feeding::Feed => decoder.feed(rest),
                Feeding::SpareAndCommit => {
                    let spare = decoder.spare();
                    let count = spare.len().min(rest.len());
                    spare[..count].copy_from_slice(&rest[..count]);
                    decoder.commit(count);
                    count
                }
            };
            rest = &rest[taken..];
            let mut frames = 0;
            loop {
                match decoder.next_frame() {
                    Ok(Step::Frame(message)) => {
                        prop_assert!(seen < expected.len(), "more frames than were sent");
                        prop_assert_eq!(&message, &expected[seen]);
                        seen += 1;
                        frames += 1;
                    }
                    Ok(Step::NeedMore) => break,
                    Err(error) => return Err(TestCaseError::fail(format!("{error}"))),
                }
            }
            if rest.is_empty() {
                break;
            }
            // A full buffer must have held a whole frame, or the decoder could never progress.
            prop_assert!(taken > 0 || frames > 0, "decoder stuck with a full buffer");
        }
    }
    prop_assert_eq!(seen, expected.len());
    prop_assert_eq!(decoder.buffered(), 0);
    Ok(())
}

/// Encodes the messages back to back.
fn stream_of(owned: &[OwnedMessage]) -> (Vec<Message<'_>>, Vec<u8>) {
    let messages: Vec<Message<'_>> = owned.iter().map(OwnedMessage::message).collect();
    let stream = messages.iter().flat_map(|m| frame_of(m)).collect();
    (messages, stream)
}

/// Chunk sizes: single bytes, small reads, and reads larger than the decoder's buffer.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(
        prop_oneof![1usize..=8, 1usize..=300, 1000usize..=12_000],
        1..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(EVERY_SPLIT_CASES))]

    #[test]
    fn a_stream_split_at_every_byte_boundary_yields_the_same_frames(
        owned in vec(message(Sizes::SMALL), 1..=4),
    ) {
        let (messages, stream) = stream_of(&owned);
        for split in 0..=stream.len() {
            let (head, tail) = stream.split_at(split);
            check_stream([head, tail], &messages, Feeding::Feed)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(RANDOM_CHUNK_CASES))]

    #[test]
    fn a_stream_in_random_chunks_yields_the_same_frames(
        owned in vec(message(Sizes::FULL), 1..=6),
        sizes in chunk_sizes(),
        through_spare in any::<bool>(),
    ) {
        let (messages, stream) = stream_of(&owned);
        let mut chunks = Vec::new();
        let mut rest = stream.as_slice();
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        let feeding = if through_spare { Feeding::SpareAndCommit } else { Feeding::Feed };
        check_stream(chunks, &messages, feeding)?;
    }
}

#[test]
fn a_stream_larger_than_the_buffer_fed_at_once_is_taken_in_parts() {
    use crate::strategies::{OwnedScalar, value_of};
    let parts = vec![OwnedScalar::Text("y".repeat(blynk_proto::MAX_TEXT_LEN)); 8];
    let messages: Vec<Message<'_>> = (0..5)
        .map(|id| {
            Message::Write(blynk_proto::native::Write {
                id,
                pin: blynk_proto::Pin::Virtual(3),
                value: value_of(&parts),
                age_ms: None,
            })
        })
        .collect();
    let stream: Vec<u8> = messages.iter().flat_map(|m| frame_of(m)).collect();
    assert!(stream.len() > 4 * FRAME_BUFFER);
    check_stream([stream.as_slice()], &messages, Feeding::Feed).unwrap();
}
