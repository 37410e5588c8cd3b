//! The I/O of one shard: its io_uring, its receive buffers, its fixed-file table and the
//! sockets of its connections. The shard states intents — accept on a listener, read a
//! connection, queue bytes on it, cancel, shut down, release it — and gets [`Event`]s back.
//! Every io_uring operation is built here, and this is where their memory is kept safe:
//!
//! - a send points at the chunks and send buffer of its connection's [`SendQueue`], which lives
//!   in this module's connection table. A connection leaves the table only through
//!   [`Io::release`], which refuses while a send or a receive is in flight, and only this
//!   module completes a send, so nothing the kernel reads is freed before it is done (a queue
//!   dropped anyway, with the whole table, leaks its send in flight instead);
//! - a receive writes into the provided-buffer ring owned here, dropped after the ring;
//! - the eventfd read lands in a buffer boxed here.
//!
//! **Kernel TLS.** Where the start-up probe found it ([`IoSetup::kernel_tls`]), a TLS
//! connection's keys go to the kernel once its handshake is over, and its socket carries
//! plaintext from then on: sends are the plain sends of its queue, receives are plain. The
//! keys may go only while nothing of the connection is in flight and rustls holds no part of
//! a record, so the receive is stopped first, rustls's last records are sent, and the queue
//! waits unsealed meanwhile ([`Handover`]); then the receive is armed again. A connection whose
//! suite the kernel does not take stays with rustls. Records other than application data,
//! which plain receives refuse, are read here to end the connection the right way.
//!
//! **Refused submissions.** When the ring cannot take an operation (its submission queue stays
//! full because the kernel refuses to submit), the intent is kept and submitted again on the
//! next turn ([`Io::submit_refused`]), and counted: nothing waits forever for an operation that
//! was never submitted.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types};
use log::{debug, warn};

use super::ktls::{self, ControlRecord, KtlsSupport};
use super::op::Op;
use super::preamble::{Expect, Preamble, PreambleRefusal, Step};
use super::send_buf::{PreparedSend, SendPool};
use super::send_queue::{Pushed, SendQueue};
use super::sys;
use super::tls_stream::{Handover, TlsStream};
use super::uring::{self, BufRing, Ring, RingFeatures, RingUnavailable};
use crate::conn::{Chunk, ConnId, Droppable, SlowConsumer};
use crate::protocol::proxy::ProxyHeader;
use crate::slots::Slots;
use crate::tls::{TlsFailure, TlsSession};

/// The buffer group of the shard's receive buffers.
const RECV_BUFFER_GROUP: u16 = 0;

/// How a shard's I/O is set up.
#[derive(Debug, Clone, Copy)]
pub struct IoSetup {
    /// Submission queue entries: a turn's sends and re-arms are pushed in batches this large.
    pub ring_entries: u32,
    /// Receive buffers lent to the kernel (a power of two).
    pub recv_buffers: u16,
    pub recv_buffer_bytes: usize,
    /// Fixed-file slots wanted: one per connection the shard may hold.
    pub fixed_files_max: u32,
    /// The suites whose keys go to the kernel after the handshake; `None`: TLS stays in user
    /// space (kernel TLS off, or not available).
    pub kernel_tls: Option<KtlsSupport>,
}

/// What the ring accepted at set-up, for the start-up log line.
#[derive(Debug, Clone, Copy)]
pub struct IoFeatures {
    pub ring: RingFeatures,
    /// Fixed-file slots registered (0: sockets are named by descriptor).
    pub fixed_files: u32,
}

/// Something that happened on the shard's sockets, in completion order.
#[derive(Debug)]
pub enum Event {
    /// Listener `listener` accepted a socket or failed to (`Err(errno)`); `armed` is false once
    /// its multishot accept ended and must be armed again.
    Accept {
        listener: usize,
        result: Result<OwnedFd, i32>,
        armed: bool,
    },
    /// Bytes arrived on connection `id`; read them with [`Io::read_received`]. `armed` is false
    /// when its multishot receive ended with them.
    Received {
        id: ConnId,
        buffer: RecvBuffer,
        armed: bool,
    },
    /// The receive of connection `id` ended without bytes.
    RecvEnded { id: ConnId, why: RecvEnd },
    /// The send in flight on connection `id` completed (its queue already knows how much was
    /// sent), or failed with an errno (its queue is emptied).
    Sent { id: ConnId, result: Result<(), i32> },
    /// Another shard or the signal thread woke this one.
    Woken,
}

/// Why a receive ended without bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvEnd {
    /// The peer closed its side (a zero-length read).
    PeerClosed,
    /// The shard's receive buffers ran out; they come back as this turn's data is handled,
    /// and the receive may be armed again.
    NoBuffers,
    /// The receive was cancelled ([`Io::cancel_recv`]).
    Cancelled,
    /// A kernel TLS connection received a record the broker does not take (an alert other
    /// than close_notify, a KeyUpdate) or one that failed to decrypt.
    Tls(TlsFailure),
    Failed(i32),
}

/// A connection taken out of the table ([`Io::release`]): to close, or to move to another
/// shard with its TLS layer.
pub struct Released<T> {
    pub fd: OwnedFd,
    pub state: T,
    pub tls: Option<TlsLayer>,
}

/// The TLS layer of a connection from a TLS listener.
pub enum TlsLayer {
    /// rustls in user space (boxed: its state is over a kilobyte, and the queue of
    /// connections moving between shards holds thousands of slots).
    Rustls(Box<TlsSession>),
    /// The kernel has the keys: the socket carries plaintext.
    Kernel,
}

/// What became of received bytes ([`Io::read_received`]).
#[derive(Debug)]
pub enum Received<R> {
    /// Read, with what the reader returned.
    Read(R),
    /// Nothing to read yet: TLS handshake messages, or part of a record.
    Nothing,
    /// The TLS layer failed; the alert is queued, and the connection must close.
    Failed(TlsFailure),
    /// The connection's first bytes were refused ([`Io::read_preamble_first`]); nothing was
    /// sent, and the connection must close.
    Refused(PreambleRefusal),
    /// The peer sent close_notify, after the plaintext the reader was given, if any: nothing
    /// more will come, and the connection must close even while the peer keeps its TCP side
    /// open (waiting for the server's close_notify, as in a bidirectional shutdown).
    Closed(Option<R>),
    /// The connection is gone.
    Gone,
}

