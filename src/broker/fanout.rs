//! One publish to every matching session of this shard, the retained replica, and the QoS 1/2
//! window of each session.
//!
//! A publish is matched once against the trie; a session matched through several filters is
//! delivered once, at the highest QoS granted among them (MQTT 3.1.1 §3.3.5 allows one copy or
//! one per filter; one copy is cheaper and what subscribers of a live feed expect). The
//! delivery QoS is min(publish QoS, granted QoS) [MQTT-3.8.4-6]. QoS 0 messages are not queued
//! for offline sessions: the spec allows it (§4.1, "MAY"), and losing them is what QoS 0 means.
//!
//! Fan-out is sliced: at most [`FANOUT_SESSIONS_PER_TURN_MAX`] sessions are served per loop
//! turn, so a publish to a million subscribers cannot starve accepts, pings and other
//! connections. A publish that does not fit is parked, in order, behind the one in progress;
//! the shard calls [`Broker::continue_fanout`] once per turn. Subscribers are matched when a
//! publish reaches the front, so parked publishes cost their message only. Order per publisher
//! holds because one FIFO serves every publish of the shard.
//!
//! Publishes waiting in a row at the front of the FIFO with the same topic and the same
//! publisher (up to [`FANOUT_GROUP_MSGS_MAX`]) are delivered as a group: each session of the
//! slice gets all of them at once, so its next send carries them all. The kernel send (~5 µs on
//! loopback) is what a delivery costs, and it is paid per send, not per message: a group of 8
//! costs about 0.7 µs per message instead of 5. One topic and one publisher give one set of
//! matching sessions (No Local included), so every session still receives the publishes in
//! their order; what differs per publish (expiry, QoS, RETAIN) is decided per publish.
//!
//! MQTT 5 per subscriber: No Local skips the publisher's own session [MQTT-3.8.3-3]; Retain As
//! Published keeps RETAIN [MQTT-3.3.1-12]; the Subscription Identifiers of every matching
//! subscription go with the one copy [MQTT-3.3.4-3]; a message past its expiry is not
//! delivered [MQTT-3.3.2-5]; a packet larger than the client's Maximum Packet Size is not sent
//! to it [MQTT-3.1.2-25]; and at most its Receive Maximum QoS 1/2 publishes are in flight
//! [MQTT-3.3.4-9].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::Broker;
use super::outbox::{CloseReason, Outbox, RoutedMessage};
use super::publish_cache::{PublishCache, PublishVariant};
use super::qos_window::{InflightState, Queued};
use super::retained::RetainOutcome;
use super::session::SessionKey;
use super::subscription::{Grant, Matched, SubscriptionIds};
use super::topic_aliases::AliasForm;
use crate::config::{Limits, TopicPolicy};
use crate::conn::SlowConsumer;
use crate::conn::{Chunk, Droppable, TopicKey};
use crate::protocol::mqtt::topic::filter_matches;
use crate::protocol::mqtt::{Ack, Packet, PacketId, QoS};

/// Sessions served per loop turn, each with every publish of the group in progress. A
/// session costs the broker tens of nanoseconds per publish and, for the send it starts, the
/// kernel ~5 µs: 1024 keeps a turn's new sends near 5 ms (~10 ms on loopback, where the
/// receivers' TCP work runs on the same core), so accepts, pings and other connections wait at
/// most that long behind a fan-out.
pub const FANOUT_SESSIONS_PER_TURN_MAX: usize = 1024;

/// Publishes of one topic and publisher delivered together (see the module documentation). 64
/// is what one send gathers (`IOVECS_PER_SEND_MAX`); worst case per turn: 1024 sessions × 64
/// publishes.
pub const FANOUT_GROUP_MSGS_MAX: usize = 64;

/// Publishes parked behind the one in progress. Past it, parked publishes are delivered
/// without regard to the turn's budget: memory stays bounded when publishers outrun fan-out,
/// at the price of a longer turn (worst case: 4096 parked × the message size).
pub const FANOUT_PARKED_MAX: usize = 4096;

