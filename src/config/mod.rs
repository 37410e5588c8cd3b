//! Configuration: where to listen, how many shards, and every bound the broker enforces.
//!
//! Every limit is a named field with a default, a comment saying why, and its unit in the name.
//! `0` never means "unlimited": a limit is always a limit.

mod admin;
mod auth;
pub mod bridge;
mod cluster;
mod effective;
mod live;
mod persistence;
mod tls;

use std::net::SocketAddr;

pub use admin::AdminSettings;
pub use auth::AuthSettings;
pub use cluster::{ClusterSettings, NATS_URLS_MAX};
pub use effective::effective_toml;
pub use live::{LIVE_KEYS, Reload, SharedConfig};
pub use persistence::{DURABILITY_INTERVAL_MS_MAX, Durability, Persistence, StoreLimits};
pub use tls::{ClientAuth, KtlsMode, SniCertificate, TlsSettings, TlsVersion};

use crate::conn::{SlowConsumer, Transport};
use crate::protocol::mqtt::DecodeLimits;
use crate::protocol::ws::frame::FrameLimits;

mod trusted_proxies;
pub use trusted_proxies::{TRUSTED_PROXIES_MAX, TrustedProxies};

/// The largest MQTT packet: a 5-byte fixed header and the largest remaining length, 268 435 455
/// (MQTT 5 §1.5.5).
const PACKET_BYTES_PROTOCOL_MAX: u64 = 268_435_460;

/// Subscription Identifiers carried by one delivery. MQTT 5 asks for every identifier of the
/// matching subscriptions when the server sends one copy [MQTT-3.3.4-3]; this many are kept
/// per delivery, which bounds the extra bytes per PUBLISH. Past it, further identifiers of
/// overlapping subscriptions are left out.
pub const SUBSCRIPTION_IDS_PER_DELIVERY_MAX: usize = 4;

/// The payload every default-configured broker takes in one PUBLISH: 1 MiB.
const PAYLOAD_BYTES_GUARANTEED: u32 = 1024 * 1024;

/// The default `packet_bytes_max`: [`PAYLOAD_BYTES_GUARANTEED`] and 16 KiB for the rest of the
/// packet. The rest is at most 5 (fixed header) + 2 + 1 024 (topic of the default
/// `topic_bytes_max`) + 2 (packet id) + 4 (property length) bytes, which leaves 15 347 bytes
/// for MQTT 5 properties.
const PACKET_BYTES_DEFAULT: u32 = PAYLOAD_BYTES_GUARANTEED + 16 * 1024;

/// Every bound the broker enforces on what peers control.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Largest MQTT packet accepted, fixed header included. Limits the spill allocation a
    /// peer controls; checked on the fixed header before the body is read.
    ///
    /// 1 MiB + 16 KiB by default: a 1 MiB payload, the size client test suites send, fits
    /// with a topic of `topic_bytes_max`, its packet id and 15 347 bytes of MQTT 5 properties
    /// ([`PAYLOAD_BYTES_GUARANTEED`]).
    pub packet_bytes_max: u32,
    /// Longest topic name or filter, in bytes. The spec allows 65 535; a live-score topic is
    /// tens of bytes, and every byte is stored per subscription.
    pub topic_bytes_max: u16,
    /// Most levels in a topic name or filter: bounds the trie walk per publish.
    pub topic_levels_max: u16,
    /// Longest client identifier, in bytes.
    pub client_id_bytes_max: u16,
    /// Most subscriptions one session may hold: bounds the trie memory a client controls.
    pub subscriptions_per_session_max: u32,
    /// Most outgoing QoS 1/2 publishes awaiting acknowledgement per session.
    pub inflight_max: u16,
    /// Most incoming QoS 2 publishes awaiting PUBREL per session.
    pub inbound_qos2_max: u16,
    /// Topic aliases an MQTT 5 client may set on one connection (§3.3.2.3.4), advertised as
    /// Topic Alias Maximum in CONNACK. Each holds a copy of a topic name: worst case per
    /// connection `topic_aliases_max` × `topic_bytes_max` = 64 × 1 KiB.
    pub topic_aliases_max: u16,
    /// Outbound Topic Aliases one shard numbers (§3.3.2.3.4): the first this many topics
    /// delivered to MQTT 5 clients that accept aliases get a number, shared by all of them, and
    /// are then sent to each connection by name once and by number after. Each holds a copy of
    /// a topic name: worst case per shard 1 024 × `topic_bytes_max` = 1 MiB; per connection one
    /// bit per number it may be sent. 0 turns outbound aliases off.
    pub topic_aliases_per_shard_max: u16,
    /// Bytes of QoS 1/2 messages queued for a session that is offline or whose in-flight window
    /// is full. Past it, the oldest queued message is dropped and counted.
    pub session_queue_bytes_max: u64,
    /// Bytes waiting to be sent on one connection. Past it a QoS 0 publish meets the slow
    /// consumer policy ([`SlowConsumer`]); a packet that may not be dropped closes the
    /// connection past twice this bound. A message alone in an empty queue is always taken.
    ///
    /// 64 KiB by default, suited to browsers: at a live feed's rate (tens of ~100-byte updates
    /// per second) it is seconds of backlog, more than a healthy reader ever holds, while a
    /// stalled one costs a bounded amount. Worst case per shard: 20 000 connections × 64 KiB
    /// = 1.25 GiB of queued bytes counted — but queued QoS 0 publishes are shared `Rc` bytes,
    /// so the memory really held is ~40 B per queued entry plus one copy per message.
    pub queue_bytes_max: u64,
    /// Most retained messages held (each shard holds a replica).
    pub retained_messages_max: u32,
    /// Bytes of retained messages each shard's replica holds (topic, payload, properties and
    /// the ~70-byte envelope of each). Past it a retained publish is forwarded but not stored. A
    /// score service holds hundreds of topics of ~100 B; the bound is for what a client could
    /// otherwise fill with large payloads: 16 shards × 64 MiB = 1 GiB at most.
    pub retained_bytes_max: u64,
    /// Largest WebSocket frame payload accepted (close 1009 past it). A browser sends one
    /// packet per frame, so the default is `packet_bytes_max` and a few bytes: the largest
    /// packet fits one frame, with a small one (a PUBACK) after it in the same message.
    pub ws_frame_bytes_max: u32,
    /// Largest HTTP upgrade request, in bytes (400 past it).
    pub ws_handshake_bytes_max: u32,
    /// Time from accept to a complete WebSocket upgrade request.
    pub ws_handshake_timeout_ms: u32,
    /// Time from accept (or upgrade) to a complete CONNECT packet.
    pub connect_timeout_ms: u32,
    /// Longest keep-alive an MQTT 5 client gets, in seconds. One that asks for more, or for
    /// 0 (none), gets this as Server Keep Alive in CONNACK (§3.2.2.3.14) and is held to it.
    /// 60 s by default: the idle timeout of common load balancers in front of WebSocket
    /// servers, which cut connections that stay quiet longer without telling either end.
    /// MQTT 3.1.x has no way to tell a client another value, so its own stands.
    pub keep_alive_max_s: u16,
    /// Most connections one shard serves; accepts past it are closed at once.
    pub connections_per_shard_max: u32,
    /// Messages one shard's lock-free queue to another holds; allocated at start-up for every
    /// pair of shards (24 B a slot: 16 shards × 15 × 1 024 × 24 B = 5.6 MiB in all).
    pub cross_shard_queue_len_max: u32,
    /// Bytes of messages (topic, payload, properties and their envelope) a shard keeps for
    /// other shards whose queues are full. Past it, the connections whose publishes feed it are
    /// not read until it is back under half of it: publishers are slowed, nothing is dropped.
    /// Worst case per shard: this bound plus one turn's publishes.
    pub cross_shard_backlog_bytes_max: u64,
    /// Persistent sessions kept per shard while their clients are away.
    pub offline_sessions_per_shard_max: u32,
    /// Largest file served over plain HTTP. Files are read whole into memory in the event
    /// loop, and a response must fit the send queue (at most twice `queue_bytes_max`).
    pub http_file_bytes_max: u64,
    /// Bytes of served files each shard keeps in memory (file plus its gzip form).
    pub http_cache_bytes_max: u64,
    /// Publishes per second one connection may send (a token bucket holding one second's
    /// worth); past it the connection is not read until it is back within the rate. The
    /// default, a million, is above what one connection can push through one shard, since a
    /// benchmark's or a bridge's single publisher legitimately sends hundreds of thousands a
    /// second: set it to what the deployment's publishers need.
    pub publish_rate_max: u32,
    /// The same in bytes of topic and payload per second (default 1 GiB/s).
    pub publish_bytes_rate_max: u64,
    /// Past either rate an MQTT 5 client gets DISCONNECT 0x96 Message rate too high instead
    /// of being slowed down (3.x clients are always slowed down: they have no such code).
    pub disconnect_on_rate: bool,
    /// Connections one client address (an IPv6 /64) may hold open, across shards; past it an
    /// accept is closed at once. The default lets a benchmark open a shard's worth from one
    /// address; behind carrier-grade NAT thousands of browsers share one address, so set it
    /// with that in mind.
    pub connections_per_ip_max: u32,
    /// New connections per second from one client address (a token bucket holding one
    /// second's worth), against reconnect storms and floods.
    pub connect_rate_per_ip_max: u32,
    /// After a connection's last packet (a DISCONNECT with its reason, a close frame, an HTTP
    /// error) its write side is shut and what the peer still sends is read and dropped for at
    /// most this long, until the peer closes: closing with unread input would make the kernel
    /// reset the connection, and a client still writing would never read the reason.
    pub close_linger_ms: u32,
    /// Connections one shard lets linger at once; past it a connection closes at once (its
    /// reason may then be lost to a reset, as before).
    pub lingering_closes_per_shard_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            packet_bytes_max: PACKET_BYTES_DEFAULT,
            topic_bytes_max: 1024,
            topic_levels_max: 32,
            client_id_bytes_max: 256,
            subscriptions_per_session_max: 1024,
            inflight_max: 32,
            inbound_qos2_max: 64,
            topic_aliases_max: 64,
            topic_aliases_per_shard_max: 1024,
            session_queue_bytes_max: 1024 * 1024,
            queue_bytes_max: 64 * 1024,
            retained_messages_max: 100_000,
            retained_bytes_max: 64 * 1024 * 1024,
            ws_frame_bytes_max: PACKET_BYTES_DEFAULT + 16,
            ws_handshake_bytes_max: 8 * 1024,
            ws_handshake_timeout_ms: 10_000,
            connect_timeout_ms: 10_000,
            keep_alive_max_s: 60,
            connections_per_shard_max: 20_000,
            cross_shard_queue_len_max: 1024,
            cross_shard_backlog_bytes_max: 64 * 1024 * 1024,
            offline_sessions_per_shard_max: 100_000,
            http_file_bytes_max: 1024 * 1024,
            http_cache_bytes_max: 16 * 1024 * 1024,
            publish_rate_max: 1_000_000,
            publish_bytes_rate_max: 1024 * 1024 * 1024,
            disconnect_on_rate: false,
            connections_per_ip_max: 20_000,
            connect_rate_per_ip_max: 10_000,
            close_linger_ms: 2000,
            lingering_closes_per_shard_max: 4096,
        }
    }
}

