//! With a data directory: the persistent sessions this shard changed since its last flush,
//! for the store, and the sessions the store loaded at start-up.
//!
//! Sessions live on the shard that owns their client identifier (`Broker::owner_shard`), so
//! that shard is the only one that writes them. What changed is noted as a session key (or,
//! for a session that ended, its identifier), conflated per session per flush like retained
//! updates: a session that got a thousand messages between two flushes is written once, as a
//! whole [`SessionImage`] taken at the flush. The image shares its messages (`Arc`) with the
//! session's queue; only the store's thread encodes them.
//!
//! Kept: the identifier, protocol version, Session Expiry Interval and the deadline of an
//! offline session, the subscriptions with their options and identifiers, the QoS 1/2
//! messages still to deliver (those sent and not acknowledged first, with their packet
//! identifiers), the identifiers of QoS 2 publishes sent whose PUBREC came (PUBREL state),
//! those received and not yet released (inbound QoS 2 state), and a will waiting for its
//! delay with its deadline. So after a restart the client's next connection gets its
//! unacknowledged publishes again with DUP = 1 and their identifiers, and its PUBRELs
//! ([MQTT-4.4.0-1]), and a PUBREL or a resent QoS 2 PUBLISH from it is recognised.
//!
//! **Inbound QoS 2 and what it routed.** A held identifier makes a resent PUBLISH with it a
//! duplicate, so it must not reach the disk before the message it let through: with the
//! identifier kept and the message not, a crash between them would lose the message (the
//! client's resend is taken for a duplicate). A session whose inbound QoS 2 state changed is
//! therefore handed over last in its flush, after the sessions its publish was queued for on
//! this shard, and the writer writes a flush's records in one write, in that order, retained
//! updates first. What the publish queued on other shards reaches their flushes a turn or
//! more later (`docs/persistence.md`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::message_ids::MessageId;
use super::origins::OriginSeq;
use super::outbox::RoutedMessage;
use super::qos_window::Queued;
use super::session::{SESSION_NEVER_EXPIRES_S, Session, SessionKey};
use super::share_groups::SHARED_PREFIX;
use super::subscription::{Grant, SubscriptionIds};
use super::timers::TimerKind;
use super::{Broker, Outbox};
use crate::conn::ConnId;
use crate::protocol::mqtt::{PacketId, ProtocolVersion, QoS, SubscriptionOptions};

/// One subscription of a stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionImage {
    pub filter: Box<str>,
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// The Subscription Identifier, 0 for none.
    pub id: u32,
}

/// One message a stored session is still to receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedImage {
    pub message: Arc<RoutedMessage>,
    /// The QoS it is delivered with.
    pub qos: QoS,
    pub retain: bool,
    /// The Subscription Identifiers it is delivered with.
    pub ids: Vec<u32>,
    /// The packet identifier it was sent with, unacknowledged; `None` while queued.
    pub packet_id: Option<PacketId>,
}

/// A will waiting for its Will Delay Interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillImage {
    pub message: Arc<RoutedMessage>,
    /// When it is published unless the client comes back first.
    pub due: Instant,
}

/// A persistent session as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionImage {
    pub client_id: Box<str>,
    pub version: ProtocolVersion,
    /// Session Expiry Interval; `u32::MAX`: never (3.x clean session = 0).
    pub expiry_s: u32,
    /// When the offline session ends; `None` while connected (it then ends `expiry_s` after
    /// its connection does) or if it never expires.
    pub expires_at: Option<Instant>,
    /// Whether a client was connected to it.
    pub connected: bool,
    pub subscriptions: Vec<SubscriptionImage>,
    /// In delivery order.
    pub messages: Vec<QueuedImage>,
    /// QoS 2 publishes sent whose PUBREC came (PUBREL sent, PUBCOMP awaited), in order.
    pub released: Vec<PacketId>,
    /// QoS 2 publishes received (PUBREC sent) whose PUBREL has not come.
    pub inbound_qos2: Vec<PacketId>,
    pub delayed_will: Option<WillImage>,
    /// Under `sync`, once it published a tentative QoS 2 message (`origins.rs`): its
    /// incarnation (0: none yet) and the last of its publishes committed.
    pub incarnation: u64,
    pub committed_seq: u64,
    /// In cluster mode, the identities of the messages from the cluster its client was sent
    /// lately, oldest first (`message_ids.rs`): a replay after its node's death skips them.
    pub sent_ids: Vec<MessageId>,
}

