//! Operational metrics, served at `GET /metrics` in the Prometheus text format.
//!
//! Counters on the message path are plain atomics, created once here with their labels, so
//! counting a message takes no lock and allocates nothing. Figures that are a state rather than
//! a count (connections, pending commands, the store's queue) are read when scraped, which costs
//! the message path nothing at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use crate::model::{Origin, Protocol};

/// The `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Labels = [(&'static str, &'static str); 1];

/// What a store reports about its commits. A backend that batches writes fills it in; the
/// server registers it with the other metrics.
#[derive(Debug)]
pub struct StoreMetrics {
    /// Seconds each commit took, from its first statement to its durable end.
    pub commit_seconds: Histogram,
    /// Operations each commit carried.
    pub batch_size: Histogram,
    /// Operations queued so far.
    pub queued: AtomicU64,
    /// Operations committed (or failed) so far.
    pub done: AtomicU64,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            // 0.1 ms to about 3 s: an fsync on a fast disk to a stalled one.
            commit_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.000_1, 2.0, 16),
            ),
            // 1 to 4096 (the largest batch).
            batch_size: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                1.0, 2.0, 13,
            )),
            queued: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }
    }
}

impl StoreMetrics {
    /// Operations queued and not yet committed.
    pub fn queue_depth(&self) -> u64 {
        // `done` is read first: an operation counted done was counted queued before it.
        let done = self.done.load(Ordering::Relaxed);
        self.queued.load(Ordering::Relaxed).saturating_sub(done)
    }
}

/// Every metric of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    logins_ok: Counter,
    logins_failed: Counter,
    /// Indexed by [`origin_index`].
    writes: [Counter; 4],
    app_messages: Counter,
    slow_devices_closed: Counter,
    slow_apps_closed: Counter,
    rate_limited: Counter,
    /// Native, classic, MQTT, apps.
    connections: [Gauge; 4],
    pending_commands: Gauge,
    store_queue_depth: Gauge,
    store: Option<Arc<StoreMetrics>>,
}

fn origin_index(origin: Origin) -> usize {
    match origin {
        Origin::Device => 0,
        Origin::App => 1,
        Origin::Http => 2,
        Origin::Bridge => 3,
    }
}

/// Where a device protocol's gauge is in `connections`.
fn protocol_index(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Native => 0,
        Protocol::Classic => 1,
        Protocol::Mqtt => 2,
    }
}

/// Registers a family of metrics with one label, and returns its member for each of the label's
/// `values`, in their order.
fn labelled<M, const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    (label, values): (&'static str, [&'static str; N]),
) -> [M; N]
where
    M: Default + Clone,
    Family<Labels, M>: Metric,
{
    let family = Family::<Labels, M>::default();
    let members = values.map(|value| family.get_or_create(&[(label, value)]).clone());
    registry.register(name, help, family);
    members
}

