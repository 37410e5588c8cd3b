//! The broker's counters for monitoring: every shard copies its own into shared atomics once a
//! tick, and `GET /metrics` on the operations listener (`crate::admin`; on the WebSocket
//! listener too with `http_metrics`) renders them all in the Prometheus text
//! exposition format (version 0.0.4), one sample per shard.
//!
//! Shards share nothing mutable on the data path; a tick's copy is a few dozen relaxed stores
//! to cache lines only that shard writes, so monitoring costs the fan-out nothing and a scrape
//! sees figures at most one tick old. The same figures, summed over the shards
//! ([`Metrics::totals`]), feed the `$SYS` topics (`shard/sys_topics.rs`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::bridge::BridgeLink;
use crate::broker::BrokerStats;

/// Whether a figure is a current size or a count since start.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    /// A gauge of what every shard holds a replica of (retained messages): its total over the
    /// shards is the largest shard's, not the sum.
    Replica,
    Counter,
}

/// One metric: its name (counters end in `_total`), type and help text.
struct Metric {
    name: &'static str,
    kind: Kind,
    help: &'static str,
}

const fn gauge(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        help,
    }
}

const fn replica(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Replica,
        help,
    }
}

const fn counter(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        help,
    }
}

/// Every metric, in the order of [`ShardFigures::values`].
const METRICS: [Metric; 71] = [
    gauge(
        "fanfare_sockets",
        "Open sockets: clients, WebSocket upgrades and HTTP requests in progress.",
    ),
    gauge(
        "fanfare_connections",
        "Client connections whose CONNECT was accepted.",
    ),
    gauge("fanfare_sessions", "Sessions, connected or not."),
    gauge(
        "fanfare_offline_sessions",
        "Persistent sessions whose client is away.",
    ),
    gauge("fanfare_subscriptions", "Topic filters subscribed."),
    replica("fanfare_retained_messages", "Retained messages stored."),
    replica(
        "fanfare_retained_bytes",
        "Bytes of retained messages stored, as retained_bytes_max counts them.",
    ),
    counter(
        "fanfare_publishes_received_total",
        "PUBLISH packets received from this shard's clients.",
    ),
    counter(
        "fanfare_remote_publishes_received_total",
        "Publishes received from other shards.",
    ),
    counter(
        "fanfare_deliveries_total",
        "Publishes handed to a connection or queued for a session.",
    ),
    counter(
        "fanfare_slow_consumer_dropped_newest_total",
        "QoS 0 publishes not queued for a slow consumer (drop-newest, or no room).",
    ),
    counter(
        "fanfare_slow_consumer_dropped_oldest_total",
        "Older QoS 0 publishes dropped to make room (drop-oldest).",
    ),
    counter(
        "fanfare_slow_consumer_conflated_total",
        "QoS 0 publishes replaced by a newer one of the same topic (conflate).",
    ),
    counter(
        "fanfare_slow_consumer_disconnects_total",
        "Connections closed for not reading (disconnect, or bytes that may not be dropped past twice queue_bytes_max).",
    ),
    counter(
        "fanfare_session_queue_dropped_total",
        "QoS 1/2 messages dropped from a full offline session queue.",
    ),
    counter(
        "fanfare_inflight_full_disconnects_total",
        "Connections closed because their QoS 1/2 window and session queue were full.",
    ),
    counter(
        "fanfare_too_large_for_client_total",
        "Deliveries skipped because the packet exceeded the client's Maximum Packet Size.",
    ),
    counter(
        "fanfare_retained_rejected_total",
        "Retained publishes not stored because of retained_messages_max or retained_bytes_max.",
    ),
    counter(
        "fanfare_subscriptions_refused_total",
        "Topic filters refused because of subscriptions_per_session_max.",
    ),
    counter(
        "fanfare_sessions_evicted_total",
        "Offline sessions discarded because of offline_sessions_per_shard_max.",
    ),
    counter(
        "fanfare_connects_refused_total",
        "CONNECT packets answered with a refusal.",
    ),
    counter(
        "fanfare_takeovers_total",
        "Connections replaced by a new one with the same client identifier.",
    ),
    counter("fanfare_wills_published_total", "Will messages published."),
    counter(
        "fanfare_shared_handed_back_total",
        "Shared subscription messages passed to another member after one went away.",
    ),
    counter(
        "fanfare_shared_dropped_total",
        "Shared subscription messages no member took.",
    ),
    gauge(
        "fanfare_cross_shard_backlog_bytes",
        "Bytes of messages for other shards waiting for room in their queues.",
    ),
    counter(
        "fanfare_receives_paused_total",
        "Connections not read for a while because the cross-shard backlog they fed was over cross_shard_backlog_bytes_max.",
    ),
    counter(
        "fanfare_tls_failures_total",
        "TLS connections closed because their handshake or a record failed (not TLS, bad certificate, alert, ...).",
    ),
    counter(
        "fanfare_tls_kernel_handovers_total",
        "TLS connections whose keys went to the kernel after the handshake (kernel TLS).",
    ),
    counter(
        "fanfare_tls_kernel_declined_total",
        "TLS connections that stayed in user-space TLS though kernel TLS was on (suite not taken, part of a record at the hand-over).",
    ),
    counter(
        "fanfare_proxy_refused_total",
        "Connections closed for their first bytes on a listener with the PROXY protocol on: a header from a source not in trusted_proxies, or none or a malformed one from a trusted proxy.",
    ),
    counter(
        "fanfare_subscriptions_denied_total",
        "Topic filters refused because the topic rules do not let the client read every topic they match.",
    ),
    counter(
        "fanfare_subscriptions_revoked_total",
        "Subscriptions removed because a reloaded policy no longer allows them.",
    ),
    counter(
        "fanfare_publishes_denied_total",
        "Publishes the topic rules did not allow (dropped, or refused with 0x87).",
    ),
    counter(
        "fanfare_tokens_expired_total",
        "Connections ended because the token they authenticated with expired.",
    ),
    counter(
        "fanfare_publish_rate_pauses_total",
        "Times a connection was not read for a while for publishing past publish_rate_max or publish_bytes_rate_max.",
    ),
    counter(
        "fanfare_publish_rate_disconnects_total",
        "MQTT 5 connections ended with 0x96 for publishing past their rate (disconnect_on_rate).",
    ),
    counter(
        "fanfare_connections_refused_per_ip_total",
        "Connections closed at once for connections_per_ip_max or connect_rate_per_ip_max.",
    ),
    counter(
        "fanfare_lingering_closes_total",
        "Closes that shut the write side and read what the peer still sent until it closed or close_linger_ms passed.",
    ),
    counter(
        "fanfare_ring_submissions_refused_total",
        "io_uring operations the ring refused, submitted again on a later loop turn.",
    ),
    counter(
        "fanfare_bytes_received_total",
        "Bytes received on client sockets, as on the wire (TLS and WebSocket framing included).",
    ),
    counter(
        "fanfare_bytes_sent_total",
        "Bytes sent on client sockets, as on the wire (TLS and WebSocket framing included).",
    ),
    counter(
        "fanfare_store_write_errors_total",
        "Writes or syncs of this shard's retained message files in data_dir that failed (the broker serves on, and writes again once it can).",
    ),
    gauge(
        "fanfare_store_unwritable",
        "With data_dir: 1 while the store cannot write (a full disk, a write error) and QoS 1/2 publishes are refused, else 0 (on shard 0: the store is one for all shards).",
    ),
    counter(
        "fanfare_store_publishes_refused_total",
        "QoS 1/2 publishes refused while the store could not write: PUBACK/PUBREC 0x97 Quota exceeded for MQTT 5, no acknowledgement for 3.x.",
    ),
    counter(
        "fanfare_bridge_publishes_refused_total",
        "QoS 1/2 publishes refused because a bridge that would carry them has a full queue under queue_full_policy = \"refuse\": 0x97 Quota exceeded for MQTT 5, no acknowledgement for 3.x.",
    ),
    gauge(
        "fanfare_cluster_connected",
        "Cluster mode: 1 while the node is connected to NATS (on shard 0, where the cluster's figures are counted).",
    ),
    gauge(
        "fanfare_cluster_subjects",
        "Cluster mode: NATS subscriptions the node holds, one per distinct local filter (two for a filter ending in /#).",
    ),
    counter(
        "fanfare_cluster_sent_total",
        "Cluster mode: publishes of this node sent to NATS.",
    ),
    counter(
        "fanfare_cluster_dropped_total",
        "Cluster mode: publishes of this node not sent to NATS (queue full past out_queue_bytes_max, NATS gone, or a topic with no NATS subject); local delivery is unaffected.",
    ),
    counter(
        "fanfare_cluster_received_total",
        "Cluster mode: messages from NATS published on this node.",
    ),
    counter(
        "fanfare_cluster_received_dropped_total",
        "Cluster mode: messages from NATS not published (queue full past in_queue_bytes_max, or a subject with no valid topic), and retained messages in JetStream not loaded (no valid topic or headers).",
    ),
    counter(
        "fanfare_cluster_retained_stored_total",
        "Cluster mode: retained publishes of this node that JetStream acknowledged storing.",
    ),
    counter(
        "fanfare_cluster_retained_store_failed_total",
        "Cluster mode: retained publishes of this node that JetStream did not store (no JetStream, no acknowledgement, refused); other nodes learn of them only through live delivery.",
    ),
    counter(
        "fanfare_cluster_retained_loaded_total",
        "Cluster mode: retained messages and clearings read from the JetStream stream and applied to every shard's replica.",
    ),
    gauge(
        "fanfare_cluster_retained_caught_up",
        "Cluster mode: 1 once the replicas hold what the JetStream stream of retained messages held when the node started following it.",
    ),
    gauge(
        "fanfare_cluster_retained_unsent",
        "Cluster mode: retained values set on this node while it was cut off from NATS, waiting to be written to the JetStream stream (bounded by retained_unsent_bytes_max).",
    ),
    counter(
        "fanfare_cluster_sessions_stored_total",
        "Cluster mode: persistent session images and ends of this node that JetStream acknowledged in the sessions bucket.",
    ),
    counter(
        "fanfare_cluster_sessions_store_failed_total",
        "Cluster mode: persistent session images and ends the sessions bucket did not take (no JetStream, refused, too large).",
    ),
    counter(
        "fanfare_cluster_sessions_fetched_total",
        "Cluster mode: persistent sessions a CONNECT here resumed from another node or from the sessions bucket.",
    ),
    counter(
        "fanfare_cluster_session_fetches_failed_total",
        "Cluster mode: CONNECTs resuming a session that the cluster did not answer: given a new session (NATS gone, an error) or refused with Server unavailable (session_fetch_timeout_ms passed, sessions_waiting_max searches queued).",
    ),
    counter(
        "fanfare_cluster_publishes_refused_total",
        "Cluster mode: QoS 1/2 publishes not acknowledged because the other nodes could not be promised them (NATS gone, the queue to it full, JetStream did not store them): 0x97 Quota exceeded for MQTT 5, no acknowledgement for 3.x.",
    ),
    counter(
        "fanfare_cluster_qos_stored_total",
        "Cluster mode: QoS 1/2 publishes of this node that JetStream acknowledged storing in the QoS stream.",
    ),
    counter(
        "fanfare_cluster_qos_store_failed_total",
        "Cluster mode: QoS 1/2 publishes of this node that did not reach the QoS stream (NATS gone, the queue full past out_queue_bytes_max, no answer, refused).",
    ),
    gauge(
        "fanfare_cluster_qos_stream_ready",
        "Cluster mode: 1 once the JetStream stream of QoS 1/2 publishes was found or made; until then QoS 1/2 publishes are not acknowledged.",
    ),
    gauge(
        "fanfare_cluster_qos_acks_waiting",
        "Cluster mode: QoS 1/2 publishes sent to JetStream whose answer has not come yet (at most qos_acks_waiting_max).",
    ),
    gauge(
        "fanfare_cluster_qos_consumers",
        "Cluster mode: JetStream consumers of the QoS stream this node reads, one per subject of each local filter.",
    ),
    counter(
        "fanfare_cluster_qos_received_total",
        "Cluster mode: QoS 1/2 messages of other nodes read from the QoS stream and published on this node.",
    ),
    counter(
        "fanfare_cluster_qos_redelivered_total",
        "Cluster mode: messages the QoS stream delivered to this node again (not acknowledged in time).",
    ),
    counter(
        "fanfare_cluster_qos_duplicates_total",
        "Cluster mode: QoS stream messages not published because this node had published them already (a redelivery, one message through two of its consumers, or a QoS 2 publish resent after its node's death that reached this node first from its client).",
    ),
    counter(
        "fanfare_cluster_qos_resends_held_total",
        "Cluster mode: QoS 2 publishes resent by their client after their node's death that the QoS stream held already, kept once.",
    ),
];

