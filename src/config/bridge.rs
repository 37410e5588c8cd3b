//! The `[[bridge]]` tables: links to other MQTT brokers (`docs/bridges.md`). None by default.

use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use crate::protocol::mqtt::topic::is_valid_topic_filter;

/// Bridges one broker may hold: each is a thread and a connection.
pub const BRIDGES_MAX: usize = 64;

/// Topic mappings one bridge may hold: each publish going out is matched against them all.
pub const BRIDGE_TOPICS_MAX: usize = 64;

/// Longest bridge name, in bytes: it names the bridge in logs and metrics.
pub const BRIDGE_NAME_BYTES_MAX: usize = 64;

/// Which way a mapping carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the remote broker to this one.
    In,
    /// From this broker to the remote one.
    Out,
    Both,
}

impl Direction {
    pub const fn carries_in(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }

    pub const fn carries_out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Both => "both",
        }
    }
}

/// The MQTT level a bridge speaks to its remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum BridgeProtocol {
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

/// One `{ filter, direction, qos, local_prefix, remote_prefix }`: the topics `filter` matches
/// under `local_prefix` here are the same topics under `remote_prefix` there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicMapping {
    pub filter: String,
    pub direction: Direction,
    /// The most QoS a message gets across the bridge: 0, 1 or 2.
    #[serde(default)]
    pub qos: u8,
    #[serde(default)]
    pub local_prefix: String,
    #[serde(default)]
    pub remote_prefix: String,
}

impl TopicMapping {
    /// The filter as this broker's topics are named.
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.filter)
    }

    /// The filter as the remote broker's topics are named.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.filter)
    }
}

fn default_protocol() -> BridgeProtocol {
    BridgeProtocol::V311
}
fn default_keep_alive_s() -> u16 {
    60
}
fn default_clean_start() -> bool {
    true
}
fn default_reconnect_initial_ms() -> u32 {
    500
}
fn default_reconnect_max_ms() -> u32 {
    30_000
}
fn default_connect_timeout_ms() -> u32 {
    10_000
}
fn default_inflight_max() -> u16 {
    32
}
fn default_queue_bytes_max() -> u64 {
    16 * 1024 * 1024
}
fn default_reconnect_jitter() -> Jitter {
    Jitter(0.25)
}

/// How the byte stream to the remote is opened: the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `mqtt://`: TCP.
    Mqtt,
    /// `mqtts://`: TLS over TCP.
    Mqtts,
    /// `ws://`: WebSocket over TCP.
    Ws,
    /// `wss://`: WebSocket over TLS.
    Wss,
}

impl Scheme {
    pub const fn tls(self) -> bool {
        matches!(self, Scheme::Mqtts | Scheme::Wss)
    }

    pub const fn websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }

    const fn default_port(self) -> u16 {
        match self {
            Scheme::Mqtt => 1883,
            Scheme::Mqtts => 8883,
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        }
    }
}

/// The remote as `url` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    pub scheme: Scheme,
    /// A name or an address; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
    /// The WebSocket path (with any query), `/mqtt` when the URL has none; `/` for
    /// `mqtt://` and `mqtts://`, which take no path.
    pub path: String,
}

