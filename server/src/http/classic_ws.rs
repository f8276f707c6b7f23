//! Classic hardware over WebSocket (`/websockets`): each binary message carries classic frames,
//! as Node-RED's Blynk nodes and other WebSocket clients send them.
//!
//! A message (and a frame) may hold at most one classic frame of the largest body: the
//! WebSocket library refuses a longer one from its header, before buffering it, where its
//! defaults (64 MiB messages) let a few unauthenticated clients take gigabytes.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use std::sync::Arc;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use blynk_proto::classic::{HEADER_LEN, MAX_BODY};
use futures_util::StreamExt;

use super::{AppState, PeerAddr};
use crate::net::io::Activity;
use crate::session::classic;
use crate::session::connection::Transport;

/// The longest message a device may send: one classic frame with the largest body.
pub const MAX_MESSAGE: usize = HEADER_LEN + MAX_BODY;

/// `GET /websockets`: upgrades and runs a classic session.
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    Extension(activity): Extension<Arc<Activity>>,
    socket: WebSocketUpgrade,
) -> Response {
    socket
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .read_buffer_size(MAX_MESSAGE)
        .on_upgrade(move |socket| classic::serve(WsIo { socket, activity }, peer, state.context))
}

/// [`Transport`] over binary WebSocket messages.
struct WsIo {
    socket: WebSocket,
    /// Every whole message keeps the connection from counting as idle.
    activity: Arc<Activity>,
}

impl Transport for WsIo {
    async fn read(&mut self, inbox: &mut Vec<u8>) -> std::io::Result<usize> {
        loop {
            let message = self.socket.next().await;
            if matches!(message, Some(Ok(_))) {
                self.activity.touch();
            }
            match message {
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
