//! A connection's outgoing bytes: chunks waiting to be sent, and the one send in flight.
//!
//! Everything queued while a send is in flight leaves in the next single send (one `sendmsg`
//! gathering up to [`IOVECS_PER_SEND_MAX`] chunks), so the kernel send cost is paid per batch,
//! not per message.

use std::collections::VecDeque;

use crate::broker::{Chunk, Droppable};

/// Chunks gathered into one `sendmsg`. Sixty-four 100-byte publishes are ~6 KB: past that the
/// per-byte cost dominates and a larger batch buys nothing.
pub const IOVECS_PER_SEND_MAX: usize = 64;

/// The `msghdr` and iovecs of the send in flight. Boxed so their address stays put while the
/// kernel reads them, even if the connection table grows and moves the connection.
pub struct InFlightSend {
    iovecs: Vec<libc::iovec>,
    msg: libc::msghdr,
}

impl InFlightSend {
    pub fn msghdr(&self) -> *const libc::msghdr {
        &self.msg
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// A droppable chunk met a full queue and was not queued.
    Dropped,
    /// A chunk that must not be dropped met a queue at twice its bound: the peer is not
    /// reading, and the connection must close rather than grow without limit.
    Overflow,
}

#[derive(Default)]
pub struct SendQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already sent by an earlier partial send.
    front_sent_bytes: usize,
    queued_bytes: u64,
    in_flight: Option<Box<InFlightSend>>,
}

impl SendQueue {
    pub fn push(&mut self, chunk: Chunk, droppable: Droppable, queue_bytes_max: u64) -> Enqueued {
        let len = chunk.bytes().len() as u64;
        let after = self.queued_bytes + len;
        match droppable {
            Droppable::Yes if after > queue_bytes_max => return Enqueued::Dropped,
            Droppable::No if after > queue_bytes_max.saturating_mul(2) => {
                return Enqueued::Overflow;
            }
            _ => {}
        }
        self.queued_bytes = after;
        self.chunks.push_back(chunk);
        Enqueued::Queued
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// Builds the next send from the front of the queue. `None` when a send is already in
    /// flight or nothing is queued.
    pub fn start_send(&mut self) -> Option<*const libc::msghdr> {
        if self.in_flight.is_some() || self.chunks.is_empty() {
            return None;
        }
        let mut iovecs = Vec::with_capacity(self.chunks.len().min(IOVECS_PER_SEND_MAX));
        for (index, chunk) in self.chunks.iter().take(IOVECS_PER_SEND_MAX).enumerate() {
            let skip = if index == 0 { self.front_sent_bytes } else { 0 };
            let bytes = &chunk.bytes()[skip..];
            iovecs.push(libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            });
        }
        let mut send = Box::new(InFlightSend {
            iovecs,
            msg: empty_msghdr(),
        });
        send.msg.msg_iov = send.iovecs.as_mut_ptr();
        send.msg.msg_iovlen = send.iovecs.len();
        let ptr = send.msghdr();
        self.in_flight = Some(send);
        Some(ptr)
    }

    /// The kernel sent `sent_bytes` of the send in flight; drop what is fully sent.
    pub fn complete_send(&mut self, mut sent_bytes: usize) {
        self.in_flight = None;
        self.queued_bytes = self.queued_bytes.saturating_sub(sent_bytes as u64);
        while let Some(front) = self.chunks.front() {
            let left = front.bytes().len() - self.front_sent_bytes;
            if sent_bytes < left {
                self.front_sent_bytes += sent_bytes;
                return;
            }
            sent_bytes -= left;
            self.front_sent_bytes = 0;
            self.chunks.pop_front();
        }
    }

    /// The send in flight failed; the connection is going away, so nothing more is sent.
    pub fn abandon(&mut self) {
        self.in_flight = None;
        self.chunks.clear();
        self.front_sent_bytes = 0;
        self.queued_bytes = 0;
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
    use std::rc::Rc;

    fn owned(bytes: &[u8]) -> Chunk {
        Chunk::Owned(bytes.to_vec())
    }

    #[test]
    fn one_send_gathers_everything_queued() {
        let mut queue = SendQueue::default();
        let shared: Rc<[u8]> = Rc::from(&b"publish"[..]);
        queue.push(owned(b"ack"), Droppable::No, 100);
        queue.push(Chunk::Shared(shared), Droppable::Yes, 100);
        let msg = queue.start_send().expect("something to send");
        assert!(!msg.is_null());
        assert!(queue.start_send().is_none(), "one send in flight at a time");
        queue.complete_send(10);
        assert!(queue.is_empty());
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[test]
    fn partial_send_resumes_inside_a_chunk() {
        let mut queue = SendQueue::default();
        queue.push(owned(b"abcdef"), Droppable::No, 100);
        queue.push(owned(b"gh"), Droppable::No, 100);
        queue.start_send();
        queue.complete_send(4);
        assert_eq!(queue.queued_bytes(), 4);
        queue.start_send();
        queue.complete_send(4);
        assert!(queue.is_empty());
    }

    #[test]
    fn droppable_chunks_stop_at_the_bound_and_required_ones_overflow_at_twice_it() {
        let mut queue = SendQueue::default();
        assert_eq!(
            queue.push(owned(&[0; 8]), Droppable::Yes, 10),
            Enqueued::Queued
        );
        assert_eq!(
            queue.push(owned(&[0; 8]), Droppable::Yes, 10),
            Enqueued::Dropped
        );
        assert_eq!(
            queue.push(owned(&[0; 8]), Droppable::No, 10),
            Enqueued::Queued
        );
        assert_eq!(
            queue.push(owned(&[0; 8]), Droppable::No, 10),
            Enqueued::Overflow
        );
    }
}