impl RemoteUrl {
    /// `scheme://host[:port][/path]`. The port defaults to the scheme's (1883, 8883, 80,
    /// 443). No user information (`user@`): credentials are keys of their own.
    pub fn parse(url: &str) -> Option<RemoteUrl> {
        // Every byte ends up in a request line or a Host field: none may be a space or a
        // control character.
        if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return None;
        }
        let (scheme, rest) = url.split_once("://")?;
        let scheme = match scheme {
            "mqtt" => Scheme::Mqtt,
            "mqtts" => Scheme::Mqtts,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            _ => return None,
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if authority.contains(['@', '?', '#']) {
            return None;
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']')?;
                host.parse::<std::net::Ipv6Addr>().ok()?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(port) => port.parse::<u16>().ok().filter(|&port| port != 0)?,
            None => scheme.default_port(),
        };
        if host.is_empty() || path.contains('#') {
            return None;
        }
        let path = match (scheme.websocket(), path) {
            (true, "") => "/mqtt",
            (true, path) => path,
            (false, "" | "/") => "/",
            (false, _) => return None,
        };
        Some(RemoteUrl {
            scheme,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// `host:port` as the WebSocket `Host` field names it (RFC 7230 §5.4).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A fraction from 0 to 1. Start-up refuses anything else, NaN included, so equality is
/// reflexive and the configuration can be compared whole.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct Jitter(pub f64);

impl Eq for Jitter {}

impl Jitter {
    /// `wait` less `draw / u32::MAX` of this fraction of it: `draw` is a random number.
    pub fn shorten(self, wait: Duration, draw: u32) -> Duration {
        let unit = f64::from(draw) / f64::from(u32::MAX);
        wait.mul_f64(1.0 - self.0 * unit)
    }
}

fn default_try_private() -> bool {
    true
}
fn default_second_copies_remembered_max() -> usize {
    4096
}

/// The most fingerprints a bridge may remember each way: each message from a bridge
/// connection is compared with them all.
pub const SECOND_COPIES_REMEMBERED_MAX: usize = 65_536;

fn default_stored_bytes_max() -> u64 {
    64 * 1024 * 1024
}
fn default_segment_bytes_max() -> u64 {
    4 * 1024 * 1024
}

/// What a full store-and-forward queue does with one more QoS 1 message (`docs/bridges.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueFullPolicy {
    /// Drops the oldest queued messages to make room, counted: local publishing never waits
    /// for a remote, and after an outage the newest data goes first to go at all.
    #[default]
    DropOldest,
    /// Refuses QoS 1/2 publishes that the bridge would carry (MQTT 5: 0x97 Quota exceeded;
    /// 3.1.1: no acknowledgement) until the queue has room: nothing acknowledged is dropped,
    /// and the publishers wait for the remote.
    Refuse,
}

impl QueueFullPolicy {
    pub const fn name(self) -> &'static str {
        match self {
            QueueFullPolicy::DropOldest => "drop_oldest",
            QueueFullPolicy::Refuse => "refuse",
        }
    }
}

/// One `[[bridge]]` table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSettings {
    /// Names the bridge in logs, metrics and `$SYS/broker/connection/NAME/state`.
    pub name: String,
    /// `mqtt://`, `mqtts://`, `ws://` or `wss://`, then `host[:port]`, and for WebSocket the
    /// path (`/mqtt` by default); see [`RemoteUrl::parse`].
    pub url: String,
    #[serde(default = "default_protocol")]
    pub protocol: BridgeProtocol,
    /// The client identifier on the remote; `fanfare-bridge-NAME` by default.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User on the remote; its password is read from `password_file` (one final newline
    /// trimmed), so no secret sits in the configuration. With `protocol = "5"` the password
    /// file may go alone, as a token.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS (`mqtts://`, `wss://`): the CA certificates (PEM) the remote's certificate must
    /// chain to; without it, the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// TLS: a client certificate chain and its key (PEM), for remotes that ask for one.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// TLS: the name the remote's certificate must carry (and the SNI sent), when it is not
    /// the URL's host: a remote reached by address, or through a tunnel.
    #[serde(default)]
    pub server_name: Option<String>,
    /// TLS: accept any certificate from the remote. For tests only: anyone on the path can
    /// then read and change what crosses the bridge. Logged as a warning at start-up.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u16,
    #[serde(default = "default_clean_start")]
    pub clean_start: bool,
    /// MQTT 5: how long the remote keeps the bridge's session (its subscriptions and the
    /// QoS 1 messages for it) after the connection drops; 0, the default, ends it with the
    /// connection. With `clean_start = false` a bridge that reconnects within it misses
    /// nothing the remote queued meanwhile. 3.1.1 has no such interval: there
    /// `clean_start = false` keeps the session until the remote drops it.
    #[serde(default)]
    pub session_expiry_s: u32,
    /// Wait before the first reconnection; each failure doubles it up to
    /// `reconnect_max_ms`, and a connection that is accepted starts over.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u32,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u32,
    /// Each wait is shortened by a random part of up to this fraction of it (0 to 1; 0.25
    /// by default: a wait of 1 s lasts 0.75 to 1 s), so edges that lost the same remote
    /// at once do not all come back at the same instant.
    #[serde(default = "default_reconnect_jitter")]
    pub reconnect_jitter: Jitter,
    /// How long opening the connection may take before the attempt fails: TCP, the TLS
    /// handshake, the WebSocket upgrade and the CONNACK together.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u32,
    /// QoS 1 publishes sent to the remote and not yet acknowledged; the rest wait in the
    /// bridge's queue. Sent again after a reconnection.
    #[serde(default = "default_inflight_max")]
    pub inflight_max: u16,
    /// Bytes of publishes on their way from the shards to the bridge's thread, and of QoS 0
    /// ones waiting for the remote (each bounded by it, in memory); past it a publish is not
    /// bridged (local delivery goes on) and is counted as dropped.
    #[serde(default = "default_queue_bytes_max")]
    pub out_queue_bytes_max: u64,
    /// Bytes of messages from the remote waiting for the shards; at it the bridge stops
    /// reading the remote until there is room (only a message larger than it is dropped).
    #[serde(default = "default_queue_bytes_max")]
    pub in_queue_bytes_max: u64,
    /// Where the QoS 1 messages to the remote are kept until it acknowledges them
    /// (store-and-forward); `DATA_DIR/bridge-NAME` by default when `data_dir` is set. With
    /// neither, they are kept in memory only and a restart loses them.
    #[serde(default)]
    pub queue_dir: Option<PathBuf>,
    /// Bytes of QoS 1 messages waiting for the remote's acknowledgement (records as written,
    /// held in memory as well: a worst case of this many bytes per bridge); past it
    /// `queue_full_policy` applies.
    #[serde(default = "default_stored_bytes_max")]
    pub queue_bytes_max: u64,
    #[serde(default)]
    pub queue_full_policy: QueueFullPolicy,
    /// Bytes of one file of the queue before the next is started: a file is removed once all
    /// its messages are acknowledged, so the disk holds up to about `queue_bytes_max` plus one
    /// file.
    #[serde(default = "default_segment_bytes_max")]
    pub queue_segment_bytes_max: u64,
    /// Tell the remote that this client is a bridge, as Mosquitto's `try_private` does: bit
    /// 7 of the protocol level in 3.1.1 CONNECT, the user property `fanfare-bridge` in MQTT
    /// 5. A remote that knows it does not send the bridge's own publishes back, and fanfare
    /// does not send on over its bridges what came from one (`docs/bridges.md`, Loops). A
    /// 3.1.1 remote that refuses the level is asked again without it, and that is logged.
    #[serde(default = "default_try_private")]
    pub try_private: bool,
    /// Fingerprints (8 bytes each) this bridge remembers each way of the messages that came
    /// over it and from the remote's own bridge connection, to drop the second copy when two
    /// brokers are bridged to each other (`crate::broker::crossings`). 0 remembers none.
    /// Each message from a bridge connection is compared with up to this many.
    #[serde(default = "default_second_copies_remembered_max")]
    pub second_copies_remembered_max: usize,
    pub topics: Vec<TopicMapping>,
}

