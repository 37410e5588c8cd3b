//! The `[cluster]` table and `--nats`: cluster mode over NATS (`docs/scale-out.md`). Off unless
//! at least one NATS server is named.

use std::path::PathBuf;

use super::ConfigError;

/// NATS servers one node may be given: the client tries them in turn, and learns the rest of
/// a NATS cluster from the servers themselves.
pub const NATS_URLS_MAX: usize = 16;

/// Longest `subject_prefix`, in bytes: it goes in front of every subject.
pub const SUBJECT_PREFIX_BYTES_MAX: usize = 128;

/// Longest `node` name, in bytes: it goes in a header of every message sent to NATS.
pub const NODE_BYTES_MAX: usize = 128;

/// Longest `retained_stream` name, in bytes: it is a JetStream stream name and a subject token.
pub const RETAINED_STREAM_BYTES_MAX: usize = 64;

/// Most JetStream replicas `retained_replicas` may ask for: JetStream's own bound.
pub const RETAINED_REPLICAS_MAX: u8 = 5;

/// Most of `retained_unsent_bytes_max`: a node cut off from NATS holds that much in memory.
pub const RETAINED_UNSENT_BYTES_MAX: u64 = 1 << 30;

/// Fewest bytes `retained_stream_bytes_max` may give the stream: room for one largest
/// retained message with its subject and headers.
pub const RETAINED_STREAM_BYTES_MIN: u64 = 1 << 20;

/// Most of `takeover_ids_waiting_max` and `takeover_ids_remembered_max`: each costs up to
/// that many client identifiers of memory.
pub const TAKEOVER_IDS_MAX: usize = 1 << 20;

/// Longest `takeover_remembered_s`: a day; an announcement crosses NATS in milliseconds.
pub const TAKEOVER_REMEMBERED_S_MAX: u32 = 86_400;

/// Longest `sessions_bucket` name, in bytes: a JetStream bucket name and a subject token.
pub const SESSIONS_BUCKET_BYTES_MAX: usize = 64;

/// Most of `session_sync_interval_ms`: a minute; a node that dies loses what changed since.
pub const SESSION_SYNC_INTERVAL_MS_MAX: u32 = 60_000;

/// Most of `session_fetch_timeout_ms`: a CONNECT waits this long at worst for its CONNACK.
pub const SESSION_FETCH_TIMEOUT_MS_MAX: u32 = 60_000;

/// Most of `session_stop_write_ms`: a stop waits this long at worst for the bucket.
pub const SESSION_STOP_WRITE_MS_MAX: u32 = 60_000;

/// Most of `session_replay_margin_ms`: a minute of the QoS stream read again per session.
pub const SESSION_REPLAY_MARGIN_MS_MAX: u32 = 60_000;

/// Most of `session_sent_ids_max`: 16 bytes each in every session image, 32 in memory.
pub const SESSION_SENT_IDS_MAX: usize = 4096;

/// Most of `sessions_waiting_max`: each waiting entry holds a client identifier, or a
/// whole session image on its way back.
pub const SESSIONS_WAITING_MAX: usize = 1 << 16;
/// Most of `qos_acks_waiting_max`, `qos_ack_pending_max` and `qos_delivered_remembered_max`:
/// each costs up to that many small entries (a task, a message JetStream holds out, a
/// sequence number).
pub const QOS_COUNT_MAX: usize = 1 << 20;

/// Bounds of `qos_redeliver_after_ms`: below a second a loaded node would be sent again
/// messages still waiting in its in queue; past 10 minutes a node back from a crash waits
/// that long for what was on its way to it.
pub const QOS_REDELIVER_AFTER_MS_MIN: u32 = 1000;
pub const QOS_REDELIVER_AFTER_MS_MAX: u32 = 600_000;

/// Longest `qos_stream_age_max_s`: a week. A QoS 1/2 message no node took within it is lost
/// to the nodes that did not (`docs/scale-out.md`).
pub const QOS_STREAM_AGE_MAX_S: u32 = 7 * 86_400;

