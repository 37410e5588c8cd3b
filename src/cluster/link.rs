//! The queues between the shards and the cluster bridge (`bridge.rs`), both ways bounded in
//! bytes, and the bridge's figures.
//!
//! - **Out** (shards → bridge): publishes that entered on this node, up to
//!   `out_queue_bytes_max` waiting; past it a publish is not sent to NATS and is counted as
//!   dropped (its local delivery does not depend on it). Interest changes go on a queue of
//!   their own that never drops: each is a trie node that came or went, so what waits is
//!   bounded by the subscriptions the sessions may hold.
//! - **In** (bridge → shards): messages from NATS, up to `in_queue_bytes_max` waiting; past
//!   it a message is dropped and counted. They all go to one shard, [`INTAKE_SHARD`], which
//!   delivers them to its sessions and posts each once to the other shards, as a local
//!   publish: one queue keeps NATS's order (per publisher) all the way to every subscriber,
//!   and the fan-out itself is still spread over every shard.
//! - **Retained** (bridge → each shard): the retained messages read from the JetStream stream
//!   (`retained.rs`), one queue per shard, each applies them to its own replica without
//!   delivering them to anyone. Each is bounded by `in_queue_bytes_max` (the shards share
//!   each message, so that is also about the memory they hold); a full queue is not a drop:
//!   the bridge waits for room, since a lost update would leave a stale value.
//!
//! - **QoS 1/2** (shards → bridge → shards): the QoS 1/2 publishes that entered on this node
//!   wait on a queue of their own, bounded by `out_queue_bytes_max` as well; a publish whose
//!   acknowledgement waits for JetStream's carries a [`Ticket`], and the bridge hands back
//!   on its shard's queue whether JetStream stored it (`qos.rs`). A queue of settled tickets
//!   holds at most what its shard waits for, bounded by connections × `inbound_qos2_max`
//!   (`crate::broker::cluster_acks`). The messages read from the stream go to the intake
//!   shard on a queue of their own, each with a ticket, up to `in_queue_bytes_max` (past it
//!   the consumers wait for room); the intake shard hands back the tickets of those it
//!   delivered (under `sync`, once durable on every shard), which the bridge then
//!   acknowledges to JetStream. The identities of the QoS 2 publishes that may reach the
//!   node both from the stream and from their client's resend after their node's death are
//!   remembered once for the node, shared by the shards and the bridge
//!   (`crate::broker::message_ids`).
//!
//! - **Client identifiers** (`client_ids.rs`): those of the CONNECTs accepted here, for the
//!   other nodes, and those the other nodes accepted, one queue per shard, each at most
//!   `[cluster] takeover_ids_waiting_max`; past it an identifier is dropped and counted with the
//!   publishes (`dropped`, `received_dropped`), and that takeover does not happen.
//!
//! - **Sessions** (`sessions.rs`): the images of this node's persistent sessions for the
//!   cluster's bucket and the answers to other nodes' takes, in one queue so that they reach
//!   NATS in the order they were made; the CONNECTs that wait for a session from the
//!   cluster, and the answers back to their shards; other nodes' takes, one queue per shard.
//!   Each holds at most `[cluster] sessions_waiting_max`: past it an image waits in the
//!   broker for the next write, a CONNECT gets a new session at once, and a take is not
//!   answered (the node that asks then reads the bucket).
//!
//! The messages wait in `crate::shard::byte_queue::Pipes`, which the bridges to other MQTT
//! brokers use too (`crate::bridge::link`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::bucket_marks::BucketMarks;
use super::client_ids::{Remembered, TakenOver};
use super::sessions::{SessionFetch, SessionFetched, SessionOut, SessionTake};
use crate::broker::RoutedMessage;
use crate::broker::message_ids::{Delivered, DeliveredIds};
use crate::config::ClusterSettings;
use crate::shard::byte_queue::{ByteQueue, Full, Pipes};
use crate::shard::mailbox::Mailboxes;
use crossbeam::queue::{ArrayQueue, SegQueue};

/// Messages from NATS one shard takes per loop turn: bounds the turn, as the admin requests'
/// and the mailboxes' bounds do; the rest wait for the next turn.
pub const FROM_CLUSTER_PER_TURN_MAX: usize = 1024;

/// The shard that takes the messages from NATS.
pub const INTAKE_SHARD: usize = 0;

/// A filter that got its first subscriber on a shard (`true`) or lost its last (`false`).
pub type InterestChange = (Box<str>, bool);

