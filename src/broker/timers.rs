//! Deadlines of sessions whose client is away: MQTT 5 Session Expiry (§3.1.2.11.2) and Will
//! Delay (§3.1.3.2.2).
//!
//! Each deadline carries a stamp; a session that came back or was discarded since leaves a
//! stale entry, recognised because the session's stamp moved on, and skipped when due. Stale
//! entries are compacted away once they outnumber the live sessions.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::session::SessionKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// Stamp: the session's `offline_ticket` when it went offline.
    SessionExpiry,
    /// Stamp: the session's offline ticket when the will was delayed (the connection had just
    /// ended, so the ticket is the one it took then).
    WillDelay,
    /// Stamp: the connection (`ConnId` index and generation) whose token expires.
    TokenExpiry,
}

pub(crate) struct SessionTimers {
    heap: BinaryHeap<Reverse<(Instant, SessionKey, u64, TimerKind)>>,
}

impl SessionTimers {
    pub(crate) fn new() -> SessionTimers {
        SessionTimers {
            heap: BinaryHeap::new(),
        }
    }

    /// Schedules `kind` for `key` `after_s` seconds from `now`. A deadline past what `Instant`
    /// can hold (over a century away) is never due, so it is not kept.
    pub(crate) fn push(
        &mut self,
        now: Instant,
        after_s: u32,
        key: SessionKey,
        stamp: u64,
        kind: TimerKind,
    ) {
        if let Some(due) = now.checked_add(Duration::from_secs(after_s.into())) {
            self.push_at(due, key, stamp, kind);
        }
    }

    /// A timer due at `due`: for deadlines kept across a restart, which are not whole
    /// seconds from now.
    pub(crate) fn push_at(&mut self, due: Instant, key: SessionKey, stamp: u64, kind: TimerKind) {
        self.heap.push(Reverse((due, key, stamp, kind)));
    }

    /// The earliest deadline that is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(SessionKey, u64, TimerKind)> {
        let Reverse((due, ..)) = self.heap.peek()?;
        if *due > now {
            return None;
        }
        self.heap
            .pop()
            .map(|Reverse((_, key, stamp, kind))| (key, stamp, kind))
    }

    /// Drops stale entries once they outnumber `live` by far.
    pub(crate) fn compact(
        &mut self,
        live: usize,
        is_live: impl Fn(SessionKey, u64, TimerKind) -> bool,
    ) {
        if self.heap.len() > 2 * live + 64 {
            self.heap
                .retain(|Reverse((_, key, stamp, kind))| is_live(*key, *stamp, *kind));
        }
    }
}