impl Limits {
    /// The bounds the MQTT decoder enforces on what a peer sends.
    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            packet_bytes_max: self.packet_bytes_max,
            topic_bytes_max: self.topic_bytes_max,
            topic_levels_max: self.topic_levels_max,
            client_id_bytes_max: self.client_id_bytes_max,
            // One SUBSCRIBE cannot usefully carry more filters than a session may hold.
            filters_per_packet_max: self.subscriptions_per_session_max,
        }
    }

    /// The most bytes a PUBLISH can grow by when the broker re-encodes it for an MQTT 5
    /// subscriber: the topic name a Topic Alias stood for (at most `topic_bytes_max`), an
    /// outbound Topic Alias (3 bytes), a Message Expiry Interval (5 bytes), up to
    /// [`SUBSCRIPTION_IDS_PER_DELIVERY_MAX`]
    /// Subscription Identifiers (5 bytes each), a property length where a 3.x packet had none
    /// (up to 4 bytes), and a remaining length one to three bytes longer.
    pub fn publish_growth_bytes_max(&self) -> u64 {
        let ids = SUBSCRIPTION_IDS_PER_DELIVERY_MAX as u64 * 5;
        u64::from(self.topic_bytes_max) + 3 + 5 + ids + 4 + 3
    }

    /// The bounds the WebSocket frame decoder enforces.
    pub fn frame_limits(&self) -> FrameLimits {
        FrameLimits {
            frame_bytes_max: u64::from(self.ws_frame_bytes_max),
            // A message may carry several packets; bound it like a frame of the same size.
            message_bytes_max: u64::from(self.ws_frame_bytes_max),
        }
    }

    /// Checks the relations between limits that no single field can express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&'static str, u64); 24] = [
            ("packet_bytes_max", self.packet_bytes_max.into()),
            ("topic_bytes_max", self.topic_bytes_max.into()),
            ("topic_levels_max", self.topic_levels_max.into()),
            ("client_id_bytes_max", self.client_id_bytes_max.into()),
            (
                "subscriptions_per_session_max",
                self.subscriptions_per_session_max.into(),
            ),
            ("inflight_max", self.inflight_max.into()),
            ("inbound_qos2_max", self.inbound_qos2_max.into()),
            ("session_queue_bytes_max", self.session_queue_bytes_max),
            ("queue_bytes_max", self.queue_bytes_max),
            ("retained_bytes_max", self.retained_bytes_max),
            ("ws_frame_bytes_max", self.ws_frame_bytes_max.into()),
            ("ws_handshake_bytes_max", self.ws_handshake_bytes_max.into()),
            (
                "ws_handshake_timeout_ms",
                self.ws_handshake_timeout_ms.into(),
            ),
            ("connect_timeout_ms", self.connect_timeout_ms.into()),
            ("keep_alive_max_s", self.keep_alive_max_s.into()),
            (
                "connections_per_shard_max",
                self.connections_per_shard_max.into(),
            ),
            (
                "cross_shard_queue_len_max",
                self.cross_shard_queue_len_max.into(),
            ),
            (
                "cross_shard_backlog_bytes_max",
                self.cross_shard_backlog_bytes_max,
            ),
            ("publish_rate_max", self.publish_rate_max.into()),
            ("publish_bytes_rate_max", self.publish_bytes_rate_max),
            ("connections_per_ip_max", self.connections_per_ip_max.into()),
            (
                "connect_rate_per_ip_max",
                self.connect_rate_per_ip_max.into(),
            ),
            ("close_linger_ms", self.close_linger_ms.into()),
            (
                "lingering_closes_per_shard_max",
                self.lingering_closes_per_shard_max.into(),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(
                    key,
                    "must be at least 1 (0 does not mean unlimited)",
                ));
            }
        }
        // A packet is at least 2 bytes of fixed header: anything smaller could not carry PINGREQ.
        // At the top, every PUBLISH accepted must still be expressible once the broker has
        // re-encoded it for a subscriber, which may add bytes (`publish_growth_bytes_max`).
        let packet_bytes_max = PACKET_BYTES_PROTOCOL_MAX - self.publish_growth_bytes_max();
        if self.packet_bytes_max < 2 || u64::from(self.packet_bytes_max) > packet_bytes_max {
            return Err(ConfigError::invalid(
                "packet_bytes_max",
                &format!(
                    "must be between 2 and {packet_bytes_max}: the largest packet MQTT can express (268435460) less what re-encoding a PUBLISH for a subscriber may add with this topic_bytes_max"
                ),
            ));
        }
        if self.inflight_max > 65_535 / 2 {
            return Err(ConfigError::invalid(
                "inflight_max",
                "must leave packet identifiers free: at most 32767",
            ));
        }
        self.validate_http()?;
        if self.connections_per_shard_max > 1_000_000 {
            return Err(ConfigError::invalid(
                "connections_per_shard_max",
                "must be at most 1000000",
            ));
        }
        Ok(())
    }

    /// A served file goes out whole as the only chunk of a connection that has nothing else
    /// queued, which the send queue always accepts; the file limit alone bounds it.
    fn validate_http(&self) -> Result<(), ConfigError> {
        if self.http_file_bytes_max == 0 || self.http_cache_bytes_max == 0 {
            return Err(ConfigError::invalid(
                "http_file_bytes_max",
                "http_file_bytes_max and http_cache_bytes_max must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A `[[policy]]` table: the slow consumer policy of the publishes whose topic name matches
/// `filter`, overriding the listener's. The first matching policy wins.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicPolicy {
    pub filter: String,
    pub on_full: SlowConsumer,
}

/// Most `[[policy]]` tables: each publish is checked against all of them, once per shard.
pub const TOPIC_POLICIES_MAX: usize = 64;

/// Per listener, whether a connection from a trusted proxy ([`Config::trusted_proxies`]) starts
/// with a PROXY protocol header. A connection from anywhere else is taken as it comes, and
/// refused if it starts with a header: only a trusted proxy may say who the client is. On a TLS
/// listener the header comes before the TLS handshake, as a TCP proxy passes TLS through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyProtocol {
    pub tcp: bool,
    /// The header comes before the upgrade request.
    pub ws: bool,
    pub mqtts: bool,
    pub wss: bool,
}

/// The longest `sys_interval_s`: a day. A longer one is a typo more likely than a wish, and
/// the uptime and rates it publishes would say little.
pub const SYS_INTERVAL_S_MAX: u32 = 86_400;

/// The longest `drain_s`: an hour. The replaced broker holds its memory and its clients' old
/// sessions that long; a longer drain is more likely a typo.
pub const DRAIN_S_MAX: u32 = 3_600;

/// How log lines are written to stderr (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `[time level target] message`, for a person reading a terminal or the journal.
    #[default]
    Text,
    /// One JSON object per line (`time`, `level`, `target`, `message`), for log collectors.
    Json,
}

impl LogFormat {
    /// From the command line's `--log-format`.
    pub fn parse(flag: &str, value: &str) -> Result<LogFormat, ConfigError> {
        match value {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(ConfigError::invalid(flag, "must be text or json")),
        }
    }
}

/// Most entries of `ws_allowed_origins`: every upgrade that names an origin is compared with
/// all of them.
pub const WS_ALLOWED_ORIGINS_MAX: usize = 256;

/// Whether `origin` is an origin as a browser serializes it in `Origin` (RFC 6454 §6.1):
/// `scheme://host` with an optional `:port`, no path, not even a trailing slash; or `null`.
fn is_serialized_origin(origin: &str) -> bool {
    if origin == "null" {
        return true;
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let authority_ok = !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '?' | '#' | '@' | '\\'));
    scheme_ok && authority_ok
}

