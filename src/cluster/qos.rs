//! QoS 1/2 across nodes: a JetStream stream that carries every QoS 1/2 publish from the node
//! it entered on to every node with a matching subscriber (`docs/scale-out.md`, "QoS 1 and 2
//! across nodes").
//!
//! - **Where.** The stream `qos_stream` holds the subjects `$FANFARE.<qos_stream>.>`, a topic's
//!   subject below that root as `subject.rs` maps it: outside the live subjects, as the
//!   retained stream's are. It keeps every message for `qos_stream_age_max_s`, and at most
//!   `qos_stream_bytes_max`, the oldest going first: a node that far behind loses what it had
//!   not read. `retention = interest` (a message kept until every consumer that wants it
//!   acknowledged it) would keep less, but on nats-server 2.9 it lost a message now and then
//!   before every consumer of several with overlapping filters had read it (one in a hundred
//!   in this project's tests).
//! - **Publishing.** A QoS 1/2 publish goes to the stream with its headers (`headers.rs`) and
//!   its QoS ([`headers::QOS`]). Its publisher's PUBACK or PUBREC waits until JetStream
//!   answered that the stream holds it, replicated as the stream says: then the promise
//!   holds for as long as the NATS cluster keeps a quorum. The answer goes back to the shard
//!   (`link.rs`), which acknowledges in order (`crate::broker::cluster_acks`). A copy also
//!   goes to the plain subject on core NATS, for native NATS subscribers; it carries
//!   [`headers::CARRIED_BY`], and fanfare nodes ignore it.
//! - **Receiving.** A node holds one durable consumer per subject of each filter its sessions
//!   hold (`subject::filter_subjects`), made with the interest and deleted when it goes:
//!   explicit acknowledgements, new messages only, at most `qos_ack_pending_max` held out. A
//!   message is handed to the intake shard at its QoS, on a queue of its own beside core
//!   NATS's, and acknowledged to JetStream only once the node delivered it: once the intake
//!   shard routed it, and under `durability = "sync"` once what it changed is on disk on
//!   every shard (as a client's PUBACK, `broker/held_acks.rs`). A node that stops or dies
//!   first gets it again from its durable consumer when it is back (`qos_redeliver_after_ms`
//!   after the first delivery, the consumers' `ack_wait`), so its offline sessions do not
//!   lose what was on its way to them. That queue holds at most `in_queue_bytes_max`;
//!   past it the consumers wait for room, and JetStream holds back the rest.
//!   Its own messages (the origin header names this node) are acknowledged and skipped: the
//!   node delivered them when they entered.
//! - **Once per node.** A redelivery (an acknowledgement lost, a consumer moved to another
//!   server) and the same message through two consumers of the node (filters `a/#` and `a/b`
//!   both match `a/b`) carry the same stream sequence and publication time: the node
//!   delivers the first and skips the others, remembering the last
//!   `qos_delivered_remembered_max` of them ([`Delivered`]; a stream made again counts its
//!   sequences from 1 again, hence the time). Each subscriber then gets the message once
//!   from the local fan-out, as for a local publish.
//! - **A QoS 2 publish resent after its node's death.** A QoS 2 publish with an origin
//!   (under `sync`, of a persistent session) goes to the stream with `Nats-Msg-Id` set to its
//!   identity, which the node its session moves to gives the client's resend too: JetStream
//!   stores one of the two, and a node takes whichever reaches it first, from the stream or
//!   from the client (`crate::broker::message_ids`).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, HeaderMap};
use futures::StreamExt;
use log::{info, warn};
use tokio::sync::Semaphore;

use super::bridge::publish_of;
use super::headers;
use super::link::{ClusterLink, Ticket};
use super::retained::replicas_for;
use super::subject::{filter_subjects, topic_to_subject};
use crate::broker::RoutedMessage;
use crate::broker::message_ids::{Delivered, MessageId};
use crate::config::{ClusterSettings, Limits};
use crate::locks::lock;
use crate::protocol::mqtt::QoS;

/// The first token of the stream's subjects, as for the retained stream (`retained.rs`).
const SUBJECT_ROOT: &str = "$FANFARE";

/// How long a node waits before it tries again to create the stream or a consumer, or to
/// read a consumer after an error, doubled after each error up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How long one pull request of a consumer lasts, and how often the server says it is alive
/// meanwhile: two heartbeats missed (a NATS server gone, JetStream lost) end the reading,
/// and the consumer is read again, on the server the node is connected to then.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
const PULL_HEARTBEAT: Duration = Duration::from_secs(3);

/// Messages one pull request asks for, at most: within `qos_ack_pending_max` they are held
/// out unacknowledged anyway.
const PULL_BATCH_MAX: usize = 256;