/// A receive buffer the kernel filled; given back by [`Io::read_received`].
#[derive(Debug)]
pub struct RecvBuffer {
    id: u16,
    len: usize,
}

/// What the shard asked for that the ring refused, kept for the next turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Accept { listener: usize, fd: RawFd },
    CancelAccept { listener: usize },
    Recv(ConnId),
    CancelRecv(ConnId),
    Wake(RawFd),
}

/// Counters of the shard's I/O since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounts {
    /// Operations the ring refused, submitted again on a later turn.
    pub submissions_refused: u64,
    /// TLS connections whose keys went to the kernel.
    pub kernel_tls_handovers: u64,
    /// TLS connections that stayed in user space with kernel TLS on: a suite the kernel did
    /// not take, or part of a record in rustls when the keys were to go.
    pub kernel_tls_declined: u64,
    /// Bytes the kernel received and sent on the shard's sockets, as on the wire (TLS
    /// records and WebSocket frames included); counted per completion, not per packet.
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

/// Whether the kernel has a connection's TLS keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KernelTls {
    Off,
    On,
    /// On, and close_notify is due once the queue is sent.
    CloseNotifyDue,
}

/// The network side of one connection: its socket and what is queued on it.
struct Socket<T> {
    fd: OwnedFd,
    /// Also in the ring's fixed-file table, at the slot of the connection's index.
    fixed: bool,
    recv_armed: bool,
    recv_cancel_sent: bool,
    out: SendQueue,
    /// The TLS layer of a connection accepted on a TLS listener, while rustls has it.
    tls: Option<Box<TlsStream>>,
    /// Whether the kernel has the connection's TLS keys (one byte: the slot stays within
    /// its budget).
    kernel: KernelTls,
    /// What the shard keeps about the connection.
    state: T,
}

/// The I/O of one shard; `T` is what the shard keeps per connection. See the module docs.
pub struct Io<T> {
    // Field order is drop order: the ring goes before the memory its operations point at.
    ring: Ring,
    buf_ring: BufRing,
    conns: Slots<ConnId, Socket<T>>,
    /// Buffers of the sends in flight, reused so sending allocates nothing once warm.
    pool: SendPool,
    wake_buf: Box<[u8; 8]>,
    features: IoFeatures,
    completions: Vec<cqueue::Entry>,
    /// Connections with bytes queued since their last send started.
    dirty: Vec<ConnId>,
    /// Intents the ring refused, submitted again next turn.
    refused: Vec<Intent>,
    kernel_tls: Option<KtlsSupport>,
    /// Connections whose keys may go to the kernel now, tried at the next [`Io::start_sends`].
    handovers: Vec<ConnId>,
    /// The shard's TLS plaintext: what a receive deciphered, lent to the reader (at most a
    /// receive buffer's worth), and what a send gathers to seal (up to `SEAL_BYTES_MAX`).
    plaintext: Vec<u8>,
    /// The preambles of connections whose first bytes are not judged yet: only new connections
    /// of listeners with the PROXY protocol on, so they are kept beside the table rather than
    /// in every slot (whose budget has no byte left for even a flag). A receive looks here only
    /// while some connection of the shard has one.
    preambles: HashMap<ConnId, Preamble>,
    counts: IoCounts,
    /// Tests: how many of the next submissions fail as the ring would under pressure.
    #[cfg(test)]
    refuse_next: u32,
}

impl<T> Io<T> {
    /// Sets up the ring, the receive buffers and the fixed-file table; says why not in words an
    /// operator can act on.
    pub fn new(setup: IoSetup) -> Result<Io<T>, RingUnavailable> {
        let ring = Ring::new(setup.ring_entries)?;
        let buf_ring = BufRing::new(
            &ring,
            RECV_BUFFER_GROUP,
            setup.recv_buffers,
            setup.recv_buffer_bytes,
        )?;
        let fixed_files = register_fixed_files(&ring, setup.fixed_files_max);
        Ok(Io {
            features: IoFeatures {
                ring: ring.features,
                fixed_files,
            },
            ring,
            buf_ring,
            conns: Slots::default(),
            pool: SendPool::default(),
            wake_buf: Box::new([0; 8]),
            completions: Vec::new(),
            dirty: Vec::new(),
            refused: Vec::new(),
            kernel_tls: setup.kernel_tls,
            handovers: Vec::new(),
            plaintext: Vec::new(),
            preambles: HashMap::new(),
            counts: IoCounts::default(),
            #[cfg(test)]
            refuse_next: 0,
        })
    }

    pub fn features(&self) -> IoFeatures {
        self.features
    }

    pub fn counts(&self) -> IoCounts {
        self.counts
    }

    /// Connections held.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Every connection's id, in slot order.
    pub fn ids(&self) -> Vec<ConnId> {
        self.conns.keys().collect()
    }

    pub fn state(&self, id: ConnId) -> Option<&T> {
        self.conns.get(id).map(|socket| &socket.state)
    }

    pub fn state_mut(&mut self, id: ConnId) -> Option<&mut T> {
        self.conns.get_mut(id).map(|socket| &mut socket.state)
    }