/// Where and how the broker listens, plus its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Plain MQTT over TCP; `None` turns the listener off.
    pub tcp: Option<SocketAddr>,
    /// MQTT over WebSocket; `None` turns the listener off.
    pub ws: Option<SocketAddr>,
    /// MQTT over TLS (conventionally port 8883); off unless set.
    pub mqtts: Option<SocketAddr>,
    /// MQTT over WebSocket over TLS (443 or 8443), which also serves the files and the demo
    /// over https; off unless set.
    pub wss: Option<SocketAddr>,
    /// Certificates and settings of the TLS listeners (`[tls]`).
    pub tls: TlsSettings,
    /// Credentials and topic rules (`[auth]`).
    pub auth: AuthSettings,
    /// The HTTP path the WebSocket upgrade must use.
    pub ws_path: String,
    /// Whether an upgrade request that offers no `Sec-WebSocket-Protocol` is accepted.
    pub ws_allow_no_subprotocol: bool,
    /// The `Origin`s a browser may open a WebSocket from, compared ASCII case-insensitively;
    /// empty: any. A request without `Origin` (not from a browser) is always accepted; at most
    /// [`WS_ALLOWED_ORIGINS_MAX`].
    pub ws_allowed_origins: Vec<String>,
    /// The listeners whose connections from a trusted proxy start with a PROXY protocol
    /// header (version 1 or 2), which names the client.
    pub proxy_protocol: ProxyProtocol,
    /// The proxies whose PROXY header, `Forwarded` and `X-Forwarded-For` are believed.
    pub trusted_proxies: TrustedProxies,
    /// Shard threads, one per core by default.
    pub shards: usize,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: String,
    /// How log lines are written: text (default) or one JSON object per line.
    pub log_format: LogFormat,
    /// Receive buffers each shard lends to the kernel (multishot receive). Idle connections
    /// hold none, so this bounds receive memory per shard, not per connection.
    pub recv_buffers_per_shard: u16,
    /// Size of one receive buffer.
    pub recv_buffer_bytes: u32,
    /// `TCP_NOTSENT_LOWAT` of accepted sockets: the kernel takes more bytes from a send only
    /// while less than this is unsent in the socket. Backlog then waits in the broker's queue,
    /// where the slow consumer policy can drop or conflate it, instead of as a kernel copy per
    /// socket that nothing can take back.
    pub tcp_notsent_lowat_bytes: u32,
    /// The slow consumer policy of connections accepted on the TCP listener.
    pub tcp_slow_consumer: SlowConsumer,
    /// The slow consumer policy of connections accepted on the WebSocket listener.
    pub ws_slow_consumer: SlowConsumer,
    /// Per topic filter policies, first match wins; at most [`TOPIC_POLICIES_MAX`].
    pub policies: Vec<TopicPolicy>,
    pub limits: Limits,
    /// Serve the built-in demo page and `fanfare.js` to plain HTTP requests on the
    /// WebSocket listener.
    pub http_builtin: bool,
    /// Serve the files of this directory too (`None`: off).
    pub http_dir: Option<std::path::PathBuf>,
    /// Answer `GET /metrics` on the WebSocket listener too. Off by default: internal counters
    /// on an internet-facing port tell strangers too much; the operations listener serves them.
    pub http_metrics: bool,
    /// The operations listener: metrics, health, the admin and publish API.
    pub admin: AdminSettings,
    /// What the Response Information an MQTT 5 client asks for starts with; the client
    /// identifier follows, so each client gets a topic of its own for responses. Not `$`-led
    /// by default: clients may not publish to `$` topics under topic rules, and responders
    /// must publish there.
    pub response_topic_prefix: String,
    /// Seconds between two publications of the retained `$SYS/...` topics (the broker's
    /// counters summed over shards); `0` turns them off, as Mosquitto's `sys_interval` does.
    /// At most [`SYS_INTERVAL_S_MAX`].
    pub sys_interval_s: u32,
    /// Seconds over which a broker replaced by `fanfare --takeover` disconnects its clients,
    /// spread evenly, so that they do not all reconnect to the new one in the same second.
    /// At most [`DRAIN_S_MAX`]; `0` disconnects them all at once.
    pub drain_s: u32,
    /// `data_dir`, `durability`, `durability_interval_ms`: retained messages across restarts;
    /// `store_*` and `compaction_*`: the store thread's bounds.
    pub persistence: Persistence,
    /// `[cluster]` and `--nats`: cluster mode over NATS, off by default.
    pub cluster: ClusterSettings,
    /// `[[bridge]]`: links to other MQTT brokers, none by default.
    pub bridges: Vec<bridge::BridgeSettings>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tcp: Some(SocketAddr::from(([127, 0, 0, 1], 1883))),
            ws: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            mqtts: None,
            wss: None,
            tls: TlsSettings::default(),
            auth: AuthSettings::default(),
            ws_path: "/mqtt".to_owned(),
            ws_allow_no_subprotocol: true,
            ws_allowed_origins: Vec::new(),
            proxy_protocol: ProxyProtocol::default(),
            trusted_proxies: TrustedProxies::default(),
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            recv_buffers_per_shard: 1024,
            recv_buffer_bytes: 4096,
            tcp_notsent_lowat_bytes: 16 * 1024,
            tcp_slow_consumer: SlowConsumer::DropOldest,
            ws_slow_consumer: SlowConsumer::DropOldest,
            policies: Vec::new(),
            limits: Limits::default(),
            http_builtin: true,
            http_dir: None,
            http_metrics: false,
            admin: AdminSettings::default(),
            response_topic_prefix: "response/".to_owned(),
            sys_interval_s: 10,
            drain_s: 10,
            persistence: Persistence::default(),
            cluster: ClusterSettings::default(),
            bridges: Vec::new(),
        }
    }
}

