//! Topic Aliases of MQTT 5 connections (§3.3.2.3.4), both ways.
//!
//! **Inbound**, a client names a topic once and then sends an empty topic with its alias; the
//! broker keeps what each alias stands for, per connection, up to `topic_aliases_max`.
//!
//! **Outbound**, the broker does the same for subscribers whose CONNECT carries a Topic Alias
//! Maximum above 0, so a feed with long topic names sends each name once per connection. To
//! keep encode-once, numbers are not chosen per connection: the shard's [`AliasRegistry`] gives
//! each topic one number (1, 2, 3… in order of first use on the shard, at most
//! `topic_aliases_per_shard_max`), the same for every connection whose maximum reaches it. A
//! publish then has two more wire forms, "topic + alias" and "alias only", each encoded once and
//! shared by every subscriber in that state (`publish_cache.rs`). Each connection remembers, in
//! one bit per number, which aliases it was sent; a new connection starts with none, since
//! aliases do not outlive their connection [MQTT-3.3.2-7]. A topic past the shard's bound, or
//! whose number is above a connection's maximum, goes out with its name, as without aliases.
//!
//! The registry is looked up once per publish and shard, and only for a publish that meets a
//! subscriber using aliases; a delivery tests and sets one bit.
//!
//! Memory: the registry holds at most `topic_aliases_per_shard_max` topic names (1 024 × at
//! most `topic_bytes_max` = 1 MiB per shard by default, a few tens of KiB for a score feed);
//! each connection using aliases holds min(its maximum, that bound) bits (128 B at most by
//! default) next to its inbound aliases, in one allocation made only for a client that uses
//! aliases either way.

use std::collections::HashMap;
use std::num::NonZeroU16;

/// A topic's outbound alias number on one shard.
pub(crate) type AliasNumber = NonZeroU16;

/// The shard's outbound alias numbers, topic → number. See the module documentation.
pub(crate) struct AliasRegistry {
    numbers: HashMap<Box<str>, AliasNumber>,
    /// `topic_aliases_per_shard_max`: numbers given out at most; 0 turns outbound aliases off.
    max: u16,
}

impl AliasRegistry {
    pub(crate) fn new(max: u16) -> AliasRegistry {
        AliasRegistry {
            numbers: HashMap::new(),
            max,
        }
    }

    /// The number of `topic`, given now if it has none and the bound leaves room; `None` past
    /// the bound: the topic goes out with its name.
    pub(crate) fn number(&mut self, topic: &str) -> Option<AliasNumber> {
        if let Some(&number) = self.numbers.get(topic) {
            return Some(number);
        }
        if self.numbers.len() >= usize::from(self.max) {
            return None;
        }
        let next = u16::try_from(self.numbers.len() + 1).expect("at most u16::MAX numbers");
        let number = AliasNumber::new(next).expect("numbers start at 1");
        self.numbers.insert(topic.into(), number);
        Some(number)
    }
}

/// How a publish names its topic to one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AliasForm {
    /// The topic name alone, as without aliases.
    Plain,
    /// The topic name and its alias: the first time this connection meets the number.
    TopicAndAlias,
    /// An empty topic name and the alias the connection was sent before.
    AliasOnly,
}

/// The Topic Aliases of one connection, both ways. Empty (no allocation) for a client that
/// uses none.
#[derive(Default)]
pub(crate) struct TopicAliases(Option<Box<ConnAliases>>);

#[derive(Default)]
struct ConnAliases {
    /// Inbound: index = alias - 1, at most `topic_aliases_max` entries, each a topic of at
    /// most `topic_bytes_max`; grown only when an alias past its end is set.
    inbound: Box<[Option<Box<str>>]>,
    /// Outbound: bit n - 1 is set once number n was sent with its topic on this connection.
    /// Its length in bits, min(the client's Topic Alias Maximum, the shard's bound) rounded
    /// up to 64, bounds the numbers this connection gets.
    sent: Box<[u64]>,
    /// The highest number this connection may be sent.
    outbound_max: u16,
}