/// A session to write: its whole state, or ended, or moved to another node of the cluster
/// (`session_moves.rs`): ended here, but its image in the cluster's bucket is the new
/// node's to write.
#[derive(Debug, Clone)]
pub enum SessionWrite {
    Set(SessionImage),
    Ended(Box<str>),
    Moved(Box<str>),
}

#[derive(Default)]
pub(crate) struct SessionWrites {
    changed: HashSet<SessionKey>,
    /// Sessions whose inbound QoS 2 state changed: handed over after `changed` (see the
    /// module documentation).
    inbound: HashSet<SessionKey>,
    ended: HashSet<Box<str>>,
    /// Sessions handed to another node, by identifier.
    pub(super) moved: HashSet<Box<str>>,
    /// The connections of the persistent sessions taken by the last flush: under `sync`
    /// what the broker sends them waits until that flush is on disk (`shard/durable_sends.rs`).
    written_conns: Vec<ConnId>,
}

impl SessionWrites {
    /// Notes that session `key` changed; cheap enough for the delivery path (a set of 8-byte
    /// keys, bounded by the shard's sessions).
    pub(crate) fn note(&mut self, key: SessionKey) {
        self.changed.insert(key);
    }
}

pub(super) fn image(session: &Session) -> SessionImage {
    let subscriptions = session
        .subscriptions
        .iter()
        .map(|(filter, grant)| SubscriptionImage {
            filter: filter.clone(),
            qos: grant.qos,
            no_local: grant.no_local,
            retain_as_published: grant.retain_as_published,
            id: grant.id,
        })
        .collect();
    let messages = session
        .outbound
        .messages()
        .map(|(packet_id, queued)| QueuedImage {
            message: queued.message,
            qos: queued.qos,
            retain: queued.retain,
            ids: queued.ids.as_slice().to_vec(),
            packet_id,
        })
        .collect();
    SessionImage {
        client_id: session.client_id.clone(),
        version: session.version,
        expiry_s: session.expiry_s,
        expires_at: session
            .conn
            .is_none()
            .then(|| session.offline_deadline())
            .flatten(),
        connected: session.conn.is_some(),
        subscriptions,
        messages,
        released: session.outbound.released().collect(),
        inbound_qos2: session.inbound_qos2().to_vec(),
        delayed_will: session.delayed_will().map(|will| WillImage {
            message: Arc::clone(&will.message),
            due: will.due,
        }),
        incarnation: session.origin_seq().incarnation,
        committed_seq: session.origin_seq().committed,
        sent_ids: session.sent_ids(),
    }
}

impl Broker {
    /// Notes the changes of this shard's persistent sessions from now on, for the store.
    pub fn keep_session_writes(&mut self) {
        self.session_writes = Some(SessionWrites::default());
    }

    /// Notes that session `key` changed, if sessions are written.
    pub(super) fn note_session(&mut self, key: SessionKey) {
        if let Some(writes) = self.session_writes.as_mut() {
            writes.note(key);
        }
    }

    /// Notes that the inbound QoS 2 state of session `key` changed, if it is persistent.
    pub(super) fn note_inbound_qos2(&mut self, key: SessionKey) {
        let persistent = self.sessions.get(key).is_some_and(Session::persistent);
        if let Some(writes) = self.session_writes.as_mut().filter(|_| persistent) {
            writes.inbound.insert(key);
        }
    }

    /// Notes that the persistent session of `client_id` ended.
    pub(super) fn note_session_ended(&mut self, client_id: &str) {
        if let Some(writes) = self.session_writes.as_mut() {
            writes.ended.insert(client_id.into());
        }
    }

