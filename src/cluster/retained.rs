//! Retained messages across nodes: a JetStream stream that keeps the last message of every
//! retained topic, written by the node a retained publish entered on and followed by every
//! node into its shards' replicas (`docs/scale-out.md`).
//!
//! - **Where.** The stream `retained_stream` holds the subjects `$FANFARE.<retained_stream>.>`,
//!   a topic's subject below that root as `subject.rs` maps it. The root lies outside the
//!   live subjects (under `subject_prefix`, never `$`), so storing a retained message does not
//!   deliver it a second time to live subscribers, and nodes never take `$` topics from NATS.
//! - **Last value.** `max_msgs_per_subject = 1`: a new value replaces the old. A retained
//!   message with an empty payload is stored as well, replacing the value with an empty one:
//!   the nodes following the stream learn of the clearing from it. [`PURGE_DELAY`] later the
//!   node that wrote it purges it (up to its sequence, so a newer value stays), and a cleared
//!   topic leaves nothing in the stream.
//! - **Bounded.** The stream is created with `max_bytes = retained_stream_bytes_max` and
//!   `discard = new`: JetStream refuses a write past it, which is counted as a store failure.
//!   A refused clearing is written again after the topic's value was purged, so clearing
//!   always frees room. (nats-server 2.9 checks only payload and headers against the room
//!   left: a small write within a message's overhead of the bound is taken, and the oldest
//!   values dropped to fit; `docs/scale-out.md`.)
//! - **Following.** Each node reads the whole stream with a consumer of its own and hands
//!   every message to every shard, which applies it to its replica without delivering it
//!   (`link.rs`): at start-up that loads the retained messages, and after that it keeps the
//!   replicas in step with the other nodes' retained publishes, whether this node has
//!   subscribers for them or not. A new subscription is then served from the shard's own
//!   replica: a reconnect storm reads nothing from JetStream. The server sends a heartbeat
//!   every [`FOLLOW_HEARTBEAT`] while it has nothing to send; two missed (the server holding
//!   the consumer is gone) or a message missing from the consumer's sequence count as an
//!   error. After any error the node reads the stream again from its start; applying a
//!   topic's last value twice changes nothing, and once it has read it all it clears the
//!   topics its replicas hold from the stream that the stream no longer has (purged while
//!   this node was not reading).
//! - **Order.** A node applies its own retained publish at once, and again when it comes back
//!   through the stream; every node applies the stream's messages in the stream's order, so
//!   the replicas all end at the stream's last value of each topic, even when two nodes set
//!   one topic at the same moment.
//! - **Cut off.** A retained publish made while the node is not connected to NATS is
//!   remembered (`unsent.rs`) and written once the node is connected and reads the stream
//!   again, unless a later value of another node is in the stream by then.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_nats::connection::State;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, HeaderMap};
use futures::StreamExt;
use log::{info, warn};
use tokio::sync::Semaphore;

use super::headers::{from_headers, to_headers};
use super::link::ClusterLink;
use super::subject::{subject_to_topic, topic_to_subject};
use super::unsent::{Held, Unsent, set_at_of, stream_value_wins, with_set_at};
use crate::broker::RoutedMessage;
use crate::config::{ClusterSettings, Limits};
use crate::locks::lock;
use crate::protocol::mqtt::QoS;
use crate::protocol::mqtt::topic::validate_topic_name;

/// The first token of the retained subjects: `$`, so that no live subscription (under
/// `subject_prefix`, or at the root where `$` subjects are each node's own) overlaps them.
const SUBJECT_ROOT: &str = "$FANFARE";

/// Retained publishes written to the stream whose acknowledgement has not come yet; past it
/// the bridge waits for one before it sends more. Worst case: 1 024 waiting tasks.
const STORE_ACKS_INFLIGHT_MAX: usize = 1024;

/// How long the bridge waits before it reads the stream again after an error: the least for
/// the first [`FOLLOW_QUICK_RETRIES`] errors in a row, then doubled after each up to
/// [`FOLLOW_RETRY_MAX`], and back to the least once the stream was read.
const FOLLOW_RETRY_MIN: Duration = Duration::from_millis(500);
const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(60);

