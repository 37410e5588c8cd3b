//! A session ([MQTT-3.1.2-4]): what the broker remembers about a client identifier, and the
//! connection currently attached to it, if any.
//!
//! A 3.x session with clean session = 1 lives exactly as long as its connection; one with clean
//! session = 0 outlives it and waits, offline, for the client to come back. An MQTT 5 session
//! outlives its connection by its Session Expiry Interval (§3.1.2.11.2; 0 = not at all,
//! 0xFFFFFFFF = never expires), which the client sets in CONNECT and may change in DISCONNECT.
//! Offline sessions are bounded per shard (`offline_sessions_per_shard_max`); past it the one
//! disconnected longest ago is evicted, which is allowed since 3.1.1 leaves how long a session
//! is kept to the server, and MQTT 5 lets the server end a session early (§4.1).
//!
//! Memory budget of one connected, idle subscriber with one filter of its own, as
//! `fanfare-loadtest conn` opens them (a 14-byte client identifier; a 25-byte filter whose last
//! level, up to 5 bytes, is the client's own), x86-64, 19 000 on one shard. Heap blocks count
//! their mimalloc size class, hash tables their buckets at the load a power-of-two table has at
//! that size (19 000 of 32 768), and vectors reserved up front the entries in use (capacity not
//! yet touched is address space, not RSS):
//!
//! | what | bytes | note |
//! |---|---|---|
//! | `Session` in the slab | 176 | 168 + generation; `QosWindow` holds no allocation while empty, nor does a session with nothing [pending](Pending) |
//! | client identifier | 16 | `Box<str>`, held once: `client_ids` reaches it through the slab |
//! | `subscriptions` | 24 + 32 | one (`Box<str>`, [`Grant`] 8) slot ([`Subscriptions`] grows one at a time below 4) + the filter |
//! | `client_ids` entry | 15 | an 8-B `SessionKey` bucket and its control byte (`client_ids.rs`) |
//! | `clients` slot | 64 | (`ConnId`, [`Client`](super::clients::Client) 56; its will and topic aliases boxed, none while idle), indexed by the connection's slot (`clients.rs`) |
//! | keep-alive deadline | 24 | (`Instant`, `ConnId`) in the heap |
//! | trie node of the filter | 120 + 8 + 16 | node, its level, one (`SessionKey`, [`Grant`]) slot (no position index below 32) |
//! | parent's child entry | 9 | a 4-B bucket (the child's index; its level is the node's) and its control byte |
//! | **broker total** | **504** | |
//!
//! The network side adds 256 B (`shard/peer.rs`), so 760 B are accounted for; 0.8–1.1 KB
//! is measured per connection over 19 000 WebSocket subscribers (`fanfare-loadtest conn`, one
//! shard; docs/benchmarks.md), the rest being allocator slack: partly filled pages of each size
//! class, and blocks freed once the handshakes were done (more of them when more handshakes
//! overlap). Three things the measurement used to hold are gone:
//! - the shard's 4 MiB of receive buffers, touched by the first connections, ≈ 220 B per
//!   connection at 19 000: they are in RSS from start-up now (`net/uring.rs`);
//! - the old copies of the tables of connections and sessions, which doubled at 16 384 and
//!   stayed resident, ≈ 600 B: those tables grow a page at a time now, copying nothing
//!   (`slots.rs`);
//! - whole 2 MiB huge pages for every region of the heap touched at all: 1.3–1.4 KB per
//!   connection with them, and 14 MB more before the first connection; the process turns
//!   transparent huge pages off now (`net/sys.rs`).
//!
//! A [`Grant`] (QoS, two options, a Subscription Identifier) packs into 8 B, so a (filter,
//! grant) slot is the 24 B a (filter, QoS) one was and a trie slot stays 16 B. Before
//! [`Subscriptions`] the session's one-entry `HashMap` cost ≈ 350 B more (2.65 KB measured, in
//! that run's 100 shared topics, whose trie nodes keep their position index); with a topic per
//! client the one-entry position map of each trie node would add about as much again
//! (estimated from the table sizes, not measured in that run).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::message_ids::{MessageId, SentIds, SentWindow};
use super::origins::OriginSeq;
use super::outbox::RoutedMessage;
use super::qos_window::QosWindow;
use super::subscription::Grant;
use crate::auth::Identity;
use crate::conn::ConnId;
use crate::protocol::mqtt::{PacketId, ProtocolVersion};
use crate::slots::SlotKey;

