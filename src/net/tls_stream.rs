//! The TLS layer between a connection's socket and its byte stream: the rustls session
//! (`crate::tls`), and the ciphertext of the send in flight, which lives here because the kernel
//! reads it.
//!
//! A send of a TLS connection is the records of everything its session has to say: the
//! handshake, alerts, and what its send queue held, sealed up to `SEAL_BYTES_MAX` at a time.
//! The queue stays the connection's plaintext queue, with its bounds and slow consumer
//! policies; a chunk leaves it when it is sealed. One send at a time: while the kernel reads
//! `cipher`, nothing touches it, and a stream dropped meanwhile leaks it rather than free it.
//!
//! With kernel TLS on, the stream also says where the connection stands on its way there
//! ([`Handover`]); `io.rs` does the hand-over.

use super::send_buf::SendPool;
use super::send_queue::SendQueue;
use crate::tls::{SEAL_BYTES_MAX, TlsSession};

/// Ciphertext capacity kept between sends: an idle connection holds at most this.
const CIPHER_KEPT_BYTES_MAX: usize = 1024;

pub(super) struct TlsStream {
    pub(super) session: TlsSession,
    cipher: Cipher,
    /// close_notify is due once the queue is sealed.
    closing: bool,
    pub(super) handover: Handover,
}

/// Whether the connection's keys go to the kernel once its handshake is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handover {
    /// Not yet decided: the handshake is not over, or the receive stopped before the keys
    /// could go (the decision is made again at the next receive).
    Undecided,
    /// They go as soon as nothing is in flight: the receive is being stopped, and the queue
    /// waits unsealed, to leave as plaintext through the kernel.
    Waiting,
    /// The connection stays with rustls.
    UserSpace,
}

/// The records of the send in flight, or of one the kernel took in part.
#[derive(Default)]
struct Cipher {
    bytes: Vec<u8>,
    /// Bytes the kernel has taken.
    sent: usize,
    in_flight: bool,
}

impl Drop for Cipher {
    /// Dropped while the kernel still reads it (the connection table went with the shard):
    /// leak it rather than free memory the kernel may read.
    fn drop(&mut self) {
        if self.in_flight {
            std::mem::forget(std::mem::take(&mut self.bytes));
        }
    }
}

impl TlsStream {
    /// `kernel_tls`: the keys may go to the kernel once the handshake is over.
    pub(super) fn new(session: TlsSession, kernel_tls: bool) -> Box<TlsStream> {
        Box::new(TlsStream {
            session,
            cipher: Cipher::default(),
            closing: false,
            handover: if kernel_tls {
                Handover::Undecided
            } else {
                Handover::UserSpace
            },
        })
    }

    /// The session, to move to another shard with its connection (nothing is in flight then).
    pub(super) fn into_session(self: Box<Self>) -> TlsSession {
        debug_assert!(
            !self.cipher.in_flight,
            "a connection is released with nothing in flight"
        );
        self.session
    }

    /// Sends close_notify once everything queued so far is sealed: the connection ends in
    /// user space.
    pub(super) fn close_when_drained(&mut self) {
        self.closing = true;
        self.handover = Handover::UserSpace;
    }

    pub(super) fn in_flight(&self) -> bool {
        self.cipher.in_flight
    }

    /// Whether anything waits to be sent: ciphertext left over, records rustls holds, or the
    /// close_notify due.
    pub(super) fn has_output(&self) -> bool {
        self.cipher.sent < self.cipher.bytes.len() || self.session.wants_write() || self.closing
    }

    /// The next send: what the last one left, else every record the session has to send and
    /// `queue`'s plaintext sealed, gathered in the shard's `scratch` on the way. `None` when a send is in flight or nothing is to be sent. The
    /// bytes stay put until [`TlsStream::complete_send`] or [`TlsStream::fail_send`].
    pub(super) fn start_send(
        &mut self,
        queue: &mut SendQueue,
        pool: &mut SendPool,
        scratch: &mut Vec<u8>,
    ) -> Option<(*const u8, usize)> {
        let cipher = &mut self.cipher;
        if cipher.in_flight {
            return None;
        }
        if cipher.sent == cipher.bytes.len() {
            cipher.bytes.clear();
            cipher.sent = 0;
            // Handshake messages, tickets and alerts first: they come before any data sealed
            // now, and a key update before what it protects.
            self.session.write_records(&mut cipher.bytes);
            let sealing = !self.session.is_handshaking() && self.handover != Handover::Waiting;
            if !queue.is_empty() && sealing {
                let (session, out) = (&mut self.session, &mut cipher.bytes);
                queue.seal_front(SEAL_BYTES_MAX, pool, |plaintext| {
                    session.seal(plaintext, scratch, out)
                });
            }
            if self.closing && queue.is_empty() {
                self.closing = false;
                self.session.close_notify(&mut cipher.bytes);
            }
        }
        let rest = &cipher.bytes[cipher.sent..];
        if rest.is_empty() {
            return None;
        }
        cipher.in_flight = true;
        Some((rest.as_ptr(), rest.len()))
    }

    /// The kernel took `sent_bytes` of the send in flight (0: the ring refused the send).
    pub(super) fn complete_send(&mut self, sent_bytes: usize) {
        let cipher = &mut self.cipher;
        cipher.in_flight = false;
        cipher.sent = (cipher.sent + sent_bytes).min(cipher.bytes.len());
        if cipher.sent == cipher.bytes.len() && cipher.bytes.capacity() > CIPHER_KEPT_BYTES_MAX {
            cipher.bytes = Vec::new();
            cipher.sent = 0;
        }
    }

    /// The send in flight failed: the connection is going away.
    pub(super) fn fail_send(&mut self) {
        // The kernel is done with it, so it is freed, not leaked.
        self.cipher.in_flight = false;
        self.cipher = Cipher::default();
    }
}
