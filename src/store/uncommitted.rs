//! At load: the copies of tentative QoS 2 publishes that their publisher never committed are
//! dropped (`broker/origins.rs`, `docs/persistence.md`, "Acknowledgements under sync").
//!
//! A copy queued for a session while its publish was tentative carries the publish's origin:
//! the publisher's client identifier, its session's incarnation and the publish's number in
//! that session. The publisher's session record holds the number up to which its publishes
//! are committed, written with their packet identifiers, and a PUBREC is sent only once that
//! record is on disk. So a copy whose publisher's session (the same incarnation) did not
//! commit it belongs to a publish that was never acknowledged and whose identifier the
//! restarted broker does not know: the publisher sends it again, and it is routed again. Kept,
//! it would reach its subscriber twice.
//!
//! A copy is kept when its publisher's session is gone or is another incarnation: a session
//! that ended (expired, evicted, begun again with a clean start) sends nothing of its old
//! exchanges again, so the copy is the only one there will be. Ending a session while its
//! PUBREC is held is the only way to get there; the message then reaches its subscribers
//! once, unacknowledged to its publisher, as the protocol allows of a session that ends.

use std::collections::HashMap;

use super::session_record::StoredSession;

/// Drops, from every session, the copies whose publisher's session did not commit them;
/// returns how many.
pub(super) fn drop_uncommitted(sessions: &mut [StoredSession]) -> usize {
    let commits: HashMap<Box<str>, (u64, u64)> = sessions
        .iter()
        .filter(|session| session.incarnation != 0)
        .map(|session| {
            let commit = (session.incarnation, session.committed_seq);
            (session.client_id.clone(), commit)
        })
        .collect();
    let mut dropped = 0;
    for session in sessions.iter_mut() {
        let before = session.messages.len();
        session.messages.retain(|queued| {
            let Some(origin) = &queued.origin else {
                return true;
            };
            match commits.get(&origin.client_id) {
                Some(&(incarnation, committed)) if incarnation == origin.incarnation => {
                    origin.seq <= committed
                }
                _ => true,
            }
        });
        dropped += before - session.messages.len();
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mqtt::{ProtocolVersion, QoS};
    use crate::store::record::StoredMessage;
    use crate::store::session_record::{StoredOrigin, StoredQueued};

    fn session(client_id: &str, incarnation: u64, committed_seq: u64) -> StoredSession {
        StoredSession {
            client_id: client_id.into(),
            version: ProtocolVersion::V311,
            expiry_s: u32::MAX,
            expires_at_ms: None,
            offline_since_ms: None,
            subscriptions: Vec::new(),
            messages: Vec::new(),
            released: Vec::new(),
            inbound_qos2: Vec::new(),
            will: None,
            incarnation,
            committed_seq,
            sent_ids: Vec::new(),
        }
    }

    fn copy(payload: &[u8], origin: Option<(&str, u64, u64)>) -> StoredQueued {
        StoredQueued {
            message: StoredMessage {
                topic: "t".into(),
                qos: QoS::ExactlyOnce,
                expires_at_ms: None,
                properties: Box::default(),
                payload: payload.into(),
            },
            retain: false,
            ids: Vec::new(),
            packet_id: None,
            origin: origin.map(|(client_id, incarnation, seq)| StoredOrigin {
                client_id: client_id.into(),
                incarnation,
                seq,
            }),
            id: None,
        }
    }

    fn payloads(session: &StoredSession) -> Vec<&[u8]> {
        session
            .messages
            .iter()
            .map(|queued| &*queued.message.payload)
            .collect()
    }

    #[test]
    fn a_copy_past_its_publishers_commit_is_dropped() {
        let mut subscriber = session("sub", 0, 0);
        subscriber.messages = vec![
            copy(b"plain", None),
            copy(b"committed", Some(("pub", 7, 2))),
            copy(b"tentative", Some(("pub", 7, 3))),
            copy(b"after", None),
        ];
        let mut sessions = [session("pub", 7, 2), subscriber];
        assert_eq!(drop_uncommitted(&mut sessions), 1);
        assert_eq!(
            payloads(&sessions[1]),
            [&b"plain"[..], b"committed", b"after"]
        );
    }

    #[test]
    fn a_copy_of_a_session_gone_or_begun_again_is_kept() {
        let mut subscriber = session("sub", 0, 0);
        subscriber.messages = vec![
            copy(b"gone", Some(("left", 3, 9))),
            copy(b"older", Some(("pub", 6, 9))),
        ];
        let mut sessions = [subscriber, session("pub", 7, 0)];
        assert_eq!(drop_uncommitted(&mut sessions), 0);
        assert_eq!(payloads(&sessions[0]), [&b"gone"[..], b"older"]);
    }

    #[test]
    fn a_publishers_own_copy_is_filtered_like_any_other() {
        let mut publisher = session("pub", 7, 1);
        publisher.messages = vec![
            copy(b"one", Some(("pub", 7, 1))),
            copy(b"two", Some(("pub", 7, 2))),
        ];
        let mut sessions = [publisher];
        assert_eq!(drop_uncommitted(&mut sessions), 1);
        assert_eq!(payloads(&sessions[0]), [&b"one"[..]]);
    }
}
