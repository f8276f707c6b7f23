//! What a device publishes: writes, batches, timestamped batches, properties, events and value
//! requests, each checked and handed to the engine; the replies (PUBACKs, refusals for
//! `downlink/error`, sync answers) come back through the session's in-flight queue in order.

use blynk_proto::Pin;
use futures_util::stream::FuturesOrdered;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{LastWill, Publish};

use super::ending::Ending;
use super::payload::{self, PayloadError};
use super::session::{InFlight, Reply, Session, ready};
use super::topics::{self, Uplink};
use crate::engine::SyncSelection;
use crate::model::{OwnedValue, PropertyRecord};
use crate::session::refusal::{ends_mqtt_publish, mqtt_error};

/// How long the will message's write may take to become durable.
const WILL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Session {
    /// A PUBLISH from the device: replies go through `in_flight`, so that PUBACKs keep the
    /// order of the publishes (MQTT 3.1.1 section 4.6) even when some wait for the disk.
    pub(super) fn publish(
        &mut self,
        publish: Publish,
        in_flight: &mut FuturesOrdered<InFlight>,
    ) -> Option<Ending> {
        let ack = match publish.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(publish.pkid),
            QoS::ExactlyOnce => {
                // Refused cleanly: explained, logged, and the connection closed, since MQTT
                // 3.1.1 has no way to refuse one publish and the client would wait forever.
                let reason = format!(
                    "`{}`: QoS 2 is not supported; publish with QoS 0 or 1",
                    publish.topic
                );
                self.reply(vec![Reply::Error(reason)]);
                return Some(Ending::Violation("a QoS 2 PUBLISH"));
            }
        };
        let acknowledged = move |mut replies: Vec<Reply>| {
            replies.extend(ack.map(Reply::PubAck));
            replies
        };
        let Some(uplink) = topics::parse_uplink(&publish.topic) else {
            let reason = format!(
                "`{}` is not a topic of this server (ds/<name>, batch_ds, ds/<name>/timestamped_batch, ds/<name>/prop/<property>, event/<code>, get/ds, get/ds/all)",
                publish.topic
            );
            in_flight.push_back(ready(acknowledged(vec![Reply::Error(reason)])));
            return None;
        };
        let topic = publish.topic.clone();
        let payload = publish.payload;
        let refused = |reason: String| ready(acknowledged(vec![Reply::Error(reason)]));
        let future = match uplink {
            Uplink::Write { datastream } => match self.resolve(datastream) {
                Err(reason) => refused(reason),
                Ok(pin) => match payload::value(&payload) {
                    Err(error) => refused(format!("`{topic}`: {error}")),
                    Ok(value) => self.write(vec![(pin, value, None)], &topic, ack),
                },
            },
            Uplink::Batch => match payload::batch(&payload) {
                Err(error) => refused(format!("`{topic}`: {error}")),
                Ok(values) => {
                    let mut errors = Vec::new();
                    let mut writes = Vec::new();
                    for (name, value) in values {
                        match self.resolve(&name) {
                            Ok(pin) => writes.push((pin, value, None)),
                            Err(reason) => errors.push(Reply::Error(reason)),
                        }
                    }
                    let written = self.write(writes, &topic, ack);
                    Box::pin(async move {
                        errors.extend(written.await);
                        errors
                    })
                }
            },
            Uplink::TimestampedBatch { datastream } => match self.resolve(datastream) {
                Err(reason) => refused(reason),
                Ok(pin) => match payload::timestamped(&payload) {
                    Err(error) => refused(format!("`{topic}`: {error}")),
                    Ok(points) => {
                        let now = self.context.engine.clock().unix_ms();
                        let mut errors = Vec::new();
                        let mut writes = Vec::new();
                        for (at, value) in points {
                            match payload::age_ms(at, now) {
                                Some(age) => writes.push((pin, value, Some(age))),
                                None => errors.push(Reply::Error(format!(
                                    "`{topic}`: the time {at} is in the future (server time {now}); point not stored"
                                ))),
                            }
                        }
                        let written = self.write(writes, &topic, ack);
                        Box::pin(async move {
                            errors.extend(written.await);
                            errors
                        })
                    }
                },
            },
            Uplink::Property {
                datastream,
                property,
            } => match self.property(datastream, property, &payload) {
                Err(reason) => refused(reason),
                Ok(record) => match self.context.engine.set_property(&self.slot, record) {
                    Err(refusal) => refused(format!("`{topic}`: {refusal}")),
                    Ok(durable) => Box::pin(async move {
                        match durable.await {
                            Ok(()) => acknowledged(Vec::new()),
                            Err(error) => vec![Reply::Error(format!("`{topic}`: {error}"))],
                        }
                    }),
                },
            },
            Uplink::Event { code } => {
                if code.len() > blynk_proto::MAX_NAME_LEN {
                    refused(format!(
                        "`{topic}`: an event code is at most {} bytes",
                        blynk_proto::MAX_NAME_LEN
                    ))
                } else {
                    match std::str::from_utf8(&payload) {
                        Err(_) => refused(format!("`{topic}`: {}", PayloadError::NotText)),
                        Ok(description) => {
                            let description = (!description.is_empty()).then_some(description);
                            let durable =
                                self.context.engine.log_event(&self.slot, code, description);
                            Box::pin(async move {
                                match durable.await {
                                    Ok(()) => acknowledged(Vec::new()),
                                    Err(error) => {
                                        vec![Reply::Error(format!("`{topic}`: {error}"))]
                                    }
                                }
                            })
                        }
                    }
                }
            }
            Uplink::Get => match payload::names(&payload) {
                Err(error) => refused(format!("`{topic}`: {error}")),
                Ok(names) => {
                    let mut replies = Vec::new();
                    let mut pins = Vec::new();
                    for name in names {
                        match self.resolve(name) {
                            Ok(pin) => pins.push(pin),
                            Err(reason) => replies.push(Reply::Error(reason)),
                        }
                    }
                    replies.push(Reply::Sync(SyncSelection::Pins(pins)));
                    ready(acknowledged(replies))
                }
            },
            Uplink::GetAll => ready(acknowledged(vec![Reply::Sync(SyncSelection::All)])),
        };
        in_flight.push_back(future);
        None
    }

    /// The pin of a datastream named in a topic, or the refusal.
    pub(super) fn resolve(&self, name: &str) -> Result<Pin, String> {
        topics::find_datastream(&self.slot.template, name)
            .map(|datastream| datastream.pin)
            .ok_or_else(|| {
                format!(
                    "no datastream `{name}` in template `{}`",
                    self.slot.template.name
                )
            })
    }

    /// A property publish, checked: a datastream's pin, a name of bounded length, a value.
    fn property(
        &self,
        datastream: &str,
        property: &str,
        payload: &[u8],
    ) -> Result<PropertyRecord, String> {
        let pin = self.resolve(datastream)?;
        if property.len() > blynk_proto::MAX_NAME_LEN {
            return Err(format!(
                "a property name is at most {} bytes",
                blynk_proto::MAX_NAME_LEN
            ));
        }
        let value = payload::value(payload)
            .map_err(|error| format!("property `{property}` of `{datastream}`: {error}"))?;
        Ok(PropertyRecord {
            pin,
            name: property.to_owned(),
            value,
        })
    }

    /// Queues device writes (in order, each taking its version now) and returns the future of
    /// their replies: errors for refused ones, then the PUBACK once all stored ones are durable.
    /// A store failure withholds the PUBACK: the write is not durable, so the client must send
    /// it again.
    fn write(
        &self,
        writes: Vec<(Pin, OwnedValue, Option<u32>)>,
        topic: &str,
        ack: Option<u16>,
    ) -> InFlight {
        let mut replies = Vec::new();
        let mut durable = Vec::new();
        for (pin, value, age_ms) in writes {
            let refusal =
                |error: &dyn std::fmt::Display| Reply::Error(mqtt_error(topic, pin, error));
            let value_ref = match value.as_value() {
                Ok(value) => value,
                Err(error) => {
                    replies.push(refusal(&error));
                    continue;
                }
            };
            match self
                .context
                .engine
                .device_write(&self.slot, pin, &value_ref, age_ms)
            {
                Ok(future) => durable.push((pin, future)),
                Err(error) => {
                    replies.push(refusal(&error));
                    if ends_mqtt_publish(&error) {
                        return ready(replies);
                    }
                }
            }
        }
        let topic = topic.to_owned();
        Box::pin(async move {
            let mut stored = true;
            for (pin, future) in durable {
                if let Err(error) = future.await {
                    stored = false;
                    replies.push(Reply::Error(mqtt_error(&topic, pin, &error)));
                }
            }
            if stored {
                replies.extend(ack.map(Reply::PubAck));
            }
            replies
        })
    }

    /// Stores the will message as a device write, if its topic is `ds/<name>`.
    pub(super) async fn publish_will(&self, will: &LastWill) {
        let device = self.slot.device.id;
        let Some(Uplink::Write { datastream }) = topics::parse_uplink(&will.topic) else {
            tracing::info!(device, topic = %will.topic, "will message ignored: its topic is not ds/<name>");
            return;
        };
        let value = match payload::value(&will.message) {
            Ok(value) => value,
            Err(error) => {
                tracing::info!(device, topic = %will.topic, %error, "will message refused");
                return;
            }
        };
        let written = match (self.resolve(datastream), value.as_value()) {
            (Ok(pin), Ok(value_ref)) => self
                .context
                .engine
                .device_write(&self.slot, pin, &value_ref, None)
                .map_err(|error| error.to_string()),
            (Err(reason), _) => Err(reason),
            (_, Err(error)) => Err(error.to_string()),
        };
        match written {
            Ok(durable) => match tokio::time::timeout(WILL_TIMEOUT, durable).await {
                Ok(Ok(_)) => tracing::info!(device, topic = %will.topic, "will message stored"),
                Ok(Err(error)) => tracing::warn!(device, %error, "will message not stored"),
                Err(_) => tracing::warn!(device, "will message not stored in time"),
            },
            Err(reason) => {
                tracing::info!(device, topic = %will.topic, %reason, "will message refused")
            }
        }
    }
}