/// A metric's position in [`METRICS`], to read it from [`Totals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricId(usize);

impl MetricId {
    /// The metric named `name`. Meant for constants, where a name that is not in [`METRICS`]
    /// fails the build.
    pub const fn of(name: &str) -> MetricId {
        let mut index = 0;
        while index < METRICS.len() {
            if same_bytes(METRICS[index].name.as_bytes(), name.as_bytes()) {
                return MetricId(index);
            }
            index += 1;
        }
        panic!("no metric of that name");
    }
}

const fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut index = 0;
    while index < a.len() {
        if a[index] != b[index] {
            return false;
        }
        index += 1;
    }
    true
}

/// What the slow consumer policies of one shard did since start.
#[derive(Debug, Default, Clone, Copy)]
pub struct SlowConsumerCounts {
    /// New QoS 0 publishes not queued (`drop-newest`, or no room could be made).
    pub dropped_newest: u64,
    /// Older QoS 0 publishes dropped to make room.
    pub dropped_oldest: u64,
    /// QoS 0 publishes replaced by a newer one of the same topic.
    pub conflated: u64,
    /// Connections closed for not reading (`disconnect`, or required bytes past twice the
    /// bound).
    pub disconnected: u64,
}

/// What a shard's loop counts itself, beside the broker's and the slow consumer figures.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoopCounts {
    /// Open sockets: clients, upgrades and HTTP requests in progress.
    pub sockets: usize,
    pub submissions_refused: u64,
    pub cross_shard_backlog_bytes: usize,
    pub receives_paused: u64,
    pub tls_failures: u64,
    pub kernel_tls_handovers: u64,
    pub kernel_tls_declined: u64,
    pub proxy_refusals: u64,
    pub publish_rate_pauses: u64,
    pub address_refusals: u64,
    pub lingering_closes: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub store_write_errors: u64,
    /// Whether the store cannot write now (reported by shard 0 only).
    pub store_unwritable: bool,
}

