//! The app of the data-path rows, whatever the system under test: the app WebSocket watching every
//! device of blynk-server, or an MQTT subscriber of `dev/#` on Mosquitto.

use std::collections::HashMap;

use anyhow::{Result, bail};
use blynk_client::events::{AppEvent, for_each_event};
use blynk_client::{AppSocket, Error};
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::OwnedWriteHalf;

use super::mqtt::{self, MqttReader, Packet};
use super::{app_socket, virtual_pin_number};

use super::links::*;

/// The app that watches every device.
pub enum WatcherLink {
    Server {
        // Boxed: the socket is several times the size of the MQTT variant.
        socket: Box<AppSocket>,
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

impl WatchEnd {
    /// Says on stderr why the system closed `watcher`, if it did.
    pub fn tell(&self, watcher: &str) {
        if let Some(closed) = &self.closed {
            eprintln!("  {watcher} ended: {closed}");
        }
    }
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
            let mut socket = app_socket(target.http, &target.admin_key).await?;
            socket.watch("all").await?;
            let deadline = tokio::time::Instant::now() + super::SETUP_TIMEOUT;
            let mut snapshot = false;
            while !snapshot {
                let text = match tokio::time::timeout_at(deadline, socket.recv()).await {
                    Ok(Ok(text)) => text,
                    Ok(Err(Error::Closed { .. })) => {
                        bail!("the watcher was closed before its snapshot")
                    }
                    Ok(Err(error)) => return Err(error.into()),
                    Err(_) => bail!("no snapshot within {:?}", super::SETUP_TIMEOUT),
                };
                for_each_event(text.as_bytes(), |event| {
                    snapshot |= event == AppEvent::Snapshot;
                });
            }
            let index_of = target
                .devices
                .iter()
                .enumerate()
                .map(|(index, device)| (device.id, index))
                .collect();
            Ok(WatcherLink::Server {
                socket: Box::new(socket),
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
        match &mut link {
            WatcherLink::Server { socket, index_of } => {
                // One message at a time, read where the socket received it.
                let received = tokio::select! {
                    received = socket.recv() => received,
                    _ = stop.changed() => break,
                };
                let now = super::nanos_since(epoch);
                match received {
                    Ok(text) => {
                        end.messages += 1;
                        for_each_event(text.as_bytes(), |event| {
                            if let AppEvent::Value {
                                device,
                                pin,
                                value,
                                coalesced,
                            } = event
                                && let (Some(&index), Some(pin)) =
                                    (index_of.get(&device), virtual_pin_number(pin))
                            {
                                sink.value(now, index, pin, value, coalesced);
                            }
                        });
                    }
                    Err(Error::Closed { code, reason }) => {
                        end.closed = Some(format!("closed with {code} {reason}"));
                    }
                    Err(error) => end.closed = Some(format!("read error: {error}")),
                }
            }
            WatcherLink::Mosquitto { reader, write } => {
                let filled = tokio::select! {
                    read = reader.fill() => read,
                    _ = stop.changed() => break,
                };
                match filled {
                    Ok(0) => {
                        end.closed
                            .get_or_insert_with(|| "connection closed".to_owned());
                        break;
                    }
                    Err(error) => {
                        end.closed = Some(format!("read error: {error}"));
                        break;
                    }
                    Ok(_) => {}
                }
                let now = super::nanos_since(epoch);
                let drained = reader.drain(|packet| {
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
                });
                if let Err(error) = drained {
                    end.closed = Some(format!("unreadable message: {error}"));
                    break;
                }
                if !acks.is_empty() {
                    if let Err(error) = write.write_all(&acks).await {
                        end.closed = Some(format!("write error: {error}"));
                        break;
                    }
                    acks.clear();
                }
            }
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
