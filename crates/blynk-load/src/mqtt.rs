//! The reference broker of the data-path rows: Mosquitto as a child process on a free loopback
//! port, and the few MQTT 3.1.1 packets the generator needs (connect with or without a login,
//! publish at QoS 1, subscribe, acknowledgements), written by hand over tokio TCP like the other
//! clients here. The same client is the MQTT device of blynk-server's own MQTT port.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{TempData, wait_or_kill};

/// Largest packet the reader accepts; the generator's packets are tens of bytes.
const MAX_PACKET: usize = 1024 * 1024;

/// A Mosquitto broker started for one run, stopped (by its own pid) on [`Mosquitto::stop`].
pub struct Mosquitto {
    child: Child,
    /// The broker's listener.
    pub address: SocketAddr,
    _data: TempData,
}

/// The `mosquitto` binary: on the PATH, or where Debian installs it.
pub fn binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("mosquitto"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let debian = PathBuf::from("/usr/sbin/mosquitto");
        debian.is_file().then_some(debian)
    })
}

impl Mosquitto {
    /// Starts the broker with retained messages persisted (its own autosave policy) and no
    /// limit on the messages it queues for a subscriber, so it drops nothing on its own.
    pub fn start() -> Result<Self> {
        let binary = binary().context(
            "no mosquitto binary (Debian: apt-get install mosquitto; `cargo xtask bench` does it)",
        )?;
        let data = TempData::new()?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let running_as_root = std::env::var("USER").is_ok_and(|user| user == "root")
            || std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
                status.lines().any(|line| {
                    line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0")
                })
            });
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nmax_queued_messages 0\nmax_inflight_messages 0\n\
             log_dest none\n{}",
            data.0.display(),
            // As root it would switch to the `mosquitto` user, who cannot write our directory.
            if running_as_root { "user root\n" } else { "" }
        );
        let config_path = data.0.join("mosquitto.conf");
        std::fs::write(&config_path, config)?;
        let mut child = Command::new(&binary)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Only its warning about running as root would show: its log goes nowhere.
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(address).is_err() {
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("mosquitto did not listen on {address} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Mosquitto {
            child,
            address,
            _data: data,
        })
    }

    /// The broker's process id, for its CPU time and memory.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM to our own child, then SIGKILL after 5 s.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        wait_or_kill(
            &mut self.child,
            Duration::from_secs(5),
            Duration::from_millis(20),
        );
    }
}

/// One packet read from the broker.
pub enum Packet<'a> {
    ConnAck {
        code: u8,
    },
    Publish {
        topic: &'a [u8],
        payload: &'a [u8],
        packet_id: Option<u16>,
    },
    PubAck(u16),
    SubAck,
    Other,
}

fn push_remaining_length(out: &mut Vec<u8>, mut length: usize) {
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if length == 0 {
            break;
        }
    }
}

fn push_string(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text);
}

/// A username and password for CONNECT (blynk-server: `device` and the device's token).
#[derive(Clone, Copy, Debug)]
pub struct Credentials<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

/// CONNECT with a clean session, and a login when given.
pub fn connect(
    out: &mut Vec<u8>,
    client_id: &str,
    keep_alive_seconds: u16,
    login: Option<Credentials<'_>>,
) {
    let login_len = login.map_or(0, |login| 4 + login.username.len() + login.password.len());
    out.push(0x10);
    push_remaining_length(out, 10 + 2 + client_id.len() + login_len);
    push_string(out, b"MQTT");
    out.push(4); // Protocol level 3.1.1.
    // Clean session, plus the username and password flags with a login.
    out.push(if login.is_some() { 0xc2 } else { 0x02 });
    out.extend_from_slice(&keep_alive_seconds.to_be_bytes());
    push_string(out, client_id.as_bytes());
    if let Some(login) = login {
        push_string(out, login.username.as_bytes());
        push_string(out, login.password.as_bytes());
    }
}

