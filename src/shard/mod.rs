//! Thread-per-core: one shard per core, each with its own ring, connections and broker.
//!
//! The shard keeps the loop and the policy; `net/` does the I/O. One loop turn, in order:
//! 1. wait for completions or the next tick (`Shard::run`);
//! 2. take in what happened on the sockets: accepts, received bytes (decoded and handed to the
//!    broker), sends completed, receives ended (`connection_io.rs`);
//! 3. take in connections handed over and messages posted by other shards (`mailbox.rs`),
//!    answer the operations listener's questions (`admin_requests.rs`), and in cluster mode
//!    take the messages from other nodes (`cluster.rs`);
//! 4. on a tick, the clock's work: keep-alive, handshake and CONNECT deadlines, metrics, and
//!    on shard 0 the `$SYS` topics (`sys_topics.rs`);
//!    After a takeover (`fanfare --takeover`), the connections due to end by now in the
//!    drain (`drain.rs`);
//! 5. let the broker continue a fan-out sliced over turns;
//! 6. carry out the broker's outbox: queue bytes on connections, begin closes
//!    (`carry_out.rs`), post to other shards (`mailbox.rs`) and, in cluster mode, to the
//!    other nodes (`cluster.rs`);
//! 7. start one send per connection with bytes queued, finish closes whose operations ended
//!    (`close.rs`), arm receives again, and wake each other shard at most once.

mod address_book;
mod admin_requests;
mod auth_gate;
mod bridges;
pub mod byte_queue;
mod carry_out;
mod close;
mod cluster;
mod connection_io;
pub mod deadlines;
mod drain;
mod durable_sends;
mod heartbeat;
mod ingest;
pub mod mailbox;
mod peer;
mod persist;
mod publish_rate;
mod sys_topics;
pub mod verifier;

use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::admin::shards::ShardRequests;
use crate::auth::SharedPolicy;
use crate::bridge::BridgeLink;
use crate::broker::message_ids::SentWindow;
use crate::broker::{Broker, Outbox};
use crate::cluster::ClusterLink;
use crate::config::{Config, SharedConfig};
use crate::conn::ConnId;
use crate::metrics::{LoopCounts, Metrics, ShardFigures, SlowConsumerCounts};
use crate::net::io::{Event, Io, IoSetup};
use crate::net::ktls::KtlsSupport;
use crate::net::listener::ListenerKind;
use crate::net::{RingUnavailable, allocator, sys};
use crate::tls::SharedTls;
pub use address_book::AddressBook;
use auth_gate::AuthGate;
use deadlines::Deadlines;
pub use heartbeat::{Heartbeats, Watch};
use mailbox::{CrossShard, Mailboxes};
use peer::{CloseCause, Peer, WireLimits};
pub use persist::ShardStore;
use publish_rate::Throttled;
use sys_topics::SysTopics;
use verifier::Verifiers;

/// How often the broker's clock-driven work runs: keep-alive, connect and handshake deadlines.
const TICK: Duration = Duration::from_millis(100);
/// Completions handled per loop turn before the outbox is carried out, so sends start
/// promptly under a flood of receives.
const COMPLETIONS_PER_TURN_MAX: usize = 4096;
/// How long a closing connection may take to send what was queued for it before it is cut.
const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// How often the shard has the allocator take back what other shards freed of its memory and
/// return empty pages (`allocator::collect_free_memory`): often enough that RSS follows the load
/// within seconds, rarely enough that its cost (a walk over the heap's pages) is nothing.
const COLLECT_EVERY: Duration = Duration::from_secs(1);
/// How long a graceful stop waits for connections to close.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Submission queue entries: a turn's sends and re-arms are pushed in batches this large.
const RING_ENTRIES: u32 = 4096;

