//! The native frame decoder: whole-buffer `decode` and the streaming `FrameDecoder` fed the
//! same bytes in chunks must never panic, and must agree on the first frame.

#![no_main]

use blynk_proto::native::{self, Decoded, FrameDecoder, HEADER_LEN, MAX_FRAME, decoder::Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size of the streaming feed (1 to 256 bytes).
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let whole = native::decode(bytes);
    if let Ok(Decoded::Frame { message, consumed }) = &whole {
        assert!(*consumed <= bytes.len());
        // What decodes re-encodes.
        let mut out = vec![0u8; HEADER_LEN + MAX_FRAME];
        native::encode(message, &mut out).expect("a decoded message encodes");
    }

    let mut decoder = FrameDecoder::<{ HEADER_LEN + MAX_FRAME }>::new();
    let mut first = None;
    for piece in bytes.chunks(usize::from(chunk) + 1) {
        let mut rest = piece;
        while !rest.is_empty() {
            let taken = decoder.feed(rest);
            rest = &rest[taken..];
            loop {
                match decoder.next_frame() {
                    Ok(Step::Frame(message)) => {
                        first.get_or_insert_with(|| format!("{message:?}"));
                    }
                    Ok(Step::NeedMore) => break,
                    Err(_) => return,
                }
            }
            if taken == 0 {
                return;
            }
        }
    }
    if let (Ok(Decoded::Frame { message, .. }), Some(first)) = (whole, first) {
        assert_eq!(
            format!("{message:?}"),
            first,
            "streaming and whole decoding agree"
        );
    }
});
