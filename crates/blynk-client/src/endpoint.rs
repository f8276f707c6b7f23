//! Where the server is, and one connection to it: plain TCP for `http://`, TLS (rustls with
//! ring, the system's root certificates plus an optional extra CA file) for `https://`.

use std::path::PathBuf;
use std::time::Duration;

use hyper::Uri;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::Error;

/// How long connecting (TCP and TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream to the server, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where the server is: parsed from a URL such as `http://localhost:8080` or
/// `https://iot.example.com/blynk` (a path is a prefix for every request).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `https://` (and `wss://`) rather than plain.
    pub tls: bool,
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `host:port` as sent in the `Host` header.
    pub authority: String,
    /// Path prefix without a trailing slash (empty for none).
    pub prefix: String,
    /// The URL as the user wrote it, for messages.
    pub url: String,
    /// An extra CA certificate file to trust (PEM).
    pub ca: Option<PathBuf>,
}

impl Endpoint {
    /// Parses a server URL; a URL without a scheme is taken as `http://`.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let url = url.trim();
        let invalid = |reason: String| Error::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let full = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let uri: Uri = full
            .parse()
            .map_err(|error| invalid(format!("is not valid: {error}")))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(invalid(format!("use http:// or https://, not {other}://"))),
            None => return Err(invalid("has no scheme".to_owned())),
        };
        let host = uri
            .host()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| invalid("has no host".to_owned()))?;
        if uri.query().is_some() {
            return Err(invalid("must not have a query".to_owned()));
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authority = match uri.port_u16() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        Ok(Endpoint {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            authority,
            prefix: uri.path().trim_end_matches('/').to_string(),
            url: url.trim_end_matches('/').to_string(),
            ca: None,
        })
    }

    /// The same server, trusting the CA certificates of `file` (PEM) as well.
    pub fn with_ca(mut self, file: Option<PathBuf>) -> Self {
        self.ca = file;
        self
    }

    /// The app WebSocket's URL (`ws://` or `wss://`).
    pub fn websocket_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}/api/ws", self.authority, self.prefix)
    }

    /// Opens a connection (TLS when the URL says so).
    pub async fn connect(&self) -> Result<Box<dyn Io>, Error> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect_inner())
            .await
            .map_err(|_| Error::ConnectTimeout {
                url: self.url.clone(),
                seconds: CONNECT_TIMEOUT.as_secs(),
            })?
    }

    async fn connect_inner(&self) -> Result<Box<dyn Io>, Error> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| Error::Connect {
                url: self.url.clone(),
                source,
            })?;
        // Requests and WebSocket messages are small and wanted at once.
        let _ = tcp.set_nodelay(true);
        if self.tls {
            self.wrap_tls(tcp).await
        } else {
            Ok(Box::new(tcp))
        }
    }

    #[cfg(feature = "tls")]
    async fn wrap_tls(&self, tcp: TcpStream) -> Result<Box<dyn Io>, Error> {
        use tokio_rustls::rustls::pki_types::ServerName;
        let connector = crate::tls::connector(self.ca.as_deref())?;
        let name = ServerName::try_from(self.host.clone())
            .map_err(|_| Error::Tls(format!("`{}` is not a valid TLS server name", self.host)))?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|source| Error::TlsHandshake {
                url: self.url.clone(),
                source,
            })?;
        Ok(Box::new(stream))
    }

    #[cfg(not(feature = "tls"))]
    async fn wrap_tls(&self, _tcp: TcpStream) -> Result<Box<dyn Io>, Error> {
        Err(Error::TlsDisabled {
            url: self.url.clone(),
        })
    }
}

/// Percent-encodes one URL path segment or query value (everything but RFC 3986 unreserved
/// characters).
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The app API path of a device, named by id or name: `/api/devices/{device}`.
pub fn device_path(device: &str) -> Result<String, Error> {
    if device.trim().is_empty() {
        return Err(Error::InvalidRequest("the device name is empty".to_owned()));
    }
    Ok(format!("/api/devices/{}", encode_component(device)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let plain = Endpoint::parse("localhost:8080").unwrap();
        assert!(!plain.tls);
        assert_eq!((plain.host.as_str(), plain.port), ("localhost", 8080));
        assert_eq!(plain.prefix, "");
        assert_eq!(plain.websocket_url(), "ws://localhost:8080/api/ws");
        let secure = Endpoint::parse("https://iot.example.com/blynk/").unwrap();
        assert!(secure.tls);
        assert_eq!(secure.port, 443);
        assert_eq!(secure.authority, "iot.example.com");
        assert_eq!(secure.prefix, "/blynk");
        assert_eq!(secure.websocket_url(), "wss://iot.example.com/blynk/api/ws");
        let v6 = Endpoint::parse("http://[::1]:9000").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 9000));
        assert_eq!(v6.authority, "[::1]:9000");
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://").is_err());
        assert!(Endpoint::parse("http://x/?a=1").is_err());
    }

    #[test]
    fn encodes_components_and_device_paths() {
        assert_eq!(encode_component("kitchen"), "kitchen");
        assert_eq!(encode_component("living room/1"), "living%20room%2F1");
        assert_eq!(encode_component("é"), "%C3%A9");
        assert_eq!(device_path("a b").unwrap(), "/api/devices/a%20b");
        assert!(device_path(" ").is_err());
    }
}
