//! Proptest strategies for every native message, and helpers shared by the test modules.
//!
//! Messages borrow their text (`BoundedStr<'a>`, `Token<'a>`), so the strategies generate an
//! owned mirror, [`OwnedMessage`], and each test builds the borrowed [`Message`] from it.

use blynk_proto::native::{
    Ack, DeviceInfo, ErrorCode, ErrorReply, Event, HEADER_LEN, Login, LoginRejection, LoginResult,
    MAX_FRAME, Message, Ping, Pong, Property, SyncComplete, SyncPins, SyncRequest, SyncedValue,
    Update, Write,
};
use blynk_proto::{
    BoundedStr, MAX_NAME_LEN, MAX_SYNC_PINS, MAX_TEXT_LEN, MAX_VALUE_PARTS, Pin, Scalar, Token,
    Value,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// A buffer that holds the largest native frame.
pub const FRAME_BUFFER: usize = HEADER_LEN + MAX_FRAME;

/// Longest detail of an [`ErrorReply`].
pub const MAX_DETAIL_LEN: usize = 2 * MAX_NAME_LEN;

/// How large the generated texts and values may be. Full-size messages exercise the limits;
/// small ones keep the split-at-every-byte property affordable.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Longest value part text, in bytes (at most [`MAX_TEXT_LEN`]).
    pub text: usize,
    /// Longest name (property, event code, firmware), in bytes (at most [`MAX_NAME_LEN`]).
    pub name: usize,
    /// Most parts in a value (at most [`MAX_VALUE_PARTS`]).
    pub parts: usize,
    /// Most pins in a sync request (at most [`MAX_SYNC_PINS`]).
    pub sync_pins: usize,
}

impl Sizes {
    /// Everything up to the protocol's limits.
    pub const FULL: Sizes = Sizes {
        text: MAX_TEXT_LEN,
        name: MAX_NAME_LEN,
        parts: MAX_VALUE_PARTS,
        sync_pins: MAX_SYNC_PINS,
    };

    /// Small messages, a few dozen bytes each.
    pub const SMALL: Sizes = Sizes {
        text: 12,
        name: 8,
        parts: 3,
        sync_pins: 4,
    };
}

/// An owned value part.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedScalar {
    Int(i64),
    Double(f64),
    Text(String),
}

impl OwnedScalar {
    pub fn scalar(&self) -> Scalar<'_> {
        match self {
            OwnedScalar::Int(int) => Scalar::Int(*int),
            OwnedScalar::Double(double) => Scalar::Double(*double),
            OwnedScalar::Text(text) => Scalar::Text(BoundedStr::new(text).unwrap()),
        }
    }
}

/// Builds the borrowed value of owned parts.
pub fn value_of(parts: &[OwnedScalar]) -> Value<'_> {
    let parts: Vec<Scalar<'_>> = parts.iter().map(OwnedScalar::scalar).collect();
    Value::from_parts(&parts).unwrap()
}

/// An owned mirror of [`Message`]: the same fields, with `String`s where the message borrows.
#[derive(Debug, Clone)]
pub enum OwnedMessage {
    Login {
        protocol: u8,
        token: String,
        firmware: String,
        rx_buffer: u16,
        heartbeat_seconds: u16,
        sync_on_connect: bool,
        known_version: Option<u64>,
    },
    LoginResult(LoginResult),
    Ping(Ping),
    Pong(Pong),
    Write {
        id: u16,
        pin: Pin,
        value: Vec<OwnedScalar>,
        age_ms: Option<u32>,
    },
    Update {
        pin: Pin,
        value: Vec<OwnedScalar>,
        version: u64,
    },
    SyncRequest(SyncRequest),
    SyncedValue {
        id: u16,
        pin: Pin,
        value: Vec<OwnedScalar>,
        version: u64,
    },
    SyncComplete(SyncComplete),
    Property {
        id: u16,
        pin: Pin,
        name: String,
        value: Vec<OwnedScalar>,
    },
    Event {
        id: u16,
        code: String,
        description: Option<String>,
    },
    Ack(Ack),
    Error {
        id: u16,
        code: ErrorCode,
        detail: String,
    },
}