    /// Takes in an accepted socket with the shard's `state` for it, and its TLS layer if it
    /// came in on a TLS listener; its operations name it by its fixed-file slot when the table
    /// has one for it, by descriptor otherwise.
    pub fn add(&mut self, fd: OwnedFd, state: T, tls: Option<TlsLayer>) -> ConnId {
        let kernel = match tls {
            Some(TlsLayer::Kernel) => KernelTls::On,
            _ => KernelTls::Off,
        };
        let tls = match tls {
            Some(TlsLayer::Rustls(session)) => {
                Some(TlsStream::new(*session, self.kernel_tls.is_some()))
            }
            Some(TlsLayer::Kernel) | None => None,
        };
        let id = self.conns.insert(Socket {
            fd,
            fixed: false,
            recv_armed: false,
            recv_cancel_sent: false,
            out: SendQueue::new(),
            tls,
            kernel,
            state,
        });
        let slot = u32::try_from(id.index()).ok();
        if let (Some(slot), Some(socket)) = (
            slot.filter(|&slot| slot < self.features.fixed_files),
            self.conns.get_mut(id),
        ) {
            match self.ring.set_fixed_file(slot, socket.fd.as_raw_fd()) {
                Ok(()) => socket.fixed = true,
                Err(e) => debug!("connection {}: not a fixed file: {e}", id.index()),
            }
        }
        id
    }

    /// The connection's first bytes are judged before anything else sees them, TLS included:
    /// a PROXY protocol header, or anything but one ([`Expect`]). Called before its first
    /// receive is armed.
    pub fn read_preamble_first(&mut self, id: ConnId, expect: Expect) {
        if self.conns.get(id).is_some() {
            self.preambles.insert(id, Preamble::new(expect));
        }
    }

    /// Whether the connection has a receive or a send in flight: it cannot be released yet.
    pub fn busy(&self, id: ConnId) -> bool {
        self.conns.get(id).is_some_and(|socket| {
            socket.recv_armed
                || socket.out.in_flight()
                || socket.tls.as_ref().is_some_and(|tls| tls.in_flight())
        })
    }

    /// Whether the kernel is reading one of the connection's sends.
    pub fn send_in_flight(&self, id: ConnId) -> bool {
        self.conns.get(id).is_some_and(|socket| {
            socket.out.in_flight() || socket.tls.as_ref().is_some_and(|tls| tls.in_flight())
        })
    }

    /// Whether anything waits in the connection's send queue or is being sent.
    pub fn sending(&self, id: ConnId) -> bool {
        self.conns.get(id).is_some_and(|socket| {
            !socket.out.is_empty()
                || socket.kernel == KernelTls::CloseNotifyDue
                || socket.tls.as_ref().is_some_and(|tls| tls.has_output())
        })
    }

    /// A TLS connection ends with close_notify, after everything queued on it so far.
    pub fn close_notify(&mut self, id: ConnId) {
        let Some(socket) = self.conns.get_mut(id) else {
            return;
        };
        if let Some(tls) = socket.tls.as_mut() {
            tls.close_when_drained();
        } else if socket.kernel != KernelTls::Off {
            socket.kernel = KernelTls::CloseNotifyDue;
        } else {
            return;
        }
        self.dirty.push(id);
    }

    pub fn recv_armed(&self, id: ConnId) -> bool {
        self.conns.get(id).is_some_and(|socket| socket.recv_armed)
    }

    /// Takes the connection out once nothing is in flight on it: its socket leaves the
    /// fixed-file table and is handed back with the shard's state, to be closed or moved to
    /// another shard. `None` while busy ([`Io::busy`]) or when unknown.
    pub fn release(&mut self, id: ConnId) -> Option<Released<T>> {
        if self.busy(id) {
            return None;
        }
        let socket = self.conns.remove(id)?;
        if !self.preambles.is_empty() {
            self.preambles.remove(&id);
        }
        if socket.fixed {
            // A fixed connection's index is below the table size, a u32. The table holds its
            // own reference to the socket, which would keep it open after its descriptor goes.
            if let Err(e) = self.ring.clear_fixed_file(id.index() as u32) {
                warn!(
                    "connection {}: cannot take the socket out of the fixed-file table: {e}",
                    id.index()
                );
            }
        }
        let tls = match socket.tls {
            Some(tls) => Some(TlsLayer::Rustls(Box::new(tls.into_session()))),
            None if socket.kernel != KernelTls::Off => Some(TlsLayer::Kernel),
            None => None,
        };
        Some(Released {
            fd: socket.fd,
            state: socket.state,
            tls,
        })
    }

    /// Half-closes the sending side, so the peer reads everything sent, then an orderly end.
    pub fn shutdown_write(&self, id: ConnId) {
        if let Some(socket) = self.conns.get(id) {
            sys::shutdown_write(&socket.fd);
        }
    }

    /// Cuts both directions: operations in flight on the socket end at once. What is queued and
    /// not yet handed to the kernel is dropped.
    pub fn cut(&mut self, id: ConnId) {
        if let Some(socket) = self.conns.get_mut(id) {
            socket.out.abandon();
            sys::shutdown_both(&socket.fd);
        }
    }

    /// Drops what is queued on the connection and not yet handed to the kernel.
    pub fn abandon_queue(&mut self, id: ConnId) {
        if let Some(socket) = self.conns.get_mut(id) {
            socket.out.abandon();
        }
    }

    /// Queues `chunk` on the connection (see [`SendQueue::push`]); it leaves with the next
    /// [`Io::start_sends`]. `None` when the connection is unknown.
    pub fn queue(
        &mut self,
        id: ConnId,
        chunk: Chunk,
        droppable: Droppable,
        queue_bytes_max: u64,
        policy: SlowConsumer,
    ) -> Option<Pushed> {
        let socket = self.conns.get_mut(id)?;
        let pushed = socket
            .out
            .push(chunk, droppable, queue_bytes_max, policy, &mut self.pool);
        if pushed.queued {
            self.dirty.push(id);
        }
        Some(pushed)
    }

