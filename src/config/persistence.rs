//! `data_dir`, `durability` and `durability_interval_ms`: whether retained messages outlive
//! the process, and what a crash may lose; and the store thread's bounds (`store_*`,
//! `compaction_*`), set at start-up only (see `docs/persistence.md`).

use std::path::PathBuf;

use super::ConfigError;

/// The longest `durability_interval_ms`: a minute. What `batch` may lose grows with it.
pub const DURABILITY_INTERVAL_MS_MAX: u32 = 60_000;

/// The most flushes queued per shard (`store_queue_flushes_per_shard_max`): each holds at
/// most one message per retained topic of its shard, so a deep queue is memory a slow disk
/// pins.
pub const STORE_QUEUE_FLUSHES_PER_SHARD_MAX: u32 = 1024;
/// The most flushes one group commit may take (`store_flushes_per_write_max`): the store
/// thread notices a failing disk within this many.
pub const STORE_FLUSHES_PER_WRITE_MAX: u32 = 65_536;
/// The highest `compaction_log_ratio`: past it a log is mostly dead records.
pub const COMPACTION_LOG_RATIO_MAX: u32 = 64;
/// The smallest `compaction_log_bytes_min`: one page; below it a log would be rewritten for
/// every few updates.
pub const COMPACTION_LOG_BYTES_MIN_MIN: u64 = 4096;
/// The longest `store_retry_interval_ms`: a minute of refused QoS 1/2 publishes after the disk
/// has room again.
pub const STORE_RETRY_INTERVAL_MS_MAX: u32 = 60_000;

/// When what the broker writes reaches the disk (`durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every loop turn's retained changes are written and synced (one fsync per turn): a crash
    /// loses only what the turn in progress did.
    Sync,
    /// Written and synced every `durability_interval_ms`: a crash of the process loses at most
    /// the interval's changes, a power loss the same.
    #[default]
    Batch,
    /// Written every `durability_interval_ms`, never synced: a crash of the process loses at
    /// most the interval's changes, a power loss whatever the kernel had not written yet.
    None,
}

impl Durability {
    pub const fn name(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Batch => "batch",
            Durability::None => "none",
        }
    }
}

/// Where and how retained messages are kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    /// `None`: everything in memory, lost at exit.
    pub data_dir: Option<PathBuf>,
    pub durability: Durability,
    /// Milliseconds between two flushes under `batch` and `none`; 1 to
    /// [`DURABILITY_INTERVAL_MS_MAX`].
    pub durability_interval_ms: u32,
    pub store: StoreLimits,
}

/// The store thread's bounds. Read at start-up only: a reload that changes one keeps the
/// running value until a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Flushes queued per shard before a shard keeps its updates to conflate them further
    /// (`store_queue_flushes_per_shard_max`, default 4): a few intervals' worth absorbs a slow
    /// disk without holding much. The queue holds this × shards flushes; 1 to
    /// [`STORE_QUEUE_FLUSHES_PER_SHARD_MAX`].
    pub queue_flushes_per_shard_max: u32,
    /// Flushes taken from the queue and written and synced together, one write and one sync
    /// per shard for them all (`store_flushes_per_write_max`, default 256); 1 to
    /// [`STORE_FLUSHES_PER_WRITE_MAX`].
    pub flushes_per_write_max: u32,
    /// A shard's log is compacted into its snapshot once it holds this many times the bytes
    /// of its live records (`compaction_log_ratio`, default 4): at most that much disk per
    /// live byte, and each byte written is rewritten about 1/(ratio − 1) more times; 2 to
    /// [`COMPACTION_LOG_RATIO_MAX`].
    pub compaction_log_ratio: u32,
    /// ... and only once it holds at least this many bytes (`compaction_log_bytes_min`,
    /// default 4 MiB): a small log is cheaper to keep than to rewrite; at least
    /// [`COMPACTION_LOG_BYTES_MIN_MIN`].
    pub compaction_log_bytes_min: u64,
    /// After a failed write, how soon the store tries again even if no update comes
    /// (`store_retry_interval_ms`, default 1000); 1 to [`STORE_RETRY_INTERVAL_MS_MAX`].
    pub retry_interval_ms: u32,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            queue_flushes_per_shard_max: 4,
            flushes_per_write_max: 256,
            compaction_log_ratio: 4,
            compaction_log_bytes_min: 4 * 1024 * 1024,
            retry_interval_ms: 1000,
        }
    }
}

