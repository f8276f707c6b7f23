//! The connections of the data-path rows, one type per role whatever the system under test:
//! a device (on blynk-server a classic, native or MQTT device; on Mosquitto an MQTT client) and
//! the app that watches every device (the app WebSocket, or an MQTT subscriber of `dev/#`).

use std::collections::HashMap;

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinSet;

use blynk_proto::Value;
use blynk_proto::native::{self, Decoded, Message, Write};

use super::app_events::{self, AppEvent};
use super::mqtt::{self, Credentials, Mosquitto, MqttReader, Packet};
use super::{
    Incoming, NativeConn, PINS, ServerMode, Target, TargetArgs, WsReader, classic_frame,
    classic_header, classic_login, datastream_name, join_all_ok, prepare, push_frame, summarize,
    virtual_pin, ws_connect, ws_parse, ws_text,
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
            Wire::Classic => classic_frame(out, 20, id, format!("vw\0{pin}\0{value}").as_bytes()),
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
    pub fn push_ping(&mut self, out: &mut Vec<u8>) -> bool {
        if self.wire != Wire::Classic {
            return false;
        }
        let id = self.take_id();
        classic_frame(out, 6, id, &[]);
        true
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
            while let Some((command, _, status, len)) = classic_header(&self.buffer[consumed..]) {
                let body = &self.buffer[consumed + 5..consumed + len];
                each(match command {
                    0 if status == 200 => DeviceIncoming::Acknowledged,
                    0 => DeviceIncoming::Refused,
                    20 => classic_virtual_write(body)
                        .map_or(DeviceIncoming::Other, |(_, value)| {
                            DeviceIncoming::AppWrite(value)
                        }),
                    _ => DeviceIncoming::Other,
                });
                consumed += len;
            }
        }
        self.buffer.drain(..consumed);
        Ok(true)
    }
}

/// `vw\0<pin>\0<value>` of a classic HARDWARE body.
fn classic_virtual_write(body: &[u8]) -> Option<(u32, i64)> {
    let mut parts = body.split(|byte| *byte == 0);
    if parts.next()? != b"vw" {
        return None;
    }
    let pin = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    Some((pin, integer(parts.next()?)?))
}

fn integer(text: &[u8]) -> Option<i64> {
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
fn pin_of_topic(topic: &[u8]) -> Option<(usize, u32)> {
    let topic = std::str::from_utf8(topic).ok()?;
    let mut parts = topic.split('/');
    let _root = parts.next()?;
    let index = parts.next()?.parse().ok()?;
    let pin = parts.next()?.strip_prefix('V')?.parse().ok()?;
    (pin < PINS).then_some((index, pin))
}

/// The app that watches every device.
pub enum WatcherLink {
    Server {
        reader: WsReader,
        _write: OwnedWriteHalf,
        index_of: HashMap<i64, usize>,
    },
    Mosquitto {
        reader: MqttReader,
        write: OwnedWriteHalf,
    },
}

/// How a watcher ended.
#[derive(Debug, Default)]
pub struct WatchEnd {
    /// Why the system closed it, if it did.
    pub closed: Option<String>,
    /// WebSocket messages or MQTT packets received.
    pub messages: u64,
}

/// Receives value changes: `(now in ns since the run's epoch, device index, pin, value,
/// changes it stands for)`.
pub trait ValueSink: Send + 'static {
    fn value(&mut self, now: u64, index: usize, pin: u32, value: i64, coalesced: u64);
    /// Every pin holds its final value.
    fn complete(&self) -> bool;
}

/// Opens the watcher and waits until it watches every device (WebSocket snapshot received,
/// MQTT SUBACK).
pub async fn open_watcher(under_test: &UnderTest) -> Result<WatcherLink> {
    match under_test {
        UnderTest::Server(target, _) => {
            let (mut reader, mut write) = ws_connect(target.http, &target.admin_key).await?;
            let mut out = Vec::new();
            ws_text(&mut out, br#"{"type":"watch","devices":"all"}"#);
            write.write_all(&out).await?;
            let deadline = tokio::time::Instant::now() + super::SETUP_TIMEOUT;
            'snapshot: loop {
                while let Some((opcode, payload, consumed)) =
                    ws_parse(&reader.buffer[reader.start..])?
                {
                    let mut snapshot = false;
                    if opcode == 1 {
                        app_events::for_each_event(payload, |event| {
                            snapshot |= matches!(event, AppEvent::Snapshot)
                        });
                    } else if opcode == 8 {
                        bail!("the watcher was closed before its snapshot");
                    }
                    reader.start += consumed;
                    if snapshot {
                        break 'snapshot;
                    }
                }
                match tokio::time::timeout_at(deadline, reader.fill()).await {
                    Ok(Ok(0)) => bail!("the watcher was closed before its snapshot"),
                    Ok(result) => {
                        result?;
                    }
                    Err(_) => bail!("no snapshot within {:?}", super::SETUP_TIMEOUT),
                }
            }
            let index_of = target
                .devices
                .iter()
                .enumerate()
                .map(|(index, device)| (device.id, index))
                .collect();
            Ok(WatcherLink::Server {
                reader,
                _write: write,
                index_of,
            })
        }
        UnderTest::Mosquitto(broker) => {
            let (mut reader, mut write) = mqtt::connect_client(broker.address, "watcher").await?;
            mqtt::subscribe_and_wait(&mut reader, &mut write, "dev/#").await?;
            Ok(WatcherLink::Mosquitto { reader, write })
        }
    }
}