impl OwnedMessage {
    /// The message, borrowing this one's text.
    pub fn message(&self) -> Message<'_> {
        match self {
            OwnedMessage::Login {
                protocol,
                token,
                firmware,
                rx_buffer,
                heartbeat_seconds,
                sync_on_connect,
                known_version,
            } => Message::Login(Login {
                protocol: *protocol,
                token: Token::new(token).unwrap(),
                info: DeviceInfo {
                    firmware: BoundedStr::new(firmware).unwrap(),
                    rx_buffer: *rx_buffer,
                    heartbeat_seconds: *heartbeat_seconds,
                    sync_on_connect: *sync_on_connect,
                    known_version: *known_version,
                },
            }),
            OwnedMessage::LoginResult(result) => Message::LoginResult(*result),
            OwnedMessage::Ping(ping) => Message::Ping(*ping),
            OwnedMessage::Pong(pong) => Message::Pong(*pong),
            OwnedMessage::Write {
                id,
                pin,
                value,
                age_ms,
            } => Message::Write(Write {
                id: *id,
                pin: *pin,
                value: value_of(value),
                age_ms: *age_ms,
            }),
            OwnedMessage::Update {
                pin,
                value,
                version,
            } => Message::Update(Update {
                pin: *pin,
                value: value_of(value),
                version: *version,
            }),
            OwnedMessage::SyncRequest(request) => Message::SyncRequest(request.clone()),
            OwnedMessage::SyncedValue {
                id,
                pin,
                value,
                version,
            } => Message::SyncedValue(SyncedValue {
                id: *id,
                pin: *pin,
                value: value_of(value),
                version: *version,
            }),
            OwnedMessage::SyncComplete(complete) => Message::SyncComplete(*complete),
            OwnedMessage::Property {
                id,
                pin,
                name,
                value,
            } => Message::Property(Property {
                id: *id,
                pin: *pin,
                name: BoundedStr::new(name).unwrap(),
                value: value_of(value),
            }),
            OwnedMessage::Event {
                id,
                code,
                description,
            } => Message::Event(Event {
                id: *id,
                code: BoundedStr::new(code).unwrap(),
                description: description
                    .as_deref()
                    .map(|text| BoundedStr::new(text).unwrap()),
            }),
            OwnedMessage::Ack(ack) => Message::Ack(*ack),
            OwnedMessage::Error { id, code, detail } => Message::Error(ErrorReply {
                id: *id,
                code: *code,
                detail: BoundedStr::new(detail).unwrap(),
            }),
        }
    }
}

/// Encodes one message as a frame into a fresh vector.
pub fn frame_of(message: &Message<'_>) -> Vec<u8> {
    let mut buffer = [0u8; FRAME_BUFFER];
    blynk_proto::native::encode(message, &mut buffer)
        .unwrap()
        .to_vec()
}

/// Any pin within the range of its kind.
pub fn pin() -> impl Strategy<Value = Pin> {
    prop_oneof![
        any::<u8>().prop_map(Pin::Virtual),
        (0..=blynk_proto::pin::MAX_DIGITAL_PIN).prop_map(Pin::Digital),
        (0..=blynk_proto::pin::MAX_ANALOG_PIN).prop_map(Pin::Analog),
    ]
}

/// UTF-8 text of at most `max` bytes: any characters (cut at the byte budget), or ASCII up to
/// exactly the limit so that the boundary is reached often.
pub fn text(max: usize) -> impl Strategy<Value = String> {
    let any_chars = vec(any::<char>(), 0..=max).prop_map(move |chars| {
        let mut text = String::new();
        for ch in chars {
            if text.len() + ch.len_utf8() > max {
                break;
            }
            text.push(ch);
        }
        text
    });
    let ascii = prop_oneof![
        (0..=max).prop_map(|len| "x".repeat(len)),
        Just("é".repeat(max / 2)),
    ];
    prop_oneof![3 => any_chars, 1 => ascii]
}

/// A well-formed auth token.
pub fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{32}"
}

/// A finite double: every class (normal, subnormal, zero) of either sign.
pub fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

/// One value part.
pub fn scalar(sizes: Sizes) -> impl Strategy<Value = OwnedScalar> {
    prop_oneof![
        any::<i64>().prop_map(OwnedScalar::Int),
        finite_f64().prop_map(OwnedScalar::Double),
        text(sizes.text).prop_map(OwnedScalar::Text),
    ]
}

/// A value of 1..=`sizes.parts` parts.
pub fn value(sizes: Sizes) -> impl Strategy<Value = Vec<OwnedScalar>> {
    vec(scalar(sizes), 1..=sizes.parts)
}

