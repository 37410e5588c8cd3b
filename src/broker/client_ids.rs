//! Client identifier → session, for the sessions of one shard.
//!
//! The identifier is stored once, in its session: the table holds session keys only, and
//! reaches the identifier through the session slab to compare it (on lookup) or to hash it
//! again (when the table grows). A `HashMap<Box<str>, SessionKey>` held a copy of every
//! identifier (a ~20-byte one takes 24–32 B in its allocator size class) in a 24-B bucket; here
//! a session costs an 8-B bucket and its control byte: ≈ 15 B at 19 000 sessions, in a table
//! of 32 768.
//!
//! Clients choose their identifiers, so they are hashed with a key drawn at random per table
//! (std's `RandomState`, SipHash), as a std `HashMap` would: nobody can pick identifiers that
//! all land in one chain of probes.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::session::Session;
use super::session::SessionKey;
use crate::slots::Slots;

pub(crate) struct ClientIds {
    table: HashTable<SessionKey>,
    hasher: RandomState,
}

impl ClientIds {
    pub(crate) fn new() -> ClientIds {
        ClientIds {
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    /// The session named `client_id`.
    pub(crate) fn get(
        &self,
        client_id: &str,
        sessions: &Slots<SessionKey, Session>,
    ) -> Option<SessionKey> {
        let hash = self.hasher.hash_one(client_id);
        let named = |key: &SessionKey| {
            sessions
                .get(*key)
                .is_some_and(|session| *session.client_id == *client_id)
        };
        self.table.find(hash, named).copied()
    }

    /// Names session `key` by its client identifier, which no other session in the table has.
    /// The session is in `sessions`, and stays there until [`ClientIds::remove`].
    pub(crate) fn insert(&mut self, key: SessionKey, sessions: &Slots<SessionKey, Session>) {
        let client_id = &sessions
            .get(key)
            .expect("an inserted session exists")
            .client_id;
        debug_assert!(
            self.get(client_id, sessions).is_none(),
            "one session per id"
        );
        let hasher = &self.hasher;
        let rehash = |key: &SessionKey| {
            let session = sessions
                .get(*key)
                .expect("every named session is in the slab");
            hasher.hash_one(&*session.client_id)
        };
        // A table that a crowd grew and that is now mostly empty gives its room back; the
        // next arrival is the first moment the slab is at hand to rehash with.
        if self.table.len() < self.table.capacity() / 8 {
            self.table.shrink_to(self.table.len() * 2, rehash);
        }
        self.table
            .insert_unique(hasher.hash_one(&**client_id), key, rehash);
    }

    /// Forgets session `key`, named `client_id`, if the table names it. Needs no slab: the
    /// session may be gone from it already.
    pub(crate) fn remove(&mut self, client_id: &str, key: SessionKey) {
        let hash = self.hasher.hash_one(client_id);
        if let Ok(entry) = self.table.find_entry(hash, |named| *named == key) {
            entry.remove();
        }
        if self.table.is_empty() {
            // Nobody left: nothing to rehash, and the table's block goes back at once.
            self.table = HashTable::new();
        }
    }

    /// Every named session.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = SessionKey> + '_ {
        self.table.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mqtt::ProtocolVersion;

    fn session(client_id: &str) -> Session {
        Session::new(client_id, ProtocolVersion::V311, 0)
    }

    #[test]
    fn finds_by_the_identifier_stored_in_the_session() {
        let mut sessions = Slots::default();
        let mut ids = ClientIds::new();
        let keys: Vec<SessionKey> = (0..100)
            .map(|n| {
                let key = sessions.insert(session(&format!("client-{n}")));
                ids.insert(key, &sessions);
                key
            })
            .collect();
        assert_eq!(ids.get("client-7", &sessions), Some(keys[7]));
        assert_eq!(ids.get("client-100", &sessions), None);
        ids.remove("client-7", keys[7]);
        assert_eq!(ids.get("client-7", &sessions), None);
        assert_eq!(ids.get("client-8", &sessions), Some(keys[8]));
        assert_eq!(ids.keys().count(), 99);
    }

    #[test]
    fn removing_another_sessions_key_keeps_the_name() {
        let mut sessions = Slots::default();
        let mut ids = ClientIds::new();
        let old = sessions.insert(session("c"));
        sessions.remove(old);
        let new = sessions.insert(session("c"));
        ids.insert(new, &sessions);
        ids.remove("c", old);
        assert_eq!(ids.get("c", &sessions), Some(new));
    }

    /// The bucket the budget in `session.rs` counts.
    #[test]
    fn a_bucket_is_a_session_key() {
        assert_eq!(std::mem::size_of::<SessionKey>(), 8);
    }
}
