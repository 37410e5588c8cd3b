//! What the operations listener asks of one shard's broker (`crate::admin`): its clients, one
//! client's state, ending a connection, and who would receive a topic.
//!
//! None of this runs on the fan-out path: the shard calls these between packets, when the admin
//! thread asks (`shard/admin_requests.rs`). A listing walks every session of the shard once,
//! keeping the `limit` smallest client identifiers past the cursor in a heap: O(sessions ×
//! log limit) time, O(limit) memory, whatever the number of sessions.

use std::collections::BinaryHeap;
use std::time::Instant;

use super::Broker;
use super::outbox::{CloseReason, Outbox};
use super::share_groups;
use super::subscription::Grant;
use crate::conn::{ConnId, Transport};
use crate::protocol::mqtt::topic::filter_matches;
use crate::protocol::mqtt::{ProtocolVersion, QoS, ReasonCode};

/// Which sessions a listing wants: a client identifier prefix, an authenticated user, and a
/// cursor (the last identifier of the previous page). `None` filters nothing.
#[derive(Debug, Clone, Default)]
pub struct ClientFilter {
    pub prefix: Option<Box<str>>,
    pub user: Option<Box<str>>,
    pub after: Option<Box<str>>,
}

/// One session as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub client_id: Box<str>,
    /// The user its credentials proved; `None` for anonymous clients.
    pub user: Option<Box<str>>,
    /// Its connection, `None` while the session waits offline.
    pub conn: Option<ConnId>,
    /// Over TCP or WebSocket, while connected.
    pub transport: Option<Transport>,
    pub version: ProtocolVersion,
    pub subscriptions: usize,
}

/// One subscription with its options (MQTT 5 §3.8.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    pub filter: Box<str>,
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// The Subscription Identifier, 0 when none.
    pub subscription_id: u32,
}

impl SubscriptionRow {
    fn new(filter: &str, grant: &Grant) -> SubscriptionRow {
        SubscriptionRow {
            filter: filter.into(),
            qos: grant.qos,
            no_local: grant.no_local,
            retain_as_published: grant.retain_as_published,
            subscription_id: grant.id,
        }
    }
}

/// One session in detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientDetail {
    pub row: ClientRow,
    /// How long the session outlives its connection (`u32::MAX`: until evicted).
    pub session_expiry_s: u32,
    pub subscriptions: Vec<SubscriptionRow>,
    /// QoS 1/2 publishes sent and not yet acknowledged.
    pub inflight: usize,
    /// QoS 1/2 publishes waiting for room in the in-flight window, and their bytes.
    pub queued_messages: usize,
    pub queued_bytes: u64,
}

/// A session that would receive a topic, through one of its filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub client_id: Box<str>,
    pub conn: Option<ConnId>,
    pub subscription: SubscriptionRow,
}

/// What a kick found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// The connection is closing; an MQTT 5 client was told 0x98 Administrative action.
    Closed(ConnId),
    /// The session exists but waits offline: no connection to end.
    Offline,
    Unknown,
}

/// Why an administrator's kick closes a connection.
pub(crate) const KICKED: CloseReason = CloseReason::Refused(
    ReasonCode::ADMINISTRATIVE_ACTION,
    "an administrator ended the connection",
);

impl Broker {
    /// Up to `limit` sessions that `filter` and `keep` (given the session's connection) accept,
    /// by client identifier in byte order, past `filter.after`.
    pub fn client_rows(
        &self,
        filter: &ClientFilter,
        limit: usize,
        keep: impl Fn(Option<ConnId>) -> bool,
    ) -> Vec<ClientRow> {
        let mut smallest: BinaryHeap<Box<str>> = BinaryHeap::new();
        for key in self.sessions.keys() {
            let Some(session) = self.sessions.get(key) else {
                continue;
            };
            let id = &*session.client_id;
            let wanted = filter.prefix.as_deref().is_none_or(|p| id.starts_with(p))
                && filter.after.as_deref().is_none_or(|after| id > after)
                && filter.user.as_deref().is_none_or(|user| {
                    session
                        .identity()
                        .is_some_and(|identity| *identity.user == *user)
                })
                && keep(session.conn);
            let full = smallest.len() >= limit;
            if !wanted || full && smallest.peek().is_some_and(|top| **top <= *id) {
                continue;
            }
            smallest.push(id.into());
            if smallest.len() > limit {
                smallest.pop();
            }
        }
        let ids = smallest.into_sorted_vec();
        ids.iter().filter_map(|id| self.client_row(id)).collect()
    }

