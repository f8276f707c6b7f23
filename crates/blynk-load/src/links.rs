//! The connections of the data-path rows, one type per role whatever the system under test:
//! a device (on blynk-server a classic, native or MQTT device; on Mosquitto an MQTT client) and
//! the app that watches every device (the app WebSocket, or an MQTT subscriber of `dev/#`).

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinSet;

use blynk_proto::Value;
use blynk_proto::classic::Command;
use blynk_proto::native::{self, Decoded, Message, Write};

use super::mqtt::{self, Credentials, Mosquitto, MqttReader, Packet};
use super::{
    Incoming, NativeConn, PINS, ServerMode, Target, TargetArgs, classic_frame, classic_login,
    classic_next, classic_virtual_write, datastream_name, is_ok_reply, join_all_ok, prepare,
    push_frame, received_virtual_write, summarize, virtual_pin,
};

/// What an MQTT device of blynk-server subscribes to for app writes (docs/protocol.md).
const SERVER_DOWNLINK_FILTER: &str = "downlink/ds/+";
/// Where blynk-server publishes a datastream's app writes: this and the datastream's name.
const SERVER_DOWNLINK_PREFIX: &str = "downlink/ds/";
/// Where blynk-server publishes refusals.
const SERVER_ERROR_TOPIC: &[u8] = b"downlink/error";

/// Which system a row measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// blynk-server (release build, child process): classic devices, one app WebSocket.
    Server,
    /// Mosquitto (child process): MQTT clients, QoS 1 retained messages.
    Mosquitto,
}

/// The protocol blynk-server's devices speak in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceProtocol {
    /// Classic Blynk frames on the HTTP port (HARDWARE `vw` writes, PINGs).
    Classic,
    /// The native protocol on its own port (`Write`, acknowledged; `Update` from apps).
    Native,
    /// MQTT 3.1.1 on the server's MQTT port: `ds/<name>` at QoS 1, `downlink/ds/+`.
    Mqtt,
}

impl DeviceProtocol {
    pub fn name(self) -> &'static str {
        match self {
            DeviceProtocol::Classic => "classic",
            DeviceProtocol::Native => "native",
            DeviceProtocol::Mqtt => "mqtt",
        }
    }
}

/// The system under test, running for one measurement.
pub enum UnderTest {
    /// blynk-server, and the protocol its devices speak.
    Server(Target, DeviceProtocol),
    Mosquitto(Mosquitto),
}

impl UnderTest {
    /// A fresh server with `devices` classic devices (child process), or a fresh broker.
    pub fn start(
        system: System,
        target_args: &TargetArgs,
        devices: usize,
        load: &tokio::runtime::Runtime,
    ) -> Result<Self> {
        match system {
            System::Server => {
                Self::start_server(target_args, devices, DeviceProtocol::Classic, load)
            }
            System::Mosquitto => Ok(UnderTest::Mosquitto(Mosquitto::start()?)),
        }
    }

    /// A fresh server (child process) with `devices` devices that speak `protocol`; its MQTT
    /// port is open only for MQTT devices.
    pub fn start_server(
        target_args: &TargetArgs,
        devices: usize,
        protocol: DeviceProtocol,
        load: &tokio::runtime::Runtime,
    ) -> Result<Self> {
        let mut args = target_args.clone();
        args.server = Some(ServerMode::Child);
        args.mqtt = protocol == DeviceProtocol::Mqtt;
        let target = prepare(&args, ServerMode::Child, devices, false, load)?;
        Ok(UnderTest::Server(target, protocol))
    }

    pub fn name(&self) -> &'static str {
        match self {
            UnderTest::Server(..) => "server",
            UnderTest::Mosquitto(_) => "mosquitto",
        }
    }

    /// The durability the figures were taken with.
    pub fn durability(&self) -> &'static str {
        match self {
            UnderTest::Server(target, _) => target.durability,
            UnderTest::Mosquitto(_) => "autosave",
        }
    }

    pub fn pid(&self) -> Result<u32> {
        match self {
            UnderTest::Server(target, _) => target.server_pid().context("no server process id"),
            UnderTest::Mosquitto(broker) => Ok(broker.pid()),
        }
    }

    pub fn stop(self) {
        match self {
            UnderTest::Server(target, _) => target.stop(),
            UnderTest::Mosquitto(broker) => broker.stop(),
        }
    }
}

