//! The subscription index of one shard: a trie keyed by topic level, with the single-level
//! (`+`) and multi-level (`#`) wildcards as dedicated children, holding per filter the sessions
//! subscribed to it and what they were granted (a QoS, or the broker's `Grant` with the MQTT 5
//! subscription options).
//!
//! A publish walks the trie once with an explicit stack (no recursion, no allocation per level:
//! levels are byte offsets into the topic name), so its cost is bounded by the number of trie
//! nodes matching the topic, never by the total number of subscriptions. Removal prunes nodes
//! left empty, so memory follows the live subscriptions.
//!
//! Worst case: `subscriptions_per_session_max` (1 024) × sessions per shard (20 000 connected
//! plus offline ones) entries, each a subscriber slot (16 bytes with a `Grant`) plus, on nodes
//! with 32 subscribers or more, a position-table slot (4 bytes and a control byte, ~9 bytes at
//! the tables' load), plus one node (120 bytes, its level, a child slot in its parent) per
//! distinct filter level.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::num::NonZeroU32;

use hashbrown::HashTable;

use super::session::SessionKey;
use crate::protocol::mqtt::QoS;
use crate::slots::Arena;

/// The root node: the parent of the first level of every filter.
const ROOT: u32 = 0;

struct Node<V> {
    /// The node one level up; meaningless for the root.
    parent: u32,
    /// The `+` and `#` children. Never the root, so never 0.
    plus: Option<NonZeroU32>,
    hash: Option<NonZeroU32>,
    /// This node's level in its parent (`+` and `#` included), used to find it among its
    /// parent's children and to unlink it when pruning.
    level: Box<str>,
    /// The other children, as node indices hashed by the child's own `level`: each level is
    /// stored once, in its node. A `HashMap<Box<str>, u32>` kept a second copy of every level
    /// in a 24-B bucket; a bucket here is 4 B.
    children: HashTable<u32>,
    /// Sessions subscribed to the filter ending at this node, in a vector so fan-out iterates
    /// contiguous memory.
    subscribers: Vec<(SessionKey, V)>,
    /// Where each session sits in `subscribers`: positions, hashed by the session key at that
    /// position, so unsubscribing is O(1) even on a topic with a million subscribers (a linear
    /// search would make a mass disconnect quadratic). Kept only from [`POSITIONS_FROM`]
    /// subscribers on: below, a linear search is as fast, and a node with one subscriber (a
    /// topic per client) holds no table.
    positions: HashTable<u32>,
}

/// Subscribers of one node from which their positions are indexed.
const POSITIONS_FROM: usize = 32;

/// Below this many subscribers a node's vector grows one slot at a time, so a node with one
/// subscriber holds one slot, not the four of a first `push`.
const EXACT_GROWTH_MAX: usize = 4;

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            parent: 0,
            plus: None,
            hash: None,
            level: Box::default(),
            children: HashTable::new(),
            subscribers: Vec::new(),
            positions: HashTable::new(),
        }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
            && self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
    }
}

/// An arena of trie nodes holding only the root, at [`ROOT`].
pub(crate) fn with_root<N: Default>() -> Arena<N> {
    let mut nodes = Arena::default();
    let root = nodes.insert(N::default());
    assert_eq!(root, ROOT, "the first node is the root");
    nodes
}

/// A scratch stack for `TopicTrie::for_each_match`, kept by the caller between publishes so
/// matching does not allocate once warm.
pub(crate) type MatchStack = Vec<(u32, usize)>;

pub(crate) struct TopicTrie<V: Copy = QoS> {
    /// The trie's nodes, the root at [`ROOT`]; vacant ones reused lowest first, so the arena
    /// gives pages back as subscriptions go.
    nodes: Arena<Node<V>>,
    subscription_count: usize,
    /// In cluster mode: the filters that got their first subscriber (`true`) or lost their
    /// last (`false`) since the shard last took them, for the NATS interest of the node
    /// (`crate::cluster`). At most one entry per subscribe or unsubscribe of the turn.
    interest: Option<Vec<(Box<str>, bool)>>,
    /// Hashes levels and session keys for every node's tables. Levels come from clients, so
    /// the key is random, as a std `HashMap`'s would be: nobody can pick levels that collide.
    hasher: RandomState,
}