/// The cluster bridge's figures (`crate::cluster`), reported by one shard.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterCounts {
    pub connected: bool,
    pub subjects: u64,
    pub sent: u64,
    pub dropped: u64,
    pub received: u64,
    pub received_dropped: u64,
    pub retained_stored: u64,
    pub retained_store_failed: u64,
    pub retained_loaded: u64,
    pub retained_caught_up: bool,
    pub sessions_stored: u64,
    pub sessions_store_failed: u64,
    pub sessions_fetched: u64,
    pub session_fetches_failed: u64,
    pub retained_unsent: u64,
    pub qos_stored: u64,
    pub qos_store_failed: u64,
    pub qos_stream_ready: bool,
    pub qos_acks_waiting: u64,
    pub qos_consumers: u64,
    pub qos_received: u64,
    pub qos_redelivered: u64,
    pub qos_duplicates: u64,
    pub qos_resends_held: u64,
}

/// One shard's figures at one moment, in the order of [`METRICS`].
pub struct ShardFigures {
    values: [u64; METRICS.len()],
}

impl ShardFigures {
    pub fn new(
        counts: &LoopCounts,
        broker: &BrokerStats,
        slow: &SlowConsumerCounts,
        cluster: &ClusterCounts,
    ) -> ShardFigures {
        let size = |n: usize| n as u64;
        ShardFigures {
            values: [
                size(counts.sockets),
                size(broker.connections),
                size(broker.sessions),
                size(broker.offline_sessions),
                size(broker.subscriptions),
                size(broker.retained),
                size(broker.retained_bytes),
                broker.publishes_received,
                broker.remote_publishes_received,
                broker.deliveries,
                slow.dropped_newest,
                slow.dropped_oldest,
                slow.conflated,
                slow.disconnected,
                broker.session_queue_dropped,
                broker.slow_consumer_closes,
                broker.too_large_for_client,
                broker.retained_rejected,
                broker.subscriptions_refused,
                broker.sessions_evicted,
                broker.connects_refused,
                broker.takeovers,
                broker.wills_published,
                broker.shared_handed_back,
                broker.shared_dropped,
                size(counts.cross_shard_backlog_bytes),
                counts.receives_paused,
                counts.tls_failures,
                counts.kernel_tls_handovers,
                counts.kernel_tls_declined,
                counts.proxy_refusals,
                broker.subscriptions_denied,
                broker.subscriptions_revoked,
                broker.publishes_denied,
                broker.tokens_expired,
                counts.publish_rate_pauses,
                broker.rate_disconnects,
                counts.address_refusals,
                counts.lingering_closes,
                counts.submissions_refused,
                counts.bytes_received,
                counts.bytes_sent,
                counts.store_write_errors,
                u64::from(counts.store_unwritable),
                broker.publishes_refused_unwritable,
                broker.publishes_refused_bridge_full,
                u64::from(cluster.connected),
                cluster.subjects,
                cluster.sent,
                cluster.dropped,
                cluster.received,
                cluster.received_dropped,
                cluster.retained_stored,
                cluster.retained_store_failed,
                cluster.retained_loaded,
                u64::from(cluster.retained_caught_up),
                cluster.retained_unsent,
                cluster.sessions_stored,
                cluster.sessions_store_failed,
                cluster.sessions_fetched,
                cluster.session_fetches_failed,
                broker.publishes_refused_cluster,
                cluster.qos_stored,
                cluster.qos_store_failed,
                u64::from(cluster.qos_stream_ready),
                cluster.qos_acks_waiting,
                cluster.qos_consumers,
                cluster.qos_received,
                cluster.qos_redelivered,
                cluster.qos_duplicates,
                cluster.qos_resends_held,
            ],
        }
    }
}

