//! What a SIGHUP changes in a running broker: the configuration file is read again and the
//! keys that can change live are applied (`log_level`, the slow consumer policies, the
//! `[limits]` that size nothing built at start, and `[auth]` and `[tls]` but for the threads,
//! caches and kernel mode set up at start); those that cannot (listeners, shards, buffers, the
//! limits that size tables and queues, …) stay as they were, and are named in the log.
//!
//! Shards see the new configuration through [`SharedConfig`], whose generation they compare
//! once per loop turn, as they do with the auth policy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{AuthSettings, Config, Limits, TlsSettings, effective_toml};

/// The keys a running broker applies from a reloaded file, named as in the file. When each
/// takes effect is said where [`Reload::new`] takes it.
pub const LIVE_KEYS: [&str; 45] = [
    "log_level",
    "tcp_slow_consumer",
    "ws_slow_consumer",
    "policy",
    "limits.packet_bytes_max",
    "limits.topic_bytes_max",
    "limits.topic_levels_max",
    "limits.client_id_bytes_max",
    "limits.subscriptions_per_session_max",
    "limits.inflight_max",
    "limits.session_queue_bytes_max",
    "limits.queue_bytes_max",
    "limits.retained_messages_max",
    "limits.retained_bytes_max",
    "limits.ws_frame_bytes_max",
    "limits.ws_handshake_bytes_max",
    "limits.ws_handshake_timeout_ms",
    "limits.connect_timeout_ms",
    "limits.keep_alive_max_s",
    "limits.publish_rate_max",
    "limits.publish_bytes_rate_max",
    "limits.disconnect_on_rate",
    "limits.connections_per_ip_max",
    "limits.connect_rate_per_ip_max",
    "limits.close_linger_ms",
    "limits.lingering_closes_per_shard_max",
    "auth.allow_anonymous",
    "auth.password_file",
    "auth.acl_file",
    "auth.jwt_secret_file",
    "auth.jwt_public_key_files",
    "auth.jwks_file",
    "auth.jwt_user_claim",
    "auth.jwt_acl_claim",
    "auth.jwt_issuer",
    "auth.jwt_audience",
    "auth.jwt_leeway_s",
    "auth.jwt_token_bytes_max",
    "tls.cert_file",
    "tls.key_file",
    "tls.client_ca_file",
    "tls.client_auth",
    "tls.identity_as_username",
    "tls.versions",
    "tls.sni",
];

/// The outcome of comparing a reloaded file with the running configuration.
pub struct Reload {
    /// The running configuration with the live keys taken from the file.
    pub config: Config,
    /// Changed keys that took effect.
    pub applied: Vec<String>,
    /// Changed keys that keep their running value until a restart.
    pub kept: Vec<String>,
}

impl Reload {
    pub fn new(running: &Config, file: &Config) -> Reload {
        let mut config = running.clone();
        config.log_level = file.log_level.clone();
        config.tcp_slow_consumer = file.tcp_slow_consumer;
        config.ws_slow_consumer = file.ws_slow_consumer;
        config.policies = file.policies.clone();
        config.limits = live_limits(&running.limits, &file.limits);
        config.auth = live_auth(&running.auth, &file.auth);
        config.tls = live_tls(&running.tls, &file.tls);
        let (applied, kept) = changed_keys(running, file)
            .into_iter()
            .partition(|key| LIVE_KEYS.contains(&key.as_str()));
        Reload {
            config,
            applied,
            kept,
        }
    }
}

