//! A session ([MQTT-3.1.2-4]): what the broker remembers about a client identifier, and the
//! connection currently attached to it, if any.
//!
//! A session with clean session = 1 lives exactly as long as its connection; one with clean
//! session = 0 outlives it and waits, offline, for the client to come back. Offline sessions are
//! bounded per shard (`offline_sessions_per_shard_max`); past it the one disconnected longest
//! ago is evicted, which is allowed since 3.1.1 leaves how long a session is kept to the server.
//!
//! Memory budget of one connected, idle subscriber with one filter of its own (a ~20-byte client
//! identifier and filter), x86-64, 19 000 per shard; table slots count their buckets at the
//! load a power-of-two table has at that size (19 000 of 32 768):
//!
//! | what | bytes | note |
//! |---|---|---|
//! | `Session` in the slab | 200 | 192 + generation; `Outbound` (80) holds no allocation while empty |
//! | client identifier | 32 | `Box<str>`, mimalloc size class |
//! | `subscriptions` | 32 + 32 | one slot ([`Subscriptions`] grows one at a time below 4) + the filter |
//! | `client_ids` entry | 45 + 32 | (`Box<str>`, `SessionKey`) bucket + its own copy of the identifier |
//! | `connections` entry | 110 | (`ConnId`, [`Connection`] 56) bucket |
//! | keep-alive deadline | 40 | (`Instant`, `ConnId`) in the heap |
//! | trie node of the filter | 160 + 16 + 16 | node, its level, one subscriber slot (no position index below 32) |
//! | parent's child entry | 45 + 16 | bucket + the level as key |
//! | **broker total** | **≈ 780** | |
//!
//! The network side adds ≈ 580 B (`net/connection.rs`), so ≈ 1.35 KB is accounted for; the
//! 1.9 KB measured per connection over 19 000 (docs/benchmarks.md) also holds allocator slack
//! and the pages of the shard's 4 MiB receive-buffer ring the first connections touch (≈ 220 B
//! per connection at 19 000, not a per-connection cost). Before [`Subscriptions`] and the
//! trie's lazy position index, two one-entry `HashMap`s cost ≈ 700 B more (2.6 KB measured).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::outbound::Outbound;
use super::outbox::{ConnId, RoutedMessage, Transport};
use super::slab::SessionKey;
use crate::protocol::mqtt::{PacketId, ProtocolVersion, QoS};

pub(crate) struct Session {
    pub(crate) client_id: Box<str>,
    /// The protocol of the last connection: kept per session so MQTT 5 session state (expiry,
    /// properties) has a place to go.
    pub(crate) version: ProtocolVersion,
    /// Clean session = 0: the session survives its connection.
    pub(crate) persistent: bool,
    pub(crate) conn: Option<ConnId>,
    /// Filter → granted QoS, mirrored in the topic trie. At most
    /// `subscriptions_per_session_max` entries.
    pub(crate) subscriptions: Subscriptions,
    pub(crate) outbound: Outbound,
    /// QoS 2 publishes received (PUBREC sent) whose PUBREL has not arrived: a PUBLISH with one
    /// of these ids is not delivered again ([MQTT-4.3.3-2], method B). At most
    /// `inbound_qos2_max`, so a linear search is cheap.
    pub(crate) inbound_qos2: Vec<PacketId>,
    /// Non-zero while offline: the ticket of this session in `OfflineSessions`.
    pub(crate) offline_ticket: u64,
    /// The fan-out sequence number of the last publish that matched this session, and where
    /// its entry sits in the broker's match list: dedups overlapping subscriptions without
    /// allocating per publish.
    pub(crate) match_stamp: u64,
    pub(crate) match_slot: usize,
}

impl Session {
    pub(crate) fn new(client_id: &str, version: ProtocolVersion, persistent: bool) -> Session {
        Session {
            client_id: client_id.into(),
            version,
            persistent,
            conn: None,
            subscriptions: Subscriptions::default(),
            outbound: Outbound::new(),
            inbound_qos2: Vec::new(),
            offline_ticket: 0,
            match_stamp: 0,
            match_slot: 0,
        }
    }
}

