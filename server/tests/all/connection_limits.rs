//! SPEC section 6, connections: WebSocket sizes capped before buffering, deadlines that a trickle
//! of bytes does not push back, the per-address connection cap, and a failed-login limit that
//! never locks out a right token or the admin. Each test plays the attack at test scale.

use std::net::SocketAddr;
use std::time::Duration;

use blynk_proto::native::{LoginRejection, LoginResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::support::classic::{ClassicClient, Frame, body};
use crate::support::http::{self, AppSocket};
use crate::support::mqtt::{MqttDevice, Options};
use crate::support::native::{LoginOptions, NativeClient};
use crate::support::{ADMIN_KEY, PATIENCE, TestServer};

/// Whether the server closes `stream` within `wait` (whatever it sends first).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Opens a WebSocket on `path` by hand, so that the test can then send frames no client
/// library would.
async fn raw_websocket(address: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(PATIENCE, stream.read_u8())
            .await
            .expect("upgrade answer")
            .unwrap();
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// The header of a client frame (masked with a zero mask, so the payload goes as it is):
/// binary or continuation, final or not, announcing `length` bytes.
fn frame_header(first: bool, fin: bool, length: u64) -> Vec<u8> {
    let opcode = if first { 0x2 } else { 0x0 };
    let mut header = vec![if fin { 0x80 } else { 0 } | opcode, 0x80 | 127];
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    header
}

/// Sends `frame` then, as long as the connection takes it, up to `payload` bytes of zeros in
/// 4 KiB writes; stops early when the server closes.
async fn send_unfinished(stream: &mut TcpStream, frame: &[u8], payload: usize) {
    if stream.write_all(frame).await.is_err() {
        return;
    }
    let chunk = [0u8; 4096];
    for _ in 0..payload.div_ceil(chunk.len()) {
        if stream.write_all(&chunk).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn spec_6_an_oversized_websocket_message_closes_the_connection_before_it_is_buffered() {
    let server = TestServer::start().await;
    for path in ["/websockets", &format!("/api/ws?key={ADMIN_KEY}")] {
        // One frame announcing 10 MB (under the library's default 16 MiB frame limit), of which
        // 64 KiB are sent: the server must refuse it from the header; were it buffering, the
        // connection would wait for the rest.
        let mut socket = raw_websocket(server.http(), path).await;
        send_unfinished(
            &mut socket,
            &frame_header(true, false, 10_000_000),
            64 * 1024,
        )
        .await;
        assert!(
            closed_within(&mut socket, PATIENCE).await,
            "{path}: a 10 MB frame header is refused at once"
        );
        // A message in small frames that together pass the cap, never finished.
        let mut socket = raw_websocket(server.http(), path).await;
        let mut fragments = frame_header(true, false, 1024);
        fragments.extend_from_slice(&[0u8; 1024]);
        for _ in 0..15 {
            fragments.extend_from_slice(&frame_header(false, false, 1024));
            fragments.extend_from_slice(&[0u8; 1024]);
        }
        send_unfinished(&mut socket, &fragments, 0).await;
        assert!(
            closed_within(&mut socket, PATIENCE).await,
            "{path}: a 16 KiB message in 1 KiB fragments is refused"
        );
    }
    // Within the caps, both endpoints work as before.
    let mut app = AppSocket::connect(server.http()).await;
    app.watch(serde_json::json!(["demo"])).await;
}

#[tokio::test]
async fn spec_6_http_headers_trickled_byte_by_byte_are_cut_at_the_header_deadline() {
    let server = TestServer::start_with(|config| config.limits.http_header_seconds = 1).await;
    let mut slow = TcpStream::connect(server.http()).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    // One header byte every 100 ms: each byte would renew an idle timeout; the header deadline
    // counts from the start of the request and must cut the client long before it is done.
    let mut cut = false;
    for _ in 0..60 {
        if slow.write_all(b"X").await.is_err()
            || closed_within(&mut slow, Duration::from_millis(100)).await
        {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "a client trickling its headers for 6 s is still connected"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A whole request is served as before.
    assert_eq!(http::get(server.http(), "/").await.status, 200);
}

#[tokio::test]
async fn spec_6_oversized_http_headers_are_refused() {
    let server = TestServer::start().await;
    let mut client = TcpStream::connect(server.http()).await.unwrap();
    let header = format!("GET / HTTP/1.1\r\nX-Padding: {}\r\n", "a".repeat(64 * 1024));
    let _ = client.write_all(header.as_bytes()).await;
    // Without the limit, the server would wait for the rest until the header deadline (10 s).
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, client.read_to_end(&mut answer))
        .await
        .expect("the connection is still open");
    // The answer may be lost to the reset that closing an unread socket causes.
    if read.is_ok() {
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }
}

#[tokio::test]
async fn spec_6_a_request_body_that_stops_arriving_is_cut_at_the_body_deadline() {
    let server = TestServer::start_with(|config| config.limits.http_body_seconds = 1).await;
    let token = server.demo_token();
    let mut client = TcpStream::connect(server.http()).await.unwrap();
    let head = format!(
        "POST /external/api/batch/update?token={token}&pin=V1 HTTP/1.1\r\nHost: x\r\n\
         Connection: close\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n[[1,"
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, client.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection is still open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[tokio::test]
async fn spec_6_a_trickle_of_bytes_does_not_keep_a_silent_device_session_open() {
    let server =
        TestServer::start_with(|config| config.limits.default_heartbeat_seconds = 10).await;
    let mut device = ClassicClient::connect(server.http()).await;
    let login = device.send(29, server.demo_token().as_bytes()).await;
    assert_eq!(device.recv().await, Some(ok(login)));
    // A 10 s heartbeat: silent for 23 s (2.3 heartbeats) means gone.
    let info = device
        .send(17, &body(&["h-beat", "10", "buff-in", "1024"]))
        .await;
    assert_eq!(device.recv().await, Some(ok(info)));
    // The header of a 4000-byte frame, then its body one byte every second of the server's
    // clock (which the test moves): bytes arrive all the time, a frame never does.
    device.send_raw(&[20, 0, 9, 0x0f, 0xa0]).await;
    let mut trickled = Duration::ZERO;
    let mut cut = false;
    while trickled < Duration::from_secs(100) {
        if device.stream.write_all(b"1").await.is_err()
            || closed_within(&mut device.stream, Duration::from_millis(50)).await
        {
            cut = true;
            break;
        }
        server.advance(Duration::from_secs(1));
        trickled += Duration::from_secs(1);
    }
    assert!(
        cut,
        "a device trickling one frame for 100 s is still connected"
    );
    assert!(
        trickled >= Duration::from_secs(22),
        "cut after {trickled:?}"
    );
}

fn ok(id: u16) -> Frame {
    Frame {
        command: 0,
        id,
        length: 200,
        body: vec![],
    }
}

/// Connects to `target` from the loopback address `source` (any 127.x.y.z is this machine).
async fn connect_from(source: &str, target: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    socket.connect(target).await.unwrap()
}

#[tokio::test]
async fn spec_6_the_per_address_cap_refuses_one_more_connection_and_other_addresses_get_in() {
    let server =
        TestServer::start_with(|config| config.limits.max_connections_per_address = 3).await;
    // Three idle connections from one address fill its share. They go to one port, whose
    // accept loop takes them in order: once the fourth is refused, all three were counted.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.1", server.http()).await);
    }
    let mut fourth = connect_from("127.0.0.1", server.http()).await;
    assert!(
        closed_within(&mut fourth, PATIENCE).await,
        "the fourth connection from one address is refused"
    );
    // The share covers every port.
    let mut native = connect_from("127.0.0.1", server.native()).await;
    assert!(closed_within(&mut native, PATIENCE).await);
    for stream in &mut held {
        assert!(!closed_within(stream, Duration::from_millis(50)).await);
    }
    // Another address is not affected: a whole HTTP request from it is served.
    let mut other = connect_from("127.0.0.2", server.http()).await;
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, other.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
}

/// A bad device token through the HTTP device API.
async fn bad_token_status(server: &TestServer, headers: &[(&str, &str)]) -> u16 {
    let path = "/external/api/get?token=wrongwrongwrongwrongwrongwrong12&v1";
    http::request(server.http(), "GET", path, headers, None)
        .await
        .status
}

#[tokio::test]
async fn spec_6_failed_login_limit_counts_failures_only_and_never_locks_out_a_right_credential() {
    let server = TestServer::start_with(|config| config.limits.failed_logins_per_minute = 20).await;
    let token = server.demo_token();
    // 25 bad tokens from this address, through two protocols.
    for _ in 0..20 {
        assert_eq!(bad_token_status(&server, &[]).await, 401);
    }
    let wrong = "wrongwrongwrongwrongwrongwrong12";
    for _ in 0..5 {
        let (_, result) =
            NativeClient::login(server.native(), wrong, LoginOptions::default()).await;
        assert!(
            matches!(
                result,
                LoginResult::Rejected(LoginRejection::TooManyAttempts { .. })
            ),
            "{result:?}"
        );
    }
    assert_eq!(bad_token_status(&server, &[]).await, 429);
    // Every right token still gets in, by every protocol, from the same address.
    let (_, result) = NativeClient::login(server.native(), &token, LoginOptions::default()).await;
    assert!(matches!(result, LoginResult::Accepted { .. }), "{result:?}");
    drop(ClassicClient::login(server.http(), &token).await);
    let options = Options::default();
    assert!(
        MqttDevice::try_connect(server.mqtt(), &token, options)
            .await
            .is_ok()
    );
    let path = format!("/external/api/isHardwareConnected?token={token}");
    assert_eq!(http::get(server.http(), &path).await.status, 200);
    // The admin has a bucket of its own: a wrong key is still only "wrong", and the right one
    // works.
    let wrong_key = [("Authorization", "Bearer not-the-key")];
    let status = http::request(server.http(), "GET", "/api/devices", &wrong_key, None)
        .await
        .status;
    assert_eq!(status, 401);
    let devices = http::app(server.http(), "GET", "/api/devices", None).await;
    assert_eq!(devices.status, 200);
}

#[tokio::test]
async fn spec_6_failed_admin_logins_never_lock_out_the_admin_key() {
    let server = TestServer::start_with(|config| config.limits.failed_logins_per_minute = 20).await;
    let wrong_key = [("Authorization", "Bearer not-the-key")];
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let response = http::request(server.http(), "GET", "/api/devices", &wrong_key, None).await;
        statuses.push(response.status);
    }
    assert_eq!(statuses[0], 401);
    assert_eq!(statuses[24], 429, "{statuses:?}");
    let devices = http::app(server.http(), "GET", "/api/devices", None).await;
    assert_eq!(devices.status, 200);
    // Device tokens are another bucket: a bad one is answered as only wrong.
    assert_eq!(bad_token_status(&server, &[]).await, 401);
}

#[tokio::test]
async fn spec_6_forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let server = TestServer::start_with(|config| {
        config.limits.failed_logins_per_minute = 2;
        config.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let first = [("X-Forwarded-For", "198.51.100.1")];
    let statuses = [
        bad_token_status(&server, &first).await,
        bad_token_status(&server, &first).await,
        bad_token_status(&server, &first).await,
    ];
    assert_eq!(statuses, [401, 401, 429]);
    // Another client behind the same proxy has its own count.
    let second = [("X-Forwarded-For", "198.51.100.2")];
    assert_eq!(bad_token_status(&server, &second).await, 401);
}

#[tokio::test]
async fn spec_6_the_dashboard_cannot_be_framed_and_runs_only_its_own_code() {
    let server = TestServer::start().await;
    for path in ["/", "/assets/app.js", "/assets/app.css"] {
        let response = http::get(server.http(), path).await;
        assert_eq!(response.status, 200);
        let head = response.head.to_ascii_lowercase();
        assert!(head.contains("x-frame-options: deny"), "{path}: {head}");
        assert!(
            head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
            "{path}: {head}"
        );
        assert!(head.contains("frame-ancestors 'none'"), "{path}: {head}");
    }
}
