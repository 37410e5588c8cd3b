//! Sans-IO broker state of one shard: sessions, subscriptions, retained messages, QoS flows.
//!
//! Each shard owns one [`Broker`]. The network layer decodes packets and calls in with the
//! current time; the broker answers by appending to an [`Outbox`]: framed bytes per connection,
//! connections to close, and publishes every other shard must deliver too. The broker never
//! touches a socket or a clock.
//!
//! Map of this module:
//! - `connect.rs`: CONNECT, takeover, the end of a connection (wills), sessions coming and going.
//! - `inbound.rs`: every later packet of a connection: publishes, acks, (un)subscribes, pings.
//! - `fanout.rs`: one publish to every matching session of this shard, retained messages.
//! - `session.rs`, `qos_window.rs`: what a session remembers; its QoS 1/2 window and queue.
//! - `admin.rs`: what the operations listener reads of the shard, and its kick.
//! - `clients.rs`: what the broker remembers about each connection, by [`ConnId`].
//! - `topic_trie.rs`, `retained.rs`: the subscription index and the retained replica.
//! - `retained_writes.rs`: with a data directory, this shard's retained changes for the store,
//!   conflated per topic.
//! - `session_writes.rs`: with a data directory, this shard's persistent session changes for
//!   the store, conflated per session, and the sessions loaded at start-up.
//! - `keep_alive.rs`: deadlines; `publish_cache.rs`: encoding and WebSocket framing; `slab.rs`: handles.
//! - `topic_aliases.rs`: Topic Aliases both ways, and the shard's outbound alias numbers.
//! - `cluster.rs`: in cluster mode, the filters this shard holds and publishes from other nodes.
//! - `session_moves.rs`: in cluster mode, persistent sessions that move between nodes.
//! - `message_ids.rs`: in cluster mode, a QoS 1/2 publish's identity, and what a session was sent lately.
//!
//! Client identifiers are partitioned between shards by [`Broker::owner_shard`], so session
//! lookup, takeover and persistent sessions never leave a shard; only publishes cross shards,
//! as immutable [`RoutedMessage`]s.

pub mod admin;
#[doc(hidden)]
pub mod auth;
mod authorization;
pub mod bench_support;
mod client_ids;
mod clients;
mod cluster;
mod cluster_acks;
mod connect;
pub mod crossings;
mod fanout;
mod held_acks;
mod inbound;
mod keep_alive;
pub mod message_ids;
mod origins;
pub mod outbox;
mod publish_cache;
mod qos_window;
pub mod reply;
mod retained;
mod retained_writes;
mod session;
mod session_moves;
mod session_writes;
mod share_groups;
mod subscription;
mod timers;
mod topic_aliases;
mod topic_trie;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

pub use auth::{AuthDecision, AuthRequest, Authenticator};
pub use fanout::{FANOUT_GROUP_MSGS_MAX, FANOUT_PARKED_MAX, FANOUT_SESSIONS_PER_TURN_MAX};
pub use origins::Origin;
pub use outbox::*;
pub use retained_writes::RetainedWrite;
pub use session_writes::{QueuedImage, SessionImage, SessionWrite, SubscriptionImage, WillImage};
pub use share_groups::GroupMessage;

use crate::auth::Policy;
use crate::config::Limits;
use crate::conn::ConnId;
use crate::protocol::mqtt::ReasonCode;
use crate::slots::Slots;
use client_ids::ClientIds;
use clients::Clients;
use fanout::Fanout;
use held_acks::HeldAcks;
use keep_alive::{DUE_PER_TICK_MAX, Deadlines};
use retained::{RetainedStack, RetainedStore};
use retained_writes::RetainedWrites;
use session::SessionKey;
use session::{OfflineSessions, Session};
use session_writes::SessionWrites;
use share_groups::SharedGroups;
use subscription::{Grant, Matched};
use timers::{SessionTimers, TimerKind};
use topic_aliases::AliasRegistry;
use topic_trie::{MatchStack, TopicTrie};

