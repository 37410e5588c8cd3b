//! When this shard hands its retained and persistent session changes to the store
//! (`crate::store`): every loop turn
//! under `durability = "sync"`, every `durability_interval_ms` otherwise. Handing them over
//! never waits: if the store's queue is full, the broker keeps them and conflates further.
//!
//! Under `sync` the shard also holds the acknowledgements of accepted QoS 1/2 publishes until
//! every shard the publishes reached has them on disk (`docs/persistence.md`,
//! "Acknowledgements under sync"). Each turn with acknowledgements newly held and no fan-out
//! pending, the broker seals them with a barrier number; the shard answers its own barrier in
//! this turn's flush and posts the barrier to every other shard behind the turn's publishes.
//! A shard that reads a barrier has applied every publish posted before it (the queues are
//! FIFO), and answers it in its next flush taken with no fan-out pending. The store reports
//! a barrier once the flush that answers it is synced; the acknowledgements are sent once
//! every shard reported their barrier.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shard;
use crate::broker::{RoutedMessage, SessionImage};
use crate::config::Durability;
use crate::store::{Echo, Flush, StoreHandle};

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
    /// Barriers read (other shards') or sealed (this shard's), to answer with the next flush
    /// taken with no fan-out pending.
    echoes: Vec<Echo>,
    /// This shard's barrier sealed this turn, to post behind the turn's publishes.
    barrier: Option<u64>,
}

impl Persist {
    pub(super) fn new(store: ShardStore, now: Instant) -> Persist {
        let interval = (store.durability != Durability::Sync).then_some(store.interval);
        Persist {
            handle: store.handle,
            interval,
            next_flush: now + store.interval,
            echoes: Vec::new(),
            barrier: None,
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
    /// Whether changes or barriers wait for the next flush.
    fn writes_pending(&self) -> bool {
        self.broker.retained_writes_pending()
            || self.broker.session_writes_pending()
            || self
                .persist
                .as_ref()
                .is_some_and(|persist| !persist.echoes.is_empty())
    }

    /// What changed since the last flush, and the barriers it answers: those of every publish
    /// this shard applied, so only once no delivery of them is left for a later turn.
    fn take_flush(&mut self) -> Flush {
        let answered = !self.broker.fanout_pending();
        let echoes = match self.persist.as_mut() {
            Some(persist) if answered => std::mem::take(&mut persist.echoes),
            _ => Vec::new(),
        };
        Flush {
            retained: self.broker.take_retained_writes(),
            sessions: self.broker.take_session_writes(),
            echoes,
        }
    }

    /// A barrier of shard `entry` read from its queue: every publish it posted before was
    /// applied here.
    pub(super) fn answer_barrier(&mut self, entry: usize, seq: u64) {
        if let Some(persist) = &mut self.persist {
            persist.echoes.push(Echo { entry, seq });
        }
    }

    /// Seals the acknowledgements held this turn, once their publishes were delivered here:
    /// this shard answers the barrier in this turn's flush and posts it to the others.
    pub(super) fn seal_held_acks(&mut self) {
        let Some(persist) = &mut self.persist else {
            return;
        };
        if let Some(seq) = self.broker.seal_held_acks() {
            persist.echoes.push(Echo {
                entry: self.id,
                seq,
            });
            persist.barrier = Some(seq);
        }
    }

    /// This turn's barrier, for the other shards' queues.
    pub(super) fn take_barrier(&mut self) -> Option<u64> {
        self.persist.as_mut()?.barrier.take()
    }

    /// Sends the held acknowledgements that every shard reported durable, and reads again
    /// the connections that waited for them.
    pub(super) fn release_held_acks(&mut self, now: Instant) {
        let Some(persist) = &self.persist else {
            return;
        };
        if !self.broker.held_acks_waiting() {
            return;
        }
        let durable = persist.handle.durable_barrier();
        if self.broker.release_held_acks(durable, &mut self.outbox) > 0 {
            self.resume_throttled(now);
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
        if flush.is_empty() {
            // Only barriers wait, for a fan-out still under way.
            return;
        }
        if let Err(flush) = persist.handle.try_send(flush) {
            self.broker.return_retained_writes(flush.retained);
            self.broker.return_session_writes(flush.sessions);
            if let Some(persist) = &mut self.persist {
                // Before the barriers read since: their order does not matter to the store,
                // but they stay with the next flush.
                let mut echoes = flush.echoes;
                echoes.append(&mut persist.echoes);
                persist.echoes = echoes;
            }
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
