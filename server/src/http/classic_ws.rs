//! Classic hardware over WebSocket (`/websockets`): each binary message carries classic frames,
//! as Node-RED's Blynk nodes and other WebSocket clients send them.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use futures_util::StreamExt;

use super::{AppState, PeerAddr};
use crate::session::classic;
use crate::session::connection::Transport;

/// `GET /websockets`: upgrades and runs a classic session.
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    socket: WebSocketUpgrade,
) -> Response {
    socket.on_upgrade(move |socket| classic::serve(WsIo { socket }, peer, state.context))
}

/// [`Transport`] over binary WebSocket messages.
struct WsIo {
    socket: WebSocket,
}

impl Transport for WsIo {
    async fn read(&mut self, inbox: &mut Vec<u8>) -> std::io::Result<usize> {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Binary(bytes))) if !bytes.is_empty() => {
                    inbox.extend_from_slice(&bytes);
                    return Ok(bytes.len());
                }
                Some(Ok(Message::Close(_))) | None => return Ok(0),
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(std::io::Error::other(error)),
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.socket
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .map_err(std::io::Error::other)
    }

    async fn close(&mut self) {
        let _ = self.socket.send(Message::Close(None)).await;
    }
}
