//! A native-protocol test client built on blynk-proto.

use std::time::Duration;

use blynk_proto::native::{
    self, Decoded, DeviceInfo, Login, LoginResult, Message, PROTOCOL_VERSION, SyncPins,
    SyncRequest, Write,
};
use blynk_proto::text::{BoundedStr, Token};
use blynk_proto::{Pin, Scalar, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::PATIENCE;

/// An owned copy of the messages a test inspects.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    LoginResult(LoginResult),
    Pong(u16),
    Ack {
        id: u16,
        version: Option<u64>,
    },
    Update {
        pin: Pin,
        value: Vec<String>,
        version: u64,
    },
    Synced {
        id: u16,
        pin: Pin,
        value: Vec<String>,
        version: u64,
    },
    SyncComplete {
        id: u16,
        count: u16,
        version: u64,
    },
    Error {
        id: u16,
        code: native::ErrorCode,
        detail: String,
    },
    Other(String),
}

fn texts(value: &Value<'_>) -> Vec<String> {
    value.parts().iter().map(Scalar::to_string).collect()
}

fn own(message: Message<'_>) -> Received {
    match message {
        Message::LoginResult(result) => Received::LoginResult(result),
        Message::Pong(pong) => Received::Pong(pong.id),
        Message::Ack(ack) => Received::Ack {
            id: ack.id,
            version: ack.version,
        },
        Message::Update(update) => Received::Update {
            pin: update.pin,
            value: texts(&update.value),
            version: update.version,
        },
        Message::SyncedValue(synced) => Received::Synced {
            id: synced.id,
            pin: synced.pin,
            value: texts(&synced.value),
            version: synced.version,
        },
        Message::SyncComplete(complete) => Received::SyncComplete {
            id: complete.id,
            count: complete.count,
            version: complete.version,
        },
        Message::Error(error) => Received::Error {
            id: error.id,
            code: error.code,
            detail: error.detail.as_str().to_owned(),
        },
        other => Received::Other(other.name().to_owned()),
    }
}

/// Login options.
#[derive(Debug, Clone, Copy)]
pub struct LoginOptions {
    pub sync_on_connect: bool,
    pub known_version: Option<u64>,
    pub heartbeat_seconds: u16,
    pub rx_buffer: u16,
}

impl Default for LoginOptions {
    fn default() -> Self {
        LoginOptions {
            sync_on_connect: true,
            known_version: None,
            heartbeat_seconds: 10,
            rx_buffer: 2048,
        }
    }
}

/// A native device connection.
pub struct NativeClient {
    pub stream: TcpStream,
    buffer: Vec<u8>,
    next_id: u16,
}

impl NativeClient {
    pub async fn connect(address: std::net::SocketAddr) -> Self {
        let stream = TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        NativeClient {
            stream,
            buffer: Vec::new(),
            next_id: 1,
        }
    }

    /// Connects and logs in; returns the client and the login result.
    pub async fn login(
        address: std::net::SocketAddr,
        token: &str,
        options: LoginOptions,
    ) -> (Self, LoginResult) {
        let mut client = Self::connect(address).await;
        let login = Message::Login(Login {
            protocol: PROTOCOL_VERSION,
            token: Token::new(token).unwrap(),
            info: DeviceInfo {
                firmware: BoundedStr::new("test-1.0").unwrap(),
                rx_buffer: options.rx_buffer,
                heartbeat_seconds: options.heartbeat_seconds,
                sync_on_connect: options.sync_on_connect,
                known_version: options.known_version,
            },
        });
        client.send(&login).await;
        match client.recv().await {
            Some(Received::LoginResult(result)) => (client, result),
            other => panic!("expected a login result, got {other:?}"),
        }
    }

    pub fn next_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    pub async fn send(&mut self, message: &Message<'_>) {
        let mut out = vec![0u8; native::HEADER_LEN + native::MAX_FRAME];
        let frame = native::encode(message, &mut out).unwrap();
        self.stream.write_all(frame).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Writes a pin; returns the message id.
    pub async fn write(&mut self, pin: Pin, value: Value<'_>, age_ms: Option<u32>) -> u16 {
        let id = self.next_id();
        self.send(&Message::Write(Write {
            id,
            pin,
            value,
            age_ms,
        }))
        .await;
        id
    }

    pub async fn write_int(&mut self, pin: Pin, value: i64) -> u16 {
        self.write(pin, Value::int(value), None).await
    }

    /// Asks for a sync; returns the request id.
    pub async fn sync(&mut self, pins: Option<&[Pin]>) -> u16 {
        let id = self.next_id();
        let pins = match pins {
            None => SyncPins::All,
            Some(pins) => SyncPins::Only(heapless::Vec::from_slice(pins).unwrap()),
        };
        self.send(&Message::SyncRequest(SyncRequest { id, pins }))
            .await;
        id
    }

    /// The next message, or `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Received> {
        self.recv_within(PATIENCE)
            .await
            .expect("timed out waiting for a message")
    }

    /// The next message within `wait`: `Err(())` on timeout, `Ok(None)` on close.
    pub async fn recv_within(&mut self, wait: Duration) -> Result<Option<Received>, ()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let decoded = match native::decode(&self.buffer) {
                Ok(Decoded::Frame { message, consumed }) => Some((own(message), consumed)),
                Ok(Decoded::NeedMore) => None,
                Err(error) => panic!("server sent a bad frame: {error}"),
            };
            if let Some((received, consumed)) = decoded {
                self.buffer.drain(..consumed);
                return Ok(Some(received));
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .map_err(|_| ())?;
            match read {
                Ok(0) | Err(_) => return Ok(None),
                Ok(count) => self.buffer.extend_from_slice(&chunk[..count]),
            }
        }
    }

    /// Receives until `pick` returns something, skipping other messages.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Received) -> Option<T>,
    ) -> T {
        loop {
            match self.recv().await {
                Some(received) => {
                    if let Some(found) = pick(&received) {
                        return found;
                    }
                }
                None => panic!("connection closed while waiting for {what}"),
            }
        }
    }

    /// The error answering request `id`: its code and detail.
    pub async fn expect_error(&mut self, id: u16) -> (native::ErrorCode, String) {
        self.expect("an error", |received| match received {
            Received::Error {
                id: got,
                code,
                detail,
            } if *got == id => Some((*code, detail.clone())),
            _ => None,
        })
        .await
    }

    /// Receives a whole sync: the values with `id`, up to its completion marker.
    pub async fn collect_sync(&mut self, id: u16) -> (Vec<(Pin, Vec<String>)>, SyncEnd) {
        let mut values = Vec::new();
        loop {
            match self.recv().await {
                Some(Received::Synced {
                    id: got,
                    pin,
                    value,
                    ..
                }) if got == id => values.push((pin, value)),
                Some(Received::SyncComplete {
                    id: got,
                    count,
                    version,
                }) if got == id => {
                    return (values, SyncEnd { count, version });
                }
                Some(_) => {}
                None => panic!("connection closed during a sync"),
            }
        }
    }

    /// Asserts nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(message)) = self.recv_within(wait).await {
            panic!("expected nothing, got {message:?}");
        }
    }

    /// Waits until the server closes the connection.
    pub async fn expect_closed(&mut self) {
        loop {
            match self.recv_within(PATIENCE).await {
                Ok(None) => return,
                Ok(Some(_)) => continue,
                Err(()) => panic!("connection was not closed"),
            }
        }
    }
}

/// The end marker of a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncEnd {
    pub count: u16,
    pub version: u64,
}
