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
//! every shard reported their barrier. Shared subscription messages posted to a third shard
//! are followed by cover barriers, one level per hop (see [`Shard::seal_held_acks`]).
//!
//! Each flush also carries a mark, its number among the shard's flushes: what the broker sends
//! the client of a persistent session it wrote waits until the store reports that mark on
//! disk (`durable_sends.rs`). The commits of tentative QoS 2 publishes (`broker/origins.rs`)
//! wait for the mark of the flush that wrote them too; then the broker sends what waited for
//! them here, and every other shard is told to do the same.

use std::collections::VecDeque;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shard;
use super::durable_sends::DurableSends;
use crate::broker::{
    COVER_LEVELS, Origin, RoutedMessage, SessionImage, ShardMessage, barrier_level, cover_barrier,
};
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
    /// Barriers to answer, and when.
    answers: Answers,
    /// This shard's barrier sealed this turn, to post behind the turn's publishes.
    barrier: Option<u64>,
    /// This turn's covers, one per level of the shared subscription messages it posts, to
    /// post behind them.
    covers_to_post: Vec<u64>,
    /// Flushes the store's queue took: the next one is marked one more.
    accepted: u64,
    /// Under `sync`: what waits for the flush that wrote its connection's session.
    pub(super) sends: Option<DurableSends>,
    /// Commits of tentative publishes, with the mark of the flush that writes them; marks
    /// grow from front to back. At most the PUBRECs released and not yet durable.
    commits: VecDeque<(u64, Arc<Origin>)>,
    /// Commits were taken and no flush was accepted since: one is owed, empty or not.
    commits_unflushed: bool,
    /// Commits became durable this turn: the other shards are told.
    committed_notice: bool,
}

impl Persist {
    pub(super) fn new(store: ShardStore, now: Instant) -> Persist {
        let interval = (store.durability != Durability::Sync).then_some(store.interval);
        Persist {
            handle: store.handle,
            interval,
            next_flush: now + store.interval,
            answers: Answers::default(),
            barrier: None,
            covers_to_post: Vec::new(),
            accepted: 0,
            sends: interval.is_none().then(DurableSends::default),
            commits: VecDeque::new(),
            commits_unflushed: false,
            committed_notice: false,
        }
    }

    pub(super) fn write_errors(&self) -> u64 {
        self.handle.write_errors()
    }

    pub(super) fn writable(&self) -> bool {
        self.handle.writable()
    }

    /// The highest mark of this shard's flushes on disk.
    pub(super) fn durable_mark(&self) -> u64 {
        self.handle.durable_mark()
    }
}

impl Shard {
    /// Whether changes or barriers wait for the next flush.
    fn writes_pending(&self) -> bool {
        self.broker.retained_writes_pending()
            || self.broker.session_writes_pending()
            || self.broker.commits_pending()
            || self
                .persist
                .as_ref()
                .is_some_and(|persist| !persist.answers.is_empty() || persist.commits_unflushed)
    }

    /// What changed since the last flush, and the barriers it answers: those of every publish
    /// this shard applied, so only once no delivery of them is left for a later turn.
    fn take_flush(&mut self) -> Flush {
        let answered = !self.broker.fanout_pending();
        let echoes = match self.persist.as_mut() {
            Some(persist) if answered => {
                let covered = persist.handle.durable_covers();
                persist.answers.take(&covered)
            }
            _ => Vec::new(),
        };
        let retained = self.broker.take_retained_writes();
        let sessions = self.broker.take_session_writes();
        // Under `sync`, the mark this flush gets if the store's queue takes it (below).
        let bucket_mark = self
            .persist
            .as_ref()
            .and_then(|persist| persist.sends.as_ref().map(|_| persist.accepted + 1));
        self.share_sessions(&sessions, bucket_mark);
        let mut mark = 0;
        if let Some(persist) = self.persist.as_mut()
            && let Some(sends) = persist.sends.as_mut()
        {
            // Not taken by the queue, its changes go back to the broker and with the next
            // flush, which gets the same mark.
            mark = persist.accepted + 1;
            for &conn in self.broker.written_conns() {
                sends.gate(conn, mark);
            }
            let commits = self.broker.take_commits();
            persist.commits_unflushed |= !commits.is_empty();
            persist
                .commits
                .extend(commits.into_iter().map(|origin| (mark, origin)));
        }
        Flush {
            retained,
            sessions,
            echoes,
            mark,
        }
    }