/// Errors in a row retried after [`FOLLOW_RETRY_MIN`]. After a NATS server of the cluster
/// died, JetStream still places about one new consumer in three on it for a minute or so
/// (nats-server 2.9), and creating that one times out: a few quick tries get a consumer on
/// a live server. Without JetStream every try fails, and the pause grows.
const FOLLOW_QUICK_RETRIES: u32 = 8;

/// How often the server holding this node's consumer says it is there while it has no
/// message to send. Two missed, and the node reads the stream again from another server: a
/// node notices a lost NATS server within seconds, at the cost of one small message per
/// heartbeat.
const FOLLOW_HEARTBEAT: Duration = Duration::from_secs(2);

/// How long the bridge waits for JetStream to create the stream or a consumer, which it does
/// in milliseconds when it has a leader; shorter than the client's 10 s, so that a request
/// lost with a NATS server (or one JetStream cannot place yet) is sent again soon.
const SETUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long JetStream keeps a consumer nobody asks for messages: the consumers of nodes gone,
/// or left behind by a read that ended in an error.
const CONSUMER_INACTIVE: Duration = Duration::from_secs(30);

/// How long an empty message that cleared a topic stays in the stream before the node that
/// wrote it purges it: long enough for every node following the stream to have read it. A
/// node that was not reading then clears the topic when it reads the whole stream again.
const PURGE_DELAY: Duration = Duration::from_secs(10);

/// Purges waiting for [`PURGE_DELAY`]; past it a clearing is left in the stream (harmless:
/// it is an empty value), and logged.
const PURGES_WAITING_MAX: usize = 4096;

/// How often the bridge looks whether values set while cut off from NATS can be written.
const UNSENT_CHECK: Duration = Duration::from_secs(1);

/// How often a pause after an error looks whether a lost connection came back.
const RECONNECT_CHECK: Duration = Duration::from_millis(250);

/// How long the bridge waits for room when a shard's retained queue is full.
const ROOM_WAIT: Duration = Duration::from_millis(5);

/// NATS servers a stream is replicated over when the NATS cluster has that many or more.
const REPLICAS_WHEN_CLUSTERED: usize = 3;

/// The subject root of the stream `stream`.
fn subject_root(stream: &str) -> String {
    format!("{SUBJECT_ROOT}.{stream}")
}

pub(super) struct RetainedStream {
    jetstream: jetstream::Context,
    client: Client,
    node: String,
    stream: String,
    root: String,
    replicas: Option<u8>,
    stream_bytes_max: u64,
    limits: Limits,
    link: Arc<ClusterLink>,
    acks: Arc<Semaphore>,
    purges: Arc<Semaphore>,
    purges_skipped: AtomicU64,
    /// The highest stream sequence applied to the replicas.
    applied_sequence: AtomicU64,
    /// Topics the replicas hold a value of from the stream, at most `retained_messages_max`
    /// (a shard holds no more): those not in the stream any more when it is read again are
    /// cleared. Worst case, with a read's `seen`: twice `retained_messages_max` topics of
    /// `topic_bytes_max`, what two shards' replicas hold in topics.
    held: Mutex<HashSet<Box<str>>>,
    /// Values set while cut off from NATS.
    unsent: Mutex<Unsent>,
}

/// What one read of the stream has seen so far.
#[derive(Default)]
struct Reading {
    /// Topics with a value, until the read has caught up; `None` after.
    seen: Option<HashSet<Box<str>>>,
    loaded: u64,
    /// The consumer's sequence of the last message.
    delivered: u64,
}

impl RetainedStream {
    pub(super) fn new(
        client: Client,
        settings: &ClusterSettings,
        limits: &Limits,
        link: Arc<ClusterLink>,
    ) -> RetainedStream {
        RetainedStream {
            jetstream: jetstream::new(client.clone()),
            client,
            node: settings.node.clone(),
            stream: settings.retained_stream.clone(),
            root: subject_root(&settings.retained_stream),
            replicas: settings.retained_replicas,
            stream_bytes_max: settings.retained_stream_bytes_max,
            limits: limits.clone(),
            link,
            acks: Arc::new(Semaphore::new(STORE_ACKS_INFLIGHT_MAX)),
            purges: Arc::new(Semaphore::new(PURGES_WAITING_MAX)),
            purges_skipped: AtomicU64::new(0),
            applied_sequence: AtomicU64::new(0),
            held: Mutex::new(HashSet::new()),
            unsent: Mutex::new(Unsent::new(settings.retained_unsent_bytes_max)),
        }
    }

