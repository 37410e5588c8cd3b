//! The retained changes this shard owes the store since its last flush, conflated per topic:
//! a topic updated a thousand times between two flushes is written once, with its last value.
//!
//! Only the topics this shard owns (`Broker::owner_shard` of the topic) are noted: every
//! shard applies every retained publish, so the owner sees every change of its topics, and
//! the others need not write them again. The broker's own `$SYS` topics are not kept: a
//! restarted broker publishes fresh ones, and old figures would only mislead.
//!
//! Bounded by the retained store's bounds: at most one entry per topic, and the message is
//! the `Arc` the replica holds.

use std::collections::HashMap;
use std::sync::Arc;

use super::Broker;
use super::outbox::RoutedMessage;
use super::retained::RetainOutcome;

/// One retained topic's state to write: its message, or `None` for deleted.
#[derive(Debug, Clone)]
pub struct RetainedWrite {
    pub topic: Box<str>,
    pub message: Option<Arc<RoutedMessage>>,
}

#[derive(Default)]
pub(crate) struct RetainedWrites {
    pending: HashMap<Box<str>, Option<Arc<RoutedMessage>>>,
}

impl RetainedWrites {
    /// Notes what a retained publish did to a topic this shard owns.
    pub(crate) fn note(&mut self, message: &Arc<RoutedMessage>, outcome: RetainOutcome) {
        if message.topic.starts_with("$SYS") {
            return;
        }
        let value = match outcome {
            RetainOutcome::Stored => Some(Arc::clone(message)),
            // A rejected update removed the topic's older message from the replica.
            RetainOutcome::Cleared | RetainOutcome::Rejected => None,
        };
        match self.pending.get_mut(&*message.topic) {
            Some(slot) => *slot = value,
            None => {
                self.pending.insert(message.topic.clone(), value);
            }
        }
    }
}

impl Broker {
    /// Notes the retained changes of this shard's topics from now on, for the store.
    pub fn keep_retained_writes(&mut self) {
        self.retained_writes = Some(RetainedWrites::default());
    }

    /// Whether the store writes now, as the store reports it: while it cannot, QoS 1/2
    /// publishes are refused, since what they change could not be kept (`inbound.rs`).
    pub fn set_store_writable(&mut self, writable: bool) {
        self.store_writable = writable;
    }

    /// Applies retained messages loaded from the store at start-up to this shard's replica;
    /// they are already on disk, so they are not noted.
    pub fn load_retained(&mut self, messages: &[Arc<RoutedMessage>]) {
        for message in messages {
            if self.retained.apply(message) == RetainOutcome::Rejected {
                self.stats.retained_rejected += 1;
            }
        }
    }

    /// Whether retained changes wait for the next flush.
    pub fn retained_writes_pending(&self) -> bool {
        self.retained_writes
            .as_ref()
            .is_some_and(|writes| !writes.pending.is_empty())
    }

    /// The retained changes since the last flush, in no particular order (each topic once).
    pub fn take_retained_writes(&mut self) -> Vec<RetainedWrite> {
        let Some(writes) = self.retained_writes.as_mut() else {
            return Vec::new();
        };
        writes
            .pending
            .drain()
            .map(|(topic, message)| RetainedWrite { topic, message })
            .collect()
    }

    /// Takes back a flush the store had no room for. What changed since is newer and stays.
    pub fn return_retained_writes(&mut self, returned: Vec<RetainedWrite>) {
        let Some(writes) = self.retained_writes.as_mut() else {
            return;
        };
        for write in returned {
            writes.pending.entry(write.topic).or_insert(write.message);
        }
    }

    /// Called for every retained publish this shard applies.
    pub(super) fn note_retained(&mut self, message: &Arc<RoutedMessage>, outcome: RetainOutcome) {
        let Some(writes) = self.retained_writes.as_mut() else {
            return;
        };
        if Broker::owner_shard(&message.topic, self.shard_count) == self.shard {
            writes.note(message, outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::protocol::mqtt::QoS;
    use std::time::Instant;

    fn message(topic: &str, payload: &[u8]) -> Arc<RoutedMessage> {
        Arc::new(RoutedMessage::new(topic, payload, QoS::AtMostOnce, true))
    }

    #[test]
    fn updates_conflate_per_topic_and_deletes_win_when_last() {
        let mut broker = Broker::new(0, 1, Limits::default(), Instant::now());
        broker.keep_retained_writes();
        for n in 0..1000 {
            broker.retain(&message("score", format!("{n}").as_bytes()));
        }
        broker.retain(&message("gone", b"1"));
        broker.retain(&message("gone", b""));
        broker.retain(&message("$SYS/broker/uptime", b"1"));
        let mut writes = broker.take_retained_writes();
        writes.sort_by(|a, b| a.topic.cmp(&b.topic));
        assert_eq!(writes.len(), 2);
        assert_eq!(&*writes[0].topic, "gone");
        assert!(writes[0].message.is_none());
        let last = writes[1].message.as_ref().expect("set");
        assert_eq!(&*last.payload, b"999");
        assert!(!broker.retained_writes_pending());
        broker.retain(&message("score", b"newer"));
        broker.return_retained_writes(writes);
        let writes = broker.take_retained_writes();
        let score = writes.iter().find(|w| &*w.topic == "score").expect("kept");
        assert_eq!(&*score.message.as_ref().expect("set").payload, b"newer");
    }

    #[test]
    fn only_the_owner_shard_notes_a_topic() {
        let owner = Broker::owner_shard("t", 2);
        for shard in 0..2 {
            let mut broker = Broker::new(shard, 2, Limits::default(), Instant::now());
            broker.keep_retained_writes();
            broker.retain(&message("t", b"1"));
            assert_eq!(broker.retained_writes_pending(), shard == owner);
        }
    }
}