/// The publishes of this shard on their way to its subscribers.
pub(crate) struct Fanout {
    /// Each with the session that published it on this shard, for No Local.
    parked: VecDeque<(Arc<RoutedMessage>, Option<SessionKey>)>,
    current: Option<InProgress>,
    /// The publishes of `current`, in order, each with its encodings. Kept between groups so
    /// fan-out allocates nothing once warm (given up a second after it goes quiet); at most
    /// [`FANOUT_GROUP_MSGS_MAX`] entries.
    group: Vec<(Arc<RoutedMessage>, PublishCache)>,
    /// Sessions left to serve in this turn.
    budget: usize,
    /// `[[policy]]` tables: topic filter and what to do when a subscriber's queue is full.
    policies: Vec<(Box<str>, SlowConsumer)>,
}

/// How one message goes to one session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeliveryTerms {
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) ids: SubscriptionIds,
}

/// The group being delivered (`Fanout::group`): its subscribers are in `Broker::matches`,
/// from `next` on.
struct InProgress {
    next: usize,
    droppable: Droppable,
}

impl Fanout {
    pub(crate) fn new() -> Fanout {
        Fanout {
            parked: VecDeque::new(),
            current: None,
            group: Vec::new(),
            budget: FANOUT_SESSIONS_PER_TURN_MAX,
            policies: Vec::new(),
        }
    }

    /// Gives back room the parked publishes and the group of a burst needed (see
    /// `slots::shed`).
    pub(crate) fn shed(&mut self) {
        crate::slots::shed(&mut self.group);
        if self.parked.is_empty() && self.parked.capacity() > 256 {
            self.parked.shrink_to(self.parked.capacity() / 2);
        }
    }

    /// Forgets every publish not yet delivered (shutdown).
    pub(crate) fn clear(&mut self) {
        self.parked.clear();
        self.current = None;
        self.group.clear();
    }

    /// How a QoS 0 publish of `topic` may be dropped: its conflation key, and the policy of the
    /// first `[[policy]]` filter it matches.
    pub(crate) fn droppable(&self, topic: &str) -> Droppable {
        let on_full = self
            .policies
            .iter()
            .find(|(filter, _)| filter_matches(filter, topic))
            .map(|&(_, policy)| policy);
        Droppable::Yes {
            topic: TopicKey::of(topic),
            on_full,
        }
    }
}

impl Broker {
    /// Sets the `[[policy]]` tables (validated by `Config::validate`).
    pub fn set_topic_policies(&mut self, policies: &[TopicPolicy]) {
        self.fanout.policies = policies
            .iter()
            .map(|policy| (policy.filter.as_str().into(), policy.on_full))
            .collect();
    }

    /// Takes a reloaded configuration's limits: only the live ones differ from those the
    /// broker started with ([`crate::config::Reload`]). Each applies where it is next read:
    /// the next CONNECT, SUBSCRIBE, queued message or retained publish.
    pub fn set_limits(&mut self, limits: &Limits) {
        // These sized what `Broker::new` built, or were announced in CONNACKs.
        assert_eq!(
            limits.topic_aliases_per_shard_max,
            self.limits.topic_aliases_per_shard_max
        );
        assert_eq!(limits.inbound_qos2_max, self.limits.inbound_qos2_max);
        assert_eq!(limits.topic_aliases_max, self.limits.topic_aliases_max);
        self.retained
            .set_bounds(limits.retained_messages_max, limits.retained_bytes_max);
        self.limits = limits.clone();
    }

    /// A publish from another shard: delivered to this shard's subscribers and applied to its
    /// retained replica.
    pub fn deliver_remote(&mut self, message: Arc<RoutedMessage>, now: Instant, out: &mut Outbox) {
        self.now = now;
        self.stats.remote_publishes_received += 1;
        if message.retain {
            self.retain(&message);
        }
        self.share_route(&message, out);
        self.deliver_local(message, None, out);
    }

    /// A publish that entered on this shard (a client's PUBLISH, from session `publisher`, or
    /// a will): retained here, delivered here, and pushed once for every other shard; in
    /// cluster mode, once for the other nodes too, but for the `$` topics, which are each
    /// node's own.
    pub(crate) fn route(
        &mut self,
        message: Arc<RoutedMessage>,
        publisher: Option<SessionKey>,
        now: Instant,
        out: &mut Outbox,
    ) {
        let message = self.forward(message, out);
        self.route_on_node(message, publisher, now, out);
    }

