//! The server's address and one connection to it: plain TCP for `http://`, TLS (rustls with
//! ring, the system's root certificates plus an optional `--ca` file) for `https://`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hyper::Uri;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

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
    /// An extra CA certificate file to trust.
    pub ca: Option<PathBuf>,
}

impl Endpoint {
    /// Parses a server URL; a URL without a scheme is taken as `http://`.
    pub fn parse(url: &str, ca: Option<PathBuf>) -> Result<Self> {
        let url = url.trim();
        let full = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let uri: Uri = full
            .parse()
            .map_err(|error| anyhow!("server URL `{url}` is not valid: {error}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => bail!("server URL `{url}`: use http:// or https://, not {other}://"),
            None => bail!("server URL `{url}` has no scheme"),
        };
        let host = uri
            .host()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| anyhow!("server URL `{url}` has no host"))?;
        if uri.query().is_some() {
            bail!("server URL `{url}` must not have a query");
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
            ca,
        })
    }

    /// Opens a connection (TLS when the URL says so).
    pub async fn connect(&self) -> Result<Box<dyn Io>> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect_inner())
            .await
            .map_err(|_| {
                anyhow!(
                    "cannot reach the server at {}: no answer within {} s",
                    self.url,
                    CONNECT_TIMEOUT.as_secs()
                )
            })?
    }

    async fn connect_inner(&self) -> Result<Box<dyn Io>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|error| {
                anyhow!(
                    "cannot reach the server at {}: {error} (is blynk-server running? \
                     --server or BLYNK_SERVER sets the URL)",
                    self.url
                )
            })?;
        let _ = tcp.set_nodelay(true);
        if self.tls {
            self.wrap_tls(tcp).await
        } else {
            Ok(Box::new(tcp))
        }
    }

    #[cfg(feature = "tls")]
    async fn wrap_tls(&self, tcp: TcpStream) -> Result<Box<dyn Io>> {
        use tokio_rustls::rustls::pki_types::ServerName;
        let connector = tls::connector(self.ca.as_deref())?;
        let name = ServerName::try_from(self.host.clone())
            .map_err(|_| anyhow!("`{}` is not a valid TLS server name", self.host))?;
        let stream = connector
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {} failed", self.url))?;
        Ok(Box::new(stream))
    }

    #[cfg(not(feature = "tls"))]
    async fn wrap_tls(&self, _tcp: TcpStream) -> Result<Box<dyn Io>> {
        bail!(
            "{} needs TLS, but this blynk was built without the `tls` feature",
            self.url
        )
    }
}

#[cfg(feature = "tls")]
mod tls {
    //! The rustls client configuration: ring, the system's roots and an optional extra CA.

    use std::path::Path;
    use std::sync::Arc;

    use anyhow::{Context, Result, bail};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    /// A connector trusting the system's root certificates and `ca`, if given.
    pub fn connector(ca: Option<&Path>) -> Result<TlsConnector> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(ca) = ca {
            let certificates = CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("cannot read the CA file {}", ca.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("CA file {} is not valid PEM", ca.display()))?;
            if certificates.is_empty() {
                bail!("CA file {} holds no certificate", ca.display());
            }
            for certificate in certificates {
                roots
                    .add(certificate)
                    .with_context(|| format!("CA file {}", ca.display()))?;
            }
        }
        if roots.is_empty() {
            bail!("no trusted root certificates: the system has none; pass --ca FILE");
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS setup")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector::from(Arc::new(config)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let plain = Endpoint::parse("localhost:8080", None).unwrap();
        assert!(!plain.tls);
        assert_eq!((plain.host.as_str(), plain.port), ("localhost", 8080));
        assert_eq!(plain.prefix, "");
        let secure = Endpoint::parse("https://iot.example.com/blynk/", None).unwrap();
        assert!(secure.tls);
        assert_eq!(secure.port, 443);
        assert_eq!(secure.authority, "iot.example.com");
        assert_eq!(secure.prefix, "/blynk");
        let v6 = Endpoint::parse("http://[::1]:9000", None).unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 9000));
        assert_eq!(v6.authority, "[::1]:9000");
        assert!(Endpoint::parse("ftp://x", None).is_err());
        assert!(Endpoint::parse("http://", None).is_err());
    }

    #[test]
    fn encodes_components() {
        assert_eq!(encode_component("kitchen"), "kitchen");
        assert_eq!(encode_component("living room/1"), "living%20room%2F1");
        assert_eq!(encode_component("é"), "%C3%A9");
    }
}
