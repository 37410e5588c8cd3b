//! Under `durability = "sync"`: QoS 2 publishes of persistent sessions, tentative until their
//! inbound packet identifier is on disk (`docs/persistence.md`, "Acknowledgements under
//! sync").
//!
//! The identifier of a routed QoS 2 publish is written only once the message is durable on
//! every shard (`held_acks.rs`). A crash between the two would leave the message in its
//! subscribers' sessions and the identifier unknown: the publisher, which got no PUBREC, sends
//! the PUBLISH again and it is routed a second time. So such a publish gets an [`Origin`]: its
//! session (client identifier and incarnation) and a number the session gives its publishes
//! in order. Every copy queued for a session carries it in its record, and the publisher's
//! session writes "committed up to n" in the same record as the identifier. At load a copy
//! whose publisher's session did not commit it is dropped (`store/uncommitted.rs`): its
//! publisher sends it again, and it is routed once.
//!
//! Until its commit is on disk, a copy is **tentative**: a persistent session does not send it
//! at QoS 2 (nor what is queued behind it), since a client that received it would keep it
//! while a crash drops it from the session, and the resend would reach it a second time. Once
//! the flush holding the commit is durable, the publisher's shard marks the origin committed
//! (a flag shared by every copy) and tells every shard to send what waited for it.
//!
//! Bounded: the origins waiting for their commit are those of held PUBRECs, at most
//! connections × `inbound_qos2_max` (`held_acks.rs`); the sessions waiting for them are at
//! most the sessions of this shard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Broker;
use super::outbox::{Outbox, RoutedMessage};
use super::session::SessionKey;
use crate::protocol::mqtt::QoS;

/// Where a tentative QoS 2 publish came from: the publisher's session and the publish's
/// number in it.
#[derive(Debug)]
pub struct Origin {
    pub client_id: Box<str>,
    /// Tells this session from an earlier or later one of the same client identifier.
    pub incarnation: u64,
    /// The publish's number among its session's, from 1, in the order they were routed.
    pub seq: u64,
    /// Set once the commit is on disk; never cleared.
    committed: AtomicBool,
}

impl Origin {
    pub fn new(client_id: &str, incarnation: u64, seq: u64) -> Origin {
        Origin {
            client_id: client_id.into(),
            incarnation,
            seq,
            committed: AtomicBool::new(false),
        }
    }

    /// Whether the commit is on disk: a copy needs its origin no longer.
    pub fn committed(&self) -> bool {
        // Acquire: pairs with the release in `mark_committed`, so a shard that sees the flag
        // sees it after the commit was reported durable.
        self.committed.load(Ordering::Acquire)
    }

    /// The commit is on disk: every copy may be sent, and is written without its origin.
    pub(crate) fn mark_committed(&self) {
        self.committed.store(true, Ordering::Release);
    }
}

/// Origins are equal when they name the same publish; the flag follows.
impl PartialEq for Origin {
    fn eq(&self, other: &Origin) -> bool {
        (&self.client_id, self.incarnation, self.seq)
            == (&other.client_id, other.incarnation, other.seq)
    }
}

impl Eq for Origin {}

/// A persistent session's numbering of its tentative publishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OriginSeq {
    /// Non-zero once the session numbered a publish.
    pub(crate) incarnation: u64,
    /// The last number given.
    pub(crate) issued: u64,
    /// Every publish up to this number is committed; written with the session.
    pub(crate) committed: u64,
}

/// A new incarnation: random, so that a session begun again under the same client identifier
/// (on this broker or after a restart) is told apart from the old one. Never 0 (none).
fn new_incarnation() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0; 8];
    let random = ring::rand::SystemRandom::new().fill(&mut bytes);
    // Without the system's randomness (never seen on Linux), the clock's nanoseconds.
    let value = random
        .map(|()| u64::from_le_bytes(bytes))
        .unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |since| since.as_nanos() as u64)
        });
    value.max(1)
}

/// Whether `message`, delivered at `qos` to a session (`persistent` or not), waits for its
/// publisher's commit before it is sent. A QoS 1 copy goes at once: a crash drops it and the
/// resend brings it again, a duplicate QoS 1 allows. A clean session does not outlive a
/// crash, so the resend reaches a new one.
pub(crate) fn waits_for_commit(persistent: bool, qos: QoS, message: &RoutedMessage) -> bool {
    persistent
        && qos == QoS::ExactlyOnce
        && message
            .origin
            .as_ref()
            .is_some_and(|origin| !origin.committed())
}