/// The latest figures of every shard.
pub struct Metrics {
    shards: Box<[ShardSlot]>,
    /// The bridges, whose figures are read from their own atomics, one sample per bridge.
    bridges: Vec<Arc<BridgeLink>>,
}

/// One shard's atomics, on cache lines of their own so shards never write a shared one.
#[repr(align(128))]
struct ShardSlot {
    values: [AtomicU64; METRICS.len()],
}

impl Metrics {
    pub fn new(shard_count: usize) -> Metrics {
        Metrics {
            shards: (0..shard_count)
                .map(|_| ShardSlot {
                    values: std::array::from_fn(|_| AtomicU64::new(0)),
                })
                .collect(),
            bridges: Vec::new(),
        }
    }

    /// Reports the figures of `bridges` too (`crate::bridge`).
    pub fn with_bridges(mut self, bridges: Vec<Arc<BridgeLink>>) -> Metrics {
        self.bridges = bridges;
        self
    }

    /// Shard `shard`'s figures replace what it published before.
    pub fn publish(&self, shard: usize, figures: &ShardFigures) {
        if let Some(slot) = self.shards.get(shard) {
            for (cell, value) in slot.values.iter().zip(figures.values) {
                cell.store(value, Relaxed);
            }
        }
    }

    /// Every metric over all shards: counters and gauges summed, a replica's the largest
    /// shard's (every shard holds the whole of it).
    pub fn totals(&self) -> Totals {
        let mut values = [0; METRICS.len()];
        for slot in &self.shards {
            for ((total, cell), metric) in values.iter_mut().zip(&slot.values).zip(&METRICS) {
                let value = cell.load(Relaxed);
                *total = match metric.kind {
                    Kind::Replica => (*total).max(value),
                    Kind::Gauge | Kind::Counter => total.saturating_add(value),
                };
            }
        }
        Totals { values }
    }

