//! `data_dir`, `durability` and `durability_interval_ms`: whether retained messages outlive
//! the process, and what a crash may lose (see `docs/persistence.md`).

use std::path::PathBuf;

use super::ConfigError;

/// The longest `durability_interval_ms`: a minute. What `batch` may lose grows with it.
pub const DURABILITY_INTERVAL_MS_MAX: u32 = 60_000;

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
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence {
            data_dir: None,
            durability: Durability::Batch,
            durability_interval_ms: 100,
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
        Ok(())
    }
}