    /// Starts one send on every connection with bytes queued and no send in flight.
    pub fn start_sends(&mut self) {
        let mut handovers = std::mem::take(&mut self.handovers);
        for id in handovers.drain(..) {
            self.try_hand_over(id);
        }
        self.handovers = handovers;
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut refused = Vec::new();
        for id in dirty.drain(..) {
            let Some(socket) = self.conns.get_mut(id) else {
                continue;
            };
            let send = match socket.tls.as_mut() {
                Some(tls) => tls
                    .start_send(&mut socket.out, &mut self.pool, &mut self.plaintext)
                    .map(|(bytes, len)| PreparedSend::Contiguous(bytes, len)),
                None => socket.out.start_send(&mut self.pool),
            };
            let Some(send) = send else {
                let drained = socket.out.is_empty() && !socket.out.in_flight();
                if socket.kernel == KernelTls::CloseNotifyDue && drained {
                    socket.kernel = KernelTls::On;
                    // Without waiting: a peer that reads nothing gets no close_notify.
                    if let Err(e) = ktls::send_close_notify(socket.fd.as_fd()) {
                        debug!("connection {}: no close_notify: {e}", id.index());
                    }
                }
                continue;
            };
            let flags = libc::MSG_NOSIGNAL;
            let target = Target::of(socket, id);
            let entry = match send {
                PreparedSend::Contiguous(bytes, len) => {
                    // A run longer than u32::MAX is sent in part; the completion says how much.
                    let len = u32::try_from(len).unwrap_or(u32::MAX);
                    target.build(
                        |fd| opcode::Send::new(fd, bytes, len).flags(flags).build(),
                        |fixed| opcode::Send::new(fixed, bytes, len).flags(flags).build(),
                    )
                }
                PreparedSend::Gathered(msg) => target.build(
                    |fd| opcode::SendMsg::new(fd, msg).flags(flags as u32).build(),
                    |fixed| opcode::SendMsg::new(fixed, msg).flags(flags as u32).build(),
                ),
            };
            let entry = entry.user_data(Op::Send(id).user_data());
            // SAFETY: the send points at chunks and a buffer its queue keeps until the send
            // completes (see the module documentation).
            if let Err(e) = unsafe { self.push(&entry) } {
                self.note_refused(&e);
                if let Some(socket) = self.conns.get_mut(id) {
                    match socket.tls.as_mut() {
                        // Nothing was handed over: the ciphertext waits for the next try.
                        Some(tls) => tls.complete_send(0),
                        None => socket.out.cancel_start(&mut self.pool),
                    }
                }
                refused.push(id);
            }
        }
        dirty.append(&mut refused);
        self.dirty = dirty;
    }

    /// Arms a multishot accept on `listener` (the index the shard knows it by).
    pub fn arm_accept(&mut self, listener: usize, socket: &TcpListener) {
        self.submit(Intent::Accept {
            listener,
            fd: socket.as_raw_fd(),
        });
    }

    pub fn cancel_accept(&mut self, listener: usize) {
        self.submit(Intent::CancelAccept { listener });
    }

    /// Arms a multishot receive on the connection, unless one is armed. A TLS connection
    /// whose keys are to go to the kernel first hands them over; then it is armed.
    pub fn arm_recv(&mut self, id: ConnId) {
        let Some(socket) = self.conns.get_mut(id) else {
            return;
        };
        if socket.recv_armed {
            return;
        }
        if let Some(tls) = socket.tls.as_mut() {
            decide_handover(tls, self.kernel_tls, &mut self.counts, id);
            if tls.handover == Handover::Waiting {
                self.handovers.push(id);
                return;
            }
        }
        self.submit(Intent::Recv(id));
    }

    /// Cancels the connection's receive; its end comes as [`RecvEnd::Cancelled`].
    pub fn cancel_recv(&mut self, id: ConnId) {
        let Some(socket) = self.conns.get_mut(id) else {
            return;
        };
        // The shard stops reading: keys waiting for the receive to stop wait for the next
        // `arm_recv` instead.
        if let Some(tls) = socket.tls.as_mut()
            && tls.handover == Handover::Waiting
        {
            tls.handover = Handover::Undecided;
        }
        if socket.recv_armed && !socket.recv_cancel_sent {
            self.submit(Intent::CancelRecv(id));
        }
    }

    /// Gives the connection's keys to the kernel if it waits for that and nothing is in flight
    /// any more, then arms its receive again. Anything else in flight ends later and brings
    /// the connection back here.
    fn try_hand_over(&mut self, id: ConnId) {
        let Some(socket) = self.conns.get_mut(id) else {
            return;
        };
        let Some(tls) = socket.tls.as_mut() else {
            return;
        };
        if tls.handover != Handover::Waiting
            || socket.recv_armed
            || tls.in_flight()
            || tls.has_output()
        {
            return;
        }
        if !tls.session.at_record_boundary() {
            // The start of a record is in rustls and the rest in the socket: only rustls can
            // read it whole.
            tls.handover = Handover::UserSpace;
            self.counts.kernel_tls_declined += 1;
            debug!(
                "connection {}: part of a TLS record received at the hand-over: user-space TLS",
                id.index()
            );
        } else if let Some(tls) = socket.tls.take() {
            match tls.into_session().into_secrets() {
                Ok((version, secrets)) => {
                    match ktls::hand_to_kernel(socket.fd.as_fd(), version, secrets) {
                        Ok(()) => {
                            socket.kernel = KernelTls::On;
                            self.counts.kernel_tls_handovers += 1;
                            debug!("connection {}: TLS keys handed to the kernel", id.index());
                        }
                        Err(e) => fail_handover(socket, id, &e),
                    }
                }
                Err(e) => fail_handover(socket, id, &e),
            }
        }
        // What waited unsealed leaves now, encrypted by the kernel or by rustls.
        if !socket.out.is_empty() {
            self.dirty.push(id);
        }
        self.submit(Intent::Recv(id));
    }

    /// Reads eventfd `fd` (owned by the shard's mailboxes, which outlive this ring) to be woken
    /// by other shards: [`Event::Woken`], after which the read is armed again here.
    pub fn arm_wake(&mut self, fd: RawFd) {
        self.submit(Intent::Wake(fd));
    }

    /// Submits again what the ring refused on earlier turns.
    pub fn submit_refused(&mut self) {
        for intent in std::mem::take(&mut self.refused) {
            self.submit(intent);
        }
    }