/// A device connection; device `index` publishes on its pins and receives app writes.
pub struct DeviceLink {
    pub writer: DeviceWriter,
    pub reader: DeviceReader,
}

/// What a device connection speaks, and to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    /// Classic Blynk frames to blynk-server.
    Classic,
    /// Native frames to blynk-server.
    Native,
    /// MQTT to Mosquitto: `dev/<index>/V<pin>` retained, app writes on `app/<index>/#`.
    Broker,
    /// MQTT to blynk-server: Blynk's topics (`ds/<name>`, `downlink/ds/<name>`).
    ServerMqtt,
}

impl Wire {
    fn mqtt(self) -> bool {
        matches!(self, Wire::Broker | Wire::ServerMqtt)
    }
}

/// The sending half of a device connection, with its message ids.
pub struct DeviceWriter {
    pub index: usize,
    pub write: OwnedWriteHalf,
    wire: Wire,
    next_id: u16,
}

/// The receiving half of a device connection.
pub struct DeviceReader {
    read: OwnedReadHalf,
    buffer: Vec<u8>,
    wire: Wire,
}

/// What a device read from its system.
pub enum DeviceIncoming {
    /// Classic: a PING answered (status 200); native: an `Ack`; MQTT: a PUBACK.
    Acknowledged,
    /// Classic: a response with an error status; native: an `Error`; MQTT on the server: a
    /// message on `downlink/error`.
    Refused,
    /// A value written by the app (the generator identifies a write by its value).
    AppWrite(i64),
    Other,
}

/// Connects `count` devices, 250 at a time; with `subscribe`, MQTT devices subscribe to the
/// app's writes (`app/<index>/#` on Mosquitto, `downlink/ds/+` on the server).
pub async fn connect_devices(
    under_test: &UnderTest,
    count: usize,
    subscribe: bool,
) -> Result<Vec<DeviceLink>> {
    let mut links = Vec::with_capacity(count);
    let indices: Vec<usize> = (0..count).collect();
    for chunk in indices.chunks(250) {
        let mut connecting: JoinSet<Result<DeviceLink>> = JoinSet::new();
        for &index in chunk {
            match under_test {
                UnderTest::Server(target, protocol) => {
                    let device = target
                        .devices
                        .get(index)
                        .context("fewer devices than connections")?;
                    let token = device.token.clone();
                    match protocol {
                        DeviceProtocol::Classic => {
                            let http = target.http;
                            connecting.spawn(async move {
                                let (read, write) = classic_login(http, &token).await?.into_split();
                                Ok(DeviceLink::new(index, read, write, Wire::Classic))
                            });
                        }
                        DeviceProtocol::Native => {
                            let address = target.native;
                            connecting.spawn(async move {
                                let conn = NativeConn::login(address, &token, false, 600).await?;
                                Ok(DeviceLink::from_native(index, conn))
                            });
                        }
                        DeviceProtocol::Mqtt => {
                            let address = target.mqtt.context("the server has no MQTT port")?;
                            connecting.spawn(async move {
                                let login = Credentials {
                                    username: "device",
                                    password: &token,
                                };
                                let (mut reader, mut write) = mqtt::connect_client_with(
                                    address,
                                    &format!("dev-{index}"),
                                    Some(login),
                                )
                                .await?;
                                if subscribe {
                                    mqtt::subscribe_and_wait(
                                        &mut reader,
                                        &mut write,
                                        SERVER_DOWNLINK_FILTER,
                                    )
                                    .await?;
                                }
                                Ok(DeviceLink::from_mqtt(
                                    index,
                                    reader,
                                    write,
                                    Wire::ServerMqtt,
                                ))
                            });
                        }
                    }
                }
                UnderTest::Mosquitto(broker) => {
                    let address = broker.address;
                    connecting.spawn(async move {
                        let (mut reader, mut write) =
                            mqtt::connect_client(address, &format!("dev-{index}")).await?;
                        if subscribe {
                            mqtt::subscribe_and_wait(
                                &mut reader,
                                &mut write,
                                &format!("app/{index}/#"),
                            )
                            .await?;
                        }
                        Ok(DeviceLink::from_mqtt(index, reader, write, Wire::Broker))
                    });
                }
            }
        }
        links.extend(join_all_ok(&mut connecting, "device connections").await?);
    }
    links.sort_by_key(DeviceLink::index);
    Ok(links)
}