    /// Runs `change` on the values set while cut off, and updates their gauge.
    fn unsent<T>(&self, change: impl FnOnce(&mut Unsent) -> T) -> T {
        let mut unsent = lock(&self.unsent);
        let result = change(&mut unsent);
        self.link
            .figures
            .retained_unsent
            .store(unsent.len() as u64, Ordering::Relaxed);
        result
    }

    fn held(&self) -> MutexGuard<'_, HashSet<Box<str>>> {
        lock(&self.held)
    }

    /// Remembers a retained publish made while cut off from NATS, to be written once
    /// connected; counts it as not stored when `retained_unsent_bytes_max` leaves no room.
    pub(super) fn remember(&self, message: &Arc<RoutedMessage>) {
        let seen = self.applied_sequence.load(Ordering::Relaxed);
        let remembered =
            self.unsent(|unsent| unsent.remember(Arc::clone(message), SystemTime::now(), seen));
        if !remembered {
            store_failed(
                &self.link,
                "set while cut off from NATS, past retained_unsent_bytes_max",
            );
        }
    }

    /// Writes a retained publish of this node to the stream, with the headers it went to NATS
    /// with; the acknowledgement is awaited on a task of its own and counted, and a clearing
    /// is purged [`PURGE_DELAY`] after. Past [`STORE_ACKS_INFLIGHT_MAX`] unanswered writes
    /// this waits, and the bridge with it: the shards' out queue then fills, and publishes
    /// past it are dropped and counted, as when NATS is slow.
    pub(super) async fn store(self: &Arc<Self>, message: &RoutedMessage, headers: HeaderMap) {
        // A value set while cut off is older than this one.
        self.unsent(|unsent| unsent.forget(&message.topic));
        let Ok(subject) = topic_to_subject(&self.root, &message.topic) else {
            store_failed(&self.link, "its topic has no NATS subject");
            return;
        };
        let Ok(permit) = Arc::clone(&self.acks).acquire_owned().await else {
            return;
        };
        let payload = bytes::Bytes::copy_from_slice(&message.payload);
        let acked = match self
            .jetstream
            .publish_with_headers(subject.clone(), headers.clone(), payload)
            .await
        {
            Ok(acked) => acked,
            Err(e) => {
                store_failed(&self.link, &e.to_string());
                return;
            }
        };
        let this = Arc::clone(self);
        let clearing = message.payload.is_empty();
        tokio::spawn(async move {
            let mut result = acked
                .await
                .map(|ack| ack.sequence)
                .map_err(async_nats::Error::from);
            if clearing && result.is_err() {
                // Refused on a full stream, most likely: a clearing must get through, and
                // purging the value it clears makes room for it.
                result = this.clear_after_purge(&subject, headers).await;
            }
            match result {
                Ok(sequence) => {
                    this.link
                        .figures
                        .retained_stored
                        .fetch_add(1, Ordering::Relaxed);
                    if clearing {
                        this.purge_later(subject, sequence);
                    }
                }
                Err(e) => store_failed(&this.link, &e.to_string()),
            }
            drop(permit);
        });
    }

    /// Purges `subject`, then writes its clearing; the clearing's stream sequence.
    async fn clear_after_purge(
        &self,
        subject: &str,
        headers: HeaderMap,
    ) -> Result<u64, async_nats::Error> {
        let stream = self.jetstream.get_stream(&self.stream).await?;
        stream.purge().filter(subject).await?;
        let acked = self
            .jetstream
            .publish_with_headers(subject.to_owned(), headers, bytes::Bytes::new())
            .await?;
        Ok(acked.await?.sequence)
    }

    /// Purges `subject` up to its clearing at `sequence`, [`PURGE_DELAY`] from now; a value
    /// set meanwhile has a higher sequence and stays.
    fn purge_later(self: &Arc<Self>, subject: String, sequence: u64) {
        let Ok(permit) = Arc::clone(&self.purges).try_acquire_owned() else {
            let skipped = self.purges_skipped.fetch_add(1, Ordering::Relaxed) + 1;
            if skipped.is_power_of_two() {
                warn!(
                    "cluster: {PURGES_WAITING_MAX} purges of cleared retained topics waiting; {skipped} clearings left in the stream so far"
                );
            }
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(PURGE_DELAY).await;
            let purged = match this.jetstream.get_stream(&this.stream).await {
                Ok(stream) => stream
                    .purge()
                    .filter(subject.as_str())
                    .sequence(sequence + 1)
                    .await
                    .map(drop)
                    .map_err(async_nats::Error::from),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = purged {
                warn!("cluster: cleared retained topic {subject:?} not purged: {e}");
            }
            drop(permit);
        });
    }

    /// Writes the values set while cut off from NATS once the node is connected and reads
    /// the stream, for as long as the node runs.
    pub(super) async fn send_unsent(self: Arc<Self>) {
        let mut check = tokio::time::interval(UNSENT_CHECK);
        loop {
            check.tick().await;
            let ready = self.client.connection_state() == State::Connected
                && self.link.figures.retained_caught_up.load(Ordering::Relaxed);
            if !ready || self.unsent(|unsent| unsent.is_empty()) {
                continue;
            }
            let stream = match self.jetstream.get_stream(&self.stream).await {
                Ok(stream) => stream,
                Err(e) => {
                    warn!("cluster: retained values set while cut off from NATS wait: {e}");
                    continue;
                }
            };
            let (mut written, mut newer) = (0u64, 0u64);
            while let Some(held) = self.unsent(|unsent| unsent.any()) {
                match self.send_one(&stream, held).await {
                    Ok(true) => written += 1,
                    Ok(false) => newer += 1,
                    Err(e) => {
                        warn!("cluster: retained values set while cut off from NATS wait: {e}");
                        break;
                    }
                }
            }
            info!(
                "cluster: {written} retained values set while cut off from NATS written to the stream, {newer} left for newer values of other nodes"
            );
        }
    }

    /// Writes one value set while cut off, unless the stream has a later one (`unsent.rs`);
    /// whether it was written.
    async fn send_one(
        self: &Arc<Self>,
        stream: &stream::Stream,
        held: Held,
    ) -> Result<bool, async_nats::Error> {
        let topic = &held.message.topic;
        let subject = topic_to_subject(&self.root, topic).map_err(|e| format!("{e:?}"))?;
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(last) => {
                let stored_at = system_time(last.time.unix_timestamp_nanos());
                let set_at = set_at_of(&last.headers, stored_at);
                if stream_value_wins(last.sequence, set_at, &held) {
                    self.unsent(|unsent| unsent.take(topic, held.generation));
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(e.into()),
        }
        if !self.unsent(|unsent| unsent.take(topic, held.generation)) {
            // Replaced or sent meanwhile.
            return Ok(false);
        }
        let now = Instant::now();
        // A value that expired while waiting clears its topic: the one it replaced is older.
        let message = if held.message.expired(now) {
            RoutedMessage::new(topic, &[], QoS::AtMostOnce, true)
        } else {
            (*held.message).clone()
        };
        let headers = with_set_at(to_headers(&message, &self.node, now), held.set_at);
        self.store(&message, headers).await;
        Ok(true)
    }

    /// Follows the stream for as long as the node runs (see the module documentation).
    pub(super) async fn follow(self: Arc<Self>) {
        let mut retry = FOLLOW_RETRY_MIN;
        let mut errors = 0u32;
        loop {
            let result = self.follow_once().await;
            let caught_up = &self.link.figures.retained_caught_up;
            if caught_up.swap(false, Ordering::Relaxed) {
                (retry, errors) = (FOLLOW_RETRY_MIN, 0);
            }
            if let Err(e) = result {
                warn!(
                    "cluster: cannot follow the JetStream stream {:?} of retained messages: {e}; reading it again in {} ms",
                    self.stream,
                    retry.as_millis()
                );
            }
            if self.pause(retry).await {
                // NATS is back after an outage: read the stream now, and quickly again.
                (retry, errors) = (FOLLOW_RETRY_MIN, 0);
                continue;
            }
            errors = errors.saturating_add(1);
            if errors >= FOLLOW_QUICK_RETRIES {
                retry = (retry * 2).min(FOLLOW_RETRY_MAX);
            }
        }
    }

    /// Waits `retry`, or until the client connects again when it is not connected now;
    /// whether it did. A pause grown long during an outage so ends with the outage.
    async fn pause(&self, retry: Duration) -> bool {
        let connected = || self.client.connection_state() == State::Connected;
        if connected() {
            tokio::time::sleep(retry).await;
            return false;
        }
        let deadline = tokio::time::Instant::now() + retry;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(RECONNECT_CHECK.min(retry)).await;
            if connected() {
                return true;
            }
        }
        false
    }

    /// Creates the stream if it is missing, and reads it from its start until an error.
    async fn follow_once(&self) -> Result<(), async_nats::Error> {
        // The client is handed out before its first connection is made (it retries that in
        // the background), and until then `server_info()` is empty: a stream created then
        // would get one replica on any NATS cluster. A flush is answered only once a server
        // is connected, and so after its INFO, which names the cluster's servers, arrived.
        self.client.flush().await?;
        let subjects = format!("{}.>", self.root);
        let config = stream::Config {
            name: self.stream.clone(),
            subjects: vec![subjects.clone()],
            max_messages_per_subject: 1,
            max_bytes: i64::try_from(self.stream_bytes_max).unwrap_or(i64::MAX),
            discard: stream::DiscardPolicy::New,
            num_replicas: self.replicas(),
            storage: stream::StorageType::File,
            ..stream::Config::default()
        };
        let stream =
            tokio::time::timeout(SETUP_TIMEOUT, self.jetstream.get_or_create_stream(config))
                .await??;
        // What async-nats's ordered consumer asks for, which notices a lost server only
        // after two heartbeats of 15 s.
        let config = consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            filter_subject: subjects,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: CONSUMER_INACTIVE,
            num_replicas: 1,
            memory_storage: true,
            ..consumer::pull::Config::default()
        };
        let consumer =
            tokio::time::timeout(SETUP_TIMEOUT, stream.create_consumer(config)).await??;
        let mut reading = Reading {
            seen: Some(HashSet::new()),
            ..Reading::default()
        };
        if consumer.cached_info().num_pending == 0 {
            self.caught_up(&mut reading).await;
        }
        let mut messages = consumer
            .stream()
            .heartbeat(FOLLOW_HEARTBEAT)
            .messages()
            .await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            let info = message.info()?;
            if info.consumer_sequence != reading.delivered + 1 {
                return Err("a message of the stream was lost on its way".into());
            }
            reading.delivered = info.consumer_sequence;
            let pending = info.pending;
            let stream_sequence = info.stream_sequence;
            let age = age_of(info.published.unix_timestamp_nanos());
            let core = &message.message;
            let retained = retained_of(
                &self.root,
                &self.limits,
                core.subject.as_str(),
                &core.payload,
                core.headers.as_ref(),
                age,
            );
            match retained {
                Some(retained) => {
                    self.note(&retained, &mut reading);
                    self.offer(Arc::new(retained)).await;
                    reading.loaded += 1;
                    self.link
                        .figures
                        .retained_loaded
                        .fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.link
                        .figures
                        .received_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            self.applied_sequence
                .fetch_max(stream_sequence, Ordering::Relaxed);
            if pending == 0 && reading.seen.is_some() {
                self.caught_up(&mut reading).await;
            }
        }
        Ok(())
    }

    /// Notes which topics the replicas hold from the stream, within `retained_messages_max`.
    fn note(&self, retained: &RoutedMessage, reading: &mut Reading) {
        let max = self.limits.retained_messages_max as usize;
        let topic = &retained.topic;
        let mut held = self.held();
        if retained.payload.is_empty() {
            held.remove(topic);
            return;
        }
        if held.len() < max {
            held.insert(topic.clone());
        }
        if let Some(seen) = &mut reading.seen
            && seen.len() < max
        {
            seen.insert(topic.clone());
        }
    }

    /// Hands `retained` to every shard, waiting for room where a queue is full.
    async fn offer(&self, retained: Arc<RoutedMessage>) {
        let mut shards: Vec<usize> = (0..self.link.shard_count()).collect();
        loop {
            self.link.offer_retained(&retained, &mut shards);
            if shards.is_empty() {
                return;
            }
            tokio::time::sleep(ROOM_WAIT).await;
        }
    }

    /// The read has reached the stream's end: clears the topics the replicas hold from an
    /// earlier read that the stream no longer has (purged meanwhile), unless a value set
    /// while cut off waits for them.
    async fn caught_up(&self, reading: &mut Reading) {
        let Some(seen) = reading.seen.take() else {
            return;
        };
        let gone = self.unsent(|unsent| sweep(&mut self.held(), &seen, unsent));
        for topic in &gone {
            let clearing = RoutedMessage::new(topic, &[], QoS::AtMostOnce, true);
            self.offer(Arc::new(clearing)).await;
        }
        info!(
            "cluster: {} retained messages read from the JetStream stream {:?}, {} topics cleared since; following it",
            reading.loaded,
            self.stream,
            gone.len()
        );
        self.link
            .figures
            .retained_caught_up
            .store(true, Ordering::Relaxed);
    }

    /// `retained_replicas`, or 3 when the NATS cluster has 3 servers or more, else 1. The
    /// servers are those the connected server names for the cluster's clients, and itself.
    fn replicas(&self) -> usize {
        if let Some(replicas) = self.replicas {
            return usize::from(replicas);
        }
        let info = self.client.server_info();
        let own = format!("{}:{}", info.host, info.port);
        replicas_for(&info.connect_urls, &own)
    }
}

