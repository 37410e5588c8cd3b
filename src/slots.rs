//! Tables that grow and shrink with the load: a paged vector, and on top of it a table of
//! values addressed by generational keys, used for the connections of a shard (`ConnId`) and
//! for its sessions (`SessionKey`).
//!
//! **Pages, not one vector.** A table grows a page of [`PAGE_SLOTS`] entries at a time and never
//! copies itself: a vector that doubles copies every entry (a stall while connections pour in)
//! and leaves its old copy behind as allocator slack, which an idle shard keeps resident. A
//! fresh shard holds no page at all, so its tables cost nothing before the first client
//! connects, and a page at the top that stays vacant is given back, so a shard that once held
//! 20 000 connections does not keep room for them forever.
//!
//! **Generations.** A key is a slot index plus the number of times that slot was filled, so a
//! key kept after its value went (in a late io_uring completion, in the topic trie, in a
//! deadline queue) never reaches a newer value that reused the slot. Free slots are reused
//! lowest index first, so values gather at the bottom and the top pages empty out.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Entries per page. 256 connection slots are ~60 KB, one page of a shard's session table
/// ~45 KB: small next to a shard's fixed cost, large enough that a lookup's extra indirection
/// stays in cache.
pub const PAGE_SLOTS: usize = 256;

/// Generations wrap at 24 bits, so a `ConnId` fits in the 56 payload bits of an io_uring
/// `user_data`. A stale key would have to outlive 16 M reuses of its slot to be mistaken.
const GENERATION_MASK: u32 = (1 << 24) - 1;

/// A vector of `T` in fixed pages, grown on demand; entries past the end read as absent.
///
/// The owner says which entries hold something ([`PagedVec::occupy`], [`PagedVec::vacate`]);
/// the vector counts them per page and gives back the top page while it and the page below
/// it hold nothing (the one below stays as a spare, so a table hovering at a page boundary
/// does not allocate and free a page on every insert and removal), and every page once
/// nothing is held at all.
pub struct PagedVec<T> {
    /// Pages of a fixed length, so the index inside a page needs no bounds check.
    pages: Vec<Box<[T; PAGE_SLOTS]>>,
    /// Occupied entries per page.
    page_lens: Vec<u16>,
    len: usize,
}

impl<T> Default for PagedVec<T> {
    fn default() -> Self {
        PagedVec {
            pages: Vec::new(),
            page_lens: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Default> PagedVec<T> {
    /// Entry `index`, if its page exists.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&T> {
        self.pages
            .get(index / PAGE_SLOTS)
            .map(|page| &page[index % PAGE_SLOTS])
    }

    #[inline]
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.pages
            .get_mut(index / PAGE_SLOTS)
            .map(|page| &mut page[index % PAGE_SLOTS])
    }

    /// Adds a page of default entries; returns the index of its first entry.
    pub fn add_page(&mut self) -> usize {
        let first = self.capacity();
        let page: Box<[T]> = (0..PAGE_SLOTS).map(|_| T::default()).collect();
        let Ok(page) = page.try_into() else {
            unreachable!("a page is made of PAGE_SLOTS entries");
        };
        self.pages.push(page);
        self.page_lens.push(0);
        first
    }

    /// Entry `index`, which the caller fills: counted as occupied until [`PagedVec::vacate`].
    /// Pages are added up to it.
    pub fn occupy(&mut self, index: usize) -> &mut T {
        while self.pages.len() <= index / PAGE_SLOTS {
            self.add_page();
        }
        self.page_lens[index / PAGE_SLOTS] += 1;
        self.len += 1;
        &mut self.pages[index / PAGE_SLOTS][index % PAGE_SLOTS]
    }

    /// The caller emptied entry `index`. Pages that end up given back are shown to `released`
    /// entry by entry first. Returns the entries held now.
    pub fn vacate(&mut self, index: usize, mut released: impl FnMut(&T)) -> usize {
        let page = index / PAGE_SLOTS;
        assert!(
            self.page_lens.get(page).is_some_and(|&len| len > 0),
            "only an occupied entry is vacated"
        );
        self.page_lens[page] -= 1;
        self.len -= 1;
        let mut keep = self.pages.len();
        if self.len == 0 {
            keep = 0;
        }
        while keep >= 2 && self.page_lens[keep - 1] == 0 && self.page_lens[keep - 2] == 0 {
            keep -= 1;
        }
        if keep < self.pages.len() {
            self.pages[keep..]
                .iter()
                .flat_map(|page| page.iter())
                .for_each(&mut released);
            self.pages.truncate(keep);
            self.page_lens.truncate(keep);
            if keep == 0 {
                self.pages = Vec::new();
                self.page_lens = Vec::new();
            }
        }
        self.capacity()
    }

    /// Entries counted as occupied.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries the pages hold, occupied or not.
    pub fn capacity(&self) -> usize {
        self.pages.len() * PAGE_SLOTS
    }

    /// Every entry with its index, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.pages.iter().flat_map(|page| page.iter()).enumerate()
    }
}