    /// The part of `route` for the other nodes and the bridged brokers: `message`, with its
    /// cluster identity, to `Outbox::to_remote`, but for the `$` topics. Returns it as routed
    /// on this node.
    pub(super) fn forward(
        &mut self,
        message: Arc<RoutedMessage>,
        out: &mut Outbox,
    ) -> Arc<RoutedMessage> {
        if !self.forwards_out || message.topic.starts_with('$') {
            return message;
        }
        let message = self.with_cluster_id(message);
        out.to_remote.push(Arc::clone(&message));
        message
    }

    /// A publish for every shard of this node (see `route`).
    pub(super) fn route_on_node(
        &mut self,
        message: Arc<RoutedMessage>,
        publisher: Option<SessionKey>,
        now: Instant,
        out: &mut Outbox,
    ) {
        self.now = now;
        if message.retain {
            self.retain(&message);
        }
        if self.shard_count > 1 {
            out.to_other_shards.push(Arc::clone(&message));
        }
        self.share_route(&message, out);
        self.deliver_local(message, publisher, out);
    }

    /// Whether the broker knows that no subscription of any session matches `topic`, for
    /// PUBACK and PUBREC 0x10 No matching subscribers, which a server may send only when it
    /// knows (§3.4.2.1). A broker of one shard does: every subscription and shared group is
    /// in its tries. With several shards, subscribers of other shards are not known here
    /// when the acknowledgement goes out, so the answer is `false`. A subscription of the
    /// publisher itself with No Local counts as a match: the answer errs towards 0x00.
    pub(crate) fn known_unsubscribed(&mut self, topic: &str) -> bool {
        if self.shard_count > 1 {
            return false;
        }
        let mut any = false;
        self.trie
            .for_each_match(topic, &mut self.match_stack, |_, _| any = true);
        !any && !self.share_matches(topic)
    }

    /// A message the broker itself publishes (the `$SYS` topics): routed as a client's publish
    /// is, from no session, and not counted as one received.
    pub fn publish_own(&mut self, message: Arc<RoutedMessage>, now: Instant, out: &mut Outbox) {
        self.route(message, None, now, out);
    }

    pub(super) fn retain(&mut self, message: &Arc<RoutedMessage>) {
        let outcome = self.retained.apply(message);
        if outcome == RetainOutcome::Rejected {
            self.stats.retained_rejected += 1;
        }
        self.note_retained(message, outcome);
    }

    /// Once per loop turn: delivers parked publishes with what is left of this turn's budget,
    /// then grants the next turn's. Returns whether publishes are still waiting, in which case
    /// the next turn must not block.
    pub fn continue_fanout(&mut self, now: Instant, out: &mut Outbox) -> bool {
        self.now = now;
        self.run_fanout(out);
        self.fanout.budget = FANOUT_SESSIONS_PER_TURN_MAX;
        self.fanout_pending()
    }

    /// Whether publishes wait for delivery.
    pub fn fanout_pending(&self) -> bool {
        self.fanout.current.is_some() || !self.fanout.parked.is_empty()
    }

    /// Every matching session of this shard, once each, with RETAIN=0 [MQTT-3.3.1-9]: now if
    /// the turn's budget allows, else in later turns, always after the publishes before it.
    fn deliver_local(
        &mut self,
        message: Arc<RoutedMessage>,
        publisher: Option<SessionKey>,
        out: &mut Outbox,
    ) {
        self.fanout.parked.push_back((message, publisher));
        self.run_fanout(out);
    }

