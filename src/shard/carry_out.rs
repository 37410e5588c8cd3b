//! Carrying out the broker's outbox: its bytes go onto the connections' send queues, where the
//! slow consumer policies apply, and its closes begin, after the closes the network layer
//! decided this turn. Under `sync` what a connection whose persistent session changed is sent
//! waits first for the flush that wrote it (`durable_sends.rs`).

use std::time::Instant;

use log::info;

use super::Shard;
use super::durable_sends::{DurableSends, Held, Routed};
use super::peer::CloseCause;
use crate::conn::{Chunk, ConnId, Droppable, SlowConsumer};
use crate::metrics::SlowConsumerCounts;
use crate::net::send_queue::Pushed;

impl Shard {
    pub(super) fn carry_out_outbox(&mut self, now: Instant) {
        let mut sends = std::mem::take(&mut self.outbox.sends);
        for (id, chunk, droppable) in sends.drain(..) {
            if let Some(Held::Send(chunk, droppable)) =
                self.hold_until_durable(id, Held::Send(chunk, droppable))
            {
                self.queue_send(id, chunk, droppable);
            }
        }
        self.outbox.sends = sends;
        for (id, denial) in self.outbox.denials.drain(..) {
            if let Some(peer) = self.io.state(id) {
                info!(
                    "{}: the topic rules deny {denial} (further denials of this connection are only counted)",
                    peer.addr
                );
            }
        }
        let mut closes = std::mem::take(&mut self.outbox.closes);
        for (id, reason) in closes.drain(..) {
            if let Some(Held::Close(reason)) = self.hold_until_durable(id, Held::Close(reason)) {
                self.begin_close(id, CloseCause::Broker(reason), now);
            }
        }
        self.outbox.closes = closes;
        self.release_durable_sends(now);
        let mut pending = std::mem::take(&mut self.pending_closes);
        for (id, cause) in pending.drain(..) {
            self.begin_close(id, cause, now);
        }
        self.pending_closes = pending;
    }

    /// Under `sync`: holds what a connection whose persistent session changed is sent until
    /// the flush that wrote it is durable (`durable_sends.rs`); gives back what may go now.
    fn hold_until_durable(&mut self, id: ConnId, item: Held) -> Option<Held> {
        // Only `sync` keeps sends: under the other modes (every send of the fan-out path) the
        // store's durable mark is not read at all.
        let Some(disk) = self
            .persist
            .as_ref()
            .filter(|persist| persist.sends.is_some())
            .map(|persist| persist.durable_mark())
        else {
            return Some(item);
        };
        let durable = self.sends_durable_mark(disk);
        let Some(sends) = self
            .persist
            .as_mut()
            .and_then(|persist| persist.sends.as_mut())
        else {
            return Some(item);
        };
        let bytes_max = usize::try_from(self.config.limits.queue_bytes_max).unwrap_or(usize::MAX);
        match sends.route(id, item, durable, bytes_max) {
            Routed::Now(item) => Some(item),
            Routed::Held => None,
            Routed::Dropped => {
                self.slow.dropped_newest += 1;
                None
            }
            Routed::Overflow => {
                self.pending_closes
                    .push((id, CloseCause::SendQueueOverflow));
                None
            }
        }
    }

    /// Carries out what waited for flushes that are durable now.
    fn release_durable_sends(&mut self, now: Instant) {
        let Some(persist) = self.persist.as_mut() else {
            return;
        };
        if persist.sends.as_ref().is_none_or(DurableSends::is_empty) {
            return;
        }
        let disk = persist.durable_mark();
        let durable = self.sends_durable_mark(disk);
        let Some(mut sends) = self
            .persist
            .as_mut()
            .and_then(|persist| persist.sends.take())
        else {
            return;
        };
        sends.release(durable, |id, item| match item {
            Held::Send(chunk, droppable) => self.queue_send(id, chunk, droppable),
            Held::Close(reason) => self.begin_close(id, CloseCause::Broker(reason), now),
        });
        if let Some(persist) = self.persist.as_mut() {
            persist.sends = Some(sends);
        }
    }

    /// Puts `chunk` on connection `id`'s send queue, where the slow consumer policy applies.
    fn queue_send(&mut self, id: ConnId, chunk: Chunk, droppable: Droppable) {
        let queue_bytes_max = self.config.limits.queue_bytes_max;
        let Some(peer) = self.io.state(id).filter(|peer| !peer.sealed) else {
            return;
        };
        let policy = self.config.slow_consumer(peer.transport);
        let Some(pushed) = self.io.queue(id, chunk, droppable, queue_bytes_max, policy) else {
            return;
        };
        if pushed.overflow {
            // Counted when the close begins: several chunks of one turn may overflow.
            self.pending_closes
                .push((id, CloseCause::SendQueueOverflow));
            return;
        }
        if count_losses(&pushed, &mut self.slow)
            && let Some(peer) = self.io.state_mut(id)
            && !std::mem::replace(&mut peer.slow_logged, true)
        {
            info!(
                "{}: reads too slowly; QoS 0 publishes past queue_bytes_max are handled by policy {}",
                peer.addr,
                policy_of(droppable, policy).name()
            );
        }
    }
}

/// Adds what the policy dropped or conflated to the shard's counts; true if anything was.
fn count_losses(pushed: &Pushed, counts: &mut SlowConsumerCounts) -> bool {
    let dropped_newest = u32::from(pushed.dropped_newest());
    counts.dropped_oldest += u64::from(pushed.dropped_oldest);
    counts.conflated += u64::from(pushed.conflated);
    counts.dropped_newest += u64::from(dropped_newest);
    pushed.dropped_oldest + pushed.conflated + dropped_newest > 0
}

/// The policy that applied to a publish: its topic's, else the listener's.
fn policy_of(droppable: Droppable, listener: SlowConsumer) -> SlowConsumer {
    match droppable {
        Droppable::Yes { on_full, .. } => on_full.unwrap_or(listener),
        Droppable::No => listener,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::TopicKey;

    #[test]
    fn losses_are_counted_by_kind() {
        let mut counts = SlowConsumerCounts::default();
        let queued = Pushed {
            queued: true,
            ..Pushed::default()
        };
        assert!(!count_losses(&queued, &mut counts));
        let made_room = Pushed {
            queued: true,
            dropped_oldest: 2,
            conflated: 1,
            overflow: false,
        };
        assert!(count_losses(&made_room, &mut counts));
        let refused = Pushed::default();
        assert!(
            count_losses(&refused, &mut counts),
            "the new one was dropped"
        );
        assert_eq!(
            (
                counts.dropped_oldest,
                counts.conflated,
                counts.dropped_newest
            ),
            (2, 1, 1)
        );
    }

    #[test]
    fn a_topic_policy_overrides_the_listener() {
        let listener = SlowConsumer::DropOldest;
        let own = Droppable::Yes {
            topic: TopicKey::of("scores/1"),
            on_full: Some(SlowConsumer::Conflate),
        };
        let none = Droppable::Yes {
            topic: TopicKey::of("chat"),
            on_full: None,
        };
        assert_eq!(policy_of(own, listener), SlowConsumer::Conflate);
        assert_eq!(policy_of(none, listener), listener);
        assert_eq!(policy_of(Droppable::No, listener), listener);
    }
}