    /// A barrier of shard `entry` read from its queue: every publish it posted before was
    /// applied here.
    pub(super) fn answer_barrier(&mut self, entry: usize, seq: u64) {
        if let Some(persist) = &mut self.persist {
            persist.answers.read(entry, seq);
        }
    }

    /// Seals the acknowledgements held this turn, once their publishes were delivered here:
    /// this shard answers the barrier in this turn's flush and posts it to the others.
    ///
    /// A turn that posts shared subscription messages (a `Deliver` from a group's owner to a
    /// member's shard, a hand-back from the member to the owner, `share_groups.rs`) also
    /// seals a **cover** per level (hop) of them: a barrier posted behind them. A publish
    /// barrier, or a cover of level `h`, read from another shard is answered only once this
    /// shard's last covers of every level above are durable everywhere, so the messages its
    /// publishes caused through this shard, on other shards, and the hops after them, are on
    /// disk too. A cover of the highest level is answered at once: the waits go up the
    /// levels and end there (one level for all would chain without end under shared traffic
    /// both ways).
    pub(super) fn seal_held_acks(&mut self) {
        let Some(persist) = &mut self.persist else {
            return;
        };
        persist
            .answers
            .take_deferred_due(&persist.handle.durable_covers());
        if let Some(seq) = self.broker.seal_held_acks() {
            persist.answers.own(Echo {
                entry: self.id,
                seq,
            });
            persist.barrier = Some(seq);
        }
        // Under `sync` only: nothing waits for barriers otherwise.
        if persist.interval.is_none() {
            let mut levels = [false; COVER_LEVELS];
            for (_, message) in &self.outbox.to_shard {
                if let ShardMessage::Group(group) = message
                    && let Some(level) = group.cover_level()
                {
                    levels[level - 1] = true;
                }
            }
            for (index, _) in levels.iter().enumerate().filter(|(_, posted)| **posted) {
                let posted = persist.answers.cover(self.id, index + 1);
                persist.covers_to_post.push(posted);
            }
        }
    }

    /// This turn's barrier, for the other shards' queues.
    pub(super) fn take_barrier(&mut self) -> Option<u64> {
        self.persist.as_mut()?.barrier.take()
    }

