//! Persistent sessions across nodes (`docs/scale-out.md`): a JetStream key-value bucket
//! that holds the image of every persistent session of the cluster, and the requests that
//! move a session to the node its client connects to.
//!
//! - **The bucket.** `sessions_bucket` (default `FANFARE_SESSIONS`) holds one key per client
//!   identifier ([`key_of`]), one value per key (history 1): the name of the node that holds
//!   the session, then the session as the store's SESSION record encodes it
//!   (`crate::store::encode_session_image`), its times on the wall clock. Each node writes the
//!   images of the sessions it holds, conflated per session per `session_sync_interval_ms`
//!   (the shards take them as they take the store's flushes, `broker/session_writes.rs`), and
//!   deletes the key when a session ends. A session begun by a CONNECT that found none in
//!   the cluster has its key claimed (the node's name and no record) before its CONNACK: a
//!   client that moves on before the first image was written is still sent to this node. The writes leave the bridge in the order the shards
//!   made them, and their acknowledgements are awaited apart, a bounded number at a time.
//! - **Moving.** A CONNECT that resumes a session its node does not hold waits for it
//!   (`session_fetch_timeout_ms` at most). The node reads the key: no key, no session. A key
//!   that names another node is a request to that node, on [`take_subject`]: it ends its copy
//!   (its connection taken over) and answers with its newest image, written since the last
//!   sync or not. A node that handed the session on a moment ago, before the new holder
//!   wrote it, says to which node (`HandedOver`), and that node is asked instead. No node
//!   listening (it died), no answer within a third of the timeout (its machine died with
//!   the connection open), or a node that holds nothing (it restarted without its sessions)
//!   leaves the bucket's image, read again, as the session. A key that
//!   names this node is an image an earlier run of it left.
//! - **Failure.** NATS gone, JetStream missing or an answer later than the timeout: the
//!   CONNECT gets a new session, and `fanfare_cluster_session_fetches_failed_total` counts it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use async_nats::client::RequestErrorKind;
use async_nats::connection::State;
use async_nats::jetstream::{self, kv};
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;
use log::{info, warn};
use tokio::sync::{Mutex, Notify, Semaphore};

use super::bucket_marks::Writing;
use super::link::ClusterLink;
use super::qos::QosStream;
use super::replay::{Reader, Replays};
use crate::broker::{Broker, SessionImage};
use crate::config::{ClusterSettings, Limits};
use crate::conn::ConnId;
use crate::store::{decode_session_image, encode_session_image, unix_ms};

/// Session writes whose acknowledgement has not come yet; past it the writer waits for one.
/// Worst case: 1 024 waiting tasks.
const STORE_ACKS_INFLIGHT_MAX: usize = 1024;

/// The header that marks a key-value delete (JetStream's key-value protocol).
const KV_OPERATION: &str = "KV-Operation";

/// The header of a take that names the node asking.
const ASKER: &str = "Fanfare-Node";

/// The header of an answer to a take: the session went to this node a moment ago, which
/// may not have written it to the bucket yet.
const MOVED_TO: &str = "Fanfare-Moved-To";

/// How a CONNECT's search for its session ended.
enum Fetch {
    /// The session (`None`: the cluster holds none).
    Found(Option<Box<SessionImage>>),
    /// No answer to be had (NATS gone, JetStream missing): a new session.
    Failed,
    /// Not within `session_fetch_timeout_ms`: refused, the client comes back.
    TooSlow,
}

/// What a take brought back from the node the bucket names.
enum Taken {
    /// The session, as it ended there (`None`: an answer with no session in it).
    Image(Option<SessionImage>),
    /// It handed the session to this node a moment ago.
    MovedTo(String),
    /// Nothing: it holds none, or it is gone.
    Nothing,
}

/// The sessions this node handed over lately, and to which node: a take for one of them
/// that reaches this node before the new holder wrote it to the bucket (two CONNECTs at
/// once, or a holder that writes seldom) is sent on there rather than to the bucket's older
/// image. At most `takeover_ids_remembered_max`, each for `takeover_remembered_s`.
struct HandedOver {
    to: HashMap<Box<str>, (Box<str>, Instant)>,
    max: usize,
    for_how_long: Duration,
}

