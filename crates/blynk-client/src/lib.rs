//! An async client of the server's app API (`docs/api.md`): the REST calls with an API key
//! ([`Client`], [`Connection`] for keep-alive calls one after another) and the app WebSocket
//! ([`AppSocket`]) with readers of its event format ([`events`]). hyper speaks HTTP/1.1,
//! tokio-tungstenite the WebSocket; `https://` and `wss://` need the `tls` feature (rustls).
//!
//! ```no_run
//! # async fn demo() -> Result<(), blynk_client::Error> {
//! use blynk_client::{Client, Endpoint};
//! let client = Client::new(Endpoint::parse("http://127.0.0.1:8080")?, "KEY")?;
//! let devices = client.get("/api/devices").await?;
//! let mut socket = client.websocket().await?;
//! socket.watch("all").await?;
//! let snapshot = socket.recv().await?;
//! # let _ = (devices, snapshot);
//! # Ok(())
//! # }
//! ```

mod endpoint;
mod error;
pub mod events;
mod rest;
mod socket;
#[cfg(feature = "tls")]
mod tls;

pub use endpoint::{CONNECT_TIMEOUT, Endpoint, Io, device_path, encode_component};
pub use error::Error;
pub use hyper::{Method, StatusCode};
pub use rest::{Client, Connection, REQUEST_TIMEOUT};
pub use socket::{AppReceiver, AppSender, AppSocket, Utf8Bytes};
