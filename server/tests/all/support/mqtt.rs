//! MQTT clients for tests: rumqttc (a real client library, as devices use it), and a raw
//! socket that speaks packets through rumqttc's codec when a test must misbehave (go silent,
//! drop the connection without DISCONNECT).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, LastWill, Login, Packet};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, MqttOptions, QoS,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::PATIENCE;

/// What a test device sees.
#[derive(Debug)]
pub enum Seen {
    /// A packet from the server.
    Packet(Incoming),
    /// The connection ended (the event loop is not polled again, so it never reconnects).
    Ended(String),
}

/// A device on rumqttc.
pub struct MqttDevice {
    pub client: AsyncClient,
    seen: mpsc::UnboundedReceiver<Seen>,
}

/// How a test device connects.
#[derive(Debug, Clone)]
pub struct Options {
    pub client_id: String,
    pub clean_session: bool,
    pub keep_alive: Duration,
    pub username: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            client_id: "test-device".into(),
            clean_session: true,
            keep_alive: Duration::from_secs(30),
            username: "device".into(),
        }
    }
}

fn mqtt_options(address: SocketAddr, token: &str, options: &Options) -> MqttOptions {
    let mut mqtt = MqttOptions::new(
        options.client_id.clone(),
        address.ip().to_string(),
        address.port(),
    );
    mqtt.set_credentials(options.username.clone(), token)
        .set_clean_session(options.clean_session)
        .set_keep_alive(options.keep_alive);
    mqtt
}

impl MqttDevice {
    /// Connects and returns the device and the CONNACK's `session present`; panics when
    /// the server refuses.
    pub async fn connect(address: SocketAddr, token: &str, options: Options) -> (Self, bool) {
        match Self::try_connect(address, token, options).await {
            Ok(connected) => connected,
            Err(code) => panic!("CONNECT refused: {code:?}"),
        }
    }

    /// Connects; `Err` holds the CONNACK code of a refusal.
    pub async fn try_connect(
        address: SocketAddr,
        token: &str,
        options: Options,
    ) -> Result<(Self, bool), ConnectReturnCode> {
        let (client, mut events) = AsyncClient::new(mqtt_options(address, token, &options), 64);
        let session_present = tokio::time::timeout(PATIENCE, first_connack(&mut events))
            .await
            .expect("no CONNACK")?;
        let (sender, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if sender.send(Seen::Packet(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(error) => {
                        let _ = sender.send(Seen::Ended(error.to_string()));
                        return;
                    }
                }
            }
        });
        Ok((MqttDevice { client, seen }, session_present))
    }

    /// The next thing seen.
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(PATIENCE, self.seen.recv())
            .await
            .expect("timed out waiting for the MQTT server")
            .unwrap_or(Seen::Ended("event loop gone".into()))
    }

    /// Waits for a packet `pick` accepts, skipping others; panics if the connection ends.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Incoming) -> Option<T>,
    ) -> T {
        loop {
            match self.next().await {
                Seen::Packet(packet) => {
                    if let Some(found) = pick(&packet) {
                        return found;
                    }
                }
                Seen::Ended(reason) => panic!("connection ended waiting for {what}: {reason}"),
            }
        }
    }

    /// Waits for a PUBLISH on `topic` and returns its payload as text.
    pub async fn expect_publish(&mut self, topic: &str) -> String {
        self.expect(topic, |packet| match packet {
            Incoming::Publish(publish) if publish.topic == topic => {
                Some(String::from_utf8_lossy(&publish.payload).into_owned())
            }
            _ => None,
        })
        .await
    }

    /// Subscribes and waits for the SUBACK's return codes.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.unwrap();
        self.expect("SUBACK", |packet| match packet {
            Incoming::SubAck(ack) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Publishes.
    pub async fn publish(&self, topic: &str, qos: QoS, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, qos, false, payload)
            .await
            .unwrap();
    }

    /// Publishes with QoS 1 and waits for the PUBACK.
    pub async fn publish_acked(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.publish(topic, QoS::AtLeastOnce, payload).await;
        self.expect("PUBACK", |packet| {
            matches!(packet, Incoming::PubAck(_)).then_some(())
        })
        .await;
    }

    /// Waits until the connection ends.
    pub async fn expect_end(&mut self) -> String {
        loop {
            if let Seen::Ended(reason) = self.next().await {
                return reason;
            }
        }
    }
}

async fn first_connack(events: &mut EventLoop) -> Result<bool, ConnectReturnCode> {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => return Ok(ack.session_present),
            Ok(_) => {}
            Err(ConnectionError::ConnectionRefused(code)) => return Err(code),
            Err(error) => panic!("MQTT connection failed: {error}"),
        }
    }
}

/// A raw MQTT connection: packets written and read one by one.
pub struct RawMqtt {
    pub stream: TcpStream,
    inbox: BytesMut,
}

impl RawMqtt {
    /// Connects with `keep_alive` seconds and an optional will (topic, payload), and reads the
    /// CONNACK.
    pub async fn connect(
        address: SocketAddr,
        token: &str,
        keep_alive: u16,
        will: Option<(&str, &str)>,
    ) -> (Self, Packet) {
        let stream = TcpStream::connect(address).await.unwrap();
        let mut raw = RawMqtt {
            stream,
            inbox: BytesMut::new(),
        };
        let mut connect = Connect::new("raw-device");
        connect.keep_alive = keep_alive;
        connect.login = Some(Login::new("device", token));
        connect.last_will =
            will.map(|(topic, message)| LastWill::new(topic, message, QoS::AtMostOnce, false));
        raw.send(Packet::Connect(connect)).await;
        let connack = raw.read().await.expect("no CONNACK");
        (raw, connack)
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, 1 << 20).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next packet, or `None` once the server closed the connection.
    pub async fn read(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.inbox, 1 << 20) {
                Ok(packet) => return Some(packet),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(error) => panic!("bad packet from the server: {error}"),
            }
            let read = tokio::time::timeout(PATIENCE, self.stream.read_buf(&mut self.inbox))
                .await
                .expect("timed out reading from the MQTT server");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Waits until the server closes the connection, within `within`.
    pub async fn expect_closed(&mut self, within: Duration) {
        tokio::time::timeout(within, async { while self.read().await.is_some() {} })
            .await
            .expect("the server kept the connection open");
    }
}