impl HandedOver {
    fn note(&mut self, client_id: &str, node: &str, now: Instant) {
        if self.to.len() >= self.max {
            let for_how_long = self.for_how_long;
            self.to
                .retain(|_, (_, when)| now.duration_since(*when) < for_how_long);
            if self.to.len() >= self.max {
                // Full of recent ones: the oldest goes.
                if let Some(oldest) = self
                    .to
                    .iter()
                    .min_by_key(|(_, (_, when))| *when)
                    .map(|(client_id, _)| client_id.clone())
                {
                    self.to.remove(&oldest);
                }
            }
        }
        self.to.insert(client_id.into(), (node.into(), now));
    }

    fn where_to(&self, client_id: &str, now: Instant) -> Option<&str> {
        self.to
            .get(client_id)
            .filter(|(_, when)| now.duration_since(*when) < self.for_how_long)
            .map(|(node, _)| &**node)
    }
}

/// A shard's flush whose session images the bucket is to hold before what the flush gated
/// is sent (`shard/durable_sends.rs`): in cluster mode a session lives on in the bucket when
/// its node dies, so under `sync` a PUBLISH or PUBREL sent before the bucket holds what
/// allowed it can come again from the node the session moves to, a second delivery of a
/// QoS 2 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketMark {
    pub shard: usize,
    pub mark: u64,
}

/// What the shards hand the bridge about their persistent sessions, in the order it is to
/// reach NATS.
#[derive(Debug)]
pub enum SessionOut {
    /// The image of a session this node holds, for the bucket; under `durability = "sync"`,
    /// with the mark of the shard's flush that took it: what that shard sends the session's
    /// client after the flush waits until the bucket holds every image of the flush
    /// ([`BucketMark`]).
    Put(Box<SessionImage>, Option<BucketMark>),
    /// A session that ended here: its key goes.
    Delete(Box<str>),
    /// The answer to another node's take (`asker`, when it said its name): the image of
    /// the session this node ended for it, or `None` when it held none.
    Handed {
        reply: Box<str>,
        client_id: Box<str>,
        asker: Option<Box<str>>,
        image: Option<Box<SessionImage>>,
    },
}

/// A CONNECT waiting for its session from the cluster.
#[derive(Debug)]
pub struct SessionFetch {
    pub shard: usize,
    pub conn: ConnId,
    pub client_id: Box<str>,
}

/// The session a CONNECT waited for: found, or `None` for a new one; or, when the cluster
/// was too slow to say, `unavailable`: the CONNECT is refused (Server unavailable) so that
/// its client comes back for its session rather than start again without it.
#[derive(Debug)]
pub struct SessionFetched {
    pub conn: ConnId,
    pub client_id: Box<str>,
    pub image: Option<Box<SessionImage>>,
    pub unavailable: bool,
}

/// Another node resumes the session of `client_id`: the answer goes to `reply`. Without a
/// reply, another node holds the session already, and a copy loaded here from the data
/// directory at start-up is stale: it ends here, as a moved session does.
#[derive(Debug)]
pub struct SessionTake {
    pub client_id: Box<str>,
    pub reply: Option<Box<str>>,
    /// The node that asks, when it said its name.
    pub asker: Option<Box<str>>,
}

/// The bucket's key of a client identifier: letters, digits, `_` and `-` as they are, every
/// other byte as `=` and two hex digits (a key allows only `[-/_=.a-zA-Z0-9]`, and `.` and `/`
/// would split it into tokens).
pub fn key_of(client_id: &str) -> String {
    let mut key = String::with_capacity(client_id.len());
    for byte in client_id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            key.push(char::from(byte));
        } else {
            key.push_str(&format!("={byte:02X}"));
        }
    }
    key
}

/// The subject on which `node` answers takes of the sessions it holds.
pub fn take_subject(bucket: &str, node: &str) -> String {
    format!("$FANFARE_TAKE.{bucket}.{}", key_of(node))
}

/// A bucket value: the length of the holder's name (one byte: names are at most 128 bytes),
/// the name, the session's record.
fn value_of(node: &str, record: &[u8]) -> Vec<u8> {
    let len = u8::try_from(node.len()).expect("cluster.node is at most 128 bytes");
    let mut value = Vec::with_capacity(1 + node.len() + record.len());
    value.push(len);
    value.extend_from_slice(node.as_bytes());
    value.extend_from_slice(record);
    value
}

/// The holder's name and the record of a bucket value; `None` for a malformed one.
fn split_value(value: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = value.split_first()?;
    let (node, record) = rest.split_at_checked(usize::from(len))?;
    Some((std::str::from_utf8(node).ok()?, record))
}

