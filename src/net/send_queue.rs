//! A connection's outgoing bytes: chunks waiting to be sent, and the one send in flight.
//!
//! Everything queued while a send is in flight leaves in the next single send (one `sendmsg`
//! gathering up to [`IOVECS_PER_SEND_MAX`] iovecs), so the kernel send cost is paid per batch,
//! not per message. A send of one contiguous run of bytes — the common case of a fan-out at
//! one message per subscriber per turn — is a plain `send` instead (`PreparedSend`).
//!
//! The queue is bounded in bytes (`queue_bytes_max`). Past the bound a QoS 0 publish meets the
//! slow consumer policy ([`SlowConsumer`]); a chunk that may not be dropped closes the
//! connection past twice the bound. Chunks the kernel is reading (the send in flight) and a
//! partly sent front chunk are never dropped: half a frame would corrupt the stream.
//!
//! Anyone may queue; only `net/` starts and completes sends, so the memory a send points at
//! is freed only once the kernel is done with it.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;

#[cfg(doc)]
use super::send_buf::IOVECS_PER_SEND_MAX;
use super::send_buf::{InFlight, PreparedSend, SendPool};
use crate::conn::{Chunk, Droppable, SlowConsumer, TopicKey};

/// Chunks handed to TLS for one send: with small publishes, 64 of them are about one record.
const CHUNKS_PER_SEAL_MAX: usize = 64;

/// Capacity an empty queue keeps (entries of 40 B): enough for a connection that gets one
/// message per turn never to allocate, small enough for an idle connection to stay cheap.
const IDLE_QUEUE_CAPACITY_MAX: usize = 4;

/// Capacity a new queue starts with: the first chunk a connection is sent (the handshake
/// response, or CONNACK) takes no allocation of its own, and a connection that never has two
/// chunks waiting at once (an idle subscriber) keeps one 40-B entry rather than the four a
/// first `push_back` would allocate. The first time two wait, the ring grows to four and keeps
/// them.
const NEW_QUEUE_CAPACITY: usize = 1;

/// A queued chunk; `topic` is set for a QoS 0 publish, which the policy may drop.
struct Entry {
    chunk: Chunk,
    topic: Option<TopicKey>,
}

/// What became of a pushed chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// The chunk is queued.
    pub queued: bool,
    /// Older QoS 0 publishes dropped to make room (`drop-oldest`, or `conflate` past the
    /// publishes of the same topic).
    pub dropped_oldest: u32,
    /// Unsent QoS 0 publishes of the same topic this one replaced (`conflate`).
    pub conflated: u32,
    /// The connection must close: policy `disconnect`, or a chunk that may not be dropped met
    /// a queue at twice its bound.
    pub overflow: bool,
}

impl Pushed {
    const QUEUED: Pushed = Pushed {
        queued: true,
        dropped_oldest: 0,
        conflated: 0,
        overflow: false,
    };
    const OVERFLOW: Pushed = Pushed {
        queued: false,
        dropped_oldest: 0,
        conflated: 0,
        overflow: true,
    };

    /// The new QoS 0 publish itself was dropped (`drop-newest`, or no room could be made).
    pub fn dropped_newest(&self) -> bool {
        !self.queued && !self.overflow
    }
}

pub struct SendQueue {
    entries: VecDeque<Entry>,
    /// Bytes of the front chunk already sent by an earlier partial send.
    /// (A chunk is one MQTT packet, at most 256 MiB, and its frame header: it fits a u32.)
    front_sent_bytes: u32,
    queued_bytes: u64,
    /// Chunks, from the front, that the send in flight covers.
    in_flight_chunks: u32,
    in_flight: Option<InFlight>,
}

impl Default for SendQueue {
    fn default() -> Self {
        SendQueue::new()
    }
}