/// A configuration problem, naming the key (and the file line when it came from a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub message: String,
    /// The key whose value is wrong, when one is (not for a file that does not parse).
    pub key: Option<String>,
}

impl ConfigError {
    pub(crate) fn invalid(key: &str, problem: &str) -> ConfigError {
        ConfigError {
            message: format!("invalid value for `{key}`: {problem}"),
            key: Some(key.to_owned()),
        }
    }

    /// The same error, naming the command-line flag `flag` instead when it is about `key`:
    /// the user should read the name they typed.
    pub fn from_flag(self, key: &str, flag: &str) -> ConfigError {
        if self.key.as_deref() != Some(key) {
            return self;
        }
        ConfigError {
            message: self
                .message
                .replacen(&format!("`{key}`"), &format!("`{flag}`"), 1),
            key: Some(flag.to_owned()),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The TOML file's shape; every field optional so the file states only what differs.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    tcp: Option<String>,
    ws: Option<String>,
    mqtts: Option<String>,
    wss: Option<String>,
    tls: Option<tls::FileTls>,
    auth: Option<auth::FileAuth>,
    ws_path: Option<String>,
    ws_allow_no_subprotocol: Option<bool>,
    ws_allowed_origins: Option<Vec<String>>,
    proxy_protocol: Option<bool>,
    tcp_proxy_protocol: Option<bool>,
    ws_proxy_protocol: Option<bool>,
    mqtts_proxy_protocol: Option<bool>,
    wss_proxy_protocol: Option<bool>,
    trusted_proxies: Option<Vec<String>>,
    shards: Option<usize>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    recv_buffers_per_shard: Option<u16>,
    recv_buffer_bytes: Option<u32>,
    tcp_notsent_lowat_bytes: Option<u32>,
    tcp_slow_consumer: Option<SlowConsumer>,
    ws_slow_consumer: Option<SlowConsumer>,
    policy: Option<Vec<TopicPolicy>>,
    limits: Option<FileLimits>,
    http_builtin: Option<bool>,
    http_dir: Option<std::path::PathBuf>,
    http_metrics: Option<bool>,
    admin: Option<String>,
    admin_token_file: Option<std::path::PathBuf>,
    admin_metrics_public: Option<bool>,
    admin_body_bytes_max: Option<u64>,
    admin_head_bytes_max: Option<u32>,
    admin_connections_max: Option<u32>,
    admin_timeout_ms: Option<u32>,
    admin_page_len_max: Option<u32>,
    response_topic_prefix: Option<String>,
    sys_interval_s: Option<u32>,
    drain_s: Option<u32>,
    data_dir: Option<std::path::PathBuf>,
    durability: Option<Durability>,
    durability_interval_ms: Option<u32>,
    store_queue_flushes_per_shard_max: Option<u32>,
    store_flushes_per_write_max: Option<u32>,
    compaction_log_ratio: Option<u32>,
    compaction_log_bytes_min: Option<u64>,
    store_retry_interval_ms: Option<u32>,
    cluster: Option<cluster::FileCluster>,
    bridge: Option<Vec<bridge::BridgeSettings>>,
}

macro_rules! file_limits {
    ($($field:ident: $ty:ty),* $(,)?) => {
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileLimits { $($field: Option<$ty>),* }

        impl FileLimits {
            fn apply(self, limits: &mut Limits) {
                $(if let Some(value) = self.$field { limits.$field = value; })*
            }
        }
    };
}

file_limits! {
    packet_bytes_max: u32,
    topic_bytes_max: u16,
    topic_levels_max: u16,
    client_id_bytes_max: u16,
    subscriptions_per_session_max: u32,
    inflight_max: u16,
    inbound_qos2_max: u16,
    topic_aliases_max: u16,
    topic_aliases_per_shard_max: u16,
    session_queue_bytes_max: u64,
    queue_bytes_max: u64,
    retained_messages_max: u32,
    retained_bytes_max: u64,
    ws_frame_bytes_max: u32,
    ws_handshake_bytes_max: u32,
    ws_handshake_timeout_ms: u32,
    connect_timeout_ms: u32,
    keep_alive_max_s: u16,
    connections_per_shard_max: u32,
    cross_shard_queue_len_max: u32,
    cross_shard_backlog_bytes_max: u64,
    offline_sessions_per_shard_max: u32,
    http_file_bytes_max: u64,
    http_cache_bytes_max: u64,
    publish_rate_max: u32,
    publish_bytes_rate_max: u64,
    disconnect_on_rate: bool,
    connections_per_ip_max: u32,
    connect_rate_per_ip_max: u32,
    close_linger_ms: u32,
    lingering_closes_per_shard_max: u32,
}

impl Config {
    /// Reads a TOML configuration on top of the defaults. `source` names the file in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError {
            message: format!("{source}: {e}"),
            key: None,
        })?;
        let mut config = Config::default();
        if let Some(addr) = file.tcp {
            config.tcp = parse_listener("tcp", &addr)?;
        }
        if let Some(addr) = file.ws {
            config.ws = parse_listener("ws", &addr)?;
        }
        if let Some(addr) = file.mqtts {
            config.mqtts = parse_listener("mqtts", &addr)?;
        }
        if let Some(addr) = file.wss {
            config.wss = parse_listener("wss", &addr)?;
        }
        if let Some(tls) = file.tls {
            tls.apply(&mut config.tls);
        }
        if let Some(auth) = file.auth {
            auth.apply(&mut config.auth);
        }
        if let Some(path) = file.ws_path {
            config.ws_path = path;
        }
        if let Some(allow) = file.ws_allow_no_subprotocol {
            config.ws_allow_no_subprotocol = allow;
        }
        if let Some(origins) = file.ws_allowed_origins {
            config.ws_allowed_origins = origins;
        }
        // `proxy_protocol` sets every listener; a listener's own key overrides it.
        let every = file.proxy_protocol;
        let proxy = &mut config.proxy_protocol;
        for (own, on) in [
            (file.tcp_proxy_protocol, &mut proxy.tcp),
            (file.ws_proxy_protocol, &mut proxy.ws),
            (file.mqtts_proxy_protocol, &mut proxy.mqtts),
            (file.wss_proxy_protocol, &mut proxy.wss),
        ] {
            if let Some(value) = own.or(every) {
                *on = value;
            }
        }
        if let Some(entries) = file.trusted_proxies {
            config.trusted_proxies = TrustedProxies::parse("trusted_proxies", &entries)?;
        }
        if let Some(shards) = file.shards {
            config.shards = shards;
        }
        if let Some(level) = file.log_level {
            config.log_level = level;
        }
        if let Some(format) = file.log_format {
            config.log_format = format;
        }
        if let Some(count) = file.recv_buffers_per_shard {
            config.recv_buffers_per_shard = count;
        }
        if let Some(bytes) = file.recv_buffer_bytes {
            config.recv_buffer_bytes = bytes;
        }
        if let Some(bytes) = file.tcp_notsent_lowat_bytes {
            config.tcp_notsent_lowat_bytes = bytes;
        }
        if let Some(policy) = file.tcp_slow_consumer {
            config.tcp_slow_consumer = policy;
        }
        if let Some(policy) = file.ws_slow_consumer {
            config.ws_slow_consumer = policy;
        }
        if let Some(policies) = file.policy {
            config.policies = policies;
        }
        if let Some(limits) = file.limits {
            limits.apply(&mut config.limits);
        }
        if let Some(builtin) = file.http_builtin {
            config.http_builtin = builtin;
        }
        config.http_dir = file.http_dir.or(config.http_dir);
        if let Some(metrics) = file.http_metrics {
            config.http_metrics = metrics;
        }
        admin::FileAdmin {
            listen: file.admin,
            token_file: file.admin_token_file,
            metrics_public: file.admin_metrics_public,
            body_bytes_max: file.admin_body_bytes_max,
            head_bytes_max: file.admin_head_bytes_max,
            connections_max: file.admin_connections_max,
            timeout_ms: file.admin_timeout_ms,
            page_len_max: file.admin_page_len_max,
        }
        .apply(&mut config.admin)?;
        if let Some(prefix) = file.response_topic_prefix {
            config.response_topic_prefix = prefix;
        }
        if let Some(interval) = file.sys_interval_s {
            config.sys_interval_s = interval;
        }
        if let Some(drain) = file.drain_s {
            config.drain_s = drain;
        }
        config.persistence.data_dir = file.data_dir.or(config.persistence.data_dir);
        if let Some(durability) = file.durability {
            config.persistence.durability = durability;
        }
        if let Some(interval) = file.durability_interval_ms {
            config.persistence.durability_interval_ms = interval;
        }
        let store = &mut config.persistence.store;
        let bounds = [
            (
                file.store_queue_flushes_per_shard_max,
                &mut store.queue_flushes_per_shard_max,
            ),
            (
                file.store_flushes_per_write_max,
                &mut store.flushes_per_write_max,
            ),
            (file.compaction_log_ratio, &mut store.compaction_log_ratio),
            (file.store_retry_interval_ms, &mut store.retry_interval_ms),
        ];
        for (value, field) in bounds {
            if let Some(value) = value {
                *field = value;
            }
        }
        if let Some(bytes) = file.compaction_log_bytes_min {
            store.compaction_log_bytes_min = bytes;
        }
        if let Some(cluster) = file.cluster {
            cluster.apply(&mut config.cluster);
        }
        if let Some(bridges) = file.bridge {
            config.bridges = bridges;
        }
        Ok(config)
    }

    /// Reads the TOML file at `path` on top of the defaults, as `--config` does; not yet
    /// validated, since flags may still override it.
    pub fn read_file(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            message: format!("cannot read config file {path}: {e}"),
            key: None,
        })?;
        Config::from_toml(&text, path)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let listeners = [self.tcp, self.ws, self.mqtts, self.wss];
        if listeners.iter().all(Option::is_none) {
            return Err(ConfigError::invalid(
                "tcp",
                "at least one of `tcp`, `ws`, `mqtts` and `wss` must be enabled",
            ));
        }
        // Two listeners on one address would join one SO_REUSEPORT group, and the kernel would
        // hand each its share of the other's clients.
        let named = [
            ("tcp", self.tcp),
            ("ws", self.ws),
            ("mqtts", self.mqtts),
            ("wss", self.wss),
            ("admin", self.admin.listen),
        ];
        for (i, (key, addr)) in named.iter().enumerate() {
            let Some(addr) = addr.filter(|addr| addr.port() != 0) else {
                continue;
            };
            if let Some((other, _)) = named[..i].iter().find(|(_, a)| *a == Some(addr)) {
                return Err(ConfigError::invalid(
                    key,
                    &format!("{addr} is also the `{other}` listener's address"),
                ));
            }
        }
        self.tls
            .validate(self.mqtts.is_some() || self.wss.is_some())?;
        self.auth.validate()?;
        if !self.ws_path.starts_with('/') || self.ws_path.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "ws_path",
                "must start with `/` and contain no white space",
            ));
        }
        if self.shards == 0 || self.shards > 1024 {
            return Err(ConfigError::invalid("shards", "must be between 1 and 1024"));
        }
        if !matches!(
            self.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err(ConfigError::invalid(
                "log_level",
                "must be one of error, warn, info, debug, trace",
            ));
        }
        // The kernel takes a power-of-two ring of at most 32768 entries.
        if !self.recv_buffers_per_shard.is_power_of_two() || self.recv_buffers_per_shard > 32_768 {
            return Err(ConfigError::invalid(
                "recv_buffers_per_shard",
                "must be a power of two, at most 32768",
            ));
        }
        if !(512..=1024 * 1024).contains(&self.recv_buffer_bytes) {
            return Err(ConfigError::invalid(
                "recv_buffer_bytes",
                "must be between 512 and 1048576",
            ));
        }
        if let Some(dir) = self.http_dir.as_ref().filter(|dir| !dir.is_dir()) {
            return Err(ConfigError::invalid(
                "http_dir",
                &format!("`{}` is not a readable directory", dir.display()),
            ));
        }
        if !(1..=16 * 1024 * 1024).contains(&self.tcp_notsent_lowat_bytes) {
            return Err(ConfigError::invalid(
                "tcp_notsent_lowat_bytes",
                "must be between 1 and 16777216",
            ));
        }
        if self.policies.len() > TOPIC_POLICIES_MAX {
            return Err(ConfigError::invalid(
                "policy",
                &format!("at most {TOPIC_POLICIES_MAX} [[policy]] tables"),
            ));
        }
        for policy in &self.policies {
            if !crate::protocol::mqtt::topic::is_valid_topic_filter(&policy.filter) {
                return Err(ConfigError::invalid(
                    "policy.filter",
                    &format!("`{}` is not a valid topic filter", policy.filter),
                ));
            }
        }
        if self.sys_interval_s > SYS_INTERVAL_S_MAX {
            return Err(ConfigError::invalid(
                "sys_interval_s",
                &format!("must be at most {SYS_INTERVAL_S_MAX} (a day), or 0 for no $SYS topics"),
            ));
        }
        if self.drain_s > DRAIN_S_MAX {
            return Err(ConfigError::invalid(
                "drain_s",
                &format!("must be at most {DRAIN_S_MAX} (an hour)"),
            ));
        }
        self.validate_proxies()?;
        self.validate_response_topic_prefix()?;
        self.persistence.validate()?;
        self.cluster.validate()?;
        // A CONNECT that waits for its session from the cluster is closed at its connect
        // deadline: the wait must end first, with a new session if need be.
        if self.cluster.enabled()
            && self.cluster.session_fetch_timeout_ms >= self.limits.connect_timeout_ms
        {
            return Err(ConfigError::invalid(
                "cluster.session_fetch_timeout_ms",
                "must be shorter than limits.connect_timeout_ms",
            ));
        }
        bridge::validate(&self.bridges)?;
        self.admin.validate()?;
        self.limits.validate()
    }

    /// The PROXY protocol is taken from trusted proxies only, so with none listed no
    /// connection could ever send its header; and an origin that can never match is a typo.
    fn validate_proxies(&self) -> Result<(), ConfigError> {
        let proxy = self.proxy_protocol;
        for (on, listener) in [
            (proxy.tcp, "tcp"),
            (proxy.ws, "ws"),
            (proxy.mqtts, "mqtts"),
            (proxy.wss, "wss"),
        ] {
            if on && self.trusted_proxies.is_empty() {
                return Err(ConfigError::invalid(
                    "trusted_proxies",
                    &format!(
                        "must list the proxies that send PROXY headers: `proxy_protocol` is on for the {listener} listener, and a header is taken only from a trusted proxy"
                    ),
                ));
            }
        }
        if self.ws_allowed_origins.len() > WS_ALLOWED_ORIGINS_MAX {
            return Err(ConfigError::invalid(
                "ws_allowed_origins",
                &format!("at most {WS_ALLOWED_ORIGINS_MAX} origins"),
            ));
        }
        if let Some(bad) = self
            .ws_allowed_origins
            .iter()
            .find(|origin| !is_serialized_origin(origin))
        {
            return Err(ConfigError::invalid(
                "ws_allowed_origins",
                &format!(
                    "`{bad}` is not an origin like https://scores.example or http://localhost:8080 (scheme, host and port; no path, no trailing slash); leave the list empty to allow any"
                ),
            ));
        }
        Ok(())
    }

    /// The prefix must start a topic name: no wildcards, no NUL, room left in
    /// `topic_bytes_max` for a client identifier.
    fn validate_response_topic_prefix(&self) -> Result<(), ConfigError> {
        let prefix = &self.response_topic_prefix;
        let valid = crate::protocol::mqtt::topic::is_valid_topic_name(&format!("{prefix}x"));
        if !valid || prefix.len() >= usize::from(self.limits.topic_bytes_max) {
            return Err(ConfigError::invalid(
                "response_topic_prefix",
                "must be the start of a topic name (no `+`, `#` or NUL), shorter than topic_bytes_max",
            ));
        }
        Ok(())
    }

    /// What the WebSocket listener serves to plain HTTP requests.
    pub fn site(&self) -> crate::http::SiteConfig {
        crate::http::SiteConfig {
            builtin: self.http_builtin,
            dir: self.http_dir.clone(),
            file_bytes_max: self.limits.http_file_bytes_max,
            cache_bytes_max: self.limits.http_cache_bytes_max,
        }
    }

    /// The slow consumer policy of the listener that accepted a connection over `transport`.
    pub fn slow_consumer(&self, transport: Transport) -> SlowConsumer {
        match transport {
            Transport::Tcp => self.tcp_slow_consumer,
            Transport::Ws => self.ws_slow_consumer,
        }
    }
}