/// What every shard shares of authentication: the policy (replaced on SIGHUP, `generation`
/// bumped after) and the password verifiers.
#[derive(Clone)]
pub struct AuthSetup {
    /// Connections and connects per client address, counted across shards.
    pub addresses: Arc<AddressBook>,
    pub policy: Arc<SharedPolicy>,
    pub generation: Arc<AtomicU64>,
    pub verifiers: Arc<Verifiers>,
}

pub struct ShardSetup {
    pub id: usize,
    pub auth: AuthSetup,
    /// The configuration in force; a SIGHUP may replace its live keys.
    pub config: Arc<SharedConfig>,
    pub mailboxes: Arc<Mailboxes>,
    pub stop: Arc<AtomicBool>,
    /// Set once a successor serves on this broker's listening sockets: drain, then stop.
    pub drain: Arc<AtomicBool>,
    pub listeners: Vec<(ListenerKind, TcpListener)>,
    pub metrics: Arc<Metrics>,
    /// Where the shard counts its ticks, for the service manager's watchdog.
    pub heartbeats: Arc<Heartbeats>,
    /// The certificates of the TLS listeners, replaced on SIGHUP; `None` without them.
    pub tls: Option<Arc<SharedTls>>,
    /// The suites whose keys go to the kernel after the handshake (`[tls] ktls` and the
    /// start-up probe); `None`: TLS stays in user space.
    pub kernel_tls: Option<KtlsSupport>,
    /// The operations listener's questions to the shards; `None` with `admin = "off"`.
    pub admin: Option<Arc<ShardRequests>>,
    /// With a data directory: the store's queue and what it loaded.
    pub store: Option<ShardStore>,
    /// In cluster mode: the queues to and from the NATS bridge.
    pub cluster: Option<Arc<ClusterLink>>,
    /// The queues to and from each `[[bridge]]` (`crate::bridge`); empty without bridges.
    pub bridges: Vec<Arc<BridgeLink>>,
}