/// Session Expiry Interval meaning "never expires" (§3.1.2.11.2); what clean session = 0 means
/// in 3.x.
pub(crate) const SESSION_NEVER_EXPIRES_S: u32 = u32::MAX;

/// A handle to a session in this shard's table. Cheap to copy and to store per subscription
/// (8 bytes instead of the client identifier string). The shared subscription groups use the
/// same kind of handle for themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionKey {
    index: u32,
    generation: u32,
}

impl SlotKey for SessionKey {
    fn from_parts(index: u32, generation: u32) -> SessionKey {
        SessionKey { index, generation }
    }

    fn index(self) -> usize {
        self.index as usize
    }

    fn generation(self) -> u32 {
        self.generation
    }
}

pub(crate) struct Session {
    pub(crate) client_id: Box<str>,
    /// The protocol of the last connection: kept per session so MQTT 5 session state (expiry,
    /// properties) has a place to go.
    pub(crate) version: ProtocolVersion,
    /// How long the session outlives its connection: 0 = it ends with it (3.x clean session
    /// = 1), [`SESSION_NEVER_EXPIRES_S`] = until evicted (3.x clean session = 0).
    pub(crate) expiry_s: u32,
    pub(crate) conn: Option<ConnId>,
    /// Filter → what was granted, mirrored in the topic trie. At most
    /// `subscriptions_per_session_max` entries.
    pub(crate) subscriptions: Subscriptions,
    pub(crate) outbound: QosWindow,
    /// The fan-out sequence number of the last publish that matched this session, and where
    /// its entry sits in the broker's match list: dedups overlapping subscriptions without
    /// allocating per publish.
    pub(crate) match_stamp: u64,
    pub(crate) match_slot: usize,
    /// The last connection said it is another broker's bridge (`Connect::bridge`, or the
    /// MQTT 5 user property of `crate::bridge::marker`): messages that crossed a bridge are
    /// not sent to it, and what it publishes is not sent on over a bridge (`docs/bridges.md`,
    /// Loops).
    pub(crate) bridge: bool,
    /// What the session waits on, if anything: boxed, since a connected subscriber that does
    /// not publish at QoS 2 has none, and 48 B inline would be a quarter of the session.
    pending: Option<Box<Pending>>,
}

/// What a session holds only at times: its place among the offline sessions while its client
/// is away, a will waiting for its delay, QoS 2 publishes waiting for PUBREL. Allocated when
/// the first of them begins, dropped when the last ends.
#[derive(Default)]
struct Pending {
    /// Non-zero while offline: the ticket of this session in [`OfflineSessions`].
    offline_ticket: u64,
    /// While offline with a Session Expiry Interval: when the session ends, as the store
    /// writes it (`session_writes.rs`).
    offline_deadline: Option<Instant>,
    /// An MQTT 5 will waiting for its Will Delay Interval (§3.1.3.2.2) after the connection
    /// ended; dropped if the client comes back first [MQTT-3.1.3-9]. Its deadline sits in the
    /// broker's timers stamped with the offline ticket the session took when the connection
    /// ended, which the session keeps exactly as long as the will may still be published.
    delayed_will: Option<DelayedWill>,
    /// QoS 2 publishes received (PUBREC sent) whose PUBREL has not arrived: a PUBLISH with one
    /// of these ids is not delivered again ([MQTT-4.3.3-2], method B). At most
    /// `inbound_qos2_max`, so a linear search is cheap.
    inbound_qos2: Vec<PacketId>,
    /// Who the connection's credentials proved the client to be; none for anonymous clients.
    identity: Option<Arc<Identity>>,
    /// The topics it published to lately and whether the policy of that generation let it
    /// (boxed: only publishers under topic rules have them).
    publish_verdicts: Option<Box<PublishVerdicts>>,
    /// Under `sync`: the numbering of its tentative QoS 2 publishes, once it published one
    /// or was loaded with one (`origins.rs`); kept for the session's life. Boxed: few
    /// sessions publish at QoS 2, and every offline one has a `Pending`.
    origin_seq: Option<Box<OriginSeq>>,
    /// In cluster mode, while connected: the identities of the messages from the cluster it
    /// was sent lately (`message_ids.rs`). Boxed: only persistent sessions that receive QoS
    /// 1/2 messages in cluster mode have them.
    sent_ids: Option<Box<SentIds>>,
}

