//! This shard's replica of the retained messages: a trie keyed by topic level, walked with a
//! subscription's filter to find the retained messages to send on SUBSCRIBE [MQTT-3.3.1-6].
//!
//! Every shard applies every retained publish (local or routed), so the replicas converge;
//! nothing is shared mutably between shards. A message is held as the `Arc<RoutedMessage>`
//! that was routed, so local replicas of a locally published message share its bytes.
//!
//! Bounded twice per shard: `retained_messages_max` topics and `retained_bytes_max` bytes of
//! messages (topic, payload, properties and their envelope, counted in full on every shard even
//! where replicas share one `Arc`). A retained publish that would pass either bound is
//! forwarded but not stored, and counted; if it updates a topic, that topic's older message is
//! removed rather than kept, so a late subscriber never gets a value known to be stale.

use std::collections::HashMap;
use std::sync::Arc;

use super::outbox::RoutedMessage;
use super::topic_trie::with_root;
use crate::slots::Arena;

const ROOT: u32 = 0;

/// Marks a stack entry whose whole subtree matches (the filter reached `#`).
const SUBTREE: usize = usize::MAX;

#[derive(Default)]
struct Node {
    parent: u32,
    level: Box<str>,
    children: HashMap<Box<str>, u32>,
    message: Option<Arc<RoutedMessage>>,
}

/// What a retained publish did to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetainOutcome {
    /// Stored, replacing any previous message of the topic [MQTT-3.3.1-5].
    Stored,
    /// An empty payload removed the topic's message [MQTT-3.3.1-10/11].
    Cleared,
    /// Past `retained_messages_max` or `retained_bytes_max`: forwarded, but not retained (and
    /// an older message of the topic is removed).
    Rejected,
}

/// A scratch stack kept by the caller so walks do not allocate once warm.
pub(crate) type RetainedStack = Vec<(u32, usize)>;

pub(crate) struct RetainedStore {
    /// The trie's nodes, the root at [`ROOT`].
    nodes: Arena<Node>,
    count: usize,
    count_max: usize,
    bytes: usize,
    bytes_max: usize,
}

impl RetainedStore {
    pub(crate) fn new(retained_messages_max: u32, retained_bytes_max: u64) -> RetainedStore {
        RetainedStore {
            nodes: with_root(),
            count: 0,
            count_max: retained_messages_max as usize,
            bytes: 0,
            bytes_max: usize::try_from(retained_bytes_max).unwrap_or(usize::MAX),
        }
    }