/// Filter → granted QoS of one session, as a vector searched linearly.
///
/// Most sessions of a fan-out service hold one to a few filters, and a `HashMap`'s table for
/// one entry (~130 B with its control bytes) was the largest part of an idle subscriber's
/// session; this holds one filter in 24 B (plus the filter's own bytes). The search is bounded
/// by `subscriptions_per_session_max` (1 024 by default: ~1 µs per SUBSCRIBE or UNSUBSCRIBE
/// filter at worst) and never on the publish path, which goes through the topic trie.
#[derive(Default)]
pub(crate) struct Subscriptions(Vec<(Box<str>, QoS)>);

impl Subscriptions {
    /// Below this many filters the vector grows one slot at a time, so a session with one
    /// filter holds one slot, not the four of a first `push`.
    const EXACT_GROWTH_MAX: usize = 4;

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn contains_key(&self, filter: &str) -> bool {
        self.0.iter().any(|(known, _)| **known == *filter)
    }

    /// Sets the QoS of `filter`; returns the previous one if it was already subscribed.
    pub(crate) fn insert(&mut self, filter: Box<str>, qos: QoS) -> Option<QoS> {
        if let Some((_, granted)) = self.0.iter_mut().find(|(known, _)| *known == filter) {
            return Some(std::mem::replace(granted, qos));
        }
        if self.0.len() < Subscriptions::EXACT_GROWTH_MAX {
            self.0.reserve_exact(1);
        }
        self.0.push((filter, qos));
        None
    }

    pub(crate) fn remove(&mut self, filter: &str) -> Option<QoS> {
        let index = self.0.iter().position(|(known, _)| **known == *filter)?;
        Some(self.0.swap_remove(index).1)
    }

    /// The filters, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Box<str>> {
        self.0.iter().map(|(filter, _)| filter)
    }
}

/// A network connection that sent an accepted CONNECT.
pub(crate) struct Connection {
    pub(crate) session: SessionKey,
    pub(crate) transport: Transport,
    pub(crate) version: ProtocolVersion,
    /// 1.5 × the keep-alive the client asked for, or `None` when it asked for 0 (no timeout)
    /// [MQTT-3.1.2-24].
    pub(crate) keep_alive_grace: Option<Duration>,
    pub(crate) last_packet_at: Instant,
    /// Cleared by DISCONNECT [MQTT-3.1.2-10].
    pub(crate) will: Option<Arc<RoutedMessage>>,
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
        assert_eq!(session.offline_ticket, 0, "a session goes offline once");
        self.last_ticket += 1;
        session.offline_ticket = self.last_ticket;
        self.order.push_back((key, self.last_ticket));
        self.count += 1;
    }

    /// Marks `session` no longer offline (resumed or discarded).
    pub(crate) fn forget(&mut self, session: &mut Session) {
        if session.offline_ticket != 0 {
            session.offline_ticket = 0;
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

    #[test]
    fn subscriptions_insert_replace_remove() {
        let mut subscriptions = Subscriptions::default();
        assert_eq!(subscriptions.insert("a/#".into(), QoS::AtMostOnce), None);
        assert_eq!(subscriptions.insert("b".into(), QoS::AtLeastOnce), None);
        assert_eq!(
            subscriptions.insert("a/#".into(), QoS::ExactlyOnce),
            Some(QoS::AtMostOnce)
        );
        assert_eq!(subscriptions.len(), 2);
        assert!(subscriptions.contains_key("b"));
        assert!(!subscriptions.contains_key("a"));
        assert_eq!(subscriptions.remove("a/#"), Some(QoS::ExactlyOnce));
        assert_eq!(subscriptions.remove("a/#"), None);
        let keys: Vec<&str> = subscriptions.keys().map(|filter| &**filter).collect();
        assert_eq!(keys, ["b"]);
    }
}
