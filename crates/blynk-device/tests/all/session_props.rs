//! Properties of the protocol state machine, fed straight from byte slices: whatever the
//! "server" sends, it never panics and never writes past its buffer; well-formed frames split
//! anywhere come out whole.

use blynk_device::session::{Event, Session};
use blynk_proto::native::{
    self, Ack, LoginResult, Message, Ping, SyncComplete, SyncedValue, Update,
};
use blynk_proto::{Pin, Value};
use proptest::prelude::*;

fn frame(message: &Message<'_>) -> Vec<u8> {
    let mut out = vec![0u8; 512];
    let len = native::encode(message, &mut out).unwrap().len();
    out.truncate(len);
    out
}

/// A server message after login, built from a few numbers.
fn server_message(kind: u8, id: u16, pin: u8, int: i64, version: u64) -> Vec<u8> {
    let value = Value::int(int);
    match kind % 5 {
        0 => frame(&Message::Update(Update {
            pin: Pin::Virtual(pin),
            value,
            version,
        })),
        1 => frame(&Message::SyncedValue(SyncedValue {
            id,
            pin: Pin::Virtual(pin),
            value,
            version,
        })),
        2 => frame(&Message::SyncComplete(SyncComplete {
            id,
            count: 1,
            version,
        })),
        3 => frame(&Message::Ack(Ack {
            id,
            version: Some(version),
        })),
        _ => frame(&Message::Ping(Ping { id })),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_or_overflow(
        rx_len in 1usize..600,
        logged_in in any::<bool>(),
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
    ) {
        let mut rx = vec![0u8; rx_len];
        let mut session = Session::new(&mut rx, Some(3));
        if logged_in {
            let accepted = frame(&Message::LoginResult(LoginResult::Accepted {
                heartbeat_seconds: 1, version: 3, sync_follows: true,
            }));
            let _ = session.on_bytes(&accepted, &mut |_| {});
        }
        for chunk in &chunks {
            let result = session.on_bytes(chunk, &mut |event| {
                if let Event::Value { pin, .. } = event {
                    assert!(pin.is_valid());
                }
            });
            prop_assert!(session.spare().len() <= rx_len);
            if result.is_err() {
                // After an error the session stays failed.
                let again = session.on_bytes(&[], &mut |_| ());
                prop_assert!(again.is_err());
                break;
            }
        }
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order(
        messages in proptest::collection::vec((any::<u8>(), any::<u16>(), any::<u8>(), any::<i64>(), any::<u64>()), 1..20),
        cuts in proptest::collection::vec(1usize..40, 1..40),
    ) {
        let mut stream = frame(&Message::LoginResult(LoginResult::Accepted {
            heartbeat_seconds: 1, version: 0, sync_follows: true,
        }));
        for (kind, id, pin, int, version) in &messages {
            stream.extend(server_message(*kind, *id, *pin, *int, *version));
        }
        let mut rx = vec![0u8; 64];
        let mut session = Session::new(&mut rx, None);
        let mut seen = 0usize;
        let mut pos = 0;
        let mut cut = cuts.iter().cycle();
        while pos < stream.len() {
            let end = (pos + cut.next().unwrap()).min(stream.len());
            session.on_bytes(&stream[pos..end], &mut |_| seen += 1).unwrap();
            pos = end;
        }
        let pings = messages.iter().filter(|m| m.0 % 5 == 4).count();
        // Every message but the pings is an event, plus the login.
        prop_assert_eq!(seen, messages.len() - pings + 1);
    }
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
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The device's own decoder agrees with blynk-proto's on every message a server sends,
    /// and refuses the rest.
    #[test]
    fn the_device_decoder_agrees_with_blynk_proto(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        frame_like(),
    ]) {
        let ours = blynk_device::decode_for_tests(&bytes);
        // Codes of messages only devices send: the device refuses them as malformed.
        let device_only = bytes.len() > 3 && [0, 4, 6, 9, 10].contains(&bytes[3]);
        match native::decode(&bytes) {
            Ok(native::Decoded::Frame { .. })
            | Err(native::FrameError::TrailingBytes { .. } | native::FrameError::Malformed { .. })
                if device_only =>
            {
                prop_assert!(
                    matches!(ours, Err(native::FrameError::Malformed { .. })),
                    "{:?}", ours
                );
            }
            reference => prop_assert_eq!(ours, reference),
        }
    }

    #[test]
    fn the_device_decoder_reads_every_server_message(
        kind in any::<u8>(), id in any::<u16>(), pin in any::<u8>(), int in any::<i64>(), version in any::<u64>(),
    ) {
        let bytes = server_message(kind, id, pin, int, version);
        let ours = blynk_device::decode_for_tests(&bytes);
        prop_assert_eq!(ours, native::decode(&bytes));
    }
}