/// The session a record holds, if it is one whole session of `client_id`.
fn image_of(record: &[u8], client_id: &str) -> Option<SessionImage> {
    let image = decode_session_image(record, Instant::now(), unix_ms(SystemTime::now()))?;
    (&*image.client_id == client_id).then_some(image)
}

/// The bridge's side of the sessions: the bucket, the writes, the fetches and the takes.
pub(super) struct Sessions {
    client: Client,
    jetstream: jetstream::Context,
    bucket_name: String,
    node: String,
    replicas: Option<u8>,
    bytes_max: u64,
    fetch_timeout: Duration,
    client_id_bytes_max: usize,
    link: Arc<ClusterLink>,
    /// The QoS stream read again for the sessions whose node is gone.
    replays: Replays,
    /// How long before an image's write its replay begins (`session_replay_margin_ms`).
    replay_margin: Duration,
    /// The bucket, once made or found.
    bucket: Mutex<Option<kv::Store>>,
    /// Wakes the writer: something waits in the link's session queue.
    pub(super) writes_waiting: Notify,
    /// Held while the queue is written: a stop's last writes follow those under way.
    writing: Mutex<()>,
    handed_over: std::sync::Mutex<HandedOver>,
    acks: Arc<Semaphore>,
    /// Fetches under way, at most `sessions_waiting_max`: each answer then has room in its
    /// shard's queue.
    fetching: Arc<Semaphore>,
}

impl Sessions {
    pub(super) fn new(
        client: Client,
        settings: &ClusterSettings,
        limits: &Limits,
        link: Arc<ClusterLink>,
        qos: Arc<QosStream>,
    ) -> Sessions {
        let jetstream = jetstream::new(client.clone());
        let fetch_timeout = Duration::from_millis(settings.session_fetch_timeout_ms.into());
        // Half the fetch's time at most: a replay cut short still leaves the session.
        let reader = Reader::new(
            jetstream.clone(),
            qos,
            limits.session_queue_bytes_max,
            fetch_timeout / 2,
        );
        Sessions {
            replays: Replays::start(reader, settings.sessions_waiting_max),
            replay_margin: Duration::from_millis(settings.session_replay_margin_ms.into()),
            jetstream,
            client,
            bucket_name: settings.sessions_bucket.clone(),
            node: settings.node.clone(),
            replicas: settings.retained_replicas,
            bytes_max: settings.sessions_bucket_bytes_max,
            fetch_timeout,
            client_id_bytes_max: usize::from(limits.client_id_bytes_max),
            link,
            bucket: Mutex::new(None),
            writes_waiting: Notify::new(),
            writing: Mutex::new(()),
            handed_over: std::sync::Mutex::new(HandedOver {
                to: HashMap::new(),
                max: settings.takeover_ids_remembered_max,
                for_how_long: Duration::from_secs(settings.takeover_remembered_s.into()),
            }),
            acks: Arc::new(Semaphore::new(STORE_ACKS_INFLIGHT_MAX)),
            fetching: Arc::new(Semaphore::new(settings.sessions_waiting_max)),
        }
    }

    /// The bucket: found, or made with one value per key and the retained stream's replicas.
    /// Opened at the first write or fetch rather than at start, when every node of a cluster
    /// starting at once asks JetStream for its streams.
    async fn bucket(&self) -> Result<kv::Store, async_nats::Error> {
        let mut held = self.bucket.lock().await;
        if let Some(bucket) = held.as_ref() {
            return Ok(bucket.clone());
        }
        // As for the retained stream: the servers of the cluster are known once connected.
        self.client.flush().await?;
        let bucket = match self.jetstream.get_key_value(&self.bucket_name).await {
            Ok(bucket) => bucket,
            Err(_) => {
                let config = kv::Config {
                    bucket: self.bucket_name.clone(),
                    history: 1,
                    max_bytes: i64::try_from(self.bytes_max).unwrap_or(i64::MAX),
                    num_replicas: self.replicas(),
                    storage: jetstream::stream::StorageType::File,
                    ..kv::Config::default()
                };
                self.jetstream.create_key_value(config).await?
            }
        };
        *held = Some(bucket.clone());
        Ok(bucket)
    }

    fn replicas(&self) -> usize {
        if let Some(replicas) = self.replicas {
            return usize::from(replicas);
        }
        let info = self.client.server_info();
        let own = format!("{}:{}", info.host, info.port);
        super::retained::replicas_for(&info.connect_urls, &own)
    }

