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
//! offline session, the subscriptions with their options and identifiers, and the QoS 1/2
//! messages still to deliver, unacknowledged ones first. Not kept (`docs/persistence.md`):
//! packet identifiers and PUBREL state (an unacknowledged message is delivered again as a new
//! one after a restart: QoS 1 is at least once), inbound QoS 2 state, delayed wills.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::outbox::RoutedMessage;
use super::qos_window::Queued;
use super::session::{SESSION_NEVER_EXPIRES_S, Session, SessionKey};
use super::share_groups::SHARED_PREFIX;
use super::subscription::{Grant, SubscriptionIds};
use super::{Broker, Outbox};
use crate::protocol::mqtt::{ProtocolVersion, QoS, SubscriptionOptions};

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
    pub subscriptions: Vec<SubscriptionImage>,
    /// In delivery order.
    pub messages: Vec<QueuedImage>,
}

/// A session to write: its whole state, or ended.
#[derive(Debug, Clone)]
pub enum SessionWrite {
    Set(SessionImage),
    Ended(Box<str>),
}

#[derive(Default)]
pub(crate) struct SessionWrites {
    changed: HashSet<SessionKey>,
    ended: HashSet<Box<str>>,
}

impl SessionWrites {
    /// Notes that session `key` changed; cheap enough for the delivery path (a set of 8-byte
    /// keys, bounded by the shard's sessions).
    pub(crate) fn note(&mut self, key: SessionKey) {
        self.changed.insert(key);
    }
}

fn image(session: &Session) -> SessionImage {
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
        .map(|queued| QueuedImage {
            message: queued.message,
            qos: queued.qos,
            retain: queued.retain,
            ids: queued.ids.as_slice().to_vec(),
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
        subscriptions,
        messages,
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

    /// Notes that the persistent session of `client_id` ended.
    pub(super) fn note_session_ended(&mut self, client_id: &str) {
        if let Some(writes) = self.session_writes.as_mut() {
            writes.ended.insert(client_id.into());
        }
    }

    /// Whether session changes wait for the next flush.
    pub fn session_writes_pending(&self) -> bool {
        self.session_writes
            .as_ref()
            .is_some_and(|writes| !writes.changed.is_empty() || !writes.ended.is_empty())
    }

    /// The sessions changed since the last flush: ended ones first, so that a session ended
    /// and begun again under the same identifier in one flush is written as begun.
    pub fn take_session_writes(&mut self) -> Vec<SessionWrite> {
        let Some(writes) = self.session_writes.as_mut() else {
            return Vec::new();
        };
        let mut taken: Vec<SessionWrite> = writes.ended.drain().map(SessionWrite::Ended).collect();
        for key in writes.changed.drain() {
            let Some(session) = self.sessions.get(key) else {
                // Ended: noted in `ended` by its identifier.
                continue;
            };
            taken.push(match session.persistent() {
                true => SessionWrite::Set(image(session)),
                // A session that was persistent may come back with a clean one.
                false => SessionWrite::Ended(session.client_id.clone()),
            });
        }
        taken
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
            }
        }
    }

    /// Restores the sessions the store loaded at start-up, offline, with their expiry running
    /// from their deadline. They are on disk already, so they are not noted.
    pub fn load_sessions(&mut self, images: &[SessionImage], now: Instant, out: &mut Outbox) {
        self.now = now;
        for image in images {
            if self
                .client_ids
                .get(&image.client_id, &self.sessions)
                .is_some()
            {
                continue;
            }
            let mut session = Session::new(&image.client_id, image.version, image.expiry_s);
            let queue_bytes_max = self.limits.session_queue_bytes_max;
            for queued in &image.messages {
                let mut ids = SubscriptionIds::default();
                for &id in &queued.ids {
                    ids.push(id);
                }
                let queued = Queued {
                    message: Arc::clone(&queued.message),
                    qos: queued.qos,
                    retain: queued.retain,
                    ids,
                };
                self.stats.session_queue_dropped +=
                    session.outbound.enqueue(queued, queue_bytes_max);
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
            if image.expiry_s == SESSION_NEVER_EXPIRES_S {
                continue;
            }
            let deadline = image
                .expires_at
                .unwrap_or_else(|| now + Duration::from_secs(image.expiry_s.into()));
            session.set_offline_deadline(deadline);
            let left = deadline.saturating_duration_since(now);
            let left_s = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            let left_s = u32::try_from(left_s).unwrap_or(u32::MAX);
            let ticket = session.offline_ticket();
            self.timers.push(
                now,
                left_s,
                key,
                ticket,
                super::timers::TimerKind::SessionExpiry,
            );
        }
    }
}