    fn submit(&mut self, intent: Intent) {
        let entry = match intent {
            Intent::Accept { listener, fd } => opcode::AcceptMulti::new(types::Fd(fd))
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(Op::Accept(listener).user_data()),
            Intent::CancelAccept { listener } => {
                opcode::AsyncCancel::new(Op::Accept(listener).user_data())
                    .build()
                    .user_data(Op::Cancel.user_data())
            }
            Intent::Recv(id) => {
                let Some(socket) = self.conns.get_mut(id) else {
                    return;
                };
                socket.recv_armed = true;
                socket.recv_cancel_sent = false;
                Target::of(socket, id)
                    .build(
                        |fd| opcode::RecvMulti::new(fd, RECV_BUFFER_GROUP).build(),
                        |fixed| opcode::RecvMulti::new(fixed, RECV_BUFFER_GROUP).build(),
                    )
                    .user_data(Op::Recv(id).user_data())
            }
            Intent::CancelRecv(id) => {
                let Some(socket) = self.conns.get_mut(id) else {
                    return;
                };
                socket.recv_cancel_sent = true;
                opcode::AsyncCancel::new(Op::Recv(id).user_data())
                    .build()
                    .user_data(Op::Cancel.user_data())
            }
            Intent::Wake(fd) => opcode::Read::new(types::Fd(fd), self.wake_buf.as_mut_ptr(), 8)
                .build()
                .user_data(Op::Wake.user_data()),
        };
        // SAFETY: receives write into the buffer ring and the eventfd read into `wake_buf`,
        // both owned here and dropped after the ring; the others point at no memory.
        if let Err(e) = unsafe { self.push(&entry) } {
            self.note_refused(&e);
            match intent {
                Intent::Recv(id) | Intent::CancelRecv(id) => {
                    if let Some(socket) = self.conns.get_mut(id) {
                        socket.recv_armed &= !matches!(intent, Intent::Recv(_));
                        socket.recv_cancel_sent &= !matches!(intent, Intent::CancelRecv(_));
                    }
                }
                _ => {}
            }
            self.refused.push(intent);
        }
    }

