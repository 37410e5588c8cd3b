//! When this shard hands its retained and persistent session changes to the store
//! (`crate::store`): every loop turn
//! under `durability = "sync"`, every `durability_interval_ms` otherwise. Handing them over
//! never waits: if the store's queue is full, the broker keeps them and conflates further.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shard;
use crate::broker::{RoutedMessage, SessionImage};
use crate::config::Durability;
use crate::store::{Flush, StoreHandle};

/// What a shard gets of the store at start.
pub struct ShardStore {
    pub handle: StoreHandle,
    /// Every retained message loaded at start-up, for this shard's replica.
    pub loaded: Arc<[Arc<RoutedMessage>]>,
    /// The persistent sessions loaded at start-up that live on this shard.
    pub sessions: Vec<SessionImage>,
    pub durability: Durability,
    pub interval: Duration,
}

/// The shard's side of the store.
pub(super) struct Persist {
    handle: StoreHandle,
    /// `None` under `sync`: every turn flushes.
    interval: Option<Duration>,
    next_flush: Instant,
}

impl Persist {
    pub(super) fn new(store: ShardStore, now: Instant) -> Persist {
        let interval = (store.durability != Durability::Sync).then_some(store.interval);
        Persist {
            handle: store.handle,
            interval,
            next_flush: now + store.interval,
        }
    }

    pub(super) fn write_errors(&self) -> u64 {
        self.handle.write_errors()
    }

    pub(super) fn writable(&self) -> bool {
        self.handle.writable()
    }
}

impl Shard {
    /// Whether changes wait for the next flush.
    fn writes_pending(&self) -> bool {
        self.broker.retained_writes_pending() || self.broker.session_writes_pending()
    }

    /// What changed since the last flush.
    fn take_flush(&mut self) -> Flush {
        Flush {
            retained: self.broker.take_retained_writes(),
            sessions: self.broker.take_session_writes(),
        }
    }

    /// Tells the broker whether the store writes now, before this turn's publishes are read:
    /// one relaxed load per turn.
    pub(super) fn refresh_store_state(&mut self) {
        if let Some(persist) = &self.persist {
            self.broker.set_store_writable(persist.writable());
        }
    }

    /// Hands the changes to the store when due (see the module documentation).
    pub(super) fn flush_retained(&mut self, now: Instant) {
        if self.persist.is_none() || !self.writes_pending() {
            return;
        }
        let Some(persist) = self.persist.as_mut() else {
            return;
        };
        if let Some(interval) = persist.interval {
            if now < persist.next_flush {
                return;
            }
            persist.next_flush = now + interval;
        }
        let flush = self.take_flush();
        let Some(persist) = self.persist.as_ref() else {
            return;
        };
        if let Err(flush) = persist.handle.try_send(flush) {
            self.broker.return_retained_writes(flush.retained);
            self.broker.return_session_writes(flush.sessions);
        }
    }

    /// When the loop must wake to flush, if changes wait.
    pub(super) fn retained_flush_at(&self) -> Option<Instant> {
        let persist = self.persist.as_ref()?;
        if !self.writes_pending() {
            return None;
        }
        Some(match persist.interval {
            Some(_) => persist.next_flush,
            // A full queue under `sync`: try again at the next tick rather than spin.
            None => self.next_tick,
        })
    }

    /// At stop: everything left, waiting for room if need be.
    pub(super) fn flush_retained_at_stop(&mut self) {
        if self.persist.is_some() {
            let flush = self.take_flush();
            if let Some(persist) = &self.persist
                && !flush.is_empty()
            {
                persist.handle.send(flush);
            }
        }
    }
}
