//! A queue of messages between threads, bounded in the bytes the messages hold: what links
//! the shards with the threads that speak to other brokers (the cluster's NATS client, the
//! bridges). Lock-free (crossbeam's `SegQueue`), its bytes counted in an atomic; a push past
//! the bound is refused, and the caller counts the drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::queue::SegQueue;
use tokio::sync::Notify;

use crate::broker::RoutedMessage;
use crate::shard::mailbox::Mailboxes;

pub struct ByteQueue {
    messages: SegQueue<Arc<RoutedMessage>>,
    bytes: AtomicU64,
    bytes_max: u64,
}

impl ByteQueue {
    pub fn new(bytes_max: u64) -> ByteQueue {
        ByteQueue {
            messages: SegQueue::new(),
            bytes: AtomicU64::new(0),
            bytes_max,
        }
    }

    /// Queues `message`, or gives it back when it would take the queue past its bound.
    pub fn push(&self, message: Arc<RoutedMessage>) -> Result<(), Arc<RoutedMessage>> {
        let bytes = message.bytes() as u64;
        if self.bytes.load(Ordering::Relaxed).saturating_add(bytes) > self.bytes_max {
            return Err(message);
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.messages.push(message);
        Ok(())
    }

    pub fn pop(&self) -> Option<Arc<RoutedMessage>> {
        let message = self.messages.pop()?;
        self.bytes
            .fetch_sub(message.bytes() as u64, Ordering::Relaxed);
        Some(message)
    }

    /// The bound, in bytes.
    pub fn bytes_max(&self) -> u64 {
        self.bytes_max
    }

    /// Bytes the queued messages hold.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// A queue of [`Pipes`] has no room for a message now.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// The two queues between the shards and one thread that speaks to another broker (the
/// cluster's NATS client, a bridge), and how each side wakes the other: the thread through a
/// `tokio::sync::Notify`, which keeps a wake-up given while it was busy; the shard that takes
/// what comes in (the intake shard) through its eventfd.
pub struct Pipes {
    out: ByteQueue,
    incoming: ByteQueue,
    wake_remote: Notify,
    mailboxes: Arc<Mailboxes>,
    intake_shard: usize,
}

impl Pipes {
    pub fn new(
        mailboxes: Arc<Mailboxes>,
        intake_shard: usize,
        out_bytes_max: u64,
        in_bytes_max: u64,
    ) -> Pipes {
        Pipes {
            out: ByteQueue::new(out_bytes_max),
            incoming: ByteQueue::new(in_bytes_max),
            wake_remote: Notify::new(),
            mailboxes,
            intake_shard,
        }
    }

    // The shards' side.

    /// Queues `message` for the remote, unless the out queue is full. The thread is woken by
    /// [`Pipes::wake_remote`], once per turn.
    pub fn send(&self, message: Arc<RoutedMessage>) -> Result<(), Full> {
        self.out.push(message).map_err(|_| Full)
    }

    pub fn wake_remote(&self) {
        self.wake_remote.notify_one();
    }

    /// The next message from the remote, for the intake shard.
    pub fn take(&self) -> Option<Arc<RoutedMessage>> {
        self.incoming.pop()
    }

    // The remote's side.

    pub async fn woken(&self) {
        self.wake_remote.notified().await;
    }

    pub fn next_out(&self) -> Option<Arc<RoutedMessage>> {
        self.out.pop()
    }

    /// Hands a message from the remote to the intake shard, unless the in queue has no room
    /// now; wakes the shard either way (what is queued is its to take).
    pub fn deliver(&self, message: RoutedMessage) -> Result<(), Full> {
        let pushed = self.incoming.push(Arc::new(message));
        self.mailboxes.wake(self.intake_shard);
        pushed.map_err(|_| Full)
    }

    /// The in queue's bound, in bytes.
    pub fn in_bytes_max(&self) -> u64 {
        self.incoming.bytes_max()
    }
}