impl SendQueue {
    pub fn new() -> SendQueue {
        SendQueue {
            entries: VecDeque::with_capacity(NEW_QUEUE_CAPACITY),
            front_sent_bytes: 0,
            queued_bytes: 0,
            in_flight_chunks: 0,
            in_flight: None,
        }
    }

    /// Queues `chunk`, applying `listener_policy` (or the chunk's own) to a QoS 0 publish
    /// that meets a full queue. A chunk alone in an empty queue is always taken, whatever its
    /// size, so a publish larger than the bound still reaches a reader that keeps up.
    pub fn push(
        &mut self,
        chunk: Chunk,
        droppable: Droppable,
        queue_bytes_max: u64,
        listener_policy: SlowConsumer,
        pool: &mut SendPool,
    ) -> Pushed {
        let len = chunk.len() as u64;
        let fits = |queued_bytes: u64, bound: u64| queued_bytes + len <= bound;
        let (topic, on_full) = match droppable {
            Droppable::No => {
                let bound = queue_bytes_max.saturating_mul(2);
                if !self.entries.is_empty() && !fits(self.queued_bytes, bound) {
                    return Pushed::OVERFLOW;
                }
                self.append(chunk, None);
                return Pushed::QUEUED;
            }
            Droppable::Yes { topic, on_full } => (topic, on_full.unwrap_or(listener_policy)),
        };
        if self.entries.is_empty() || fits(self.queued_bytes, queue_bytes_max) {
            self.append(chunk, Some(topic));
            return Pushed::QUEUED;
        }
        let mut pushed = Pushed::default();
        match on_full {
            SlowConsumer::DropNewest => return pushed,
            SlowConsumer::Disconnect => return Pushed::OVERFLOW,
            SlowConsumer::Conflate => {
                pushed.conflated = self.conflate(topic, &mut pool.topic_counts);
            }
            SlowConsumer::DropOldest => {}
        }
        while !fits(self.queued_bytes, queue_bytes_max) && self.drop_oldest() {
            pushed.dropped_oldest += 1;
        }
        if fits(self.queued_bytes, queue_bytes_max) {
            self.append(chunk, Some(topic));
            pushed.queued = true;
        }
        pushed
    }

    fn append(&mut self, chunk: Chunk, topic: Option<TopicKey>) {
        self.queued_bytes += chunk.len() as u64;
        self.entries.push_back(Entry { chunk, topic });
    }

    /// Chunks at the front that may not be dropped: those the kernel is reading, and a front
    /// chunk partly sent already.
    fn protected(&self) -> usize {
        (self.in_flight_chunks as usize).max(usize::from(self.front_sent_bytes > 0))
    }

    /// Keeps only the latest unsent QoS 0 publish of each topic, and none of `incoming`'s
    /// (the new publish supersedes it); returns how many were removed. Runs only when the
    /// queue is full, and leaves at most one publish per topic, so its O(queue) cost is paid
    /// once per refill rather than per publish.
    fn conflate(&mut self, incoming: TopicKey, counts: &mut HashMap<TopicKey, u32>) -> u32 {
        let protected = self.protected();
        counts.clear();
        *counts.entry(incoming).or_default() += 1;
        for entry in self.entries.iter().skip(protected) {
            if let Some(topic) = entry.topic {
                *counts.entry(topic).or_default() += 1;
            }
        }
        let (mut index, mut removed, mut removed_bytes) = (0, 0, 0);
        self.entries.retain(|entry| {
            let unsent = index >= protected;
            index += 1;
            let Some(topic) = entry.topic.filter(|_| unsent) else {
                return true;
            };
            let later = counts.get_mut(&topic).expect("counted above");
            *later -= 1;
            if *later == 0 {
                return true;
            }
            removed += 1;
            removed_bytes += entry.chunk.len() as u64;
            false
        });
        self.queued_bytes -= removed_bytes;
        removed
    }