/// Values at dense `u32` indices, reused lowest first, in a [`PagedVec`]: the nodes of the topic
/// trie and of the retained store, and (with generations on top) the [`Slots`] tables.
pub struct Arena<T> {
    entries: PagedVec<T>,
    /// Every vacant entry of the pages held, lowest first.
    free: BinaryHeap<Reverse<u32>>,
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Arena {
            entries: PagedVec::default(),
            free: BinaryHeap::new(),
        }
    }
}

impl<T: Default> Arena<T> {
    /// Entries in use.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, index: u32) -> Option<&T> {
        self.entries.get(index as usize)
    }

    pub fn get_mut(&mut self, index: u32) -> Option<&mut T> {
        self.entries.get_mut(index as usize)
    }

    /// Stores `value` at the lowest vacant index and returns the index.
    pub fn insert(&mut self, value: T) -> u32 {
        self.make_room();
        let (index, entry) = self.claim();
        *entry = value;
        index
    }

    /// Adds a page when no entry is vacant; returns the indices of the page added.
    fn make_room(&mut self) -> Option<std::ops::Range<usize>> {
        if !self.free.is_empty() {
            return None;
        }
        let first = self.entries.add_page();
        for index in first..first + PAGE_SLOTS {
            let index = u32::try_from(index)
                .expect("tables hold fewer than 2^32 values: their limits are u32");
            self.free.push(Reverse(index));
        }
        Some(first..first + PAGE_SLOTS)
    }

    /// Takes the lowest vacant index for the caller to fill, after [`Arena::make_room`].
    fn claim(&mut self) -> (u32, &mut T) {
        let Some(Reverse(index)) = self.free.pop() else {
            unreachable!("make_room leaves a vacant entry");
        };
        (index, self.entries.occupy(index as usize))
    }

    /// Takes the value at `index` out, leaving a default in its place.
    pub fn remove(&mut self, index: u32) -> T {
        let entry = self
            .entries
            .get_mut(index as usize)
            .expect("only an index in use is removed");
        let value = std::mem::take(entry);
        self.vacate(index, |_| {});
        value
    }

    /// The caller emptied the entry at `index`; entries of pages given back are shown to
    /// `released` first.
    fn vacate(&mut self, index: u32, released: impl FnMut(&T)) {
        let before = self.entries.capacity();
        let kept = self.entries.vacate(index as usize, released);
        if kept < before {
            self.free.retain(|&Reverse(free)| (free as usize) < kept);
            // The vacant list follows the pages held: at most one page's worth when empty.
            self.free.shrink_to(kept);
        }
        if (index as usize) < kept {
            self.free.push(Reverse(index));
        }
    }

    /// Every entry with its index, vacant ones included, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.entries.iter()
    }
}

impl<T: Default> std::ops::Index<u32> for Arena<T> {
    type Output = T;

    /// The entry at `index`, which the caller holds: an index it got from `insert` and has not
    /// removed. Anything else is a bug in the caller.
    fn index(&self, index: u32) -> &T {
        self.get(index)
            .expect("an index in use is inside the arena")
    }
}

impl<T: Default> std::ops::IndexMut<u32> for Arena<T> {
    fn index_mut(&mut self, index: u32) -> &mut T {
        self.get_mut(index)
            .expect("an index in use is inside the arena")
    }
}