impl TopicAliases {
    /// A new connection's: none set either way; outbound numbers up to `outbound_max`
    /// (min(the client's Topic Alias Maximum, `topic_aliases_per_shard_max`)).
    pub(crate) fn new(outbound_max: u16) -> TopicAliases {
        if outbound_max == 0 {
            return TopicAliases(None);
        }
        let words = usize::from(outbound_max).div_ceil(64);
        TopicAliases(Some(Box::new(ConnAliases {
            inbound: Box::default(),
            sent: vec![0; words].into_boxed_slice(),
            outbound_max,
        })))
    }

    /// The topic inbound alias `index` (1-based) stands for, if set.
    pub(crate) fn inbound(&self, index: usize) -> Option<&str> {
        let aliases = self.0.as_ref()?;
        aliases.inbound.get(index.checked_sub(1)?)?.as_deref()
    }

    /// Sets inbound alias `index` (1-based, checked against `topic_aliases_max` by the caller).
    pub(crate) fn set_inbound(&mut self, index: usize, topic: &str) {
        assert!(index > 0, "aliases start at 1");
        let aliases = &mut self.0.get_or_insert_with(Box::default).inbound;
        if aliases.len() < index {
            let mut grown = std::mem::take(aliases).into_vec();
            grown.resize(index, None);
            *aliases = grown.into_boxed_slice();
        }
        aliases[index - 1] = Some(topic.into());
    }

    /// Whether this connection takes outbound aliases at all.
    pub(crate) fn outbound_enabled(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|aliases| aliases.outbound_max > 0)
    }

    /// How a publish whose topic has `number` goes to this connection.
    pub(crate) fn outbound_form(&self, number: AliasNumber) -> AliasForm {
        let Some(aliases) = self.0.as_ref() else {
            return AliasForm::Plain;
        };
        if number.get() > aliases.outbound_max {
            return AliasForm::Plain;
        }
        let bit = usize::from(number.get() - 1);
        if aliases.sent[bit / 64] & (1 << (bit % 64)) == 0 {
            AliasForm::TopicAndAlias
        } else {
            AliasForm::AliasOnly
        }
    }

    /// `number` went out with its topic on this connection: later publishes may use it alone.
    pub(crate) fn mark_sent(&mut self, number: AliasNumber) {
        let aliases = self
            .0
            .as_mut()
            .expect("only a connection taking aliases is sent one");
        assert!(number.get() <= aliases.outbound_max, "within its maximum");
        let bit = usize::from(number.get() - 1);
        aliases.sent[bit / 64] |= 1 << (bit % 64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(n: u16) -> AliasNumber {
        AliasNumber::new(n).expect("non-zero")
    }

    #[test]
    fn numbers_follow_first_use_up_to_the_bound() {
        let mut registry = AliasRegistry::new(2);
        assert_eq!(registry.number("a"), Some(number(1)));
        assert_eq!(registry.number("b"), Some(number(2)));
        assert_eq!(registry.number("a"), Some(number(1)));
        assert_eq!(registry.number("c"), None);
        assert_eq!(AliasRegistry::new(0).number("a"), None);
    }

    #[test]
    fn a_connection_is_sent_each_topic_once() {
        let mut aliases = TopicAliases::new(70);
        assert!(aliases.outbound_enabled());
        assert_eq!(aliases.outbound_form(number(65)), AliasForm::TopicAndAlias);
        aliases.mark_sent(number(65));
        assert_eq!(aliases.outbound_form(number(65)), AliasForm::AliasOnly);
        assert_eq!(aliases.outbound_form(number(64)), AliasForm::TopicAndAlias);
        assert_eq!(aliases.outbound_form(number(70)), AliasForm::TopicAndAlias);
        assert_eq!(aliases.outbound_form(number(71)), AliasForm::Plain);
        let none = TopicAliases::new(0);
        assert!(!none.outbound_enabled());
        assert_eq!(none.outbound_form(number(1)), AliasForm::Plain);
    }

    #[test]
    fn inbound_aliases_grow_as_set() {
        let mut aliases = TopicAliases::default();
        assert_eq!(aliases.inbound(1), None);
        aliases.set_inbound(3, "t");
        assert_eq!(aliases.inbound(3), Some("t"));
        assert_eq!(aliases.inbound(2), None);
        assert_eq!(aliases.inbound(0), None);
        assert!(!aliases.outbound_enabled(), "inbound ones alone");
    }
}
