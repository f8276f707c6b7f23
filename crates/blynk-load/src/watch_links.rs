//! The app of the data-path rows, whatever the system under test: the app WebSocket watching every
//! device of blynk-server, or an MQTT subscriber of `dev/#` on Mosquitto.

use std::collections::HashMap;

use anyhow::{Result, bail};
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::OwnedWriteHalf;

use super::app_events::{self, AppEvent};
use super::mqtt::{self, MqttReader, Packet};
use super::{WsReader, ws_connect, ws_parse, ws_text};

use super::links::*;

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