pub fn login_rejection() -> impl Strategy<Value = LoginRejection> {
    prop_oneof![
        Just(LoginRejection::InvalidToken),
        any::<u8>().prop_map(|server| LoginRejection::UnsupportedVersion { server }),
        any::<u16>().prop_map(|retry_after_seconds| LoginRejection::TooManyAttempts {
            retry_after_seconds
        }),
        Just(LoginRejection::ServerBusy),
    ]
}

pub fn login_result() -> impl Strategy<Value = LoginResult> {
    prop_oneof![
        (any::<u16>(), any::<u64>(), any::<bool>()).prop_map(
            |(heartbeat_seconds, version, sync_follows)| LoginResult::Accepted {
                heartbeat_seconds,
                version,
                sync_follows,
            }
        ),
        login_rejection().prop_map(LoginResult::Rejected),
    ]
}

pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::IllegalCommand),
        Just(ErrorCode::UnknownPin),
        Just(ErrorCode::WrongType),
        Just(ErrorCode::RateLimited),
        Just(ErrorCode::NotLoggedIn),
        Just(ErrorCode::Internal),
    ]
}

pub fn sync_pins(max: usize) -> impl Strategy<Value = SyncPins> {
    prop_oneof![
        Just(SyncPins::All),
        vec(pin(), 0..=max)
            .prop_map(|pins| SyncPins::Only(heapless::Vec::from_slice(&pins).unwrap())),
    ]
}

/// Any message of the native protocol, every variant and every field.
pub fn message(sizes: Sizes) -> impl Strategy<Value = OwnedMessage> {
    let login = (
        any::<u8>(),
        token(),
        text(sizes.name),
        any::<u16>(),
        any::<u16>(),
        any::<bool>(),
        any::<Option<u64>>(),
    )
        .prop_map(
            |(
                protocol,
                token,
                firmware,
                rx_buffer,
                heartbeat_seconds,
                sync_on_connect,
                known_version,
            )| OwnedMessage::Login {
                protocol,
                token,
                firmware,
                rx_buffer,
                heartbeat_seconds,
                sync_on_connect,
                known_version,
            },
        );
    let write = (any::<u16>(), pin(), value(sizes), any::<Option<u32>>()).prop_map(
        |(id, pin, value, age_ms)| OwnedMessage::Write {
            id,
            pin,
            value,
            age_ms,
        },
    );
    let update = (pin(), value(sizes), any::<u64>()).prop_map(|(pin, value, version)| {
        OwnedMessage::Update {
            pin,
            value,
            version,
        }
    });
    let sync_request = (any::<u16>(), sync_pins(sizes.sync_pins))
        .prop_map(|(id, pins)| OwnedMessage::SyncRequest(SyncRequest { id, pins }));
    let synced_value =
        (any::<u16>(), pin(), value(sizes), any::<u64>()).prop_map(|(id, pin, value, version)| {
            OwnedMessage::SyncedValue {
                id,
                pin,
                value,
                version,
            }
        });
    let sync_complete =
        (any::<u16>(), any::<u16>(), any::<u64>()).prop_map(|(id, count, version)| {
            OwnedMessage::SyncComplete(SyncComplete { id, count, version })
        });
    let property =
        (any::<u16>(), pin(), text(sizes.name), value(sizes)).prop_map(|(id, pin, name, value)| {
            OwnedMessage::Property {
                id,
                pin,
                name,
                value,
            }
        });
    let event = (
        any::<u16>(),
        text(sizes.name),
        proptest::option::of(text(sizes.text)),
    )
        .prop_map(|(id, code, description)| OwnedMessage::Event {
            id,
            code,
            description,
        });
    let ack = (any::<u16>(), any::<Option<u64>>())
        .prop_map(|(id, version)| OwnedMessage::Ack(Ack { id, version }));
    let error = (
        any::<u16>(),
        error_code(),
        text(MAX_DETAIL_LEN.min(sizes.text)),
    )
        .prop_map(|(id, code, detail)| OwnedMessage::Error { id, code, detail });
    prop_oneof![
        login,
        login_result().prop_map(OwnedMessage::LoginResult),
        any::<u16>().prop_map(|id| OwnedMessage::Ping(Ping { id })),
        any::<u16>().prop_map(|id| OwnedMessage::Pong(Pong { id })),
        write,
        update,
        sync_request,
        synced_value,
        sync_complete,
        property,
        event,
        ack,
        error,
    ]
}