    /// Takes reloaded bounds. Messages held stay, even past lowered bounds; a retained publish
    /// is stored only where the store is within them after it, as always.
    pub(crate) fn set_bounds(&mut self, retained_messages_max: u32, retained_bytes_max: u64) {
        self.count_max = retained_messages_max as usize;
        self.bytes_max = usize::try_from(retained_bytes_max).unwrap_or(usize::MAX);
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Bytes of the messages held, as the bound counts them.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Applies a publish that carried RETAIN=1.
    pub(crate) fn apply(&mut self, message: &Arc<RoutedMessage>) -> RetainOutcome {
        debug_assert!(message.retain, "only retained publishes reach the store");
        if message.payload.is_empty() {
            self.clear(&message.topic);
            return RetainOutcome::Cleared;
        }
        let bytes = message.bytes();
        if let Some(node) = self.find(&message.topic) {
            let slot = &mut self.nodes[node].message;
            if let Some(old) = slot.as_ref() {
                let old_bytes = old.bytes();
                if self.bytes - old_bytes + bytes > self.bytes_max {
                    self.clear(&message.topic);
                    return RetainOutcome::Rejected;
                }
                *slot = Some(Arc::clone(message));
                self.bytes = self.bytes - old_bytes + bytes;
                return RetainOutcome::Stored;
            }
        }
        if self.count >= self.count_max || self.bytes + bytes > self.bytes_max {
            return RetainOutcome::Rejected;
        }
        let mut node = ROOT;
        for level in message.topic.split('/') {
            node = self.child_or_insert(node, level);
        }
        self.nodes[node].message = Some(Arc::clone(message));
        self.count += 1;
        self.bytes += bytes;
        RetainOutcome::Stored
    }

    /// Removes the retained message of `topic`, if any.
    fn clear(&mut self, topic: &str) {
        let Some(node) = self.find(topic) else {
            return;
        };
        if let Some(old) = self.nodes[node].message.take() {
            self.count -= 1;
            self.bytes -= old.bytes();
        }
        self.prune(node);
    }

    /// Calls `visit` with every retained message whose topic matches `filter`.
    pub(crate) fn for_each_match(
        &self,
        filter: &str,
        stack: &mut RetainedStack,
        mut visit: impl FnMut(&Arc<RoutedMessage>),
    ) {
        let end = filter.len() + 1;
        stack.clear();
        stack.push((ROOT, 0));
        while let Some((index, position)) = stack.pop() {
            let node = &self.nodes[index];
            if position == end {
                if let Some(message) = &node.message {
                    visit(message);
                }
                continue;
            }
            if position == SUBTREE {
                if let Some(message) = &node.message {
                    visit(message);
                }
                for (level, &child) in &node.children {
                    if index != ROOT || !level.starts_with('$') {
                        stack.push((child, SUBTREE));
                    }
                }
                continue;
            }
            let rest = &filter[position..];
            let (level, next) = match rest.find('/') {
                Some(slash) => (&rest[..slash], position + slash + 1),
                None => (rest, end),
            };
            match level {
                // `#` matches the parent level too [MQTT-4.7.1-2]: visit this node's own
                // message, then everything below. Topics starting with `$` are not matched by
                // a filter starting with a wildcard [MQTT-4.7.2-1].
                "#" => stack.push((index, SUBTREE)),
                "+" => {
                    for (child_level, &child) in &node.children {
                        if index != ROOT || !child_level.starts_with('$') {
                            stack.push((child, next));
                        }
                    }
                }
                _ => {
                    if let Some(&child) = node.children.get(level) {
                        stack.push((child, next));
                    }
                }
            }
        }
    }

    fn find(&self, topic: &str) -> Option<u32> {
        let mut node = ROOT;
        for level in topic.split('/') {
            node = *self.nodes[node].children.get(level)?;
        }
        Some(node)
    }

    fn child_or_insert(&mut self, parent: u32, level: &str) -> u32 {
        if let Some(&child) = self.nodes[parent].children.get(level) {
            return child;
        }
        let node = Node {
            parent,
            level: level.into(),
            ..Node::default()
        };
        let child = self.nodes.insert(node);
        self.nodes[parent].children.insert(level.into(), child);
        child
    }

    fn prune(&mut self, mut node: u32) {
        while node != ROOT {
            let entry = &self.nodes[node];
            if entry.message.is_some() || !entry.children.is_empty() {
                return;
            }
            let removed = self.nodes.remove(node);
            self.nodes[removed.parent].children.remove(&removed.level);
            node = removed.parent;
        }
    }

    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::topic_trie::tests::{filter, topic};
    use crate::protocol::mqtt::QoS;
    use crate::protocol::mqtt::topic::filter_matches;
    use proptest::prelude::*;

    fn message(topic: &str, payload: &[u8]) -> Arc<RoutedMessage> {
        Arc::new(RoutedMessage::new(topic, payload, QoS::AtMostOnce, true))
    }

    fn topics(store: &RetainedStore, filter: &str) -> Vec<String> {
        let mut found = Vec::new();
        store.for_each_match(filter, &mut Vec::new(), |m| found.push(m.topic.to_string()));
        found.sort();
        found
    }

    #[test]
    fn set_replace_clear() {
        let mut store = RetainedStore::new(10, u64::MAX);
        assert_eq!(store.apply(&message("a/b", b"1")), RetainOutcome::Stored);
        assert_eq!(store.apply(&message("a/b", b"2")), RetainOutcome::Stored);
        assert_eq!(store.len(), 1);
        let mut payloads = Vec::new();
        store.for_each_match("a/b", &mut Vec::new(), |m| payloads.push(m.payload.clone()));
        assert_eq!(payloads, vec![Box::from(&b"2"[..])]);
        assert_eq!(store.apply(&message("a/b", b"")), RetainOutcome::Cleared);
        assert_eq!(store.len(), 0);
        assert_eq!(store.node_count(), 1);
        assert_eq!(store.apply(&message("x", b"")), RetainOutcome::Cleared);
    }

    #[test]
    fn wildcards_and_dollar_rule() {
        let mut store = RetainedStore::new(10, u64::MAX);
        for topic in ["a", "a/b", "a/c/d", "$sys/x", "/e"] {
            store.apply(&message(topic, b"p"));
        }
        assert_eq!(topics(&store, "#"), vec!["/e", "a", "a/b", "a/c/d"]);
        assert_eq!(topics(&store, "a/#"), vec!["a", "a/b", "a/c/d"]);
        assert_eq!(topics(&store, "+"), vec!["a"]);
        assert_eq!(topics(&store, "+/+"), vec!["/e", "a/b"]);
        assert_eq!(topics(&store, "$sys/#"), vec!["$sys/x"]);
        assert_eq!(topics(&store, "+/x"), Vec::<String>::new());
        assert_eq!(topics(&store, "a/+/d"), vec!["a/c/d"]);
    }

    #[test]
    fn new_topics_past_the_limit_are_rejected() {
        let mut store = RetainedStore::new(1, u64::MAX);
        assert_eq!(store.apply(&message("a", b"1")), RetainOutcome::Stored);
        assert_eq!(store.apply(&message("b", b"1")), RetainOutcome::Rejected);
        assert_eq!(store.apply(&message("a", b"2")), RetainOutcome::Stored);
        assert_eq!(topics(&store, "#"), vec!["a"]);
        assert_eq!(store.node_count(), 2);
    }

    #[test]
    fn bytes_are_bounded_and_a_stale_value_does_not_stay() {
        let small = message("s", b"1");
        let bound = 3 * small.bytes() as u64;
        let mut store = RetainedStore::new(100, bound);
        assert_eq!(store.apply(&message("a", b"1")), RetainOutcome::Stored);
        assert_eq!(store.apply(&message("b", b"1")), RetainOutcome::Stored);
        assert_eq!(store.bytes(), 2 * small.bytes());
        let big = message("c", &[0; 200]);
        assert_eq!(
            store.apply(&big),
            RetainOutcome::Rejected,
            "a new topic past the bytes"
        );
        // An update that does not fit removes the older value of its topic.
        assert_eq!(
            store.apply(&message("a", &[0; 200])),
            RetainOutcome::Rejected
        );
        assert_eq!(topics(&store, "#"), vec!["b"]);
        assert_eq!(store.bytes(), small.bytes());
        assert_eq!(store.apply(&message("b", b"")), RetainOutcome::Cleared);
        assert_eq!((store.len(), store.bytes()), (0, 0));
        assert_eq!(store.node_count(), 1, "only the root is left");
    }

    proptest! {
        /// Differential: retained lookup against the codec's naive reference matcher, after
        /// random sets and clears.
        #[test]
        fn lookup_agrees_with_naive_matcher(
            writes in prop::collection::vec((topic(), any::<bool>()), 1..16),
            filters in prop::collection::vec(filter(), 1..8),
        ) {
            let mut store = RetainedStore::new(1000, u64::MAX);
            let mut model = std::collections::BTreeSet::new();
            for (t, clear) in &writes {
                let payload: &[u8] = if *clear { b"" } else { b"p" };
                store.apply(&message(t, payload));
                if *clear {
                    model.remove(t.as_str());
                } else {
                    model.insert(t.as_str());
                }
            }
            prop_assert_eq!(store.len(), model.len());
            for f in &filters {
                let want: Vec<String> =
                    model.iter().filter(|t| filter_matches(f, t)).map(|t| t.to_string()).collect();
                prop_assert_eq!(topics(&store, f), want, "filter {:?}", f);
            }
            for t in model.clone() {
                store.apply(&message(t, b""));
            }
            prop_assert_eq!(store.node_count(), 1);
        }
    }
}