/// The topics `held` from an earlier read that the read that `seen` its topics did not find,
/// taken out of `held`; those with a value waiting in `unsent` stay.
fn sweep(held: &mut HashSet<Box<str>>, seen: &HashSet<Box<str>>, unsent: &Unsent) -> Vec<Box<str>> {
    let kept = |topic: &str| seen.contains(topic) || unsent.contains(topic);
    let gone = held.iter().filter(|topic| !kept(topic)).cloned().collect();
    held.retain(|topic| kept(topic));
    gone
}

/// Counts a retained publish JetStream did not store, and logs it at the 1st, 2nd, 4th, 8th,
/// ... failure: without JetStream every retained publish fails, and the log must not flood.
fn store_failed(link: &ClusterLink, why: &str) {
    let failed = link
        .figures
        .retained_store_failed
        .fetch_add(1, Ordering::Relaxed)
        + 1;
    if failed.is_power_of_two() {
        warn!(
            "cluster: JetStream did not store a retained message ({why}); {failed} so far: other nodes get such values only live"
        );
    }
}

/// Replicas for a NATS cluster whose servers for clients are `connect_urls` and `own` (a
/// server may or may not name itself among them).
pub(super) fn replicas_for(connect_urls: &[String], own: &str) -> usize {
    let mut servers: Vec<&str> = connect_urls.iter().map(String::as_str).collect();
    servers.push(own);
    servers.sort_unstable();
    servers.dedup();
    if servers.len() >= REPLICAS_WHEN_CLUSTERED {
        REPLICAS_WHEN_CLUSTERED
    } else {
        1
    }
}

