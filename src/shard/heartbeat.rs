//! Whether every shard's loop still turns: each shard counts its ticks, and the watchdog
//! (`WATCHDOG=1` to the service manager, `net/sd_notify.rs`) pings only while every count
//! moves. A shard stuck in a system call or a loop would otherwise go unnoticed, since the
//! main thread, which sends the pings, does none of the shards' work.

use std::sync::atomic::{AtomicU64, Ordering};

/// One tick counter per shard, written only by its shard.
pub struct Heartbeats {
    beats: Box<[AtomicU64]>,
}

impl Heartbeats {
    pub fn new(shard_count: usize) -> Heartbeats {
        Heartbeats {
            beats: (0..shard_count).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Shard `shard` completed a tick.
    pub fn beat(&self, shard: usize) {
        if let Some(beat) = self.beats.get(shard) {
            beat.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counts(&self) -> Vec<u64> {
        self.beats
            .iter()
            .map(|beat| beat.load(Ordering::Relaxed))
            .collect()
    }
}

/// The counts seen at the last check, to compare the next one with.
pub struct Watch {
    seen: Vec<u64>,
}

impl Watch {
    pub fn new(heartbeats: &Heartbeats) -> Watch {
        Watch {
            seen: heartbeats.counts(),
        }
    }

    /// The shards that did not tick since the last check; empty when all did. A shard ticks
    /// every 100 ms, so checks much further apart than that (the watchdog's are seconds apart)
    /// see every healthy shard move.
    pub fn stalled(&mut self, heartbeats: &Heartbeats) -> Vec<usize> {
        let now = heartbeats.counts();
        let stalled = now
            .iter()
            .zip(&self.seen)
            .enumerate()
            .filter(|(_, (now, seen))| now == seen)
            .map(|(shard, _)| shard)
            .collect();
        self.seen = now;
        stalled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_that_did_not_tick_since_the_last_check_is_stalled() {
        let heartbeats = Heartbeats::new(3);
        let mut watch = Watch::new(&heartbeats);
        heartbeats.beat(0);
        heartbeats.beat(2);
        assert_eq!(watch.stalled(&heartbeats), vec![1]);
        heartbeats.beat(0);
        heartbeats.beat(1);
        heartbeats.beat(2);
        assert!(watch.stalled(&heartbeats).is_empty());
        assert_eq!(watch.stalled(&heartbeats), vec![0, 1, 2]);
    }

    #[test]
    fn an_unknown_shard_is_ignored() {
        let heartbeats = Heartbeats::new(1);
        heartbeats.beat(5);
        assert_eq!(Watch::new(&heartbeats).seen, vec![0]);
    }
}
