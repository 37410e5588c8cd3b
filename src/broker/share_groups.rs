//! MQTT 5 shared subscriptions (§4.8.2): `$share/{ShareName}/{filter}`. Each message matching
//! the filter goes to one member of the group (the sessions subscribed with that share name
//! and filter), round-robin, whichever shard each member's session lives on.
//!
//! One shard decides for each group: its **owner**, FNV-1a of the whole `$share/name/filter`
//! string modulo the shard count ([`Broker::owner_shard`], stable across runs). Only the owner
//! knows the members; a member's own shard keeps the subscription in its session (for SUBACK,
//! UNSUBSCRIBE and clean-up) but never in its topic trie, so the ordinary fan-out of every
//! shard ignores shared subscriptions.
//!
//! - A session subscribing sends `Join` to the owner; UNSUBSCRIBE and the end of the session
//!   (expiry 0 on disconnect, clean start on takeover, expiry, eviction) send `Leave`.
//! - Every publish reaches every shard (locally or through [`Broker::deliver_remote`]), so the
//!   owner matches each one against the filters of its groups and picks the next member. A
//!   member on the owner's shard gets it at once; one elsewhere gets it through a `Deliver`
//!   to its shard.
//! - The member's shard delivers if the session still holds the subscription and is connected
//!   (or the message is QoS 1/2 on the last try, which queues it for the offline session as
//!   any QoS 1/2 delivery). Otherwise it hands the message back to the owner, which tries the
//!   next member: at most [`SHARE_TRIES_MAX`] members, or every member if fewer. A member that
//!   left is gone from the owner's list by then, because its `Leave` travelled the same FIFO
//!   queue before the hand-back. A message no member can take on its last try is dropped and
//!   counted (`BrokerStats::shared_dropped`).
//!
//! Ordering: joins, leaves, deliveries and hand-backs between two shards travel the same
//! bounded FIFO queue as publishes (see `shard/mailbox.rs`), and a shard posts a turn's
//! shared-subscription messages before its publishes, so a client that subscribes and then
//! publishes is a member before its publish reaches the owner. Messages of one publisher reach
//! a member in order: publisher → owner and owner → member are each one FIFO.
//!
//! Not done: a QoS 1/2 message in flight to a member whose connection breaks stays with that
//! member's session (the spec allows it, §4.8.2) and is not given to another member; retained
//! messages are never sent to a shared subscription (§4.8.2); No Local on a shared
//! subscription is refused by the codec [MQTT-3.8.3-4].
//!
//! A message that crossed a bridge is not for a member that is another broker's bridge
//! connection (`docs/bridges.md`, Loops): that member hands it on to the next, and on the
//! last try it is left out, as a bridge connection's own subscriptions leave it out, and not
//! counted as dropped.
//!
//! The prefix is honoured for every protocol version: a 3.x `$share/...` filter is a shared
//! subscription too, as in most brokers. 3.1.1 reserves `$` topics for the server (§4.7.2),
//! so no ordinary 3.x subscriber loses anything it could rely on.
//!
//! Worst case at an owner: one entry per (group, member) pair, i.e. at most
//! `subscriptions_per_session_max` × sessions of all shards, ~80 bytes each.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::Broker;
use super::fanout::DeliveryTerms;
use super::outbox::{Outbox, RoutedMessage, ShardMessage};
use super::publish_cache::PublishCache;
use super::session::SessionKey;
use super::subscription::SubscriptionIds;
use super::topic_trie::{MatchStack, TopicTrie};
use crate::protocol::mqtt::QoS;
use crate::slots::Slots;

/// Prefix of a shared subscription's filter (§4.8.2).
pub(crate) const SHARED_PREFIX: &str = "$share/";

/// Members tried for one message before it is queued for an offline member or dropped: bounds
/// the hops of a message among shards when members keep leaving or are offline.
pub(crate) const SHARE_TRIES_MAX: u8 = 4;