    /// Queues one operation on the ring.
    ///
    /// # Safety
    /// Whatever `entry` points at must stay valid and unmoved until its last completion.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> std::io::Result<()> {
        #[cfg(test)]
        if self.refuse_next > 0 {
            self.refuse_next -= 1;
            return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
        }
        // SAFETY: the caller's promise, passed on.
        unsafe { self.ring.push(entry) }
    }

    fn note_refused(&mut self, error: &std::io::Error) {
        self.counts.submissions_refused += 1;
        if self.counts.submissions_refused.is_power_of_two() {
            warn!(
                "io_uring refused an operation ({error}); it is submitted again next turn ({} so far)",
                self.counts.submissions_refused
            );
        }
    }

    /// Submits what is queued and waits until a completion is ready or `timeout` passes.
    pub fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.ring.submit_and_wait(timeout)
    }

    /// Takes up to `max` completions as events, in completion order, appended to `events`.
    /// Returns whether `max` were taken (more may be waiting).
    pub fn take_events(&mut self, events: &mut Vec<Event>, max: usize) -> bool {
        let mut completions = std::mem::take(&mut self.completions);
        self.ring.drain_completions(&mut completions, max);
        let full = completions.len() == max;
        for completion in completions.drain(..) {
            let (result, flags) = (completion.result(), completion.flags());
            let armed = cqueue::more(flags);
            let event = match Op::from_user_data(completion.user_data()) {
                Some(Op::Accept(listener)) => Some(Event::Accept {
                    listener,
                    result: if result < 0 {
                        Err(-result)
                    } else {
                        Ok(sys::own(result))
                    },
                    armed,
                }),
                Some(Op::Recv(id)) => self.on_recv(id, result, flags),
                Some(Op::Send(id)) => self.on_send(id, result),
                Some(Op::Wake) => Some(Event::Woken),
                Some(Op::Cancel) | None => None,
            };
            events.extend(event);
        }
        self.completions = completions;
        full
    }

    fn on_recv(&mut self, id: ConnId, result: i32, flags: u32) -> Option<Event> {
        let buffer = cqueue::buffer_select(flags);
        let Some(socket) = self.conns.get_mut(id) else {
            // A late completion of a connection that is gone.
            if let Some(buffer) = buffer {
                self.buf_ring.recycle(buffer);
            }
            return None;
        };
        let armed = cqueue::more(flags);
        if !armed {
            socket.recv_armed = false;
        }
        let waiting = socket
            .tls
            .as_mut()
            .filter(|tls| tls.handover == Handover::Waiting);
        if let Some(tls) = waiting
            && result <= 0
        {
            if matches!(-result, libc::ECANCELED | libc::ENOBUFS) {
                // Stopped for the hand-over (or short of buffers, which come back this turn):
                // the keys go, then the receive is armed again.
                self.handovers.push(id);
                return None;
            }
            // The connection is ending: its keys stay.
            tls.handover = Handover::UserSpace;
        }
        if result > 0 {
            self.counts.bytes_received += result as u64;
            let Some(buffer) = buffer else {
                warn!("a receive completed without a buffer");
                return None;
            };
            let len = result as usize;
            return Some(Event::Received {
                id,
                buffer: RecvBuffer { id: buffer, len },
                armed,
            });
        }
        let why = match -result {
            0 => RecvEnd::PeerClosed,
            libc::ENOBUFS => RecvEnd::NoBuffers,
            libc::ECANCELED => RecvEnd::Cancelled,
            libc::EIO if socket.kernel != KernelTls::Off => control_record_end(&socket.fd, id),
            libc::EBADMSG if socket.kernel != KernelTls::Off => RecvEnd::Tls(TlsFailure::Decrypt),
            errno => RecvEnd::Failed(errno),
        };
        Some(Event::RecvEnded { id, why })
    }

    fn on_send(&mut self, id: ConnId, result: i32) -> Option<Event> {
        let socket = self.conns.get_mut(id)?;
        if result < 0 {
            match socket.tls.as_mut() {
                Some(tls) => tls.fail_send(),
                None => socket.out.fail_send(&mut self.pool),
            }
            return Some(Event::Sent {
                id,
                result: Err(-result),
            });
        }
        self.counts.bytes_sent += result as u64;
        let more = match socket.tls.as_mut() {
            Some(tls) => {
                tls.complete_send(result as usize);
                if tls.handover == Handover::Waiting {
                    self.handovers.push(id);
                }
                tls.has_output()
            }
            None => {
                socket.out.complete_send(result as usize, &mut self.pool);
                socket.kernel == KernelTls::CloseNotifyDue
            }
        };
        if more || !socket.out.is_empty() {
            self.dirty.push(id);
        }
        Some(Event::Sent { id, result: Ok(()) })
    }

    /// Hands the bytes of a receive to `read` with the connection's state (unmasking happens in
    /// place, so the bytes are mutable), then gives the buffer back to the kernel. A TLS
    /// connection's bytes are deciphered first, into the shard's plaintext buffer; `read` is
    /// not called when they held no plaintext (a handshake message, say), except by the bytes
    /// that end the handshake (see `handshake_ended` below). `read` is also given
    /// the TLS session, as it is after deciphering: the client's certificate may have been
    /// verified by the very bytes that carry its first plaintext. Before all that, a
    /// connection's preamble ([`Io::read_preamble_first`]) takes the first bytes, and the
    /// PROXY header it reads goes to `on_header` before any byte of the stream goes on.
    pub fn read_received<R>(
        &mut self,
        id: ConnId,
        buffer: RecvBuffer,
        on_header: impl FnOnce(&mut T, ProxyHeader),
        read: impl FnOnce(&mut T, &mut [u8], Option<&TlsSession>) -> R,
    ) -> Received<R> {
        let Some(socket) = self.conns.get_mut(id) else {
            self.buf_ring.recycle(buffer.id);
            return Received::Gone;
        };
        let data = self.buf_ring.buffer_mut(buffer.id, buffer.len);
        let mut preamble = if self.preambles.is_empty() {
            None
        } else {
            self.preambles.remove(&id)
        };
        let data = match preamble.as_mut().map(|preamble| preamble.feed(data)) {
            None => data,
            Some(Step::Done { header, rest }) => {
                if let Some(header) = header {
                    on_header(&mut socket.state, header);
                }
                rest
            }
            Some(step) => {
                let received = match step {
                    Step::Refused(refusal) => Received::Refused(refusal),
                    _ => Received::Nothing,
                };
                // Kept until the connection is released: after a refusal, it drops what else
                // comes.
                if let Some(preamble) = preamble {
                    self.preambles.insert(id, preamble);
                }
                self.buf_ring.recycle(buffer.id);
                return received;
            }
        };
        if data.is_empty() {
            // The receive held the header and nothing after it.
            self.buf_ring.recycle(buffer.id);
            return Received::Nothing;
        }
        let Some(tls) = socket.tls.as_mut() else {
            let result = read(&mut socket.state, data, None);
            self.buf_ring.recycle(buffer.id);
            return Received::Read(result);
        };
        let mut plaintext = std::mem::take(&mut self.plaintext);
        plaintext.clear();
        let was_handshaking = tls.session.is_handshaking();
        let deciphered = tls.session.receive(data, &mut plaintext);
        self.buf_ring.recycle(buffer.id);
        // The handshake may have ended with these bytes: with the receive still running, the
        // keys are to go to the kernel once it stops.
        let reading = socket.recv_armed && !socket.recv_cancel_sent;
        if deciphered.is_ok() && reading {
            decide_handover(tls, self.kernel_tls, &mut self.counts, id);
        }
        let stop_reading = reading && tls.handover == Handover::Waiting;
        // The handshake ended: `read` sees the session now, with whatever plaintext came (often
        // none), to take what it needs of it (the certificate's identity) before the keys and
        // the session may go to the kernel.
        let handshake_ended = was_handshaking && !tls.session.is_handshaking();
        if tls.handover == Handover::Waiting {
            self.handovers.push(id);
        }
        // Handshake messages to answer, an alert to send, or queued bytes the handshake held.
        if tls.has_output() || !socket.out.is_empty() {
            self.dirty.push(id);
        }
        let received = match deciphered {
            Err(failure) => Received::Failed(failure),
            Ok(deciphered) => {
                let result = (!plaintext.is_empty() || handshake_ended)
                    .then(|| read(&mut socket.state, &mut plaintext, Some(&tls.session)));
                match (result, deciphered.peer_closed) {
                    (result, true) => Received::Closed(result),
                    (Some(result), false) => Received::Read(result),
                    (None, false) => Received::Nothing,
                }
            }
        };
        self.plaintext = plaintext;
        if stop_reading {
            self.submit(Intent::CancelRecv(id));
        }
        received
    }

    /// Once a tick: gives back send buffers the last period did not need.
    pub fn trim(&mut self) {
        self.pool.trim();
    }

    /// Once a second: gives back room the scratch of a turn kept from its last bursts.
    pub fn shed(&mut self) {
        crate::slots::shed(&mut self.completions);
        crate::slots::shed(&mut self.dirty);
        crate::slots::shed(&mut self.refused);
        if self.preambles.is_empty() {
            self.preambles.shrink_to(256);
        }
        self.plaintext.clear();
        crate::slots::shed(&mut self.plaintext);
    }
}

impl<T> Drop for Io<T> {
    fn drop(&mut self) {
        // Whatever was submitted last goes in; then the kernel lets go of the buffer ring
        // before its memory is unmapped.
        let _ = self.ring.submit_and_wait(Duration::ZERO);
        uring::unregister(&self.ring, &self.buf_ring);
    }
}

