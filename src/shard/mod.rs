//! Thread-per-core: one shard per core, each with its own ring, connections and sessions.
//!
//! A shard's loop turn: wait for completions (or the next tick), handle them, take in what
//! other shards sent, let the broker act, then carry out the broker's outbox: append to send
//! queues, post to other shards, start one send per connection that has something queued and
//! none in flight, and wake each other shard at most once.

mod close;
pub mod ingest;
pub mod mailbox;
pub mod ops;

use std::collections::VecDeque;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types};
use log::{debug, error, info, warn};

use crate::broker::{Broker, Outbox, ShardMessage};

use crate::config::Config;
use crate::conn::{ConnId, Droppable, Transport};
use crate::metrics::{Metrics, ShardFigures, SlowConsumerCounts};
use crate::net::connection::{CloseCause, Connection, Phase};
use crate::net::listener::ListenerKind;
use crate::net::send_queue::{Outgoing, SendPool};
use crate::net::sys;
use crate::net::uring::{self, BufRing, Ring, RingUnavailable};
use crate::protocol::mqtt::DecodeLimits;
use crate::protocol::ws::frame::FrameLimits;
use crate::slots::Slots;
use ingest::{Flow, Ingest, ingest, ingest_pending};
use mailbox::{Handoff, Mailboxes};

/// How often the broker's clock-driven work runs: keep-alive, connect and handshake deadlines.
const TICK: Duration = Duration::from_millis(100);
/// Completions handled per loop turn before the outbox is carried out, so sends start
/// promptly under a flood of receives.
const COMPLETIONS_PER_TURN_MAX: usize = 4096;
/// Messages taken from each other shard per turn: bounds one turn's work.
const REMOTE_MESSAGES_PER_TURN_MAX: usize = 4096;
/// How long a closing connection may take to send what was queued for it before it is cut.
const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// How long a graceful stop waits for connections to close.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// The buffer group of the shard's receive buffers.
const RECV_BUFFER_GROUP: u16 = 0;
/// Submission queue entries: a turn's sends and re-arms are pushed in batches this large.
const RING_ENTRIES: u32 = 4096;

pub struct ShardSetup {
    pub id: usize,
    pub config: Arc<Config>,
    pub mailboxes: Arc<Mailboxes>,
    pub stop: Arc<AtomicBool>,
    pub listeners: Vec<(ListenerKind, TcpListener)>,
    pub metrics: Arc<Metrics>,
}

struct Listener {
    kind: ListenerKind,
    socket: TcpListener,
    armed: bool,
    /// After EMFILE and the like: accepting resumes at this time, the listener keeps listening.
    retry_at: Option<Instant>,
}