    /// Notes that the persistent session of `client_id` moved to another node.
    pub(super) fn note_session_moved(&mut self, client_id: &str) {
        if let Some(writes) = self.session_writes.as_mut() {
            writes.ended.remove(client_id);
            writes.moved.insert(client_id.into());
        }
    }

    /// Whether session changes wait for the next flush.
    pub fn session_writes_pending(&self) -> bool {
        self.session_writes.as_ref().is_some_and(|writes| {
            !writes.changed.is_empty()
                || !writes.inbound.is_empty()
                || !writes.ended.is_empty()
                || !writes.moved.is_empty()
        })
    }

    /// The sessions changed since the last flush: ended ones first, so that a session ended
    /// and begun again under the same identifier in one flush is written as begun; those
    /// whose inbound QoS 2 state changed last, after what their publishes queued here.
    pub fn take_session_writes(&mut self) -> Vec<SessionWrite> {
        let Some(writes) = self.session_writes.as_mut() else {
            return Vec::new();
        };
        writes.written_conns.clear();
        let mut taken: Vec<SessionWrite> = writes.ended.drain().map(SessionWrite::Ended).collect();
        taken.extend(writes.moved.drain().map(SessionWrite::Moved));
        let inbound = std::mem::take(&mut writes.inbound);
        let mut changed: Vec<SessionKey> = writes
            .changed
            .drain()
            .filter(|key| !inbound.contains(key))
            .collect();
        changed.extend(inbound);
        for key in changed {
            let Some(session) = self.sessions.get(key) else {
                // Ended: noted in `ended` by its identifier.
                continue;
            };
            taken.push(match session.persistent() {
                true => {
                    if let (Some(conn), Some(writes)) = (session.conn, self.session_writes.as_mut())
                    {
                        writes.written_conns.push(conn);
                    }
                    let mut image = image(session);
                    // Under `sync`, an identifier whose PUBREC is held waits (`held_acks.rs`),
                    // and in cluster mode one whose PUBREC waits for JetStream
                    // (`cluster_acks.rs`).
                    image.inbound_qos2.retain(|&id| {
                        !self.inbound_qos2_unwritten(key, id)
                            && !self.inbound_qos2_waits_for_cluster(key, id)
                    });
                    SessionWrite::Set(image)
                }
                // A session that was persistent may come back with a clean one.
                false => SessionWrite::Ended(session.client_id.clone()),
            });
        }
        taken
    }

    /// The connections of the persistent sessions the last [`Broker::take_session_writes`]
    /// took: each is sent nothing more under `sync` until that flush is durable.
    pub fn written_conns(&self) -> &[ConnId] {
        self.session_writes
            .as_ref()
            .map_or(&[], |writes| writes.written_conns.as_slice())
    }

    /// Takes back a flush the store had no room for: the sessions are noted again, and
    /// written as they are at the next flush.
    pub fn return_session_writes(&mut self, returned: Vec<SessionWrite>) {
        for write in returned {
            match write {
                SessionWrite::Set(image) => {
                    if let Some(key) = self.client_ids.get(&image.client_id, &self.sessions) {
                        self.note_session(key);
                    }
                }
                SessionWrite::Ended(client_id) => {
                    match self.client_ids.get(&client_id, &self.sessions) {
                        Some(key) => self.note_session(key),
                        None => self.note_session_ended(&client_id),
                    }
                }
                SessionWrite::Moved(client_id) => {
                    match self.client_ids.get(&client_id, &self.sessions) {
                        Some(key) => self.note_session(key),
                        None => self.note_session_moved(&client_id),
                    }
                }
            }
        }
    }

