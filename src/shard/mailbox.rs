//! How shards reach each other without sharing mutable state: bounded lock-free queues, one
//! per (sender, receiver) pair so each is single-producer and keeps per-publisher order, and
//! one eventfd per shard to wake it.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crossbeam::queue::ArrayQueue;

use crate::broker::ShardMessage;

use crate::conn::Transport;
use crate::net::sys;
use crate::protocol::ws::frame::FrameDecoder;

/// A connection whose CONNECT names a session owned by another shard, on its way there.
pub struct Handoff {
    pub fd: OwnedFd,
    pub peer: std::net::SocketAddr,
    pub transport: Transport,
    /// WebSocket decoding state: the stream may stop in the middle of a frame.
    pub ws: Option<Box<FrameDecoder>>,
    /// MQTT bytes received so far, starting with the CONNECT packet.
    pub pending: Vec<u8>,
}

pub struct Mailboxes {
    shard_count: usize,
    /// `messages[from * shard_count + to]`.
    messages: Vec<ArrayQueue<ShardMessage>>,
    handoffs: Vec<ArrayQueue<Handoff>>,
    wake_fds: Vec<OwnedFd>,
}

/// Handoffs in flight to one shard. Only CONNECTs for another shard's sessions take this path,
/// and each is done within a loop turn or two.
const HANDOFFS_QUEUED_MAX: usize = 4096;

impl Mailboxes {
    pub fn new(shard_count: usize, queue_len_max: usize) -> std::io::Result<Mailboxes> {
        let mut wake_fds = Vec::with_capacity(shard_count);
        for _ in 0..shard_count {
            wake_fds.push(sys::eventfd()?);
        }
        Ok(Mailboxes {
            shard_count,
            messages: (0..shard_count * shard_count)
                .map(|_| ArrayQueue::new(queue_len_max))
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

    /// Queues a message; gives it back when the queue is full.
    pub fn post(&self, from: usize, to: usize, message: ShardMessage) -> Result<(), ShardMessage> {
        self.messages[from * self.shard_count + to].push(message)
    }

    pub fn take(&self, from: usize, to: usize) -> Option<ShardMessage> {
        self.messages[from * self.shard_count + to].pop()
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
