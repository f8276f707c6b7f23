//! Cost of one pin write through each codec: encode into a stack buffer, then decode it back
//! to a pin and a value, as a device and the server do for every write.

use std::hint::black_box;
use std::num::NonZeroU16;

use blynk_proto::classic::{self, HardwareCommand, MAX_BODY};
use blynk_proto::native::{self, Decoded, HEADER_LEN, Message, Write};
use blynk_proto::{BoundedStr, Pin, Scalar, Value};
use criterion::{Criterion, criterion_group, criterion_main};

/// Encodes a native write and decodes it again; returns the decoded value's part count.
fn native_round_trip(message: &Message<'_>) -> usize {
    let mut buffer = [0u8; HEADER_LEN + 64];
    let Ok(frame) = native::encode(message, &mut buffer) else {
        return 0;
    };
    match native::decode(black_box(frame)) {
        Ok(Decoded::Frame {
            message: Message::Write(write),
            ..
        }) => black_box(&write).value.parts().len(),
        _ => 0,
    }
}

/// Builds a classic HARDWARE write, decodes the frame and parses the body back to a pin and a
/// value; returns the decoded value's part count.
fn classic_round_trip(id: NonZeroU16, pin: Pin, value: &Value<'_>) -> usize {
    let mut buffer = [0u8; classic::HEADER_LEN + 64];
    let Ok(frame) = classic::encode_write(&mut buffer, id, MAX_BODY, pin, value) else {
        return 0;
    };
    let Ok(classic::Decoded::Frame { frame, .. }) = classic::decode(black_box(frame), MAX_BODY)
    else {
        return 0;
    };
    match HardwareCommand::parse(frame.body).map(|command| command.as_write()) {
        Ok(Some(Ok((_, value)))) => black_box(&value).parts().len(),
        _ => 0,
    }
}

/// A native write message, built once outside the measured loop like the classic value.
fn write<'a>(pin: Pin, value: &Value<'a>) -> Message<'a> {
    Message::Write(Write {
        id: 1,
        pin,
        value: value.clone(),
        age_ms: None,
    })
}

fn codecs(c: &mut Criterion) {
    let single = Value::int(255);
    let abc = BoundedStr::new("abc").expect("three bytes fit");
    let multi = Value::from_parts(&[Scalar::Int(1), Scalar::Double(2.5), Scalar::Text(abc)])
        .expect("three finite parts");
    let id = NonZeroU16::MIN;

    let cases = [
        ("write V1=255, encode+decode", Pin::Virtual(1), &single),
        (
            "write V2=[1, 2.5, \"abc\"], encode+decode",
            Pin::Virtual(2),
            &multi,
        ),
    ];
    for (name, pin, value) in cases {
        let mut group = c.benchmark_group(name);
        let message = write(pin, value);
        group.bench_function("native", |b| {
            b.iter(|| native_round_trip(black_box(&message)))
        });
        group.bench_function("classic", |b| {
            b.iter(|| classic_round_trip(black_box(id), black_box(pin), value))
        });
        group.finish();
    }
}

criterion_group!(benches, codecs);
criterion_main!(benches);