impl DeviceLink {
    fn new(index: usize, read: OwnedReadHalf, write: OwnedWriteHalf, wire: Wire) -> Self {
        DeviceLink {
            writer: DeviceWriter {
                index,
                write,
                wire,
                next_id: 0,
            },
            reader: DeviceReader {
                read,
                buffer: Vec::with_capacity(1024),
                wire,
            },
        }
    }

    fn from_mqtt(index: usize, reader: MqttReader, write: OwnedWriteHalf, wire: Wire) -> Self {
        let (read, buffer) = reader.into_parts();
        let mut link = DeviceLink::new(index, read, write, wire);
        link.reader.buffer = buffer;
        link
    }

    /// A logged-in native connection, with what it buffered after the login result.
    fn from_native(index: usize, conn: NativeConn) -> Self {
        let NativeConn {
            stream,
            mut buffer,
            start,
        } = conn;
        buffer.drain(..start);
        let (read, write) = stream.into_split();
        let mut link = DeviceLink::new(index, read, write, Wire::Native);
        link.reader.buffer = buffer;
        link
    }

    pub fn index(&self) -> usize {
        self.writer.index
    }

    /// Reads more bytes and hands every whole message to `each`, acknowledging MQTT PUBLISHes
    /// to the device; `Ok(false)` when the system closed the connection.
    pub async fn read(&mut self, each: impl FnMut(DeviceIncoming)) -> Result<bool> {
        let mut acks = Vec::new();
        let open = self.reader.read(each, &mut acks).await?;
        if !acks.is_empty() {
            self.writer.write.write_all(&acks).await?;
        }
        Ok(open)
    }
}

impl DeviceWriter {
    fn take_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// Appends a write of `value` to virtual pin `pin`: classic HARDWARE `vw`, a native
    /// `Write`, a QoS 1 PUBLISH to `ds/<datastream name>` on the server, or a retained QoS 1
    /// PUBLISH to `dev/<index>/V<pin>` on Mosquitto.
    pub fn push_write(&mut self, out: &mut Vec<u8>, pin: u32, value: i64) -> Result<()> {
        let id = self.take_id();
        let payload = value.to_string();
        match self.wire {
            Wire::Classic => classic_virtual_write(out, id, pin, value)?,
            Wire::Native => push_frame(
                out,
                &Message::Write(Write {
                    id,
                    pin: virtual_pin(pin),
                    value: Value::int(value),
                    age_ms: None,
                }),
            )?,
            Wire::Broker => mqtt::publish(
                out,
                broker_topic(self.index, pin).as_bytes(),
                payload.as_bytes(),
                Some(id),
            ),
            Wire::ServerMqtt => mqtt::publish_with(
                out,
                server_write_topic(pin).as_bytes(),
                payload.as_bytes(),
                Some(id),
                false,
            ),
        }
        Ok(())
    }

    /// Classic only: appends a PING, answered once the server has read everything before it
    /// (classic writes have no acknowledgement). `false` on the others, where every write is
    /// acknowledged.
    pub fn push_ping(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        if self.wire != Wire::Classic {
            return Ok(false);
        }
        let id = self.take_id();
        classic_frame(out, Command::Ping, id, &[])?;
        Ok(true)
    }
}

