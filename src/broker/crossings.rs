//! The same message reaching this broker over two bridges at once, and only one copy
//! delivered (`docs/bridges.md`, Loops).
//!
//! Two brokers that each hold a bridge to the other, both carrying a topic both ways, are
//! joined by two links: a message published on one reaches the other once pushed by the
//! first broker's bridge (a PUBLISH from a bridge connection, [`Path::Pushed`]) and once
//! pulled by the second broker's own bridge, subscribed there ([`Path::Pulled`]). Neither
//! link knows of the other, and MQTT gives a message no identity that survives the hop, so
//! each bridge remembers the fingerprints (topic and payload) of the last messages that
//! came each way for its `in` topics; a message that arrives one way while an equal one
//! waits from the other way is the second copy: it is dropped, and the first is forgotten.
//! Counted as a multiset, a message published twice arrives four times and is delivered
//! twice. A different broker's bridge connection that publishes an equal message on one of
//! these topics in the same moment is taken for a copy too: the price of having no
//! identity, and why the bound is small.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use crate::protocol::mqtt::topic::filter_matches;

/// The way a message came over a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Published here by another broker's bridge connection.
    Pushed,
    /// Brought in by this broker's own bridge.
    Pulled,
}

/// What one bridge remembers: see the module documentation.
#[derive(Debug)]
pub struct Crossings {
    /// The local filters of the bridge's `in` mappings: only messages these match can come
    /// both ways.
    in_filters: Vec<String>,
    /// Fingerprints remembered each way, at most `remembered_max` each (8 bytes apiece).
    pushed: VecDeque<u64>,
    pulled: VecDeque<u64>,
    remembered_max: usize,
    /// Second copies dropped, for `fanfare_bridge_second_copies_total`.
    second_copies: u64,
}

impl Crossings {
    pub fn new(in_filters: Vec<String>, remembered_max: usize) -> Crossings {
        Crossings {
            in_filters,
            pushed: VecDeque::new(),
            pulled: VecDeque::new(),
            remembered_max,
            second_copies: 0,
        }
    }

    /// Second copies dropped so far.
    pub fn second_copies(&self) -> u64 {
        self.second_copies
    }

    /// Whether the bridge can bring in a message of `topic` (a local topic name).
    pub fn covers(&self, topic: &str) -> bool {
        self.in_filters
            .iter()
            .any(|filter| filter_matches(filter, topic))
    }

    /// A message arrives by `path`: `true` when an equal one waits from the other way, which
    /// is then forgotten; this one is the second copy.
    pub fn second_copy(&mut self, path: Path, print: u64) -> bool {
        let other = match path {
            Path::Pushed => &mut self.pulled,
            Path::Pulled => &mut self.pushed,
        };
        match other.iter().position(|&seen| seen == print) {
            Some(at) => {
                other.remove(at);
                self.second_copies += 1;
                true
            }
            None => false,
        }
    }

    /// A message that arrived by `path` and was delivered: remembered, the oldest that way
    /// forgotten past the bound.
    pub fn note(&mut self, path: Path, print: u64) {
        if self.remembered_max == 0 {
            return;
        }
        let seen = match path {
            Path::Pushed => &mut self.pushed,
            Path::Pulled => &mut self.pulled,
        };
        if seen.len() == self.remembered_max {
            seen.pop_front();
        }
        seen.push_back(print);
    }
}

/// Topic and payload: what two copies of a message share across two bridges (QoS and RETAIN
/// may differ with each mapping's `qos`).
pub fn fingerprint(topic: &str, payload: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut hasher);
    payload.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_copy_either_way_is_recognised_once() {
        let mut crossings = Crossings::new(vec!["a/#".into()], 4);
        assert!(crossings.covers("a/b") && !crossings.covers("b"));
        let print = fingerprint("a/b", b"x");
        assert!(!crossings.second_copy(Path::Pushed, print));
        crossings.note(Path::Pushed, print);
        assert!(
            !crossings.second_copy(Path::Pushed, print),
            "the same way twice: two messages"
        );
        crossings.note(Path::Pushed, print);
        assert!(crossings.second_copy(Path::Pulled, print));
        assert!(crossings.second_copy(Path::Pulled, print));
        assert!(
            !crossings.second_copy(Path::Pulled, print),
            "both forgotten"
        );
        assert_eq!(crossings.second_copies(), 2);
    }

    #[test]
    fn the_oldest_are_forgotten_past_the_bound() {
        let mut crossings = Crossings::new(vec!["#".into()], 2);
        for payload in [b"1", b"2", b"3"] {
            crossings.note(Path::Pulled, fingerprint("t", payload));
        }
        assert!(!crossings.second_copy(Path::Pushed, fingerprint("t", b"1")));
        assert!(crossings.second_copy(Path::Pushed, fingerprint("t", b"3")));
        assert_ne!(fingerprint("t", b"1"), fingerprint("u", b"1"));
    }
}
