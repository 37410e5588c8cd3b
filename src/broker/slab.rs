//! A slab of sessions addressed by `SessionKey`: an index plus a generation, so a key kept by
//! the topic trie or a deadline queue after its session ended can never reach a newer session
//! that reused the slot.

/// A handle to a session in this shard's slab. Cheap to copy and to store per subscription
/// (8 bytes instead of the client identifier string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionKey {
    index: u32,
    generation: u32,
}

struct Entry<T> {
    generation: u32,
    value: Option<T>,
}

pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    /// Indices of vacant entries, reused last-in first-out so memory stays warm.
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Slab<T> {
        Slab::with_capacity(0)
    }

    /// A slab with room for `capacity` values before its vector grows.
    pub(crate) fn with_capacity(capacity: usize) -> Slab<T> {
        Slab {
            entries: Vec::with_capacity(capacity),
            free: Vec::new(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn insert(&mut self, value: T) -> SessionKey {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            let entry = &mut self.entries[index as usize];
            assert!(entry.value.is_none(), "a free slot is vacant");
            entry.value = Some(value);
            return SessionKey {
                index,
                generation: entry.generation,
            };
        }
        let index = u32::try_from(self.entries.len()).expect("fewer than 2^32 sessions per shard");
        self.entries.push(Entry {
            generation: 0,
            value: Some(value),
        });
        SessionKey {
            index,
            generation: 0,
        }
    }

    pub(crate) fn get(&self, key: SessionKey) -> Option<&T> {
        let entry = self.entries.get(key.index as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        entry.value.as_ref()
    }

    pub(crate) fn get_mut(&mut self, key: SessionKey) -> Option<&mut T> {
        let entry = self.entries.get_mut(key.index as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        entry.value.as_mut()
    }

    pub(crate) fn remove(&mut self, key: SessionKey) -> Option<T> {
        let entry = self.entries.get_mut(key.index as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        let value = entry.value.take()?;
        // Wrapping is harmless: a stale key would need to survive 2^32 reuses of one slot.
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(key.index);
        self.len -= 1;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The session slot the budget in `session.rs` counts.
    #[test]
    fn a_session_entry_is_the_session_and_a_generation() {
        use crate::broker::session::Session;
        assert_eq!(std::mem::size_of::<Entry<Session>>(), 176);
    }

    #[test]
    fn stale_key_does_not_reach_reused_slot() {
        let mut slab = Slab::new();
        let a = slab.insert("a");
        assert_eq!(slab.remove(a), Some("a"));
        let b = slab.insert("b");
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.get(b), Some(&"b"));
        assert_eq!(slab.len(), 1);
    }
}