/// The retained message a stream message on `subject` stands for: its value, or an empty
/// payload that clears the topic (a clearing, or a value that has expired). `None` when its
/// subject or headers make no publish a client could have made under `limits`.
fn retained_of(
    root: &str,
    limits: &Limits,
    subject: &str,
    payload: &[u8],
    headers: Option<&HeaderMap>,
    age: Duration,
) -> Option<RoutedMessage> {
    let topic = subject_to_topic(root, subject)?;
    if topic.starts_with('$') || topic.contains('\0') {
        return None;
    }
    let decode = limits.decode_limits();
    validate_topic_name(&topic, &decode).ok()?;
    let mut retained = match from_headers(&topic, payload, headers, &decode, Instant::now(), age) {
        Ok(Some(retained)) => retained,
        Ok(None) => RoutedMessage::new(&topic, &[], QoS::AtMostOnce, true),
        Err(e) => {
            warn!("cluster: retained message of {topic:?} in JetStream not loaded: {e:?}");
            return None;
        }
    };
    let packet_bytes = retained.payload.len() + retained.properties.len() + topic.len() + 16;
    if packet_bytes > limits.packet_bytes_max as usize {
        return None;
    }
    retained.retain = true;
    Some(retained)
}

/// The moment `ns` nanoseconds after the Unix epoch (the epoch itself for one before it).
fn system_time(ns: i128) -> SystemTime {
    let ns = u64::try_from(ns.max(0)).unwrap_or(u64::MAX);
    SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
}