/// Counters for logs and metrics. Gauges are current sizes; the rest count since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    pub connections: usize,
    pub sessions: usize,
    pub offline_sessions: usize,
    pub subscriptions: usize,
    pub retained: usize,
    pub retained_bytes: usize,
    pub publishes_received: u64,
    pub remote_publishes_received: u64,
    /// Publishes handed to a connection or queued for a session.
    pub deliveries: u64,
    /// QoS 1/2 messages dropped from a full session queue (`session_queue_bytes_max`).
    pub session_queue_dropped: u64,
    /// Connections closed because their QoS 1/2 window and session queue were full.
    pub slow_consumer_closes: u64,
    /// Deliveries skipped because the packet exceeded the client's MQTT 5 Maximum Packet Size.
    pub too_large_for_client: u64,
    /// Retained publishes not stored because of `retained_messages_max` or
    /// `retained_bytes_max` (still forwarded).
    pub retained_rejected: u64,
    /// Filters refused with SUBACK 0x80 because of `subscriptions_per_session_max`.
    pub subscriptions_refused: u64,
    /// Filters refused because the topic rules do not let the client read all they match.
    pub subscriptions_denied: u64,
    /// Subscriptions removed because a reloaded policy no longer allows them.
    pub subscriptions_revoked: u64,
    /// Publishes the topic rules did not let the client make (dropped, or refused with 0x87).
    pub publishes_denied: u64,
    /// QoS 1/2 publishes refused while the store could not write (0x97, or unacknowledged).
    pub publishes_refused_unwritable: u64,
    /// QoS 1/2 publishes refused for a bridge whose queue is full under `refuse`.
    pub publishes_refused_bridge_full: u64,
    /// In cluster mode: QoS 1/2 publishes refused because JetStream could not store them
    /// for the other nodes (NATS gone, the queue to it full, no answer; `cluster_acks.rs`).
    pub publishes_refused_cluster: u64,
    /// Connections ended because the token they authenticated with expired.
    pub tokens_expired: u64,
    /// MQTT 5 connections ended for publishing past their rate (`disconnect_on_rate`).
    pub rate_disconnects: u64,
    /// Offline sessions discarded because of `offline_sessions_per_shard_max`.
    pub sessions_evicted: u64,
    pub connects_refused: u64,
    pub takeovers: u64,
    pub wills_published: u64,
    pub keep_alive_timeouts: u64,
    pub protocol_violations: u64,
    /// Shared subscription deliveries a member could not take (offline, or left), given to
    /// the next member.
    pub shared_handed_back: u64,
    /// Shared subscription messages no member took (see `share_groups.rs`).
    pub shared_dropped: u64,
}

/// One shard's broker. See the module documentation.
pub struct Broker {
    shard: usize,
    shard_count: usize,
    limits: Limits,
    sessions: Slots<SessionKey, Session>,
    client_ids: ClientIds,
    clients: Clients,
    offline: OfflineSessions,
    trie: TopicTrie<Grant>,
    retained: RetainedStore,
    /// With a data directory: the retained changes of this shard's topics not yet handed to
    /// the store (`retained_writes.rs`).
    retained_writes: Option<RetainedWrites>,
    /// With a data directory or in cluster mode: the persistent sessions changed since the
    /// last hand-over to the store and the cluster's bucket (`session_writes.rs`).
    session_writes: Option<SessionWrites>,
    /// False while the store cannot write (a full disk, a write error): QoS 1/2 publishes
    /// are refused then (`inbound.rs`). Always true without a data directory.
    store_writable: bool,
    /// Under `durability = "sync"`: acknowledgements waiting until what their publishes
    /// changed is durable (`held_acks.rs`).
    held_acks: Option<HeldAcks>,
    /// Under `sync`: commits of tentative publishes for the next flush (`origins.rs`).
    commits: Vec<Arc<Origin>>,
    /// Sessions whose queue waits for a tentative publish's commit (`origins.rs`).
    waiting_for_commit: std::collections::HashSet<SessionKey>,
    /// See `Broker::set_bridge_refusals` (`cluster.rs`).
    bridge_refusals: Vec<Box<str>>,
    /// In cluster mode: acknowledgements waiting until JetStream stored their publishes for
    /// the other nodes (`cluster_acks.rs`).
    cluster_acks: Option<cluster_acks::ClusterAcks>,
    /// False while the NATS connection is down: QoS 1/2 publishes are refused then.
    cluster_writable: bool,
    /// What each bridge remembers of the messages that came over it and over a bridge
    /// connection (`crossings.rs`), shared with its thread; empty without bridges.
    crossings: Vec<std::sync::Arc<std::sync::Mutex<crossings::Crossings>>>,
    deadlines: Deadlines,
    /// Session expiry and will delay deadlines of MQTT 5 sessions.
    timers: SessionTimers,
    /// The latest time a caller gave; the clock of work carried over between turns (sliced
    /// fan-out), where it decides whether a message expired and what interval remains.
    now: Instant,
    /// MQTT 5 enhanced authentication, if one is plugged in.
    authenticator: Option<Box<dyn Authenticator>>,
    /// The topic rules, when there are any (`authorization.rs`).
    policy: Option<Arc<Policy>>,
    /// Publishes on their way to this shard's subscribers, delivered in slices per turn.
    fanout: Fanout,
    /// The shared subscription groups this shard owns.
    shared: SharedGroups,
    /// Outbound Topic Alias numbers of this shard's topics (`topic_aliases.rs`).
    aliases: AliasRegistry,
    /// Sequence number of the last fan-out, stamped on matched sessions to deliver once.
    fanout_seq: u64,
    /// Scratch buffers reused by every publish, so fan-out does not allocate once warm.
    matches: Vec<(SessionKey, Matched)>,
    match_stack: MatchStack,
    retained_stack: RetainedStack,
    /// Counter behind identifiers assigned to clients that sent an empty one.
    assigned_ids: u64,
    /// What Response Information starts with (`connect.rs`); `None`: none is offered.
    response_topic_prefix: Option<Box<str>>,
    /// Cluster mode or bridges (`cluster.rs`): publishes that enter on this node also go to
    /// `Outbox::to_remote`, for the other nodes and the bridged brokers.
    forwards_out: bool,
    /// Cluster mode (`cluster.rs`): accepted CONNECTs go to `Outbox::connected_clients`.
    announces_clients: bool,
    /// Cluster mode: the identities of the QoS 1/2 publishes that enter on this shard
    /// (`message_ids.rs`).
    message_ids: Option<message_ids::MessageIds>,
    /// Cluster mode: what a connected persistent session remembers of what it was sent
    /// (`message_ids.rs`); `None`: nothing.
    sent_window: Option<message_ids::SentWindow>,
    /// Cluster mode: the node's memory of the QoS 2 publishes with an origin it delivered,
    /// shared by its shards and its NATS thread (`message_ids.rs`).
    delivered_ids: Option<std::sync::Arc<std::sync::Mutex<message_ids::DeliveredIds>>>,
    stats: BrokerStats,
}