/// Reads the watcher until `stop` or until the system closes it, handing every value change to
/// `sink`; sets `complete` once the sink has every final value.
pub async fn run_watcher<S: ValueSink>(
    mut link: WatcherLink,
    mut sink: S,
    epoch: std::time::Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
    complete: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (S, WatchEnd) {
    let mut end = WatchEnd::default();
    let mut acks = Vec::new();
    loop {
        let filled = match &mut link {
            WatcherLink::Server { reader, .. } => tokio::select! {
                read = reader.fill() => Some(read),
                _ = stop.changed() => None,
            },
            WatcherLink::Mosquitto { reader, .. } => tokio::select! {
                read = reader.fill() => Some(read),
                _ = stop.changed() => None,
            },
        };
        match filled {
            None => break,
            Some(Ok(0)) => {
                end.closed
                    .get_or_insert_with(|| "connection closed".to_owned());
                break;
            }
            Some(Err(error)) => {
                end.closed = Some(format!("read error: {error}"));
                break;
            }
            Some(Ok(_)) => {}
        }
        let now = super::nanos_since(epoch);
        let result: Result<()> = match &mut link {
            WatcherLink::Server {
                reader, index_of, ..
            } => (|| {
                while let Some((opcode, payload, consumed)) =
                    ws_parse(&reader.buffer[reader.start..])?
                {
                    end.messages += 1;
                    match opcode {
                        1 => {
                            app_events::for_each_event(payload, |event| {
                                if let AppEvent::Value {
                                    device,
                                    pin,
                                    value,
                                    coalesced,
                                } = event
                                    && let Some(&index) = index_of.get(&device)
                                {
                                    sink.value(now, index, pin, value, coalesced);
                                }
                            });
                        }
                        8 => end.closed = Some(close_reason(payload)),
                        _ => {}
                    }
                    reader.start += consumed;
                }
                Ok(())
            })(),
            WatcherLink::Mosquitto { reader, .. } => reader.drain(|packet| {
                end.messages += 1;
                if let Packet::Publish {
                    topic,
                    payload,
                    packet_id,
                } = packet
                {
                    if let Some(id) = packet_id {
                        mqtt::puback(&mut acks, id);
                    }
                    if let (Some((index, pin)), Some(value)) =
                        (pin_of_topic(topic), integer(payload))
                    {
                        sink.value(now, index, pin, value, 1);
                    }
                }
            }),
        };
        if let Err(error) = result {
            end.closed = Some(format!("unreadable message: {error}"));
            break;
        }
        if let WatcherLink::Mosquitto { write, .. } = &mut link
            && !acks.is_empty()
        {
            if let Err(error) = write.write_all(&acks).await {
                end.closed = Some(format!("write error: {error}"));
                break;
            }
            acks.clear();
        }
        if sink.complete() {
            complete.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if end.closed.is_some() {
            break;
        }
    }
    (sink, end)
}

/// "1008 too slow: ..." from a WebSocket close payload.
fn close_reason(payload: &[u8]) -> String {
    match payload {
        [high, low, reason @ ..] => format!(
            "closed with {} {}",
            u16::from_be_bytes([*high, *low]),
            String::from_utf8_lossy(reason)
        ),
        _ => "closed".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_classic_bodies_give_pin_and_value() {
        assert_eq!(pin_of_topic(b"dev/12/V15"), Some((12, 15)));
        assert_eq!(pin_of_topic(b"dev/12/V16"), None);
        assert_eq!(classic_virtual_write(b"vw\x003\x00-42"), Some((3, -42)));
        assert_eq!(classic_virtual_write(b"dw\x003\x001"), None);
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