/// A QoS 1/2 publish of shard `shard` whose acknowledgement to its publisher waits until
/// JetStream stored it; `number` is the shard's own count (`crate::broker::cluster_acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub shard: usize,
    pub number: u64,
}

/// A QoS 1/2 publish on its way to JetStream. Without a ticket nobody waits for it (a will,
/// the admin publish API, a publish whose acknowledgement was not held).
pub struct QosPublish {
    pub message: Arc<RoutedMessage>,
    pub ticket: Option<Ticket>,
}

/// What the bridge counts, read by shard 0 into the metrics.
#[derive(Debug, Default)]
pub struct ClusterFigures {
    /// Whether the NATS connection is up.
    pub connected: AtomicBool,
    /// Publishes sent to NATS.
    pub sent: AtomicU64,
    /// Publishes not sent to NATS: the out queue full, NATS not connected, or a topic with no
    /// subject.
    pub dropped: AtomicU64,
    /// Messages from NATS handed to a shard.
    pub received: AtomicU64,
    /// Messages from NATS not delivered: the in queue full, or a subject with no valid topic.
    pub received_dropped: AtomicU64,
    /// NATS subscriptions held.
    pub subjects: AtomicU64,
    /// Retained messages written to the JetStream stream, or not (no JetStream, no answer,
    /// refused).
    pub retained_stored: AtomicU64,
    pub retained_store_failed: AtomicU64,
    /// Retained messages (and clearings) read from the stream and handed to every shard.
    pub retained_loaded: AtomicU64,
    /// Whether the replicas hold what the stream held when this node last (re)started
    /// following it.
    pub retained_caught_up: AtomicBool,
    /// Session images written to the cluster's bucket, or not (no JetStream, refused, too
    /// large).
    pub sessions_stored: AtomicU64,
    pub sessions_store_failed: AtomicU64,
    /// Sessions a CONNECT here resumed from another node or from the bucket.
    pub sessions_fetched: AtomicU64,
    /// CONNECTs that got a new session because the cluster did not answer in time (NATS
    /// gone, the queue full, an error).
    pub session_fetches_failed: AtomicU64,
    /// Retained values set while cut off from NATS, waiting to be written to the stream.
    pub retained_unsent: AtomicU64,
    /// QoS 1/2 publishes of this node JetStream stored, and those it did not (NATS gone, the
    /// queue full, no answer, refused).
    pub qos_stored: AtomicU64,
    pub qos_store_failed: AtomicU64,
    /// Whether the QoS stream was found or made since the node started.
    pub qos_stream_ready: AtomicBool,
    /// QoS 1/2 publishes sent to JetStream whose answer has not come yet.
    pub qos_acks_waiting: AtomicU64,
    /// JetStream consumers this node reads QoS 1/2 messages from.
    pub qos_consumers: AtomicU64,
    /// QoS 1/2 messages from the stream handed to the shards.
    pub qos_received: AtomicU64,
    /// Messages JetStream delivered again (not acknowledged in time), and messages not
    /// delivered because this node had delivered them already (a redelivery, or the same
    /// message through two consumers).
    pub qos_redelivered: AtomicU64,
    pub qos_duplicates: AtomicU64,
    /// QoS 2 publishes of this node the stream held already: resent by their client after
    /// their node's death, and kept once (`crate::broker::message_ids`).
    pub qos_resends_held: AtomicU64,
}