/// How this node joins a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// NATS servers (`nats://host:port`, `tls://host:port`); empty: cluster mode off.
    pub nats: Vec<String>,
    /// This node's name, unique in the cluster: messages it sent come back with it and are
    /// ignored. The host name by default.
    pub node: String,
    /// The first tokens of every subject; empty puts topics at the subject root, where
    /// nats-server's own MQTT clients have them.
    pub subject_prefix: String,
    /// User for the NATS servers; its password is read from `password_file` (one final
    /// newline trimmed), so no secret sits in the configuration. Both or neither.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A file holding a token for the NATS servers, instead of a user and password.
    pub token_file: Option<PathBuf>,
    /// CA certificates (PEM) that NATS servers' certificates must chain to; with it the
    /// connection requires TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// Bytes of publishes waiting to go to NATS, over all shards; past it a publish is not
    /// sent to NATS (it still reaches this node's subscribers) and is counted as dropped.
    /// Worst case this much memory while NATS is slow or gone.
    pub out_queue_bytes_max: u64,
    /// Bytes of messages from NATS waiting for the shards; past it a message is dropped and
    /// counted. Messages of the QoS stream have a queue of their own with the same bound,
    /// past which they wait in JetStream. Worst case twice this much memory while the shards
    /// are busy.
    pub in_queue_bytes_max: u64,
    /// Whether `/readyz` answers 503 while the node is not connected to NATS. A node outside
    /// the cluster still serves its own clients, but they miss every message published on
    /// other nodes, so a load balancer should send new clients elsewhere; `false` keeps such
    /// a node in rotation (when every node losing NATS at once must not empty the pool).
    pub ready_needs_nats: bool,
    /// The JetStream stream that keeps the last retained message of every topic for all
    /// nodes (`crate::cluster::retained`); its subjects are `$FANFARE.<retained_stream>.>`.
    /// Clusters that share one NATS account need a stream each.
    pub retained_stream: String,
    /// Replicas of that stream when this node creates it, and of the QoS stream and the
    /// sessions bucket; `None` (the default): 3 when the NATS server this node is connected
    /// to names 3 servers or more, else 1. Right after a server joined its cluster it may not
    /// name the others yet: a production cluster sets this.
    pub retained_replicas: Option<u8>,
    /// Bytes the stream may hold (JetStream's `max_bytes`, on each replica) when this node
    /// creates it. The stream refuses a write past it (`discard = new`): that retained value
    /// is then set on this node and live everywhere but not stored, and counted in
    /// `fanfare_cluster_retained_store_failed_total`. A refused clearing is written again
    /// after the topic's value was purged, so clearing always works. Near the bound
    /// nats-server 2.9 may drop the oldest values instead (`docs/scale-out.md`): size it well
    /// above what the retained values need.
    pub retained_stream_bytes_max: u64,
    /// Bytes of retained messages (topic, payload, properties) set on this node while it was
    /// cut off from NATS, remembered to be written to the stream when it reconnects, the last
    /// per topic. Past it a new topic's value is not remembered and is counted in
    /// `fanfare_cluster_retained_store_failed_total`. Worst case this much memory while NATS
    /// is gone.
    pub retained_unsent_bytes_max: u64,
    /// Client identifiers waiting in each queue between the shards and the NATS thread on
    /// their way to a cluster-wide takeover (`cluster/client_ids.rs`); past it one is dropped
    /// and counted, and that takeover does not happen. Worst case per queue: this many times
    /// `client_id_bytes_max`.
    pub takeover_ids_waiting_max: usize,
    /// Client identifiers a shard remembers having announced, so that an older announcement
    /// from another node does not take down a newer connection here. Worst case per shard:
    /// twice this many times `client_id_bytes_max`.
    pub takeover_ids_remembered_max: usize,
    /// How long a shard remembers an identifier it announced: far longer than NATS takes to
    /// carry an announcement between two nodes.
    pub takeover_remembered_s: u32,
    /// The JetStream key-value bucket that holds every persistent session of the cluster,
    /// one key per client identifier (`crate::cluster::sessions`). Created with the
    /// replicas the retained stream gets (`retained_replicas`) and one value per key.
    pub sessions_bucket: String,
    /// Bytes the bucket may hold; past it JetStream refuses a write, which is counted and
    /// written again at the session's next change. A session image is at most
    /// `queue_bytes_max` plus its subscriptions.
    pub sessions_bucket_bytes_max: u64,
    /// How often a shard writes the persistent sessions that changed to the bucket, each
    /// once however often it changed (as the store's flushes conflate). What changed since
    /// the last write is what a node that dies costs its clients.
    pub session_sync_interval_ms: u32,
    /// How long a CONNECT that resumes a session this node does not hold waits for it from
    /// the cluster before it is refused with Server unavailable (its client comes back for
    /// the session, still in the cluster).
    pub session_fetch_timeout_ms: u32,
    /// At a clean stop, how long the node waits for the bucket to store its persistent
    /// sessions' last changes (those since the last sync, and the disconnections of the
    /// stop itself) before it exits; what is not stored by then is logged.
    pub session_stop_write_ms: u32,
    /// Session images, requests and answers waiting in each queue between the shards and the
    /// NATS thread, and searches for a session under way at once; past it an image waits for
    /// the session's next write, a search waits its turn (within `session_fetch_timeout_ms`),
    /// a CONNECT that finds the queue full is refused with Server unavailable, and another
    /// node's take goes unanswered (it reads the bucket). Worst case per queue: this many
    /// session images.
    pub sessions_waiting_max: usize,
    /// When a node died, its sessions resume elsewhere from their last image plus the QoS
    /// stream read again from this long before that image was written: a message that was
    /// still on its way to the session when the image was taken is not lost. Longer covers
    /// slower deliveries and clocks further apart, and reads more again.
    pub session_replay_margin_ms: u32,
    /// Identities of the messages from the cluster a connected persistent session remembers
    /// being sent within `session_replay_margin_ms` (`broker/message_ids.rs`), so that a
    /// replay does not send them again; past it the oldest are forgotten, and a replay may
    /// send those twice (at least once still holds). Worst case 32 bytes each per session.
    pub session_sent_ids_max: usize,
    /// The JetStream stream that carries QoS 1/2 publishes between nodes
    /// (`crate::cluster::qos`); its subjects are `$FANFARE.<qos_stream>.>`. Clusters that
    /// share one NATS account need a stream each.
    pub qos_stream: String,
    /// Bytes that stream holds at most (JetStream's `max_bytes`); past it the oldest messages
    /// go, lost to a node that had not read them yet. Worst case this much disk on each NATS
    /// server holding a replica.
    pub qos_stream_bytes_max: u64,
    /// How long that stream keeps a message (JetStream's `max_age`): a node gone, or that
    /// far behind, longer loses what was published meanwhile.
    pub qos_stream_age_max_s: u32,
    /// QoS 1/2 publishes sent to JetStream whose acknowledgement has not come yet; past it the
    /// bridge waits, the out queue fills and further QoS 1/2 publishes are refused. Worst case
    /// this many small tasks on the bridge's thread.
    pub qos_acks_waiting_max: usize,
    /// Messages each of this node's JetStream consumers may hold out unacknowledged
    /// (JetStream's `max_ack_pending`): bounds what one consumer brings in ahead of the shards.
    pub qos_ack_pending_max: usize,
    /// How long a message of the QoS stream that JetStream delivered to this node waits for
    /// the node's acknowledgement before JetStream delivers it again (the consumers'
    /// `ack_wait`). The node acknowledges once it delivered the message (under `sync`, once
    /// durable), so a node back from a crash gets what was on its way to its sessions this
    /// long after its first delivery, and a delivery lost on the way (a NATS server killed)
    /// comes again after it. Shorter than the longest a message waits in the node's in queue,
    /// the node is sent again what it still holds: skipped as a duplicate and left
    /// unacknowledged until the first copy is delivered, but read again. Applies to the
    /// node's consumers when they are next made or taken up (at its start, and when a filter
    /// gets its first subscriber).
    pub qos_redeliver_after_ms: u32,
    /// Stream sequence numbers of QoS 1/2 messages this node delivered, remembered so that a
    /// redelivery, or the same message through two of its consumers, is delivered once; and
    /// as many identities of QoS 2 publishes with an origin, so that one resent after its
    /// node's death is delivered once (`broker/message_ids.rs`). Worst case: about 100 B each
    /// for the two memories together, 6.5 MiB at the default.
    pub qos_delivered_remembered_max: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            nats: Vec::new(),
            node: host_name(),
            subject_prefix: "mqtt".to_owned(),
            user: None,
            password_file: None,
            token_file: None,
            tls_ca_file: None,
            out_queue_bytes_max: 64 * 1024 * 1024,
            in_queue_bytes_max: 64 * 1024 * 1024,
            ready_needs_nats: true,
            retained_stream: "FANFARE_RETAINED".to_owned(),
            retained_replicas: None,
            // Four times a shard's default `retained_bytes_max`: headers and subjects come
            // on top of what a shard counts.
            retained_stream_bytes_max: 256 * 1024 * 1024,
            retained_unsent_bytes_max: 4 * 1024 * 1024,
            takeover_ids_waiting_max: 1024,
            takeover_ids_remembered_max: 16_384,
            takeover_remembered_s: 60,
            sessions_bucket: "FANFARE_SESSIONS".to_owned(),
            sessions_bucket_bytes_max: 1 << 30,
            session_sync_interval_ms: 100,
            session_fetch_timeout_ms: 3000,
            session_stop_write_ms: 3000,
            sessions_waiting_max: 1024,
            session_replay_margin_ms: 2000,
            session_sent_ids_max: 256,
            qos_stream: "FANFARE_QOS".to_owned(),
            qos_stream_bytes_max: 1 << 30,
            qos_stream_age_max_s: 3600,
            qos_acks_waiting_max: 4096,
            qos_ack_pending_max: 1024,
            qos_redeliver_after_ms: 30_000,
            qos_delivered_remembered_max: 65_536,
        }
    }
}

