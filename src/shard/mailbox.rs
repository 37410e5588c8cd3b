//! How shards reach each other without sharing mutable state: bounded lock-free queues, one
//! per (sender, receiver) pair so each is single-producer and keeps per-publisher order, and
//! one eventfd per shard to wake it.
//!
//! **When a queue is full.** Messages for that shard wait in the sender's [`CrossShard`]
//! backlog, in order, and are posted first on the next turns. The backlog is bounded in bytes
//! (`cross_shard_backlog_bytes_max`): past the bound, the connections that fed it this turn
//! (their publishes went to other shards) stop being read — their receive is cancelled and not
//! armed again — until the backlog is back under half the bound. Publishers are slowed by
//! TCP's own flow control; nothing accepted is dropped.
//!
//! **Memory.** A queue holds `cross_shard_queue_len_max` slots of 24 B (16 B message + the
//! queue's stamp), allocated at start-up for every pair of different shards: 16 shards ×
//! 15 targets × 1 024 × 24 B = 5.6 MiB in all with the default. Bursts beyond that wait in the
//! backlog, which takes memory only while it holds something.

use std::collections::{HashSet, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;
use log::info;

use super::ingest::ingest_pending;
use super::peer::{CloseCause, Peer, Phase, Verified};
use super::{Shard, ingest_context};
use crate::auth::Identity;
use crate::broker::ShardMessage;
use crate::conn::{ConnId, Transport};
use crate::net::io::TlsLayer;
use crate::net::sys;
use crate::protocol::ws::frame::FrameDecoder;

/// Messages taken from each other shard per turn: bounds one turn's work.
const REMOTE_MESSAGES_PER_TURN_MAX: usize = 4096;

/// Handoffs in flight to one shard. Only CONNECTs for another shard's sessions take this path,
/// and each is done within a loop turn or two.
const HANDOFFS_QUEUED_MAX: usize = 4096;

/// A connection whose CONNECT names a session owned by another shard, on its way there.
pub struct Handoff {
    pub fd: OwnedFd,
    pub addr: std::net::SocketAddr,
    pub transport: Transport,
    /// WebSocket decoding state: the stream may stop in the middle of a frame.
    pub ws: Option<Box<FrameDecoder>>,
    /// MQTT bytes received so far, starting with the CONNECT packet.
    pub pending: Vec<u8>,
    /// The TLS layer of a connection from a TLS listener, handshake done.
    pub tls: Option<TlsLayer>,
    /// The name its client certificate gave it (`identity_as_username`).
    pub identity: Option<Box<str>>,
}

pub struct Mailboxes {
    shard_count: usize,
    /// `messages[from * shard_count + to]`; `None` where `from == to`.
    messages: Vec<Option<ArrayQueue<ShardMessage>>>,
    handoffs: Vec<ArrayQueue<Handoff>>,
    wake_fds: Vec<OwnedFd>,
}

impl Mailboxes {
    pub fn new(shard_count: usize, queue_len_max: usize) -> std::io::Result<Mailboxes> {
        let mut wake_fds = Vec::with_capacity(shard_count);
        for _ in 0..shard_count {
            wake_fds.push(sys::eventfd()?);
        }
        let pairs = (0..shard_count).flat_map(|from| (0..shard_count).map(move |to| (from, to)));
        Ok(Mailboxes {
            shard_count,
            messages: pairs
                .map(|(from, to)| (from != to).then(|| ArrayQueue::new(queue_len_max)))
                .collect(),
            handoffs: (0..shard_count)
                .map(|_| ArrayQueue::new(HANDOFFS_QUEUED_MAX))
                .collect(),
            wake_fds,
        })
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    fn queue(&self, from: usize, to: usize) -> Option<&ArrayQueue<ShardMessage>> {
        self.messages.get(from * self.shard_count + to)?.as_ref()
    }

    /// Queues a message; gives it back when the queue is full (or names no other shard).
    pub fn post(&self, from: usize, to: usize, message: ShardMessage) -> Result<(), ShardMessage> {
        match self.queue(from, to) {
            Some(queue) => queue.push(message),
            None => Err(message),
        }
    }

    pub fn take(&self, from: usize, to: usize) -> Option<ShardMessage> {
        self.queue(from, to)?.pop()
    }

    pub fn hand_off(&self, to: usize, handoff: Handoff) -> Result<(), Handoff> {
        self.handoffs[to].push(handoff)
    }

    pub fn take_handoff(&self, to: usize) -> Option<Handoff> {
        self.handoffs[to].pop()
    }

    pub fn wake_fd(&self, shard: usize) -> RawFd {
        self.wake_fds[shard].as_raw_fd()
    }

    /// Wakes `shard`'s event loop. An eventfd counter only saturates, so a write can fail
    /// only when the counter is already non-zero, i.e. the shard is already due to wake.
    pub fn wake(&self, shard: usize) {
        let one: u64 = 1;
        let fd = self.wake_fds[shard].as_raw_fd();
        // Plain write(2): also async-signal-safe, so the signal thread may call it too.
        let _ = sys::write(fd, &one.to_ne_bytes());
    }
}

/// What one shard sends the others: messages waiting for room in a full queue, which shards
/// to wake at the end of the turn, and the back-pressure on the connections feeding it.
pub struct CrossShard {
    shard: usize,
    /// Per target shard, in posting order.
    backlog: Vec<VecDeque<ShardMessage>>,
    backlog_bytes: usize,
    backlog_bytes_max: usize,
    wake: Vec<bool>,
    /// Connections whose bytes this turn sent publishes to other shards.
    feeders: Vec<ConnId>,
    /// Connections not read until the backlog drains.
    paused: HashSet<ConnId>,
    pauses: u64,
}

impl CrossShard {
    pub fn new(shard: usize, shard_count: usize, backlog_bytes_max: u64) -> CrossShard {
        CrossShard {
            shard,
            backlog: (0..shard_count).map(|_| VecDeque::new()).collect(),
            backlog_bytes: 0,
            backlog_bytes_max: usize::try_from(backlog_bytes_max).unwrap_or(usize::MAX),
            wake: vec![false; shard_count],
            feeders: Vec::new(),
            paused: HashSet::new(),
            pauses: 0,
        }
    }

    /// Appends `message` for shard `target`, behind what already waits for it.
    pub fn push(&mut self, target: usize, message: ShardMessage) {
        self.backlog_bytes += message.bytes();
        self.backlog[target].push_back(message);
    }

    /// Posts what waits, in order per target, until a target's queue is full; returns whether
    /// anything is left for a later turn.
    pub fn post(&mut self, mailboxes: &Mailboxes) -> bool {
        let mut left = false;
        for (target, backlog) in self.backlog.iter_mut().enumerate() {
            while let Some(message) = backlog.pop_front() {
                let bytes = message.bytes();
                match mailboxes.post(self.shard, target, message) {
                    Ok(()) => {
                        self.backlog_bytes -= bytes;
                        self.wake[target] = true;
                    }
                    Err(message) => {
                        // Full: keep it first in line and try again next turn.
                        backlog.push_front(message);
                        self.wake[target] = true;
                        left = true;
                        break;
                    }
                }
            }
            if backlog.is_empty() && backlog.capacity() > 64 {
                *backlog = VecDeque::new();
            }
        }
        left
    }

    /// Wakes every shard posted to since the last call, once each.
    pub fn wake(&mut self, mailboxes: &Mailboxes) {
        for (target, wake) in self.wake.iter_mut().enumerate() {
            if std::mem::take(wake) {
                mailboxes.wake(target);
            }
        }
    }

    /// Connection `id` just sent publishes to other shards.
    pub fn fed_by(&mut self, id: ConnId) {
        self.feeders.push(id);
    }

    /// The connections to stop reading: this turn's feeders, if the backlog is over its bound.
    pub fn to_pause(&mut self) -> Vec<ConnId> {
        let feeders = std::mem::take(&mut self.feeders);
        if self.backlog_bytes <= self.backlog_bytes_max {
            return Vec::new();
        }
        let new: Vec<ConnId> = feeders
            .into_iter()
            .filter(|&id| self.paused.insert(id))
            .collect();
        self.pauses += new.len() as u64;
        new
    }

    /// The connections to read again, once the backlog is under half its bound.
    pub fn resume(&mut self) -> Vec<ConnId> {
        if self.paused.is_empty() || self.backlog_bytes > self.backlog_bytes_max / 2 {
            return Vec::new();
        }
        let resumed: Vec<ConnId> = self.paused.drain().collect();
        self.paused.shrink_to_fit();
        resumed
    }

    pub fn is_paused(&self, id: ConnId) -> bool {
        self.paused.contains(&id)
    }

    pub fn backlog_bytes(&self) -> usize {
        self.backlog_bytes
    }

    /// Connections paused since start.
    pub fn pauses(&self) -> u64 {
        self.pauses
    }
}

impl Shard {
    pub(super) fn take_handoffs(&mut self, now: Instant) {
        while let Some(handoff) = self.mailboxes.take_handoff(self.id) {
            self.adopt(handoff, now);
        }
    }

    /// Takes over a connection another shard accepted, and reads its CONNECT here.
    fn adopt(&mut self, handoff: Handoff, now: Instant) {
        let mut peer = Peer::new(
            handoff.addr,
            handoff.transport,
            std::rc::Rc::clone(&self.wire_limits),
        );
        peer.phase = Phase::AwaitConnect;
        peer.ws = handoff.ws;
        peer.pending = handoff.pending;
        if let Some(identity) = handoff.identity {
            peer.rare_mut().identity = Some(identity);
        }
        let id = self.io.add(handoff.fd, peer, handoff.tls);
        let mut cx = ingest_context!(self, id, now);
        let Some(peer) = self.io.state_mut(id) else {
            return;
        };
        let flow = ingest_pending(&mut cx, peer);
        if peer.phase == Phase::AwaitConnect {
            let timeout = Duration::from_millis(self.config.limits.connect_timeout_ms.into());
            self.deadlines
                .push(super::deadlines::Deadline::Connect, id, now, timeout);
        }
        self.after_flow(id, flow);
        self.io.arm_recv(id);
    }

    /// Reads again the CONNECTs whose password a verifier has judged.
    pub(super) fn take_verdicts(&mut self, now: Instant) {
        while let Some((waiting, identity)) = self.auth.take_verdict(now) {
            for id in waiting {
                self.take_verdict_for(id, identity.clone(), now);
            }
        }
    }

    /// Reads again the CONNECT of `id`, with the verdict on its password.
    fn take_verdict_for(&mut self, id: ConnId, identity: Option<Identity>, now: Instant) {
        let Some(peer) = self.io.state_mut(id) else {
            // Gone meanwhile (closed, or its CONNECT deadline passed).
            return;
        };
        if peer.phase != Phase::Verifying {
            return;
        }
        peer.phase = Phase::AwaitConnect;
        peer.rare_mut().verified = Some(match identity {
            Some(identity) => Verified::Accepted(identity),
            None => Verified::Refused,
        });
        self.read_parked_connect(id, now);
    }

    pub(super) fn take_remote_messages(&mut self, now: Instant) {
        let (shard_count, id) = (self.mailboxes.shard_count(), self.id);
        for from in (0..shard_count).filter(|&from| from != id) {
            for taken in 0..REMOTE_MESSAGES_PER_TURN_MAX {
                let Some(message) = self.mailboxes.take(from, self.id) else {
                    break;
                };
                match message {
                    // Stopping, publishes are no longer applied: their barriers must not be
                    // answered either.
                    _ if self.stop_deadline.is_some() => {}
                    ShardMessage::Barrier(seq) => self.answer_barrier(from, seq),
                    message => self.broker.shard_message(message, now, &mut self.outbox),
                }
                if taken + 1 == REMOTE_MESSAGES_PER_TURN_MAX {
                    self.busy = true;
                }
            }
        }
    }

    pub(super) fn post_to_other_shards(&mut self) {
        let shard_count = self.mailboxes.shard_count();
        // Shared subscription messages first: a member joins before its publishes arrive.
        for (target, message) in self.outbox.to_shard.drain(..) {
            self.cross_shard.push(target, message);
        }
        for message in self.outbox.to_other_shards.drain(..) {
            for target in (0..shard_count).filter(|&target| target != self.id) {
                self.cross_shard
                    .push(target, ShardMessage::Publish(message.clone()));
            }
        }
        // Behind every publish of the acknowledgements it seals (`persist.rs`).
        if let Some(seq) = self.take_barrier() {
            for target in (0..shard_count).filter(|&target| target != self.id) {
                self.cross_shard.push(target, ShardMessage::Barrier(seq));
            }
        }
        // Behind the turn's shared subscription messages, which went first (`persist.rs`).
        for seq in self.take_covers() {
            for target in (0..shard_count).filter(|&target| target != self.id) {
                self.cross_shard.push(target, ShardMessage::Barrier(seq));
            }
        }
        // Tentative publishes committed on disk (`persist.rs`): what waits for them is sent.
        if self.take_committed_notice() {
            for target in (0..shard_count).filter(|&target| target != self.id) {
                self.cross_shard.push(target, ShardMessage::Committed);
            }
        }
        if self.cross_shard.post(&self.mailboxes) {
            self.busy = true;
        }
    }

    pub(super) fn wake_other_shards(&mut self) {
        self.cross_shard.wake(&self.mailboxes);
    }

    /// Moves a connection whose receive and sends have ended to the shard that owns its
    /// session; true once it is gone from here.
    pub(super) fn hand_off(&mut self, id: ConnId, target: usize) -> bool {
        if self.io.busy(id) || self.io.sending(id) {
            return false;
        }
        let Some(released) = self.io.release(id) else {
            return true;
        };
        let peer = released.state;
        let addr = peer.addr;
        let handoff = Handoff {
            fd: released.fd,
            addr,
            transport: peer.transport,
            ws: peer.ws,
            pending: peer.pending,
            tls: released.tls,
            identity: peer.rare.and_then(|rare| rare.identity),
        };
        match self.mailboxes.hand_off(target, handoff) {
            Ok(()) => self.cross_shard.wake[target] = true,
            Err(_) => info!("{addr}: closing: {}", CloseCause::HandoffFailed),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::RoutedMessage;
    use crate::protocol::mqtt::QoS;
    use std::sync::Arc;

    fn publish(payload_bytes: usize) -> ShardMessage {
        let message = RoutedMessage::new("t", &vec![0; payload_bytes], QoS::AtMostOnce, false);
        ShardMessage::Publish(Arc::new(message))
    }

    fn payload(message: &ShardMessage) -> usize {
        match message {
            ShardMessage::Publish(message) => message.payload.len(),
            ShardMessage::Group(_) | ShardMessage::Barrier(_) | ShardMessage::Committed => {
                usize::MAX
            }
        }
    }

    #[test]
    fn a_shard_has_no_queue_to_itself() {
        let mailboxes = Mailboxes::new(2, 4).expect("eventfds");
        assert!(mailboxes.post(0, 0, publish(1)).is_err());
        assert!(mailboxes.post(0, 1, publish(1)).is_ok());
        assert_eq!(mailboxes.take(0, 1).as_ref().map(payload), Some(1));
    }

    #[test]
    fn a_full_queue_keeps_order_in_the_backlog_and_posts_it_later() {
        let mailboxes = Mailboxes::new(2, 2).expect("eventfds");
        let mut cross = CrossShard::new(0, 2, 1 << 20);
        for n in 1..=5 {
            cross.push(1, publish(n));
        }
        assert!(cross.post(&mailboxes), "three wait for room");
        assert!(cross.backlog_bytes() > 0);
        let mut seen = Vec::new();
        while cross.backlog_bytes() > 0 {
            while let Some(message) = mailboxes.take(0, 1) {
                seen.push(payload(&message));
            }
            cross.post(&mailboxes);
        }
        while let Some(message) = mailboxes.take(0, 1) {
            seen.push(payload(&message));
        }
        assert_eq!(seen, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn feeders_pause_past_the_bound_and_resume_under_half_of_it() {
        let mailboxes = Mailboxes::new(2, 1).expect("eventfds");
        let bound = 3 * publish(1000).bytes() as u64;
        let mut cross = CrossShard::new(0, 2, bound);
        let (a, b) = (ConnId::new(1, 1), ConnId::new(2, 1));
        for _ in 0..6 {
            cross.push(1, publish(1000));
        }
        cross.post(&mailboxes);
        cross.fed_by(a);
        cross.fed_by(b);
        assert_eq!(cross.to_pause(), [a, b]);
        assert!(cross.is_paused(a) && cross.is_paused(b));
        assert!(cross.resume().is_empty(), "still over half the bound");
        // The other shard catches up.
        while cross.backlog_bytes() > 0 {
            mailboxes.take(0, 1);
            cross.post(&mailboxes);
        }
        let mut resumed = cross.resume();
        resumed.sort();
        assert_eq!(resumed, [a, b]);
        assert!(!cross.is_paused(a));
        assert_eq!(cross.pauses(), 2);
        cross.fed_by(a);
        assert!(cross.to_pause().is_empty(), "under the bound: nobody waits");
    }
}