/// A `$share/` filter split into its share name and topic filter, or `Err` when the share
/// name is empty or holds a wildcard [MQTT-4.8.2-1], or no filter follows it [MQTT-4.8.2-2].
/// `None` when `filter` is not a shared subscription.
pub(crate) fn parse(filter: &str) -> Option<Result<(&str, &str), ()>> {
    let rest = filter.strip_prefix(SHARED_PREFIX)?;
    let Some((name, topic_filter)) = rest.split_once('/') else {
        return Some(Err(()));
    };
    let valid_name = !name.is_empty() && !name.contains(['+', '#']);
    Some(if valid_name && !topic_filter.is_empty() {
        Ok((name, topic_filter))
    } else {
        Err(())
    })
}

/// What shards tell each other about shared subscriptions. Opaque outside the broker: the
/// shard layer only carries it from one broker to another.
#[derive(Debug, Clone)]
pub struct GroupMessage(Kind);

impl GroupMessage {
    /// Bytes the message holds, counted against the cross-shard backlog's bound.
    pub fn bytes(&self) -> usize {
        let (group, message) = match &self.0 {
            Kind::Join { group, .. } | Kind::Leave { group, .. } => (group, None),
            Kind::Deliver { group, message, .. } | Kind::HandBack { group, message, .. } => {
                (group, Some(message))
            }
        };
        std::mem::size_of::<GroupMessage>() + group.len() + message.map_or(0, |m| m.bytes())
    }

    /// The level of the cover that follows it under `sync` (`shard/persist.rs`): its hop in
    /// the message's way among the shards, 1 for the owner's first `Deliver`, one more per
    /// hand-back and per `Deliver` after it. `None` for a change of membership, which
    /// carries nothing to write.
    pub fn cover_level(&self) -> Option<usize> {
        let hop = match &self.0 {
            Kind::Join { .. } | Kind::Leave { .. } => return None,
            Kind::Deliver { tries, .. } => 2 * usize::from(*tries) + 1,
            Kind::HandBack { tries, .. } => 2 * usize::from(*tries),
        };
        Some(hop.clamp(1, super::outbox::COVER_LEVELS))
    }
}

#[derive(Debug, Clone)]
enum Kind {
    /// To the owner: `member` subscribed to `group` (the whole `$share/name/filter`).
    Join { group: Arc<str>, member: Member },
    /// To the owner: `member` no longer holds `group`.
    Leave { group: Arc<str>, member: Member },
    /// To a member's shard: deliver `message` to `session` for `group`. `last_try`: queue it
    /// even if the session is offline, drop it if the session no longer holds `group`.
    Deliver {
        group: Arc<str>,
        session: SessionKey,
        message: Arc<RoutedMessage>,
        tries: u8,
        last_try: bool,
    },
    /// Back to the owner: the member could not take `message`; try the next one.
    HandBack {
        group: Arc<str>,
        message: Arc<RoutedMessage>,
        tries: u8,
    },
}

/// A session of some shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Member {
    shard: usize,
    session: SessionKey,
}

struct Group {
    name: Arc<str>,
    members: Vec<Member>,
    /// Where each member sits in `members`, so joins and leaves cost O(1).
    positions: HashMap<Member, usize>,
    /// The member that gets the next message.
    next: usize,
}

/// The groups this shard owns.
pub(crate) struct SharedGroups {
    /// Handles are the slab's `SessionKey` type, here naming groups.
    groups: Slots<SessionKey, Group>,
    by_name: HashMap<Arc<str>, SessionKey>,
    /// Topic filter → groups with that filter.
    trie: TopicTrie<()>,
    match_stack: MatchStack,
    matched: Vec<SessionKey>,
}

impl SharedGroups {
    /// In cluster mode: records the filters whose first group comes or last group goes
    /// (`TopicTrie::record_interest`).
    pub(super) fn record_interest(&mut self) {
        self.trie.record_interest();
    }

    pub(super) fn take_interest(&mut self, into: &mut Vec<(Box<str>, bool)>) {
        self.trie.take_interest(into);
    }