struct Listener {
    kind: ListenerKind,
    /// `None` once a drain closed this process's copy (the successor's stays open).
    socket: Option<TcpListener>,
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
            // What a shard builds at start lives as long as it: kept apart from the pages
            // that bursts of messages fill (`net::allocator`).
            match allocator::long_lived(|| Shard::new(setup)) {
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
    /// The shard's sockets and ring, each connection with its [`Peer`] state.
    io: Io<Peer>,
    id: usize,
    config: Arc<Config>,
    /// Where a reloaded configuration comes from, and the generation `config` is of.
    live_config: Arc<SharedConfig>,
    config_generation: u64,
    /// The decoding bounds of `config`, which each connection takes at accept and at CONNECT.
    wire_limits: Rc<WireLimits>,
    mailboxes: Arc<Mailboxes>,
    /// What this shard posts to the others, and what waits for room in their queues.
    cross_shard: CrossShard,
    stop: Arc<AtomicBool>,
    drain_asked: Arc<AtomicBool>,
    /// The drain under way, once `drain_asked` was seen.
    drain: Option<drain::Drain>,
    listeners: Vec<Listener>,
    /// What the slow consumer policies did, since start.
    slow: SlowConsumerCounts,
    /// Where this shard's figures go once a tick, for `GET /metrics` and the `$SYS` topics.
    metrics: Arc<Metrics>,
    /// Shard 0's schedule of the `$SYS` topics; `None` on the others, or with
    /// `sys_interval_s = 0`.
    sys_topics: Option<SysTopics>,
    /// Counted once a tick: the watchdog's sign that this loop turns.
    heartbeats: Arc<Heartbeats>,
    tls: Option<Arc<SharedTls>>,
    /// Where the operations listener's questions wait (`admin_requests.rs`).
    admin: Option<Arc<ShardRequests>>,
    /// Judges CONNECTs' credentials (`auth_gate.rs`).
    auth: AuthGate,
    addresses: Arc<AddressBook>,
    /// Connections refused by the per-address limits, since start; and since the last log
    /// line about them.
    address_refusals: u64,
    address_refusals_unlogged: u64,
    /// Connections paused for publishing past their rate (`publish_rate.rs`).
    throttled: Throttled,
    /// Connections lingering in their close now (`close.rs`), and since start.
    lingering: u32,
    lingering_closes: u64,
    /// TLS connections that failed (handshake or record), since start.
    tls_failures: u64,
    /// Connections closed for their first bytes on a listener with the PROXY protocol on.
    proxy_refusals: u64,
    broker: Broker,
    /// With a data directory: when and where retained and session changes go (`persist.rs`).
    persist: Option<persist::Persist>,
    outbox: Outbox,
    events: Vec<Event>,
    /// Connections closing or handing off, checked each turn until they are done.
    finishing: Vec<ConnId>,
    /// Closes decided by the network layer this turn, carried out after the outbox's sends.
    pending_closes: Vec<(ConnId, CloseCause)>,
    /// Connections whose multishot receive ended and must be armed again.
    rearm: Vec<ConnId>,
    deadlines: Deadlines,
    next_tick: Instant,
    next_collect: Instant,
    stop_deadline: Option<Instant>,
    /// Work left over from a bounded step: the next wait must not block.
    busy: bool,
    /// In cluster mode: the queues to and from the NATS bridge (`cluster.rs`).
    cluster: Option<Arc<ClusterLink>>,
    /// The turn's interest changes on their way to the bridge; empty between turns.
    interest_changes: Vec<crate::cluster::link::InterestChange>,
    /// Cluster mode: when this shard last announced each client id, to ignore older
    /// announcements from other nodes (`crate::cluster::client_ids`).
    announced: crate::cluster::client_ids::Announced,
    /// Retained messages from the cluster's stream that did not fit the replica's bounds.
    retained_from_cluster_rejected: u64,
    /// Cluster mode without a data directory: when the persistent sessions that changed next
    /// go to the cluster's bucket (with one, they go with the store's flushes).
    next_session_sync: Instant,
    /// Cluster mode under `sync`: flushes whose images the bridge's queue had no room for
    /// (`cluster.rs`).
    bucket_gate: cluster::BucketGate,
    /// The queues to and from each bridge (`bridges.rs`).
    bridges: Vec<Arc<BridgeLink>>,
    /// On the intake shard: each bridge's state as last published to `$SYS`; `None` before
    /// the first.
    bridge_states: Vec<Option<bool>>,
    /// Which bridges refuse for a full queue, one bit each, as last told to the broker.
    bridges_refusing: u64,
}

/// The `Ingest` context of connection `id`, built from the shard's fields one by one so it can
/// coexist with a borrow of the shard's I/O (a `&mut self` method could not).
macro_rules! ingest_context {
    ($shard:ident, $id:expr, $now:expr) => {
        $crate::shard::ingest::Ingest {
            id: $id,
            shard: $shard.id,
            shard_count: $shard.mailboxes.shard_count(),
            broker: &mut $shard.broker,
            out: &mut $shard.outbox,
            config: &$shard.config,
            wire_limits: &$shard.wire_limits,
            metrics: &$shard.metrics,
            auth: &mut $shard.auth,
            addresses: &$shard.addresses,
            now: $now,
        }
    };
}
use ingest_context;

impl Shard {
    fn new(setup: ShardSetup) -> Result<Shard, RingUnavailable> {
        let live_config = setup.config;
        let (config_generation, config) = live_config.current();
        let limits = &config.limits;
        let io = Io::new(IoSetup {
            ring_entries: RING_ENTRIES,
            recv_buffers: config.recv_buffers_per_shard,
            recv_buffer_bytes: config.recv_buffer_bytes as usize,
            fixed_files_max: limits.connections_per_shard_max,
            kernel_tls: setup.kernel_tls,
        })?;
        if setup.id == 0 {
            let features = io.features();
            info!(
                "io_uring ready: multishot accept and receive, provided buffers ({} x {} B per shard), single issuer: {}, deferred task run: {}, fixed files: {}",
                config.recv_buffers_per_shard,
                config.recv_buffer_bytes,
                features.ring.single_issuer,
                features.ring.defer_taskrun,
                features.fixed_files
            );
        }
        let now = Instant::now();
        let shard_count = setup.mailboxes.shard_count();
        let mut broker = Broker::new(setup.id, shard_count, limits.clone(), now);
        broker.set_topic_policies(&config.policies);
        broker.set_response_topic_prefix(&config.response_topic_prefix);
        if setup.cluster.is_some() {
            broker.join_cluster();
            broker.hold_acks_for_cluster();
            if let Some(link) = &setup.cluster {
                broker.share_delivered_ids(Arc::clone(&link.delivered_ids));
            }
            broker.remember_sent(SentWindow {
                margin: Duration::from_millis(config.cluster.session_replay_margin_ms.into()),
                max: config.cluster.session_sent_ids_max,
            });
        }
        if !setup.bridges.is_empty() {
            broker.forward_out();
            let crossings = setup.bridges.iter().map(|link| Arc::clone(&link.crossings));
            broker.set_crossings(crossings.collect());
        }
        let addresses = Arc::clone(&setup.auth.addresses);
        let auth = AuthGate::new(
            setup.id,
            setup.auth.policy,
            setup.auth.generation,
            setup.auth.verifiers,
            config.auth.verified_cache_entries_max,
            Duration::from_secs(config.auth.verified_cache_ttl_s),
            config.auth.verify_queue_max,
        );
        let mut outbox = Outbox::default();
        let in_cluster = setup.cluster.is_some();
        let persist = setup.store.map(|mut store| {
            // In cluster mode the JetStream stream is the source of truth for retained
            // messages: the replica is loaded from it (`crate::cluster::retained`), and a
            // value the disk still holds may have been cleared on another node meanwhile.
            if !in_cluster {
                broker.load_retained(&store.loaded);
            }
            broker.keep_retained_writes();
            // Noted from the start: sessions loaded past the offline bound end, and are
            // written as ended.
            broker.keep_session_writes();
            let sessions = std::mem::take(&mut store.sessions);
            let ended = broker.load_sessions(&sessions, now, &mut outbox);
            if let Some(link) = &setup.cluster {
                // One may have moved to another node while this one was down (`cluster.rs`).
                for image in &sessions {
                    link.loaded_session(image.client_id.clone());
                }
                link.pipes.wake_remote();
            }
            if ended > 0 {
                warn!(
                    "shard {}: {ended} of the {} sessions loaded ended, the longest offline first: past offline_sessions_per_shard_max ({})",
                    setup.id,
                    sessions.len(),
                    limits.offline_sessions_per_shard_max
                );
            }
            if store.durability == crate::config::Durability::Sync {
                broker.hold_acks_until_durable();
            }
            persist::Persist::new(store, now)
        });
        if in_cluster && persist.is_none() {
            // The cluster's bucket takes the images the store would (`cluster.rs`).
            broker.keep_session_writes();
        }
        broker.set_policy(Some(Arc::clone(auth.policy())), &mut outbox);
        Ok(Shard {
            io,
            id: setup.id,
            wire_limits: Rc::new(WireLimits::new(limits)),
            cross_shard: CrossShard::new(
                setup.id,
                shard_count,
                limits.cross_shard_backlog_bytes_max,
            ),
            mailboxes: setup.mailboxes,
            stop: setup.stop,
            drain_asked: setup.drain,
            drain: None,
            listeners: setup
                .listeners
                .into_iter()
                .map(|(kind, socket)| Listener {
                    kind,
                    socket: Some(socket),
                    armed: false,
                    retry_at: None,
                })
                .collect(),
            slow: SlowConsumerCounts::default(),
            metrics: setup.metrics,
            sys_topics: (setup.id == 0 && config.sys_interval_s > 0)
                .then(|| SysTopics::new(Duration::from_secs(config.sys_interval_s.into()), now)),
            heartbeats: setup.heartbeats,
            tls: setup.tls,
            admin: setup.admin,
            auth,
            addresses,
            address_refusals: 0,
            address_refusals_unlogged: 0,
            throttled: Throttled::default(),
            lingering: 0,
            lingering_closes: 0,
            tls_failures: 0,
            proxy_refusals: 0,
            broker,
            persist,
            outbox,
            events: Vec::new(),
            finishing: Vec::new(),
            pending_closes: Vec::new(),
            rearm: Vec::new(),
            deadlines: Deadlines::default(),
            next_tick: now + TICK,
            next_collect: now + COLLECT_EVERY,
            stop_deadline: None,
            busy: false,
            cluster: setup.cluster,
            interest_changes: Vec::new(),
            announced: Default::default(),
            retained_from_cluster_rejected: 0,
            next_session_sync: now,
            bucket_gate: Default::default(),
            bridge_states: vec![None; setup.bridges.len()],
            bridges_refusing: 0,
            bridges: setup.bridges,
            config,
            live_config,
            config_generation,
        })
    }