/// The running limits with the live ones taken from `file`. Every field is named, so that a
/// new limit cannot be added without deciding here whether it may change live. What the file
/// validated still holds: the relations `Limits::validate` checks are between live limits.
fn live_limits(running: &Limits, file: &Limits) -> Limits {
    Limits {
        // Held per connection from its CONNECT on, with the Maximum Packet Size its CONNACK
        // announced: connections after the reload get the new bounds.
        packet_bytes_max: file.packet_bytes_max,
        topic_bytes_max: file.topic_bytes_max,
        topic_levels_max: file.topic_levels_max,
        client_id_bytes_max: file.client_id_bytes_max,
        ws_frame_bytes_max: file.ws_frame_bytes_max,
        // Checked at each SUBSCRIBE of every session (a session above a lowered bound keeps
        // what it has and adds nothing); per SUBSCRIBE packet for connections after.
        subscriptions_per_session_max: file.subscriptions_per_session_max,
        // A connection's send window is set at its CONNECT: connections after.
        inflight_max: file.inflight_max,
        // Bounds checked as messages are queued: every session and connection, from the next.
        session_queue_bytes_max: file.session_queue_bytes_max,
        queue_bytes_max: file.queue_bytes_max,
        // Checked as a message is retained; those held stay.
        retained_messages_max: file.retained_messages_max,
        retained_bytes_max: file.retained_bytes_max,
        // Set at accept, upgrade or CONNECT: connections after.
        ws_handshake_bytes_max: file.ws_handshake_bytes_max,
        ws_handshake_timeout_ms: file.ws_handshake_timeout_ms,
        connect_timeout_ms: file.connect_timeout_ms,
        keep_alive_max_s: file.keep_alive_max_s,
        // Checked at each publish of every connection.
        publish_rate_max: file.publish_rate_max,
        publish_bytes_rate_max: file.publish_bytes_rate_max,
        disconnect_on_rate: file.disconnect_on_rate,
        // Checked at each accept; connections open stay.
        connections_per_ip_max: file.connections_per_ip_max,
        connect_rate_per_ip_max: file.connect_rate_per_ip_max,
        // Checked as a close begins.
        close_linger_ms: file.close_linger_ms,
        lingering_closes_per_shard_max: file.lingering_closes_per_shard_max,
        // Announced in CONNACK (Receive Maximum, Topic Alias Maximum): connected clients hold
        // the broker to the values they were told.
        inbound_qos2_max: running.inbound_qos2_max,
        topic_aliases_max: running.topic_aliases_max,
        // Size what each shard builds at start: its alias registry, connection table,
        // queues to the other shards, file cache; or would evict many sessions in one turn.
        topic_aliases_per_shard_max: running.topic_aliases_per_shard_max,
        connections_per_shard_max: running.connections_per_shard_max,
        cross_shard_queue_len_max: running.cross_shard_queue_len_max,
        cross_shard_backlog_bytes_max: running.cross_shard_backlog_bytes_max,
        offline_sessions_per_shard_max: running.offline_sessions_per_shard_max,
        http_file_bytes_max: running.http_file_bytes_max,
        http_cache_bytes_max: running.http_cache_bytes_max,
    }
}

/// `[auth]` from `file`, but for the verifier threads, their queue and the shards' caches of
/// verifications, which are set up at start. The files are read again by the caller.
fn live_auth(running: &AuthSettings, file: &AuthSettings) -> AuthSettings {
    AuthSettings {
        verifier_threads: running.verifier_threads,
        verify_queue_max: running.verify_queue_max,
        verified_cache_ttl_s: running.verified_cache_ttl_s,
        verified_cache_entries_max: running.verified_cache_entries_max,
        ..file.clone()
    }
}

/// `[tls]` from `file`, but for `ktls`: whether the kernel takes over is probed at start.
fn live_tls(running: &TlsSettings, file: &TlsSettings) -> TlsSettings {
    TlsSettings {
        ktls: running.ktls,
        ..file.clone()
    }
}

/// The keys whose values differ, named as in the file (`limits.queue_bytes_max`). Compared on
/// the effective configuration's text, so that every key it prints is compared and none is
/// forgotten here when a key is added.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (old, new) = (
        settings(&effective_toml(old)),
        settings(&effective_toml(new)),
    );
    let mut keys: Vec<String> = old
        .iter()
        .filter(|(key, value)| new.get(*key) != Some(value))
        .map(|(key, _)| key.clone())
        .collect();
    keys.extend(new.keys().filter(|key| !old.contains_key(*key)).cloned());
    keys.sort();
    keys
}

/// Key (with its table, `[[array]]` tables by name alone) → its value lines, in order.
fn settings(toml: &str) -> BTreeMap<String, Vec<String>> {
    let mut table = String::new();
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in toml.lines() {
        if let Some(array) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            table = array.to_owned();
            settings
                .entry(table.clone())
                .or_default()
                .push(String::new());
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.to_owned();
        } else if let Some(key) = line
            .split(" = ")
            .next()
            .filter(|_| line.contains(" = "))
            .or_else(|| line.strip_prefix("# ")?.strip_suffix(" is not set"))
        {
            let name = match (table.as_str(), settings.contains_key(&table)) {
                ("", _) => key.to_owned(),
                // A `[[policy]]` or `[[tls.sni]]` entry: the whole list is one key.
                (array, true) => array.to_owned(),
                (table, false) => format!("{table}.{key}"),
            };
            settings.entry(name).or_default().push(line.to_owned());
        }
    }
    settings
}

/// The configuration in force, which shards take at their next loop turn when it changes.
pub struct SharedConfig {
    current: RwLock<Arc<Config>>,
    /// Bumped after each replacement; a shard compares it with the one it took.
    generation: AtomicU64,
}