    fn run_fanout(&mut self, out: &mut Outbox) {
        loop {
            let over_parked = self.fanout.parked.len() > FANOUT_PARKED_MAX;
            if self.fanout.budget == 0 && !over_parked {
                return;
            }
            let mut current = match self.fanout.current.take() {
                Some(current) => current,
                None => match self.start_fanout() {
                    Some(current) => current,
                    None => return,
                },
            };
            let end = if over_parked {
                self.matches.len()
            } else {
                self.matches
                    .len()
                    .min(current.next.saturating_add(self.fanout.budget))
            };
            let mut group = std::mem::take(&mut self.fanout.group);
            for index in current.next..end {
                let (key, matched) = self.matches[index];
                for (message, cache) in &mut group {
                    // Expiry is per publish: a later one of the group may outlive an earlier.
                    if message.expired(self.now) {
                        continue;
                    }
                    let outgoing = DeliveryTerms {
                        qos: matched.qos.min(message.qos),
                        retain: matched.retain_as_published && message.retain,
                        ids: matched.ids,
                    };
                    self.deliver(key, outgoing, message, current.droppable, cache, out);
                }
            }
            self.fanout.group = group;
            let done = end - current.next;
            self.fanout.budget = self.fanout.budget.saturating_sub(done);
            current.next = end;
            if end < self.matches.len() {
                self.fanout.current = Some(current);
            } else {
                self.fanout.group.clear();
            }
        }
    }

    /// Takes the front publish and those right behind it with the same topic and publisher
    /// (at most [`FANOUT_GROUP_MSGS_MAX`]) as the group in progress, and matches their topic
    /// against the trie into `self.matches`, each session once with the merged grants of its
    /// matching filters; No Local leaves out the publisher's own session [MQTT-3.8.3-3]. A
    /// group whose every publish has expired matches nobody. `None` when nothing is parked.
    fn start_fanout(&mut self) -> Option<InProgress> {
        let (first, publisher) = self.fanout.parked.pop_front()?;
        let group = &mut self.fanout.group;
        assert!(group.is_empty(), "one group at a time");
        group.push((Arc::clone(&first), PublishCache::new()));
        while group.len() < FANOUT_GROUP_MSGS_MAX
            && self.fanout.parked.front().is_some_and(|(next, from)| {
                next.topic == first.topic && *from == publisher && next.bridged == first.bridged
            })
        {
            let (next, _) = self
                .fanout
                .parked
                .pop_front()
                .expect("the front was just seen");
            group.push((next, PublishCache::new()));
        }
        let now = self.now;
        let all_expired = group.iter().all(|(message, _)| message.expired(now));
        self.fanout_seq += 1;
        let seq = self.fanout_seq;
        let matches = &mut self.matches;
        matches.clear();
        let sessions = &mut self.sessions;
        let bridged = first.bridged;
        let visit = |key, grant: Grant| {
            if grant.no_local && publisher == Some(key) {
                return;
            }
            let Some(session) = sessions.get_mut(key) else {
                debug_assert!(false, "the trie holds live sessions only");
                return;
            };
            // What crossed a bridge does not cross another (`docs/bridges.md`, Loops).
            if bridged && session.bridge {
                return;
            }
            if session.match_stamp == seq {
                matches[session.match_slot].1.merge(grant);
            } else {
                session.match_stamp = seq;
                session.match_slot = matches.len();
                matches.push((key, Matched::of(grant)));
            }
        };
        if !all_expired {
            self.trie
                .for_each_match(&first.topic, &mut self.match_stack, visit);
        }
        Some(InProgress {
            droppable: self.fanout.droppable(&first.topic),
            next: 0,
        })
    }