impl<V: Copy> TopicTrie<V> {
    pub(crate) fn new() -> TopicTrie<V> {
        TopicTrie {
            nodes: with_root(),
            subscription_count: 0,
            interest: None,
            hasher: RandomState::new(),
        }
    }

    /// From now on, records the filters that gain their first or lose their last subscriber.
    pub(crate) fn record_interest(&mut self) {
        self.interest.get_or_insert_with(Vec::new);
    }

    /// Moves the recorded interest changes, in order, to `into`.
    pub(crate) fn take_interest(&mut self, into: &mut Vec<(Box<str>, bool)>) {
        if let Some(interest) = &mut self.interest {
            into.append(interest);
        }
    }

    /// Number of (session, filter) pairs held.
    pub(crate) fn len(&self) -> usize {
        self.subscription_count
    }

    /// Subscribes `session` to `filter` with `qos`; replaces what was granted if it is already
    /// subscribed ([MQTT-3.8.4-3]). Returns whether the subscription is new.
    pub(crate) fn insert(&mut self, filter: &str, session: SessionKey, qos: V) -> bool {
        let mut node = ROOT;
        for level in filter.split('/') {
            node = self.child_or_insert(node, level);
        }
        if let Some(position) = self.position(node, session) {
            self.nodes[node].subscribers[position as usize].1 = qos;
            return false;
        }
        let hasher = &self.hasher;
        let node = &mut self.nodes[node];
        let position = u32::try_from(node.subscribers.len()).expect("fewer than 2^32 sessions");
        if node.subscribers.len() < EXACT_GROWTH_MAX {
            node.subscribers.reserve_exact(1);
        }
        node.subscribers.push((session, qos));
        if node.subscribers.len() == 1
            && let Some(interest) = &mut self.interest
        {
            interest.push((filter.into(), true));
        }
        let subscribers = &node.subscribers;
        let rehash = |&position: &u32| hasher.hash_one(subscribers[position as usize].0);
        if !node.positions.is_empty() {
            node.positions
                .insert_unique(hasher.hash_one(session), position, rehash);
        } else if subscribers.len() >= POSITIONS_FROM {
            let mut positions = HashTable::with_capacity(subscribers.len());
            for (position, &(key, _)) in (0..).zip(subscribers) {
                positions.insert_unique(hasher.hash_one(key), position, rehash);
            }
            node.positions = positions;
        }
        self.subscription_count += 1;
        true
    }

    /// Removes `session`'s subscription to `filter`. Returns whether it existed.
    pub(crate) fn remove(&mut self, filter: &str, session: SessionKey) -> bool {
        let mut node = ROOT;
        for level in filter.split('/') {
            match self.child(node, level) {
                Some(child) => node = child,
                None => return false,
            }
        }
        let Some(position) = self.position(node, session) else {
            return false;
        };
        let hasher = &self.hasher;
        let entry = &mut self.nodes[node];
        if !entry.positions.is_empty() {
            // The last subscriber moves into the vacated position: its entry follows it.
            let last = u32::try_from(entry.subscribers.len() - 1).expect("fewer than 2^32");
            let at = |wanted: u32| move |&position: &u32| position == wanted;
            if let Ok(found) = entry
                .positions
                .find_entry(hasher.hash_one(session), at(position))
            {
                found.remove();
            }
            let moved = entry.subscribers[last as usize].0;
            if let Some(moved_at) = entry.positions.find_mut(hasher.hash_one(moved), at(last)) {
                *moved_at = position;
            }
        }
        entry.subscribers.swap_remove(position as usize);
        if entry.subscribers.is_empty()
            && let Some(interest) = &mut self.interest
        {
            interest.push((filter.into(), false));
        }
        // Hysteresis: the index goes only well below where it was built, so a node hovering
        // around the threshold does not rebuild it on every change.
        if !entry.positions.is_empty() && entry.subscribers.len() < POSITIONS_FROM / 2 {
            entry.positions = HashTable::new();
        }
        self.subscription_count -= 1;
        self.prune(node);
        true
    }

