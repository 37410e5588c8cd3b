//! What a SIGHUP changes in a running broker: the configuration file is read again and the
//! keys that can change live are applied (`log_level`, the slow consumer policies); those that
//! cannot (listeners, shards, buffers, limits, …) stay as they were, and are named in the log.
//!
//! Shards see the new configuration through [`SharedConfig`], whose generation they compare
//! once per loop turn, as they do with the auth policy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{Config, effective_toml};

/// The keys a running broker applies from a reloaded file.
pub const LIVE_KEYS: [&str; 4] = [
    "log_level",
    "tcp_slow_consumer",
    "ws_slow_consumer",
    "policy",
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
             [limits]\nqueue_bytes_max = 1000000\n\
             [[policy]]\nfilter = \"a/#\"\non_full = \"drop-newest\"\n",
        );
        let reload = Reload::new(&running, &file);
        assert_eq!(reload.applied, ["log_level", "policy", "ws_slow_consumer"]);
        assert_eq!(reload.kept, ["limits.queue_bytes_max", "shards"]);
        assert_eq!(reload.config.shards, 2);
        assert_eq!(reload.config.limits, running.limits);
        assert_eq!(reload.config.log_level, "debug");
        assert_eq!(reload.config.policies, file.policies);
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
        assert_eq!(reload.kept, ["tls.cert_file"]);
    }
}
