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
//!   the nodes following the stream learn of the clearing from it, which a purge would not
//!   tell them. One such empty message stays per cleared topic.
//! - **Following.** Each node reads the whole stream with an ordered consumer and hands every
//!   message to every shard, which applies it to its replica without delivering it
//!   (`link.rs`): at start-up that loads the retained messages, and after that it keeps the
//!   replicas in step with the other nodes' retained publishes, whether this node has
//!   subscribers for them or not. A new subscription is then served from the shard's own
//!   replica: a reconnect storm reads nothing from JetStream. After any error the node reads
//!   the stream again from its start; applying a topic's last value twice changes nothing.
//! - **Order.** A node applies its own retained publish at once, and again when it comes back
//!   through the stream; every node applies the stream's messages in the stream's order, so
//!   the replicas all end at the stream's last value of each topic, even when two nodes set
//!   one topic at the same moment.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, HeaderMap};
use futures::StreamExt;
use log::{info, warn};
use tokio::sync::Semaphore;

use super::headers::from_headers;
use super::link::ClusterLink;
use super::subject::{subject_to_topic, topic_to_subject};
use crate::broker::RoutedMessage;
use crate::config::{ClusterSettings, Limits};
use crate::protocol::mqtt::QoS;
use crate::protocol::mqtt::topic::validate_topic_name;

/// The first token of the retained subjects: `$`, so that no live subscription (under
/// `subject_prefix`, or at the root where `$` subjects are each node's own) overlaps them.
const SUBJECT_ROOT: &str = "$FANFARE";

/// Retained publishes written to the stream whose acknowledgement has not come yet; past it
/// the bridge waits for one before it sends more. Worst case: 1 024 waiting tasks.
const STORE_ACKS_INFLIGHT_MAX: usize = 1024;

/// How long the bridge waits before it reads the stream again after an error, doubled after
/// each error up to [`FOLLOW_RETRY_MAX`].
const FOLLOW_RETRY_MIN: Duration = Duration::from_secs(1);
const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(60);

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
    stream: String,
    root: String,
    replicas: Option<u8>,
    limits: Limits,
    link: Arc<ClusterLink>,
    acks: Arc<Semaphore>,
}

impl RetainedStream {
    pub(super) fn new(
        client: Client,
        settings: &ClusterSettings,
        limits: &Limits,
        link: Arc<ClusterLink>,
    ) -> RetainedStream {
        RetainedStream {
            jetstream: jetstream::new(client),
            stream: settings.retained_stream.clone(),
            root: subject_root(&settings.retained_stream),
            replicas: settings.retained_replicas,
            limits: limits.clone(),
            link,
            acks: Arc::new(Semaphore::new(STORE_ACKS_INFLIGHT_MAX)),
        }
    }

    /// Writes a retained publish of this node to the stream, with the headers it went to NATS
    /// with; the acknowledgement is awaited on a task of its own and counted. Past
    /// [`STORE_ACKS_INFLIGHT_MAX`] unanswered writes this waits, and the bridge with it: the
    /// shards' out queue then fills, and publishes past it are dropped and counted, as when
    /// NATS is slow.
    pub(super) async fn store(&self, message: &RoutedMessage, headers: HeaderMap) {
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
            .publish_with_headers(subject, headers, payload)
            .await
        {
            Ok(acked) => acked,
            Err(e) => {
                store_failed(&self.link, &e.to_string());
                return;
            }
        };
        let link = Arc::clone(&self.link);
        tokio::spawn(async move {
            match acked.await {
                Ok(_) => {
                    link.figures.retained_stored.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => store_failed(&link, &e.to_string()),
            }
            drop(permit);
        });
    }

    /// Follows the stream for as long as the node runs (see the module documentation).
    pub(super) async fn follow(self: Arc<Self>, client: Client) {
        let mut retry = FOLLOW_RETRY_MIN;
        loop {
            match self.follow_once(&client).await {
                // The consumer's messages do not end while the client lives.
                Ok(()) => retry = FOLLOW_RETRY_MIN,
                Err(e) => warn!(
                    "cluster: cannot follow the JetStream stream {:?} of retained messages: {e}; trying again in {} s",
                    self.stream,
                    retry.as_secs()
                ),
            }
            self.link
                .figures
                .retained_caught_up
                .store(false, Ordering::Relaxed);
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(FOLLOW_RETRY_MAX);
        }
    }

    /// Creates the stream if it is missing, and reads it from its start until an error.
    async fn follow_once(&self, client: &Client) -> Result<(), async_nats::Error> {
        // The client is handed out before its first connection is made (it retries that in
        // the background), and until then `server_info()` is empty: a stream created then
        // would get one replica on any NATS cluster. A flush is answered only once a server
        // is connected, and so after its INFO, which names the cluster's servers, arrived.
        client.flush().await?;
        let subjects = format!("{}.>", self.root);
        let config = stream::Config {
            name: self.stream.clone(),
            subjects: vec![subjects.clone()],
            max_messages_per_subject: 1,
            num_replicas: self.replicas(client),
            storage: stream::StorageType::File,
            ..stream::Config::default()
        };
        let stream = self.jetstream.get_or_create_stream(config).await?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                filter_subject: subjects,
                ..consumer::pull::OrderedConfig::default()
            })
            .await?;
        let mut loaded = 0u64;
        if consumer.cached_info().num_pending == 0 {
            self.caught_up(loaded);
        }
        let mut messages = consumer.messages().await?;
        let mut shards = Vec::with_capacity(self.link.shard_count());
        while let Some(message) = messages.next().await {
            let message = message?;
            let info = message.info().map_err(|e| e.to_string())?;
            let pending = info.pending;
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
                    let retained = Arc::new(retained);
                    shards.clear();
                    shards.extend(0..self.link.shard_count());
                    loop {
                        self.link.offer_retained(&retained, &mut shards);
                        if shards.is_empty() {
                            break;
                        }
                        tokio::time::sleep(ROOM_WAIT).await;
                    }
                    loaded += 1;
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
            if pending == 0 && !self.link.figures.retained_caught_up.load(Ordering::Relaxed) {
                self.caught_up(loaded);
            }
        }
        Ok(())
    }

    fn caught_up(&self, loaded: u64) {
        info!(
            "cluster: {loaded} retained messages read from the JetStream stream {:?}; following it",
            self.stream
        );
        self.link
            .figures
            .retained_caught_up
            .store(true, Ordering::Relaxed);
    }

    /// `retained_replicas`, or 3 when the NATS cluster has 3 servers or more, else 1. The
    /// servers are those the connected server names for the cluster's clients, and itself.
    fn replicas(&self, client: &Client) -> usize {
        if let Some(replicas) = self.replicas {
            return usize::from(replicas);
        }
        let info = client.server_info();
        let own = format!("{}:{}", info.host, info.port);
        replicas_for(&info.connect_urls, &own)
    }
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
