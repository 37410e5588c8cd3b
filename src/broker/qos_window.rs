//! DeliveryTerms QoS 1/2 state of one session: packet identifiers, the in-flight window and the
//! queue of messages waiting for it (or for the client to come back).
//!
//! The window holds at most `inflight_max` publishes in the order they were first sent, so a
//! reconnecting client gets them back in that order [MQTT-4.4.0-1], [MQTT-4.6.0-1]. The queue
//! is bounded in bytes (topic + payload of each message, `session_queue_bytes_max`); past it
//! the oldest message is dropped and counted, so a client that never reads costs a fixed
//! amount of memory: 1 M offline sessions × 1 MiB is the worst-case sketch, which is why
//! `offline_sessions_per_shard_max` bounds the sessions too.

use std::collections::VecDeque;
use std::sync::Arc;

use super::outbox::RoutedMessage;
use super::subscription::SubscriptionIds;
use crate::protocol::mqtt::{PacketId, QoS};

/// Where an outgoing QoS 1/2 publish stands.
#[derive(Debug, Clone)]
pub(crate) enum InflightState {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published {
        message: Arc<RoutedMessage>,
        retain: bool,
        ids: SubscriptionIds,
    },
    /// PUBREC received and PUBREL sent, waiting for PUBCOMP; the message itself is released.
    Released,
}

#[derive(Debug, Clone)]
pub(crate) struct Inflight {
    pub(crate) id: PacketId,
    pub(crate) qos: QoS,
    pub(crate) state: InflightState,
    /// Sent on the client's current connection. After a reconnect every entry is sent again
    /// with its identifier [MQTT-4.4.0-1], but only as many at once as the new connection's
    /// Receive Maximum allows [MQTT-3.3.4-9]; the rest wait for acknowledgements.
    pub(crate) sent: bool,
}

/// A message waiting for room in the window.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) message: Arc<RoutedMessage>,
    pub(crate) qos: QoS,
    /// RETAIN=1 for retained messages sent because of a SUBSCRIBE [MQTT-3.3.1-8/9], and for
    /// live ones through an MQTT 5 Retain As Published subscription.
    pub(crate) retain: bool,
    /// The MQTT 5 Subscription Identifiers it is delivered with [MQTT-3.3.4-3].
    pub(crate) ids: SubscriptionIds,
}

impl Queued {
    fn bytes(&self) -> u64 {
        (self.message.topic.len() + self.message.payload.len()) as u64
    }
}

/// What acknowledging a packet identifier asks the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckOutcome {
    /// Unknown identifier or wrong stage: ignored, as acks for unknown ids are not an error.
    Ignored,
    /// A slot of the window was freed: send what the queue holds.
    Freed,
    /// PUBREC for a QoS 2 publish: send PUBREL with that id.
    SendPubRel,
}

pub(crate) struct QosWindow {
    inflight: VecDeque<Inflight>,
    /// The last identifier handed out; the next search starts after it.
    last_id: u16,
    queue: VecDeque<Queued>,
    queue_bytes: u64,
}

impl QosWindow {
    pub(crate) fn new() -> QosWindow {
        QosWindow {
            inflight: VecDeque::new(),
            last_id: 0,
            queue: VecDeque::new(),
            queue_bytes: 0,
        }
    }

    pub(crate) fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    pub(crate) fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn queue_bytes(&self) -> u64 {
        self.queue_bytes
    }

    /// Whether a new publish may be sent now rather than queued. Anything already queued goes
    /// first, to keep the order of the messages.
    pub(crate) fn has_room(&self, inflight_max: u16) -> bool {
        self.queue.is_empty() && self.inflight.len() < usize::from(inflight_max)
    }

    /// Appends to the queue; returns how many messages were dropped to stay within
    /// `queue_bytes_max` (the oldest first, or the new one if it alone is larger).
    pub(crate) fn enqueue(&mut self, queued: Queued, queue_bytes_max: u64) -> u64 {
        let bytes = queued.bytes();
        if bytes > queue_bytes_max {
            return 1;
        }
        let mut dropped = 0;
        while self.queue_bytes + bytes > queue_bytes_max {
            let oldest = self
                .queue
                .pop_front()
                .expect("queue_bytes > 0 means a message");
            self.queue_bytes -= oldest.bytes();
            dropped += 1;
        }
        self.queue_bytes += bytes;
        self.queue.push_back(queued);
        dropped
    }