/// How long a consumer waits for room when the intake shard's queue of stream messages is
/// full.
const ROOM_WAIT: Duration = Duration::from_millis(5);

/// Longest part of a consumer's name taken from the node's name; the hash in the name keeps
/// it unique.
const NODE_IN_NAME_BYTES_MAX: usize = 32;

pub(super) struct QosStream {
    jetstream: jetstream::Context,
    pub(super) stream: String,
    /// The subjects' root, `$FANFARE.<qos_stream>`.
    pub(super) root: String,
    node: String,
    settings: ClusterSettings,
    limits: Limits,
    link: Arc<ClusterLink>,
    /// Publishes whose answer from JetStream is awaited, at most `qos_acks_waiting_max`.
    acks: Arc<Semaphore>,
    delivered: Mutex<Delivered<StreamKey>>,
    undelivered: Mutex<Undelivered<jetstream::Message>>,
    next_ticket: AtomicU64,
}

/// A stream message as a node tells it from others: its stream sequence and publication
/// time (see the module documentation, "Once per node").
type StreamKey = (u64, i128);

/// The stream messages this node took and has not delivered yet: by ticket, acknowledged to
/// JetStream once the shards delivered them (see the module documentation); and by key, so
/// that a copy JetStream sends again meanwhile (`qos_redeliver_after_ms` ran out while the
/// first waited for the in queue or in it) is left unacknowledged rather than acknowledge
/// the message before the node delivered it. At most `qos_ack_pending_max` per consumer.
struct Undelivered<M> {
    by_ticket: HashMap<u64, (StreamKey, M)>,
    keys: HashSet<StreamKey>,
}

impl<M> Undelivered<M> {
    fn new() -> Undelivered<M> {
        Undelivered {
            by_ticket: HashMap::new(),
            keys: HashSet::new(),
        }
    }

    /// The first copy of `key` was taken: it may wait for room before it is handed over.
    fn taken(&mut self, key: StreamKey) {
        self.keys.insert(key);
    }

    /// It was handed to the shards with `ticket`.
    fn handed(&mut self, ticket: u64, key: StreamKey, message: M) {
        self.by_ticket.insert(ticket, (key, message));
    }

    /// The shards delivered `ticket`'s message: to acknowledge now.
    fn delivered(&mut self, ticket: u64) -> Option<M> {
        let (key, message) = self.by_ticket.remove(&ticket)?;
        self.keys.remove(&key);
        Some(message)
    }

    /// Whether a duplicate of `key`, delivered `delivery` times by its consumer, is left
    /// unacknowledged: a copy sent again while the first waits is acknowledged once that
    /// one is delivered (until then JetStream may send it again, skipped as this one). The
    /// first copy from another consumer (filters that overlap) is acknowledged at once, or it
    /// would hold that consumer's pending room.
    fn leaves(&self, key: StreamKey, delivery: i64) -> bool {
        delivery > 1 && self.keys.contains(&key)
    }
}

impl QosStream {
    pub(super) fn new(
        client: Client,
        settings: &ClusterSettings,
        limits: &Limits,
        link: Arc<ClusterLink>,
    ) -> QosStream {
        QosStream {
            jetstream: jetstream::new(client),
            stream: settings.qos_stream.clone(),
            root: format!("{SUBJECT_ROOT}.{}", settings.qos_stream),
            node: settings.node.clone(),
            settings: settings.clone(),
            limits: limits.clone(),
            link,
            acks: Arc::new(Semaphore::new(settings.qos_acks_waiting_max)),
            delivered: Mutex::new(Delivered::new(settings.qos_delivered_remembered_max)),
            undelivered: Mutex::new(Undelivered::new()),
            next_ticket: AtomicU64::new(0),
        }
    }

