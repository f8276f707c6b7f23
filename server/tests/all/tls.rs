//! SPEC 6: TLS on every port with one setting (certificate and key files).

use std::sync::Arc;

use blynk_proto::native::{self, DeviceInfo, Login, LoginResult, Message, PROTOCOL_VERSION};
use blynk_proto::text::{BoundedStr, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::support::TestServer;
use crate::support::classic::frame;

/// A server with TLS on every port, from a fresh self-signed certificate for `localhost`, and
/// a connector that trusts it.
pub async fn tls_server() -> (TestServer, TlsConnector) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start_with(|config| {
        config.tls = Some(blynk_server::config::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await;
    (server, connector(generated.cert.der().clone()))
}

fn connector(certificate: CertificateDer<'static>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(certificate).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn spec_6_tls_on_the_native_and_shared_ports_with_one_setting() {
    let (server, tls) = tls_server().await;
    let name = ServerName::try_from("localhost").unwrap();

    // Native login over TLS.
    let tcp = TcpStream::connect(server.native()).await.unwrap();
    let mut stream = tls.connect(name.clone(), tcp).await.unwrap();
    let token = server.demo_token();
    let login = Message::Login(Login {
        protocol: PROTOCOL_VERSION,
        token: Token::new(&token).unwrap(),
        info: DeviceInfo {
            firmware: BoundedStr::new("tls").unwrap(),
            rx_buffer: 1024,
            heartbeat_seconds: 10,
            sync_on_connect: false,
            known_version: None,
        },
    });
    let mut out = [0u8; 256];
    stream
        .write_all(native::encode(&login, &mut out).unwrap())
        .await
        .unwrap();
    let mut reply = vec![0u8; 64];
    let count = stream.read(&mut reply).await.unwrap();
    match native::decode(&reply[..count]).unwrap() {
        native::Decoded::Frame {
            message: Message::LoginResult(result),
            ..
        } => {
            assert!(matches!(result, LoginResult::Accepted { .. }));
        }
        other => panic!("expected a login result, got {other:?}"),
    }

    // Classic login over TLS on the shared port.
    let tcp = TcpStream::connect(server.http()).await.unwrap();
    let mut stream = tls.connect(name.clone(), tcp).await.unwrap();
    stream
        .write_all(&frame(29, 1, server.demo_token().as_bytes()))
        .await
        .unwrap();
    let mut reply = [0u8; 5];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply, [0, 0, 1, 0, 200]);

    // HTTPS on the shared port.
    let tcp = TcpStream::connect(server.http()).await.unwrap();
    let mut stream = tls.connect(name, tcp).await.unwrap();
    let request = format!(
        "GET /{}/isHardwareConnected HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        server.demo_token()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // Plain TCP is refused when TLS is on.
    let mut plain = TcpStream::connect(server.native()).await.unwrap();
    let _ = plain
        .write_all(native::encode(&login, &mut out).unwrap())
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain.read_to_end(&mut answer),
    )
    .await
    .unwrap();
    assert!(
        native::decode(&answer).is_err() || answer.is_empty(),
        "a plain connection gets a TLS alert or nothing, never a login result: {answer:?}"
    );
}
