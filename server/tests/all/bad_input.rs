//! SPEC section 6: untrusted input closes the offending connection with a log line, and a
//! well-behaved client in parallel does not notice.

use std::time::Duration;

use blynk_proto::Pin;
use blynk_proto::native::{LoginRejection, LoginResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::TestServer;
use crate::support::classic::{ClassicClient, frame};
use crate::support::native::{LoginOptions, NativeClient, Received};

/// A well-behaved device, logged in before the bad input arrives.
async fn well_behaved(server: &TestServer) -> NativeClient {
    let options = LoginOptions {
        sync_on_connect: false,
        ..Default::default()
    };
    NativeClient::login(server.native(), &server.demo_token(), options)
        .await
        .0
}

/// A well-behaved device keeps writing and getting acks.
async fn still_served(device: &mut NativeClient, value: i64) {
    let id = device.write_int(Pin::Virtual(1), value).await;
    // `expect` fails the test if the connection closes or no ack comes in time.
    device
        .expect("ack", |m| {
            matches!(m, Received::Ack { id: got, .. } if *got == id).then_some(())
        })
        .await;
}

async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 256];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn spec_6_garbage_on_the_native_port_closes_only_that_connection() {
    let server = TestServer::start().await;
    let mut good = well_behaved(&server).await;
    let mut bad = TcpStream::connect(server.native()).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n\xff\xfe garbage")
        .await
        .unwrap();
    assert!(closed_by_server(&mut bad).await);
    still_served(&mut good, 1).await;
}

#[tokio::test]
async fn spec_4_native_peer_of_another_version_gets_a_clear_rejection() {
    let server = TestServer::start().await;
    let mut stream = TcpStream::connect(server.native()).await.unwrap();
    stream.write_all(&[2, 0, 1, 0]).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    match blynk_proto::native::decode(&reply).unwrap() {
        blynk_proto::native::Decoded::Frame {
            message: blynk_proto::native::Message::LoginResult(result),
            ..
        } => {
            assert_eq!(
                result,
                LoginResult::Rejected(LoginRejection::UnsupportedVersion { server: 1 })
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn spec_6_oversized_native_length_is_refused_before_the_payload() {
    let server = TestServer::start().await;
    let mut good = well_behaved(&server).await;
    let mut bad = TcpStream::connect(server.native()).await.unwrap();
    bad.write_all(&[1, 0xff, 0xff]).await.unwrap();
    assert!(
        closed_by_server(&mut bad).await,
        "closed on the header alone"
    );
    still_served(&mut good, 2).await;
}

#[tokio::test]
async fn spec_6_half_a_frame_then_silence_is_closed_at_the_login_timeout() {
    let server = TestServer::start_with(|config| config.limits.login_timeout_seconds = 1).await;
    let mut half = TcpStream::connect(server.native()).await.unwrap();
    half.write_all(&[1, 0, 40, 0, 1, 2]).await.unwrap();
    // Most of the deadline passes on the server's clock: still open.
    server.advance(Duration::from_millis(900));
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(200), half.read(&mut byte)).await;
    assert!(early.is_err(), "closed before the login timeout: {early:?}");
    let step = Duration::from_secs(1);
    assert!(
        server
            .advance_until(step, closed_by_server(&mut half))
            .await
    );
    let mut classic_half = TcpStream::connect(server.http()).await.unwrap();
    classic_half
        .write_all(&[29, 0, 1, 0, 32, b'a'])
        .await
        .unwrap();
    assert!(
        server
            .advance_until(step, closed_by_server(&mut classic_half))
            .await
    );
}

#[tokio::test]
async fn spec_6_oversized_classic_body_closes_that_connection_only() {
    let server = TestServer::start().await;
    let mut good = ClassicClient::login(server.http(), &server.demo_token()).await;
    let mut bad =
        ClassicClient::login(server.http(), &server.add_device("other", "light").await).await;
    bad.send_raw(&[20, 0, 9, 0xff, 0xff]).await;
    bad.expect_closed().await;
    let id = good.send(6, &[]).await;
    assert_eq!(good.recv().await.unwrap().id, id);
}

#[tokio::test]
async fn spec_6_invalid_utf8_in_a_classic_body_gets_status_11_and_the_session_goes_on() {
    let server = TestServer::start().await;
    let mut client = ClassicClient::login(server.http(), &server.demo_token()).await;
    client.send_raw(&frame(20, 5, b"vw\x001\x00\xff\xfe")).await;
    let reply = client.recv().await.unwrap();
    assert_eq!((reply.command, reply.id, reply.length), (0, 5, 11));
    let id = client.send(6, &[]).await;
    assert_eq!(
        client.recv().await.unwrap().length,
        200,
        "ping {id} still answered"
    );
}

#[tokio::test]
async fn spec_6_wrong_token_flood_is_locked_out_and_connected_devices_are_unaffected() {
    let server = TestServer::start_with(|config| config.limits.failed_logins_per_minute = 5).await;
    let mut good = well_behaved(&server).await;
    let wrong = "wrongwrongwrongwrongwrongwrong12";
    let mut rejections = Vec::new();
    for _ in 0..8 {
        let (_, result) =
            NativeClient::login(server.native(), wrong, LoginOptions::default()).await;
        rejections.push(result);
    }
    assert_eq!(
        rejections[0],
        LoginResult::Rejected(LoginRejection::InvalidToken)
    );
    assert!(
        matches!(
            rejections[7],
            LoginResult::Rejected(LoginRejection::TooManyAttempts { .. })
        ),
        "{rejections:?}"
    );
    still_served(&mut good, 3).await;
}

#[tokio::test]
async fn spec_6_random_bytes_never_take_the_server_down() {
    let server = TestServer::start().await;
    let mut good = well_behaved(&server).await;
    // A fixed pseudo-random sequence (xorshift), so a failure can be replayed.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..40 {
        let mut bytes = vec![0u8; 64 + round * 16];
        for byte in &mut bytes {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let target = if round % 2 == 0 {
            server.native()
        } else {
            server.http()
        };
        let mut stream = TcpStream::connect(target).await.unwrap();
        let _ = stream.write_all(&bytes).await;
        drop(stream);
    }
    still_served(&mut good, 4).await;
}

#[tokio::test]
async fn spec_6_an_idle_http_connection_is_closed() {
    let server = TestServer::start_with(|config| config.limits.http_idle_seconds = 1).await;
    let mut slow = TcpStream::connect(server.http()).await.unwrap();
    slow.write_all(b"GET /api/devices HT").await.unwrap();
    let started = tokio::time::Instant::now();
    assert!(
        closed_by_server(&mut slow).await,
        "a half-sent request is not kept forever"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}