impl BridgeSettings {
    pub fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("fanfare-bridge-{}", self.name))
    }

    /// Where the store-and-forward queue lives, if on disk: `queue_dir`, else
    /// `DATA_DIR/bridge-NAME` under the broker's `data_dir`.
    pub fn queue_path(&self, data_dir: Option<&std::path::Path>) -> Option<PathBuf> {
        self.queue_dir
            .clone()
            .or_else(|| data_dir.map(|dir| dir.join(format!("bridge-{}", self.name))))
    }

    /// The remote `url` names; `None` for a URL start-up refuses.
    pub fn remote(&self) -> Option<RemoteUrl> {
        RemoteUrl::parse(&self.url)
    }
}

/// Checks every bridge: what a bridge cannot work with is refused at start-up.
pub fn validate(bridges: &[BridgeSettings]) -> Result<(), ConfigError> {
    if bridges.len() > BRIDGES_MAX {
        return Err(ConfigError::invalid(
            "bridge",
            &format!("at most {BRIDGES_MAX} bridges"),
        ));
    }
    for (i, bridge) in bridges.iter().enumerate() {
        let name_ok = !bridge.name.is_empty()
            && bridge.name.len() <= BRIDGE_NAME_BYTES_MAX
            && bridge
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(ConfigError::invalid(
                "bridge.name",
                &format!("must be 1 to {BRIDGE_NAME_BYTES_MAX} letters, digits, - or _"),
            ));
        }
        if bridges[..i].iter().any(|other| other.name == bridge.name) {
            return Err(ConfigError::invalid(
                "bridge.name",
                &format!("{:?} names two bridges", bridge.name),
            ));
        }
        bridge.validate()?;
    }
    Ok(())
}