/// A will waiting for its Will Delay Interval, and when it is due: the store keeps the
/// deadline, so a will still waiting when the broker stops is published at it after a restart.
pub(crate) struct DelayedWill {
    pub(crate) message: Arc<RoutedMessage>,
    pub(crate) due: Instant,
}

/// A publisher's verdicts, so a feed that publishes to the same topics again and again is
/// checked once per topic.
struct PublishVerdicts {
    generation: u64,
    verdicts: HashMap<Box<str>, bool>,
}

/// Topics whose verdict a session remembers; past it they are forgotten and checked anew.
const PUBLISH_VERDICTS_MAX: usize = 64;

impl Pending {
    fn is_empty(&self) -> bool {
        self.offline_ticket == 0
            && self.offline_deadline.is_none()
            && self.delayed_will.is_none()
            && self.inbound_qos2.is_empty()
            && self.identity.is_none()
            && self.publish_verdicts.is_none()
            && self.origin_seq.is_none()
            && self.sent_ids.is_none()
    }
}

impl Session {
    pub(crate) fn new(client_id: &str, version: ProtocolVersion, expiry_s: u32) -> Session {
        Session {
            client_id: client_id.into(),
            version,
            expiry_s,
            conn: None,
            subscriptions: Subscriptions::default(),
            outbound: QosWindow::new(),
            match_stamp: 0,
            match_slot: 0,
            bridge: false,
            pending: None,
        }
    }

    /// Whether the session survives its connection.
    pub(crate) fn persistent(&self) -> bool {
        self.expiry_s > 0
    }

    /// Non-zero while offline: the ticket of this session in [`OfflineSessions`].
    pub(crate) fn offline_ticket(&self) -> u64 {
        self.pending
            .as_ref()
            .map_or(0, |pending| pending.offline_ticket)
    }

    /// When the offline session ends, if it has a Session Expiry Interval.
    pub(crate) fn offline_deadline(&self) -> Option<Instant> {
        self.pending.as_ref()?.offline_deadline
    }

    /// Sets when the session, offline, ends; cleared when it comes back.
    pub(crate) fn set_offline_deadline(&mut self, deadline: Instant) {
        assert_ne!(self.offline_ticket(), 0, "an offline session expires");
        self.pending_mut().offline_deadline = Some(deadline);
    }

    /// Holds `will` until the timer stamped with the session's offline ticket falls due at
    /// `due`; the session is offline.
    pub(crate) fn delay_will(&mut self, will: Arc<RoutedMessage>, due: Instant) {
        assert_ne!(self.offline_ticket(), 0, "a will is delayed while offline");
        self.pending_mut().delayed_will = Some(DelayedWill { message: will, due });
    }

    /// The will waiting for its delay, if any.
    pub(crate) fn delayed_will(&self) -> Option<&DelayedWill> {
        self.pending.as_ref()?.delayed_will.as_ref()
    }

    /// Whether the timer stamped `stamp` is the one the delayed will waits for.
    pub(crate) fn will_waits_for(&self, stamp: u64) -> bool {
        self.pending.as_ref().is_some_and(|pending| {
            pending.offline_ticket == stamp && pending.delayed_will.is_some()
        })
    }

    /// The delayed will, if the timer stamped `stamp` is the one it waits for.
    pub(crate) fn take_delayed_will(&mut self, stamp: u64) -> Option<Arc<RoutedMessage>> {
        if !self.will_waits_for(stamp) {
            return None;
        }
        let will = self.pending.as_mut()?.delayed_will.take();
        self.drop_pending_if_empty();
        will.map(|will| will.message)
    }

    /// The client is back: its delayed will is not published [MQTT-3.1.3-9].
    pub(crate) fn cancel_delayed_will(&mut self) {
        if let Some(pending) = self.pending.as_mut() {
            pending.delayed_will = None;
            self.drop_pending_if_empty();
        }
    }

