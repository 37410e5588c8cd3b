//! A connection's outgoing bytes: chunks waiting to be sent, and the one send in flight.
//!
//! Everything queued while a send is in flight leaves in the next single send (one `sendmsg`
//! gathering up to [`IOVECS_PER_SEND_MAX`] iovecs), so the kernel send cost is paid per batch,
//! not per message. A send of one contiguous run of bytes — the common case of a fan-out at
//! one message per subscriber per turn — is a plain `send` instead ([`Outgoing`]).
//!
//! The queue is bounded in bytes (`queue_bytes_max`). Past the bound a QoS 0 publish meets the
//! slow consumer policy ([`SlowConsumer`]); a chunk that may not be dropped closes the
//! connection past twice the bound. Chunks the kernel is reading (the send in flight) and a
//! partly sent front chunk are never dropped: half a frame would corrupt the stream.
//!
//! No allocation per send once warm: the `msghdr` and iovecs of a send live in a [`SendBuf`]
//! taken from the shard's [`SendPool`] while the send is in flight and given back when it
//! completes, so an idle connection holds none.

use std::collections::{HashMap, VecDeque};

use crate::conn::SlowConsumer;
use crate::conn::{Chunk, Droppable, TopicKey};

/// Iovecs gathered into one `sendmsg`. Sixty-four 100-byte publishes are ~6 KB: past that the
/// per-byte cost dominates and a larger batch buys nothing.
pub const IOVECS_PER_SEND_MAX: usize = 64;

/// Iovecs of a small send: what a connection keeping up with a live feed has queued per turn
/// (a few QoS 0 publishes, or two QoS 1 publishes at three iovecs each). 8 iovecs make a
/// 200-byte [`SendBuf`] instead of 1.2 KB, which is what the pool holds per concurrent send.
pub const IOVECS_PER_SMALL_SEND_MAX: usize = 8;

/// Capacity an empty queue keeps (entries of 40 B): enough for a connection that gets one
/// message per turn never to allocate, small enough for an idle connection to stay cheap.
const IDLE_QUEUE_CAPACITY_MAX: usize = 4;

/// Capacity a new queue starts with: the first chunk a connection is sent (the handshake
/// response, or CONNACK) takes no allocation of its own, and a connection that never has two
/// chunks waiting at once (an idle subscriber) keeps one 40-B entry rather than the four a
/// first `push_back` would allocate. The first time two wait, the ring grows to four and keeps
/// them.
const NEW_QUEUE_CAPACITY: usize = 1;

/// The `msghdr` and iovecs of one send, boxed so their address stays put while the kernel
/// reads them, and the packet identifiers the iovecs of [`Chunk::SharedWithId`] point at.
pub struct SendBuf<const N: usize> {
    msg: libc::msghdr,
    iovecs: [libc::iovec; N],
    ids: [[u8; 2]; N],
}

impl<const N: usize> SendBuf<N> {
    fn new() -> Box<SendBuf<N>> {
        Box::new(SendBuf {
            msg: empty_msghdr(),
            iovecs: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; N],
            ids: [[0; 2]; N],
        })
    }

    /// Points the iovecs at the queued chunks, from `skip` bytes into the first; returns how
    /// many chunks the send covers (at least one: a chunk needs at most three iovecs).
    fn fill(&mut self, entries: &VecDeque<Entry>, mut skip: usize) -> usize {
        let mut iovec_count = 0;
        let mut chunk_count = 0;
        for (index, entry) in entries.iter().enumerate() {
            let parts = entry.chunk.parts(&mut self.ids[index.min(N - 1)]);
            let needed = parts.iter().filter(|part| !part.is_empty()).count();
            if iovec_count + needed > N {
                break;
            }
            let mut ranges = [(std::ptr::null::<u8>(), 0usize); 3];
            for (range, part) in ranges.iter_mut().zip(parts) {
                *range = (part.as_ptr(), part.len());
            }
            for (ptr, len) in ranges {
                let start = skip.min(len);
                skip -= start;
                if len == start {
                    continue;
                }
                self.iovecs[iovec_count] = libc::iovec {
                    // The kernel only reads through it (sendmsg).
                    iov_base: ptr.wrapping_add(start) as *mut libc::c_void,
                    iov_len: len - start,
                };
                iovec_count += 1;
            }
            chunk_count += 1;
            if chunk_count == N {
                break;
            }
        }
        assert!(chunk_count > 0, "a send covers at least one chunk");
        self.msg = empty_msghdr();
        self.msg.msg_iov = self.iovecs.as_mut_ptr();
        self.msg.msg_iovlen = iovec_count;
        chunk_count
    }
}