impl SharedConfig {
    pub fn new(config: Arc<Config>) -> SharedConfig {
        SharedConfig {
            current: RwLock::new(config),
            generation: AtomicU64::new(0),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The configuration in force and its generation; a lock taken only when the generation
    /// moved, never per delivery.
    pub fn current(&self) -> (u64, Arc<Config>) {
        let generation = self.generation();
        let config = match self.current.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        (generation, config)
    }

    pub fn replace(&self, config: Config) {
        let config = Arc::new(config);
        match self.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml(text, "test").expect("a valid file")
    }

    #[test]
    fn live_keys_are_applied_and_the_others_kept() {
        let running = config("shards = 2\n");
        let file = config(
            "shards = 4\nlog_level = \"debug\"\nws_slow_consumer = \"conflate\"\n\
             [limits]\nqueue_bytes_max = 1000000\ncross_shard_queue_len_max = 64\n\
             [[policy]]\nfilter = \"a/#\"\non_full = \"drop-newest\"\n",
        );
        let reload = Reload::new(&running, &file);
        assert_eq!(
            reload.applied,
            [
                "limits.queue_bytes_max",
                "log_level",
                "policy",
                "ws_slow_consumer"
            ]
        );
        assert_eq!(reload.kept, ["limits.cross_shard_queue_len_max", "shards"]);
        assert_eq!(reload.config.shards, 2);
        assert_eq!(reload.config.limits.queue_bytes_max, 1_000_000);
        assert_eq!(reload.config.limits.cross_shard_queue_len_max, 1024);
        assert_eq!(reload.config.log_level, "debug");
        assert_eq!(reload.config.policies, file.policies);
    }

    /// Each `[limits]` key, changed alone: named as applied exactly when the reloaded
    /// configuration takes it, and kept exactly when it keeps the running value, so that
    /// `LIVE_KEYS` and `live_limits` cannot disagree.
    #[test]
    fn every_limit_is_either_applied_or_kept() {
        let running = config("");
        let defaults = effective_toml(&running);
        let limits = defaults
            .split("[limits]\n")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("the effective configuration has a [limits] table");
        let mut live = 0;
        for line in limits.lines() {
            let (key, value) = line.split_once(" = ").expect("key = value");
            let changed = match value {
                "true" => "false".to_owned(),
                "false" => "true".to_owned(),
                number => (number.parse::<u64>().expect("a number") - 1).to_string(),
            };
            let file = config(&format!("[limits]\n{key} = {changed}\n"));
            let reload = Reload::new(&running, &file);
            let name = format!("limits.{key}");
            if LIVE_KEYS.contains(&name.as_str()) {
                live += 1;
                assert_eq!(reload.applied, [name.as_str()], "{name}");
                assert!(reload.kept.is_empty(), "{name}");
                assert_eq!(reload.config.limits, file.limits, "{name}");
            } else {
                assert_eq!(reload.kept, [name.as_str()], "{name}");
                assert!(reload.applied.is_empty(), "{name}");
                assert_eq!(reload.config.limits, running.limits, "{name}");
            }
        }
        let listed = LIVE_KEYS.iter().filter(|key| key.starts_with("limits."));
        assert_eq!(live, listed.count(), "every live limit listed is a limit");
    }

    #[test]
    fn auth_and_tls_apply_but_what_is_set_up_at_start() {
        let running = config("[auth]\npassword_file = \"old\"\n[tls]\ncert_file = \"a.pem\"\n");
        let file = config(
            "[auth]\npassword_file = \"new\"\nallow_anonymous = true\nverifier_threads = 5\n\
             [tls]\ncert_file = \"b.pem\"\nktls = \"off\"\n",
        );
        let reload = Reload::new(&running, &file);
        assert_eq!(
            reload.applied,
            [
                "auth.allow_anonymous",
                "auth.password_file",
                "tls.cert_file"
            ]
        );
        assert_eq!(reload.kept, ["auth.verifier_threads", "tls.ktls"]);
        assert_eq!(reload.config.auth.password_file, file.auth.password_file);
        assert_eq!(reload.config.auth.allow_anonymous, Some(true));
        assert_eq!(
            reload.config.auth.verifier_threads,
            running.auth.verifier_threads
        );
        assert_eq!(reload.config.tls.cert_file, file.tls.cert_file);
        assert_eq!(reload.config.tls.ktls, running.tls.ktls);
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let running = config("[tls]\ncert_file = \"c.pem\"\n");
        let reload = Reload::new(&running, &running.clone());
        assert!(reload.applied.is_empty());
        assert!(reload.kept.is_empty());
        assert_eq!(reload.config, running);
    }

    #[test]
    fn an_unset_key_that_is_set_is_a_change() {
        let reload = Reload::new(&config(""), &config("[tls]\ncert_file = \"c.pem\"\n"));
        assert_eq!(reload.applied, ["tls.cert_file"]);
    }

    #[test]
    fn the_store_bounds_keep_their_running_value() {
        let running = config("");
        let file = config(
            "store_queue_flushes_per_shard_max = 8\nstore_flushes_per_write_max = 16\n\
             compaction_log_ratio = 3\ncompaction_log_bytes_min = 8192\n\
             store_retry_interval_ms = 50\n",
        );
        let reload = Reload::new(&running, &file);
        assert!(reload.applied.is_empty(), "{:?}", reload.applied);
        assert_eq!(
            reload.kept,
            [
                "compaction_log_bytes_min",
                "compaction_log_ratio",
                "store_flushes_per_write_max",
                "store_queue_flushes_per_shard_max",
                "store_retry_interval_ms"
            ]
        );
        assert_eq!(reload.config.persistence.store, running.persistence.store);
    }
}