    /// The delayed will of a session that ends, to publish now (§3.1.3.2.2: "or the Session
    /// ends, whichever happens first").
    pub(crate) fn into_delayed_will(self) -> Option<Arc<RoutedMessage>> {
        self.pending
            .and_then(|pending| pending.delayed_will)
            .map(|will| will.message)
    }

    pub(crate) fn identity(&self) -> Option<&Identity> {
        self.pending.as_ref()?.identity.as_deref()
    }

    /// The identity of the connection now attached (none: anonymous); what the last one
    /// published is judged again.
    pub(crate) fn set_identity(&mut self, identity: Option<Arc<Identity>>) {
        let pending = self.pending_mut();
        pending.identity = identity;
        pending.publish_verdicts = None;
        self.drop_pending_if_empty();
    }

    /// The remembered verdict on publishing to `topic` under policy `generation`.
    pub(crate) fn publish_verdict(&self, topic: &str, generation: u64) -> Option<bool> {
        let verdicts = self.pending.as_ref()?.publish_verdicts.as_ref()?;
        if verdicts.generation != generation {
            return None;
        }
        verdicts.verdicts.get(topic).copied()
    }

    pub(crate) fn remember_publish_verdict(&mut self, topic: &str, generation: u64, allowed: bool) {
        let verdicts = self.pending_mut().publish_verdicts.get_or_insert_with(|| {
            Box::new(PublishVerdicts {
                generation,
                verdicts: HashMap::new(),
            })
        });
        if verdicts.generation != generation || verdicts.verdicts.len() >= PUBLISH_VERDICTS_MAX {
            verdicts.generation = generation;
            verdicts.verdicts.clear();
        }
        verdicts.verdicts.insert(topic.into(), allowed);
    }

    /// Whether a QoS 2 publish with `id` was received and its PUBREL has not arrived.
    pub(crate) fn holds_inbound_qos2(&self, id: PacketId) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|pending| pending.inbound_qos2.contains(&id))
    }

    /// The QoS 2 publishes received and not released, oldest first.
    pub(crate) fn inbound_qos2(&self) -> &[PacketId] {
        self.pending
            .as_ref()
            .map_or(&[], |pending| &pending.inbound_qos2)
    }

    pub(crate) fn inbound_qos2_len(&self) -> usize {
        self.pending
            .as_ref()
            .map_or(0, |pending| pending.inbound_qos2.len())
    }

    /// A QoS 2 publish with `id` was received and PUBREC sent.
    pub(crate) fn hold_inbound_qos2(&mut self, id: PacketId) {
        self.pending_mut().inbound_qos2.push(id);
    }

    /// PUBREL for `id`: returns whether a QoS 2 publish was waiting for it.
    pub(crate) fn release_inbound_qos2(&mut self, id: PacketId) -> bool {
        let Some(pending) = self.pending.as_mut() else {
            return false;
        };
        let before = pending.inbound_qos2.len();
        pending.inbound_qos2.retain(|held| *held != id);
        let known = pending.inbound_qos2.len() < before;
        self.drop_pending_if_empty();
        known
    }

    /// The numbering of its tentative QoS 2 publishes (`origins.rs`).
    pub(crate) fn origin_seq(&self) -> OriginSeq {
        self.pending
            .as_ref()
            .and_then(|pending| pending.origin_seq.as_deref())
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn set_origin_seq(&mut self, seq: OriginSeq) {
        **self
            .pending_mut()
            .origin_seq
            .get_or_insert_with(Box::default) = seq;
    }

    /// Notes that the client was sent message `id` from the cluster (`message_ids.rs`).
    pub(crate) fn note_sent(&mut self, id: MessageId, now: Instant, window: SentWindow) {
        self.pending_mut()
            .sent_ids
            .get_or_insert_with(Box::default)
            .note(id, now, window);
    }

    /// The identities of the messages from the cluster its client was sent lately, oldest
    /// first.
    pub(crate) fn sent_ids(&self) -> Vec<MessageId> {
        self.pending
            .as_ref()
            .and_then(|pending| pending.sent_ids.as_ref())
            .map_or_else(Vec::new, |sent| sent.ids().collect())
    }

    fn pending_mut(&mut self) -> &mut Pending {
        self.pending.get_or_insert_with(Box::default)
    }

    /// Frees `pending` once the session waits on nothing.
    fn drop_pending_if_empty(&mut self) {
        if self
            .pending
            .as_ref()
            .is_some_and(|pending| pending.is_empty())
        {
            self.pending = None;
        }
    }
}