    /// Writes what the shards queue, in their order, for as long as the node runs.
    pub(super) async fn write(self: Arc<Self>) {
        loop {
            self.writes_waiting.notified().await;
            self.write_queued().await;
        }
    }

    async fn write_queued(&self) {
        let _writing = self.writing.lock().await;
        while let Some(out) = self.link.next_session_out() {
            match out {
                SessionOut::Put(image, mark) => self.put(*image, mark).await,
                SessionOut::Delete(client_id) => self.delete(&client_id).await,
                SessionOut::Handed {
                    reply,
                    client_id,
                    asker,
                    image,
                } => {
                    self.answer(&reply, &client_id, asker.as_deref(), image)
                        .await
                }
            }
        }
    }

    /// At a clean stop, once the shards stopped: writes what they queued last (the stop's
    /// disconnections among it), then waits for JetStream's answer to every write.
    pub(super) async fn finish(self: Arc<Self>) {
        self.link.stop_asked().await;
        self.write_queued().await;
        // A write waiting for its answer holds a permit until it comes.
        let every = u32::try_from(STORE_ACKS_INFLIGHT_MAX).unwrap_or(u32::MAX);
        drop(self.acks.acquire_many(every).await);
        self.link.sessions_finished();
    }

    async fn put(&self, image: SessionImage, mark: Option<BucketMark>) {
        let client_id = image.client_id.clone();
        let (record, left_out) =
            encode_session_image(image, Instant::now(), unix_ms(SystemTime::now()));
        if left_out > 0 {
            warn!(
                "cluster: session {client_id}: {left_out} queued messages past the largest record not written to the bucket"
            );
        }
        let value = value_of(&self.node, &record);
        let written = mark.map(|mark| self.link.bucket_marks.writing(mark));
        self.store(&client_id, HeaderMap::new(), value.into(), written)
            .await;
    }

    async fn delete(&self, client_id: &str) {
        let mut headers = HeaderMap::new();
        headers.insert(KV_OPERATION, "DEL");
        self.store(client_id, headers, Bytes::new(), None).await;
    }