/// What the kernel is given for the next send.
#[derive(Debug, Clone, Copy)]
pub enum Outgoing {
    /// One contiguous run of bytes, for a plain `send`: the kernel then copies no `msghdr` or
    /// iovec array (≈ 4 % of a delivery's CPU when each send carries one message).
    Contiguous(*const u8, usize),
    /// Several runs gathered by one `sendmsg`.
    Gathered(*const libc::msghdr),
}

/// The buffer of the send in flight, in one of two sizes, or none for a contiguous send.
enum InFlight {
    Contiguous,
    Small(Box<SendBuf<IOVECS_PER_SMALL_SEND_MAX>>),
    Large(Box<SendBuf<IOVECS_PER_SEND_MAX>>),
}

/// The shard's free send buffers. It keeps what the busiest recent moment needed, so a
/// steady fan-out allocates nothing, and [`SendPool::trim`] (every tick) gives back what the
/// last period did not use. Worst case held: one buffer per connection with a send in flight
/// (20 000 × 200 B = 4 MB per shard for small sends).
// Boxed entries: a buffer's address must not change while the kernel reads it, and it moves
// between the pool and a connection's queue.
#[allow(clippy::vec_box)]
#[derive(Default)]
pub struct SendPool {
    small: Vec<Box<SendBuf<IOVECS_PER_SMALL_SEND_MAX>>>,
    large: Vec<Box<SendBuf<IOVECS_PER_SEND_MAX>>>,
    in_use: usize,
    peak_in_use: usize,
    /// Scratch of `conflate`: queued publishes per topic. Holds at most the topics of one
    /// queue (`queue_bytes_max` / smallest publish), reused by every connection.
    topic_counts: HashMap<TopicKey, u32>,
}

impl SendPool {
    fn take_small(&mut self) -> Box<SendBuf<IOVECS_PER_SMALL_SEND_MAX>> {
        self.note_taken();
        self.small.pop().unwrap_or_else(SendBuf::new)
    }

    fn take_large(&mut self) -> Box<SendBuf<IOVECS_PER_SEND_MAX>> {
        self.note_taken();
        self.large.pop().unwrap_or_else(SendBuf::new)
    }

    fn note_taken(&mut self) {
        self.in_use += 1;
        self.peak_in_use = self.peak_in_use.max(self.in_use);
    }

    fn give(&mut self, buf: InFlight) {
        match buf {
            InFlight::Contiguous => return,
            InFlight::Small(buf) => self.small.push(buf),
            InFlight::Large(buf) => self.large.push(buf),
        }
        self.in_use -= 1;
    }

    /// Frees the buffers the period since the last trim did not need.
    pub fn trim(&mut self) {
        let keep = self.peak_in_use - self.in_use;
        let large = self.large.len().min(keep);
        self.large.truncate(large);
        self.small.truncate(keep - large);
        self.small.shrink_to(keep);
        self.large.shrink_to(keep);
        self.peak_in_use = self.in_use;
    }