/// The queues of one node's shards and its bridge.
pub struct ClusterLink {
    /// Publishes to NATS and messages from it.
    pub pipes: Pipes,
    interest: SegQueue<InterestChange>,
    /// One per shard, indexed by shard.
    retained: Vec<ByteQueue>,
    /// Client identifiers of CONNECTs accepted on this node and when (`client_ids::now_us`),
    /// for the other nodes.
    connected: ArrayQueue<(Box<str>, u64)>,
    /// Per shard: client identifiers of CONNECTs accepted on other nodes.
    taken_over: Vec<ArrayQueue<TakenOver>>,
    /// Session images and answers to takes, for the bridge, in order.
    sessions_out: ArrayQueue<SessionOut>,
    /// CONNECTs that wait for their session, for the bridge.
    fetches: ArrayQueue<SessionFetch>,
    /// Per shard: the sessions those CONNECTs wait for, found or not.
    fetched: Vec<ArrayQueue<SessionFetched>>,
    /// Per shard: sessions other nodes take from this one.
    takes: Vec<ArrayQueue<SessionTake>>,
    /// Client identifiers of the sessions loaded from the data directory at start-up, to
    /// check against the bucket once; bounded by the sessions the shards may hold offline.
    loaded: SegQueue<Box<str>>,
    /// QoS 1/2 publishes for JetStream, and the bytes they hold, bounded by
    /// `out_queue_bytes_max`.
    qos_out: SegQueue<QosPublish>,
    qos_out_bytes: AtomicU64,
    qos_out_bytes_max: u64,
    /// Per shard: tickets JetStream answered, and whether it stored their publishes.
    settled: Vec<SegQueue<(u64, bool)>>,
    /// Messages from the QoS stream for the intake shard, each with the ticket of its
    /// acknowledgement to JetStream (`qos.rs`), and the bytes they hold: past
    /// `in_queue_bytes_max` the consumers wait for room, and JetStream holds back the rest.
    qos_in: ByteQueue<(Arc<RoutedMessage>, u64)>,
    /// The tickets of those the shards delivered, for the bridge to acknowledge.
    qos_delivered: SegQueue<u64>,
    /// Wakes the bridge's task that acknowledges them.
    pub(super) qos_delivered_waiting: tokio::sync::Notify,
    /// The QoS 2 publishes with an origin this node delivered, by identity, the last
    /// `qos_delivered_remembered_max`: a node takes the first of the stream's copy and its
    /// client's resend (`crate::broker::message_ids`). Locked per such publish only.
    pub delivered_ids: Arc<Mutex<DeliveredIds>>,
    mailboxes: Arc<Mailboxes>,
    /// Under `sync`: how far the bucket holds each shard's flushes.
    pub bucket_marks: Arc<BucketMarks>,
    pub figures: ClusterFigures,
    /// How much of their own announcements the shards remember (`client_ids.rs`).
    pub remembered: Remembered,
    /// A clean stop: asked once the shards stopped, answered once the bridge stored their
    /// sessions' last images (`sessions.rs`).
    stop_asked: tokio::sync::Notify,
    sessions_finished: Mutex<bool>,
    sessions_finished_changed: Condvar,
}

impl ClusterLink {
    pub fn new(mailboxes: Arc<Mailboxes>, settings: &ClusterSettings) -> ClusterLink {
        let (out_bytes_max, in_bytes_max) =
            (settings.out_queue_bytes_max, settings.in_queue_bytes_max);
        let ids_waiting_max = settings.takeover_ids_waiting_max;
        let retained = (0..mailboxes.shard_count())
            .map(|_| ByteQueue::new(in_bytes_max))
            .collect();
        let taken_over = (0..mailboxes.shard_count())
            .map(|_| ArrayQueue::new(ids_waiting_max))
            .collect();
        let sessions_max = settings.sessions_waiting_max;
        ClusterLink {
            pipes: Pipes::new(
                Arc::clone(&mailboxes),
                INTAKE_SHARD,
                out_bytes_max,
                in_bytes_max,
            ),
            interest: SegQueue::new(),
            retained,
            connected: ArrayQueue::new(ids_waiting_max),
            taken_over,
            sessions_out: ArrayQueue::new(sessions_max),
            fetches: ArrayQueue::new(sessions_max),
            fetched: (0..mailboxes.shard_count())
                .map(|_| ArrayQueue::new(sessions_max))
                .collect(),
            takes: (0..mailboxes.shard_count())
                .map(|_| ArrayQueue::new(sessions_max))
                .collect(),
            loaded: SegQueue::new(),
            qos_out: SegQueue::new(),
            qos_out_bytes: AtomicU64::new(0),
            qos_out_bytes_max: out_bytes_max,
            settled: (0..mailboxes.shard_count())
                .map(|_| SegQueue::new())
                .collect(),
            qos_in: ByteQueue::new(in_bytes_max),
            qos_delivered: SegQueue::new(),
            qos_delivered_waiting: tokio::sync::Notify::new(),
            delivered_ids: Arc::new(Mutex::new(Delivered::new(
                settings.qos_delivered_remembered_max,
            ))),
            bucket_marks: Arc::new(BucketMarks::new(Arc::clone(&mailboxes))),
            mailboxes,
            figures: ClusterFigures::default(),
            remembered: Remembered {
                ids_max: settings.takeover_ids_remembered_max,
                for_us: u64::from(settings.takeover_remembered_s) * 1_000_000,
            },
            stop_asked: tokio::sync::Notify::new(),
            sessions_finished: Mutex::new(false),
            sessions_finished_changed: Condvar::new(),
        }
    }

