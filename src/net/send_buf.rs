//! The memory a send hands the kernel: the `msghdr` and iovecs of a gathering send, kept in a
//! boxed [`SendBuf`] from the shard's [`SendPool`] while the send is in flight, so an idle
//! connection holds none and a steady fan-out allocates nothing once warm. A lone chunk in one
//! piece needs no buffer: it goes out as a plain `send` (`PreparedSend::Contiguous`).
//!
//! Its `unsafe` only reads a prepared send back (its length, and its bytes in tests); the
//! pointers it reads stay valid because a send's chunks and buffer are kept by its queue until
//! the send completes (`send_queue.rs`).
#![allow(unsafe_code)]

use std::collections::HashMap;

use crate::conn::{Chunk, TopicKey};

/// Iovecs gathered into one `sendmsg`. Sixty-four 100-byte publishes are ~6 KB: past that the
/// per-byte cost dominates and a larger batch buys nothing.
pub const IOVECS_PER_SEND_MAX: usize = 64;

/// Iovecs of a small send: what a connection keeping up with a live feed has queued per turn
/// (a few QoS 0 publishes, or two QoS 1 publishes at three iovecs each). 8 iovecs make a
/// 200-byte [`SendBuf`] instead of 1.2 KB, which is what the pool holds per concurrent send.
pub const IOVECS_PER_SMALL_SEND_MAX: usize = 8;

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

    /// Points the iovecs at `chunks`, from `skip` bytes into the first; returns how many
    /// chunks the send covers (at least one: a chunk needs at most three iovecs).
    fn fill<'c>(&mut self, chunks: impl Iterator<Item = &'c Chunk>, mut skip: usize) -> usize {
        let mut iovec_count = 0;
        let mut chunk_count = 0;
        for (index, chunk) in chunks.enumerate() {
            let parts = chunk.parts(&mut self.ids[index.min(N - 1)]);
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

/// What the kernel is given for the next send; it points into the queue's chunks and the
/// send buffer of the send in flight, which stay put until the send completes.
#[derive(Debug, Clone, Copy)]
pub(super) enum PreparedSend {
    /// One contiguous run of bytes, for a plain `send`: the kernel then copies no `msghdr` or
    /// iovec array (≈ 4 % of a delivery's CPU when each send carries one message).
    Contiguous(*const u8, usize),
    /// Several runs gathered by one `sendmsg`.
    Gathered(*const libc::msghdr),
}

impl PreparedSend {
    /// The bytes the send carries, copied (tests).
    #[cfg(test)]
    pub(super) fn to_vec(self) -> Vec<u8> {
        match self {
            // SAFETY: the run points into a queued chunk, alive and unchanged until the send
            // completes.
            PreparedSend::Contiguous(ptr, len) => {
                unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
            }
            // SAFETY: `msg` and its iovecs point into a send buffer and chunks that stay alive
            // and unchanged until the send completes.
            PreparedSend::Gathered(msg) => unsafe {
                std::slice::from_raw_parts((*msg).msg_iov, (*msg).msg_iovlen)
                    .iter()
                    .flat_map(|iov| {
                        std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len)
                    })
                    .copied()
                    .collect()
            },
        }
    }

    /// Bytes the send carries.
    pub(super) fn len(self) -> usize {
        match self {
            PreparedSend::Contiguous(_, len) => len,
            PreparedSend::Gathered(msg) => {
                // SAFETY: `msg` is the msghdr of the send buffer of a send in flight; it and
                // its iovecs stay put and unchanged until the send completes.
                let iovecs =
                    unsafe { std::slice::from_raw_parts((*msg).msg_iov, (*msg).msg_iovlen) };
                iovecs.iter().map(|iov| iov.iov_len).sum()
            }
        }
    }
}

/// The buffer of the send in flight, in one of two sizes, or none for a contiguous send.
pub(super) enum InFlight {
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
    /// Scratch of the conflate policy: queued publishes per topic. Holds at most the topics
    /// of one queue (`queue_bytes_max` / smallest publish), reused by every connection.
    pub(super) topic_counts: HashMap<TopicKey, u32>,
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

    pub(super) fn give(&mut self, buf: InFlight) {
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

impl InFlight {
    /// Prepares the send of a lone chunk in one piece, `skip` bytes of it already sent: no
    /// buffer, a plain `send`. `None` when the chunk is in several pieces.
    #[inline]
    pub(super) fn contiguous(chunk: &Chunk, skip: usize) -> Option<(InFlight, PreparedSend)> {
        let bytes = match chunk {
            Chunk::Shared(bytes) => &bytes[..],
            Chunk::Owned(bytes) => &bytes[..],
            Chunk::SharedWithId { .. } => return None,
        };
        let rest = &bytes[skip..];
        Some((
            InFlight::Contiguous,
            PreparedSend::Contiguous(rest.as_ptr(), rest.len()),
        ))
    }

    /// Prepares the send of `chunks` (the front of a queue, `skip` bytes of its first already
    /// sent) gathered by one `sendmsg`, in a buffer from `pool`. Returns the buffer to keep while
    /// the send is in flight, how many chunks it covers, and what to give the kernel.
    pub(super) fn gathered<'c>(
        chunks: impl ExactSizeIterator<Item = &'c Chunk> + Clone,
        skip: usize,
        pool: &mut SendPool,
    ) -> (InFlight, usize, PreparedSend) {
        let small = chunks.len() <= IOVECS_PER_SMALL_SEND_MAX
            && chunks.clone().map(iovecs_of).sum::<usize>() <= IOVECS_PER_SMALL_SEND_MAX;
        // The boxes keep the msghdr's address when they move into the queue.
        if small {
            let mut buf = pool.take_small();
            let covered = buf.fill(chunks, skip);
            let send = PreparedSend::Gathered(&buf.msg);
            (InFlight::Small(buf), covered, send)
        } else {
            let mut buf = pool.take_large();
            let covered = buf.fill(chunks, skip);
            let send = PreparedSend::Gathered(&buf.msg);
            (InFlight::Large(buf), covered, send)
        }
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