    /// Calls `visit` for every subscription whose filter matches the topic name `topic`.
    /// A session subscribed with several matching filters is visited once per filter.
    pub(crate) fn for_each_match(
        &self,
        topic: &str,
        stack: &mut MatchStack,
        mut visit: impl FnMut(SessionKey, V),
    ) {
        // A position is the byte offset where the next level starts; `end` means every level
        // of the topic has been consumed.
        let end = topic.len() + 1;
        let mut emit = |node: u32| {
            for &(session, qos) in &self.nodes[node].subscribers {
                visit(session, qos);
            }
        };
        stack.clear();
        stack.push((ROOT, 0));
        while let Some((index, position)) = stack.pop() {
            let node = &self.nodes[index];
            if position == end {
                emit(index);
                // `sport/#` also matches `sport` itself [MQTT-4.7.1-2].
                if let Some(hash) = node.hash {
                    emit(hash.get());
                }
                continue;
            }
            let rest = &topic[position..];
            let (level, next) = match rest.find('/') {
                Some(slash) => (&rest[..slash], position + slash + 1),
                None => (rest, end),
            };
            // A filter starting with a wildcard does not match a topic starting with `$`
            // [MQTT-4.7.2-1].
            let wildcards_allowed = !(index == ROOT && level.starts_with('$'));
            if wildcards_allowed {
                if let Some(hash) = node.hash {
                    emit(hash.get());
                }
                if let Some(plus) = node.plus {
                    stack.push((plus.get(), next));
                }
            }
            if let Some(child) = self.named_child(node, level) {
                stack.push((child, next));
            }
        }
    }

    fn child(&self, node: u32, level: &str) -> Option<u32> {
        let node = &self.nodes[node];
        match level {
            "+" => node.plus.map(NonZeroU32::get),
            "#" => node.hash.map(NonZeroU32::get),
            _ => self.named_child(node, level),
        }
    }

    /// The child of `node` at `level`, a level other than `+` and `#`.
    fn named_child(&self, node: &Node<V>, level: &str) -> Option<u32> {
        let named = |&child: &u32| *self.nodes[child].level == *level;
        node.children
            .find(self.hasher.hash_one(level), named)
            .copied()
    }

    /// Where `session` sits in the subscribers of `node`, if it is subscribed there.
    fn position(&self, node: u32, session: SessionKey) -> Option<u32> {
        let node = &self.nodes[node];
        if node.positions.is_empty() {
            let index = node
                .subscribers
                .iter()
                .position(|&(key, _)| key == session)?;
            return Some(u32::try_from(index).expect("fewer than 2^32 sessions"));
        }
        let holds = |&position: &u32| node.subscribers[position as usize].0 == session;
        node.positions
            .find(self.hasher.hash_one(session), holds)
            .copied()
    }

    fn child_or_insert(&mut self, parent: u32, level: &str) -> u32 {
        if let Some(child) = self.child(parent, level) {
            return child;
        }
        let node = Node {
            parent,
            level: level.into(),
            ..Node::default()
        };
        let child = self.nodes.insert(node);
        let link = Some(NonZeroU32::new(child).expect("the root is nobody's child"));
        match level {
            "+" => self.nodes[parent].plus = link,
            "#" => self.nodes[parent].hash = link,
            _ => {
                // Out of its node while it may grow: growing rehashes every child by its level,
                // read from the nodes.
                let mut children = std::mem::take(&mut self.nodes[parent].children);
                let (nodes, hasher) = (&self.nodes, &self.hasher);
                let rehash = |&child: &u32| hasher.hash_one(&*nodes[child].level);
                children.insert_unique(hasher.hash_one(level), child, rehash);
                self.nodes[parent].children = children;
            }
        }
        child
    }

    /// Unlinks and frees `node` and its ancestors while they hold nothing.
    fn prune(&mut self, mut node: u32) {
        while node != ROOT && self.nodes[node].is_empty() {
            let removed = self.nodes.remove(node);
            let hash = self.hasher.hash_one(&*removed.level);
            let parent = &mut self.nodes[removed.parent];
            match &*removed.level {
                "+" => parent.plus = None,
                "#" => parent.hash = None,
                _ => {
                    if let Ok(found) = parent.children.find_entry(hash, |&child| child == node) {
                        found.remove();
                    }
                }
            }
            node = removed.parent;
        }
    }

    /// Number of nodes in use, root included.
    #[cfg(test)]
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::broker::session::SessionKey;
    use crate::protocol::mqtt::topic::filter_matches;
    use crate::slots::Slots;
    use proptest::prelude::*;

