//! Entry points for `benches/`: the topic trie measured on its own, outside any session.
//! Not part of the broker's interface.

use super::session::SessionKey;
use super::topic_trie::{MatchStack, TopicTrie};
use crate::protocol::mqtt::QoS;
use crate::slots::Slots;

/// A topic trie with one subscriber per filter.
#[doc(hidden)]
pub struct TrieBench {
    trie: TopicTrie,
    keys: Slots<SessionKey, ()>,
    stack: MatchStack,
}

impl Default for TrieBench {
    fn default() -> Self {
        TrieBench {
            trie: TopicTrie::new(),
            keys: Slots::default(),
            stack: Vec::new(),
        }
    }
}

impl TrieBench {
    /// Subscribes a new subscriber to `filter` (assumed valid).
    pub fn subscribe(&mut self, filter: &str) {
        let key: SessionKey = self.keys.insert(());
        self.trie.insert(filter, key, QoS::AtMostOnce);
    }

    /// How many subscriptions match the topic name `topic`.
    pub fn count_matches(&mut self, topic: &str) -> usize {
        let mut count = 0;
        self.trie
            .for_each_match(topic, &mut self.stack, |_, _| count += 1);
        count
    }
}