    /// Restores the sessions the store loaded at start-up, offline, with their expiry running
    /// from their deadline, their in-flight messages to be sent again on their next connection,
    /// and their delayed wills due at their deadlines. `images` come the longest offline
    /// first: past `offline_sessions_per_shard_max` those are ended (their wills published).
    /// The rest are on disk already, so they are not noted. Returns how many were ended.
    pub fn load_sessions(
        &mut self,
        images: &[SessionImage],
        now: Instant,
        out: &mut Outbox,
    ) -> usize {
        self.now = now;
        for image in images {
            if self
                .client_ids
                .get(&image.client_id, &self.sessions)
                .is_none()
            {
                self.load_session(image, now, out);
            }
        }
        let wills = self.evict_offline_past_bound(out);
        let ended = wills.len();
        for will in wills.into_iter().flatten() {
            self.publish_will(will, now, out);
        }
        ended
    }

    pub(super) fn load_session(
        &mut self,
        image: &SessionImage,
        now: Instant,
        out: &mut Outbox,
    ) -> SessionKey {
        let mut session = Session::new(&image.client_id, image.version, image.expiry_s);
        self.stats.session_queue_dropped +=
            restore_outbound(&mut session, image, self.limits.session_queue_bytes_max);
        if image.incarnation != 0 {
            // Its copies past `committed_seq` were dropped at load (`store/uncommitted.rs`):
            // the numbers go on from there.
            session.set_origin_seq(OriginSeq {
                incarnation: image.incarnation,
                issued: image.committed_seq,
                committed: image.committed_seq,
            });
        }
        let inbound_qos2_max = usize::from(self.limits.inbound_qos2_max);
        for &id in image.inbound_qos2.iter().take(inbound_qos2_max) {
            if !session.holds_inbound_qos2(id) {
                session.hold_inbound_qos2(id);
            }
        }
        let key = self.sessions.insert(session);
        self.client_ids.insert(key, &self.sessions);
        for subscription in &image.subscriptions {
            let mut options = SubscriptionOptions::new(subscription.qos);
            options.no_local = subscription.no_local;
            options.retain_as_published = subscription.retain_as_published;
            let grant = Grant::new(options, subscription.id);
            let filter = &*subscription.filter;
            let session = self.sessions.get_mut(key).expect("inserted above");
            session.subscriptions.insert(filter.into(), grant);
            if filter.starts_with(SHARED_PREFIX) {
                self.share_join(key, filter, out);
            } else {
                self.trie.insert(filter, key, grant);
            }
        }
        let session = self.sessions.get_mut(key).expect("inserted above");
        self.offline.push(key, session);
        let ticket = session.offline_ticket();
        if let Some(will) = &image.delayed_will {
            // Due already if its deadline passed while the broker was down: the next tick.
            session.delay_will(Arc::clone(&will.message), will.due);
            self.timers
                .push_at(will.due, key, ticket, TimerKind::WillDelay);
        }
        if image.expiry_s == SESSION_NEVER_EXPIRES_S {
            return key;
        }
        let deadline = image
            .expires_at
            .unwrap_or_else(|| now + Duration::from_secs(image.expiry_s.into()));
        session.set_offline_deadline(deadline);
        self.timers
            .push_at(deadline, key, ticket, TimerKind::SessionExpiry);
        key
    }
}

/// Puts back a loaded session's in-flight window (PUBRELs first, then the publishes sent, in
/// their order, each with its identifier) and its queue. Returns how many queued messages
/// were dropped to stay within `queue_bytes_max`.
fn restore_outbound(session: &mut Session, image: &SessionImage, queue_bytes_max: u64) -> u64 {
    let mut dropped = 0;
    for &id in &image.released {
        session.outbound.restore(id, QoS::ExactlyOnce, None);
    }
    for queued in &image.messages {
        let mut ids = SubscriptionIds::default();
        for &id in &queued.ids {
            ids.push(id);
        }
        let restored = Queued {
            message: Arc::clone(&queued.message),
            qos: queued.qos,
            retain: queued.retain,
            ids,
        };
        match queued.packet_id {
            Some(id) if queued.qos != QoS::AtMostOnce => {
                session.outbound.restore(id, queued.qos, Some(restored));
            }
            _ => dropped += session.outbound.enqueue(restored, queue_bytes_max),
        }
    }
    dropped
}
