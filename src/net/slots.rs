//! A table of connections addressed by `ConnId`: slot index plus a generation, so an id that
//! outlives its connection (in a late completion, or in the broker) never names a newer one.

use crate::conn::ConnId;

/// Generations wrap at 24 bits so an id fits in 56 bits of an io_uring `user_data`.
const GENERATION_MASK: u32 = (1 << 24) - 1;

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

pub struct Slots<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slots<T> {
    /// A table with room for `capacity` connections before its vector grows.
    pub fn with_capacity(capacity: usize) -> Slots<T> {
        Slots {
            slots: Vec::with_capacity(capacity),
            free: Vec::new(),
            len: 0,
        }
    }

    pub fn insert(&mut self, value: T) -> ConnId {
        self.len += 1;
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                u32::try_from(self.slots.len() - 1)
                    .expect("connection count is bounded by a u32 limit")
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.generation = (slot.generation + 1) & GENERATION_MASK;
        slot.value = Some(value);
        ConnId::new(index, slot.generation)
    }

    pub fn get(&self, id: ConnId) -> Option<&T> {
        self.slots
            .get(id.index())
            .filter(|slot| slot.generation == id.generation())?
            .value
            .as_ref()
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        self.slots
            .get_mut(id.index())
            .filter(|slot| slot.generation == id.generation())?
            .value
            .as_mut()
    }

    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        let slot = self
            .slots
            .get_mut(id.index())
            .filter(|slot| slot.generation == id.generation())?;
        let value = slot.value.take()?;
        self.free.push(id.index() as u32);
        self.len -= 1;
        Some(value)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn ids(&self) -> Vec<ConnId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.value.is_some())
            .map(|(index, slot)| ConnId::new(index as u32, slot.generation))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot the budget in `net/connection.rs` counts.
    #[test]
    fn a_connection_slot_is_the_connection_and_a_generation() {
        use crate::net::connection::Connection;
        assert_eq!(std::mem::size_of::<Slot<Connection>>(), 232);
    }

    #[test]
    fn a_stale_id_does_not_reach_the_new_occupant() {
        let mut slots = Slots::default();
        let first = slots.insert("a");
        assert_eq!(slots.remove(first), Some("a"));
        let second = slots.insert("b");
        assert_ne!(first, second);
        assert_eq!(slots.get(first), None);
        assert_eq!(slots.get(second), Some(&"b"));
        assert_eq!(slots.len(), 1);
        assert_eq!(slots.ids(), vec![second]);
    }

    #[test]
    fn ids_fit_in_56_bits() {
        let mut slots = Slots::default();
        for _ in 0..10 {
            let id = slots.insert(());
            assert!(id.0 < 1 << 56);
            slots.remove(id);
        }
    }
}