    pub(crate) fn new() -> SharedGroups {
        SharedGroups {
            groups: Slots::default(),
            by_name: HashMap::new(),
            trie: TopicTrie::new(),
            match_stack: Vec::new(),
            matched: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    fn join(&mut self, name: Arc<str>, member: Member) {
        let Some(Ok((_, filter))) = parse(&name) else {
            debug_assert!(false, "only valid shared filters are joined");
            return;
        };
        let key = match self.by_name.get(&name) {
            Some(&key) => key,
            None => {
                let key = self.groups.insert(Group {
                    name: Arc::clone(&name),
                    members: Vec::new(),
                    positions: HashMap::new(),
                    next: 0,
                });
                self.trie.insert(filter, key, ());
                self.by_name.insert(name, key);
                key
            }
        };
        let group = self.groups.get_mut(key).expect("by_name holds live keys");
        if group.positions.contains_key(&member) {
            return;
        }
        group.positions.insert(member, group.members.len());
        group.members.push(member);
    }

    fn leave(&mut self, name: &str, member: Member) {
        let Some(&key) = self.by_name.get(name) else {
            return;
        };
        let group = self.groups.get_mut(key).expect("by_name holds live keys");
        let Some(position) = group.positions.remove(&member) else {
            return;
        };
        group.members.swap_remove(position);
        if let Some(&moved) = group.members.get(position) {
            group.positions.insert(moved, position);
        }
        if group.next >= group.members.len() {
            group.next = 0;
        }
        if group.members.is_empty() {
            let group = self.groups.remove(key).expect("present");
            if let Some(Ok((_, filter))) = parse(&group.name) {
                self.trie.remove(filter, key);
            }
            self.by_name.remove(name);
        }
    }

    /// The next member of `key` in turn, and whether this is the message's last try.
    fn pick(&mut self, key: SessionKey, tries: u8) -> Option<(Member, Arc<str>, bool)> {
        let group = self.groups.get_mut(key)?;
        let len = group.members.len();
        let member = *group.members.get(group.next)?;
        group.next = (group.next + 1) % len;
        let tries_max = len.min(usize::from(SHARE_TRIES_MAX));
        let last_try = usize::from(tries) + 1 >= tries_max;
        Some((member, Arc::clone(&group.name), last_try))
    }
}

impl Broker {
    /// A message from another shard, in the order that shard posted it.
    pub fn shard_message(&mut self, message: ShardMessage, now: Instant, out: &mut Outbox) {
        match message {
            ShardMessage::Publish(message) => self.deliver_remote(message, now, out),
            // The shard answers barriers itself (`shard/persist.rs`): nothing to apply here.
            ShardMessage::Barrier(_) => {}
            ShardMessage::Committed => {
                self.now = now;
                self.commits_durable(out);
            }
            ShardMessage::Group(share) => {
                let GroupMessage(kind) = *share;
                self.now = now;
                self.share_message(kind, out);
            }
        }
    }

    fn share_message(&mut self, kind: Kind, out: &mut Outbox) {
        match kind {
            Kind::Join { group, member } => self.shared.join(group, member),
            Kind::Leave { group, member } => self.shared.leave(&group, member),
            Kind::Deliver {
                group,
                session,
                message,
                tries,
                last_try,
            } => {
                if self.share_try_deliver(session, &group, &message, last_try, out) {
                    return;
                }
                if last_try {
                    self.stats.shared_dropped += 1;
                    return;
                }
                self.stats.shared_handed_back += 1;
                let back = Kind::HandBack {
                    group: Arc::clone(&group),
                    message,
                    tries: tries + 1,
                };
                self.share_post(&group, back, out);
            }
            Kind::HandBack {
                group,
                message,
                tries,
            } => match self.shared.by_name.get(&group) {
                Some(&key) => self.share_dispatch(key, &message, tries, out),
                None => self.stats.shared_dropped += 1,
            },
        }
    }

    /// Sends `kind` to the owner of `group`, or handles it here if that is this shard.
    fn share_post(&mut self, group: &str, kind: Kind, out: &mut Outbox) {
        let owner = Broker::owner_shard(group, self.shard_count);
        if owner == self.shard {
            self.share_message(kind, out);
        } else {
            out.to_shard
                .push((owner, ShardMessage::Group(Box::new(GroupMessage(kind)))));
        }
    }

    /// Session `key` of this shard now holds the shared subscription `filter`.
    pub(crate) fn share_join(&mut self, key: SessionKey, filter: &str, out: &mut Outbox) {
        let member = Member {
            shard: self.shard,
            session: key,
        };
        let group: Arc<str> = filter.into();
        self.share_post(filter, Kind::Join { group, member }, out);
    }

    /// Session `key` of this shard no longer holds the shared subscription `filter`.
    pub(crate) fn share_leave(&mut self, key: SessionKey, filter: &str, out: &mut Outbox) {
        let member = Member {
            shard: self.shard,
            session: key,
        };
        let group: Arc<str> = filter.into();
        self.share_post(filter, Kind::Leave { group, member }, out);
    }

    /// Whether a group this shard owns has a filter matching `topic`.
    pub(crate) fn share_matches(&mut self, topic: &str) -> bool {
        let shared = &mut self.shared;
        let mut any = false;
        shared
            .trie
            .for_each_match(topic, &mut shared.match_stack, |_, ()| any = true);
        any
    }

    /// The groups this shard owns whose filter matches `topic`, with their member counts
    /// (for the operations listener; not on the publish path).
    pub fn shared_groups_matching(&mut self, topic: &str) -> Vec<(Box<str>, usize)> {
        let shared = &mut self.shared;
        let mut keys = Vec::new();
        shared
            .trie
            .for_each_match(topic, &mut shared.match_stack, |key, ()| keys.push(key));
        keys.iter()
            .filter_map(|&key| shared.groups.get(key))
            .map(|group| (Box::from(&*group.name), group.members.len()))
            .collect()
    }

    /// Every publish this shard sees: one member of each group it owns whose filter matches.
    pub(crate) fn share_route(&mut self, message: &Arc<RoutedMessage>, out: &mut Outbox) {
        if self.shared.len() == 0 || message.expired(self.now) {
            return;
        }
        let shared = &mut self.shared;
        let mut matched = std::mem::take(&mut shared.matched);
        matched.clear();
        shared
            .trie
            .for_each_match(&message.topic, &mut shared.match_stack, |key, ()| {
                matched.push(key)
            });
        for &key in &matched {
            self.share_dispatch(key, message, 0, out);
        }
        self.shared.matched = matched;
    }

    /// Gives `message` to the next member of group `key` that takes it, `tries` members
    /// having refused it already.
    fn share_dispatch(
        &mut self,
        key: SessionKey,
        message: &Arc<RoutedMessage>,
        mut tries: u8,
        out: &mut Outbox,
    ) {
        loop {
            let Some((member, group, last_try)) = self.shared.pick(key, tries) else {
                self.stats.shared_dropped += 1;
                return;
            };
            if member.shard != self.shard {
                let deliver = Kind::Deliver {
                    group,
                    session: member.session,
                    message: Arc::clone(message),
                    tries,
                    last_try,
                };
                out.to_shard.push((
                    member.shard,
                    ShardMessage::Group(Box::new(GroupMessage(deliver))),
                ));
                return;
            }
            if self.share_try_deliver(member.session, &group, message, last_try, out) {
                return;
            }
            if last_try {
                self.stats.shared_dropped += 1;
                return;
            }
            self.stats.shared_handed_back += 1;
            tries += 1;
        }
    }

    /// Delivers `message` to session `key` of this shard for its shared subscription `group`,
    /// unless the session is gone, no longer holds `group`, or is offline (QoS 0 always, QoS
    /// 1/2 unless `last_try`). Returns whether it was taken. A message that crossed a bridge
    /// goes to no bridge connection: refused, or on the last try taken and left out.
    fn share_try_deliver(
        &mut self,
        key: SessionKey,
        group: &str,
        message: &Arc<RoutedMessage>,
        last_try: bool,
        out: &mut Outbox,
    ) -> bool {
        let Some(session) = self.sessions.get(key) else {
            return false;
        };
        let Some(&grant) = session.subscriptions.get(group) else {
            return false;
        };
        if message.bridged && session.bridge {
            return last_try;
        }
        let qos = grant.qos.min(message.qos);
        let connected = session.conn.is_some();
        if !connected && (qos == QoS::AtMostOnce || !last_try) {
            return false;
        }
        let outgoing = DeliveryTerms {
            qos,
            retain: grant.retain_as_published && message.retain,
            ids: SubscriptionIds::of(grant.id),
        };
        let droppable = self.fanout.droppable(&message.topic);
        self.deliver(
            key,
            outgoing,
            message,
            droppable,
            &mut PublishCache::new(),
            out,
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::COVER_LEVELS;
    use crate::slots::SlotKey;

    /// Each hop of a message's way among the shards is covered one level higher than the
    /// one that caused it, up to the highest level on the last try.
    #[test]
    fn cover_levels_grow_along_a_messages_way() {
        let group: Arc<str> = "$share/g/t".into();
        let message = Arc::new(RoutedMessage::new("t", b"", QoS::AtLeastOnce, false));
        let member = Member {
            shard: 1,
            session: SessionKey::from_parts(1, 1),
        };
        let level = |kind| GroupMessage(kind).cover_level();
        let join = Kind::Join {
            group: Arc::clone(&group),
            member,
        };
        assert_eq!(level(join), None);
        let mut levels = Vec::new();
        for tries in 0..SHARE_TRIES_MAX {
            levels.push(level(Kind::Deliver {
                group: Arc::clone(&group),
                session: member.session,
                message: Arc::clone(&message),
                tries,
                last_try: tries + 1 == SHARE_TRIES_MAX,
            }));
            if tries + 1 < SHARE_TRIES_MAX {
                levels.push(level(Kind::HandBack {
                    group: Arc::clone(&group),
                    message: Arc::clone(&message),
                    tries: tries + 1,
                }));
            }
        }
        let expected: Vec<Option<usize>> = (1..=COVER_LEVELS).map(Some).collect();
        assert_eq!(levels, expected);
    }

    #[test]
    fn parse_splits_name_and_filter() {
        assert_eq!(parse("a/b"), None);
        assert_eq!(parse("$share"), None);
        assert_eq!(parse("$share/g/a/+"), Some(Ok(("g", "a/+"))));
        assert_eq!(parse("$share/g/#"), Some(Ok(("g", "#"))));
        assert_eq!(parse("$share/g"), Some(Err(())));
        assert_eq!(parse("$share//a"), Some(Err(())));
        assert_eq!(parse("$share/+/a"), Some(Err(())));
        assert_eq!(parse("$share/g#/a"), Some(Err(())));
        assert_eq!(parse("$share/g/"), Some(Err(())));
    }

    #[test]
    fn leave_keeps_the_rotation_and_drops_empty_groups() {
        let mut slab = Slots::default();
        let (a, b, c) = (slab.insert(()), slab.insert(()), slab.insert(()));
        let member = |session| Member { shard: 0, session };
        let mut groups = SharedGroups::new();
        let name: Arc<str> = "$share/g/t".into();
        for session in [a, b, c] {
            groups.join(Arc::clone(&name), member(session));
        }
        groups.join(Arc::clone(&name), member(a));
        let key = groups.by_name[&name];
        let picked: Vec<_> = (0..3).map(|_| groups.pick(key, 0).unwrap().0).collect();
        assert_eq!(picked, [member(a), member(b), member(c)]);
        groups.leave(&name, member(b));
        let picked: Vec<_> = (0..2).map(|_| groups.pick(key, 0).unwrap().0).collect();
        assert!(picked.contains(&member(a)) && picked.contains(&member(c)));
        groups.leave(&name, member(a));
        groups.leave(&name, member(c));
        assert_eq!(groups.len(), 0);
        assert_eq!(groups.trie.len(), 0);
        assert!(groups.pick(key, 0).is_none());
    }
}
