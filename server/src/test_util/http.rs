//! The tests' HTTP clients: raw HTTP/1.1 over one connection ([`request`]), so a test can send
//! what a real client would not and read the head as written; the app API's own client
//! (`blynk-client`) for the app API calls ([`app`]); and an app WebSocket client.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::{ADMIN_KEY, PATIENCE, TestServer};

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    /// The status code (0 when the answer had no status line).
    pub status: u16,
    /// The status line and headers as written ([`request`]; the status line alone for the app
    /// API calls).
    pub head: String,
    /// The body, de-chunked.
    pub body: String,
}

impl Response {
    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
}

/// Sends one request (connection closed after) and reads the response.
pub async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        text.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    text.push_str("\r\n");
    if let Some(body) = body {
        text.push_str(body);
    }
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .expect("HTTP response timed out")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Response {
        status,
        head: head.to_owned(),
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        body.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    body
}

/// A GET without headers.
pub async fn get(address: SocketAddr, path: &str) -> Response {
    request(address, "GET", path, &[], None).await
}

/// A request to the app API with the admin key.
pub async fn app(address: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Response {
    app_with_key(address, ADMIN_KEY, method, path, body).await
}

/// A request to the app API with the given key, made by the app API's client (`blynk-client`)
/// on a connection of its own; a refusal is a [`Response`] like any other answer.
pub async fn app_with_key(
    address: SocketAddr,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Response {
    let endpoint = blynk_client::Endpoint::parse(&format!("http://{address}")).unwrap();
    let client = blynk_client::Client::new(endpoint, key).unwrap();
    let method = blynk_client::Method::from_bytes(method.as_bytes()).unwrap();
    let body = body.map(|body| body.to_string().into_bytes());
    let exchange = async {
        let mut connection = client.connect().await?;
        connection
            .exchange(method, path, body, std::time::Duration::ZERO)
            .await
    };
    let (status, body) = tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("HTTP response timed out")
        .unwrap_or_else(|error| panic!("{error}"));
    Response {
        status: status.as_u16(),
        head: format!("HTTP/1.1 {status}"),
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// An app WebSocket client. It hands out one event at a time: the events of a
/// `{"type":"batch"}` message come out one by one, in order.
pub struct AppSocket {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    unread: std::collections::VecDeque<Value>,
}

/// How an app socket ended.
#[derive(Debug)]
pub enum AppSocketEnd {
    /// The server sent a close frame with this code and reason.
    Closed(u16, String),
    /// The connection ended without a close frame, for this reason.
    Dropped(String),
}

impl AppSocket {
    /// An app socket with the admin key.
    pub async fn connect(address: SocketAddr) -> Self {
        Self::connect_with_key(address, ADMIN_KEY).await
    }

    /// An app socket authenticated with the given key (`?key=`, as a browser sends it).
    pub async fn connect_with_key(address: SocketAddr, key: &str) -> Self {
        let url = format!("ws://{address}/api/ws?key={key}");
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self::over(socket)
    }

    /// An app socket whose receive buffer is as small as the system allows, so that a test
    /// that stops reading makes the server hold events back after a few kilobytes.
    pub async fn connect_slow(address: SocketAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(address).await.unwrap();
        let url = format!("ws://{address}/api/ws?key={ADMIN_KEY}");
        let (socket, _) =
            tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
                .await
                .unwrap();
        Self::over(socket)
    }

    /// An app socket over a connection the test set up itself.
    pub fn over(
        socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    ) -> Self {
        AppSocket {
            socket,
            unread: std::collections::VecDeque::new(),
        }
    }

    /// Sends a JSON message.
    pub async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap();
    }

    /// Watches devices and returns the snapshot.
    pub async fn watch(&mut self, devices: Value) -> Value {
        self.send(serde_json::json!({ "type": "watch", "devices": devices }))
            .await;
        self.expect(|message| message["type"] == "snapshot").await
    }

    /// The next event; panics when the socket ends or nothing comes within [`PATIENCE`].
    pub async fn recv(&mut self) -> Value {
        match self.next_event(PATIENCE).await {
            Ok(event) => event,
            Err(end) => panic!("app socket ended: {end:?}"),
        }
    }

    /// The next event, or how the socket ended; panics after `wait` without either.
    pub async fn next_event(&mut self, wait: std::time::Duration) -> Result<Value, AppSocketEnd> {
        loop {
            if let Some(event) = self.unread.pop_front() {
                return Ok(event);
            }
            let message = tokio::time::timeout(wait, self.socket.next())
                .await
                .expect("timed out waiting for an app message");
            match message {
                Some(Ok(Message::Text(text))) => {
                    let mut message: Value = serde_json::from_str(&text).unwrap();
                    if message["type"] == "batch" {
                        let events = message["events"].take();
                        let events = events.as_array().expect("a batch holds an array");
                        assert!(events.len() > 1, "a batch holds several events");
                        self.unread.extend(events.iter().cloned());
                    } else {
                        return Ok(message);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(match frame {
                        Some(frame) => {
                            AppSocketEnd::Closed(frame.code.into(), frame.reason.to_string())
                        }
                        None => AppSocketEnd::Dropped("a close frame without a code".into()),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(AppSocketEnd::Dropped(error.to_string())),
                None => return Err(AppSocketEnd::Dropped("end of stream".into())),
            }
        }
    }

    /// Receives until a message matches.
    pub async fn expect(&mut self, mut matches: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let message = self.recv().await;
            if matches(&message) {
                return message;
            }
        }
    }
}

/// An app write through the REST app API (`PUT /api/devices/{device}/values/{pin}`), waiting
/// up to `wait_ms` for the device to receive it; asserts a 200 and returns the answer.
pub async fn write_value(
    address: SocketAddr,
    device: &str,
    pin: &str,
    value: Value,
    wait_ms: u64,
) -> Value {
    let body = serde_json::json!({ "value": value, "wait_ms": wait_ms });
    let path = format!("/api/devices/{device}/values/{pin}");
    let response = app(address, "PUT", &path, Some(body)).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()
}

/// An app write to a pin of the demo device, through the REST app API; returns its answer
/// (`status` is `delivered` when the device got it within half a second, else `pending`).
pub async fn app_write(server: &TestServer, pin: &str, value: Value) -> Value {
    write_value(server.http(), "demo", pin, value, 500).await
}

/// An app write to a pin of the demo device while no device of it is connected, through the
/// REST app API: stored and `pending` at once (no waiting for a delivery that cannot come).
pub async fn offline_write(server: &TestServer, pin: &str, value: Value) -> Value {
    let answer = write_value(server.http(), "demo", pin, value, 0).await;
    assert_eq!(answer["device_online"], false, "{answer}");
    assert_eq!(answer["status"], "pending", "{answer}");
    answer
}

/// The latest stored value of a pin of the demo device, through the app API.
pub async fn stored(server: &TestServer, pin: &str) -> Option<Value> {
    let values = app(server.http(), "GET", "/api/devices/demo/values", None)
        .await
        .json();
    values.get(pin).map(|entry| entry["value"].clone())
}