    /// Every metric of every shard, as Prometheus text (exposition format 0.0.4).
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(METRICS.len() * (200 + 48 * self.shards.len()));
        for (index, metric) in METRICS.iter().enumerate() {
            let kind = match metric.kind {
                Kind::Gauge | Kind::Replica => "gauge",
                Kind::Counter => "counter",
            };
            // Writing to a String cannot fail.
            let _ = writeln!(text, "# HELP {} {}", metric.name, metric.help);
            let _ = writeln!(text, "# TYPE {} {kind}", metric.name);
            for (shard, slot) in self.shards.iter().enumerate() {
                let value = slot.values[index].load(Relaxed);
                let _ = writeln!(text, "{}{{shard=\"{shard}\"}} {value}", metric.name);
            }
        }
        self.render_bridges(&mut text);
        text
    }

    fn render_bridges(&self, text: &mut String) {
        if self.bridges.is_empty() {
            return;
        }
        type Read = fn(&BridgeLink) -> u64;
        let bridge_metrics: [(&str, &str, &str, Read); 10] = [
            (
                "fanfare_bridge_connected",
                "gauge",
                "1 while the bridge is connected to its remote broker.",
                |l| u64::from(l.figures.connected.load(Relaxed)),
            ),
            (
                "fanfare_bridge_forwarded_out_total",
                "counter",
                "Publishes of this broker sent to the remote (QoS 1: acknowledged).",
                |l| l.figures.forwarded_out.load(Relaxed),
            ),
            (
                "fanfare_bridge_forwarded_in_total",
                "counter",
                "Messages from the remote published on this broker.",
                |l| l.figures.forwarded_in.load(Relaxed),
            ),
            (
                "fanfare_bridge_dropped_out_total",
                "counter",
                "Publishes not bridged: the out queue full past out_queue_bytes_max.",
                |l| l.figures.dropped_out.load(Relaxed),
            ),
            (
                "fanfare_bridge_dropped_in_total",
                "counter",
                "Messages from the remote not published: the in queue full, or a topic with no valid local name.",
                |l| l.figures.dropped_in.load(Relaxed),
            ),
            (
                "fanfare_bridge_reconnects_total",
                "counter",
                "Connections to the remote after the first.",
                |l| l.figures.reconnects.load(Relaxed),
            ),
            (
                "fanfare_bridge_queued_messages",
                "gauge",
                "Messages waiting for the remote in the bridge's queue: QoS 1 until acknowledged (on disk with a queue directory), QoS 0 until sent.",
                |l| l.figures.queued_messages.load(Relaxed),
            ),
            (
                "fanfare_bridge_queued_bytes",
                "gauge",
                "Bytes of the messages in the bridge's queue (QoS 1: as records in its files), bounded by queue_bytes_max.",
                |l| l.figures.queued_bytes.load(Relaxed),
            ),
            (
                "fanfare_bridge_queue_dropped_total",
                "counter",
                "QoS 1 messages the bridge's queue did not keep: the oldest dropped for room (drop_oldest), or one larger than the whole queue_bytes_max.",
                |l| l.figures.queue_dropped.load(Relaxed),
            ),
            (
                "fanfare_bridge_second_copies_total",
                "counter",
                "Messages that came both over this bridge and from the remote's own bridge connection (two brokers bridged to each other): the second copy is dropped.",
                |l| l.second_copies(),
            ),
        ];
        for (name, kind, help, read) in bridge_metrics {
            let _ = writeln!(text, "# HELP {name} {help}");
            let _ = writeln!(text, "# TYPE {name} {kind}");
            for link in &self.bridges {
                let value = read(link);
                let _ = writeln!(text, "{name}{{bridge=\"{}\"}} {value}", link.name);
            }
        }
    }
}

