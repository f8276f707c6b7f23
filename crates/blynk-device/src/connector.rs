//! The one thing the library asks of the network: open a connection to the server.
//!
//! A [`Connector`] turns into any `embedded_io_async::{Read, Write}`: an embassy-net
//! `TcpSocket` on a board (`net::TcpConnector` with the `embassy-net` feature), a tokio
//! `TcpStream` wrapped in `embedded_io_adapters::tokio_1::FromTokio` on the host. It is called
//! again for every connection, so it can resolve the server's name afresh each time.

use embedded_io_async::{Read, Write};

pub use crate::error::ConnectError;

/// Opens connections to the server.
///
/// The connection may borrow the connector (its socket buffers, for example); the runner drops
/// it before asking for the next.
///
/// On the host, over tokio:
///
/// ```
/// use blynk_device::{ConnectError, Connector};
/// use embedded_io_adapters::tokio_1::FromTokio;
/// use tokio::net::TcpStream;
///
/// struct Host(std::net::SocketAddr);
///
/// impl Connector for Host {
///     type Connection<'c> = FromTokio<TcpStream>;
///
///     async fn connect(&mut self) -> Result<Self::Connection<'_>, ConnectError> {
///         match TcpStream::connect(self.0).await {
///             Ok(stream) => Ok(FromTokio::new(stream)),
///             Err(_) => Err(ConnectError::Refused),
///         }
///     }
/// }
/// ```
pub trait Connector {
    /// An open connection.
    type Connection<'c>: Read + Write
    where
        Self: 'c;

    /// Opens a connection to the server. Every error is retried with backoff.
    #[allow(async_fn_in_trait)]
    async fn connect(&mut self) -> Result<Self::Connection<'_>, ConnectError>;
}