    /// Every message still to deliver, in order: those sent and not acknowledged with their
    /// identifier, then the queue. Publishes past PUBREC are left out: their message was
    /// delivered (see [`QosWindow::released`]).
    pub(crate) fn messages(&self) -> impl Iterator<Item = (Option<PacketId>, Queued)> + '_ {
        let inflight = self.inflight.iter().filter_map(|entry| match &entry.state {
            InflightState::Published {
                message,
                retain,
                ids,
            } => Some((
                Some(entry.id),
                Queued {
                    message: Arc::clone(message),
                    qos: entry.qos,
                    retain: *retain,
                    ids: *ids,
                },
            )),
            InflightState::Released => None,
        });
        inflight.chain(self.queue.iter().map(|queued| (None, queued.clone())))
    }

    /// The QoS 2 publishes whose PUBREC came and whose PUBCOMP has not, in the order their
    /// PUBRELs were sent.
    pub(crate) fn released(&self) -> impl Iterator<Item = PacketId> + '_ {
        self.inflight
            .iter()
            .filter(|entry| matches!(entry.state, InflightState::Released))
            .map(|entry| entry.id)
    }

    /// Puts back, at load, an entry that was in flight when the broker stopped: not sent on
    /// any connection of this run, so the client's next connection gets it again with its
    /// identifier [MQTT-4.4.0-1]. An identifier already in the window (a record the broker
    /// did not write) is left out. `message` is `None` for a PUBREL sent (PUBREC received).
    pub(crate) fn restore(&mut self, id: PacketId, qos: QoS, message: Option<Queued>) {
        if self.position(id).is_some() || self.inflight.len() >= usize::from(u16::MAX) - 1 {
            return;
        }
        let state = match message {
            Some(queued) => InflightState::Published {
                message: queued.message,
                retain: queued.retain,
                ids: queued.ids,
            },
            None => InflightState::Released,
        };
        // New identifiers are searched from past the highest restored one.
        self.last_id = self.last_id.max(id.get());
        self.inflight.push_back(Inflight {
            id,
            qos,
            state,
            sent: false,
        });
    }

    /// The next queued message.
    pub(crate) fn front(&self) -> Option<&Queued> {
        self.queue.front()
    }

    /// Takes the next queued message if the window has room.
    pub(crate) fn dequeue(&mut self, inflight_max: u16) -> Option<Queued> {
        if self.inflight.len() >= usize::from(inflight_max) {
            return None;
        }
        let queued = self.queue.pop_front()?;
        self.queue_bytes -= queued.bytes();
        Some(queued)
    }

    /// Records a publish as sent with a fresh identifier, which it returns.
    pub(crate) fn start(&mut self, queued: Queued) -> PacketId {
        debug_assert!(
            queued.qos != QoS::AtMostOnce,
            "QoS 0 has no in-flight state"
        );
        let id = self.allocate_id();
        self.inflight.push_back(Inflight {
            id,
            sent: true,
            qos: queued.qos,
            state: InflightState::Published {
                message: queued.message,
                retain: queued.retain,
                ids: queued.ids,
            },
        });
        id
    }

    /// The next identifier not in use by an in-flight publish [MQTT-2.3.1-2]. The window is
    /// far smaller than the 65 535 identifiers, so the search ends within `inflight_len + 1`
    /// candidates.
    fn allocate_id(&mut self) -> PacketId {
        assert!(
            self.inflight.len() < usize::from(u16::MAX),
            "a free identifier exists"
        );
        loop {
            self.last_id = self.last_id.checked_add(1).unwrap_or(1);
            let id = PacketId::new(self.last_id).expect("last_id is never zero here");
            if !self.inflight.iter().any(|entry| entry.id == id) {
                return id;
            }
        }
    }

    /// PUBACK: completes a QoS 1 publish.
    pub(crate) fn puback(&mut self, id: PacketId) -> AckOutcome {
        let Some(index) = self.position(id) else {
            return AckOutcome::Ignored;
        };
        let entry = &self.inflight[index];
        if entry.qos != QoS::AtLeastOnce {
            return AckOutcome::Ignored;
        }
        self.inflight.remove(index);
        AckOutcome::Freed
    }

    /// PUBREC: moves a QoS 2 publish to its second stage. A repeated PUBREC gets PUBREL again.
    pub(crate) fn pubrec(&mut self, id: PacketId) -> AckOutcome {
        let Some(index) = self.position(id) else {
            return AckOutcome::Ignored;
        };
        let entry = &mut self.inflight[index];
        if entry.qos != QoS::ExactlyOnce {
            return AckOutcome::Ignored;
        }
        entry.state = InflightState::Released;
        AckOutcome::SendPubRel
    }

    /// PUBCOMP: completes a QoS 2 publish whose PUBREL was sent.
    pub(crate) fn pubcomp(&mut self, id: PacketId) -> AckOutcome {
        let Some(index) = self.position(id) else {
            return AckOutcome::Ignored;
        };
        if !matches!(self.inflight[index].state, InflightState::Released) {
            return AckOutcome::Ignored;
        }
        self.inflight.remove(index);
        AckOutcome::Freed
    }

    /// A new connection of the session: every entry is to be sent again.
    pub(crate) fn mark_unsent(&mut self) {
        for entry in &mut self.inflight {
            entry.sent = false;
        }
    }

    /// The oldest entry still to be sent again, if the window (`window` entries sent and not
    /// acknowledged) has room for it.
    pub(crate) fn next_unsent(&mut self, window: u16) -> Option<&mut Inflight> {
        let sent = self.inflight.iter().filter(|entry| entry.sent).count();
        if sent >= usize::from(window) {
            return None;
        }
        self.inflight.iter_mut().find(|entry| !entry.sent)
    }

    /// Forgets an entry as if it had completed: a publish larger than the new connection's
    /// Maximum Packet Size is discarded, not sent [MQTT-3.1.2-25].
    pub(crate) fn discard(&mut self, id: PacketId) {
        if let Some(index) = self.position(id) {
            self.inflight.remove(index);
        }
    }

    fn position(&self, id: PacketId) -> Option<usize> {
        self.inflight.iter().position(|entry| entry.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(qos: QoS, payload_bytes: usize) -> Queued {
        Queued {
            message: Arc::new(RoutedMessage::new("t", &vec![0; payload_bytes], qos, false)),
            qos,
            retain: false,
            ids: SubscriptionIds::default(),
        }
    }

    fn id(value: u16) -> PacketId {
        PacketId::new(value).expect("test ids are non-zero")
    }

    #[test]
    fn ids_skip_those_in_use_and_wrap_past_zero() {
        let mut out = QosWindow::new();
        out.last_id = u16::MAX - 1;
        assert_eq!(out.start(queued(QoS::AtLeastOnce, 1)), id(u16::MAX));
        assert_eq!(out.start(queued(QoS::AtLeastOnce, 1)), id(1));
        out.last_id = u16::MAX - 1;
        assert_eq!(out.start(queued(QoS::AtLeastOnce, 1)), id(2));
    }

    #[test]
    fn qos1_and_qos2_flows() {
        let mut out = QosWindow::new();
        let a = out.start(queued(QoS::AtLeastOnce, 1));
        let b = out.start(queued(QoS::ExactlyOnce, 1));
        assert_eq!(out.pubrec(a), AckOutcome::Ignored);
        assert_eq!(out.pubcomp(b), AckOutcome::Ignored);
        assert_eq!(out.pubrec(b), AckOutcome::SendPubRel);
        assert_eq!(out.pubrec(b), AckOutcome::SendPubRel);
        assert_eq!(out.puback(b), AckOutcome::Ignored);
        assert_eq!(out.puback(a), AckOutcome::Freed);
        assert_eq!(out.puback(a), AckOutcome::Ignored);
        assert_eq!(out.pubcomp(b), AckOutcome::Freed);
        assert_eq!(out.inflight_len(), 0);
    }

    #[test]
    fn queue_drops_oldest_past_its_bytes() {
        let mut out = QosWindow::new();
        // Each message counts 1 topic byte + 9 payload bytes.
        assert_eq!(out.enqueue(queued(QoS::AtLeastOnce, 9), 25), 0);
        assert_eq!(out.enqueue(queued(QoS::AtLeastOnce, 9), 25), 0);
        assert_eq!(out.enqueue(queued(QoS::AtLeastOnce, 9), 25), 1);
        assert_eq!(out.queue_len(), 2);
        assert_eq!(out.queue_bytes(), 20);
        assert_eq!(out.enqueue(queued(QoS::AtLeastOnce, 30), 25), 1);
        assert_eq!(out.queue_len(), 2);
    }

    #[test]
    fn restored_entries_are_resent_in_order_and_ids_move_past_them() {
        let mut out = QosWindow::new();
        out.restore(id(7), QoS::ExactlyOnce, None);
        out.restore(id(9), QoS::AtLeastOnce, Some(queued(QoS::AtLeastOnce, 1)));
        out.restore(id(9), QoS::AtLeastOnce, Some(queued(QoS::AtLeastOnce, 1)));
        assert_eq!(out.inflight_len(), 2);
        assert_eq!(out.released().collect::<Vec<_>>(), [id(7)]);
        let ids: Vec<_> = out.messages().map(|(id, _)| id).collect();
        assert_eq!(ids, [Some(id(9))]);
        let first = out.next_unsent(10).expect("restored entries are unsent");
        assert_eq!(first.id, id(7));
        first.sent = true;
        assert_eq!(out.next_unsent(10).map(|entry| entry.id), Some(id(9)));
        assert_eq!(out.start(queued(QoS::AtLeastOnce, 1)), id(10));
        assert_eq!(out.pubcomp(id(7)), AckOutcome::Freed);
    }

    #[test]
    fn window_bounds_dequeue() {
        let mut out = QosWindow::new();
        for _ in 0..3 {
            out.enqueue(queued(QoS::AtLeastOnce, 1), 100);
        }
        assert!(!out.has_room(2));
        let first = out.dequeue(2).expect("room for two");
        out.start(first);
        let second = out.dequeue(2).expect("room for two");
        let id = out.start(second);
        assert!(out.dequeue(2).is_none());
        out.puback(id);
        assert!(out.dequeue(2).is_some());
        assert_eq!(out.queue_bytes(), 0);
    }
}