/// Filter → what was granted, for one session, as a vector searched linearly. Holds the
/// session's plain filters and its shared ones (`$share/{ShareName}/{filter}`) alike.
///
/// Most sessions of a fan-out service hold one to a few filters, and a `HashMap`'s table for
/// one entry (~130 B with its control bytes) was the largest part of an idle subscriber's
/// session; this holds one filter in 24 B (plus the filter's own bytes). The search is bounded
/// by `subscriptions_per_session_max` (1 024 by default: ~1 µs per SUBSCRIBE or UNSUBSCRIBE
/// filter at worst) and never on the publish path, which goes through the topic trie (a shared
/// delivery looks up one group filter of one session).
#[derive(Default)]
pub(crate) struct Subscriptions(Vec<(Box<str>, Grant)>);

impl Subscriptions {
    /// Below this many filters the vector grows one slot at a time, so a session with one
    /// filter holds one slot, not the four of a first `push`.
    const EXACT_GROWTH_MAX: usize = 4;

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn get(&self, filter: &str) -> Option<&Grant> {
        self.0
            .iter()
            .find(|(known, _)| **known == *filter)
            .map(|(_, grant)| grant)
    }

    pub(crate) fn contains_key(&self, filter: &str) -> bool {
        self.get(filter).is_some()
    }

    /// Sets what `filter` grants; returns the previous grant if it was already subscribed.
    pub(crate) fn insert(&mut self, filter: Box<str>, grant: Grant) -> Option<Grant> {
        if let Some((_, granted)) = self.0.iter_mut().find(|(known, _)| *known == filter) {
            return Some(std::mem::replace(granted, grant));
        }
        if self.0.len() < Subscriptions::EXACT_GROWTH_MAX {
            self.0.reserve_exact(1);
        }
        self.0.push((filter, grant));
        None
    }

    pub(crate) fn remove(&mut self, filter: &str) -> Option<Grant> {
        let index = self.0.iter().position(|(known, _)| **known == *filter)?;
        Some(self.0.swap_remove(index).1)
    }

    /// The filters and their grants, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Box<str>, &Grant)> {
        self.0.iter().map(|(filter, grant)| (filter, grant))
    }

    /// The filters, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Box<str>> {
        self.0.iter().map(|(filter, _)| filter)
    }
}

/// Persistent sessions whose client is away, oldest disconnection first.
///
/// Each disconnection takes a new ticket; a session that comes back or is discarded leaves a
/// stale entry behind, recognised because the session's ticket no longer matches. Stale
/// entries are compacted away once they outnumber live ones, so the queue stays O(offline).
pub(crate) struct OfflineSessions {
    order: VecDeque<(SessionKey, u64)>,
    count: usize,
    last_ticket: u64,
}