    fn keys(n: usize) -> Vec<SessionKey> {
        let mut slab = Slots::default();
        (0..n).map(|i| slab.insert(i)).collect()
    }

    fn matches(trie: &TopicTrie, topic: &str) -> Vec<(SessionKey, QoS)> {
        let mut found = Vec::new();
        trie.for_each_match(topic, &mut Vec::new(), |s, q| found.push((s, q)));
        found.sort();
        found
    }

    #[test]
    fn wildcards_and_dollar_rule() {
        let k = keys(6);
        let mut trie = TopicTrie::new();
        trie.insert("sport/tennis/#", k[0], QoS::AtMostOnce);
        trie.insert("sport/+/player1", k[1], QoS::AtLeastOnce);
        trie.insert("#", k[2], QoS::AtMostOnce);
        trie.insert("+/monitor/Clients", k[3], QoS::AtMostOnce);
        trie.insert("$SYS/#", k[4], QoS::AtMostOnce);
        trie.insert("/+", k[5], QoS::AtMostOnce);
        let sessions = |topic| -> Vec<SessionKey> {
            matches(&trie, topic).into_iter().map(|(s, _)| s).collect()
        };
        assert_eq!(sessions("sport/tennis"), vec![k[0], k[2]]);
        assert_eq!(sessions("sport/tennis/player1"), vec![k[0], k[1], k[2]]);
        assert_eq!(sessions("$SYS/monitor/Clients"), vec![k[4]]);
        assert_eq!(sessions("/finance"), vec![k[2], k[5]]);
        assert_eq!(sessions("sport"), vec![k[2]]);
    }

    #[test]
    fn interest_changes_on_first_and_last_subscriber_only() {
        let k = keys(2);
        let mut trie = TopicTrie::new();
        trie.insert("a/+", k[0], QoS::AtMostOnce);
        let mut changes = Vec::new();
        trie.take_interest(&mut changes);
        assert!(changes.is_empty(), "not recorded until asked");
        trie.record_interest();
        trie.insert("a/#", k[0], QoS::AtMostOnce);
        trie.insert("a/#", k[1], QoS::AtMostOnce);
        trie.insert("a/#", k[1], QoS::AtLeastOnce);
        trie.remove("a/#", k[0]);
        trie.remove("a/#", k[1]);
        trie.remove("a/+", k[0]);
        trie.take_interest(&mut changes);
        let expected: Vec<(Box<str>, bool)> = vec![
            ("a/#".into(), true),
            ("a/#".into(), false),
            ("a/+".into(), false),
        ];
        assert_eq!(changes, expected);
        changes.clear();
        trie.take_interest(&mut changes);
        assert!(changes.is_empty(), "taken once");
    }

    #[test]
    fn insert_twice_replaces_qos() {
        let k = keys(1);
        let mut trie = TopicTrie::new();
        assert!(trie.insert("a/b", k[0], QoS::AtMostOnce));
        assert!(!trie.insert("a/b", k[0], QoS::ExactlyOnce));
        assert_eq!(trie.len(), 1);
        assert_eq!(matches(&trie, "a/b"), vec![(k[0], QoS::ExactlyOnce)]);
    }

    #[test]
    fn removal_prunes_to_root_and_keeps_others() {
        let k = keys(3);
        let mut trie = TopicTrie::new();
        trie.insert("a/b/c", k[0], QoS::AtMostOnce);
        trie.insert("a/b/c", k[1], QoS::AtMostOnce);
        trie.insert("a/+/#", k[2], QoS::AtMostOnce);
        assert!(trie.remove("a/b/c", k[0]));
        assert!(!trie.remove("a/b/c", k[0]));
        assert_eq!(matches(&trie, "a/b/c").len(), 2);
        assert!(trie.remove("a/b/c", k[1]));
        assert!(trie.remove("a/+/#", k[2]));
        assert!(!trie.remove("x/y", k[2]));
        assert_eq!(trie.len(), 0);
        assert_eq!(trie.node_count(), 1);
    }