    /// At a clean stop, once the shards stopped: asks the bridge to store the sessions'
    /// last images in the bucket and waits for it, at most `timeout`. Whether it did.
    pub fn finish_sessions(&self, timeout: Duration) -> bool {
        self.stop_asked.notify_one();
        self.pipes.wake_remote();
        let Ok(finished) = self.sessions_finished.lock() else {
            return false;
        };
        self.sessions_finished_changed
            .wait_timeout_while(finished, timeout, |finished| !*finished)
            .is_ok_and(|(finished, _)| *finished)
    }

    /// Until a stop asks for the sessions' last images.
    pub(super) async fn stop_asked(&self) {
        self.stop_asked.notified().await;
    }

    /// Says the sessions' last images are stored (or failed, counted).
    pub(super) fn sessions_finished(&self) {
        if let Ok(mut finished) = self.sessions_finished.lock() {
            *finished = true;
            self.sessions_finished_changed.notify_all();
        }
    }

    // The shards' side.

    /// Queues `message` for NATS, or counts it dropped when the out queue is full. The
    /// bridge is woken by [`Pipes::wake_remote`], once per turn.
    pub fn send(&self, message: Arc<RoutedMessage>) {
        if self.pipes.send(message).is_err() {
            self.figures.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues a QoS 1/2 publish for JetStream, or gives it back when the queue is full (the
    /// caller refuses it, `crate::broker::cluster_acks`).
    pub fn send_qos(&self, publish: QosPublish) -> Result<(), QosPublish> {
        let bytes = publish.message.bytes() as u64;
        let waiting = self.qos_out_bytes.load(Ordering::Relaxed);
        if waiting.saturating_add(bytes) > self.qos_out_bytes_max {
            self.figures
                .qos_store_failed
                .fetch_add(1, Ordering::Relaxed);
            return Err(publish);
        }
        self.qos_out_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.qos_out.push(publish);
        Ok(())
    }

    /// The next ticket of `shard` JetStream answered: its number, and whether the publish
    /// was stored.
    pub fn take_settled(&self, shard: usize) -> Option<(u64, bool)> {
        self.settled.get(shard)?.pop()
    }

    /// Queues an interest change; never dropped (see the module documentation).
    pub fn change_interest(&self, change: InterestChange) {
        self.interest.push(change);
    }

    /// Queues the client identifier of a CONNECT this node accepted at `at_us`, for the other
    /// nodes, or counts it dropped when the queue is full. The bridge is woken with the
    /// publishes.
    pub fn connected(&self, client_id: Box<str>, at_us: u64) {
        if self.connected.push((client_id, at_us)).is_err() {
            self.figures.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The next client identifier another node accepted a CONNECT for, owned by `shard`.
    pub fn take_taken_over(&self, shard: usize) -> Option<TakenOver> {
        self.taken_over.get(shard)?.pop()
    }

    /// Queues a session image, an end or an answer for the bridge; gives it back when the
    /// queue is full. The bridge is woken with the publishes.
    pub fn session_out(&self, out: SessionOut) -> Result<(), SessionOut> {
        self.sessions_out.push(out)
    }

    /// Whether the queue of session images and answers is full.
    pub fn sessions_full(&self) -> bool {
        self.sessions_out.is_full()
    }

    /// Asks the cluster for the session of a waiting CONNECT; gives it back when the queue is
    /// full (the CONNECT then gets a new session).
    pub fn fetch_session(&self, fetch: SessionFetch) -> Result<(), SessionFetch> {
        self.fetches.push(fetch)
    }

    /// Notes a session loaded from the data directory at start-up, for the bridge to check
    /// against the bucket (`sessions.rs`).
    pub fn loaded_session(&self, client_id: Box<str>) {
        self.loaded.push(client_id);
    }

    /// The next session a CONNECT of `shard` waited for.
    pub fn take_fetched(&self, shard: usize) -> Option<SessionFetched> {
        self.fetched.get(shard)?.pop()
    }

    /// The next session another node takes from `shard`.
    pub fn take_session_take(&self, shard: usize) -> Option<SessionTake> {
        self.takes.get(shard)?.pop()
    }

    /// The next retained message from the stream for `shard`'s replica.
    pub fn take_retained(&self, shard: usize) -> Option<Arc<RoutedMessage>> {
        self.retained.get(shard)?.pop()
    }

    // The bridge's side.

    /// Hands a retained message from the stream to every shard that has room for it, and
    /// wakes them; returns the shards that had none, for the bridge to try again.
    pub(super) fn offer_retained(&self, message: &Arc<RoutedMessage>, shards: &mut Vec<usize>) {
        shards.retain(|&shard| {
            let full = self.retained[shard].push(Arc::clone(message)).is_err();
            self.mailboxes.wake(shard);
            full
        });
    }

    pub(super) fn shard_count(&self) -> usize {
        self.retained.len()
    }

    pub(super) fn next_connected(&self) -> Option<(Box<str>, u64)> {
        self.connected.pop()
    }

    /// Hands `shard` a client identifier another node accepted a CONNECT for, and wakes it;
    /// gives it back when the shard's queue is full.
    pub(super) fn take_over(&self, shard: usize, taken: TakenOver) -> Result<(), TakenOver> {
        let Some(queue) = self.taken_over.get(shard) else {
            return Err(taken);
        };
        queue.push(taken)?;
        self.mailboxes.wake(shard);
        Ok(())
    }

    /// Whether session images or answers wait for the bridge.
    pub(super) fn sessions_waiting(&self) -> bool {
        !self.sessions_out.is_empty()
    }

    pub(super) fn next_session_out(&self) -> Option<SessionOut> {
        self.sessions_out.pop()
    }

    /// Every session loaded from the data directory not yet checked.
    pub(super) fn take_loaded(&self) -> Vec<Box<str>> {
        std::iter::from_fn(|| self.loaded.pop()).collect()
    }

    pub(super) fn next_fetch(&self) -> Option<SessionFetch> {
        self.fetches.pop()
    }

    /// Hands `shard` the session one of its CONNECTs waits for, and wakes it; gives it back
    /// when the shard's queue is full.
    pub(super) fn fetched(
        &self,
        shard: usize,
        fetched: SessionFetched,
    ) -> Result<(), SessionFetched> {
        let Some(queue) = self.fetched.get(shard) else {
            return Err(fetched);
        };
        queue.push(fetched)?;
        self.mailboxes.wake(shard);
        Ok(())
    }

    /// Hands `shard` a session another node takes, and wakes it; gives it back when the
    /// shard's queue is full.
    pub(super) fn take_session(&self, shard: usize, take: SessionTake) -> Result<(), SessionTake> {
        let Some(queue) = self.takes.get(shard) else {
            return Err(take);
        };
        queue.push(take)?;
        self.mailboxes.wake(shard);
        Ok(())
    }

    pub(super) fn next_qos_out(&self) -> Option<QosPublish> {
        let publish = self.qos_out.pop()?;
        self.qos_out_bytes
            .fetch_sub(publish.message.bytes() as u64, Ordering::Relaxed);
        Some(publish)
    }

    /// Tells the ticket's shard whether JetStream stored its publish, and wakes it.
    pub(super) fn settle(&self, ticket: Ticket, stored: bool) {
        let Some(queue) = self.settled.get(ticket.shard) else {
            debug_assert!(false, "tickets name shards of this node");
            return;
        };
        queue.push((ticket.number, stored));
        self.mailboxes.wake(ticket.shard);
    }

    pub(super) fn next_interest(&self) -> Option<InterestChange> {
        self.interest.pop()
    }

    /// Hands a message from the QoS stream, with its acknowledgement's ticket, to
    /// [`INTAKE_SHARD`] and wakes it.
    pub(super) fn deliver_qos(&self, message: Arc<RoutedMessage>, ticket: u64) {
        self.qos_in.push_waited((message, ticket));
        self.figures.qos_received.fetch_add(1, Ordering::Relaxed);
        self.mailboxes.wake(INTAKE_SHARD);
    }

    /// The next message from the QoS stream, for the intake shard.
    pub fn take_qos(&self) -> Option<(Arc<RoutedMessage>, u64)> {
        self.qos_in.pop()
    }

    /// Whether the messages from the QoS stream waiting for the intake shard hold
    /// `in_queue_bytes_max` or more: the consumers then wait before they hand over another.
    pub(super) fn qos_in_full(&self) -> bool {
        self.qos_in.is_full()
    }

    /// Tells the bridge that the shards delivered the QoS stream messages of `tickets`.
    pub fn qos_delivered(&self, tickets: impl Iterator<Item = u64>) {
        let mut any = false;
        for ticket in tickets {
            self.qos_delivered.push(ticket);
            any = true;
        }
        if any {
            self.qos_delivered_waiting.notify_one();
        }
    }

    pub(super) fn next_qos_delivered(&self) -> Option<u64> {
        self.qos_delivered.pop()
    }

    /// Hands a message from NATS to [`INTAKE_SHARD`] and wakes it; or counts it dropped when
    /// the in queue is full.
    pub(super) fn deliver(&self, message: RoutedMessage) {
        let counter = match self.pipes.deliver(message) {
            Ok(()) => &self.figures.received,
            Err(Full) => &self.figures.received_dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mqtt::QoS;

    fn message(topic: &str) -> RoutedMessage {
        RoutedMessage::new(topic, &[0; 100], QoS::AtMostOnce, false)
    }

    /// The default `[cluster]` with these byte bounds of the out and in queues.
    fn queues(out_bytes_max: u64, in_bytes_max: u64) -> ClusterSettings {
        ClusterSettings {
            out_queue_bytes_max: out_bytes_max,
            in_queue_bytes_max: in_bytes_max,
            ..ClusterSettings::default()
        }
    }

    #[test]
    fn out_queue_is_bounded_in_bytes() {
        let mailboxes = Arc::new(Mailboxes::new(1, 4).expect("eventfds"));
        let one = message("a").bytes() as u64;
        let link = ClusterLink::new(mailboxes, &queues(one * 2, one));
        for _ in 0..3 {
            link.send(Arc::new(message("a")));
        }
        assert_eq!(link.figures.dropped.load(Ordering::Relaxed), 1);
        assert!(link.pipes.next_out().is_some());
        link.send(Arc::new(message("a")));
        assert_eq!(
            link.figures.dropped.load(Ordering::Relaxed),
            1,
            "room again"
        );
    }

    #[test]
    fn in_queue_is_bounded_in_bytes_and_keeps_order() {
        let mailboxes = Arc::new(Mailboxes::new(2, 4).expect("eventfds"));
        let one = message("a").bytes() as u64;
        let link = ClusterLink::new(mailboxes, &queues(one, one * 2));
        link.deliver(message("a"));
        link.deliver(message("b"));
        link.deliver(message("c"));
        assert_eq!(link.figures.received_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(link.pipes.take().map(|m| m.topic.clone()), Some("a".into()));
        assert_eq!(link.pipes.take().map(|m| m.topic.clone()), Some("b".into()));
        assert!(link.pipes.take().is_none());
        link.deliver(message("d"));
        assert_eq!(link.pipes.take().map(|m| m.topic.clone()), Some("d".into()));
    }

    #[test]
    fn qos_queue_is_bounded_and_tickets_come_back_to_their_shard() {
        let mailboxes = Arc::new(Mailboxes::new(2, 4).expect("eventfds"));
        let one = message("a").bytes() as u64;
        let link = ClusterLink::new(mailboxes, &queues(one, one));
        let ticket = Ticket {
            shard: 1,
            number: 7,
        };
        let publish = |ticket| QosPublish {
            message: Arc::new(message("a")),
            ticket,
        };
        assert!(link.send_qos(publish(Some(ticket))).is_ok());
        assert!(link.send_qos(publish(None)).is_err(), "full");
        assert_eq!(link.figures.qos_store_failed.load(Ordering::Relaxed), 1);
        let out = link.next_qos_out().expect("queued");
        assert_eq!(out.ticket, Some(ticket));
        assert!(link.send_qos(publish(None)).is_ok(), "room again");
        link.settle(ticket, true);
        assert_eq!(link.take_settled(0), None);
        assert_eq!(link.take_settled(1), Some((7, true)));
        assert_eq!(link.take_settled(1), None);
    }

    #[test]
    fn retained_goes_to_every_shard_and_waits_for_room() {
        let mailboxes = Arc::new(Mailboxes::new(2, 4).expect("eventfds"));
        let one = message("a").bytes() as u64;
        let link = ClusterLink::new(mailboxes, &queues(one, one));
        let first = Arc::new(message("a"));
        let mut shards = vec![0, 1];
        link.offer_retained(&first, &mut shards);
        assert!(shards.is_empty());
        let mut shards = vec![0, 1];
        link.offer_retained(&Arc::new(message("b")), &mut shards);
        assert_eq!(shards, vec![0, 1], "both full");
        assert_eq!(
            link.take_retained(1).map(|m| m.topic.clone()),
            Some("a".into())
        );
        link.offer_retained(&Arc::new(message("b")), &mut shards);
        assert_eq!(shards, vec![0], "shard 1 had room");
        assert_eq!(
            link.take_retained(1).map(|m| m.topic.clone()),
            Some("b".into())
        );
        assert!(link.take_retained(2).is_none(), "no such shard");
    }
}