/// Every metric over all shards, at one moment ([`Metrics::totals`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    values: [u64; METRICS.len()],
}

impl Totals {
    pub fn get(&self, metric: MetricId) -> u64 {
        self.values[metric.0]
    }

    /// Every metric's name and total, in the order `/metrics` lists them.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        METRICS
            .iter()
            .zip(&self.values)
            .map(|(metric, &value)| (metric.name, value))
    }

    /// Totals with `metric` set to `value` and every other at 0 (tests of what reads them).
    #[cfg(test)]
    pub fn with(mut self, metric: MetricId, value: u64) -> Totals {
        self.values[metric.0] = value;
        self
    }

    #[cfg(test)]
    pub fn zero() -> Totals {
        Totals {
            values: [0; METRICS.len()],
        }
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_once_with_one_sample_per_shard() {
        let metrics = Metrics::new(2);
        let broker = BrokerStats {
            connections: 3,
            deliveries: 70,
            ..BrokerStats::default()
        };
        let slow = SlowConsumerCounts {
            conflated: 5,
            ..SlowConsumerCounts::default()
        };
        let counts = LoopCounts {
            sockets: 4,
            ..LoopCounts::default()
        };
        metrics.publish(
            1,
            &ShardFigures::new(&counts, &broker, &slow, &ClusterCounts::default()),
        );
        let text = metrics.render();
        for metric in &METRICS {
            assert_eq!(
                text.matches(&format!("# TYPE {} ", metric.name)).count(),
                1,
                "{}",
                metric.name
            );
            assert_eq!(
                metric.name.ends_with("_total"),
                metric.kind == Kind::Counter
            );
        }
        assert!(text.contains("fanfare_connections{shard=\"0\"} 0\n"));
        assert!(text.contains("fanfare_connections{shard=\"1\"} 3\n"));
        assert!(text.contains("fanfare_sockets{shard=\"1\"} 4\n"));
        assert!(text.contains("fanfare_deliveries_total{shard=\"1\"} 70\n"));
        assert!(text.contains("fanfare_slow_consumer_conflated_total{shard=\"1\"} 5\n"));
        let samples = text.lines().filter(|line| !line.starts_with('#')).count();
        assert_eq!(samples, METRICS.len() * 2);
    }

    #[test]
    fn totals_sum_the_shards_and_take_the_largest_replica() {
        let metrics = Metrics::new(3);
        for (shard, (connections, retained)) in [(2, 7), (5, 7), (1, 6)].into_iter().enumerate() {
            let broker = BrokerStats {
                connections,
                retained,
                publishes_received: 10,
                ..BrokerStats::default()
            };
            let counts = LoopCounts {
                bytes_sent: 100,
                ..LoopCounts::default()
            };
            let slow = SlowConsumerCounts::default();
            metrics.publish(
                shard,
                &ShardFigures::new(&counts, &broker, &slow, &ClusterCounts::default()),
            );
        }
        let totals = metrics.totals();
        assert_eq!(totals.get(MetricId::of("fanfare_connections")), 8);
        assert_eq!(totals.get(MetricId::of("fanfare_retained_messages")), 7);
        assert_eq!(
            totals.get(MetricId::of("fanfare_publishes_received_total")),
            30
        );
        assert_eq!(totals.get(MetricId::of("fanfare_bytes_sent_total")), 300);
        assert_eq!(totals.get(MetricId::of("fanfare_sessions")), 0);
    }

    #[test]
    fn a_metric_is_found_by_its_name() {
        for (index, metric) in METRICS.iter().enumerate() {
            assert_eq!(MetricId::of(metric.name), MetricId(index));
        }
    }

    #[test]
    fn names_are_unique_and_valid() {
        for (i, metric) in METRICS.iter().enumerate() {
            assert!(
                metric
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                metric.name
            );
            assert!(METRICS[i + 1..].iter().all(|m| m.name != metric.name));
        }
    }
}