/// The host name, or `fanfare` when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "fanfare".to_owned())
}

/// The `[cluster]` table of the file, each key optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCluster {
    nats: Option<Vec<String>>,
    node: Option<String>,
    subject_prefix: Option<String>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    tls_ca_file: Option<PathBuf>,
    out_queue_bytes_max: Option<u64>,
    in_queue_bytes_max: Option<u64>,
    ready_needs_nats: Option<bool>,
    retained_stream: Option<String>,
    retained_replicas: Option<u8>,
    retained_stream_bytes_max: Option<u64>,
    retained_unsent_bytes_max: Option<u64>,
    takeover_ids_waiting_max: Option<usize>,
    takeover_ids_remembered_max: Option<usize>,
    takeover_remembered_s: Option<u32>,
    sessions_bucket: Option<String>,
    sessions_bucket_bytes_max: Option<u64>,
    session_sync_interval_ms: Option<u32>,
    session_fetch_timeout_ms: Option<u32>,
    session_stop_write_ms: Option<u32>,
    sessions_waiting_max: Option<usize>,
    session_replay_margin_ms: Option<u32>,
    session_sent_ids_max: Option<usize>,
    qos_stream: Option<String>,
    qos_stream_bytes_max: Option<u64>,
    qos_stream_age_max_s: Option<u32>,
    qos_acks_waiting_max: Option<usize>,
    qos_ack_pending_max: Option<usize>,
    qos_redeliver_after_ms: Option<u32>,
    qos_delivered_remembered_max: Option<usize>,
}