    /// Hands one message to one session: sent now, queued, or (QoS 0 while offline) skipped.
    /// The session may have gone since it was matched: then nothing happens. Nor when the
    /// message expired, or is larger than the client accepts.
    pub(crate) fn deliver(
        &mut self,
        key: SessionKey,
        outgoing: DeliveryTerms,
        message: &Arc<RoutedMessage>,
        droppable: Droppable,
        cache: &mut PublishCache,
        out: &mut Outbox,
    ) {
        let now = self.now;
        if message.expired(now) {
            return;
        }
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if let (Some(id), Some(window)) = (message.id, self.sent_window)
            && session.conn.is_some()
            && session.persistent()
        {
            session.note_sent(id, now, window);
        }
        let connection = session.conn.and_then(|conn| {
            let connection = self
                .clients
                .get_mut(conn)
                .filter(|client| !client.closing)?;
            Some((conn, connection))
        });
        // The topic's alias number, looked up once per publish, and how this connection is to
        // be sent it; a topic without a number (or a client without aliases) is named.
        let aliases = &mut self.aliases;
        let alias = connection
            .as_ref()
            .filter(|(_, client)| client.topic_aliases.outbound_enabled())
            .and_then(|(_, client)| {
                let number = cache.alias_number(|| aliases.number(&message.topic))?;
                Some((number, client.topic_aliases.outbound_form(number)))
            });
        let variant_of = |connection: &super::clients::Client| PublishVariant {
            transport: connection.transport,
            version: connection.version,
            qos: outgoing.qos,
            retain: outgoing.retain,
            dup: false,
            alias: alias.map_or(AliasForm::Plain, |(_, form)| form),
        };
        let ids = outgoing.ids;
        if let Some((_, connection)) = &connection {
            let len = cache.packet_len(message, variant_of(connection), ids, now);
            if len > connection.packet_bytes_max as usize {
                self.stats.too_large_for_client += 1;
                return;
            }
        }
        // Once sent with its topic, the alias stands for it on this connection. That packet
        // must reach the client for the later "alias only" ones to mean anything: it may not
        // be dropped by a slow consumer policy (a connection meets it once per number).
        let introduces = match alias {
            Some((number, AliasForm::TopicAndAlias)) => Some(number),
            _ => None,
        };
        if outgoing.qos == QoS::AtMostOnce {
            let Some((conn, connection)) = connection else {
                return;
            };
            let bytes = cache.shared(message, variant_of(connection), ids, now);
            let droppable = match introduces {
                Some(number) => {
                    connection.topic_aliases.mark_sent(number);
                    Droppable::No
                }
                None => droppable,
            };
            out.send(conn, Chunk::Shared(bytes), droppable);
            self.stats.deliveries += 1;
            return;
        }
        let queued = Queued {
            message: Arc::clone(message),
            qos: outgoing.qos,
            retain: outgoing.retain,
            ids,
        };
        self.stats.deliveries += 1;
        if session.persistent()
            && let Some(writes) = self.session_writes.as_mut()
        {
            writes.note(key);
        }
        // A tentative QoS 2 copy waits in the queue for its publisher's commit (`origins.rs`),
        // and so does what comes after it.
        let waits = super::origins::waits_for_commit(session.persistent(), queued.qos, message);
        if waits && connection.is_some() {
            self.waiting_for_commit.insert(key);
        }
        match connection {
            Some((conn, connection))
                if !waits && session.outbound.has_room(connection.send_window) =>
            {
                let id = session.outbound.start(queued);
                let chunk = cache.with_id(message, variant_of(connection), ids, now, id);
                if let Some(number) = introduces {
                    connection.topic_aliases.mark_sent(number);
                }
                out.send(conn, chunk, Droppable::No);
            }
            connection => {
                let queue_bytes_max = self.limits.session_queue_bytes_max;
                let dropped = session.outbound.enqueue(queued, queue_bytes_max);
                self.stats.session_queue_dropped += dropped;
                let overflowed = connection.filter(|_| dropped > 0).map(|(conn, _)| conn);
                if let Some((conn, client)) =
                    overflowed.and_then(|conn| Some((conn, self.clients.get_mut(conn)?)))
                {
                    // Connected, yet neither acknowledging nor leaving room: QoS 1/2 may not
                    // be lost while the client is there, so the client goes instead, once.
                    client.closing = true;
                    self.stats.slow_consumer_closes += 1;
                    let reason = CloseReason::SlowConsumer;
                    super::reply::say_goodbye(out, conn, client, reason);
                }
            }
        }
    }

    /// On reconnect: the unacknowledged publishes again with DUP=1, and PUBREL for those
    /// already PUBREC'd, in their original order [MQTT-4.4.0-1]; then whatever was queued.
    pub(crate) fn resume_outbound(&mut self, key: SessionKey, out: &mut Outbox) {
        if let Some(session) = self.sessions.get_mut(key) {
            session.outbound.mark_unsent();
        }
        self.drain_queue(key, out);
    }