/// How long ago a message stored at `published_ns` (nanoseconds since the Unix epoch, by the
/// NATS server's clock) was stored; zero when that clock is ahead of this one.
fn age_of(published_ns: i128) -> Duration {
    let now_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let age_ns = i128::try_from(now_ns).unwrap_or(i128::MAX) - published_ns;
    Duration::from_nanos(u64::try_from(age_ns.max(0)).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::headers::{MESSAGE_EXPIRY, RETAIN};

    const ROOT: &str = "$FANFARE.FANFARE_RETAINED";

    fn read(
        subject: &str,
        payload: &[u8],
        headers: &HeaderMap,
        age_s: u64,
    ) -> Option<RoutedMessage> {
        let age = Duration::from_secs(age_s);
        retained_of(
            ROOT,
            &Limits::default(),
            subject,
            payload,
            Some(headers),
            age,
        )
    }

    #[test]
    fn stream_messages_are_retained_values_or_clearings() {
        let mut headers = HeaderMap::new();
        headers.insert(RETAIN, "1");
        let value = read(&format!("{ROOT}.score.m1"), b"2-1", &headers, 0).expect("a value");
        assert_eq!(
            (&*value.topic, &*value.payload, value.retain),
            ("score/m1", &b"2-1"[..], true)
        );
        let cleared = read(&format!("{ROOT}.score.m1"), b"", &headers, 0).expect("a clearing");
        assert!(cleared.retain && cleared.payload.is_empty());

        headers.insert(MESSAGE_EXPIRY, "60");
        let fresh = read(&format!("{ROOT}.a"), b"1", &headers, 20).expect("40 s left");
        assert_eq!(
            fresh.remaining_expiry_s(Instant::now()).map(|s| s <= 40),
            Some(true)
        );
        let expired = read(&format!("{ROOT}.a"), b"1", &headers, 60).expect("a clearing");
        assert!(
            expired.payload.is_empty(),
            "an expired value clears the topic"
        );
    }

    #[test]
    fn refuses_what_no_client_could_have_retained() {
        let headers = HeaderMap::new();
        assert!(read(&format!("{ROOT}.$SYS.x"), b"1", &headers, 0).is_none());
        assert!(
            read("$FANFARE.OTHER.a", b"1", &headers, 0).is_none(),
            "another stream"
        );
        let big = vec![0; Limits::default().packet_bytes_max as usize];
        assert!(read(&format!("{ROOT}.a"), &big, &headers, 0).is_none());
        let mut bad = HeaderMap::new();
        bad.insert(RETAIN, "maybe");
        assert!(read(&format!("{ROOT}.a"), b"1", &bad, 0).is_none());
    }

    #[test]
    fn a_read_clears_the_topics_the_stream_no_longer_has() {
        let set = |topics: &[&str]| topics.iter().map(|t| Box::from(*t)).collect::<HashSet<_>>();
        let mut held = set(&["kept", "purged", "set while cut off"]);
        let mut unsent = Unsent::new(1 << 20);
        let message = RoutedMessage::new("set while cut off", b"1", QoS::AtMostOnce, true);
        unsent.remember(Arc::new(message), SystemTime::now(), 0);
        let gone = sweep(&mut held, &set(&["kept", "new"]), &unsent);
        assert_eq!(gone, vec![Box::from("purged")]);
        assert_eq!(held, set(&["kept", "set while cut off"]));
    }

    #[test]
    fn three_replicas_from_three_servers() {
        let urls = |n: usize| {
            (1..=n)
                .map(|i| format!("10.0.0.{i}:4222"))
                .collect::<Vec<_>>()
        };
        assert_eq!(replicas_for(&[], "10.0.0.1:4222"), 1);
        assert_eq!(
            replicas_for(&urls(2), "10.0.0.1:4222"),
            1,
            "two, itself among them"
        );
        assert_eq!(
            replicas_for(&urls(2), "10.0.0.3:4222"),
            3,
            "two others and itself"
        );
        assert_eq!(replicas_for(&urls(5), "10.0.0.1:4222"), 3);
    }

    #[test]
    fn age_counts_from_the_servers_clock_and_never_goes_negative() {
        let now_ns = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as i128;
        assert!(age_of(now_ns - 5_000_000_000) >= Duration::from_secs(5));
        assert_eq!(age_of(now_ns + 60_000_000_000), Duration::ZERO);
    }
}