impl BridgeSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: &str| {
            ConfigError::invalid(
                &format!("bridge.{key}"),
                &format!("{}: {problem}", self.name),
            )
        };
        let Some(remote) = self.remote() else {
            return Err(invalid(
                "url",
                "must be mqtt://, mqtts://, ws:// or wss:// then host[:port], and a path for \
                 WebSocket only",
            ));
        };
        let tls_keys = self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.server_name.is_some()
            || self.insecure;
        if tls_keys && !remote.scheme.tls() {
            return Err(invalid(
                "ca_file",
                "ca_file, cert_file, key_file, server_name and insecure need an mqtts:// or \
                 wss:// url",
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(invalid(
                "cert_file",
                "`cert_file` and `key_file` go together",
            ));
        }
        if self
            .server_name
            .as_deref()
            .is_some_and(|name| rustls_pki_types::ServerName::try_from(name).is_err())
        {
            return Err(invalid("server_name", "not a DNS name or an IP address"));
        }
        let jitter = self.reconnect_jitter.0;
        if !(0.0..=1.0).contains(&jitter) {
            return Err(invalid("reconnect_jitter", "a fraction from 0 to 1"));
        }
        if self.session_expiry_s > 0 && self.protocol != BridgeProtocol::V5 {
            return Err(invalid(
                "session_expiry_s",
                "needs protocol = \"5\" (3.1.1 has no session expiry)",
            ));
        }
        // MQTT 5 may send a password alone (a token, as cloud brokers take it); 3.1.1 sends
        // one only with a user name [MQTT-3.1.2-22]. A user name alone is fine in both.
        if self.password_file.is_some()
            && self.username.is_none()
            && self.protocol != BridgeProtocol::V5
        {
            return Err(invalid(
                "password_file",
                "a 3.1.1 bridge sends a password only with a `username`; for a token alone \
                 use protocol = \"5\"",
            ));
        }
        if self.reconnect_initial_ms == 0 || self.reconnect_initial_ms > self.reconnect_max_ms {
            return Err(invalid(
                "reconnect_initial_ms",
                "must be at least 1 and at most reconnect_max_ms",
            ));
        }
        if self.connect_timeout_ms == 0 || self.inflight_max == 0 {
            return Err(invalid(
                "connect_timeout_ms",
                "connect_timeout_ms and inflight_max must be at least 1",
            ));
        }
        if self.out_queue_bytes_max == 0 || self.in_queue_bytes_max == 0 {
            return Err(invalid(
                "out_queue_bytes_max",
                "queues must hold at least 1 byte",
            ));
        }
        if self.queue_bytes_max == 0 || self.queue_segment_bytes_max == 0 {
            return Err(invalid(
                "queue_bytes_max",
                "queue_bytes_max and queue_segment_bytes_max must be at least 1",
            ));
        }
        if self.second_copies_remembered_max > SECOND_COPIES_REMEMBERED_MAX {
            return Err(invalid(
                "second_copies_remembered_max",
                &format!("at most {SECOND_COPIES_REMEMBERED_MAX}"),
            ));
        }
        if self.topics.is_empty() || self.topics.len() > BRIDGE_TOPICS_MAX {
            return Err(invalid(
                "topics",
                &format!("1 to {BRIDGE_TOPICS_MAX} mappings"),
            ));
        }
        for mapping in &self.topics {
            if mapping.qos > 2 {
                return Err(invalid("topics.qos", "0, 1 or 2"));
            }
            let prefixes_ok = [&mapping.local_prefix, &mapping.remote_prefix]
                .iter()
                .all(|prefix| !prefix.contains(['+', '#', '\0']) && !prefix.starts_with('$'));
            if !prefixes_ok {
                return Err(invalid(
                    "topics.local_prefix",
                    "prefixes hold no wildcard and do not start with $",
                ));
            }
            if !is_valid_topic_filter(&mapping.local_filter())
                || !is_valid_topic_filter(&mapping.remote_filter())
                || mapping.filter.starts_with('$')
            {
                return Err(invalid(
                    "topics.filter",
                    &format!(
                        "{:?} with its prefixes is not a topic filter",
                        mapping.filter
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge(url: &str) -> BridgeSettings {
        toml::from_str(&format!(
            "name = \"up\"\nurl = \"{url}\"\ntopics = [{{ filter = \"a/#\", direction = \"both\" }}]"
        ))
        .expect("a bridge table")
    }

    fn remote(url: &str) -> Option<(Scheme, String, u16, String)> {
        let remote = RemoteUrl::parse(url)?;
        Some((remote.scheme, remote.host, remote.port, remote.path))
    }

    #[test]
    fn urls_name_scheme_host_port_and_path() {
        let at = |scheme, host: &str, port, path: &str| {
            Some((scheme, host.to_owned(), port, path.to_owned()))
        };
        assert_eq!(
            remote("mqtt://127.0.0.1:1883"),
            at(Scheme::Mqtt, "127.0.0.1", 1883, "/")
        );
        assert_eq!(
            remote("mqtt://[::1]:1883/"),
            at(Scheme::Mqtt, "::1", 1883, "/")
        );
        assert_eq!(
            remote("mqtts://origin.test"),
            at(Scheme::Mqtts, "origin.test", 8883, "/")
        );
        assert_eq!(remote("ws://h:8080"), at(Scheme::Ws, "h", 8080, "/mqtt"));
        assert_eq!(
            remote("wss://h/ws?t=1"),
            at(Scheme::Wss, "h", 443, "/ws?t=1")
        );
        for refused in [
            "mqtt://h:0",
            "mqtt://h/path",
            "tcp://h:1883",
            "mqtt://user@h:1883",
            "ws://h:80/a b",
            "ws://h:80/a\r\nX: y",
            "mqtt://:1883",
            "mqtt://[zz]:1883",
        ] {
            assert_eq!(remote(refused), None, "{refused}");
        }
        let v6 = RemoteUrl::parse("wss://[::1]:9001/mqtt").expect("a URL");
        assert_eq!(v6.authority(), "[::1]:9001");
    }

    #[test]
    fn defaults_and_checks() {
        let mut b = bridge("mqtt://127.0.0.1:1883");
        assert_eq!(b.protocol, BridgeProtocol::V311);
        assert_eq!(b.client_id(), "fanfare-bridge-up");
        assert_eq!(b.queue_full_policy, QueueFullPolicy::DropOldest);
        assert_eq!(b.queue_path(None), None);
        assert_eq!(
            b.queue_path(Some(std::path::Path::new("/d"))),
            Some(PathBuf::from("/d/bridge-up"))
        );
        assert!(validate(std::slice::from_ref(&b)).is_ok());
        assert!(
            validate(&[b.clone(), b.clone()]).is_err(),
            "names are unique"
        );
        b.topics[0].local_prefix = "x/+/".to_owned();
        assert!(validate(std::slice::from_ref(&b)).is_err());
        b.topics[0].local_prefix = "x/".to_owned();
        b.topics[0].qos = 2;
        assert!(validate(std::slice::from_ref(&b)).is_ok());
        b.topics[0].qos = 3;
        assert!(validate(std::slice::from_ref(&b)).is_err());
    }

    #[test]
    fn jitter_shortens_a_wait_by_at_most_its_fraction() {
        let wait = Duration::from_millis(1000);
        assert_eq!(Jitter(0.25).shorten(wait, 0), wait);
        assert_eq!(
            Jitter(0.25).shorten(wait, u32::MAX),
            Duration::from_millis(750)
        );
        assert_eq!(Jitter(0.0).shorten(wait, u32::MAX), wait);
        assert_eq!(Jitter(1.0).shorten(wait, u32::MAX), Duration::ZERO);
        let half = Jitter(0.5).shorten(wait, u32::MAX / 2);
        assert!(half > Duration::from_millis(749) && half < Duration::from_millis(751));
    }

    #[test]
    fn tls_keys_need_a_tls_url_and_expiry_needs_mqtt_5() {
        let mut b = bridge("mqtt://127.0.0.1:1883");
        b.insecure = true;
        assert!(validate(std::slice::from_ref(&b)).is_err());
        b.url = "wss://127.0.0.1:9001".to_owned();
        assert!(validate(std::slice::from_ref(&b)).is_ok());
        b.cert_file = Some(PathBuf::from("client.pem"));
        assert!(validate(std::slice::from_ref(&b)).is_err(), "the key too");
        b.cert_file = None;
        b.reconnect_jitter = Jitter(1.5);
        assert!(validate(std::slice::from_ref(&b)).is_err());
        b.reconnect_jitter = Jitter(f64::NAN);
        assert!(validate(std::slice::from_ref(&b)).is_err());
        b.reconnect_jitter = Jitter(0.5);
        b.session_expiry_s = 60;
        assert!(validate(std::slice::from_ref(&b)).is_err());
        b.protocol = BridgeProtocol::V5;
        assert!(validate(std::slice::from_ref(&b)).is_ok());
    }

    #[test]
    fn a_token_alone_needs_mqtt_5() {
        let mut b = bridge("mqtt://127.0.0.1:1883");
        b.password_file = Some(PathBuf::from("token"));
        let err = validate(std::slice::from_ref(&b)).expect_err("3.1.1 needs a username");
        assert!(err.to_string().contains("password_file"), "{err}");
        b.protocol = BridgeProtocol::V5;
        assert!(validate(std::slice::from_ref(&b)).is_ok());
        b.protocol = BridgeProtocol::V311;
        b.username = Some("edge".to_owned());
        assert!(validate(std::slice::from_ref(&b)).is_ok());
        b.password_file = None;
        assert!(
            validate(std::slice::from_ref(&b)).is_ok(),
            "a user name alone"
        );
    }
}