impl FileCluster {
    pub(super) fn apply(self, cluster: &mut ClusterSettings) {
        if let Some(nats) = self.nats {
            cluster.nats = nats;
        }
        if let Some(node) = self.node {
            cluster.node = node;
        }
        if let Some(prefix) = self.subject_prefix {
            cluster.subject_prefix = prefix;
        }
        cluster.user = self.user.or(cluster.user.take());
        cluster.password_file = self.password_file.or(cluster.password_file.take());
        cluster.token_file = self.token_file.or(cluster.token_file.take());
        cluster.tls_ca_file = self.tls_ca_file.or(cluster.tls_ca_file.take());
        if let Some(bytes) = self.out_queue_bytes_max {
            cluster.out_queue_bytes_max = bytes;
        }
        if let Some(bytes) = self.in_queue_bytes_max {
            cluster.in_queue_bytes_max = bytes;
        }
        if let Some(needs) = self.ready_needs_nats {
            cluster.ready_needs_nats = needs;
        }
        if let Some(max) = self.takeover_ids_waiting_max {
            cluster.takeover_ids_waiting_max = max;
        }
        if let Some(max) = self.takeover_ids_remembered_max {
            cluster.takeover_ids_remembered_max = max;
        }
        if let Some(seconds) = self.takeover_remembered_s {
            cluster.takeover_remembered_s = seconds;
        }
        if let Some(stream) = self.retained_stream {
            cluster.retained_stream = stream;
        }
        cluster.retained_replicas = self.retained_replicas.or(cluster.retained_replicas);
        if let Some(bucket) = self.sessions_bucket {
            cluster.sessions_bucket = bucket;
        }
        if let Some(bytes) = self.sessions_bucket_bytes_max {
            cluster.sessions_bucket_bytes_max = bytes;
        }
        if let Some(ms) = self.session_sync_interval_ms {
            cluster.session_sync_interval_ms = ms;
        }
        if let Some(ms) = self.session_fetch_timeout_ms {
            cluster.session_fetch_timeout_ms = ms;
        }
        if let Some(ms) = self.session_stop_write_ms {
            cluster.session_stop_write_ms = ms;
        }
        if let Some(max) = self.sessions_waiting_max {
            cluster.sessions_waiting_max = max;
        }
        if let Some(ms) = self.session_replay_margin_ms {
            cluster.session_replay_margin_ms = ms;
        }
        if let Some(max) = self.session_sent_ids_max {
            cluster.session_sent_ids_max = max;
        }
        if let Some(bytes) = self.retained_stream_bytes_max {
            cluster.retained_stream_bytes_max = bytes;
        }
        if let Some(bytes) = self.retained_unsent_bytes_max {
            cluster.retained_unsent_bytes_max = bytes;
        }
        if let Some(stream) = self.qos_stream {
            cluster.qos_stream = stream;
        }
        if let Some(bytes) = self.qos_stream_bytes_max {
            cluster.qos_stream_bytes_max = bytes;
        }
        if let Some(seconds) = self.qos_stream_age_max_s {
            cluster.qos_stream_age_max_s = seconds;
        }
        if let Some(max) = self.qos_acks_waiting_max {
            cluster.qos_acks_waiting_max = max;
        }
        if let Some(max) = self.qos_ack_pending_max {
            cluster.qos_ack_pending_max = max;
        }
        if let Some(ms) = self.qos_redeliver_after_ms {
            cluster.qos_redeliver_after_ms = ms;
        }
        if let Some(max) = self.qos_delivered_remembered_max {
            cluster.qos_delivered_remembered_max = max;
        }
    }
}