/// Decides, once its handshake is over, whether a connection's keys go to the kernel: when
/// kernel TLS is on and the probe saw the kernel take the negotiated suite.
fn decide_handover(
    tls: &mut TlsStream,
    kernel_tls: Option<KtlsSupport>,
    counts: &mut IoCounts,
    id: ConnId,
) {
    if tls.handover != Handover::Undecided || tls.session.is_handshaking() {
        return;
    }
    let suite = tls.session.negotiated_suite().and_then(ktls::Suite::of);
    match suite {
        Some(suite) if kernel_tls.is_some_and(|support| support.supports(suite)) => {
            tls.handover = Handover::Waiting;
        }
        _ => {
            tls.handover = Handover::UserSpace;
            counts.kernel_tls_declined += 1;
            let suite = tls.session.negotiated_suite().map(|suite| suite.suite());
            debug!(
                "connection {}: the kernel does not take {suite:?}: user-space TLS",
                id.index()
            );
        }
    }
}

/// rustls gave its keys away, or the kernel took part of them: the connection cannot go on.
/// Its socket is shut, so the receive armed next ends it.
fn fail_handover<T>(socket: &mut Socket<T>, id: ConnId, error: &dyn std::fmt::Display) {
    warn!(
        "connection {}: TLS keys not handed to the kernel, closing: {error}",
        id.index()
    );
    socket.out.abandon();
    sys::shutdown_both(&socket.fd);
}

/// A kernel TLS receive refused a record other than application data (`EIO`), which stays
/// at the head of the socket: what it is decides how the connection ends.
fn control_record_end(fd: &OwnedFd, id: ConnId) -> RecvEnd {
    match ktls::read_control_record(fd.as_fd()) {
        Ok(ControlRecord::Alert { description: 0 }) => RecvEnd::PeerClosed,
        Ok(ControlRecord::Alert { description }) => {
            RecvEnd::Tls(TlsFailure::PeerAlert(description))
        }
        Ok(ControlRecord::Handshake) => RecvEnd::Tls(TlsFailure::AfterHandover),
        Ok(ControlRecord::Other(kind)) => {
            debug!("connection {}: TLS record of type {kind}", id.index());
            RecvEnd::Tls(TlsFailure::Protocol)
        }
        Err(e) => {
            debug!("connection {}: the refused TLS record: {e}", id.index());
            RecvEnd::Tls(TlsFailure::Protocol)
        }
    }
}

/// How an operation names a connection's socket: by its fixed-file slot when it has one (the
/// kernel then skips the per-operation file lookup), by its descriptor otherwise.
enum Target {
    Fd(types::Fd),
    Fixed(types::Fixed),
}

impl Target {
    fn of<T>(socket: &Socket<T>, id: ConnId) -> Target {
        if socket.fixed {
            // A fixed connection's index is below the table size, a u32.
            Target::Fixed(types::Fixed(id.index() as u32))
        } else {
            Target::Fd(types::Fd(socket.fd.as_raw_fd()))
        }
    }

    fn build(
        self,
        by_fd: impl FnOnce(types::Fd) -> squeue::Entry,
        by_slot: impl FnOnce(types::Fixed) -> squeue::Entry,
    ) -> squeue::Entry {
        match self {
            Target::Fd(fd) => by_fd(fd),
            Target::Fixed(slot) => by_slot(slot),
        }
    }
}

/// Bytes one connection takes in the shard's connection table, with `T` the shard's state of
/// it: what memory budgets count.
pub const fn slot_bytes<T>() -> usize {
    crate::slots::slot_bytes::<Socket<T>>()
}