impl Broker {
    /// A shard's broker, starting its clock at `now`.
    pub fn new(shard: usize, shard_count: usize, limits: Limits, now: Instant) -> Broker {
        assert!(shard_count > 0, "at least one shard");
        assert!(shard < shard_count, "the shard is one of the shards");
        Broker {
            shard,
            shard_count,
            retained: RetainedStore::new(limits.retained_messages_max, limits.retained_bytes_max),
            retained_writes: None,
            session_writes: None,
            store_writable: true,
            held_acks: None,
            commits: Vec::new(),
            waiting_for_commit: std::collections::HashSet::new(),
            bridge_refusals: Vec::new(),
            cluster_acks: None,
            cluster_writable: true,
            crossings: Vec::new(),
            aliases: AliasRegistry::new(limits.topic_aliases_per_shard_max),
            limits,
            sessions: Slots::default(),
            client_ids: ClientIds::new(),
            clients: Clients::default(),
            offline: OfflineSessions::new(),
            trie: TopicTrie::new(),
            deadlines: Deadlines::default(),
            timers: SessionTimers::new(),
            now,
            authenticator: None,
            policy: None,
            fanout: Fanout::new(),
            shared: SharedGroups::new(),
            fanout_seq: 0,
            matches: Vec::new(),
            match_stack: Vec::new(),
            retained_stack: Vec::new(),
            assigned_ids: 0,
            response_topic_prefix: None,
            forwards_out: false,
            announces_clients: false,
            message_ids: None,
            sent_window: None,
            delivered_ids: None,
            stats: BrokerStats::default(),
        }
    }