    #[test]
    fn positions_index_comes_and_goes_with_the_subscribers() {
        let n = 3 * POSITIONS_FROM;
        let k = keys(n);
        let mut trie = TopicTrie::new();
        for (i, &key) in k.iter().enumerate() {
            assert!(trie.insert("t", key, QoS::AtMostOnce));
            assert!(
                !trie.insert("t", key, QoS::AtLeastOnce),
                "subscriber {i} is known"
            );
        }
        assert_eq!(matches(&trie, "t").len(), n);
        // Remove in a scrambled order, through and below the index thresholds, re-adding
        // some on the way so the index is rebuilt and dropped more than once.
        let mut left: Vec<SessionKey> = k.clone();
        let mut readded = 0;
        let mut step = 0;
        while !left.is_empty() {
            let key = left.remove((step * 7) % left.len());
            step += 1;
            assert!(trie.remove("t", key));
            assert!(!trie.remove("t", key));
            if left.len() == POSITIONS_FROM / 2 && readded < 2 * POSITIONS_FROM {
                for &key in &k {
                    if !left.contains(&key) {
                        assert!(trie.insert("t", key, QoS::AtLeastOnce));
                        left.push(key);
                        readded += 1;
                    }
                }
            }
            let mut expected: Vec<(SessionKey, QoS)> =
                left.iter().map(|&key| (key, QoS::AtLeastOnce)).collect();
            expected.sort();
            assert_eq!(matches(&trie, "t"), expected, "after {step} removals");
            assert_eq!(trie.len(), left.len());
        }
        assert!(readded > 0);
        assert_eq!(trie.node_count(), 1);
    }

    /// The sizes the per-connection budget in `broker/session.rs` counts.
    #[test]
    fn budget_sizes() {
        use crate::broker::subscription::Grant;
        assert_eq!(std::mem::size_of::<Node<Grant>>(), 120);
        assert_eq!(std::mem::size_of::<(SessionKey, Grant)>(), 16);
    }

    #[test]
    fn a_lone_subscriber_holds_one_slot_and_no_index() {
        let k = keys(2);
        let mut trie = TopicTrie::new();
        trie.insert("a/b", k[0], QoS::AtMostOnce);
        let node = trie.child(ROOT, "a").and_then(|a| trie.child(a, "b"));
        let node = &trie.nodes[node.expect("inserted")];
        assert_eq!(node.subscribers.capacity(), 1);
        assert_eq!(node.positions.capacity(), 0);
    }

    pub(crate) fn level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "", "$sys", "+", "#"])
    }

    /// A syntactically valid filter: `#` only as the last level.
    pub(crate) fn filter() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5).prop_map(|levels| {
            let cut = levels
                .iter()
                .position(|l| *l == "#")
                .map_or(levels.len(), |i| i + 1);
            levels[..cut].join("/")
        })
    }

    /// A topic name: no wildcards, at least one character.
    pub(crate) fn topic() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec!["a", "b", "", "$sys"]);
        prop::collection::vec(name, 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("topic names are not empty", |t| !t.is_empty())
    }

    proptest! {
        #[test]
        /// Differential: the trie against the codec's naive reference matcher.
        fn trie_agrees_with_naive_matcher(
            filters in prop::collection::vec(filter(), 1..12),
            removed in prop::collection::vec(any::<bool>(), 12),
            topics in prop::collection::vec(topic(), 1..8),
        ) {
            let k = keys(filters.len());
            let mut trie = TopicTrie::new();
            for (i, f) in filters.iter().enumerate() {
                trie.insert(f, k[i], QoS::AtMostOnce);
            }
            let mut live = Vec::new();
            for (i, f) in filters.iter().enumerate() {
                if removed[i] {
                    trie.remove(f, k[i]);
                } else {
                    live.push(i);
                }
            }
            for t in &topics {
                let got: Vec<SessionKey> = matches(&trie, t).into_iter().map(|(s, _)| s).collect();
                let mut want: Vec<SessionKey> =
                    live.iter().filter(|&&i| filter_matches(&filters[i], t)).map(|&i| k[i]).collect();
                want.sort();
                prop_assert_eq!(got, want, "topic {:?} filters {:?}", t, filters);
            }
            for &i in &live {
                trie.remove(&filters[i], k[i]);
            }
            prop_assert_eq!(trie.len(), 0);
            prop_assert_eq!(trie.node_count(), 1);
        }
    }
}
