//! In cluster mode, the identity of a QoS 1/2 publish across the nodes, and the identities a
//! connected persistent session remembers of what it was sent lately (`docs/scale-out.md`, "A
//! node that dies").
//!
//! The sessions of a node that died resume on another node from their last image in the
//! bucket, and the QoS stream is read again from `session_replay_margin_ms` before that image
//! was written: a message on its way to the session when the image was taken (published
//! before, taken from JetStream or delivered after) is then not lost. What that reading
//! brings that the session already had is known by its identity: the image's queued and
//! in-flight messages carry theirs, and the image lists the identities of what its client
//! was sent within the margin, which it may have acknowledged since (no longer queued).
//!
//! An identity is given where a publish enters the cluster, before its first delivery on its
//! node: 64 bits that differ between node processes (the start time in nanoseconds mixed
//! with the process id), then the shard and a count.
//!
//! **A QoS 2 publish resent after its node's death.** Under `durability = "sync"` a QoS 2
//! publish of a persistent session has an origin instead (`origins.rs`): the session's
//! incarnation (in cluster mode drawn when the session begins, so that every image of it has
//! one) and the publish's number in it, counted on from the number committed with the
//! session's last image. Its identity is made of those and its packet identifier
//! ([`MessageId::of_publish`]), so the node its session moves to when its node dies gives
//! the client's resend the identity the first node gave the original: a PUBREC reaches the
//! client only once the image that committed its number is in the bucket, so the publishes
//! the client sends again are the ones numbered after that image, in the order it sent them
//! [MQTT-4.6.0-1]. The QoS stream keeps one of the two (JetStream's duplicate window, on
//! `Nats-Msg-Id`), and a node delivers the one that reaches it first ([`Delivered`], shared
//! by its shards and its NATS thread). Where the numbers could drift apart (a 3.x publish
//! JetStream refused, which its client sends again while its number is spent), the packet
//! identifier keeps two different messages apart: two publishes the client had under way at
//! once never share one. A drift then costs a duplicate, never a message.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A QoS 1/2 message's identity in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u128);

/// Digits of an identity in a NATS header: 32 lowercase hexadecimal digits.
const HEADER_DIGITS: usize = 32;

impl MessageId {
    /// The value of its NATS header.
    pub fn to_header(self) -> String {
        format!("{:032x}", self.0)
    }

    /// An identity as [`MessageId::to_header`] writes it; `None` for anything else (a header
    /// from any NATS client is input).
    pub fn from_header(value: &str) -> Option<MessageId> {
        if value.len() != HEADER_DIGITS || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(value, 16).ok().map(MessageId)
    }

    /// The identity of a QoS 2 publish with an origin: the same on every node (see the
    /// module documentation). A random incarnation keeps it apart from the identities
    /// [`MessageIds`] gives, whose high half is a process's.
    pub fn of_publish(incarnation: u64, seq: u64, packet_id: u16) -> MessageId {
        let seq = u128::from(seq) & ((1 << COUNT_BITS) - 1);
        MessageId((u128::from(incarnation) << 64) | (seq << 16) | u128::from(packet_id))
    }
}

/// Bits of an identity's low half left to the count: 2^48 publishes per shard and process.
const COUNT_BITS: u32 = 48;

/// Gives the identities of the publishes that enter on one shard.
pub(crate) struct MessageIds {
    high: u128,
    next: u64,
}

impl MessageIds {
    pub(crate) fn new(shard: usize) -> MessageIds {
        let shard = (shard as u128 & 0xFFFF) << COUNT_BITS;
        MessageIds {
            high: (u128::from(process_bits()) << 64) | shard,
            next: 0,
        }
    }

    pub(crate) fn next(&mut self) -> MessageId {
        let count = u128::from(self.next) & ((1 << COUNT_BITS) - 1);
        self.next = self.next.wrapping_add(1);
        MessageId(self.high | count)
    }
}

/// 64 bits for this process: its start in nanoseconds, mixed with its process id so that
/// two nodes started in the same nanosecond still differ.
fn process_bits() -> u64 {
    static BITS: OnceLock<u64> = OnceLock::new();
    *BITS.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        nanos ^ u64::from(std::process::id()).rotate_left(40)
    })
}

/// What a session remembers of what its client was sent lately: the identities of the
/// messages of the last `margin`, at most `max` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentWindow {
    pub margin: Duration,
    pub max: usize,
}

