//! The queues between the shards and one bridge (`client.rs`), as the cluster's are
//! (`crate::cluster::link`), and the bridge's figures.
//!
//! - **Out** (shards → bridge): publishes of this node that an `out` mapping matches, up to
//!   `out_queue_bytes_max` waiting for the bridge's thread, which takes them into its own
//!   queue (`queue.rs`) as they come, the remote connected or not; past it a publish is not
//!   bridged and is counted as dropped. Its local delivery does not depend on it.
//! - **In** (bridge → shards): messages from the remote, up to `in_queue_bytes_max` waiting;
//!   past it the bridge stops reading the remote until there is room again (back-pressure);
//!   only a message larger than the whole bound is dropped and counted. They all go to
//!   [`INTAKE_SHARD`], which keeps the remote's order and posts each once to the other shards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::broker::RoutedMessage;
use crate::broker::crossings::Crossings;
use crate::config::bridge::BridgeSettings;
use crate::protocol::mqtt::topic::filter_matches;
pub use crate::shard::byte_queue::Full;
use crate::shard::byte_queue::Pipes;
use crate::shard::mailbox::Mailboxes;

/// Messages from all bridges the intake shard takes per loop turn: bounds the turn; the rest
/// wait for the next.
pub const FROM_BRIDGES_PER_TURN_MAX: usize = 1024;

/// The shard that takes the messages from the bridges.
pub const INTAKE_SHARD: usize = 0;

/// What a bridge counts, read by the intake shard into the metrics.
#[derive(Debug, Default)]
pub struct BridgeFigures {
    /// Whether the connection to the remote is up (CONNACK accepted).
    pub connected: AtomicBool,
    /// Publishes sent to the remote (QoS 1: acknowledged by it).
    pub forwarded_out: AtomicU64,
    /// Messages from the remote handed to the shards.
    pub forwarded_in: AtomicU64,
    /// Publishes not sent: the out queue full.
    pub dropped_out: AtomicU64,
    /// Messages from the remote not delivered: the in queue full, or a topic that maps to
    /// no valid topic here.
    pub dropped_in: AtomicU64,
    /// Connections made after the first.
    pub reconnects: AtomicU64,
    /// Messages waiting for the remote in the bridge's queue (`queue.rs`): QoS 1 ones until
    /// acknowledged, QoS 0 ones until sent.
    pub queued_messages: AtomicU64,
    /// Their bytes (QoS 1: as records in the queue's files).
    pub queued_bytes: AtomicU64,
    /// QoS 1 messages the queue did not keep: the oldest dropped for room (`drop_oldest`),
    /// or one larger than the whole bound.
    pub queue_dropped: AtomicU64,
}

pub struct BridgeLink {
    pub name: String,
    /// The local filters of the `out` and `both` mappings: what the shards match.
    out_filters: Vec<String>,
    /// Publishes to the remote and messages from it.
    pub pipes: Pipes,
    pub figures: BridgeFigures,
    /// Set by the bridge while its queue is full under `queue_full_policy = "refuse"`: the
    /// shards then refuse the QoS 1/2 publishes an `out` mapping matches.
    pub refusing: AtomicBool,
    /// What came in over this bridge and from the remote's own bridge connection, to drop
    /// the second copy (`crate::broker::crossings`); shared with the shards.
    pub crossings: Arc<Mutex<Crossings>>,
    /// The broker stops: the bridge writes what the shards handed it and ends.
    stopping: AtomicBool,
    stop: Notify,
}

impl BridgeLink {
    pub fn new(settings: &BridgeSettings, mailboxes: Arc<Mailboxes>) -> BridgeLink {
        BridgeLink {
            name: settings.name.clone(),
            out_filters: settings
                .topics
                .iter()
                .filter(|mapping| mapping.direction.carries_out())
                .map(|mapping| mapping.local_filter())
                .collect(),
            pipes: Pipes::new(
                mailboxes,
                INTAKE_SHARD,
                settings.out_queue_bytes_max,
                settings.in_queue_bytes_max,
            ),
            figures: BridgeFigures::default(),
            refusing: AtomicBool::new(false),
            crossings: Arc::new(Mutex::new(Crossings::new(
                settings
                    .topics
                    .iter()
                    .filter(|mapping| mapping.direction.carries_in())
                    .map(|mapping| mapping.local_filter())
                    .collect(),
                settings.second_copies_remembered_max,
            ))),
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
        }
    }

    /// Second copies dropped (`fanfare_bridge_second_copies_total`).
    pub fn second_copies(&self) -> u64 {
        self.lock_crossings().second_copies()
    }