/// PUBLISH at QoS 1 (with `packet_id`) or QoS 0 (without), retained.
pub fn publish(out: &mut Vec<u8>, topic: &[u8], payload: &[u8], packet_id: Option<u16>) {
    publish_with(out, topic, payload, packet_id, true);
}

/// PUBLISH at QoS 1 (with `packet_id`) or QoS 0 (without), retained or not.
pub fn publish_with(
    out: &mut Vec<u8>,
    topic: &[u8],
    payload: &[u8],
    packet_id: Option<u16>,
    retain: bool,
) {
    let qos_bits = if packet_id.is_some() { 0x02 } else { 0 };
    out.push(0x30 | qos_bits | u8::from(retain));
    push_remaining_length(
        out,
        2 + topic.len() + if packet_id.is_some() { 2 } else { 0 } + payload.len(),
    );
    push_string(out, topic);
    if let Some(id) = packet_id {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// PUBACK of a QoS 1 PUBLISH received.
pub fn puback(out: &mut Vec<u8>, packet_id: u16) {
    out.extend_from_slice(&[0x40, 0x02]);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

/// SUBSCRIBE to one filter at QoS 1.
pub fn subscribe(out: &mut Vec<u8>, packet_id: u16, filter: &str) {
    out.push(0x82);
    push_remaining_length(out, 2 + 2 + filter.len() + 1);
    out.extend_from_slice(&packet_id.to_be_bytes());
    push_string(out, filter.as_bytes());
    out.push(1);
}

/// The first whole packet of `buffer` and its length.
pub fn parse(buffer: &[u8]) -> Result<Option<(Packet<'_>, usize)>> {
    let Some(&first) = buffer.first() else {
        return Ok(None);
    };
    let (mut length, mut multiplier, mut at) = (0usize, 1usize, 1usize);
    loop {
        let Some(&byte) = buffer.get(at) else {
            return Ok(None);
        };
        length += usize::from(byte & 0x7f) * multiplier;
        multiplier *= 128;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at > 4 {
            bail!("MQTT: malformed remaining length");
        }
    }
    if length > MAX_PACKET {
        bail!("MQTT: packet of {length} bytes");
    }
    let Some(body) = buffer.get(at..at + length) else {
        return Ok(None);
    };
    let word = |bytes: &[u8], from: usize| -> Result<u16> {
        match bytes.get(from..from + 2) {
            Some(pair) => Ok(u16::from_be_bytes([pair[0], pair[1]])),
            None => bail!("MQTT: short packet"),
        }
    };
    let packet = match first >> 4 {
        2 => Packet::ConnAck {
            code: *body.get(1).context("MQTT: short CONNACK")?,
        },
        3 => {
            let topic_len = usize::from(word(body, 0)?);
            let topic = body.get(2..2 + topic_len).context("MQTT: short PUBLISH")?;
            let mut rest = 2 + topic_len;
            let packet_id = if (first >> 1) & 0x03 > 0 {
                rest += 2;
                Some(word(body, 2 + topic_len)?)
            } else {
                None
            };
            Packet::Publish {
                topic,
                payload: body.get(rest..).unwrap_or_default(),
                packet_id,
            }
        }
        4 => Packet::PubAck(word(body, 0)?),
        9 => Packet::SubAck,
        _ => Packet::Other,
    };
    Ok(Some((packet, at + length)))
}

/// The read half of an MQTT connection with its buffer.
pub struct MqttReader {
    read: OwnedReadHalf,
    buffer: Vec<u8>,
    start: usize,
}

impl MqttReader {
    /// Reads more bytes; 0 when the broker closed the connection.
    pub async fn fill(&mut self) -> Result<usize> {
        super::read_more(&mut self.read, &mut self.buffer, &mut self.start, 32 * 1024).await
    }

    /// The read half and the bytes buffered but not parsed yet.
    pub fn into_parts(mut self) -> (OwnedReadHalf, Vec<u8>) {
        self.buffer.drain(..self.start);
        (self.read, self.buffer)
    }

    /// Calls `each` for every whole packet buffered.
    pub fn drain(&mut self, mut each: impl FnMut(Packet<'_>)) -> Result<()> {
        while let Some((packet, consumed)) = parse(&self.buffer[self.start..])? {
            each(packet);
            self.start += consumed;
        }
        Ok(())
    }
}

/// Connects and waits for an accepting CONNACK.
pub async fn connect_client(
    address: SocketAddr,
    client_id: &str,
) -> Result<(MqttReader, OwnedWriteHalf)> {
    connect_client_with(address, client_id, None).await
}

/// Connects with a login, if given, and waits for an accepting CONNACK.
pub async fn connect_client_with(
    address: SocketAddr,
    client_id: &str,
    login: Option<Credentials<'_>>,
) -> Result<(MqttReader, OwnedWriteHalf)> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut out = Vec::new();
    connect(&mut out, client_id, 600, login);
    write.write_all(&out).await?;
    let mut reader = MqttReader {
        read,
        buffer: Vec::with_capacity(1024),
        start: 0,
    };
    loop {
        if reader.fill().await? == 0 {
            bail!("MQTT: connection closed before CONNACK");
        }
        let mut answer = None;
        reader.drain(|packet| {
            if let Packet::ConnAck { code } = packet {
                answer = Some(code);
            }
        })?;
        match answer {
            Some(0) => return Ok((reader, write)),
            Some(code) => bail!("MQTT: connection refused with code {code}"),
            None => {}
        }
    }
}

/// Subscribes to `filter` and waits for the SUBACK.
pub async fn subscribe_and_wait(
    reader: &mut MqttReader,
    writer: &mut OwnedWriteHalf,
    filter: &str,
) -> Result<()> {
    let mut out = Vec::new();
    subscribe(&mut out, 1, filter);
    writer.write_all(&out).await?;
    loop {
        let mut acknowledged = false;
        reader.drain(|packet| acknowledged |= matches!(packet, Packet::SubAck))?;
        if acknowledged {
            return Ok(());
        }
        if reader.fill().await? == 0 {
            bail!("MQTT: connection closed before SUBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_packet_parses_back() {
        let mut out = Vec::new();
        publish(&mut out, b"dev/7/V3", b"12345", Some(9));
        puback(&mut out, 9);
        let Some((
            Packet::Publish {
                topic,
                payload,
                packet_id,
            },
            used,
        )) = parse(&out).expect("valid")
        else {
            panic!("not a publish");
        };
        assert_eq!(
            (topic, payload, packet_id),
            (&b"dev/7/V3"[..], &b"12345"[..], Some(9))
        );
        assert!(matches!(
            parse(&out[used..]),
            Ok(Some((Packet::PubAck(9), 4)))
        ));
        assert!(matches!(parse(&out[..used - 1]), Ok(None)));
    }

    #[test]
    fn a_connect_with_a_login_carries_both_and_its_flags() {
        let mut out = Vec::new();
        let login = Credentials {
            username: "device",
            password: "tok",
        };
        connect(&mut out, "d1", 60, Some(login));
        let expected: &[u8] = b"\x10\x1b\x00\x04MQTT\x04\xc2\x00\x3c\x00\x02d1\
                                \x00\x06device\x00\x03tok";
        assert_eq!(out, expected);
        out.clear();
        connect(&mut out, "d1", 60, None);
        assert_eq!((out[1], out[9]), (14, 0x02));
    }

    #[test]
    fn an_unretained_publish_has_no_retain_bit() {
        let mut out = Vec::new();
        publish_with(&mut out, b"ds/value3", b"7", Some(1), false);
        assert_eq!(out[0], 0x32);
        out.clear();
        publish(&mut out, b"ds/value3", b"7", Some(1));
        assert_eq!(out[0], 0x33);
    }
}