/// A listener address, or `off` / empty to disable that listener.
pub fn parse_listener(key: &str, value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if value.is_empty() || value == "off" {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| {
        ConfigError::invalid(
            key,
            &format!("`{value}` is not an address like 127.0.0.1:1883 (or `off`)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let config = Config::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.tcp, Some(SocketAddr::from(([127, 0, 0, 1], 1883))));
        assert_eq!(config.ws, Some(SocketAddr::from(([127, 0, 0, 1], 8080))));
    }

    #[test]
    fn a_session_fetch_ends_before_the_connect_deadline() {
        let mut config = Config::default();
        config.cluster.nats = vec!["nats://127.0.0.1:4222".to_owned()];
        assert_eq!(config.validate(), Ok(()));
        config.cluster.session_fetch_timeout_ms = config.limits.connect_timeout_ms;
        let key = config.validate().err().and_then(|e| e.key);
        assert_eq!(key.as_deref(), Some("cluster.session_fetch_timeout_ms"));
    }

    #[test]
    fn a_1_mib_payload_fits_the_default_packet_and_frame() {
        let limits = Limits::default();
        // Fixed header (5), topic (2 + topic_bytes_max), packet id (2), property length (4),
        // 15 347 bytes of properties, 1 MiB of payload.
        let packet = 5 + 2 + u32::from(limits.topic_bytes_max) + 2 + 4 + 15_347 + 1024 * 1024;
        assert_eq!(packet, limits.packet_bytes_max);
        assert!(limits.packet_bytes_max < limits.ws_frame_bytes_max);
    }

    #[test]
    fn keep_alive_cap_and_response_prefix() {
        let config = Config::default();
        assert_eq!(config.limits.keep_alive_max_s, 60);
        assert_eq!(config.response_topic_prefix, "response/");
        let config = Config::from_toml(
            "response_topic_prefix = \"rpc/\"\n[limits]\nkeep_alive_max_s = 300\n",
            "f.toml",
        )
        .expect("parses");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.limits.keep_alive_max_s, 300);
        assert_eq!(config.response_topic_prefix, "rpc/");
        let config =
            Config::from_toml("[limits]\nkeep_alive_max_s = 0\n", "f.toml").expect("parses");
        let err = config.validate().expect_err("zero");
        assert!(err.message.contains("keep_alive_max_s"), "{}", err.message);
        for bad in ["a/+/", "#", "a\u{0}b"] {
            let config = Config {
                response_topic_prefix: bad.to_owned(),
                ..Config::default()
            };
            let err = config.validate().expect_err(bad);
            assert!(
                err.message.contains("response_topic_prefix"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn an_error_names_the_flag_that_set_the_key() {
        let err = Config {
            shards: 0,
            ..Config::default()
        }
        .validate()
        .expect_err("zero shards");
        let flagged = err.clone().from_flag("shards", "--shards");
        assert!(
            flagged.message.contains("`--shards`"),
            "{}",
            flagged.message
        );
        assert_eq!(err.clone().from_flag("log_level", "--log-level"), err);
    }

    #[test]
    fn log_format_is_text_or_json() {
        assert_eq!(Config::default().log_format, LogFormat::Text);
        let config = Config::from_toml("log_format = \"json\"\n", "test.toml").expect("valid");
        assert_eq!(config.log_format, LogFormat::Json);
        let error = Config::from_toml("log_format = \"xml\"\n", "test.toml").expect_err("xml");
        assert!(error.message.contains("log_format"), "{}", error.message);
        assert_eq!(
            LogFormat::parse("--log-format", "text"),
            Ok(LogFormat::Text)
        );
        let error = LogFormat::parse("--log-format", "yaml").expect_err("yaml");
        assert!(error.message.contains("--log-format"), "{}", error.message);
    }

    #[test]
    fn file_overrides_defaults() {
        let config = Config::from_toml(
            "ws = \"0.0.0.0:9001\"\nws_path = \"/live\"\n[limits]\npacket_bytes_max = 1024\n",
            "test.toml",
        )
        .expect("valid file");
        assert_eq!(config.ws, Some(SocketAddr::from(([0, 0, 0, 0], 9001))));
        assert_eq!(config.ws_path, "/live");
        assert_eq!(config.limits.packet_bytes_max, 1024);
        assert_eq!(config.limits.inflight_max, Limits::default().inflight_max);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::from_toml("shards = 2\n[limits]\npacket_bytes = 5\n", "f.toml")
            .expect_err("unknown key");
        assert!(err.message.contains("packet_bytes"), "{}", err.message);
        assert!(err.message.contains("line 3"), "{}", err.message);
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Config::from_toml("[limits]\ninflight_max = \"many\"\n", "f.toml")
            .expect_err("bad type");
        assert!(err.message.contains("inflight_max"), "{}", err.message);
    }

    #[test]
    fn zero_limit_is_rejected_by_name() {
        let config =
            Config::from_toml("[limits]\nqueue_bytes_max = 0\n", "f.toml").expect("parses");
        let err = config.validate().expect_err("zero");
        assert!(err.message.contains("queue_bytes_max"), "{}", err.message);
    }

    #[test]
    fn two_listeners_on_one_address_are_refused() {
        let config = Config::from_toml(
            "tcp = \"127.0.0.1:1883\"\nws = \"127.0.0.1:1883\"\n",
            "f.toml",
        )
        .expect("parses");
        let err = config.validate().expect_err("one address, two listeners");
        assert!(err.message.contains("ws"), "{}", err.message);
        assert!(err.message.contains("`tcp`"), "{}", err.message);
        let ephemeral =
            Config::from_toml("tcp = \"127.0.0.1:0\"\nws = \"127.0.0.1:0\"\n", "f.toml")
                .expect("parses");
        assert_eq!(
            ephemeral.validate(),
            Ok(()),
            "port 0 gives each its own port"
        );
    }

    #[test]
    fn decode_limits_copy_the_bounds() {
        let limits = Limits::default();
        let decode = limits.decode_limits();
        assert_eq!(decode.packet_bytes_max, limits.packet_bytes_max);
        assert_eq!(decode.topic_bytes_max, limits.topic_bytes_max);
        assert_eq!(decode.topic_levels_max, limits.topic_levels_max);
        assert_eq!(decode.client_id_bytes_max, limits.client_id_bytes_max);
        assert_eq!(
            decode.filters_per_packet_max,
            limits.subscriptions_per_session_max
        );
    }

    #[test]
    fn http_settings() {
        let config = Config::from_toml(
            "http_builtin = false\nhttp_dir = \"/tmp\"\nhttp_metrics = false\n[limits]\nhttp_file_bytes_max = 4096\n",
            "f.toml",
        )
        .expect("parses");
        assert_eq!(config.validate(), Ok(()));
        assert!(!config.http_metrics);
        let site = config.site();
        assert!(!site.builtin);
        assert_eq!(site.dir.as_deref(), Some(std::path::Path::new("/tmp")));
        assert_eq!(site.file_bytes_max, 4096);
        let config =
            Config::from_toml("http_dir = \"/nonexistent/www\"\n", "f.toml").expect("parses");
        let err = config.validate().expect_err("missing dir");
        assert!(err.message.contains("http_dir"), "{}", err.message);
        let config =
            Config::from_toml("[limits]\nhttp_file_bytes_max = 0\n", "f.toml").expect("parses");
        let err = config.validate().expect_err("zero");
        assert!(
            err.message.contains("http_file_bytes_max"),
            "{}",
            err.message
        );
        assert!(Config::default().http_builtin);
        assert!(
            !Config::default().http_metrics,
            "metrics move to the admin listener"
        );
    }

    #[test]
    fn sys_interval() {
        assert_eq!(Config::default().sys_interval_s, 10);
        let config = Config::from_toml("sys_interval_s = 0\n", "f.toml").expect("parses");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.sys_interval_s, 0);
        let config = Config::from_toml("sys_interval_s = 86401\n", "f.toml").expect("parses");
        let err = config.validate().expect_err("over a day");
        assert!(err.message.contains("sys_interval_s"), "{}", err.message);
    }

    #[test]
    fn drain_is_bounded() {
        assert_eq!(Config::default().drain_s, 10);
        let config = Config::from_toml("drain_s = 0\n", "f.toml").expect("parses");
        assert_eq!(config.validate(), Ok(()));
        let config = Config::from_toml("drain_s = 3601\n", "f.toml").expect("parses");
        let err = config.validate().expect_err("over an hour");
        assert!(err.message.contains("drain_s"), "{}", err.message);
    }

    #[test]
    fn slow_consumer_policies_parse() {
        let config = Config::from_toml(
            "ws_slow_consumer = \"drop-newest\"\ntcp_notsent_lowat_bytes = 4096\n\
             [[policy]]\nfilter = \"scores/#\"\non_full = \"conflate\"\n\
             [[policy]]\nfilter = \"chat/+\"\non_full = \"disconnect\"\n",
            "f.toml",
        )
        .expect("parses");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.tcp_slow_consumer, SlowConsumer::DropOldest);
        assert_eq!(config.ws_slow_consumer, SlowConsumer::DropNewest);
        assert_eq!(config.tcp_notsent_lowat_bytes, 4096);
        assert_eq!(config.policies.len(), 2);
        assert_eq!(config.policies[0].filter, "scores/#");
        assert_eq!(config.policies[0].on_full, SlowConsumer::Conflate);
        assert_eq!(config.policies[1].on_full, SlowConsumer::Disconnect);
    }

    #[test]
    fn bad_policies_are_named() {
        let err = Config::from_toml("[[policy]]\nfilter = \"a\"\non_full = \"later\"\n", "f")
            .expect_err("unknown policy");
        assert!(err.message.contains("later"), "{}", err.message);
        let config = Config::from_toml(
            "[[policy]]\nfilter = \"a/#/b\"\non_full = \"conflate\"\n",
            "f",
        )
        .expect("parses");
        let err = config.validate().expect_err("bad filter");
        assert!(err.message.contains("policy.filter"), "{}", err.message);
    }

    fn ip(text: &str) -> std::net::IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn proxy_protocol_keys() {
        let config = Config::default();
        assert_eq!(config.proxy_protocol, ProxyProtocol::default());
        assert!(!config.proxy_protocol.tcp);
        assert!(config.trusted_proxies.is_empty());
        assert!(config.ws_allowed_origins.is_empty());

        let every = "proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n";
        let config = Config::from_toml(every, "f.toml").expect("parses");
        assert_eq!(config.validate(), Ok(()));
        let on = ProxyProtocol {
            tcp: true,
            ws: true,
            mqtts: true,
            wss: true,
        };
        assert_eq!(config.proxy_protocol, on);
        assert!(config.trusted_proxies.contains(ip("::1")));

        // A listener's own key overrides the common one, in either direction.
        let but_ws = format!("{every}ws_proxy_protocol = false\n");
        let config = Config::from_toml(&but_ws, "f.toml").expect("parses");
        assert_eq!(config.proxy_protocol, ProxyProtocol { ws: false, ..on });
        let tls_only = "proxy_protocol = false\nmqtts_proxy_protocol = true\n\
                        wss_proxy_protocol = true\ntrusted_proxies = [\"10.0.0.1\"]\n";
        let config = Config::from_toml(tls_only, "f.toml").expect("parses");
        let tls_on = ProxyProtocol {
            mqtts: true,
            wss: true,
            ..ProxyProtocol::default()
        };
        assert_eq!(config.proxy_protocol, tls_on);

        // Trusted proxies alone serve Forwarded and X-Forwarded-For.
        let config =
            Config::from_toml("trusted_proxies = [\"10.0.0.1\"]\n", "f.toml").expect("parses");
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn proxy_protocol_without_trusted_proxies_is_refused() {
        for text in [
            "proxy_protocol = true\n",
            "tcp_proxy_protocol = true\n",
            "ws_proxy_protocol = true\ntrusted_proxies = []\n",
            "wss_proxy_protocol = true\n",
        ] {
            let config = Config::from_toml(text, "f.toml").expect("parses");
            let err = config.validate().expect_err(text);
            assert!(err.message.contains("`trusted_proxies`"), "{}", err.message);
            assert!(err.message.contains("proxy_protocol"), "{}", err.message);
        }
        let off = "proxy_protocol = true\ntcp_proxy_protocol = false\nws_proxy_protocol = false\n\
                   mqtts_proxy_protocol = false\nwss_proxy_protocol = false\n";
        let config = Config::from_toml(off, "f.toml").expect("parses");
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn allowed_origins() {
        let config = Config::from_toml(
            "ws_allowed_origins = [\"https://scores.example\", \"http://localhost:8080\", \"null\"]\n",
            "f.toml",
        )
        .expect("parses");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.ws_allowed_origins.len(), 3);
        for bad in [
            "https://scores.example/",
            "https://scores.example/live",
            "scores.example",
            "*",
            "",
            "https://",
            "https://user@scores.example",
            "https://scores.example?x",
            "https://scores .example",
            "1https://scores.example",
        ] {
            let config = Config {
                ws_allowed_origins: vec![bad.to_owned()],
                ..Config::default()
            };
            let err = config.validate().expect_err(bad);
            assert!(
                err.message.contains("`ws_allowed_origins`"),
                "{}",
                err.message
            );
        }
        let config = Config {
            ws_allowed_origins: vec!["https://a.example".to_owned(); WS_ALLOWED_ORIGINS_MAX + 1],
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn bad_address_is_named() {
        let err = Config::from_toml("tcp = \"localhost\"\n", "f.toml").expect_err("bad addr");
        assert!(err.message.contains("`tcp`"), "{}", err.message);
        let config = Config::from_toml("tcp = \"off\"\n", "f.toml").expect("off");
        assert_eq!(config.tcp, None);
    }

    #[test]
    fn store_bounds_are_read_from_the_file() {
        let text = "tcp = \"127.0.0.1:0\"\nstore_queue_flushes_per_shard_max = 8\n\
                    store_flushes_per_write_max = 64\ncompaction_log_ratio = 3\n\
                    compaction_log_bytes_min = 8192\nstore_retry_interval_ms = 250\n";
        let config = Config::from_toml(text, "f.toml").expect("valid");
        let store = config.persistence.store;
        assert_eq!(store.queue_flushes_per_shard_max, 8);
        assert_eq!(store.flushes_per_write_max, 64);
        assert_eq!(store.compaction_log_ratio, 3);
        assert_eq!(store.compaction_log_bytes_min, 8192);
        assert_eq!(store.retry_interval_ms, 250);
        config.validate().expect("in range");
        let unset = Config::from_toml("", "f.toml").expect("valid");
        assert_eq!(unset.persistence.store, StoreLimits::default());
    }

    #[test]
    fn a_store_bound_out_of_range_or_of_the_wrong_type_is_named() {
        let config = Config::from_toml("compaction_log_ratio = 1\n", "f.toml").expect("parses");
        let err = config.validate().expect_err("ratio 1");
        assert_eq!(err.key.as_deref(), Some("compaction_log_ratio"));
        let err = Config::from_toml("shards = 2\ncompaction_log_bytes_min = \"big\"\n", "f.toml")
            .expect_err("bad type");
        assert!(
            err.message.contains("compaction_log_bytes_min"),
            "{}",
            err.message
        );
        assert!(err.message.contains("line 2"), "{}", err.message);
    }
}