impl Metrics {
    /// Registers every metric; `store` is what the store reports, if it reports anything.
    pub fn new(store: Option<Arc<StoreMetrics>>) -> Self {
        let mut registry = Registry::with_prefix("blynk");
        let [logins_ok, logins_failed] = labelled(
            &mut registry,
            "device_logins",
            "Device logins, by result (a wrong or unknown token is `failed`)",
            ("result", ["ok", "failed"]),
        );
        let writes = labelled(
            &mut registry,
            "writes",
            "Values written, by origin (device, app, http, bridge)",
            (
                "origin",
                [Origin::Device, Origin::App, Origin::Http, Origin::Bridge].map(Origin::as_str),
            ),
        );
        let app_messages = Counter::default();
        registry.register(
            "app_messages",
            "Events and write replies sent to apps over WebSockets (a batch carries several)",
            app_messages.clone(),
        );
        let [slow_devices_closed, slow_apps_closed] = labelled(
            &mut registry,
            "slow_sessions_closed",
            "Sessions the server closed because they read too slowly, by client",
            ("client", ["device", "app"]),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited_messages",
            "Device messages dropped by the per-connection rate limit",
            rate_limited.clone(),
        );
        let connections = labelled(
            &mut registry,
            "connections",
            "Open connections: devices by protocol, and app WebSockets (`app`)",
            ("protocol", ["native", "classic", "mqtt", "app"]),
        );
        let pending_commands = Gauge::default();
        registry.register(
            "pending_commands",
            "Commands stored for offline devices, waiting for delivery",
            pending_commands.clone(),
        );
        let store_queue_depth = Gauge::default();
        if let Some(store) = &store {
            registry.register(
                "store_queue_depth",
                "Store operations queued and not yet committed",
                store_queue_depth.clone(),
            );
            registry.register(
                "store_commit_seconds",
                "Time each store commit took",
                store.commit_seconds.clone(),
            );
            registry.register(
                "store_batch_size",
                "Operations carried by each store commit",
                store.batch_size.clone(),
            );
        }
        Metrics {
            registry,
            logins_ok,
            logins_failed,
            writes,
            app_messages,
            slow_devices_closed,
            slow_apps_closed,
            rate_limited,
            connections,
            pending_commands,
            store_queue_depth,
            store,
        }
    }

    /// A device logged in.
    pub fn login(&self) {
        self.logins_ok.inc();
    }

    /// A device's login was refused for its token.
    pub fn failed_login(&self) {
        self.logins_failed.inc();
    }

    /// A value was written.
    pub fn write(&self, origin: Origin) {
        self.writes[origin_index(origin)].inc();
    }

    /// Messages (events, write replies) went to an app.
    pub fn app_messages(&self, messages: u64) {
        self.app_messages.inc_by(messages);
    }

    /// A device session was closed for reading too slowly.
    pub fn slow_device_closed(&self) {
        self.slow_devices_closed.inc();
    }

    /// An app was disconnected for reading too slowly.
    pub fn slow_app_closed(&self) {
        self.slow_apps_closed.inc();
    }

    /// Device messages were dropped by the rate limit.
    pub fn rate_limited(&self, messages: u64) {
        self.rate_limited.inc_by(messages);
    }

    /// The scrape: the states read now (`online` devices by protocol, apps, pending commands),
    /// then every metric as text.
    pub fn render(
        &self,
        online: impl IntoIterator<Item = Protocol>,
        apps: usize,
        pending_commands: usize,
    ) -> String {
        let mut counts = [0i64; 4];
        for protocol in online {
            counts[protocol_index(protocol)] += 1;
        }
        counts[3] = i64::try_from(apps).unwrap_or(i64::MAX);
        for (gauge, count) in self.connections.iter().zip(counts) {
            gauge.set(count);
        }
        self.pending_commands
            .set(i64::try_from(pending_commands).unwrap_or(i64::MAX));
        if let Some(store) = &self.store {
            self.store_queue_depth
                .set(i64::try_from(store.queue_depth()).unwrap_or(i64::MAX));
        }
        let mut text = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_text_under_their_labels() {
        let store = Arc::new(StoreMetrics::default());
        let metrics = Metrics::new(Some(store.clone()));
        metrics.write(Origin::Http);
        metrics.write(Origin::Http);
        metrics.failed_login();
        store.batch_size.observe(3.0);
        store.queued.fetch_add(5, Ordering::Relaxed);
        store.done.fetch_add(2, Ordering::Relaxed);
        let text = metrics.render([Protocol::Mqtt, Protocol::Mqtt], 1, 4);
        for line in [
            "blynk_writes_total{origin=\"http\"} 2",
            "blynk_writes_total{origin=\"device\"} 0",
            "blynk_device_logins_total{result=\"failed\"} 1",
            "blynk_connections{protocol=\"mqtt\"} 2",
            "blynk_connections{protocol=\"app\"} 1",
            "blynk_pending_commands 4",
            "blynk_store_queue_depth 3",
            "blynk_store_batch_size_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