/// Halves the room of an empty scratch vector, and lets go of it once it is small. Called once a
/// second, from the shard's tick, on the vectors a shard reuses every turn: one that a burst
/// grew (a fan-out's outbox can hold 65 536 chunks) gives its memory back within seconds of
/// going quiet, and one under steady load reallocates once a second. A quiet shard keeps no
/// scratch block at all: one kept would pin the allocator page it sits in, which the burst
/// that grew it filled with messages since freed (`net::allocator`).
pub fn shed<T>(scratch: &mut Vec<T>) {
    /// Below this many entries the room is not halved but given up.
    const SMALLEST_KEPT: usize = 16;
    if !scratch.is_empty() {
        return;
    }
    if scratch.capacity() / 2 < SMALLEST_KEPT {
        *scratch = Vec::new();
    } else {
        scratch.shrink_to(scratch.capacity() / 2);
    }
}

/// The handle of a value in a [`Slots`] table: a slot index and the slot's generation.
pub trait SlotKey: Copy {
    fn from_parts(index: u32, generation: u32) -> Self;
    fn index(self) -> usize;
    fn generation(self) -> u32;
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            generation: 0,
            value: None,
        }
    }
}

/// Bytes one slot holding a `T` takes in a [`Slots`] table: what memory budgets count.
pub const fn slot_bytes<T>() -> usize {
    std::mem::size_of::<Slot<T>>()
}

/// Values addressed by generational keys of type `K`. See the module documentation.
pub struct Slots<K, T> {
    slots: Arena<Slot<T>>,
    /// Generation a slot on a page made anew starts from: past every generation handed out
    /// on a page given back, so a key from before can never match.
    fresh_generation: u32,
    _key: std::marker::PhantomData<K>,
}

impl<K, T> Default for Slots<K, T> {
    fn default() -> Self {
        Slots {
            slots: Arena::default(),
            fresh_generation: 0,
            _key: std::marker::PhantomData,
        }
    }
}

impl<K: SlotKey, T> Slots<K, T> {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Stores `value` in the lowest vacant slot and returns its key.
    pub fn insert(&mut self, value: T) -> K {
        if let Some(page) = self.slots.make_room() {
            for index in page {
                if let Some(slot) = self.slots.entries.get_mut(index) {
                    slot.generation = self.fresh_generation;
                }
            }
        }
        let (index, slot) = self.slots.claim();
        assert!(slot.value.is_none(), "a free slot is vacant");
        slot.generation = (slot.generation + 1) & GENERATION_MASK;
        slot.value = Some(value);
        K::from_parts(index, slot.generation)
    }

    pub fn get(&self, key: K) -> Option<&T> {
        let slot = self.slots.entries.get(key.index())?;
        if slot.generation != key.generation() {
            return None;
        }
        slot.value.as_ref()
    }

    pub fn get_mut(&mut self, key: K) -> Option<&mut T> {
        let slot = self.slots.entries.get_mut(key.index())?;
        if slot.generation != key.generation() {
            return None;
        }
        slot.value.as_mut()
    }

    pub fn contains(&self, key: K) -> bool {
        self.get(key).is_some()
    }

    /// Takes the value out; its slot becomes vacant, and its key stale.
    pub fn remove(&mut self, key: K) -> Option<T> {
        let slot = self.slots.entries.get_mut(key.index())?;
        if slot.generation != key.generation() {
            return None;
        }
        let value = slot.value.take()?;
        let mut generation_max = self.fresh_generation;
        // The slot keeps its generation for its next value; a page given back takes its
        // generations with it, so the next page starts past them.
        self.slots.vacate(key.index() as u32, |slot| {
            generation_max = generation_max.max(slot.generation);
        });
        self.fresh_generation = generation_max;
        Some(value)
    }