    /// The shard owning the sessions of `client_id`: FNV-1a 64 of its bytes, modulo the shard
    /// count. Stable across runs and builds, so every shard and the network layer agree.
    pub fn owner_shard(client_id: &str, shard_count: usize) -> usize {
        assert!(shard_count > 0, "at least one shard");
        const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let hash = client_id.bytes().fold(OFFSET_BASIS, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        });
        (hash % shard_count as u64) as usize
    }

    /// Keep-alive enforcement: closes connections silent for 1.5 × their keep-alive
    /// [MQTT-3.1.2-24] and publishes their wills. At most `DUE_PER_TICK_MAX` deadlines are
    /// examined per call.
    pub fn tick(&mut self, now: Instant, out: &mut Outbox) {
        self.now = now;
        self.expire_sessions(now, out);
        for _ in 0..DUE_PER_TICK_MAX {
            let Some(conn) = self.deadlines.pop_due(now) else {
                break;
            };
            let Some(connection) = self.clients.get(conn) else {
                continue;
            };
            let Some(grace) = connection.keep_alive_grace() else {
                continue;
            };
            let deadline = connection.last_packet_at + grace;
            if deadline > now {
                self.deadlines.push(deadline, conn);
                continue;
            }
            self.stats.keep_alive_timeouts += 1;
            self.end_connection(conn, Some(CloseReason::KeepAliveTimeout), true, now, out);
        }
        let clients = &self.clients;
        self.deadlines
            .compact(clients.len(), |conn| clients.contains(conn));
    }

    /// Ends offline MQTT 5 sessions whose Session Expiry Interval ran out and publishes wills
    /// whose Will Delay Interval did; at most `DUE_PER_TICK_MAX` per call.
    fn expire_sessions(&mut self, now: Instant, out: &mut Outbox) {
        for _ in 0..DUE_PER_TICK_MAX {
            let Some((key, stamp, kind)) = self.timers.pop_due(now) else {
                break;
            };
            let Some(session) = self.sessions.get_mut(key) else {
                continue;
            };
            match kind {
                TimerKind::SessionExpiry if session.offline_ticket() == stamp => {
                    if let Some(will) = self.discard_session(key, out) {
                        self.publish_will(will, now, out);
                    }
                }
                TimerKind::WillDelay => {
                    if let Some(will) = session.take_delayed_will(stamp) {
                        // Written without its will, so a restart does not publish it again.
                        self.note_session(key);
                        self.publish_will(will, now, out);
                    }
                }
                TimerKind::TokenExpiry => {
                    let conn = authorization::conn_of_stamp(stamp);
                    if session.conn == Some(conn) {
                        self.stats.tokens_expired += 1;
                        let reason = CloseReason::Refused(
                            ReasonCode::MAXIMUM_CONNECT_TIME,
                            "its token expired",
                        );
                        self.end_connection(conn, Some(reason), true, now, out);
                    }
                }
                TimerKind::SessionExpiry => {}
            }
        }
        let sessions = &self.sessions;
        self.timers
            .compact(sessions.len(), |key, stamp, kind| match sessions.get(key) {
                Some(session) => match kind {
                    TimerKind::SessionExpiry => session.offline_ticket() == stamp,
                    TimerKind::WillDelay => session.will_waits_for(stamp),
                    TimerKind::TokenExpiry => {
                        session.conn == Some(authorization::conn_of_stamp(stamp))
                    }
                },
                None => false,
            });
    }

    /// Offers Response Information to MQTT 5 clients that ask for it: `prefix` followed by
    /// the client identifier (`response_topic_prefix`).
    pub fn set_response_topic_prefix(&mut self, prefix: &str) {
        self.response_topic_prefix = Some(prefix.into());
    }

    /// Plugs in MQTT 5 enhanced authentication (see [`auth`]).
    pub fn set_authenticator(&mut self, authenticator: Box<dyn Authenticator>) {
        self.authenticator = Some(authenticator);
    }

    /// Graceful shutdown: closes every connection with `ServerShutdown`.
    ///
    /// Wills are not published: they tell subscribers that a client vanished, and here the
    /// clients did nothing wrong; the broker itself is going away, so there is nobody left to
    /// deliver them to on this shard, and publishing them to other shards that are shutting
    /// down too would only race. Persistent sessions go offline as on any disconnection.
    pub fn shutdown(&mut self, out: &mut Outbox) {
        self.fanout.clear();
        let conns: Vec<ConnId> = self.clients.ids().collect();
        let now = self.now;
        for conn in conns {
            if let Some(connection) = self.clients.remove(conn) {
                reply::say_goodbye(out, conn, &connection, CloseReason::ServerShutdown);
                // Evicted sessions' delayed wills are dropped with everything else.
                self.detach(connection.session, now, out);
            }
        }
    }

    /// A drain's end of one connection (`fanfare --takeover`): closed with `ServerShutdown`,
    /// its will not published, for the reasons of [`Broker::shutdown`]; the session goes
    /// offline as on any disconnection.
    pub fn drain_connection(&mut self, conn: ConnId, now: Instant, out: &mut Outbox) {
        self.end_connection(conn, Some(CloseReason::ServerShutdown), false, now, out);
    }

    /// Once a second: gives back room the scratch of fan-out kept from its last bursts.
    pub fn shed_scratch(&mut self) {
        crate::slots::shed(&mut self.matches);
        crate::slots::shed(&mut self.match_stack);
        crate::slots::shed(&mut self.retained_stack);
        self.fanout.shed();
    }

    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            connections: self.clients.len(),
            sessions: self.sessions.len(),
            offline_sessions: self.offline.len(),
            subscriptions: self.trie.len(),
            retained: self.retained.len(),
            retained_bytes: self.retained.bytes(),
            ..self.stats
        }
    }
}
