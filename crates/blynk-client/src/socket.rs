//! The app WebSocket (`GET /api/ws`, tokio-tungstenite): the API key in the upgrade request,
//! JSON text messages both ways. A received message is handed out as the text the socket read,
//! without a copy, so a reader of many events a second allocates nothing per message of its own.

use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::header::{AUTHORIZATION, USER_AGENT};
use serde::Serialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

pub use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::endpoint::Io;
use crate::{Client, Error};

/// The largest message accepted from the server (a snapshot of many thousand devices).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

type Socket = WebSocketStream<Box<dyn Io>>;

/// An open app WebSocket.
pub struct AppSocket {
    socket: Socket,
    url: String,
}

/// The sending half of a [`AppSocket::split`] socket.
pub struct AppSender {
    sink: SplitSink<Socket, Message>,
    url: String,
}

/// The receiving half of a [`AppSocket::split`] socket.
pub struct AppReceiver {
    stream: SplitStream<Socket>,
    url: String,
}

impl Client {
    /// Opens the app WebSocket. A refused upgrade (a wrong key, say) is [`Error::Refused`].
    pub async fn websocket(&self) -> Result<AppSocket, Error> {
        let endpoint = self.endpoint();
        let url = endpoint.websocket_url();
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|error| Error::InvalidRequest(format!("WebSocket URL {url}: {error}")))?;
        request
            .headers_mut()
            .insert(AUTHORIZATION, self.bearer().clone());
        request
            .headers_mut()
            .insert(USER_AGENT, self.user_agent().clone());
        let stream = endpoint.connect().await?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let handshake = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
        let (socket, _) = tokio::time::timeout(crate::REQUEST_TIMEOUT, handshake)
            .await
            .map_err(|_| Error::Timeout {
                what: "WebSocket upgrade".to_owned(),
                url: endpoint.url.clone(),
                seconds: crate::REQUEST_TIMEOUT.as_secs(),
            })?
            .map_err(|error| match error {
                tungstenite::Error::Http(response) => {
                    let (parts, body) = response.into_parts();
                    Error::refused(
                        "GET /api/ws".to_owned(),
                        parts.status,
                        body.unwrap_or_default().into(),
                    )
                }
                other => broke(&endpoint.url, other),
            })?;
        Ok(AppSocket {
            socket,
            url: endpoint.url.clone(),
        })
    }
}

impl AppSocket {
    /// Sends one JSON message, e.g. `{"type": "watch", "devices": "all"}`.
    pub async fn send_json(&mut self, message: &(impl Serialize + ?Sized)) -> Result<(), Error> {
        let text = json_text(message)?;
        self.send_text(text).await
    }

    /// Sends one text message (JSON the caller wrote).
    pub async fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), Error> {
        let message = Message::Text(text.into());
        self.socket
            .send(message)
            .await
            .map_err(|error| broke(&self.url, error))
    }

    /// `{"type": "watch", "devices": devices}`: `devices` is a list of ids or names, or `"all"`.
    pub async fn watch(&mut self, devices: &(impl Serialize + ?Sized)) -> Result<(), Error> {
        self.send_json(&serde_json::json!({ "type": "watch", "devices": devices }))
            .await
    }

    /// The next text message; the server closing the socket is [`Error::Closed`].
    pub async fn recv(&mut self) -> Result<Utf8Bytes, Error> {
        next_text(&mut self.socket, &self.url).await
    }

    /// Closes the socket politely, waiting at most a second for the server.
    pub async fn close(mut self, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: reason.to_owned().into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), self.socket.close(Some(frame))).await;
    }

    /// Two halves, to send from one task and read in another.
    pub fn split(self) -> (AppSender, AppReceiver) {
        let (sink, stream) = self.socket.split();
        (
            AppSender {
                sink,
                url: self.url.clone(),
            },
            AppReceiver {
                stream,
                url: self.url,
            },
        )
    }
}

impl AppSender {
    /// Sends one text message.
    pub async fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), Error> {
        self.sink
            .send(Message::Text(text.into()))
            .await
            .map_err(|error| broke(&self.url, error))
    }

    /// Queues one text message without flushing, so that many go out in few writes; then
    /// [`AppSender::flush`].
    pub async fn feed_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), Error> {
        self.sink
            .feed(Message::Text(text.into()))
            .await
            .map_err(|error| broke(&self.url, error))
    }

    /// Sends what [`AppSender::feed_text`] queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.sink
            .flush()
            .await
            .map_err(|error| broke(&self.url, error))
    }
}

impl AppReceiver {
    /// The next text message; the server closing the socket is [`Error::Closed`].
    pub async fn recv(&mut self) -> Result<Utf8Bytes, Error> {
        next_text(&mut self.stream, &self.url).await
    }
}

/// Reads to the next text message: pings are answered by tungstenite, binary messages are not
/// part of the app API and are skipped.
async fn next_text(
    stream: &mut (impl futures_util::Stream<Item = tungstenite::Result<Message>> + Unpin),
    url: &str,
) -> Result<Utf8Bytes, Error> {
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(frame))) => {
                return Err(match frame {
                    Some(frame) => Error::Closed {
                        code: frame.code.into(),
                        reason: frame.reason.to_string(),
                    },
                    None => Error::Closed {
                        code: CloseCode::Status.into(),
                        reason: String::new(),
                    },
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(
                tungstenite::Error::ConnectionClosed
                | tungstenite::Error::AlreadyClosed
                | tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ),
            ))
            | None => {
                return Err(Error::Closed {
                    code: CloseCode::Abnormal.into(),
                    reason: "closed without a close frame".to_owned(),
                });
            }
            Some(Err(error)) => return Err(broke(url, error)),
        }
    }
}

fn json_text(message: &(impl Serialize + ?Sized)) -> Result<String, Error> {
    serde_json::to_string(message).map_err(|error| {
        Error::InvalidRequest(format!("a message cannot be written as JSON: {error}"))
    })
}

fn broke(url: &str, error: tungstenite::Error) -> Error {
    Error::WebSocket {
        url: url.to_owned(),
        source: Box::new(error),
    }
}