/// The identities a connected persistent session was sent within its [`SentWindow`], oldest
/// first.
#[derive(Debug, Default)]
pub(crate) struct SentIds {
    sent: VecDeque<(MessageId, Instant)>,
}

impl SentIds {
    pub(crate) fn note(&mut self, id: MessageId, now: Instant, window: SentWindow) {
        while let Some(&(_, at)) = self.sent.front() {
            if now.duration_since(at) <= window.margin && self.sent.len() < window.max {
                break;
            }
            self.sent.pop_front();
        }
        if window.max > 0 {
            self.sent.push_back((id, now));
        }
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.sent.iter().map(|&(id, _)| id)
    }
}

/// The node's memory of the QoS 2 publishes with an origin it delivered, by identity.
pub type DeliveredIds = Delivered<MessageId>;

/// What a node delivered lately, the last `remembered_max` keys: a key seen again is not
/// delivered again. One older than those is: at least once, never lost.
pub struct Delivered<K> {
    keys: HashSet<K>,
    order: VecDeque<K>,
    remembered_max: usize,
}

impl<K: Hash + Eq + Copy> Delivered<K> {
    pub fn new(remembered_max: usize) -> Delivered<K> {
        Delivered {
            keys: HashSet::new(),
            order: VecDeque::new(),
            remembered_max,
        }
    }

    /// Notes `key`; whether it was not delivered before.
    pub fn first(&mut self, key: K) -> bool {
        if !self.keys.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.remembered_max
            && let Some(oldest) = self.order.pop_front()
        {
            self.keys.remove(&oldest);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_delivered_once_while_remembered() {
        let mut delivered = Delivered::new(2);
        assert!(delivered.first((1, 10)));
        assert!(!delivered.first((1, 10)), "a redelivery");
        assert!(delivered.first((1, 99)), "a stream made again");
        assert!(delivered.first((2, 20)));
        assert_eq!(delivered.keys.len(), 2, "bounded");
        assert!(!delivered.first((2, 20)));
        assert!(
            delivered.first((1, 10)),
            "forgotten: delivered again, never lost"
        );
    }

    #[test]
    fn a_publish_has_one_identity_on_every_node_and_its_parts_keep_publishes_apart() {
        let id = MessageId::of_publish(0xfeed, 7, 3);
        assert_eq!(id, MessageId::of_publish(0xfeed, 7, 3));
        for other in [
            MessageId::of_publish(0xfeee, 7, 3),
            MessageId::of_publish(0xfeed, 8, 3),
            MessageId::of_publish(0xfeed, 7, 4),
        ] {
            assert_ne!(id, other);
        }
        assert_eq!(id.to_header(), "000000000000feed0000000000070003");
    }

    #[test]
    fn an_identity_round_trips_through_its_header_and_nothing_else_parses() {
        let id = MessageId(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(id.to_header(), "0123456789abcdeffedcba9876543210");
        assert_eq!(MessageId::from_header(&id.to_header()), Some(id));
        assert_eq!(
            MessageId::from_header(&MessageId(7).to_header()),
            Some(MessageId(7))
        );
        for bad in [
            "",
            "12",
            "+123456789abcdeffedcba987654321",
            "0123456789abcdeffedcba98765432100",
            "0123456789abcdefgedcba9876543210",
        ] {
            assert_eq!(MessageId::from_header(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn identities_differ_between_shards_and_publishes() {
        let (mut first, mut second) = (MessageIds::new(0), MessageIds::new(1));
        let ids = [first.next(), first.next(), second.next(), second.next()];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(ids[0].0 >> 64, ids[2].0 >> 64, "one process");
    }

    #[test]
    fn a_session_remembers_the_margin_and_at_most_max() {
        let start = Instant::now();
        let window = SentWindow {
            margin: Duration::from_secs(2),
            max: 3,
        };
        let mut sent = SentIds::default();
        for i in 0..5u64 {
            sent.note(
                MessageId(i.into()),
                start + Duration::from_millis(i * 100),
                window,
            );
        }
        let ids: Vec<u128> = sent.ids().map(|id| id.0).collect();
        assert_eq!(ids, [2, 3, 4], "the newest `max`");
        sent.note(MessageId(9), start + Duration::from_secs(5), window);
        let ids: Vec<u128> = sent.ids().map(|id| id.0).collect();
        assert_eq!(ids, [9], "those older than the margin go");
        let mut none = SentIds::default();
        none.note(MessageId(1), start, SentWindow { max: 0, ..window });
        assert_eq!(none.ids().count(), 0);
    }
}