impl OfflineSessions {
    pub(crate) fn new() -> OfflineSessions {
        OfflineSessions {
            order: VecDeque::new(),
            count: 0,
            last_ticket: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Marks `session` offline from now on.
    pub(crate) fn push(&mut self, key: SessionKey, session: &mut Session) {
        assert_eq!(session.offline_ticket(), 0, "a session goes offline once");
        self.last_ticket += 1;
        session.pending_mut().offline_ticket = self.last_ticket;
        self.order.push_back((key, self.last_ticket));
        self.count += 1;
    }

    /// Marks `session` no longer offline (resumed or discarded).
    pub(crate) fn forget(&mut self, session: &mut Session) {
        if let Some(pending) = session.pending.as_mut().filter(|p| p.offline_ticket != 0) {
            pending.offline_ticket = 0;
            pending.offline_deadline = None;
            session.drop_pending_if_empty();
            self.count -= 1;
        }
    }

    /// The key of the session offline the longest, if more than `offline_max` are offline.
    /// The caller discards it (which calls `forget`).
    pub(crate) fn over_limit(
        &mut self,
        offline_max: usize,
        ticket_of: impl Fn(SessionKey) -> Option<u64>,
    ) -> Option<SessionKey> {
        if self.count <= offline_max {
            self.compact(&ticket_of);
            return None;
        }
        while let Some((key, ticket)) = self.order.pop_front() {
            if ticket_of(key) == Some(ticket) {
                return Some(key);
            }
        }
        debug_assert!(false, "count > 0 means a live entry is queued");
        None
    }

    fn compact(&mut self, ticket_of: &impl Fn(SessionKey) -> Option<u64>) {
        if self.order.len() > 2 * self.count + 64 {
            self.order
                .retain(|&(key, ticket)| ticket_of(key) == Some(ticket));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mqtt::{QoS, SubscriptionOptions};

    fn grant(qos: QoS, id: u32) -> Grant {
        Grant::new(SubscriptionOptions::new(qos), id)
    }

    #[test]
    fn subscriptions_insert_replace_remove() {
        let mut subscriptions = Subscriptions::default();
        let a0 = grant(QoS::AtMostOnce, 0);
        let a2 = grant(QoS::ExactlyOnce, 7);
        let b1 = grant(QoS::AtLeastOnce, 0);
        assert_eq!(subscriptions.insert("a/#".into(), a0), None);
        assert_eq!(subscriptions.insert("$share/g/b".into(), b1), None);
        assert_eq!(subscriptions.insert("a/#".into(), a2), Some(a0));
        assert_eq!(subscriptions.len(), 2);
        assert_eq!(subscriptions.get("a/#"), Some(&a2));
        assert!(subscriptions.contains_key("$share/g/b"));
        assert!(!subscriptions.contains_key("a"));
        assert_eq!(subscriptions.remove("a/#"), Some(a2));
        assert_eq!(subscriptions.remove("a/#"), None);
        let keys: Vec<&str> = subscriptions.keys().map(|filter| &**filter).collect();
        assert_eq!(keys, ["$share/g/b"]);
    }

    #[test]
    fn subscriptions_grow_one_slot_at_a_time_while_small() {
        let mut subscriptions = Subscriptions::default();
        subscriptions.insert("a".into(), grant(QoS::AtMostOnce, 0));
        assert_eq!(subscriptions.0.capacity(), 1);
        subscriptions.insert("b".into(), grant(QoS::AtMostOnce, 0));
        assert_eq!(subscriptions.0.capacity(), 2);
    }

    #[test]
    fn pending_is_allocated_only_while_the_session_waits_on_something() {
        let id = |value| PacketId::new(value).expect("non-zero");
        let mut session = Session::new("c", ProtocolVersion::V5, 60);
        assert!(session.pending.is_none());
        session.hold_inbound_qos2(id(1));
        assert!(session.holds_inbound_qos2(id(1)));
        assert!(!session.release_inbound_qos2(id(2)));
        assert!(session.release_inbound_qos2(id(1)));
        assert!(session.pending.is_none());

        let key = crate::slots::Slots::<SessionKey, ()>::default().insert(());
        let mut offline = OfflineSessions::new();
        offline.push(key, &mut session);
        let ticket = session.offline_ticket();
        let will = Arc::new(RoutedMessage::new("w", b"", QoS::AtMostOnce, false));
        session.delay_will(will, Instant::now());
        assert!(session.will_waits_for(ticket));
        assert!(!session.will_waits_for(ticket + 1));
        offline.forget(&mut session);
        assert_eq!(session.offline_ticket(), 0);
        assert!(session.pending.is_some(), "the will waits until cancelled");
        session.cancel_delayed_will();
        assert!(session.pending.is_none());
    }

    /// The entry sizes the budget in the module documentation counts.
    #[test]
    fn budget_sizes() {
        assert_eq!(std::mem::size_of::<Grant>(), 8);
        assert_eq!(std::mem::size_of::<(Box<str>, Grant)>(), 24);
        assert_eq!(std::mem::size_of::<(SessionKey, Grant)>(), 16);
        assert_eq!(std::mem::size_of::<Subscriptions>(), 24);
        assert_eq!(std::mem::size_of::<Session>(), 168);
        assert_eq!(crate::slots::slot_bytes::<Session>(), 176);
        assert_eq!(std::mem::size_of::<Pending>(), 104);
    }
}