/// Starts the shard's thread. `ready` receives `Ok` once its ring is set up, or why not.
pub fn spawn(
    setup: ShardSetup,
    ready: std::sync::mpsc::Sender<Result<(), RingUnavailable>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("shard-{}", setup.id))
        .spawn(move || {
            // Shard i takes the i-th core the process may use, so `taskset -c 1 fanfare`
            // runs shard 0 on core 1.
            let cores = sys::allowed_cores().unwrap_or_default();
            let core = match cores.len() {
                0 => setup.id,
                len => cores[setup.id % len],
            };
            if let Err(e) = sys::pin_to_core(core) {
                warn!("shard {}: cannot pin to core {core}: {e}", setup.id);
            }
            match Shard::new(setup) {
                Ok(mut shard) => {
                    let _ = ready.send(Ok(()));
                    shard.run();
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
        })
}

struct Shard {
    // Field order is drop order: the ring goes before the buffer memory it points at.
    ring: Ring,
    buf_ring: BufRing,
    /// Size of the ring's fixed-file table (0: none); connection `i` uses slot `i`.
    fixed_files: u32,
    id: usize,
    config: Arc<Config>,
    decode_limits: DecodeLimits,
    frame_limits: FrameLimits,
    mailboxes: Arc<Mailboxes>,
    stop: Arc<AtomicBool>,
    listeners: Vec<Listener>,
    conns: Slots<ConnId, Connection>,
    /// Buffers of the sends in flight, reused so sending allocates nothing once warm.
    send_pool: SendPool,
    /// What the slow consumer policies did, since start.
    slow: SlowConsumerCounts,
    /// Where this shard's figures go once a tick, for `GET /metrics`.
    metrics: Arc<Metrics>,
    broker: Broker,
    outbox: Outbox,
    /// Connections with bytes newly queued this turn.
    dirty: Vec<ConnId>,
    /// Connections closing or handing off, checked each turn until they are done.
    finishing: Vec<ConnId>,
    /// Closes decided by the network layer this turn, carried out after the outbox's sends.
    pending_closes: Vec<(ConnId, CloseCause)>,
    /// Connections whose multishot receive ended and must be armed again.
    rearm: Vec<ConnId>,
    handshake_deadlines: VecDeque<(Instant, ConnId)>,
    connect_deadlines: VecDeque<(Instant, ConnId)>,
    /// Messages for other shards that met a full queue, kept in order per target.
    backlog: Vec<VecDeque<ShardMessage>>,
    wake: Vec<bool>,
    wake_buf: Box<[u8; 8]>,
    wake_fd: i32,
    completions: Vec<cqueue::Entry>,
    next_tick: Instant,
    stop_deadline: Option<Instant>,
    /// Work left over from a bounded step: the next wait must not block.
    busy: bool,
}

/// The `Ingest` context of connection `id`, built from the shard's fields one by one so it can
/// coexist with borrows of the connection table and the buffer ring (a `&mut self` method could
/// not).
/// An operation on a connection's socket, built with the socket named by its fixed-file slot
/// when it has one (the kernel then skips the file lookup), by its descriptor otherwise.
macro_rules! on_socket {
    ($conn:expr, $id:expr, |$socket:ident| $build:expr) => {
        if $conn.fixed {
            // A fixed connection's index is below the table size, a u32.
            let $socket = types::Fixed($id.index() as u32);
            $build
        } else {
            let $socket = types::Fd($conn.fd.as_raw_fd());
            $build
        }
    };
}

macro_rules! ingest_context {
    ($shard:ident, $id:expr, $now:expr) => {
        Ingest {
            id: $id,
            shard: $shard.id,
            shard_count: $shard.mailboxes.shard_count(),
            broker: &mut $shard.broker,
            out: &mut $shard.outbox,
            config: &$shard.config,
            decode_limits: &$shard.decode_limits,
            frame_limits: &$shard.frame_limits,
            metrics: &$shard.metrics,
            now: $now,
        }
    };
}

impl Shard {
    fn new(setup: ShardSetup) -> Result<Shard, RingUnavailable> {
        let config = setup.config;
        let ring = Ring::new(RING_ENTRIES)?;
        let buf_ring = BufRing::new(
            &ring,
            RECV_BUFFER_GROUP,
            config.recv_buffers_per_shard,
            config.recv_buffer_bytes as usize,
        )?;
        let fixed_files = register_fixed_files(&ring, config.limits.connections_per_shard_max);
        if setup.id == 0 {
            info!(
                "io_uring ready: multishot accept and receive, provided buffers ({} x {} B per shard), single issuer: {}, deferred task run: {}, fixed files: {}",
                config.recv_buffers_per_shard,
                config.recv_buffer_bytes,
                ring.features.single_issuer,
                ring.features.defer_taskrun,
                fixed_files
            );
        }
        let shard_count = setup.mailboxes.shard_count();
        let limits = &config.limits;
        Ok(Shard {
            buf_ring,
            fixed_files,
            id: setup.id,
            decode_limits: limits.decode_limits(),
            frame_limits: limits.frame_limits(),
            wake_fd: setup.mailboxes.wake_fd(setup.id),
            mailboxes: setup.mailboxes,
            stop: setup.stop,
            listeners: setup
                .listeners
                .into_iter()
                .map(|(kind, socket)| Listener {
                    kind,
                    socket,
                    armed: false,
                    retry_at: None,
                })
                .collect(),
            conns: Slots::default(),
            send_pool: SendPool::default(),
            slow: SlowConsumerCounts::default(),
            metrics: setup.metrics,
            broker: {
                let mut broker =
                    Broker::new(setup.id, shard_count, config.limits.clone(), Instant::now());
                broker.set_topic_policies(&config.policies);
                broker
            },
            outbox: Outbox::default(),
            dirty: Vec::new(),
            finishing: Vec::new(),
            pending_closes: Vec::new(),
            rearm: Vec::new(),
            handshake_deadlines: VecDeque::new(),
            connect_deadlines: VecDeque::new(),
            backlog: (0..shard_count).map(|_| VecDeque::new()).collect(),
            wake: vec![false; shard_count],
            wake_buf: Box::new([0; 8]),
            completions: Vec::with_capacity(COMPLETIONS_PER_TURN_MAX),
            next_tick: Instant::now() + TICK,
            stop_deadline: None,
            busy: false,
            config,
            ring,
        })
    }

    fn run(&mut self) {
        for index in 0..self.listeners.len() {
            self.arm_accept(index);
        }
        self.arm_wake();
        loop {
            let now = Instant::now();
            let wait = if self.busy {
                Duration::ZERO
            } else {
                self.next_tick.saturating_duration_since(now)
            };
            self.busy = false;
            if let Err(e) = self.ring.submit_and_wait(wait) {
                warn!("shard {}: io_uring wait failed: {e}", self.id);
            }
            let now = Instant::now();
            self.handle_completions(now);
            self.take_handoffs(now);
            self.take_remote_messages(now);
            if now >= self.next_tick {
                self.tick(now);
            }
            if self.stop.load(Ordering::Acquire) && self.stop_deadline.is_none() {
                self.begin_stop(now);
            }
            if self.broker.continue_fanout(now, &mut self.outbox) {
                self.busy = true;
            }
            self.carry_out_outbox(now);
            self.post_to_other_shards();
            self.start_sends();
            self.finish_closes(now);
            self.rearm_receives();
            self.wake_other_shards();
            if self
                .stop_deadline
                .is_some_and(|deadline| self.conns.is_empty() || now >= deadline)
            {
                break;
            }
        }
        let _ = self.ring.submit_and_wait(Duration::ZERO);
        uring::unregister(&self.ring, &self.buf_ring);
        let slow = self.slow;
        info!(
            "shard {} stopped; slow consumers: {} publishes dropped (newest), {} dropped (oldest), {} conflated, {} connections closed",
            self.id, slow.dropped_newest, slow.dropped_oldest, slow.conflated, slow.disconnected
        );
    }

    fn push(&mut self, entry: io_uring::squeue::Entry) {
        // SAFETY (of the callers' entries): every entry built in this module points only at
        // memory that outlives its operation: boxed msghdrs owned by the connection's send
        // queue until the send completes, the boxed eventfd buffer owned by the shard, and the
        // buffer ring, which the shard drops after the ring.
        #[allow(unsafe_code)]
        let pushed = unsafe { self.ring.push(&entry) };
        if let Err(e) = pushed {
            warn!("shard {}: cannot submit to io_uring: {e}", self.id);
        }
    }

    fn arm_accept(&mut self, index: usize) {
        let listener = &mut self.listeners[index];
        if listener.armed || self.stop_deadline.is_some() {
            return;
        }
        listener.armed = true;
        let fd = types::Fd(listener.socket.as_raw_fd());
        let entry = opcode::AcceptMulti::new(fd)
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ops::Op::Accept(index).user_data());
        self.push(entry);
    }

    fn arm_wake(&mut self) {
        let entry = opcode::Read::new(types::Fd(self.wake_fd), self.wake_buf.as_mut_ptr(), 8)
            .build()
            .user_data(ops::Op::Wake.user_data());
        self.push(entry);
    }

    fn arm_recv(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.recv_armed || conn.phase == Phase::Closing {
            return;
        }
        conn.recv_armed = true;
        let entry = on_socket!(conn, id, |socket| opcode::RecvMulti::new(
            socket,
            RECV_BUFFER_GROUP
        )
        .build())
        .user_data(ops::Op::Recv(id).user_data());
        self.push(entry);
    }

    fn handle_completions(&mut self, now: Instant) {
        let mut completions = std::mem::take(&mut self.completions);
        self.ring
            .drain_completions(&mut completions, COMPLETIONS_PER_TURN_MAX);
        if completions.len() == COMPLETIONS_PER_TURN_MAX {
            self.busy = true;
        }
        for completion in completions.drain(..) {
            let (result, flags) = (completion.result(), completion.flags());
            match ops::Op::from_user_data(completion.user_data()) {
                Some(ops::Op::Accept(index)) => self.on_accept(index, result, flags, now),
                Some(ops::Op::Recv(id)) => self.on_recv(id, result, flags, now),
                Some(ops::Op::Send(id)) => self.on_send(id, result),
                Some(ops::Op::Wake) => self.arm_wake(),
                Some(ops::Op::Cancel) | None => {}
            }
        }
        self.completions = completions;
    }

    fn on_accept(&mut self, index: usize, result: i32, flags: u32, now: Instant) {
        let listener = &mut self.listeners[index];
        if !cqueue::more(flags) {
            listener.armed = false;
        }
        let kind = listener.kind;
        if result < 0 {
            let errno = -result;
            match errno {
                libc::ECANCELED => {}
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                    warn!(
                        "shard {}: accept on {} listener failed: {}; pausing accepts for {TICK:?}",
                        self.id,
                        kind.name(),
                        std::io::Error::from_raw_os_error(errno)
                    );
                    listener.retry_at = Some(now + TICK);
                }
                // The kernel refused the operation itself, not one connection: retrying at
                // once would spin. Stop this listener on this shard and say why.
                libc::EINVAL | libc::EOPNOTSUPP => {
                    error!(
                        "shard {}: multishot accept refused by the kernel ({}); {} listener stopped on this shard",
                        self.id,
                        std::io::Error::from_raw_os_error(errno),
                        kind.name()
                    );
                    listener.retry_at = Some(now + Duration::from_secs(3600));
                }
                _ => warn!(
                    "shard {}: accept failed: {}",
                    self.id,
                    std::io::Error::from_raw_os_error(errno)
                ),
            }
        } else {
            self.accepted(sys::own(result), kind, now);
        }
        let listener = &self.listeners[index];
        if !listener.armed && listener.retry_at.is_none() {
            self.arm_accept(index);
        }
    }

    fn accepted(&mut self, fd: OwnedFd, kind: ListenerKind, now: Instant) {
        if self.conns.len() >= self.config.limits.connections_per_shard_max as usize {
            warn!(
                "shard {}: connections_per_shard_max reached; refusing a connection",
                self.id
            );
            return;
        }
        let peer = match sys::prepare_accepted(&fd, self.config.tcp_notsent_lowat_bytes) {
            Ok(peer) => peer,
            Err(e) => {
                debug!("accepted connection vanished before set-up: {e}");
                return;
            }
        };
        let transport = match kind {
            ListenerKind::Tcp => Transport::Tcp,
            ListenerKind::Ws => Transport::Ws,
        };
        let id = self.conns.insert(Connection::new(fd, peer, transport));
        self.add_fixed_file(id);
        debug!("{peer}: connected over {}", kind.name());
        let limits = &self.config.limits;
        match transport {
            Transport::Ws => {
                let timeout = Duration::from_millis(limits.ws_handshake_timeout_ms.into());
                self.handshake_deadlines.push_back((now + timeout, id));
            }
            Transport::Tcp => {
                let timeout = Duration::from_millis(limits.connect_timeout_ms.into());
                self.connect_deadlines.push_back((now + timeout, id));
            }
        }
        self.arm_recv(id);
    }

    /// Puts the connection's socket in the fixed-file table at the slot of its index, if the
    /// table has that slot; otherwise its operations name it by descriptor.
    fn add_fixed_file(&mut self, id: ConnId) {
        let Ok(slot) = u32::try_from(id.index()) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(id).filter(|_| slot < self.fixed_files) else {
            return;
        };
        match self.ring.set_fixed_file(slot, conn.fd.as_raw_fd()) {
            Ok(()) => conn.fixed = true,
            Err(e) => debug!("{}: not a fixed file: {e}", conn.peer),
        }
    }

    fn on_recv(&mut self, id: ConnId, result: i32, flags: u32, now: Instant) {
        let buffer = cqueue::buffer_select(flags);
        let Some(conn) = self.conns.get_mut(id) else {
            if let Some(buffer) = buffer {
                self.buf_ring.recycle(buffer);
            }
            return;
        };
        let more = cqueue::more(flags);
        if !more {
            conn.recv_armed = false;
        }
        if result > 0 {
            let Some(buffer) = buffer else {
                warn!("shard {}: a receive completed without a buffer", self.id);
                return;
            };
            let was_upgrading = conn.phase == Phase::WsHandshake;
            let data = self.buf_ring.buffer_mut(buffer, result as usize);
            let mut cx = ingest_context!(self, id, now);
            let flow = ingest(&mut cx, conn, data);
            let upgraded = was_upgrading && conn.phase != Phase::WsHandshake;
            // A multishot receive that ended is armed again only while this shard still reads
            // the connection: not once it is closing or moving to another shard.
            let still_reading = !more
                && matches!(
                    conn.phase,
                    Phase::WsHandshake | Phase::AwaitConnect | Phase::Connected(_)
                );
            self.buf_ring.recycle(buffer);
            if upgraded {
                let timeout = Duration::from_millis(self.config.limits.connect_timeout_ms.into());
                self.connect_deadlines.push_back((now + timeout, id));
            }
            self.after_flow(id, flow);
            if still_reading {
                self.rearm.push(id);
            }
            return;
        }
        if result == 0 {
            self.pending_closes.push((id, CloseCause::PeerClosed));
            return;
        }
        match -result {
            // The ring ran out of buffers: they come back as this turn's data is handled.
            libc::ENOBUFS if !matches!(conn.phase, Phase::Closing | Phase::HandingOff(_)) => {
                self.rearm.push(id)
            }
            libc::ENOBUFS => self.finishing.push(id),
            libc::ECANCELED => self.finishing.push(id),
            errno => self
                .pending_closes
                .push((id, CloseCause::NetworkError(errno))),
        }
    }

    fn after_flow(&mut self, id: ConnId, flow: Flow) {
        match flow {
            Flow::Continue => {}
            Flow::Close(cause) => self.pending_closes.push((id, cause)),
            Flow::HandOff(_) => {
                self.cancel_recv(id);
                self.finishing.push(id);
            }
        }
    }

    fn on_send(&mut self, id: ConnId, result: i32) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if result < 0 {
            conn.out.fail_send(&mut self.send_pool);
            if conn.phase != Phase::Closing {
                self.pending_closes
                    .push((id, CloseCause::NetworkError(-result)));
            }
            return;
        }
        conn.out.complete_send(result as usize, &mut self.send_pool);
        if !conn.out.is_empty() {
            self.dirty.push(id);
        }
    }

    fn cancel_recv(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if !conn.recv_armed || conn.recv_cancel_sent {
            return;
        }
        conn.recv_cancel_sent = true;
        let entry = opcode::AsyncCancel::new(ops::Op::Recv(id).user_data())
            .build()
            .user_data(ops::Op::Cancel.user_data());
        self.push(entry);
    }

    fn take_handoffs(&mut self, now: Instant) {
        while let Some(handoff) = self.mailboxes.take_handoff(self.id) {
            self.adopt(handoff, now);
        }
    }

    /// Takes over a connection another shard accepted, and reads its CONNECT here.
    fn adopt(&mut self, handoff: Handoff, now: Instant) {
        let mut conn = Connection::new(handoff.fd, handoff.peer, handoff.transport);
        conn.phase = Phase::AwaitConnect;
        conn.ws = handoff.ws;
        conn.spill = handoff.pending;
        let id = self.conns.insert(conn);
        self.add_fixed_file(id);
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let mut cx = ingest_context!(self, id, now);
        let flow = ingest_pending(&mut cx, conn);
        if conn.phase == Phase::AwaitConnect {
            let timeout = Duration::from_millis(self.config.limits.connect_timeout_ms.into());
            self.connect_deadlines.push_back((now + timeout, id));
        }
        self.after_flow(id, flow);
        self.arm_recv(id);
    }

    fn take_remote_messages(&mut self, now: Instant) {
        let shard_count = self.mailboxes.shard_count();
        for from in (0..shard_count).filter(|&from| from != self.id) {
            for taken in 0..REMOTE_MESSAGES_PER_TURN_MAX {
                let Some(message) = self.mailboxes.take(from, self.id) else {
                    break;
                };
                if self.stop_deadline.is_none() {
                    self.broker.shard_message(message, now, &mut self.outbox);
                }
                if taken + 1 == REMOTE_MESSAGES_PER_TURN_MAX {
                    self.busy = true;
                }
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        self.next_tick = now + TICK;
        self.send_pool.trim();
        let figures = ShardFigures::new(self.conns.len(), &self.broker.stats(), &self.slow);
        self.metrics.publish(self.id, &figures);
        self.broker.tick(now, &mut self.outbox);
        expire(
            &mut self.handshake_deadlines,
            &self.conns,
            Phase::WsHandshake,
            CloseCause::HandshakeTimeout,
            now,
            &mut self.pending_closes,
        );
        expire(
            &mut self.connect_deadlines,
            &self.conns,
            Phase::AwaitConnect,
            CloseCause::ConnectTimeout,
            now,
            &mut self.pending_closes,
        );
        for index in 0..self.listeners.len() {
            if self.listeners[index].retry_at.is_some_and(|at| at <= now) {
                self.listeners[index].retry_at = None;
                self.arm_accept(index);
            }
        }
    }

    fn begin_stop(&mut self, now: Instant) {
        self.stop_deadline = Some(now + STOP_GRACE);
        for index in 0..self.listeners.len() {
            let entry = opcode::AsyncCancel::new(ops::Op::Accept(index).user_data())
                .build()
                .user_data(ops::Op::Cancel.user_data());
            self.push(entry);
        }
        self.broker.shutdown(&mut self.outbox);
        for id in self.conns.keys().collect::<Vec<_>>() {
            if self
                .conns
                .get(id)
                .is_some_and(|conn| !matches!(conn.phase, Phase::Connected(_)))
            {
                self.pending_closes.push((id, CloseCause::Shutdown));
            }
        }
    }

    fn carry_out_outbox(&mut self, now: Instant) {
        let queue_bytes_max = self.config.limits.queue_bytes_max;
        let mut sends = std::mem::take(&mut self.outbox.sends);
        for (id, chunk, droppable) in sends.drain(..) {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            if conn.sealed {
                continue;
            }
            let policy = self.config.slow_consumer(conn.transport);
            let pushed = conn.out.push(
                chunk,
                droppable,
                queue_bytes_max,
                policy,
                &mut self.send_pool,
            );
            if pushed.queued {
                self.dirty.push(id);
            }
            if pushed.overflow {
                // Counted when the close begins: several chunks of one turn may overflow.
                self.pending_closes
                    .push((id, CloseCause::SendQueueOverflow));
                continue;
            }
            let lost =
                pushed.dropped_oldest + pushed.conflated + u32::from(pushed.dropped_newest());
            if lost > 0 {
                self.slow.dropped_oldest += u64::from(pushed.dropped_oldest);
                self.slow.conflated += u64::from(pushed.conflated);
                self.slow.dropped_newest += u64::from(pushed.dropped_newest());
                if conn.dropped_publishes == 0 {
                    let policy = match droppable {
                        Droppable::Yes { on_full, .. } => on_full.unwrap_or(policy),
                        Droppable::No => policy,
                    };
                    info!(
                        "{}: reads too slowly; QoS 0 publishes past queue_bytes_max are handled by policy {}",
                        conn.peer,
                        policy.name()
                    );
                }
                conn.dropped_publishes += u64::from(lost);
            }
        }
        self.outbox.sends = sends;
        let mut closes = std::mem::take(&mut self.outbox.closes);
        for (id, reason) in closes.drain(..) {
            self.begin_close(id, CloseCause::Broker(reason), now);
        }
        self.outbox.closes = closes;
        let mut pending = std::mem::take(&mut self.pending_closes);
        for (id, cause) in pending.drain(..) {
            self.begin_close(id, cause, now);
        }
        self.pending_closes = pending;
    }

    fn post_to_other_shards(&mut self) {
        let shard_count = self.mailboxes.shard_count();
        // Shared subscription messages first: a member joins before its publishes arrive.
        for (target, message) in self.outbox.to_shard.drain(..) {
            self.backlog[target].push_back(message);
        }
        for message in self.outbox.to_other_shards.drain(..) {
            for target in (0..shard_count).filter(|&target| target != self.id) {
                self.backlog[target].push_back(ShardMessage::Publish(message.clone()));
            }
        }
        for target in 0..shard_count {
            while let Some(message) = self.backlog[target].pop_front() {
                match self.mailboxes.post(self.id, target, message) {
                    Ok(()) => self.wake[target] = true,
                    Err(message) => {
                        // Full: keep it first in line and try again next turn.
                        self.backlog[target].push_front(message);
                        self.wake[target] = true;
                        self.busy = true;
                        break;
                    }
                }
            }
        }
    }

    fn start_sends(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for id in dirty.drain(..) {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            let Some(outgoing) = conn.out.start_send(&mut self.send_pool) else {
                continue;
            };
            let flags = libc::MSG_NOSIGNAL;
            let entry = match outgoing {
                Outgoing::Contiguous(bytes, len) => {
                    // A run longer than u32::MAX is sent in part; the completion says how much.
                    let len = u32::try_from(len).unwrap_or(u32::MAX);
                    on_socket!(conn, id, |socket| opcode::Send::new(socket, bytes, len)
                        .flags(flags)
                        .build())
                }
                Outgoing::Gathered(msg) => {
                    on_socket!(conn, id, |socket| opcode::SendMsg::new(socket, msg)
                        .flags(flags as u32)
                        .build())
                }
            }
            .user_data(ops::Op::Send(id).user_data());
            self.push(entry);
        }
        self.dirty = dirty;
    }

    fn rearm_receives(&mut self) {
        let mut rearm = std::mem::take(&mut self.rearm);
        for id in rearm.drain(..) {
            self.arm_recv(id);
        }
        self.rearm = rearm;
    }

    fn wake_other_shards(&mut self) {
        for target in 0..self.wake.len() {
            if std::mem::take(&mut self.wake[target]) {
                self.mailboxes.wake(target);
            }
        }
    }
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

/// Closes the connections whose deadline in `deadlines` has passed while they are still in
/// `phase`. Deadlines of one kind share one timeout, so the queue is in deadline order.
fn expire(
    deadlines: &mut VecDeque<(Instant, ConnId)>,
    conns: &Slots<ConnId, Connection>,
    phase: Phase,
    cause: CloseCause,
    now: Instant,
    closes: &mut Vec<(ConnId, CloseCause)>,
) {
    while let Some(&(deadline, id)) = deadlines.front() {
        if deadline > now {
            break;
        }
        deadlines.pop_front();
        if conns.get(id).is_some_and(|conn| conn.phase == phase) {
            closes.push((id, cause));
        }
    }
}
