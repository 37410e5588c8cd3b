//! A queue of messages between threads, bounded in the bytes the messages hold: what links
//! the shards with the threads that speak to other brokers (the cluster's NATS client, the
//! bridges). Lock-free (crossbeam's `SegQueue`), its bytes counted in an atomic; a push past
//! the bound is refused, and the caller counts the drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::queue::SegQueue;

use crate::broker::RoutedMessage;

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
