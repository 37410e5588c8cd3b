//! The `[[bridge]]` tables: links to other MQTT brokers (`docs/bridges.md`). None by default.

use std::path::PathBuf;

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
    /// The most QoS a message gets across the bridge: 0 or 1 (QoS 2 is not bridged yet).
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
    /// `mqtt://host:port`; TLS and WebSocket URLs are not bridged yet.
    pub url: String,
    #[serde(default = "default_protocol")]
    pub protocol: BridgeProtocol,
    /// The client identifier on the remote; `fanfare-bridge-NAME` by default.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User on the remote; its password is read from `password_file` (one final newline
    /// trimmed), so no secret sits in the configuration.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u16,
    #[serde(default = "default_clean_start")]
    pub clean_start: bool,
    /// Wait before the first reconnection; each failure doubles it up to
    /// `reconnect_max_ms`, and a connection that is accepted starts over.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u32,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u32,
    /// How long the TCP connection and the CONNACK may take before the attempt fails.
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

    /// `host:port` of an `mqtt://` URL.
    pub fn address(&self) -> Option<&str> {
        let rest = self.url.strip_prefix("mqtt://")?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = rest.rsplit_once(':')?;
        let port_ok = port.parse::<u16>().is_ok_and(|port| port != 0);
        (!host.is_empty() && port_ok && !rest.contains(['/', '@', ' '])).then_some(rest)
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
        if self.address().is_none() {
            return Err(invalid(
                "url",
                "must be mqtt://host:port (mqtts://, ws:// and wss:// are not bridged yet)",
            ));
        }
        if self.username.is_some() != self.password_file.is_some() {
            return Err(invalid(
                "username",
                "`username` and `password_file` go together",
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
        if self.topics.is_empty() || self.topics.len() > BRIDGE_TOPICS_MAX {
            return Err(invalid(
                "topics",
                &format!("1 to {BRIDGE_TOPICS_MAX} mappings"),
            ));
        }
        for mapping in &self.topics {
            if mapping.qos > 1 {
                return Err(invalid("topics.qos", "0 or 1 (QoS 2 is not bridged yet)"));
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

    #[test]
    fn url_is_mqtt_host_and_port() {
        assert_eq!(
            bridge("mqtt://127.0.0.1:1883").address(),
            Some("127.0.0.1:1883")
        );
        assert_eq!(bridge("mqtt://[::1]:1883/").address(), Some("[::1]:1883"));
        assert_eq!(bridge("mqtts://127.0.0.1:8883").address(), None);
        assert_eq!(bridge("mqtt://127.0.0.1").address(), None);
        assert_eq!(bridge("mqtt://h:0").address(), None);
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
        assert!(validate(std::slice::from_ref(&b)).is_err());
    }
}