    /// Removes the oldest unsent QoS 0 publish; false when there is none.
    fn drop_oldest(&mut self) -> bool {
        let protected = self.protected();
        let Some(offset) = self
            .entries
            .iter()
            .skip(protected)
            .position(|entry| entry.topic.is_some())
        else {
            return false;
        };
        let entry = self
            .entries
            .remove(protected + offset)
            .expect("the position is inside the queue");
        self.queued_bytes -= entry.chunk.len() as u64;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// Builds the next send from the front of the queue; `None` when a send is already in
    /// flight or nothing is queued. What it points at stays put until the send completes: the
    /// chunks it covers are not dropped ([`SendQueue::protected`]) and its buffer is kept here.
    pub(super) fn start_send(&mut self, pool: &mut SendPool) -> Option<PreparedSend> {
        if self.in_flight.is_some() {
            return None;
        }
        let skip = self.front_sent_bytes as usize;
        let front = &self.entries.front()?.chunk;
        if self.entries.len() == 1
            && let Some((buf, send)) = InFlight::contiguous(front, skip)
        {
            self.in_flight_chunks = 1;
            self.in_flight = Some(buf);
            return Some(send);
        }
        let chunks = self.entries.iter().map(|entry| &entry.chunk);
        let (buf, covered, send) = InFlight::gathered(chunks, skip, pool);
        // At most IOVECS_PER_SEND_MAX chunks.
        self.in_flight_chunks = covered as u32;
        self.in_flight = Some(buf);
        Some(send)
    }

    /// The ring refused the send just started: nothing was handed to the kernel, so the queue
    /// is as it was before [`SendQueue::start_send`].
    pub(super) fn cancel_start(&mut self, pool: &mut SendPool) {
        if let Some(buf) = self.in_flight.take() {
            pool.give(buf);
        }
        self.in_flight_chunks = 0;
    }

    /// Starts a send and completes it at once in full, as if a reader that keeps up took every
    /// byte; returns how many bytes it carried. For the in-process fan-out rig (`tests/rig`),
    /// which measures the broker's work per delivery without sockets: nothing reaches a kernel.
    #[doc(hidden)]
    pub fn send_at_once(&mut self, pool: &mut SendPool) -> Option<usize> {
        let sent = self.start_send(pool)?.len();
        self.complete_send(sent, pool);
        Some(sent)
    }

    /// Hands the front of the queue, from its first unsent byte and up to `bytes_max` bytes
    /// (whole chunks, at least one), to `seal` as slices, and drops what `seal` says it took:
    /// how a TLS connection's plaintext reaches rustls, which copies it into records. Only for
    /// a queue whose sends are the TLS layer's, never its own.
    pub(super) fn seal_front(
        &mut self,
        bytes_max: usize,
        pool: &mut SendPool,
        seal: impl FnOnce(&[IoSlice<'_>]) -> usize,
    ) -> usize {
        debug_assert!(
            self.in_flight.is_none(),
            "a TLS queue starts no send of its own"
        );
        let count = self.entries.len().min(CHUNKS_PER_SEAL_MAX);
        let mut ids = [[0u8; 2]; CHUNKS_PER_SEAL_MAX];
        for (id, entry) in ids.iter_mut().zip(self.entries.iter()) {
            *id = entry.chunk.id_bytes();
        }
        let mut slices = [IoSlice::new(&[]); 3 * CHUNKS_PER_SEAL_MAX];
        let (mut used, mut bytes) = (0, 0);
        let mut skip = self.front_sent_bytes as usize;
        for (entry, id) in self.entries.iter().zip(&ids).take(count) {
            if bytes > 0 && bytes + entry.chunk.len() > bytes_max {
                break;
            }
            for part in entry.chunk.parts_around(id) {
                let start = skip.min(part.len());
                skip -= start;
                if start < part.len() {
                    slices[used] = IoSlice::new(&part[start..]);
                    used += 1;
                    bytes += part.len() - start;
                }
            }
        }
        let taken = seal(&slices[..used]);
        self.complete_send(taken, pool);
        taken
    }

    /// The kernel sent `sent_bytes` of the send in flight; drop what is fully sent.
    pub(super) fn complete_send(&mut self, mut sent_bytes: usize, pool: &mut SendPool) {
        if let Some(buf) = self.in_flight.take() {
            pool.give(buf);
        }
        self.in_flight_chunks = 0;
        self.queued_bytes = self.queued_bytes.saturating_sub(sent_bytes as u64);
        while let Some(front) = self.entries.front() {
            let left = front.chunk.len() - self.front_sent_bytes as usize;
            if sent_bytes < left {
                // Below the chunk's length, which fits a u32.
                self.front_sent_bytes += sent_bytes as u32;
                return;
            }
            sent_bytes -= left;
            self.front_sent_bytes = 0;
            self.entries.pop_front();
        }
        if self.entries.capacity() > IDLE_QUEUE_CAPACITY_MAX {
            self.entries.shrink_to(IDLE_QUEUE_CAPACITY_MAX);
        }
    }

    /// The send in flight failed; the connection is going away, so nothing more is sent.
    pub(super) fn fail_send(&mut self, pool: &mut SendPool) {
        if let Some(buf) = self.in_flight.take() {
            pool.give(buf);
        }
        self.in_flight_chunks = 0;
        self.entries = VecDeque::new();
        self.front_sent_bytes = 0;
        self.queued_bytes = 0;
    }

    /// The connection is going away: drops every chunk the kernel is not reading. A send in
    /// flight keeps its chunks until it completes (`SendQueue::complete_send` or
    /// `SendQueue::fail_send`).
    pub fn abandon(&mut self) {
        self.entries.truncate(self.in_flight_chunks as usize);
        if self.entries.is_empty() {
            self.front_sent_bytes = 0;
            self.queued_bytes = 0;
            return;
        }
        let bytes: u64 = self
            .entries
            .iter()
            .map(|entry| entry.chunk.len() as u64)
            .sum();
        self.queued_bytes = bytes - self.front_sent_bytes as u64;
    }
}

impl Drop for SendQueue {
    /// A queue dropped while the kernel still reads its send in flight (its connection's table
    /// went with the shard) leaks that send's chunks and buffer rather than free memory the
    /// kernel may read. Connections are otherwise removed only once no send is in flight.
    fn drop(&mut self) {
        if let Some(buf) = self.in_flight.take() {
            let reading: Vec<Entry> = self
                .entries
                .drain(..self.in_flight_chunks as usize)
                .collect();
            std::mem::forget(reading);
            std::mem::forget(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::send_buf::PreparedSend;
    use crate::protocol::mqtt::PacketId;
    use std::rc::Rc;

    const POLICY: SlowConsumer = SlowConsumer::DropNewest;

    fn owned(bytes: &[u8]) -> Chunk {
        Chunk::Owned(bytes.to_vec())
    }

    fn qos0(topic: &str, policy: SlowConsumer) -> Droppable {
        Droppable::Yes {
            topic: TopicKey::of(topic),
            on_full: Some(policy),
        }
    }

    /// Queues `bytes` as a shared QoS 0 publish of topic `t`.
    fn push_shared(queue: &mut SendQueue, pool: &mut SendPool, bytes: &[u8]) {
        let shared: Rc<[u8]> = Rc::from(bytes);
        queue.push(Chunk::Shared(shared), qos0("t", POLICY), 100, POLICY, pool);
    }

    /// The bytes a send would write.
    fn gathered(outgoing: PreparedSend) -> Vec<u8> {
        outgoing.to_vec()
    }

    /// Sends everything, `step` bytes at most per send; returns the bytes in send order.
    fn drain(queue: &mut SendQueue, pool: &mut SendPool, step: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        while let Some(msg) = queue.start_send(pool) {
            let bytes = gathered(msg);
            let sent = bytes.len().min(step);
            wire.extend_from_slice(&bytes[..sent]);
            queue.complete_send(sent, pool);
        }
        wire
    }

    #[test]
    fn one_send_gathers_everything_queued() {
        let mut queue = SendQueue::new();
        let mut pool = SendPool::default();
        queue.push(owned(b"ack"), Droppable::No, 100, POLICY, &mut pool);
        push_shared(&mut queue, &mut pool, b"publish");
        let msg = queue.start_send(&mut pool).expect("something to send");
        assert_eq!(gathered(msg), b"ackpublish");
        assert!(
            queue.start_send(&mut pool).is_none(),
            "one send in flight at a time"
        );
        queue.complete_send(10, &mut pool);
        assert!(queue.is_empty());
        assert_eq!(queue.queued_bytes(), 0);
        assert_eq!(pool.free_len(), 1, "the buffer went back to the pool");
    }

    #[test]
    fn shared_with_id_sends_the_identifier_between_the_template_halves() {
        let mut queue = SendQueue::new();
        let mut pool = SendPool::default();
        let template: Rc<[u8]> = Rc::from(&b"head..tail"[..]);
        for id in [0x4142, 0x4344] {
            let chunk = Chunk::SharedWithId {
                template: Rc::clone(&template),
                id_offset: 4,
                id: PacketId::new(id).expect("non-zero"),
            };
            queue.push(chunk, Droppable::No, 100, POLICY, &mut pool);
        }
        assert_eq!(queue.queued_bytes(), 20);
        // Partial sends that stop inside the identifier resume at the right byte.
        assert_eq!(drain(&mut queue, &mut pool, 5), b"headABtailheadCDtail");
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[test]
    fn the_ring_grows_only_once_two_chunks_wait() {
        let mut queue = SendQueue::new();
        let mut pool = SendPool::default();
        for _ in 0..3 {
            queue.push(owned(b"ack"), Droppable::No, 100, POLICY, &mut pool);
            drain(&mut queue, &mut pool, usize::MAX);
        }
        assert_eq!(queue.entries.capacity(), NEW_QUEUE_CAPACITY);
        queue.push(owned(b"one"), Droppable::No, 100, POLICY, &mut pool);
        queue.push(owned(b"two"), Droppable::No, 100, POLICY, &mut pool);
        drain(&mut queue, &mut pool, usize::MAX);
        assert_eq!(queue.entries.capacity(), IDLE_QUEUE_CAPACITY_MAX);
    }

    #[test]
    fn a_large_batch_spans_several_sends_in_order() {
        let mut queue = SendQueue::new();
        let mut pool = SendPool::default();
        let mut expected = Vec::new();
        for i in 0..200u8 {
            queue.push(owned(&[i]), Droppable::No, 1000, POLICY, &mut pool);
            expected.push(i);
        }
        assert_eq!(drain(&mut queue, &mut pool, usize::MAX), expected);
    }

    #[test]
    fn partial_send_resumes_inside_a_chunk() {
        let mut queue = SendQueue::new();
        let mut pool = SendPool::default();
        queue.push(owned(b"abcdef"), Droppable::No, 100, POLICY, &mut pool);
        queue.push(owned(b"gh"), Droppable::No, 100, POLICY, &mut pool);
        queue.start_send(&mut pool);
        queue.complete_send(4, &mut pool);
        assert_eq!(queue.queued_bytes(), 4);
        let msg = queue.start_send(&mut pool).expect("the rest");
        assert_eq!(gathered(msg), b"efgh");
        queue.complete_send(4, &mut pool);
        assert!(queue.is_empty());
    }

    #[test]
    fn drop_newest_stops_at_the_bound_and_required_chunks_overflow_at_twice_it() {
        let mut queue = SendQueue::new();
        let mut pool = SendPool::default();
        let drop_newest = qos0("t", SlowConsumer::DropNewest);
        assert!(
            queue
                .push(owned(&[0; 8]), drop_newest, 10, POLICY, &mut pool)
                .queued
        );
        let pushed = queue.push(owned(&[0; 8]), drop_newest, 10, POLICY, &mut pool);
        assert!(pushed.dropped_newest());
        assert!(
            queue
                .push(owned(&[0; 8]), Droppable::No, 10, POLICY, &mut pool)
                .queued
        );
        assert!(
            queue
                .push(owned(&[0; 8]), Droppable::No, 10, POLICY, &mut pool)
                .overflow
        );
    }

    #[test]
    fn a_chunk_larger_than_the_bound_enters_an_empty_queue() {
        let mut queue = SendQueue::new();
        let mut pool = SendPool::default();
        let policy = qos0("t", SlowConsumer::DropNewest);
        assert!(
            queue
                .push(owned(&[0; 50]), policy, 10, POLICY, &mut pool)
                .queued
        );
        assert!(
            queue
                .push(owned(&[0; 1]), policy, 10, POLICY, &mut pool)
                .dropped_newest()
        );
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_never_what_is_in_flight() {
        let mut queue = SendQueue::new();
        let mut pool = SendPool::default();
        let policy = qos0("t", SlowConsumer::DropOldest);
        queue.push(owned(b"1"), policy, 3, POLICY, &mut pool);
        queue.start_send(&mut pool).expect("1 in flight");
        queue.push(owned(b"A"), Droppable::No, 3, POLICY, &mut pool);
        queue.push(owned(b"2"), policy, 3, POLICY, &mut pool);
        let pushed = queue.push(owned(b"3"), policy, 3, POLICY, &mut pool);
        assert!(pushed.queued);
        assert_eq!(
            pushed.dropped_oldest, 1,
            "2 made room; 1 is in flight, A is required"
        );
        queue.complete_send(1, &mut pool);
        assert_eq!(drain(&mut queue, &mut pool, usize::MAX), b"A3");
    }

    #[test]
    fn disconnect_policy_overflows() {
        let mut queue = SendQueue::new();
        let mut pool = SendPool::default();
        let policy = qos0("t", SlowConsumer::Disconnect);
        queue.push(owned(b"12"), policy, 3, POLICY, &mut pool);
        assert!(
            queue
                .push(owned(b"34"), policy, 3, POLICY, &mut pool)
                .overflow
        );
    }

    #[test]
    fn conflate_keeps_the_latest_unsent_publish_per_topic() {
        let mut queue = SendQueue::new();
        let mut pool = SendPool::default();
        let (a, b) = (
            qos0("a", SlowConsumer::Conflate),
            qos0("b", SlowConsumer::Conflate),
        );
        queue.push(owned(b"a1"), a, 6, POLICY, &mut pool);
        queue.start_send(&mut pool).expect("a1 in flight");
        queue.push(owned(b"b1"), b, 6, POLICY, &mut pool);
        queue.push(owned(b"a2"), a, 6, POLICY, &mut pool);
        let pushed = queue.push(owned(b"a3"), a, 6, POLICY, &mut pool);
        assert_eq!((pushed.queued, pushed.conflated), (true, 1), "a2 replaced");
        let pushed = queue.push(owned(b"b2"), b, 6, POLICY, &mut pool);
        assert_eq!((pushed.queued, pushed.conflated), (true, 1), "b1 replaced");
        queue.complete_send(2, &mut pool);
        assert_eq!(drain(&mut queue, &mut pool, usize::MAX), b"a3b2");
    }

    #[test]
    fn conflate_removes_every_superseded_publish_once_full() {
        let mut queue = SendQueue::new();
        let mut pool = SendPool::default();
        let (x, y) = (
            qos0("x", SlowConsumer::Conflate),
            qos0("y", SlowConsumer::Conflate),
        );
        queue.push(owned(b"x1"), x, 6, POLICY, &mut pool);
        queue.push(owned(b"y1"), y, 6, POLICY, &mut pool);
        queue.push(owned(b"x2"), x, 6, POLICY, &mut pool);
        let pushed = queue.push(owned(b"y2"), y, 6, POLICY, &mut pool);
        assert_eq!((pushed.queued, pushed.conflated), (true, 2));
        assert_eq!(queue.queued_bytes(), 4);
        assert_eq!(drain(&mut queue, &mut pool, usize::MAX), b"x2y2");
    }

    #[test]
    fn the_chunk_policy_overrides_the_listener_policy() {
        let mut queue = SendQueue::new();
        let mut pool = SendPool::default();
        let listener = Droppable::Yes {
            topic: TopicKey::of("t"),
            on_full: None,
        };
        queue.push(
            owned(b"12"),
            listener,
            3,
            SlowConsumer::DropOldest,
            &mut pool,
        );
        let pushed = queue.push(
            owned(b"34"),
            listener,
            3,
            SlowConsumer::DropOldest,
            &mut pool,
        );
        assert_eq!((pushed.queued, pushed.dropped_oldest), (true, 1));
        let own = qos0("t", SlowConsumer::DropNewest);
        assert!(
            queue
                .push(owned(b"56"), own, 3, SlowConsumer::DropOldest, &mut pool)
                .dropped_newest()
        );
    }

    #[test]
    fn abandon_keeps_only_what_the_kernel_reads() {
        let mut queue = SendQueue::new();
        let mut pool = SendPool::default();
        queue.push(owned(b"abc"), Droppable::No, 100, POLICY, &mut pool);
        queue.start_send(&mut pool);
        queue.push(owned(b"de"), Droppable::No, 100, POLICY, &mut pool);
        queue.abandon();
        assert!(queue.in_flight());
        assert_eq!(queue.queued_bytes(), 3);
        queue.complete_send(3, &mut pool);
        assert!(queue.is_empty());
        assert!(queue.start_send(&mut pool).is_none());
    }

    #[test]
    fn a_lone_chunk_in_one_piece_is_a_contiguous_send_without_a_pool_buffer() {
        let mut queue = SendQueue::default();
        let mut pool = SendPool::default();
        push_shared(&mut queue, &mut pool, b"publish");
        let outgoing = queue.start_send(&mut pool).expect("something to send");
        assert!(matches!(outgoing, PreparedSend::Contiguous(..)));
        assert_eq!(gathered(outgoing), b"publish");
        // A partial send resumes inside the chunk, still contiguous.
        queue.complete_send(3, &mut pool);
        let rest = queue.start_send(&mut pool).expect("the rest");
        assert!(matches!(rest, PreparedSend::Contiguous(..)));
        assert_eq!(gathered(rest), b"lish");
        queue.complete_send(4, &mut pool);
        assert!(queue.is_empty());
        assert_eq!(pool.free_len(), 0, "no pool buffer was needed");
        pool.trim();
        assert_eq!(pool.free_len(), 0);
    }

    #[test]
    fn the_pool_reuses_buffers_and_trims_to_the_recent_peak() {
        let mut pool = SendPool::default();
        let mut queues: Vec<SendQueue> = (0..3).map(|_| SendQueue::new()).collect();
        for queue in &mut queues {
            queue.push(owned(b"x"), Droppable::No, 100, POLICY, &mut pool);
            queue.push(owned(b"y"), Droppable::No, 100, POLICY, &mut pool);
            queue.start_send(&mut pool);
        }
        for queue in &mut queues {
            queue.complete_send(2, &mut pool);
        }
        assert_eq!(pool.free_len(), 3);
        pool.trim();
        assert_eq!(pool.free_len(), 3, "the last period needed three");
        pool.trim();
        assert_eq!(pool.free_len(), 0, "this period needed none");
    }
}