    fn run(&mut self) {
        for index in 0..self.listeners.len() {
            self.arm_accept(index);
        }
        self.io.arm_wake(self.mailboxes.wake_fd(self.id));
        loop {
            let now = Instant::now();
            let wake = match self.retained_flush_at() {
                Some(flush) => flush.min(self.next_tick),
                None => self.next_tick,
            };
            let wait = if self.busy {
                Duration::ZERO
            } else {
                wake.saturating_duration_since(now)
            };
            self.busy = false;
            if let Err(e) = self.io.wait(wait) {
                warn!("shard {}: io_uring wait failed: {e}", self.id);
            }
            if self.turn(Instant::now()) {
                break;
            }
        }
        self.flush_retained_at_stop();
        self.sync_sessions_at_stop();
        let slow = self.slow;
        info!(
            "shard {} stopped; slow consumers: {} publishes dropped (newest), {} dropped (oldest), {} conflated, {} connections closed",
            self.id, slow.dropped_newest, slow.dropped_oldest, slow.conflated, slow.disconnected
        );
    }

    /// One loop turn after the wait (see the module documentation); true once a stop is done.
    fn turn(&mut self, now: Instant) -> bool {
        // First: a CONNECT read this turn is judged by the policy of the moment.
        if self.auth.refresh() {
            let policy = Arc::clone(self.auth.policy());
            self.broker.set_policy(Some(policy), &mut self.outbox);
        }
        self.refresh_config();
        self.refresh_store_state();
        self.refresh_cluster_state();
        self.refresh_bridge_refusals();
        self.handle_events(now);
        self.take_handoffs(now);
        self.take_verdicts(now);
        self.take_remote_messages(now);
        self.answer_admin(now);
        self.take_from_cluster(now);
        self.take_from_bridges(now);
        if now >= self.next_tick {
            // What a tick keeps (vectors shrunk to their resting size, the `$SYS` retained
            // messages) outlives the bursts around it: allocated apart from them.
            allocator::long_lived(|| self.tick(now));
        }
        if self.drain_asked.load(Ordering::Acquire) && self.drain.is_none() {
            self.begin_drain(now);
        }
        self.continue_drain(now);
        if self.stop.load(Ordering::Acquire) && self.stop_deadline.is_none() {
            self.begin_stop(now);
        }
        if self.broker.continue_fanout(now, &mut self.outbox) {
            self.busy = true;
        }
        self.release_commits();
        self.release_held_acks(now);
        self.seal_held_acks();
        self.flush_retained(now);
        self.carry_out_outbox(now);
        self.post_to_other_shards();
        self.post_to_cluster(now);
        self.post_to_bridges();
        self.io.submit_refused();
        self.io.start_sends();
        self.finish_closes(now);
        self.rearm_receives();
        self.wake_other_shards();
        self.stop_deadline
            .is_some_and(|deadline| self.io.is_empty() || now >= deadline)
    }

