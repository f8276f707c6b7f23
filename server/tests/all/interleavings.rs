//! SPEC 3.13, as a property: whatever the interleaving of device writes (classic and native),
//! app writes, HTTP writes and abrupt disconnects, every watching app ends with exactly the
//! store's state, and never sees a pin's version go backwards.

use std::collections::HashMap;
use std::time::Duration;

use blynk_proto::Pin;
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::classic::ClassicClient;
use crate::support::native::{LoginOptions, NativeClient};
use crate::support::{ADMIN_KEY, PATIENCE, TestServer, http};

/// The two devices: the demo device on the classic protocol, a second one on the native one.
const DEVICES: [&str; 2] = ["demo", "second"];

#[derive(Debug, Clone)]
enum Op {
    /// The device writes a pin (V0..V2 of the light template).
    DeviceWrite { device: usize, pin: u8, value: u8 },
    /// An app writes over the app WebSocket, without waiting for the answer.
    AppWrite { device: usize, pin: u8, value: u8 },
    /// The HTTP device API writes.
    HttpWrite { device: usize, pin: u8, value: u8 },
    /// The device's connection drops without a word; its next write reconnects.
    Disconnect { device: usize },
}

fn op() -> impl Strategy<Value = Op> {
    // V0 is 0..1, V1 0..255, V2 0..: values stay valid for every pin.
    let pin_value = (0u8..3, 0u8..2);
    prop_oneof![
        (0usize..2, pin_value.clone()).prop_map(|(device, (pin, value))| Op::DeviceWrite {
            device,
            pin,
            value
        }),
        (0usize..2, pin_value.clone()).prop_map(|(device, (pin, value))| Op::AppWrite {
            device,
            pin,
            value
        }),
        (0usize..2, pin_value).prop_map(|(device, (pin, value))| Op::HttpWrite {
            device,
            pin,
            value
        }),
        (0usize..2).prop_map(|device| Op::Disconnect { device }),
    ]
}

enum Connection {
    Classic(ClassicClient),
    Native(NativeClient),
}

type AppStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A watcher's view: the newest value and version of every (device, pin) it was told of.
#[derive(Default)]
struct View {
    latest: HashMap<(i64, String), (Value, u64)>,
}

impl View {
    /// Applies one server message (an event, or a batch of them).
    fn apply(&mut self, message: &Value) {
        if message["type"] == "batch" {
            for event in message["events"].as_array().into_iter().flatten() {
                self.apply(event);
            }
            return;
        }
        if message["type"] != "value" {
            return;
        }
        let key = (
            message["device"].as_i64().unwrap(),
            message["pin"].as_str().unwrap().to_owned(),
        );
        let version = message["version"].as_u64().unwrap();
        if let Some((_, seen)) = self.latest.get(&key) {
            assert!(
                version > *seen,
                "{key:?}: version {version} after {seen}: a watcher went backwards"
            );
        }
        self.latest.insert(key, (message["value"].clone(), version));
    }
}

/// An app socket watching both devices, once the server has answered the watch with its
/// snapshot: every write made after this reaches it as an event.
async fn watcher(server: &TestServer) -> AppStream {
    let url = format!("ws://{}/api/ws?key={ADMIN_KEY}", server.http());
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let watch = json!({ "type": "watch", "devices": DEVICES });
    socket
        .send(Message::Text(watch.to_string().into()))
        .await
        .unwrap();
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("no snapshot");
        match message {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                if message["type"] == "snapshot" {
                    return socket;
                }
            }
            // The server's keepalive ping, say.
            Some(Ok(_)) => {}
            ended => panic!("the app socket ended before its snapshot: {ended:?}"),
        }
    }
}

/// Reads what a watcher has been sent, for at most `wait`.
async fn drain(socket: &mut AppStream, view: &mut View, wait: Duration) {
    while let Ok(Some(Ok(message))) = tokio::time::timeout(wait, socket.next()).await {
        if let Message::Text(text) = message {
            view.apply(&serde_json::from_str(&text).unwrap());
        }
    }
}

/// The store's latest values: (device id, pin) -> (value, version).
async fn stored(server: &TestServer) -> HashMap<(i64, String), (Value, u64)> {
    let mut all = HashMap::new();
    for name in DEVICES {
        let id = server
            .server()
            .engine()
            .find_device(name)
            .unwrap()
            .device
            .id;
        let values = http::app(
            server.http(),
            "GET",
            &format!("/api/devices/{name}/values"),
            None,
        )
        .await
        .json();
        for (pin, entry) in values.as_object().unwrap() {
            all.insert(
                (id, pin.clone()),
                (entry["value"].clone(), entry["version"].as_u64().unwrap()),
            );
        }
    }
    all
}

async fn run(ops: Vec<Op>) {
    let server = TestServer::start().await;
    let tokens = [
        server.demo_token(),
        server.add_device("second", "light").await,
    ];
    let mut watchers = [watcher(&server).await, watcher(&server).await];
    let mut views = [View::default(), View::default()];
    let mut app = watcher(&server).await;
    let mut connections: [Option<Connection>; 2] = [None, None];
    for (index, op) in ops.into_iter().enumerate() {
        match op {
            Op::DeviceWrite { device, pin, value } => {
                let connection = match &mut connections[device] {
                    Some(connection) => connection,
                    empty => empty.insert(if device == 0 {
                        Connection::Classic(
                            ClassicClient::login(server.http(), &tokens[device]).await,
                        )
                    } else {
                        let options = LoginOptions {
                            sync_on_connect: false,
                            ..LoginOptions::default()
                        };
                        Connection::Native(
                            NativeClient::login(server.native(), &tokens[device], options)
                                .await
                                .0,
                        )
                    }),
                };
                match connection {
                    Connection::Classic(client) => {
                        client.virtual_write(pin, &[&value.to_string()]).await;
                    }
                    Connection::Native(client) => {
                        client.write_int(Pin::Virtual(pin), i64::from(value)).await;
                    }
                }
            }
            Op::AppWrite { device, pin, value } => {
                let write = json!({ "type": "write", "id": index, "device": DEVICES[device], "pin": format!("V{pin}"), "value": value });
                app.send(Message::Text(write.to_string().into()))
                    .await
                    .unwrap();
            }
            Op::HttpWrite { device, pin, value } => {
                let path = format!(
                    "/external/api/update?token={}&v{pin}={value}",
                    tokens[device]
                );
                assert_eq!(http::get(server.http(), &path).await.status, 200);
            }
            Op::Disconnect { device } => {
                if let Some(connection) = connections[device].take() {
                    let mut stream = match connection {
                        Connection::Classic(client) => client.stream,
                        Connection::Native(client) => client.stream,
                    };
                    let _ = stream.shutdown().await;
                }
            }
        }
    }
    // Every write is queued by now; the views must converge to the store (read again until
    // they do, so a short pause between reads only means more rounds).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        for (socket, view) in watchers.iter_mut().zip(views.iter_mut()) {
            drain(socket, view, Duration::from_millis(10)).await;
        }
        let store = stored(&server).await;
        if views.iter().all(|view| view.latest == store) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a watcher's view differs from the store:\nstore {store:?}\nviews {:?}",
            views.iter().map(|view| &view.latest).collect::<Vec<_>>()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn spec_3_13_every_watcher_ends_with_the_store_whatever_the_interleaving(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(ops));
    }
}