    /// The crossings, locked.
    pub(super) fn lock_crossings(&self) -> std::sync::MutexGuard<'_, Crossings> {
        crate::locks::lock(&self.crossings)
    }

    /// The local filters of the `out` and `both` mappings.
    pub fn out_filters(&self) -> &[String] {
        &self.out_filters
    }

    /// Asks the bridge to stop, once the shards have stopped: it takes what they handed it
    /// (QoS 1: into its queue's files) before it ends.
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.notify_one();
    }

    /// Whether the broker stops.
    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Returns once [`BridgeLink::request_stop`] was called.
    pub(super) async fn stopped(&self) {
        if !self.stopping() {
            self.stop.notified().await;
        }
    }

    // The shards' side.

    /// Queues `message` for the remote when an `out` mapping matches its topic; `true` when
    /// it did, so the caller wakes the bridge once per turn.
    pub fn offer(&self, message: &Arc<RoutedMessage>) -> bool {
        let wanted = self
            .out_filters
            .iter()
            .any(|filter| filter_matches(filter, &message.topic));
        if !wanted {
            return false;
        }
        if self.pipes.send(Arc::clone(message)).is_err() {
            self.figures.dropped_out.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    // The bridge's side.

    /// Hands a message from the remote to [`INTAKE_SHARD`] and wakes it. A message that can
    /// never fit the in queue is dropped and counted; one that does not fit *now* is given
    /// back ([`Full`]): the bridge stops reading the remote until the shards have taken some,
    /// so the remote is slowed down (TCP) rather than a message it was acknowledged lost.
    pub(super) fn deliver(&self, message: RoutedMessage) -> Result<(), Full> {
        if message.bytes() as u64 > self.pipes.in_bytes_max() {
            self.figures.dropped_in.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.pipes.deliver(message)?;
        self.figures.forwarded_in.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mqtt::QoS;

    fn settings(out_queue_bytes_max: u64) -> BridgeSettings {
        let mut settings: BridgeSettings = toml::from_str(
            "name = \"up\"\nurl = \"mqtt://127.0.0.1:1\"\ntopics = [\
             { filter = \"a/#\", direction = \"out\", local_prefix = \"x/\" },\
             { filter = \"b/#\", direction = \"in\" }]",
        )
        .expect("a bridge table");
        settings.out_queue_bytes_max = out_queue_bytes_max;
        settings
    }

    fn message(topic: &str) -> Arc<RoutedMessage> {
        Arc::new(RoutedMessage::new(topic, &[0; 100], QoS::AtMostOnce, false))
    }

    #[test]
    fn a_full_in_queue_gives_the_message_back_and_only_an_oversize_one_is_dropped() {
        let mailboxes = Arc::new(Mailboxes::new(1, 4).expect("eventfds"));
        let incoming = |topic: &str| RoutedMessage::new(topic, &[0; 100], QoS::AtLeastOnce, false);
        let one = incoming("b/1").bytes() as u64;
        let mut settings = settings(one);
        settings.in_queue_bytes_max = one;
        let link = BridgeLink::new(&settings, mailboxes);
        assert_eq!(link.deliver(incoming("b/1")), Ok(()));
        assert_eq!(
            link.deliver(incoming("b/2")),
            Err(Full),
            "no room now: given back"
        );
        assert_eq!(link.figures.dropped_in.load(Ordering::Relaxed), 0);
        assert!(link.pipes.take().is_some());
        assert_eq!(link.deliver(incoming("b/2")), Ok(()), "room again");
        let oversize = RoutedMessage::new("b/3", &[0; 1000], QoS::AtLeastOnce, false);
        assert_eq!(
            link.deliver(oversize),
            Ok(()),
            "can never fit: dropped, not held"
        );
        assert_eq!(link.figures.dropped_in.load(Ordering::Relaxed), 1);
        assert_eq!(link.figures.forwarded_in.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn only_out_mappings_are_offered_and_the_queue_is_bounded() {
        let mailboxes = Arc::new(Mailboxes::new(1, 4).expect("eventfds"));
        let one = message("x/a/1").bytes() as u64;
        let link = BridgeLink::new(&settings(one * 2), mailboxes);
        assert!(!link.offer(&message("a/1")), "outside the local prefix");
        assert!(!link.offer(&message("b/1")), "an in mapping");
        assert!(link.offer(&message("x/a/1")));
        assert!(link.offer(&message("x/a/2")));
        assert!(!link.offer(&message("x/a/3")), "past the bound");
        assert_eq!(link.figures.dropped_out.load(Ordering::Relaxed), 1);
        assert_eq!(
            link.pipes.next_out().map(|m| m.topic.clone()),
            Some("x/a/1".into())
        );
    }
}