impl DeviceReader {
    /// Reads more bytes and hands every whole message to `each`; PUBACKs owed for MQTT
    /// PUBLISHes go to `acks`. `Ok(false)` when the system closed the connection.
    pub async fn read(
        &mut self,
        mut each: impl FnMut(DeviceIncoming),
        acks: &mut Vec<u8>,
    ) -> Result<bool> {
        if self.buffer.capacity() - self.buffer.len() < 2048 {
            self.buffer.reserve(8192);
        }
        if self.read.read_buf(&mut self.buffer).await? == 0 {
            return Ok(false);
        }
        let mut consumed = 0;
        if self.wire.mqtt() {
            while let Some((packet, used)) = mqtt::parse(&self.buffer[consumed..])? {
                match packet {
                    Packet::PubAck(_) => each(DeviceIncoming::Acknowledged),
                    Packet::Publish {
                        topic,
                        payload,
                        packet_id,
                    } => {
                        if let Some(id) = packet_id {
                            mqtt::puback(acks, id);
                        }
                        let pin = match self.wire {
                            Wire::ServerMqtt => pin_of_downlink(topic),
                            _ => pin_of_topic(topic).map(|(_, pin)| pin),
                        };
                        each(match (pin, integer(payload)) {
                            (Some(_), Some(value)) => DeviceIncoming::AppWrite(value),
                            _ if self.wire == Wire::ServerMqtt && topic == SERVER_ERROR_TOPIC => {
                                DeviceIncoming::Refused
                            }
                            _ => DeviceIncoming::Other,
                        });
                    }
                    _ => each(DeviceIncoming::Other),
                }
                consumed += used;
            }
        } else if self.wire == Wire::Native {
            loop {
                let (incoming, used) = match native::decode(&self.buffer[consumed..]) {
                    Ok(Decoded::NeedMore) => break,
                    Ok(Decoded::Frame { message, consumed }) => (summarize(&message), consumed),
                    Err(error) => bail!("bad frame from the server: {error}"),
                };
                each(match incoming {
                    Incoming::Ack => DeviceIncoming::Acknowledged,
                    Incoming::Error(_) => DeviceIncoming::Refused,
                    Incoming::Update(Some(value)) => DeviceIncoming::AppWrite(value),
                    _ => DeviceIncoming::Other,
                });
                consumed += used;
            }
        } else {
            while let Some((frame, len)) = classic_next(&self.buffer[consumed..]) {
                each(match frame.command {
                    Command::Response if is_ok_reply(&frame) => DeviceIncoming::Acknowledged,
                    Command::Response => DeviceIncoming::Refused,
                    _ => received_virtual_write(&frame)
                        .map_or(DeviceIncoming::Other, |(_, value)| {
                            DeviceIncoming::AppWrite(value)
                        }),
                });
                consumed += len;
            }
        }
        self.buffer.drain(..consumed);
        Ok(true)
    }
}

pub(crate) fn integer(text: &[u8]) -> Option<i64> {
    std::str::from_utf8(text).ok()?.trim().parse().ok()
}

/// Mosquitto's topic of device `index`'s pin: `dev/<index>/V<pin>`.
fn broker_topic(index: usize, pin: u32) -> String {
    format!("dev/{index}/V{pin}")
}

/// The topic an MQTT device of the server writes a pin to: `ds/<datastream name>`.
fn server_write_topic(pin: u32) -> String {
    format!("ds/{}", datastream_name(pin))
}

/// The pin of an app write the server published on `downlink/ds/<datastream name>`.
fn pin_of_downlink(topic: &[u8]) -> Option<u32> {
    let name = std::str::from_utf8(topic)
        .ok()?
        .strip_prefix(SERVER_DOWNLINK_PREFIX)?;
    (0..PINS).find(|pin| datastream_name(*pin) == name)
}

/// `(index, pin)` of `dev/<index>/V<pin>` or `app/<index>/V<pin>`.
pub(crate) fn pin_of_topic(topic: &[u8]) -> Option<(usize, u32)> {
    let topic = std::str::from_utf8(topic).ok()?;
    let mut parts = topic.split('/');
    let _root = parts.next()?;
    let index = parts.next()?.parse().ok()?;
    let pin = parts.next()?.strip_prefix('V')?.parse().ok()?;
    (pin < PINS).then_some((index, pin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_classic_bodies_give_pin_and_value() {
        assert_eq!(pin_of_topic(b"dev/12/V15"), Some((12, 15)));
        assert_eq!(pin_of_topic(b"dev/12/V16"), None);
        let mut frames = Vec::new();
        classic_virtual_write(&mut frames, 7, 3, -42).unwrap();
        classic_frame(&mut frames, Command::Hardware, 8, &["dw", "3", "1"]).unwrap();
        let (first, len) = classic_next(&frames).unwrap();
        assert_eq!(received_virtual_write(&first), Some((3, -42)));
        let (second, _) = classic_next(&frames[len..]).unwrap();
        assert_eq!(received_virtual_write(&second), None);
    }

    #[test]
    fn server_mqtt_topics_name_datastreams_both_ways() {
        assert_eq!(server_write_topic(7), "ds/value7");
        assert_eq!(pin_of_downlink(b"downlink/ds/value7"), Some(7));
        assert_eq!(pin_of_downlink(b"downlink/ds/value16"), None);
        assert_eq!(pin_of_downlink(b"downlink/error"), None);
        assert_eq!(pin_of_topic(broker_topic(3, 15).as_bytes()), Some((3, 15)));
    }
}
