//! A queue of messages between threads, bounded in the bytes the messages hold: what links
//! the shards with the threads that speak to other brokers (the cluster's NATS client, the
//! bridges). Lock-free (crossbeam's `SegQueue`), its bytes counted in an atomic; a push past
//! the bound is refused, and the caller counts the drop. A caller that must not drop waits
//! instead until the queue is no longer full, and then pushes whatever the size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::queue::SegQueue;
use tokio::sync::Notify;

use crate::broker::RoutedMessage;
use crate::shard::mailbox::Mailboxes;

/// What a [`ByteQueue`] holds: a message, or a message with what goes with it.
pub trait QueueItem {
    fn message(&self) -> &RoutedMessage;
}

impl QueueItem for Arc<RoutedMessage> {
    fn message(&self) -> &RoutedMessage {
        self
    }
}

/// A message of the QoS stream with the ticket of its acknowledgement to JetStream.
impl QueueItem for (Arc<RoutedMessage>, u64) {
    fn message(&self) -> &RoutedMessage {
        &self.0
    }
}

pub struct ByteQueue<T = Arc<RoutedMessage>> {
    messages: SegQueue<T>,
    bytes: AtomicU64,
    bytes_max: u64,
}

impl<T: QueueItem> ByteQueue<T> {
    pub fn new(bytes_max: u64) -> ByteQueue<T> {
        ByteQueue {
            messages: SegQueue::new(),
            bytes: AtomicU64::new(0),
            bytes_max,
        }
    }

    /// Queues `item`, or gives it back when it would take the queue past its bound.
    pub fn push(&self, item: T) -> Result<(), T> {
        let bytes = item.message().bytes() as u64;
        if self.bytes.load(Ordering::Relaxed).saturating_add(bytes) > self.bytes_max {
            return Err(item);
        }
        self.push_waited(item);
        Ok(())
    }

    /// Whether the queue holds its bound or more: a caller that must not drop waits until
    /// it is not, then pushes with [`ByteQueue::push_waited`].
    pub fn is_full(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) >= self.bytes_max
    }

    /// Queues `item` whatever its size: the caller waited until the queue was not full, so
    /// it holds at most its bound plus one item, and an item larger than the bound still
    /// gets through rather than stall its sender.
    pub fn push_waited(&self, item: T) {
        let bytes = item.message().bytes() as u64;
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.messages.push(item);
    }

    pub fn pop(&self) -> Option<T> {
        let item = self.messages.pop()?;
        self.bytes
            .fetch_sub(item.message().bytes() as u64, Ordering::Relaxed);
        Some(item)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mqtt::QoS;

    fn message(payload_bytes: usize) -> Arc<RoutedMessage> {
        let payload = vec![0; payload_bytes];
        Arc::new(RoutedMessage::new("t", &payload, QoS::AtLeastOnce, false))
    }

    #[test]
    fn a_push_past_the_bound_is_refused_and_what_waited_past_it_gets_through() {
        let small = message(10);
        let bound = small.bytes() as u64 * 2;
        let queue: ByteQueue = ByteQueue::new(bound);
        assert!(queue.push(Arc::clone(&small)).is_ok());
        assert!(queue.push(Arc::clone(&small)).is_ok());
        assert!(queue.is_full());
        assert!(queue.push(Arc::clone(&small)).is_err(), "past the bound");
        assert!(queue.pop().is_some());
        assert!(!queue.is_full());
        let large = message(1000);
        assert!(queue.push(Arc::clone(&large)).is_err());
        // A sender that must not drop waited for room: one item whatever its size.
        let tickets: ByteQueue<(Arc<RoutedMessage>, u64)> = ByteQueue::new(bound);
        tickets.push_waited((large, 7));
        assert!(tickets.is_full());
        assert_eq!(tickets.pop().map(|(_, ticket)| ticket), Some(7));
        assert_eq!(tickets.bytes(), 0);
    }
}
