//! Retained values set on this node while it was cut off from NATS: the last one of each
//! topic, remembered until the node can write them to the stream of retained messages
//! (`retained.rs`), within `retained_unsent_bytes_max`.
//!
//! **Which value wins** when another node set the same topic meanwhile: the later one. The
//! stream's value is later when this node had not read it yet when its client set the topic
//! (its stream sequence is above the last one this node had applied then) and it was set
//! after that moment: by the [`SET_AT`] header of a value another node wrote after a cut of
//! its own, else by the time JetStream stored it (the NATS server's clock against this
//! node's). A value this node had read already is older by construction, whatever the clocks
//! say; only values written by others during the cut are compared by the clocks, so a skew
//! between the clocks decides only between writes made that close together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;

use crate::broker::RoutedMessage;

/// The header of a value written after a cut: when its client set it, in milliseconds since
/// the Unix epoch by the clock of the node it was set on.
pub(super) const SET_AT: &str = "Fanfare-Retained-Set-At";

/// One topic's value set while cut off.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub message: Arc<RoutedMessage>,
    /// When the client set it, by this node's clock.
    pub set_at: SystemTime,
    /// The last stream sequence this node had applied when it was set.
    pub seen_sequence: u64,
    /// Tells this value from a later one of the same topic, remembered while this one was
    /// being sent.
    pub generation: u64,
}

#[derive(Debug)]
pub(super) struct Unsent {
    by_topic: HashMap<Box<str>, Held>,
    bytes: u64,
    bytes_max: u64,
    generation: u64,
}

impl Unsent {
    pub fn new(bytes_max: u64) -> Unsent {
        Unsent {
            by_topic: HashMap::new(),
            bytes: 0,
            bytes_max,
            generation: 0,
        }
    }

    /// Remembers `message` as its topic's value, in place of an earlier one; `false` (and
    /// nothing remembered) when it would take the remembered bytes past the bound.
    pub fn remember(
        &mut self,
        message: Arc<RoutedMessage>,
        set_at: SystemTime,
        seen_sequence: u64,
    ) -> bool {
        let bytes = message.bytes() as u64;
        let replaced = self
            .by_topic
            .get(&message.topic)
            .map_or(0, |held| held.message.bytes() as u64);
        if self.bytes - replaced + bytes > self.bytes_max {
            return false;
        }
        self.generation += 1;
        self.bytes = self.bytes - replaced + bytes;
        let held = Held {
            message: Arc::clone(&message),
            set_at,
            seen_sequence,
            generation: self.generation,
        };
        self.by_topic.insert(message.topic.clone(), held);
        true
    }

    /// Forgets `topic`'s value: a later one of this node went to the stream.
    pub fn forget(&mut self, topic: &str) {
        if let Some(held) = self.by_topic.remove(topic) {
            self.bytes -= held.message.bytes() as u64;
        }
    }

    /// Takes `topic`'s value out if it is still the one of `generation`; `false` when a later
    /// value replaced it or it was forgotten.
    pub fn take(&mut self, topic: &str, generation: u64) -> bool {
        let current = self
            .by_topic
            .get(topic)
            .is_some_and(|held| held.generation == generation);
        if current {
            self.forget(topic);
        }
        current
    }

    /// Some remembered value, to be sent.
    pub fn any(&self) -> Option<Held> {
        self.by_topic.values().next().cloned()
    }

    pub fn contains(&self, topic: &str) -> bool {
        self.by_topic.contains_key(topic)
    }

    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_topic.len()
    }
}

/// `headers` with [`SET_AT`] saying `set_at`.
pub(super) fn with_set_at(mut headers: HeaderMap, set_at: SystemTime) -> HeaderMap {
    let ms = set_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    headers.insert(SET_AT, ms.to_string().as_str());
    headers
}

/// When the stream's value was set: its [`SET_AT`] header, else `stored_at`.
pub(super) fn set_at_of(headers: &HeaderMap, stored_at: SystemTime) -> SystemTime {
    headers
        .get(SET_AT)
        .and_then(|value| value.as_str().parse::<u64>().ok())
        .map_or(stored_at, |ms| {
            SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
        })
}

/// Whether the stream's value of a topic, stored as `stream_sequence` and set at `set_at`,
/// wins over `held` (see the module documentation).
pub(super) fn stream_value_wins(stream_sequence: u64, set_at: SystemTime, held: &Held) -> bool {
    stream_sequence > held.seen_sequence && set_at > held.set_at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mqtt::QoS;

    fn message(topic: &str, payload: &[u8]) -> Arc<RoutedMessage> {
        Arc::new(RoutedMessage::new(topic, payload, QoS::AtMostOnce, true))
    }

    #[test]
    fn keeps_the_last_value_per_topic_within_its_bytes() {
        let one = message("a", b"1").bytes() as u64;
        let mut unsent = Unsent::new(2 * one);
        let now = SystemTime::now();
        assert!(unsent.remember(message("a", b"1"), now, 0));
        assert!(unsent.remember(message("a", b"2"), now, 0), "a replacement");
        assert!(unsent.remember(message("b", b"1"), now, 0));
        assert!(
            !unsent.remember(message("c", b"1"), now, 0),
            "past the bound"
        );
        assert!(!unsent.contains("c"));
        let held = unsent.any().expect("two held");
        assert!(unsent.take(&held.message.topic, held.generation));
        assert!(!unsent.take(&held.message.topic, held.generation), "taken");
        assert!(unsent.remember(message("c", b"1"), now, 0), "room again");
    }

    #[test]
    fn a_later_value_is_not_taken_in_place_of_the_one_being_sent() {
        let mut unsent = Unsent::new(1 << 20);
        let now = SystemTime::now();
        unsent.remember(message("a", b"1"), now, 0);
        let sending = unsent.any().expect("held");
        unsent.remember(message("a", b"2"), now, 0);
        assert!(!unsent.take("a", sending.generation));
        unsent.forget("a");
        assert!(unsent.is_empty());
    }

    #[test]
    fn the_later_write_wins() {
        let set_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let held = Held {
            message: message("a", b"1"),
            set_at,
            seen_sequence: 10,
            generation: 1,
        };
        let later = set_at + Duration::from_secs(1);
        let earlier = set_at - Duration::from_secs(1);
        assert!(
            stream_value_wins(11, later, &held),
            "written by another node after"
        );
        assert!(
            !stream_value_wins(11, earlier, &held),
            "written during the cut, before"
        );
        assert!(!stream_value_wins(10, later, &held), "read before: older");
    }

    #[test]
    fn the_set_at_header_says_when_a_value_written_after_a_cut_was_set() {
        let set_at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let stored_at = set_at + Duration::from_secs(60);
        let headers = with_set_at(HeaderMap::new(), set_at);
        assert_eq!(set_at_of(&headers, stored_at), set_at);
        assert_eq!(set_at_of(&HeaderMap::new(), stored_at), stored_at);
        let mut bad = HeaderMap::new();
        bad.insert(SET_AT, "soon");
        assert_eq!(set_at_of(&bad, stored_at), stored_at);
    }
}