    /// Takes a reloaded configuration, if there is one. Only its live keys differ from the
    /// running one ([`crate::config::Reload`]): most are read from `config` where they apply;
    /// the topic policies and limits are handed to the broker and the address book here, and
    /// the decoding bounds kept for the connections to come.
    fn refresh_config(&mut self) {
        if self.live_config.generation() == self.config_generation {
            return;
        }
        (self.config_generation, self.config) = self.live_config.current();
        let limits = &self.config.limits;
        self.broker.set_topic_policies(&self.config.policies);
        self.broker.set_limits(limits);
        // Every shard stores the same values: whichever is first, accepts after it see them.
        self.addresses.set_limits(
            limits.connections_per_ip_max,
            limits.connect_rate_per_ip_max,
        );
        let wire_limits = WireLimits::new(limits);
        if *self.wire_limits != wire_limits {
            self.wire_limits = Rc::new(wire_limits);
        }
    }

    fn tick(&mut self, now: Instant) {
        self.next_tick = now + TICK;
        self.io.trim();
        if now >= self.next_collect {
            self.next_collect = now + COLLECT_EVERY;
            self.log_address_refusals();
            self.shed_scratch();
            // Returned to the system only once the shard holds nobody: then nothing is lost
            // by unmapping, and an emptied shard goes back to its fresh size.
            allocator::collect_free_memory(self.io.is_empty());
        }
        let counts = LoopCounts {
            sockets: self.io.len(),
            submissions_refused: self.io.counts().submissions_refused,
            cross_shard_backlog_bytes: self.cross_shard.backlog_bytes(),
            receives_paused: self.cross_shard.pauses(),
            tls_failures: self.tls_failures,
            kernel_tls_handovers: self.io.counts().kernel_tls_handovers,
            kernel_tls_declined: self.io.counts().kernel_tls_declined,
            proxy_refusals: self.proxy_refusals,
            publish_rate_pauses: self.throttled.pauses,
            address_refusals: self.address_refusals,
            lingering_closes: self.lingering_closes,
            bytes_received: self.io.counts().bytes_received,
            bytes_sent: self.io.counts().bytes_sent,
            store_write_errors: self
                .persist
                .as_ref()
                .map_or(0, persist::Persist::write_errors),
            store_unwritable: self.id == 0
                && self
                    .persist
                    .as_ref()
                    .is_some_and(|persist| !persist.writable()),
        };
        let cluster = self.cluster_counts();
        let figures = ShardFigures::new(&counts, &self.broker.stats(), &self.slow, &cluster);
        self.metrics.publish(self.id, &figures);
        self.publish_sys_topics(now);
        self.heartbeats.beat(self.id);
        self.broker.tick(now, &mut self.outbox);
        self.expire_deadlines(now);
        self.resume_throttled(now);
        for index in 0..self.listeners.len() {
            if self.listeners[index].retry_at.is_some_and(|at| at <= now) {
                self.listeners[index].retry_at = None;
                self.arm_accept(index);
            }
        }
    }

    /// Gives back the room the vectors reused every turn kept from their last bursts.
    fn shed_scratch(&mut self) {
        self.outbox.shed();
        self.broker.shed_scratch();
        self.io.shed();
        for scratch in [&mut self.finishing, &mut self.rearm] {
            crate::slots::shed(scratch);
        }
        crate::slots::shed(&mut self.pending_closes);
        crate::slots::shed(&mut self.events);
    }

    fn begin_stop(&mut self, now: Instant) {
        self.stop_deadline = Some(now + STOP_GRACE);
        for index in 0..self.listeners.len() {
            self.io.cancel_accept(index);
        }
        self.broker.shutdown(&mut self.outbox);
        for id in self.io.ids() {
            if self
                .io
                .state(id)
                .is_some_and(|peer| !matches!(peer.phase, peer::Phase::Connected(_)))
            {
                self.pending_closes.push((id, CloseCause::Shutdown));
            }
        }
    }
}
