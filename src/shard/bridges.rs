//! The shard's side of the bridges (`crate::bridge`): each loop turn it offers this turn's
//! publishes to the bridges whose `out` mappings match them, and the intake shard takes the
//! messages from the remotes, a bounded number per turn, and publishes each bridge's
//! `$SYS/broker/connection/NAME/state` when it changes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Shard;
use crate::bridge::{FROM_BRIDGES_PER_TURN_MAX, INTAKE_SHARD};
use crate::broker::RoutedMessage;
use crate::config::bridge::BRIDGES_MAX;
use crate::protocol::mqtt::QoS;

// One bit per bridge in `Shard::bridges_refusing`.
const _: () = assert!(BRIDGES_MAX <= 64);

impl Shard {
    /// Publishes the messages from the remotes waiting for this shard, as the node's own,
    /// taking from each bridge in turn.
    pub(super) fn take_from_bridges(&mut self, now: Instant) {
        if self.bridges.is_empty() || self.id != INTAKE_SHARD || self.stop_deadline.is_some() {
            return;
        }
        self.publish_bridge_states(now);
        let mut taken = 0;
        loop {
            let mut any = false;
            for link in &self.bridges {
                if taken == FROM_BRIDGES_PER_TURN_MAX {
                    self.busy = true;
                    return;
                }
                if let Some(message) = link.pipes.take() {
                    self.broker
                        .publish_from_remote(message, now, &mut self.outbox);
                    taken += 1;
                    any = true;
                }
            }
            if !any {
                return;
            }
        }
    }

    /// `$SYS/broker/connection/NAME/state`, retained: `1` while the bridge is connected,
    /// `0` otherwise, as Mosquitto names it; published on each change.
    fn publish_bridge_states(&mut self, now: Instant) {
        for (i, link) in self.bridges.iter().enumerate() {
            let connected = link.figures.connected.load(Ordering::Relaxed);
            if self.bridge_states.get(i) == Some(&Some(connected)) {
                continue;
            }
            if let Some(state) = self.bridge_states.get_mut(i) {
                *state = Some(connected);
            }
            let topic = format!("$SYS/broker/connection/{}/state", link.name);
            let payload: &[u8] = if connected { b"1" } else { b"0" };
            let message = RoutedMessage::new(&topic, payload, QoS::AtMostOnce, true);
            self.broker
                .publish_own(Arc::new(message), now, &mut self.outbox);
        }
    }

    /// Tells the broker, before this turn's publishes are read, which `out` filters belong to
    /// bridges whose queue is full under `refuse`: one relaxed load per bridge per turn, and
    /// the list rebuilt only when it changed.
    pub(super) fn refresh_bridge_refusals(&mut self) {
        let mut refusing: u64 = 0;
        for (i, link) in self.bridges.iter().enumerate() {
            // At most BRIDGES_MAX (64) bridges: one bit each.
            if link.refusing.load(Ordering::Relaxed) {
                refusing |= 1 << i;
            }
        }
        if refusing == self.bridges_refusing {
            return;
        }
        self.bridges_refusing = refusing;
        let filters = self
            .bridges
            .iter()
            .enumerate()
            .filter(|(i, _)| refusing & (1 << i) != 0)
            .flat_map(|(_, link)| {
                link.out_filters()
                    .iter()
                    .map(|filter| filter.as_str().into())
            })
            .collect();
        self.broker.set_bridge_refusals(filters);
    }

    /// Offers the turn's publishes to the bridges, wakes each that took one, and empties
    /// `Outbox::to_remote`.
    pub(super) fn post_to_bridges(&mut self) {
        for link in &self.bridges {
            let mut any = false;
            for message in &self.outbox.to_remote {
                any |= link.offer(message);
            }
            if any {
                link.pipes.wake_remote();
            }
        }
        self.outbox.to_remote.clear();
    }
}