impl Broker {
    /// The origin of a QoS 2 publish that session `key` routes now, if it is to be tentative:
    /// under `sync`, from a persistent session.
    pub(super) fn new_origin(&mut self, key: SessionKey) -> Option<Arc<Origin>> {
        self.held_acks.as_ref()?;
        let session = self.sessions.get_mut(key).filter(|s| s.persistent())?;
        let mut seq = session.origin_seq();
        if seq.incarnation == 0 {
            seq.incarnation = new_incarnation();
        }
        seq.issued += 1;
        session.set_origin_seq(seq);
        Some(Arc::new(Origin::new(
            &session.client_id,
            seq.incarnation,
            seq.issued,
        )))
    }

    /// In cluster mode under `sync`, a new persistent session draws its incarnation at once
    /// rather than at its first QoS 2 publish, so that every image of it in the cluster's
    /// bucket carries it: should this node die, the node the session moves to numbers the
    /// client's resends as this one numbered the originals (`message_ids.rs`). Drawn at the
    /// first publish, it could be missing from the image the other node loads.
    pub(super) fn draw_incarnation_early(&mut self, key: SessionKey) {
        if self.held_acks.is_none() || self.message_ids.is_none() {
            return;
        }
        if let Some(session) = self.sessions.get_mut(key).filter(|s| s.persistent()) {
            session.set_origin_seq(OriginSeq {
                incarnation: new_incarnation(),
                ..OriginSeq::default()
            });
        }
    }

    /// The PUBREC of `origin`'s publish is released: its session writes the commit with the
    /// identifier at the next flush, and the origin is marked committed once that flush is
    /// durable ([`Broker::take_commits`]).
    pub(super) fn commit_origin(&mut self, key: SessionKey, origin: Arc<Origin>) {
        if let Some(session) = self.sessions.get_mut(key) {
            let mut seq = session.origin_seq();
            if seq.incarnation == origin.incarnation {
                seq.committed = seq.committed.max(origin.seq);
                session.set_origin_seq(seq);
            }
        }
        // A session gone meanwhile still needs the flush: its end may not be on disk yet.
        self.commits.push(origin);
    }

    /// Whether commits wait for the next flush.
    pub fn commits_pending(&self) -> bool {
        !self.commits.is_empty()
    }

    /// The commits the next flush writes: once it is durable, the shard hands them back to
    /// [`Broker::committed`].
    pub fn take_commits(&mut self) -> Vec<Arc<Origin>> {
        std::mem::take(&mut self.commits)
    }

    /// `origins` are committed on disk: what waited for them on this shard is sent, and the
    /// caller tells the other shards ([`Broker::commits_durable`] there).
    pub fn committed(&mut self, origins: &[Arc<Origin>], out: &mut Outbox) {
        for origin in origins {
            origin.mark_committed();
        }
        self.commits_durable(out);
    }

    /// Some origins were committed (here or on another shard): sessions whose queue waited
    /// for one send what they can now.
    pub fn commits_durable(&mut self, out: &mut Outbox) {
        let waiting = std::mem::take(&mut self.waiting_for_commit);
        for key in waiting {
            // Puts the session back if its queue still waits.
            self.drain_queue(key, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_qos2_copy_to_a_persistent_session_waits_until_committed() {
        let mut message = RoutedMessage::new("t", b"x", QoS::ExactlyOnce, false);
        assert!(!waits_for_commit(true, QoS::ExactlyOnce, &message));
        let origin = Arc::new(Origin::new("pub", 7, 1));
        message.origin = Some(Arc::clone(&origin));
        assert!(waits_for_commit(true, QoS::ExactlyOnce, &message));
        assert!(!waits_for_commit(false, QoS::ExactlyOnce, &message));
        assert!(!waits_for_commit(true, QoS::AtLeastOnce, &message));
        origin.mark_committed();
        assert!(!waits_for_commit(true, QoS::ExactlyOnce, &message));
    }

    #[test]
    fn incarnations_are_never_zero_and_differ() {
        let (a, b) = (new_incarnation(), new_incarnation());
        assert_ne!(a, 0);
        assert_ne!(a, b);
    }
}