    fn client_row(&self, client_id: &str) -> Option<ClientRow> {
        let key = self.client_ids.get(client_id, &self.sessions)?;
        let session = self.sessions.get(key)?;
        let client = session.conn.and_then(|conn| self.clients.get(conn));
        Some(ClientRow {
            client_id: session.client_id.clone(),
            user: session.identity().map(|identity| identity.user.clone()),
            conn: session.conn,
            transport: client.map(|client| client.transport),
            version: session.version,
            subscriptions: session.subscriptions.len(),
        })
    }

    /// The session named `client_id`, if this shard holds it.
    pub fn client_detail(&self, client_id: &str) -> Option<ClientDetail> {
        let row = self.client_row(client_id)?;
        let key = self.client_ids.get(client_id, &self.sessions)?;
        let session = self.sessions.get(key)?;
        let mut subscriptions: Vec<SubscriptionRow> = session
            .subscriptions
            .keys()
            .filter_map(|filter| {
                let grant = session.subscriptions.get(filter)?;
                Some(SubscriptionRow::new(filter, grant))
            })
            .collect();
        subscriptions.sort_unstable_by(|a, b| a.filter.cmp(&b.filter));
        Some(ClientDetail {
            row,
            session_expiry_s: session.expiry_s,
            subscriptions,
            inflight: session.outbound.inflight_len(),
            queued_messages: session.outbound.queue_len(),
            queued_bytes: session.outbound.queue_bytes(),
        })
    }

    /// Ends the connection of `client_id`, as a server-initiated DISCONNECT: its will is
    /// published, its session stays for its expiry like after any lost connection.
    pub fn kick(&mut self, client_id: &str, now: Instant, out: &mut Outbox) -> Kick {
        let Some(key) = self.client_ids.get(client_id, &self.sessions) else {
            return Kick::Unknown;
        };
        let Some(conn) = self.sessions.get(key).and_then(|session| session.conn) else {
            return Kick::Offline;
        };
        self.end_connection(conn, Some(KICKED), true, now, out);
        Kick::Closed(conn)
    }

    /// Up to `limit` (session, filter) pairs of this shard whose plain filter matches the topic
    /// name `topic`, and whether more were left out. Shared subscriptions are in
    /// [`Broker::shared_groups_matching`], since one member of a group gets each message.
    pub fn subscribers(&mut self, topic: &str, limit: usize) -> (Vec<Subscriber>, bool) {
        let mut keys = Vec::new();
        self.trie
            .for_each_match(topic, &mut self.match_stack, |key, _| keys.push(key));
        keys.sort_unstable();
        keys.dedup();
        let mut found = Vec::new();
        let mut truncated = false;
        for key in keys {
            let Some(session) = self.sessions.get(key) else {
                continue;
            };
            for filter in session.subscriptions.keys() {
                let plain = share_groups::parse(filter).is_none();
                let Some(grant) = session.subscriptions.get(filter) else {
                    continue;
                };
                if !plain || !filter_matches(filter, topic) {
                    continue;
                }
                if found.len() == limit {
                    truncated = true;
                    break;
                }
                found.push(Subscriber {
                    client_id: session.client_id.clone(),
                    conn: session.conn,
                    subscription: SubscriptionRow::new(filter, grant),
                });
            }
        }
        (found, truncated)
    }
}