impl ClusterSettings {
    /// Whether cluster mode is on.
    pub fn enabled(&self) -> bool {
        !self.nats.is_empty()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nats.len() > NATS_URLS_MAX {
            return Err(ConfigError::invalid(
                "cluster.nats",
                &format!("at most {NATS_URLS_MAX} servers"),
            ));
        }
        for url in &self.nats {
            let scheme_ok = ["nats://", "tls://"]
                .iter()
                .any(|scheme| url.starts_with(scheme));
            if !scheme_ok || url.contains(char::is_whitespace) {
                return Err(ConfigError::invalid(
                    "cluster.nats",
                    &format!("{url:?} is not a nats:// or tls:// URL"),
                ));
            }
        }
        if self.node.is_empty() || self.node.len() > NODE_BYTES_MAX || !is_token(&self.node) {
            return Err(ConfigError::invalid(
                "cluster.node",
                &format!("must be 1 to {NODE_BYTES_MAX} bytes of printable ASCII"),
            ));
        }
        self.validate_prefix()?;
        if self.user.is_some() != self.password_file.is_some() {
            return Err(ConfigError::invalid(
                "cluster.user",
                "`user` and `password_file` go together",
            ));
        }
        if self.token_file.is_some() && self.user.is_some() {
            return Err(ConfigError::invalid(
                "cluster.token_file",
                "either a token or a user and password, not both",
            ));
        }
        for (key, bytes) in [
            ("cluster.out_queue_bytes_max", self.out_queue_bytes_max),
            ("cluster.in_queue_bytes_max", self.in_queue_bytes_max),
        ] {
            if bytes == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        for (key, count) in [
            (
                "cluster.takeover_ids_waiting_max",
                self.takeover_ids_waiting_max,
            ),
            (
                "cluster.takeover_ids_remembered_max",
                self.takeover_ids_remembered_max,
            ),
        ] {
            if !(1..=TAKEOVER_IDS_MAX).contains(&count) {
                return Err(ConfigError::invalid(
                    key,
                    &format!("must be 1 to {TAKEOVER_IDS_MAX}"),
                ));
            }
        }
        if !(1..=TAKEOVER_REMEMBERED_S_MAX).contains(&self.takeover_remembered_s) {
            return Err(ConfigError::invalid(
                "cluster.takeover_remembered_s",
                &format!("must be 1 to {TAKEOVER_REMEMBERED_S_MAX} seconds"),
            ));
        }
        self.validate_sessions()?;
        for (key, stream) in [
            ("cluster.retained_stream", &self.retained_stream),
            ("cluster.qos_stream", &self.qos_stream),
        ] {
            let stream_ok = stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if stream.is_empty() || stream.len() > RETAINED_STREAM_BYTES_MAX || !stream_ok {
                return Err(ConfigError::invalid(
                    key,
                    &format!(
                        "must be 1 to {RETAINED_STREAM_BYTES_MAX} bytes of letters, digits, `_` and `-`"
                    ),
                ));
            }
        }
        if self.qos_stream == self.retained_stream {
            return Err(ConfigError::invalid(
                "cluster.qos_stream",
                "must differ from `retained_stream`",
            ));
        }
        self.validate_qos()?;
        if self
            .retained_replicas
            .is_some_and(|replicas| replicas == 0 || replicas > RETAINED_REPLICAS_MAX)
        {
            return Err(ConfigError::invalid(
                "cluster.retained_replicas",
                &format!("must be 1 to {RETAINED_REPLICAS_MAX}"),
            ));
        }
        // JetStream takes `max_bytes` as an i64.
        if !(RETAINED_STREAM_BYTES_MIN..=i64::MAX as u64).contains(&self.retained_stream_bytes_max)
        {
            return Err(ConfigError::invalid(
                "cluster.retained_stream_bytes_max",
                &format!("must be at least {RETAINED_STREAM_BYTES_MIN}"),
            ));
        }
        if !(1..=RETAINED_UNSENT_BYTES_MAX).contains(&self.retained_unsent_bytes_max) {
            return Err(ConfigError::invalid(
                "cluster.retained_unsent_bytes_max",
                &format!("must be 1 to {RETAINED_UNSENT_BYTES_MAX}"),
            ));
        }
        Ok(())
    }

    /// The keys of persistent sessions across nodes.
    fn validate_sessions(&self) -> Result<(), ConfigError> {
        if !is_name(&self.sessions_bucket, SESSIONS_BUCKET_BYTES_MAX) {
            return Err(ConfigError::invalid(
                "cluster.sessions_bucket",
                &format!(
                    "must be 1 to {SESSIONS_BUCKET_BYTES_MAX} bytes of letters, digits, `_` and `-`"
                ),
            ));
        }
        // JetStream takes the bucket's bound as a signed 64-bit number.
        if !(1..=i64::MAX as u64).contains(&self.sessions_bucket_bytes_max) {
            return Err(ConfigError::invalid(
                "cluster.sessions_bucket_bytes_max",
                "must be at least 1",
            ));
        }
        for (key, ms, max) in [
            (
                "cluster.session_sync_interval_ms",
                self.session_sync_interval_ms,
                SESSION_SYNC_INTERVAL_MS_MAX,
            ),
            (
                "cluster.session_fetch_timeout_ms",
                self.session_fetch_timeout_ms,
                SESSION_FETCH_TIMEOUT_MS_MAX,
            ),
            (
                "cluster.session_stop_write_ms",
                self.session_stop_write_ms,
                SESSION_STOP_WRITE_MS_MAX,
            ),
        ] {
            if !(1..=max).contains(&ms) {
                return Err(ConfigError::invalid(
                    key,
                    &format!("must be 1 to {max} milliseconds"),
                ));
            }
        }
        if !(1..=SESSIONS_WAITING_MAX).contains(&self.sessions_waiting_max) {
            return Err(ConfigError::invalid(
                "cluster.sessions_waiting_max",
                &format!("must be 1 to {SESSIONS_WAITING_MAX}"),
            ));
        }
        if self.session_replay_margin_ms > SESSION_REPLAY_MARGIN_MS_MAX {
            return Err(ConfigError::invalid(
                "cluster.session_replay_margin_ms",
                &format!("must be 0 to {SESSION_REPLAY_MARGIN_MS_MAX} milliseconds"),
            ));
        }
        if self.session_sent_ids_max > SESSION_SENT_IDS_MAX {
            return Err(ConfigError::invalid(
                "cluster.session_sent_ids_max",
                &format!("must be 0 to {SESSION_SENT_IDS_MAX}"),
            ));
        }
        Ok(())
    }

    /// The bounds of QoS 1/2 across nodes.
    fn validate_qos(&self) -> Result<(), ConfigError> {
        if self.qos_stream_bytes_max == 0 {
            return Err(ConfigError::invalid(
                "cluster.qos_stream_bytes_max",
                "must be at least 1",
            ));
        }
        if !(1..=QOS_STREAM_AGE_MAX_S).contains(&self.qos_stream_age_max_s) {
            return Err(ConfigError::invalid(
                "cluster.qos_stream_age_max_s",
                &format!("must be 1 to {QOS_STREAM_AGE_MAX_S} seconds"),
            ));
        }
        if !(QOS_REDELIVER_AFTER_MS_MIN..=QOS_REDELIVER_AFTER_MS_MAX)
            .contains(&self.qos_redeliver_after_ms)
        {
            return Err(ConfigError::invalid(
                "cluster.qos_redeliver_after_ms",
                &format!(
                    "must be {QOS_REDELIVER_AFTER_MS_MIN} to {QOS_REDELIVER_AFTER_MS_MAX} milliseconds"
                ),
            ));
        }
        for (key, count) in [
            ("cluster.qos_acks_waiting_max", self.qos_acks_waiting_max),
            ("cluster.qos_ack_pending_max", self.qos_ack_pending_max),
            (
                "cluster.qos_delivered_remembered_max",
                self.qos_delivered_remembered_max,
            ),
        ] {
            if !(1..=QOS_COUNT_MAX).contains(&count) {
                return Err(ConfigError::invalid(
                    key,
                    &format!("must be 1 to {QOS_COUNT_MAX}"),
                ));
            }
        }
        Ok(())
    }

    /// A prefix of NATS tokens: no wildcards, no empty tokens, nothing the protocol line or
    /// the topic mapping would misread.
    fn validate_prefix(&self) -> Result<(), ConfigError> {
        let prefix = &self.subject_prefix;
        if prefix.is_empty() {
            return Ok(());
        }
        let tokens_ok = prefix
            .split('.')
            .all(|token| !token.is_empty() && is_token(token) && !token.contains(['*', '>', '/']));
        if prefix.len() > SUBJECT_PREFIX_BYTES_MAX || !tokens_ok {
            return Err(ConfigError::invalid(
                "cluster.subject_prefix",
                &format!(
                    "must be at most {SUBJECT_PREFIX_BYTES_MAX} bytes of dot-separated tokens \
                     without wildcards, `/` or spaces"
                ),
            ));
        }
        Ok(())
    }
}

/// A JetStream stream or bucket name of at most `bytes_max` bytes: letters, digits, `_`, `-`.
fn is_name(name: &str, bytes_max: usize) -> bool {
    let chars_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    !name.is_empty() && name.len() <= bytes_max && chars_ok
}

/// Printable ASCII without spaces.
fn is_token(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> ClusterSettings {
        ClusterSettings {
            nats: vec!["nats://127.0.0.1:4222".to_owned()],
            node: "edge-1".to_owned(),
            ..ClusterSettings::default()
        }
    }

    #[test]
    fn off_by_default() {
        let cluster = ClusterSettings::default();
        assert!(!cluster.enabled());
        assert_eq!(cluster.subject_prefix, "mqtt");
        assert!(!cluster.node.is_empty());
        assert_eq!(cluster.validate(), Ok(()));
    }

    #[test]
    fn checks_each_key() {
        assert_eq!(on().validate(), Ok(()));
        let key = |cluster: ClusterSettings| cluster.validate().err().and_then(|e| e.key);
        let bad_url = ClusterSettings {
            nats: vec!["http://x".to_owned()],
            ..on()
        };
        assert_eq!(key(bad_url).as_deref(), Some("cluster.nats"));
        for prefix in ["a..b", "a.*", "a.>", "a b", ".a", "a/b"] {
            let cluster = ClusterSettings {
                subject_prefix: prefix.to_owned(),
                ..on()
            };
            assert_eq!(key(cluster).as_deref(), Some("cluster.subject_prefix"));
        }
        let no_password = ClusterSettings {
            user: Some("u".to_owned()),
            ..on()
        };
        assert_eq!(key(no_password).as_deref(), Some("cluster.user"));
        let both = ClusterSettings {
            user: Some("u".to_owned()),
            password_file: Some("p".into()),
            token_file: Some("t".into()),
            ..on()
        };
        assert_eq!(key(both).as_deref(), Some("cluster.token_file"));
        let node = ClusterSettings {
            node: "a b".to_owned(),
            ..on()
        };
        assert_eq!(key(node).as_deref(), Some("cluster.node"));
        for stream in ["", "a.b", "a b", "a*"] {
            let cluster = ClusterSettings {
                retained_stream: stream.to_owned(),
                ..on()
            };
            assert_eq!(key(cluster).as_deref(), Some("cluster.retained_stream"));
        }
        let same_stream = ClusterSettings {
            qos_stream: "FANFARE_RETAINED".to_owned(),
            ..on()
        };
        assert_eq!(key(same_stream).as_deref(), Some("cluster.qos_stream"));
        let no_age = ClusterSettings {
            qos_stream_age_max_s: 0,
            ..on()
        };
        assert_eq!(key(no_age).as_deref(), Some("cluster.qos_stream_age_max_s"));
        let no_pending = ClusterSettings {
            qos_ack_pending_max: 0,
            ..on()
        };
        assert_eq!(
            key(no_pending).as_deref(),
            Some("cluster.qos_ack_pending_max")
        );
        for ms in [
            QOS_REDELIVER_AFTER_MS_MIN - 1,
            QOS_REDELIVER_AFTER_MS_MAX + 1,
        ] {
            let cluster = ClusterSettings {
                qos_redeliver_after_ms: ms,
                ..on()
            };
            assert_eq!(
                key(cluster).as_deref(),
                Some("cluster.qos_redeliver_after_ms")
            );
        }
        for replicas in [0, 6] {
            let cluster = ClusterSettings {
                retained_replicas: Some(replicas),
                ..on()
            };
            assert_eq!(key(cluster).as_deref(), Some("cluster.retained_replicas"));
        }
        for bytes in [0, RETAINED_STREAM_BYTES_MIN - 1, u64::MAX] {
            let cluster = ClusterSettings {
                retained_stream_bytes_max: bytes,
                ..on()
            };
            assert_eq!(
                key(cluster).as_deref(),
                Some("cluster.retained_stream_bytes_max")
            );
        }
        for bytes in [0, RETAINED_UNSENT_BYTES_MAX + 1] {
            let cluster = ClusterSettings {
                retained_unsent_bytes_max: bytes,
                ..on()
            };
            assert_eq!(
                key(cluster).as_deref(),
                Some("cluster.retained_unsent_bytes_max")
            );
        }
        let waiting = ClusterSettings {
            takeover_ids_waiting_max: 0,
            ..on()
        };
        assert_eq!(
            key(waiting).as_deref(),
            Some("cluster.takeover_ids_waiting_max")
        );
        let remembered = ClusterSettings {
            takeover_ids_remembered_max: TAKEOVER_IDS_MAX + 1,
            ..on()
        };
        assert_eq!(
            key(remembered).as_deref(),
            Some("cluster.takeover_ids_remembered_max")
        );
        for bucket in ["", "a.b", "a b"] {
            let cluster = ClusterSettings {
                sessions_bucket: bucket.to_owned(),
                ..on()
            };
            assert_eq!(key(cluster).as_deref(), Some("cluster.sessions_bucket"));
        }
        let never = ClusterSettings {
            session_sync_interval_ms: 0,
            ..on()
        };
        assert_eq!(
            key(never).as_deref(),
            Some("cluster.session_sync_interval_ms")
        );
        let far_back = ClusterSettings {
            session_replay_margin_ms: SESSION_REPLAY_MARGIN_MS_MAX + 1,
            ..on()
        };
        assert_eq!(
            key(far_back).as_deref(),
            Some("cluster.session_replay_margin_ms")
        );
        let many = ClusterSettings {
            session_sent_ids_max: SESSION_SENT_IDS_MAX + 1,
            ..on()
        };
        assert_eq!(key(many).as_deref(), Some("cluster.session_sent_ids_max"));
        let no_wait = ClusterSettings {
            session_fetch_timeout_ms: 0,
            ..on()
        };
        assert_eq!(
            key(no_wait).as_deref(),
            Some("cluster.session_fetch_timeout_ms")
        );
        let too_long = ClusterSettings {
            session_stop_write_ms: SESSION_STOP_WRITE_MS_MAX + 1,
            ..on()
        };
        assert_eq!(
            key(too_long).as_deref(),
            Some("cluster.session_stop_write_ms")
        );
        let forever = ClusterSettings {
            takeover_remembered_s: 0,
            ..on()
        };
        assert_eq!(
            key(forever).as_deref(),
            Some("cluster.takeover_remembered_s")
        );
    }
}
