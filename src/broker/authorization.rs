//! Topic rules applied by the broker: a SUBSCRIBE filter is granted only when every topic it
//! can match is readable, a PUBLISH is judged once on receipt (each session remembers its
//! verdict per topic), and nothing is checked per delivery: a message reaches exactly the
//! subscriptions the rules let in. A reload that takes a right away removes the subscriptions
//! it no longer allows.

use std::sync::Arc;
use std::time::Duration;

use super::Broker;
use super::outbox::{Denial, Outbox};
use super::session::SessionKey;
use super::share_groups;
use super::timers::TimerKind;
use crate::auth::{Identity, Policy};
use crate::conn::ConnId;

impl Broker {
    /// The identity the connection's credentials proved; until called, the client is
    /// anonymous. `expires_in`: the connection ends then, its token no longer valid (MQTT 5
    /// gets DISCONNECT 0xA0 Maximum connect time).
    pub fn set_identity(
        &mut self,
        conn: ConnId,
        identity: Arc<Identity>,
        expires_in: Option<Duration>,
    ) {
        let Some(key) = self.clients.get(conn).map(|client| client.session) else {
            return;
        };
        if let Some(session) = self.sessions.get_mut(key) {
            session.set_identity(Some(identity));
        }
        if let Some(expires_in) = expires_in {
            // Whole seconds, rounded up: never before the token's own `exp`.
            let after_s = expires_in.as_secs() + u64::from(expires_in.subsec_nanos() > 0);
            let after_s = u32::try_from(after_s).unwrap_or(u32::MAX);
            let stamp = stamp_of_conn(conn);
            let kind = TimerKind::TokenExpiry;
            self.timers.push(self.now, after_s, key, stamp, kind);
        }
    }

    /// The topic rules in force; `None`, or a policy without rules: every client may use
    /// every topic. Subscriptions the new rules refuse are removed.
    pub fn set_policy(&mut self, policy: Option<Arc<Policy>>, out: &mut Outbox) {
        self.policy = policy.filter(|policy| policy.has_rules());
        let Some(policy) = self.policy.clone() else {
            return;
        };
        let mut revoked = Vec::new();
        for key in self.sessions.keys() {
            let Some(session) = self.sessions.get(key) else {
                continue;
            };
            let identity = session.identity();
            for filter in session.subscriptions.keys() {
                if !policy.may_subscribe(identity, &session.client_id, rules_filter(filter)) {
                    revoked.push((key, Box::<str>::from(&**filter)));
                }
            }
        }
        for (key, filter) in revoked {
            self.stats.subscriptions_revoked += 1;
            if let Some(session) = self.sessions.get_mut(key) {
                session.subscriptions.remove(&filter);
            }
            if filter.starts_with(share_groups::SHARED_PREFIX) {
                self.share_leave(key, &filter, out);
            } else {
                self.trie.remove(&filter, key);
            }
        }
    }

    /// Whether the session's client may subscribe to `filter` (a shared subscription's
    /// filter is judged without its `$share/GROUP/` prefix).
    pub(super) fn may_subscribe(&self, key: SessionKey, filter: &str) -> bool {
        let (Some(policy), Some(session)) = (&self.policy, self.sessions.get(key)) else {
            return true;
        };
        policy.may_subscribe(session.identity(), &session.client_id, rules_filter(filter))
    }

    /// Whether the session's client may publish to `topic`, remembered per topic. Under
    /// topic rules, topics starting with `$` are the server's whatever the rules say; without
    /// any, every client may do everything, as anyone reaching the port may.
    pub(super) fn may_publish(&mut self, key: SessionKey, topic: &str) -> bool {
        let Some(policy) = &self.policy else {
            return true;
        };
        let Some(session) = self.sessions.get_mut(key) else {
            return false;
        };
        if let Some(allowed) = session.publish_verdict(topic, policy.generation) {
            return allowed;
        }
        let allowed = policy.may_publish(session.identity(), &session.client_id, topic);
        session.remember_publish_verdict(topic, policy.generation, allowed);
        allowed
    }
}

impl Broker {
    /// Reports the first denial of a connection, for its one log line; later ones are only
    /// counted.
    pub(super) fn report_denial(&mut self, conn: ConnId, denial: Denial, out: &mut Outbox) {
        if let Some(client) = self.clients.get_mut(conn)
            && !std::mem::replace(&mut client.denial_reported, true)
        {
            out.denials.push((conn, denial));
        }
    }
}

/// A connection as a timer stamp, and back.
fn stamp_of_conn(conn: ConnId) -> u64 {
    (u64::from(conn.generation()) << 32) | conn.index() as u64
}

pub(super) fn conn_of_stamp(stamp: u64) -> ConnId {
    ConnId::new(stamp as u32, (stamp >> 32) as u32)
}

/// The filter the rules judge: a shared subscription's own filter.
fn rules_filter(filter: &str) -> &str {
    match share_groups::parse(filter) {
        Some(Ok((_, shared))) => shared,
        _ => filter,
    }
}