    /// Sends again, with DUP=1 and their identifiers, the in-flight publishes and PUBRELs not
    /// sent on this connection yet, as far as its window allows; a publish larger than its
    /// Maximum Packet Size is discarded as if sent (counted in `too_large_for_client`).
    fn resend_inflight(&mut self, key: SessionKey, out: &mut Outbox) {
        let now = self.now;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(conn) = session.conn else {
            return;
        };
        let Some(connection) = self.clients.get(conn) else {
            return;
        };
        while let Some(entry) = session.outbound.next_unsent(connection.send_window) {
            entry.sent = true;
            let id = entry.id;
            match &entry.state {
                InflightState::Published {
                    message,
                    retain,
                    ids,
                } => {
                    let variant = PublishVariant {
                        transport: connection.transport,
                        version: connection.version,
                        qos: entry.qos,
                        retain: *retain,
                        dup: true,
                        // A resend goes to a new connection, which was sent no alias.
                        alias: AliasForm::Plain,
                    };
                    let mut cache = PublishCache::new();
                    let len = cache.packet_len(message, variant, *ids, now);
                    if len > connection.packet_bytes_max as usize {
                        self.stats.too_large_for_client += 1;
                        session.outbound.discard(id);
                        continue;
                    }
                    let chunk = cache.with_id(message, variant, *ids, now, id);
                    out.send(conn, chunk, Droppable::No);
                }
                InflightState::Released => {
                    let (transport, version) = (connection.transport, connection.version);
                    let packet = Packet::PubRel(Ack::new(id));
                    super::reply::send_packet(out, conn, transport, version, &packet);
                }
            }
        }
    }

    /// Sends queued messages while the window of `key` has room (at most its send window),
    /// dropping those that expired or are larger than the client accepts.
    pub(crate) fn drain_queue(&mut self, key: SessionKey, out: &mut Outbox) {
        // What was in flight before the client reconnected goes first, in order.
        self.resend_inflight(key, out);
        let now = self.now;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(conn) = session.conn else {
            return;
        };
        let Some(connection) = self.clients.get(conn) else {
            return;
        };
        let persistent = session.persistent();
        loop {
            if session.outbound.front().is_some_and(|queued| {
                super::origins::waits_for_commit(persistent, queued.qos, &queued.message)
            }) {
                // Sent once its publisher's commit is durable (`origins.rs`).
                self.waiting_for_commit.insert(key);
                break;
            }
            let Some(queued) = session.outbound.dequeue(connection.send_window) else {
                break;
            };
            if queued.message.expired(now) {
                continue;
            }
            let message = Arc::clone(&queued.message);
            let variant = PublishVariant {
                transport: connection.transport,
                version: connection.version,
                qos: queued.qos,
                retain: queued.retain,
                dup: false,
                // Sent one by one, each encoded for this subscriber alone: nothing to share.
                alias: AliasForm::Plain,
            };
            let ids = queued.ids;
            let mut cache = PublishCache::new();
            if cache.packet_len(&message, variant, ids, now) > connection.packet_bytes_max as usize
            {
                self.stats.too_large_for_client += 1;
                continue;
            }
            let id: PacketId = session.outbound.start(queued);
            let chunk = cache.with_id(&message, variant, ids, now, id);
            out.send(conn, chunk, Droppable::No);
        }
    }

    /// After a SUBSCRIBE: the retained messages matching `filter`, with RETAIN=1
    /// [MQTT-3.3.1-6], at min(retained QoS, granted QoS), with the subscription's identifier.
    pub(crate) fn send_retained(
        &mut self,
        key: SessionKey,
        filter: &str,
        grant: Grant,
        out: &mut Outbox,
    ) {
        let mut found = Vec::new();
        // A bridge connection gets no retained message that crossed a bridge: its broker
        // has it already, or has it from where it came (`docs/bridges.md`, Loops).
        let bridge = self.sessions.get(key).is_some_and(|session| session.bridge);
        self.retained
            .for_each_match(filter, &mut self.retained_stack, |message| {
                if !(bridge && message.bridged) {
                    found.push(Arc::clone(message));
                }
            });
        for message in found {
            let outgoing = DeliveryTerms {
                qos: grant.qos.min(message.qos),
                retain: true,
                ids: SubscriptionIds::of(grant.id),
            };
            let droppable = self.fanout.droppable(&message.topic);
            let mut cache = PublishCache::new();
            self.deliver(key, outgoing, &message, droppable, &mut cache, out);
        }
    }
}
