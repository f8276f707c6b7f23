//! A [`Connector`] for an embassy-net [`Stack`]: resolves the server's name (or takes its
//! address) on every connect and opens a TCP socket over caller-supplied buffers.

use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::{self, TcpSocket};
use embassy_net::{IpAddress, Stack};
use embassy_time::{Duration, with_timeout};

use crate::connector::{ConnectError, Connector};

/// Where the server is.
#[derive(Debug, Clone, Copy)]
pub enum Host<'a> {
    /// A DNS name (an IP address in text works too), looked up on every connect.
    Name(&'a str),
    /// An IP address.
    Address(IpAddress),
}

impl<'a> Host<'a> {
    /// Reads a server's host as configured: an IPv4 address when it is one (no lookup), else
    /// a DNS name.
    pub fn parse(text: &'a str) -> Self {
        match text.parse::<core::net::Ipv4Addr>() {
            Ok(address) => Host::Address(address.into()),
            Err(_) => Host::Name(text),
        }
    }
}

/// Connects to the server over an embassy-net stack.
///
/// ```ignore
/// let mut connector = TcpConnector::new(stack, Host::Name("blynk.lan"), 8441, &mut rx, &mut tx);
/// runner.run(&mut connector, &mut lamp, &HANDLERS).await;
/// ```
pub struct TcpConnector<'a, 'n> {
    stack: Stack<'n>,
    host: Host<'a>,
    port: u16,
    rx: &'a mut [u8],
    tx: &'a mut [u8],
    timeout: Duration,
}

impl<'a, 'n> TcpConnector<'a, 'n> {
    /// A connector to `host:port` whose sockets use `rx` and `tx` as their TCP buffers.
    pub fn new(
        stack: Stack<'n>,
        host: Host<'a>,
        port: u16,
        rx: &'a mut [u8],
        tx: &'a mut [u8],
    ) -> Self {
        TcpConnector {
            stack,
            host,
            port,
            rx,
            tx,
            timeout: Duration::from_secs(10),
        }
    }

    /// How long a DNS lookup plus a TCP connect may take, and how long the server may stay
    /// silent (keep-alive probes included) before the connection is dropped (10 s by default).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn address(&self) -> Result<IpAddress, ConnectError> {
        match self.host {
            Host::Address(address) => Ok(address),
            Host::Name(name) => {
                let found = self
                    .stack
                    .dns_query(name, DnsQueryType::A)
                    .await
                    .map_err(|_| ConnectError::Dns)?;
                found.first().copied().ok_or(ConnectError::Dns)
            }
        }
    }
}

impl<'n> Connector for TcpConnector<'_, 'n> {
    type Connection<'c>
        = TcpSocket<'c>
    where
        Self: 'c;

    async fn connect(&mut self) -> Result<Self::Connection<'_>, ConnectError> {
        if !self.stack.is_config_up() {
            return Err(ConnectError::NetworkDown);
        }
        let timeout = self.timeout;
        let address = with_timeout(timeout, self.address())
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let mut socket = TcpSocket::new(self.stack, self.rx, self.tx);
        socket.set_timeout(Some(timeout));
        // smoltcp aborts a connection whose peer has sent nothing for the timeout, idle or not:
        // keep-alive probes (answered by the peer's TCP) keep a quiet but live link open
        // between heartbeats, and a dead one is still dropped after the timeout.
        socket.set_keep_alive(Some(timeout / 2));
        match with_timeout(timeout, socket.connect((address, self.port))).await {
            Ok(Ok(())) => Ok(socket),
            Ok(Err(tcp::ConnectError::ConnectionReset)) => Err(ConnectError::Refused),
            Ok(Err(tcp::ConnectError::NoRoute)) => Err(ConnectError::NoRoute),
            Ok(Err(tcp::ConnectError::TimedOut)) | Err(_) => Err(ConnectError::Timeout),
            Ok(Err(_)) => Err(ConnectError::Other),
        }
    }
}