    /// Free buffers held.
    pub fn free_len(&self) -> usize {
        self.small.len() + self.large.len()
    }
}

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
    front_sent_bytes: usize,
    queued_bytes: u64,
    /// Chunks, from the front, that the send in flight covers.
    in_flight_chunks: usize,
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
        self.in_flight_chunks
            .max(usize::from(self.front_sent_bytes > 0))
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

    /// Builds the next send from the front of the queue: a contiguous one for a lone chunk in
    /// one piece, else a gathering one in a buffer from `pool`. `None` when a send is already
    /// in flight or nothing is queued. What it points at stays put until the send completes.
    pub fn start_send(&mut self, pool: &mut SendPool) -> Option<Outgoing> {
        if self.in_flight.is_some() {
            return None;
        }
        if let Some(only) = self.entries.front()
            && self.entries.len() == 1
            && iovecs_of(&only.chunk) == 1
        {
            let mut no_id = [0; 2];
            let rest = &only.chunk.parts(&mut no_id)[0][self.front_sent_bytes..];
            self.in_flight_chunks = 1;
            self.in_flight = Some(InFlight::Contiguous);
            return Some(Outgoing::Contiguous(rest.as_ptr(), rest.len()));
        }
        if self.entries.is_empty() {
            return None;
        }
        let small = self.entries.len() <= IOVECS_PER_SMALL_SEND_MAX
            && self
                .entries
                .iter()
                .map(|entry| iovecs_of(&entry.chunk))
                .sum::<usize>()
                <= IOVECS_PER_SMALL_SEND_MAX;
        // The boxes keep the msghdr's address when they move into `in_flight`.
        let (buf, chunks, msg): (_, _, *const libc::msghdr) = if small {
            let mut buf = pool.take_small();
            let chunks = buf.fill(&self.entries, self.front_sent_bytes);
            let msg = &buf.msg as *const _;
            (InFlight::Small(buf), chunks, msg)
        } else {
            let mut buf = pool.take_large();
            let chunks = buf.fill(&self.entries, self.front_sent_bytes);
            let msg = &buf.msg as *const _;
            (InFlight::Large(buf), chunks, msg)
        };
        self.in_flight_chunks = chunks;
        self.in_flight = Some(buf);
        Some(Outgoing::Gathered(msg))
    }

    /// The kernel sent `sent_bytes` of the send in flight; drop what is fully sent.
    pub fn complete_send(&mut self, mut sent_bytes: usize, pool: &mut SendPool) {
        if let Some(buf) = self.in_flight.take() {
            pool.give(buf);
        }
        self.in_flight_chunks = 0;
        self.queued_bytes = self.queued_bytes.saturating_sub(sent_bytes as u64);
        while let Some(front) = self.entries.front() {
            let left = front.chunk.len() - self.front_sent_bytes;
            if sent_bytes < left {
                self.front_sent_bytes += sent_bytes;
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
    pub fn fail_send(&mut self, pool: &mut SendPool) {
        if let Some(buf) = self.in_flight.take() {
            pool.give(buf);
        }
        self.in_flight_chunks = 0;
        self.entries = VecDeque::new();
        self.front_sent_bytes = 0;
        self.queued_bytes = 0;
    }

    /// The connection is going away: drops every chunk the kernel is not reading. A send in
    /// flight keeps its chunks until it completes ([`SendQueue::complete_send`] or
    /// [`SendQueue::fail_send`]).
    pub fn abandon(&mut self) {
        self.entries.truncate(self.in_flight_chunks);
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

fn iovecs_of(chunk: &Chunk) -> usize {
    match chunk {
        Chunk::Shared(_) | Chunk::Owned(_) => 1,
        Chunk::SharedWithId { .. } => 3,
    }
}

/// A `msghdr` with no address, no iovecs and no control data.
fn empty_msghdr() -> libc::msghdr {
    libc::msghdr {
        msg_name: std::ptr::null_mut(),
        msg_namelen: 0,
        msg_iov: std::ptr::null_mut(),
        msg_iovlen: 0,
        msg_control: std::ptr::null_mut(),
        msg_controllen: 0,
        msg_flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn gathered(outgoing: Outgoing) -> Vec<u8> {
        let msg = match outgoing {
            Outgoing::Gathered(msg) => msg,
            Outgoing::Contiguous(ptr, len) => {
                #[allow(unsafe_code)]
                // SAFETY: the run points into a queued chunk, alive and unchanged until the
                // send completes.
                return unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec();
            }
        };
        #[allow(unsafe_code)]
        // SAFETY: `msg` and its iovecs point into the queue's send buffer and chunks, alive
        // and unchanged until the send completes.
        unsafe {
            let msg = &*msg;
            let iovecs = std::slice::from_raw_parts(msg.msg_iov, msg.msg_iovlen);
            iovecs
                .iter()
                .flat_map(|iov| std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len))
                .copied()
                .collect()
        }
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
        assert!(matches!(outgoing, Outgoing::Contiguous(..)));
        assert_eq!(gathered(outgoing), b"publish");
        // A partial send resumes inside the chunk, still contiguous.
        queue.complete_send(3, &mut pool);
        let rest = queue.start_send(&mut pool).expect("the rest");
        assert!(matches!(rest, Outgoing::Contiguous(..)));
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