    /// Every key in use, in slot order.
    pub fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.slots.iter().filter_map(|(index, slot)| {
            slot.value
                .as_ref()
                .map(|_| K::from_parts(index as u32, slot.generation))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Key(u32, u32);

    impl SlotKey for Key {
        fn from_parts(index: u32, generation: u32) -> Key {
            Key(index, generation)
        }
        fn index(self) -> usize {
            self.0 as usize
        }
        fn generation(self) -> u32 {
            self.1
        }
    }

    #[test]
    fn a_stale_key_does_not_reach_the_new_occupant() {
        let mut slots = Slots::default();
        let first: Key = slots.insert("a");
        assert_eq!(slots.remove(first), Some("a"));
        let second = slots.insert("b");
        assert_ne!(first, second);
        assert_eq!(slots.get(first), None);
        assert_eq!(slots.remove(first), None);
        assert_eq!(slots.get(second), Some(&"b"));
        assert_eq!(slots.len(), 1);
        assert_eq!(slots.keys().collect::<Vec<_>>(), vec![second]);
    }

    #[test]
    fn a_fresh_table_holds_no_page_and_an_emptied_one_gives_them_back() {
        let mut slots: Slots<Key, u64> = Slots::default();
        assert_eq!(slots.slots.entries.capacity(), 0);
        let keys: Vec<Key> = (0..10 * PAGE_SLOTS as u64)
            .map(|v| slots.insert(v))
            .collect();
        assert_eq!(slots.slots.entries.capacity(), 10 * PAGE_SLOTS);
        for &key in &keys {
            slots.remove(key);
        }
        assert_eq!(slots.slots.entries.capacity(), 0);
        // Keys from before the pages went never match what comes after.
        let again: Vec<Key> = (0..10 * PAGE_SLOTS as u64)
            .map(|v| slots.insert(v))
            .collect();
        for (old, new) in keys.iter().zip(&again) {
            assert_eq!(old.0, new.0);
            assert_eq!(slots.get(*old), None);
        }
    }

    #[test]
    fn the_lowest_slot_is_reused_first_so_the_top_empties() {
        let mut slots: Slots<Key, usize> = Slots::default();
        let keys: Vec<Key> = (0..8 * PAGE_SLOTS).map(|v| slots.insert(v)).collect();
        // Every other value goes, then the upper half: what is left sits in the lower pages.
        for key in keys.iter().step_by(2) {
            slots.remove(*key);
        }
        for key in &keys[4 * PAGE_SLOTS..] {
            slots.remove(*key);
        }
        assert!(slots.slots.entries.capacity() <= 6 * PAGE_SLOTS);
        let refill: Vec<Key> = (0..2 * PAGE_SLOTS).map(|v| slots.insert(v)).collect();
        assert!(refill.iter().all(|key| key.0 < 4 * PAGE_SLOTS as u32));
        assert_eq!(slots.len(), 4 * PAGE_SLOTS);
    }

    #[test]
    fn generations_wrap_at_24_bits() {
        let mut slots: Slots<Key, ()> = Slots::default();
        let _resident = slots.insert(());
        let key = slots.insert(());
        slots.remove(key);
        if let Some(slot) = slots.slots.entries.get_mut(key.index()) {
            slot.generation = GENERATION_MASK;
        }
        let wrapped = slots.insert(());
        assert_eq!((wrapped.0, wrapped.1), (key.0, 0));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any sequence of bursts of inserts and removals agrees with a list of live keys, and
        /// no removed key reaches anything, across pages coming and going.
        #[test]
        fn agrees_with_a_list_of_live_keys(
            ops in proptest::collection::vec((proptest::bool::ANY, 1usize..64), 0..200)
        ) {
            let mut slots: Slots<Key, usize> = Slots::default();
            let mut live: Vec<(Key, usize)> = Vec::new();
            let mut dead: Vec<Key> = Vec::new();
            let mut next = 0;
            for (insert, burst) in ops {
                for _ in 0..burst * 8 {
                    if insert || live.is_empty() {
                        next += 1;
                        live.push((slots.insert(next), next));
                    } else {
                        let (key, value) = live.swap_remove(next % live.len());
                        proptest::prop_assert_eq!(slots.remove(key), Some(value));
                        dead.push(key);
                        next += 7;
                    }
                }
                proptest::prop_assert_eq!(slots.len(), live.len());
                for &(key, value) in live.iter().step_by(13) {
                    proptest::prop_assert_eq!(slots.get(key), Some(&value));
                }
                for &key in dead.iter().rev().step_by(13).take(64) {
                    proptest::prop_assert_eq!(slots.get(key), None);
                }
            }
            for &(key, value) in &live {
                proptest::prop_assert_eq!(slots.get(key), Some(&value));
            }
            proptest::prop_assert_eq!(slots.keys().count(), live.len());
        }
    }
}