    /// This turn's covers, as posted ([`COVER_BARRIER`](crate::broker::COVER_BARRIER) and their level set), for the other
    /// shards' queues behind its shared subscription messages.
    pub(super) fn take_covers(&mut self) -> Vec<u64> {
        self.persist
            .as_mut()
            .map(|persist| std::mem::take(&mut persist.covers_to_post))
            .unwrap_or_default()
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

    /// Marks committed the tentative publishes whose commit is on disk: what waited for them
    /// here is sent, and the other shards are told (`broker/origins.rs`).
    pub(super) fn release_commits(&mut self) {
        let Some(persist) = self.persist.as_mut() else {
            return;
        };
        if persist.commits.is_empty() {
            return;
        }
        let durable = persist.durable_mark();
        let due = persist
            .commits
            .iter()
            .take_while(|(mark, _)| *mark <= durable)
            .count();
        if due == 0 {
            return;
        }
        let origins: Vec<Arc<Origin>> = persist
            .commits
            .drain(..due)
            .map(|(_, origin)| origin)
            .collect();
        persist.committed_notice = true;
        self.broker.committed(&origins, &mut self.outbox);
    }

    /// Whether commits became durable since the last call: the other shards are told.
    pub(super) fn take_committed_notice(&mut self) -> bool {
        self.persist
            .as_mut()
            .is_some_and(|persist| std::mem::take(&mut persist.committed_notice))
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
        if flush.is_empty() && !persist.commits_unflushed {
            // Only barriers wait, for a fan-out still under way.
            return;
        }
        let sent = persist.handle.try_send(flush);
        if let Some(persist) = self.persist.as_mut()
            && sent.is_ok()
        {
            persist.accepted += 1;
            persist.commits_unflushed = false;
        }
        if let Err(flush) = sent {
            self.broker.return_retained_writes(flush.retained);
            self.broker.return_session_writes(flush.sessions);
            if let Some(persist) = &mut self.persist {
                // Before the barriers read since: their order does not matter to the store,
                // but they stay with the next flush.
                persist.answers.give_back(flush.echoes);
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
            if let Some(persist) = &mut self.persist
                && !flush.is_empty()
            {
                persist.handle.send(flush);
                persist.accepted += 1;
            }
        }
    }
}

/// The barriers a shard answers, and when (see [`Shard::seal_held_acks`]).
#[derive(Default)]
struct Answers {
    /// To answer with the next flush taken with no fan-out pending: this shard's own
    /// barriers and covers, other shards' covers of the highest level, and deferred ones now
    /// due.
    echoes: Vec<Echo>,
    /// Other shards' publish barriers (level 0) and covers read, with their level: answered
    /// like `echoes`, but only once the shared subscription messages this shard posted by
    /// then at a higher level are durable on every shard.
    read: Vec<(usize, Echo)>,
    /// Per level, those read that wait for this shard's covers of the higher levels, with
    /// the covers sealed when they were taken, in the order they were read.
    deferred: [VecDeque<(Covers, Echo)>; COVER_LEVELS],
    /// The last cover sealed at each level (numbered apart per level, from 1): it follows
    /// every shared subscription message of that level posted.
    covers: Covers,
}

/// A number per cover level (index `level - 1`).
type Covers = [u64; COVER_LEVELS];

/// Whether what a barrier or cover of `level` waits for is durable: this shard's covers of
/// every higher level, as `sealed` when it was taken, given those `durable` everywhere.
fn covered(level: usize, sealed: &Covers, durable: &Covers) -> bool {
    sealed
        .iter()
        .zip(durable)
        .skip(level)
        .all(|(sealed, durable)| sealed <= durable)
}

impl Answers {
    /// A barrier of shard `entry` read from its queue, as posted (a cover has
    /// [`COVER_BARRIER`](crate::broker::COVER_BARRIER) set and its level, and keeps them in its answer: the store counts
    /// each level apart).
    fn read(&mut self, entry: usize, posted: u64) {
        let echo = Echo { entry, seq: posted };
        match barrier_level(posted).0 {
            // Nothing is posted at a higher level: it waits for nothing.
            COVER_LEVELS => self.echoes.push(echo),
            level => self.read.push((level, echo)),
        }
    }

    /// A barrier this shard sealed.
    fn own(&mut self, echo: Echo) {
        self.echoes.push(echo);
    }

    /// Seals a new cover of `level` of shard `shard` (this one), answered in its own flush;
    /// returns it as posted, [`COVER_BARRIER`](crate::broker::COVER_BARRIER) and its level set.
    fn cover(&mut self, shard: usize, level: usize) -> u64 {
        let last = &mut self.covers[level - 1];
        *last += 1;
        let posted = cover_barrier(level, *last);
        self.echoes.push(Echo {
            entry: shard,
            seq: posted,
        });
        posted
    }

    /// Moves the deferred barriers and covers whose wait is over, this shard's covers up to
    /// `durable` being durable everywhere, to the next flush.
    fn take_deferred_due(&mut self, durable: &Covers) {
        for (level, deferred) in self.deferred.iter_mut().enumerate() {
            let due = deferred
                .iter()
                .take_while(|(sealed, _)| covered(level, sealed, durable))
                .count();
            self.echoes
                .extend(deferred.drain(..due).map(|(_, echo)| echo));
        }
    }

    /// What the flush taken now answers, this shard's covers up to `durable` being durable
    /// everywhere; those read wait for the covers of higher levels sealed by now, in the
    /// order read per level (the store keeps the highest answered).
    fn take(&mut self, durable: &Covers) -> Vec<Echo> {
        let mut echoes = std::mem::take(&mut self.echoes);
        for (level, echo) in self.read.drain(..) {
            let deferred = &mut self.deferred[level];
            match deferred.is_empty() && covered(level, &self.covers, durable) {
                true => echoes.push(echo),
                false => deferred.push_back((self.covers, echo)),
            }
        }
        echoes
    }

    /// Takes back the answers of a flush the store's queue refused, for the next one.
    fn give_back(&mut self, mut echoes: Vec<Echo>) {
        // Before those read since: their order does not matter to the store, but they stay
        // with the next flush.
        echoes.append(&mut self.echoes);
        self.echoes = echoes;
    }

    /// Whether the next flush has barriers to answer, deferred ones aside.
    fn is_empty(&self) -> bool {
        self.echoes.is_empty() && self.read.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(entry: usize, seq: u64) -> Echo {
        Echo { entry, seq }
    }

    /// This shard's covers durable everywhere up to `last` at `level`, none at the others.
    fn durable(level: usize, last: u64) -> Covers {
        let mut covers = [0; COVER_LEVELS];
        covers[level - 1] = last;
        covers
    }

    const NONE: Covers = [0; COVER_LEVELS];

    #[test]
    fn without_covers_a_barrier_read_is_answered_at_once() {
        let mut answers = Answers::default();
        answers.read(1, 4);
        answers.own(echo(0, 2));
        assert!(!answers.is_empty());
        assert_eq!(answers.take(&NONE), [echo(0, 2), echo(1, 4)]);
        assert!(answers.is_empty());
    }

    #[test]
    fn a_cover_of_the_highest_level_is_answered_at_once_and_keeps_its_level() {
        let mut answers = Answers::default();
        assert_eq!(answers.cover(0, 1), cover_barrier(1, 1));
        answers.cover(0, COVER_LEVELS);
        let top = cover_barrier(COVER_LEVELS, 7);
        answers.read(1, top);
        assert_eq!(
            answers.take(&NONE),
            [
                echo(0, cover_barrier(1, 1)),
                echo(0, cover_barrier(COVER_LEVELS, 1)),
                echo(1, top),
            ]
        );
        assert_eq!(barrier_level(top), (COVER_LEVELS, 7));
    }

    #[test]
    fn a_publish_barrier_waits_for_the_last_cover_in_order() {
        let mut answers = Answers::default();
        answers.cover(0, 1);
        answers.cover(0, 1);
        answers.read(1, 4);
        assert_eq!(
            answers.take(&durable(1, 1)).len(),
            2,
            "the covers; cover 2 is not durable"
        );
        answers.read(1, 5);
        assert_eq!(
            answers.take(&durable(1, 2)),
            Vec::<Echo>::new(),
            "behind the deferred one, though its cover is durable"
        );
        answers.take_deferred_due(&durable(1, 1));
        assert!(answers.is_empty());
        answers.take_deferred_due(&durable(1, 2));
        assert_eq!(answers.take(&durable(1, 2)), [echo(1, 4), echo(1, 5)]);
    }

    /// A message handed back by a member's shard goes on from the owner in a later turn: the
    /// owner's cover of the first `Deliver` (level 1) is answered by the member's shard only
    /// once its cover of the hand-back (level 2) is durable everywhere, and the owner answers
    /// that one only once its cover of the next `Deliver` (level 3) is.
    #[test]
    fn a_cover_waits_for_the_covers_of_higher_levels_only() {
        let mut member = Answers::default();
        member.cover(1, 2);
        let first = cover_barrier(1, 1);
        member.read(0, first);
        let lower = cover_barrier(2, 1);
        member.read(0, lower);
        assert_eq!(
            member.take(&NONE),
            [echo(1, cover_barrier(2, 1)), echo(0, lower)],
            "its own cover, and the level-2 cover, which waits for levels 3 and up"
        );
        member.take_deferred_due(&durable(1, 9));
        assert!(member.is_empty(), "a level-1 cover does not cover level 2");
        member.take_deferred_due(&durable(2, 1));
        assert_eq!(member.take(&durable(2, 1)), [echo(0, first)]);
    }

    #[test]
    fn a_refused_flush_gives_its_answers_back_first() {
        let mut answers = Answers::default();
        answers.own(echo(0, 1));
        let taken = answers.take(&NONE);
        answers.read(1, 2);
        answers.give_back(taken);
        assert_eq!(answers.take(&NONE), [echo(0, 1), echo(1, 2)]);
    }
}
