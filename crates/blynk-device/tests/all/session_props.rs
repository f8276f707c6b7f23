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