    /// Publishes a value (or a delete) of `client_id`'s key; its acknowledgement is awaited
    /// on a task of its own and counted. `written`, answered or not, is done with then: a
    /// write that fails (NATS gone) holds nothing back, the session is written again at its
    /// next change.
    async fn store(
        &self,
        client_id: &str,
        headers: HeaderMap,
        value: Bytes,
        written: Option<Writing>,
    ) {
        if let Err(e) = self.bucket().await {
            store_failed(&self.link, client_id, &e.to_string());
            return;
        }
        let Ok(permit) = Arc::clone(&self.acks).acquire_owned().await else {
            return;
        };
        let subject = format!("$KV.{}.{}", self.bucket_name, key_of(client_id));
        let acked = match self
            .jetstream
            .publish_with_headers(subject, headers, value)
            .await
        {
            Ok(acked) => acked,
            Err(e) => {
                store_failed(&self.link, client_id, &e.to_string());
                return;
            }
        };
        let link = Arc::clone(&self.link);
        let client_id = client_id.to_owned();
        tokio::spawn(async move {
            match acked.await {
                Ok(_) => {
                    link.figures.sessions_stored.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => store_failed(&link, &client_id, &e.to_string()),
            }
            drop(written);
            drop(permit);
        });
    }

    async fn answer(
        &self,
        reply: &str,
        client_id: &str,
        asker: Option<&str>,
        image: Option<Box<SessionImage>>,
    ) {
        let now = Instant::now();
        let mut headers = HeaderMap::new();
        let value = match image {
            Some(image) => {
                if let (Some(asker), Ok(mut handed_over)) = (asker, self.handed_over.lock()) {
                    handed_over.note(client_id, asker, now);
                }
                let (record, _) = encode_session_image(*image, now, unix_ms(SystemTime::now()));
                Bytes::from(value_of(&self.node, &record))
            }
            None => {
                if let Ok(handed_over) = self.handed_over.lock()
                    && let Some(node) = handed_over.where_to(client_id, now)
                {
                    headers.insert(MOVED_TO, node);
                }
                Bytes::new()
            }
        };
        let answered = self
            .client
            .publish_with_headers(reply.to_owned(), headers, value)
            .await;
        if let Err(e) = answered {
            warn!("cluster: cannot answer a session take: {e}");
        }
    }

    /// Starts the search for the session of a waiting CONNECT; without NATS it gets a new
    /// session at once (the node serves alone).
    pub(super) fn start_fetch(self: &Arc<Self>, fetch: SessionFetch) {
        if self.client.connection_state() != State::Connected {
            warn!(
                "cluster: client {:?} gets a new session: NATS is not connected",
                fetch.client_id
            );
            self.answer_fetch(fetch, Fetch::Failed);
            return;
        }
        drop(tokio::spawn(Arc::clone(self).fetch(fetch)));
    }

    /// At most `sessions_waiting_max` searches run at once; the others wait their turn (a
    /// reconnect storm of a dead node's clients), each within its `session_fetch_timeout_ms`.
    /// One that does not end in time is refused as unavailable: its client comes back for
    /// its session, which is still in the cluster, instead of starting without it. Waiting
    /// searches are bounded by the connections waiting for their CONNACK.
    async fn fetch(self: Arc<Self>, fetch: SessionFetch) {
        // The permit is held until the answer is queued: the answers of searches that
        // ended have room in their shards' queues.
        let searching = async {
            let permit = Arc::clone(&self.fetching).acquire_owned().await.ok();
            (permit, self.find_or_claim(&fetch.client_id).await)
        };
        let (outcome, _permit) = match tokio::time::timeout(self.fetch_timeout, searching).await {
            Ok((permit, Ok(image))) => (Fetch::Found(image), permit),
            Ok((permit, Err(e))) => {
                warn!(
                    "cluster: client {:?} gets a new session: cannot fetch its session: {e}",
                    fetch.client_id
                );
                (Fetch::Failed, permit)
            }
            Err(_) => {
                warn!(
                    "cluster: client {:?} refused (server unavailable): its session did not come within session_fetch_timeout_ms",
                    fetch.client_id
                );
                (Fetch::TooSlow, None)
            }
        };
        self.answer_fetch(fetch, outcome);
    }

    fn answer_fetch(&self, fetch: SessionFetch, outcome: Fetch) {
        let figures = &self.link.figures;
        let (image, unavailable) = match outcome {
            Fetch::Found(image) => {
                if image.is_some() {
                    figures.sessions_fetched.fetch_add(1, Ordering::Relaxed);
                }
                (image, false)
            }
            Fetch::Failed => {
                figures
                    .session_fetches_failed
                    .fetch_add(1, Ordering::Relaxed);
                (None, false)
            }
            Fetch::TooSlow => {
                figures
                    .session_fetches_failed
                    .fetch_add(1, Ordering::Relaxed);
                (None, true)
            }
        };
        let answer = SessionFetched {
            conn: fetch.conn,
            client_id: fetch.client_id,
            image,
            unavailable,
        };
        // Fetches under way are at most the queue's room; a CONNECT that still got no answer
        // ends at its connect deadline.
        if self.link.fetched(fetch.shard, answer).is_err() {
            figures
                .session_fetches_failed
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The session of `client_id` in the cluster; when there is none, its key is claimed for
    /// this node before the CONNECT's CONNACK, so that a client that moves on before the
    /// new session's first image was written finds it here.
    async fn find_or_claim(
        &self,
        client_id: &str,
    ) -> Result<Option<Box<SessionImage>>, async_nats::Error> {
        let found = self.find(client_id).await?.map(Box::new);
        if found.is_none() {
            let claim = Bytes::from(value_of(&self.node, &[]));
            self.bucket().await?.put(key_of(client_id), claim).await?;
        }
        Ok(found)
    }

    /// The session of `client_id` in the cluster (see the module documentation).
    async fn find(&self, client_id: &str) -> Result<Option<SessionImage>, async_nats::Error> {
        let bucket = self.bucket().await?;
        let key = key_of(client_id);
        let Some(entry) = read(&bucket, &key).await? else {
            return Ok(None);
        };
        let (holder, _) = split_value(&entry.value).ok_or("a malformed value in the bucket")?;
        if holder != self.node {
            match self.take_from(holder, client_id).await? {
                Taken::Image(image) => return Ok(image),
                // The holder handed it on a moment ago: once more, to the node that has it
                // (one hop, so that takes cannot chase each other).
                Taken::MovedTo(node) if node != self.node => {
                    if let Taken::Image(image) = self.take_from(&node, client_id).await? {
                        return Ok(image);
                    }
                }
                Taken::MovedTo(_) | Taken::Nothing => {}
            }
        }
        // Read again: a holder that ended the session meanwhile deleted its key.
        let Some(entry) = read(&bucket, &key).await? else {
            return Ok(None);
        };
        let image = split_value(&entry.value).and_then(|(_, record)| image_of(record, client_id));
        let Some(image) = image else {
            return Ok(None);
        };
        // What its node, gone, would have queued for it since it wrote the image, and what
        // was on its way to it then (`replay.rs`).
        let start = entry.created - self.replay_margin;
        let replayed = self.replays.replay(image, start).await;
        Ok(Some(replayed.ok_or(
            "the QoS stream's reading ended without the session",
        )?))
    }

    /// Asks `holder` for the session of `client_id`: it ends its copy and answers with it.
    async fn take_from(&self, holder: &str, client_id: &str) -> Result<Taken, async_nats::Error> {
        let subject = take_subject(&self.bucket_name, holder);
        let asked = Bytes::copy_from_slice(client_id.as_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(ASKER, self.node.as_str());
        let request = async_nats::Request::new().headers(headers).payload(asked);
        // A holder whose machine died without closing its connection still has its
        // subscription on the NATS server until the server's pings time out (minutes): past
        // a third of the fetch's time it is taken for dead, and the bucket's image used, with
        // the replay's time still ahead.
        let wait = self.fetch_timeout / 3;
        let asking = self.client.send_request(subject, request);
        let reply = match tokio::time::timeout(wait, asking).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => return Ok(Taken::Nothing),
            Ok(Err(e)) if e.kind() == RequestErrorKind::TimedOut => {
                warn!(
                    "cluster: node {holder:?} did not hand over session {client_id:?} ({e}): resumed from the bucket"
                );
                return Ok(Taken::Nothing);
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                warn!(
                    "cluster: node {holder:?} did not hand over session {client_id:?} within a third of session_fetch_timeout_ms: resumed from the bucket"
                );
                return Ok(Taken::Nothing);
            }
        };
        if !reply.payload.is_empty() {
            let (_, record) = split_value(&reply.payload).ok_or("a malformed answer to a take")?;
            return Ok(Taken::Image(image_of(record, client_id)));
        }
        let moved_to = reply
            .headers
            .as_ref()
            .and_then(|headers| headers.get(MOVED_TO))
            .map(|node| node.as_str().to_owned());
        Ok(moved_to.map_or(Taken::Nothing, Taken::MovedTo))
    }

    /// Hands every take of another node to the shard that holds its client identifier,
    /// until the subscription ends. One the shard has no room for is not answered: the
    /// node that asks reads the bucket.
    pub(super) async fn serve_takes(self: Arc<Self>, mut subscriber: async_nats::Subscriber) {
        while let Some(message) = subscriber.next().await {
            let Some(reply) = message.reply else {
                continue;
            };
            let Ok(client_id) = std::str::from_utf8(&message.payload) else {
                continue;
            };
            if client_id.is_empty() || client_id.len() > self.client_id_bytes_max {
                continue;
            }
            let shard = Broker::owner_shard(client_id, self.link.shard_count());
            let asker = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(ASKER))
                .map(|node| node.as_str().into());
            let take = SessionTake {
                client_id: client_id.into(),
                reply: Some(reply.as_str().into()),
                asker,
            };
            if self.link.take_session(shard, take).is_err() {
                warn!("cluster: a take of session {client_id:?} found its shard's queue full");
            }
        }
    }

    /// Checks the sessions the shards loaded from the data directory at start-up against the
    /// bucket: one that another node holds now (it moved while this node was down) ends
    /// here. One the bucket does not know stays: its last write may never have reached it.
    pub(super) async fn check_loaded(self: Arc<Self>, client_ids: Vec<Box<str>>) {
        let bucket = match self.bucket().await {
            Ok(bucket) => bucket,
            Err(e) => {
                warn!(
                    "cluster: the {} sessions loaded from the data directory are not checked against the bucket: {e}",
                    client_ids.len()
                );
                return;
            }
        };
        let mut stale = 0usize;
        for client_id in client_ids {
            let holder = match read(&bucket, &key_of(&client_id)).await {
                Ok(Some(entry)) => split_value(&entry.value).map(|(h, _)| h.to_owned()),
                Ok(None) => None,
                Err(e) => {
                    warn!("cluster: session {client_id:?} not checked against the bucket: {e}");
                    None
                }
            };
            if holder.is_none_or(|holder| holder == self.node) {
                continue;
            }
            let shard = Broker::owner_shard(&client_id, self.link.shard_count());
            let take = SessionTake {
                client_id,
                reply: None,
                asker: None,
            };
            match self.link.take_session(shard, take) {
                Ok(()) => stale += 1,
                Err(take) => warn!(
                    "cluster: stale session {:?} kept: its shard's queue is full",
                    take.client_id
                ),
            }
        }
        if stale > 0 {
            info!(
                "cluster: {stale} sessions loaded from the data directory moved to other nodes meanwhile; ended here"
            );
        }
    }

    pub(super) fn take_subject(&self) -> String {
        take_subject(&self.bucket_name, &self.node)
    }
}

/// The entry of `key`, if it holds a value (not deleted).
async fn read(bucket: &kv::Store, key: &str) -> Result<Option<kv::Entry>, async_nats::Error> {
    Ok(bucket
        .entry(key)
        .await?
        .filter(|entry| entry.operation == kv::Operation::Put))
}

/// Counts a session write the bucket did not take, and logs it at the 1st, 2nd, 4th, 8th,
/// ... failure: without JetStream every write fails, and the log must not flood.
fn store_failed(link: &ClusterLink, client_id: &str, why: &str) {
    let failed = link
        .figures
        .sessions_store_failed
        .fetch_add(1, Ordering::Relaxed)
        + 1;
    if failed.is_power_of_two() {
        warn!(
            "cluster: cannot write session {client_id:?} to the bucket ({failed} failed so far): {why}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{QueuedImage, RoutedMessage, SubscriptionImage};
    use crate::protocol::mqtt::{PacketId, ProtocolVersion, QoS};

    #[test]
    fn keys_keep_safe_bytes_and_escape_the_rest() {
        assert_eq!(key_of("sensor-1_a"), "sensor-1_a");
        assert_eq!(key_of("a.b/c d"), "a=2Eb=2Fc=20d");
        assert_eq!(key_of("é"), "=C3=A9");
        assert_eq!(key_of("a=b"), "a=3Db", "the escape itself is escaped");
        assert_eq!(take_subject("B", "node.1"), "$FANFARE_TAKE.B.node=2E1");
    }

    #[test]
    fn a_value_names_its_holder() {
        let value = value_of("node1", b"record");
        assert_eq!(split_value(&value), Some(("node1", &b"record"[..])));
        assert_eq!(split_value(&[]), None);
        assert_eq!(split_value(&[9, b'a']), None, "a name past the value");
    }

    #[test]
    fn an_image_crosses_whole() {
        let message = RoutedMessage::new("t/1", b"payload", QoS::AtLeastOnce, false);
        let image = SessionImage {
            client_id: "c.1".into(),
            version: ProtocolVersion::V5,
            expiry_s: 600,
            expires_at: None,
            connected: false,
            subscriptions: vec![SubscriptionImage {
                filter: "t/#".into(),
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: false,
                id: 7,
            }],
            messages: vec![QueuedImage {
                message: Arc::new(message),
                qos: QoS::AtLeastOnce,
                retain: false,
                ids: vec![7],
                packet_id: PacketId::new(3),
            }],
            released: vec![PacketId::new(9).expect("not 0")],
            inbound_qos2: Vec::new(),
            delayed_will: None,
            incarnation: 0,
            committed_seq: 0,
            sent_ids: Vec::new(),
        };
        let now_ms = unix_ms(SystemTime::now());
        let (record, left_out) = encode_session_image(image.clone(), Instant::now(), now_ms);
        assert_eq!(left_out, 0);
        let value = value_of("node1", &record);
        let (holder, record) = split_value(&value).expect("a value");
        assert_eq!(holder, "node1");
        let back = image_of(record, "c.1").expect("decodes");
        assert_eq!(back.subscriptions, image.subscriptions);
        assert_eq!(back.released, image.released);
        assert_eq!(back.messages.len(), 1);
        assert_eq!(back.messages[0].packet_id, image.messages[0].packet_id);
        assert_eq!(
            back.messages[0].message.payload,
            image.messages[0].message.payload
        );
        assert!(back.expires_at.is_some(), "offline: expires 600 s from now");
        assert!(image_of(record, "other").is_none(), "another client's");
        assert!(image_of(&record[1..], "c.1").is_none());
    }
}
