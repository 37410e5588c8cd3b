//! What a subscription grants (MQTT 5 §3.8.3.1 subscription options and §3.8.2.1.2
//! Subscription Identifier), and what one delivery carries when several subscriptions of a
//! session match the same message.
//!
//! A 3.x subscription is a [`Grant`] with only its QoS set; the MQTT 5 options then hold the
//! values that give the 3.x behaviour (local publishes delivered, RETAIN cleared on live
//! delivery, no identifier).

use crate::config::SUBSCRIPTION_IDS_PER_DELIVERY_MAX;
use crate::protocol::mqtt::{QoS, SubscriptionOptions};

/// One filter of one session, as stored in the session and mirrored in the topic trie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    /// The maximum QoS granted: the requested one, since every QoS is supported.
    pub(crate) qos: QoS,
    /// Do not deliver the session's own publishes through this filter [MQTT-3.8.3-3].
    pub(crate) no_local: bool,
    /// Keep RETAIN as published on live delivery (§3.8.3.1); 3.x always clears it
    /// [MQTT-3.3.1-9].
    pub(crate) retain_as_published: bool,
    /// The Subscription Identifier of the SUBSCRIBE that made it, 0 when none (identifiers
    /// are 1..=268 435 455, §3.8.2.1.2).
    pub(crate) id: u32,
}

impl Grant {
    pub(crate) const fn new(options: SubscriptionOptions, id: u32) -> Grant {
        Grant {
            qos: options.qos,
            no_local: options.no_local,
            retain_as_published: options.retain_as_published,
            id,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct SubscriptionIds {
    ids: [u32; SUBSCRIPTION_IDS_PER_DELIVERY_MAX],
    len: u8,
}

impl SubscriptionIds {
    /// Adds `id` unless it is 0 (no identifier), already held, or there is no room.
    pub(crate) fn push(&mut self, id: u32) {
        if id == 0 || self.as_slice().contains(&id) {
            return;
        }
        if usize::from(self.len) < SUBSCRIPTION_IDS_PER_DELIVERY_MAX {
            self.ids[usize::from(self.len)] = id;
            self.len += 1;
        }
    }

    pub(crate) fn as_slice(&self) -> &[u32] {
        &self.ids[..usize::from(self.len)]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn of(id: u32) -> SubscriptionIds {
        let mut ids = SubscriptionIds::default();
        ids.push(id);
        ids
    }
}

/// One session matched by a publish: the union of its matching subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Matched {
    pub(crate) qos: QoS,
    pub(crate) retain_as_published: bool,
    pub(crate) ids: SubscriptionIds,
}

impl Matched {
    pub(crate) fn of(grant: Grant) -> Matched {
        Matched {
            qos: grant.qos,
            retain_as_published: grant.retain_as_published,
            ids: SubscriptionIds::of(grant.id),
        }
    }

    /// Adds another matching subscription of the same session: one copy at the highest QoS,
    /// carrying every identifier.
    pub(crate) fn merge(&mut self, grant: Grant) {
        self.qos = self.qos.max(grant.qos);
        self.retain_as_published |= grant.retain_as_published;
        self.ids.push(grant.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_skip_zero_duplicates_and_overflow() {
        let mut ids = SubscriptionIds::default();
        for id in [0, 7, 7, 1, 2, 3, 4, 5] {
            ids.push(id);
        }
        assert_eq!(ids.as_slice(), &[7, 1, 2, 3]);
    }

    #[test]
    fn merge_keeps_the_highest_qos_and_every_id() {
        let grant = |qos, id| Grant {
            qos,
            no_local: false,
            retain_as_published: false,
            id,
        };
        let mut matched = Matched::of(grant(QoS::AtMostOnce, 3));
        matched.merge(grant(QoS::ExactlyOnce, 9));
        assert_eq!(matched.qos, QoS::ExactlyOnce);
        assert_eq!(matched.ids.as_slice(), &[3, 9]);
    }
}