    /// Creates the stream if it is missing, trying again after errors until it exists. Until
    /// then JetStream refuses the node's QoS 1/2 publishes, which are not acknowledged.
    pub(super) async fn prepare(self: Arc<Self>, client: Client) {
        let mut retry = RETRY_MIN;
        loop {
            match self.create_stream(&client).await {
                Ok(()) => {
                    let ready = &self.link.figures.qos_stream_ready;
                    ready.store(true, Ordering::Relaxed);
                    info!(
                        "cluster: QoS 1/2 publishes cross nodes on the JetStream stream {:?}",
                        self.stream
                    );
                    return;
                }
                Err(e) => warn!(
                    "cluster: cannot create the JetStream stream {:?} of QoS 1/2 publishes: {e}; QoS 1/2 publishes are not acknowledged until it exists; trying again in {} s",
                    self.stream,
                    retry.as_secs()
                ),
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    async fn create_stream(&self, client: &Client) -> Result<(), async_nats::Error> {
        // Answered once a server is connected, after its INFO named the cluster's servers
        // (`retained.rs` says why that matters for the replicas).
        client.flush().await?;
        let info = client.server_info();
        let own = format!("{}:{}", info.host, info.port);
        let config = stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.>", self.root)],
            // Not `interest`: see the module documentation.
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_bytes: i64::try_from(self.settings.qos_stream_bytes_max).unwrap_or(i64::MAX),
            max_age: Duration::from_secs(u64::from(self.settings.qos_stream_age_max_s)),
            num_replicas: self
                .settings
                .retained_replicas
                .map_or_else(|| replicas_for(&info.connect_urls, &own), usize::from),
            storage: stream::StorageType::File,
            ..stream::Config::default()
        };
        self.jetstream.get_or_create_stream(config).await?;
        Ok(())
    }

    /// Sends a QoS 1/2 publish of this node to the stream with `headers`, and tells its shard
    /// JetStream's answer on a task of its own. Past `qos_acks_waiting_max` unanswered
    /// publishes this waits, and the bridge with it: the out queue then fills and the shards
    /// refuse further QoS 1/2 publishes.
    pub(super) async fn publish(
        &self,
        message: &RoutedMessage,
        mut headers: HeaderMap,
        ticket: Option<Ticket>,
    ) {
        let Ok(subject) = topic_to_subject(&self.root, &message.topic) else {
            self.settle(ticket, false);
            return;
        };
        let qos = if message.qos == QoS::ExactlyOnce {
            "2"
        } else {
            "1"
        };
        headers.insert(headers::QOS, qos);
        if let (Some(id), Some(_)) = (message.id, &message.origin) {
            // Derived alike on every node: JetStream keeps one of a publish and its resend
            // after its node's death (`crate::broker::message_ids`).
            headers.insert(headers::NATS_MESSAGE_ID, id.to_header().as_str());
        }
        let Ok(permit) = Arc::clone(&self.acks).acquire_owned().await else {
            self.settle(ticket, false);
            return;
        };
        let payload = bytes::Bytes::copy_from_slice(&message.payload);
        let answer = match self
            .jetstream
            .publish_with_headers(subject, headers, payload)
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                self.store_failed(&e.to_string());
                self.settle(ticket, false);
                return;
            }
        };
        let waiting = &self.link.figures.qos_acks_waiting;
        waiting.fetch_add(1, Ordering::Relaxed);
        let link = Arc::clone(&self.link);
        let (stream, root) = (self.stream.clone(), self.root.clone());
        tokio::spawn(async move {
            let stored = answer.await;
            let figures = &link.figures;
            figures.qos_acks_waiting.fetch_sub(1, Ordering::Relaxed);
            match &stored {
                Ok(ack) => {
                    figures.qos_stored.fetch_add(1, Ordering::Relaxed);
                    if ack.duplicate {
                        figures.qos_resends_held.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => store_failed(&figures.qos_store_failed, &stream, &root, &e.to_string()),
            }
            if let Some(ticket) = ticket {
                link.settle(ticket, stored.is_ok());
            }
            drop(permit);
        });
    }

    /// Tells a publish's shard that it was not stored (`None`: nobody waits for it).
    pub(super) fn settle(&self, ticket: Option<Ticket>, stored: bool) {
        if let Some(ticket) = ticket {
            self.link.settle(ticket, stored);
        }
    }

    fn store_failed(&self, why: &str) {
        let failed = &self.link.figures.qos_store_failed;
        store_failed(failed, &self.stream, &self.root, why);
    }

    /// This node's consumers of a filter: for each of its subjects in the stream
    /// (`subject::filter_subjects`), the durable consumer's name and the subject.
    pub(super) fn consumers_of(&self, filter: &str) -> Vec<(String, String)> {
        filter_subjects(&self.root, filter)
            .unwrap_or_default()
            .into_iter()
            .map(|subject| (consumer_name(&self.stream, &self.node, &subject), subject))
            .collect()
    }

    /// Deletes this node's consumer `name`: its filter lost its last local subscriber, and
    /// the stream need not keep messages for it any more.
    pub(super) async fn delete_consumer(self: Arc<Self>, name: String) {
        let deleted = self
            .jetstream
            .delete_consumer_from_stream(&name, &self.stream)
            .await;
        if let Err(e) = deleted {
            warn!(
                "cluster: cannot delete the JetStream consumer {name:?}: {e}; JetStream removes it after qos_stream_age_max_s unread"
            );
        }
    }

    /// Reads the consumer `name` of `subject` until the task is aborted, making it first if
    /// it is missing; after an error it tries again.
    pub(super) async fn consume(self: Arc<Self>, name: String, subject: String) {
        let mut retry = RETRY_MIN;
        loop {
            match self.consume_once(&name, &subject).await {
                Ok(()) => retry = RETRY_MIN,
                Err(e) => warn!(
                    "cluster: cannot read the JetStream consumer {name:?} of {subject:?}: {e}; QoS 1/2 messages on it wait in the stream; trying again in {} s",
                    retry.as_secs()
                ),
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    async fn consume_once(&self, name: &str, subject: &str) -> Result<(), async_nats::Error> {
        let stream = self.jetstream.get_stream(&self.stream).await?;
        let age_max = Duration::from_secs(u64::from(self.settings.qos_stream_age_max_s));
        let config = consumer::pull::Config {
            durable_name: Some(name.to_owned()),
            filter_subject: subject.to_owned(),
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: i64::try_from(self.settings.qos_ack_pending_max).unwrap_or(i64::MAX),
            ack_wait: Duration::from_millis(self.settings.qos_redeliver_after_ms.into()),
            // A consumer of a node that is gone for good goes after as long as its
            // messages would have been kept.
            inactive_threshold: age_max,
            ..consumer::pull::Config::default()
        };
        // Made, or taken up with this node's settings: JetStream updates an existing
        // durable's `ack_wait` and `max_ack_pending` in place. One it will not update (a
        // setting its server cannot change) is read as it is.
        let consumer = match stream.create_consumer(config).await {
            Ok(consumer) => consumer,
            Err(e) => {
                let consumer = stream.get_consumer(name).await?;
                warn!(
                    "cluster: the JetStream consumer {name:?} keeps its former settings ({e}); delete it to make it again with this node's"
                );
                consumer
            }
        };
        let _held = Held::new(&self.link.figures.qos_consumers);
        let batch = PULL_BATCH_MAX.min(self.settings.qos_ack_pending_max);
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await?;
        while let Some(message) = messages.next().await {
            self.take(message?).await;
        }
        Ok(())
    }

    /// Hands one message of a consumer to the shards, unless this node sent it or delivered
    /// it already; acknowledged to JetStream once the shards delivered it, the others now.
    async fn take(&self, message: jetstream::Message) {
        let figures = &self.link.figures;
        let (sequence, delivered, published_ns) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                info.delivered,
                info.published.unix_timestamp_nanos(),
            ),
            Err(_) => return,
        };
        if delivered > 1 {
            figures.qos_redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let core = &message.message;
        let origin = core.headers.as_ref().and_then(|h| h.get(headers::ORIGIN));
        let own = origin.is_some_and(|origin| origin.as_str() == self.node);
        let key = (sequence, published_ns);
        // Noted before it is handed over: another consumer's copy taken meanwhile is then
        // a duplicate, not a second delivery.
        let first = !own && self.note_delivered(key) && self.first_of_its_identity(core);
        if !own && !first {
            figures.qos_duplicates.fetch_add(1, Ordering::Relaxed);
            if lock(&self.undelivered).leaves(key, delivered) {
                return;
            }
        }
        if first {
            match self.publish_of(core) {
                Some(publish) => {
                    lock(&self.undelivered).taken(key);
                    while self.link.qos_in_full() {
                        tokio::time::sleep(ROOM_WAIT).await;
                    }
                    let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
                    lock(&self.undelivered).handed(ticket, key, message);
                    self.link.deliver_qos(Arc::new(publish), ticket);
                    return;
                }
                None => {
                    figures.received_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Lost, it only means a redelivery, which is skipped as a duplicate.
        let _ = message.ack().await;
    }

    /// Acknowledges to JetStream the messages the shards delivered, for as long as the node
    /// runs. One not acknowledged (the node stopped or died first) comes again from its
    /// consumer when the node is back.
    pub(super) async fn acknowledge_delivered(self: Arc<Self>) {
        loop {
            self.link.qos_delivered_waiting.notified().await;
            while let Some(ticket) = self.link.next_qos_delivered() {
                let message = lock(&self.undelivered).delivered(ticket);
                if let Some(message) = message {
                    // Lost, it only means a redelivery, skipped as a duplicate.
                    let _ = message.ack().await;
                }
            }
        }
    }

    fn note_delivered(&self, key: StreamKey) -> bool {
        lock(&self.delivered).first(key)
    }

    /// Whether a QoS 2 publish with an origin (its identity in `Nats-Msg-Id`) is new to this
    /// node: its client's resend after its node's death may have reached it first
    /// (`crate::broker::message_ids`). Every other message is.
    fn first_of_its_identity(&self, message: &async_nats::Message) -> bool {
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::NATS_MESSAGE_ID))
            .and_then(|id| MessageId::from_header(id.as_str()));
        id.is_none_or(|id| lock(&self.link.delivered_ids).first(id))
    }

    /// The publish a stream message stands for, at its QoS; `None` when it makes no publish
    /// a client could have made (`bridge::publish_of`).
    pub(super) fn publish_of(&self, message: &async_nats::Message) -> Option<RoutedMessage> {
        let mut publish = publish_of(&self.root, &self.limits, message)?;
        let headers = message.headers.as_ref();
        publish.qos = match headers
            .and_then(|h| h.get(headers::QOS))
            .map(|v| v.as_str())
        {
            Some("2") => QoS::ExactlyOnce,
            None | Some("1") => QoS::AtLeastOnce,
            Some(_) => return None,
        };
        publish.id = headers
            .and_then(|h| h.get(headers::MESSAGE_ID))
            .and_then(|id| MessageId::from_header(id.as_str()));
        Some(publish)
    }
}

/// Counts a QoS 1/2 publish JetStream did not store, and logs it at the 1st, 2nd, 4th, 8th,
/// ... failure: while JetStream is gone every one fails, and the log must not flood.
fn store_failed(failed: &AtomicU64, stream: &str, root: &str, why: &str) {
    let failed = failed.fetch_add(1, Ordering::Relaxed) + 1;
    if failed.is_power_of_two() {
        warn!(
            "cluster: JetStream did not store a QoS 1/2 publish on {root}.> in {stream:?} ({why}); {failed} so far: not acknowledged to their publishers"
        );
    }
}

/// Counts a consumer this node reads while it lives (dropped with the task that reads it).
struct Held<'a>(&'a AtomicU64);

impl<'a> Held<'a> {
    fn new(count: &'a AtomicU64) -> Held<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        Held(count)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A durable consumer's name: JetStream allows no `.`, `*`, `>` or spaces in it, so the node's
/// name is kept to letters, digits, `-` and `_` (at most [`NODE_IN_NAME_BYTES_MAX`] bytes, for
/// people reading it), and a hash of the node and the subject makes it unique. The same node
/// and subject always get the same name: a node that restarts takes up its consumers, and
/// their messages kept meanwhile, where it left them.
fn consumer_name(stream: &str, node: &str, subject: &str) -> String {
    let readable: String = node
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .take(NODE_IN_NAME_BYTES_MAX)
        .collect();
    let mut hasher = Fnv64::default();
    (stream, node, subject).hash(&mut hasher);
    format!("fanfare_{readable}_{:016x}", hasher.finish())
}

/// FNV-1a: a hash that stays the same across runs and builds, unlike the standard library's,
/// since a consumer's name must.
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_sent_again_while_the_first_waits_is_left_for_the_first_to_acknowledge() {
        let mut undelivered = Undelivered::new();
        let key = (7, 1_000);
        undelivered.taken(key);
        assert!(
            undelivered.leaves(key, 2),
            "sent again while it waits for room"
        );
        assert!(!undelivered.leaves(key, 1), "another consumer's first copy");
        assert!(!undelivered.leaves((8, 1_000), 2), "another message");
        undelivered.handed(3, key, "message");
        assert!(
            undelivered.leaves(key, 3),
            "sent again while in the in queue"
        );
        assert_eq!(undelivered.delivered(3), Some("message"));
        assert!(
            !undelivered.leaves(key, 4),
            "delivered: a copy now is acknowledged"
        );
        assert_eq!(undelivered.delivered(3), None, "once");
    }

    #[test]
    fn consumer_names_are_stable_unique_and_valid() {
        let name = consumer_name("FANFARE_QOS", "edge.1 a", "$FANFARE.FANFARE_QOS.a.>");
        assert_eq!(
            name,
            consumer_name("FANFARE_QOS", "edge.1 a", "$FANFARE.FANFARE_QOS.a.>")
        );
        assert!(name.starts_with("fanfare_edge_1_a_"), "{name}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        );
        assert_ne!(
            name,
            consumer_name("FANFARE_QOS", "edge.1 a", "$FANFARE.FANFARE_QOS.a")
        );
        assert_ne!(
            name,
            consumer_name("FANFARE_QOS", "edge_1 a", "$FANFARE.FANFARE_QOS.a.>")
        );
        let long = consumer_name("S", &"n".repeat(128), "x");
        assert!(long.len() <= "fanfare_".len() + NODE_IN_NAME_BYTES_MAX + 17);
    }
}