impl StoreLimits {
    fn validate(&self) -> Result<(), ConfigError> {
        let ranges: [(&str, u64, u64, u64); 4] = [
            (
                "store_queue_flushes_per_shard_max",
                self.queue_flushes_per_shard_max.into(),
                1,
                STORE_QUEUE_FLUSHES_PER_SHARD_MAX.into(),
            ),
            (
                "store_flushes_per_write_max",
                self.flushes_per_write_max.into(),
                1,
                STORE_FLUSHES_PER_WRITE_MAX.into(),
            ),
            (
                "compaction_log_ratio",
                self.compaction_log_ratio.into(),
                2,
                COMPACTION_LOG_RATIO_MAX.into(),
            ),
            (
                "store_retry_interval_ms",
                self.retry_interval_ms.into(),
                1,
                STORE_RETRY_INTERVAL_MS_MAX.into(),
            ),
        ];
        for (key, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err(ConfigError::invalid(
                    key,
                    &format!("must be {low} to {high}"),
                ));
            }
        }
        if self.compaction_log_bytes_min < COMPACTION_LOG_BYTES_MIN_MIN {
            return Err(ConfigError::invalid(
                "compaction_log_bytes_min",
                &format!("must be at least {COMPACTION_LOG_BYTES_MIN_MIN} (a page)"),
            ));
        }
        Ok(())
    }
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence {
            data_dir: None,
            durability: Durability::Batch,
            durability_interval_ms: 100,
            store: StoreLimits::default(),
        }
    }
}

impl Persistence {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self
            .data_dir
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            return Err(ConfigError::invalid("data_dir", "must not be empty"));
        }
        if !(1..=DURABILITY_INTERVAL_MS_MAX).contains(&self.durability_interval_ms) {
            return Err(ConfigError::invalid(
                "durability_interval_ms",
                &format!("must be 1 to {DURABILITY_INTERVAL_MS_MAX} (a minute)"),
            ));
        }
        self.store.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(change: impl FnOnce(&mut StoreLimits)) -> Result<(), ConfigError> {
        let mut persistence = Persistence::default();
        change(&mut persistence.store);
        persistence.validate()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(with(|_| {}), Ok(()));
    }

    /// A key and a change of the defaults that takes it out of range.
    type OutOfRange = (&'static str, fn(&mut StoreLimits));

    #[test]
    fn each_store_bound_out_of_range_is_named() {
        let cases: [OutOfRange; 8] = [
            ("store_queue_flushes_per_shard_max", |s| {
                s.queue_flushes_per_shard_max = 0
            }),
            ("store_queue_flushes_per_shard_max", |s| {
                s.queue_flushes_per_shard_max = STORE_QUEUE_FLUSHES_PER_SHARD_MAX + 1
            }),
            ("store_flushes_per_write_max", |s| {
                s.flushes_per_write_max = 0
            }),
            ("store_flushes_per_write_max", |s| {
                s.flushes_per_write_max = STORE_FLUSHES_PER_WRITE_MAX + 1
            }),
            ("compaction_log_ratio", |s| s.compaction_log_ratio = 1),
            ("compaction_log_ratio", |s| {
                s.compaction_log_ratio = COMPACTION_LOG_RATIO_MAX + 1
            }),
            ("compaction_log_bytes_min", |s| {
                s.compaction_log_bytes_min = COMPACTION_LOG_BYTES_MIN_MIN - 1
            }),
            ("store_retry_interval_ms", |s| s.retry_interval_ms = 0),
        ];
        for (key, change) in cases {
            let err = with(change).expect_err(key);
            assert_eq!(err.key.as_deref(), Some(key), "{}", err.message);
        }
    }

    #[test]
    fn the_bounds_themselves_are_valid() {
        assert_eq!(
            with(|s| {
                s.queue_flushes_per_shard_max = STORE_QUEUE_FLUSHES_PER_SHARD_MAX;
                s.flushes_per_write_max = 1;
                s.compaction_log_ratio = 2;
                s.compaction_log_bytes_min = COMPACTION_LOG_BYTES_MIN_MIN;
                s.retry_interval_ms = STORE_RETRY_INTERVAL_MS_MAX;
            }),
            Ok(())
        );
    }
}
