//! The classic frame decoder and every body parser over what it yields; whatever parses as a
//! HARDWARE write re-encodes (or is refused with an error, never a panic).

#![no_main]

use blynk_proto::classic;
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/blynk-proto/tests/all/classic_bodies.rs"]
mod classic_bodies;

use classic_bodies::parse_classic_body;

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the body limit, as a peer's `buff-in` would.
    let Some((limit, bytes)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max_body = usize::from(u16::from_be_bytes(*limit));
    let mut rest = bytes;
    while let Ok(classic::Decoded::Frame { frame, consumed }) = classic::decode(rest, max_body) {
        assert!(consumed > 0 && consumed <= rest.len());
        parse_classic_body(frame.body);
        rest = &rest[consumed..];
    }
    // Bodies on their own, as a GROUP or a WebSocket message would carry them.
    parse_classic_body(bytes);
});