/// Registers the ring's fixed-file table: a slot per connection the shard may hold, within
/// the process's open-file limit, which caps the table. Returns its size; 0 when the kernel
/// refuses, and sockets are then named by descriptor.
fn register_fixed_files(ring: &Ring, connections_max: u32) -> u32 {
    let open_files_max = sys::open_files_limit().unwrap_or(0);
    let slots =
        u32::try_from(open_files_max).map_or(connections_max, |limit| connections_max.min(limit));
    match ring.register_fixed_files(slots) {
        Ok(()) => slots,
        Err(e) => {
            warn!("io_uring fixed files unavailable ({e}): sockets are named by descriptor");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::rc::Rc;

    fn io() -> Io<&'static str> {
        Io::new(IoSetup {
            ring_entries: 64,
            recv_buffers: 16,
            recv_buffer_bytes: 4096,
            fixed_files_max: 16,
            kernel_tls: None,
        })
        .expect("io_uring is available to the tests")
    }

    /// Waits for events until `want` holds for one of them; at most a few seconds.
    fn wait_for(io: &mut Io<&'static str>, mut want: impl FnMut(&Event) -> bool) -> Event {
        for _ in 0..100 {
            io.wait(Duration::from_millis(50)).expect("the ring waits");
            let mut events = Vec::new();
            io.take_events(&mut events, 64);
            if let Some(index) = events.iter().position(&mut want) {
                return events.swap_remove(index);
            }
        }
        panic!("no such event within 5 s");
    }

    /// A connection accepted through the ring, and the client's end of it.
    fn accepted(io: &mut Io<&'static str>) -> (ConnId, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        io.arm_accept(7, &listener);
        let client = TcpStream::connect(listener.local_addr().expect("bound")).expect("connects");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a read timeout");
        let Event::Accept {
            listener: 7,
            result: Ok(fd),
            ..
        } = wait_for(io, |event| matches!(event, Event::Accept { .. }))
        else {
            panic!("accepted on listener 7");
        };
        (io.add(fd, "peer", None), client)
    }

    fn received(io: &mut Io<&'static str>, id: ConnId) -> Vec<u8> {
        let Event::Received { buffer, .. } = wait_for(
            io,
            |event| matches!(event, Event::Received { id: got, .. } if *got == id),
        ) else {
            unreachable!("matched above");
        };
        let read = io.read_received(
            id,
            buffer,
            |_, _| {},
            |state, data, _| {
                assert_eq!(*state, "peer");
                data.to_vec()
            },
        );
        let Received::Read(bytes) = read else {
            panic!("the connection is there");
        };
        bytes
    }

    #[test]
    fn bytes_go_both_ways_and_a_busy_connection_is_not_released() {
        let mut io = io();
        let (id, mut client) = accepted(&mut io);
        io.arm_recv(id);
        client.write_all(b"hello").expect("writes");
        assert_eq!(received(&mut io, id), b"hello");

        let bytes: Rc<[u8]> = Rc::from(&b"to the client"[..]);
        let pushed = io.queue(
            id,
            Chunk::Shared(bytes),
            Droppable::No,
            1024,
            SlowConsumer::DropOldest,
        );
        assert!(pushed.is_some_and(|pushed| pushed.queued));
        io.start_sends();
        let sent = wait_for(&mut io, |event| matches!(event, Event::Sent { .. }));
        assert!(matches!(sent, Event::Sent { id: got, result: Ok(()) } if got == id));
        let mut got = [0; 13];
        client.read_exact(&mut got).expect("reads");
        assert_eq!(&got, b"to the client");
        assert!(!io.sending(id));

        assert!(io.busy(id), "the receive is armed");
        assert!(io.release(id).is_none());
        io.cancel_recv(id);
        let ended = wait_for(&mut io, |event| matches!(event, Event::RecvEnded { .. }));
        assert!(matches!(
            ended,
            Event::RecvEnded {
                why: RecvEnd::Cancelled,
                ..
            }
        ));
        let released = io.release(id).expect("nothing in flight");
        assert_eq!(released.state, "peer");
        assert!(io.is_empty());
    }

    #[test]
    fn refused_submissions_go_in_on_a_later_turn() {
        let mut io = io();
        let (id, mut client) = accepted(&mut io);
        io.refuse_next = 1;
        io.arm_recv(id);
        assert!(!io.recv_armed(id), "refused, so not armed");
        assert_eq!(io.counts().submissions_refused, 1);
        io.submit_refused();
        assert!(io.recv_armed(id));
        client.write_all(b"late").expect("writes");
        assert_eq!(received(&mut io, id), b"late");

        io.queue(
            id,
            Chunk::Owned(b"reply".to_vec()),
            Droppable::No,
            1024,
            SlowConsumer::DropOldest,
        );
        io.refuse_next = 1;
        io.start_sends();
        let queue = &io.conns.get(id).expect("held").out;
        assert!(
            !queue.in_flight() && !queue.is_empty(),
            "refused: still queued, not in flight"
        );
        assert_eq!(io.counts().submissions_refused, 2);
        io.start_sends();
        wait_for(&mut io, |event| matches!(event, Event::Sent { .. }));
        let mut got = [0; 5];
        client.read_exact(&mut got).expect("reads");
        assert_eq!(&got, b"reply");
    }

    /// Reads the connection's receives until the stream brings `len` bytes; the header, if
    /// one came before them.
    fn read_stream_bytes(
        io: &mut Io<&'static str>,
        id: ConnId,
        len: usize,
    ) -> (Option<ProxyHeader>, Vec<u8>) {
        let (mut header, mut stream) = (None, Vec::new());
        while stream.len() < len {
            let Event::Received { buffer, .. } = wait_for(
                io,
                |event| matches!(event, Event::Received { id: got, .. } if *got == id),
            ) else {
                unreachable!("matched above");
            };
            let on_header = |_: &mut &str, got| header = Some(got);
            match io.read_received(id, buffer, on_header, |_, data, _| data.to_vec()) {
                Received::Read(bytes) => stream.extend(bytes),
                Received::Nothing => {}
                other => panic!("{other:?}"),
            }
        }
        (header, stream)
    }

    #[test]
    fn a_preamble_is_judged_before_the_stream() {
        let mut io = io();
        let (id, mut client) = accepted(&mut io);
        io.read_preamble_first(id, Expect::Header);
        io.arm_recv(id);
        // In two writes: the header may come in pieces.
        client.write_all(b"PROXY TCP4 192.0.2.1 ").expect("writes");
        client
            .write_all(b"192.0.2.2 4711 1883\r\nhello")
            .expect("writes");
        let (header, stream) = read_stream_bytes(&mut io, id, 5);
        let client_addr = "192.0.2.1:4711".parse().expect("an address");
        assert_eq!(header.and_then(|header| header.source()), Some(client_addr));
        assert_eq!(stream, b"hello");
        assert!(io.preambles.is_empty(), "judged, so gone");
        client.write_all(b"PROXY again").expect("writes");
        assert_eq!(
            read_stream_bytes(&mut io, id, 11),
            (None, b"PROXY again".to_vec())
        );

        // From a peer that may not send one, a header is refused.
        let (other, mut client) = accepted(&mut io);
        io.read_preamble_first(other, Expect::NoHeader);
        io.arm_recv(other);
        client.write_all(b"PROXY UNKNOWN\r\n").expect("writes");
        let Event::Received { buffer, .. } = wait_for(
            &mut io,
            |event| matches!(event, Event::Received { id: got, .. } if *got == other),
        ) else {
            unreachable!("matched above");
        };
        let read = io.read_received(other, buffer, |_, _| {}, |_, data, _| data.len());
        assert!(matches!(
            read,
            Received::Refused(PreambleRefusal::Untrusted)
        ));
        // What else it sent before its receive ends is dropped.
        client.write_all(b"\x10\x00").expect("writes");
        let Event::Received { buffer, .. } = wait_for(
            &mut io,
            |event| matches!(event, Event::Received { id: got, .. } if *got == other),
        ) else {
            unreachable!("matched above");
        };
        let read = io.read_received(other, buffer, |_, _| {}, |_, data, _| data.len());
        assert!(matches!(read, Received::Nothing));
        io.cancel_recv(other);
        wait_for(&mut io, |event| matches!(event, Event::RecvEnded { .. }));
        assert!(io.release(other).is_some());
        assert!(io.preambles.is_empty());
    }

    #[test]
    fn a_peer_that_closes_ends_the_receive() {
        let mut io = io();
        let (id, client) = accepted(&mut io);
        io.arm_recv(id);
        drop(client);
        let ended = wait_for(&mut io, |event| matches!(event, Event::RecvEnded { .. }));
        assert!(matches!(
            ended,
            Event::RecvEnded {
                why: RecvEnd::PeerClosed,
                ..
            }
        ));
        assert!(!io.recv_armed(id));
        assert!(io.release(id).is_some());
    }
}
