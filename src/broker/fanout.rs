//! One publish to every matching session of this shard, the retained replica, and the QoS 1/2
//! window of each session.
//!
//! A publish is matched once against the trie; a session matched through several filters is
//! delivered once, at the highest QoS granted among them (MQTT 3.1.1 §3.3.5 allows one copy or
//! one per filter; one copy is cheaper and what subscribers of a live feed expect). The
//! delivery QoS is min(publish QoS, granted QoS) [MQTT-3.8.4-6]. QoS 0 messages are not queued
//! for offline sessions: the spec allows it (§4.1, "MAY"), and losing them is what QoS 0 means.

use std::sync::Arc;
use std::time::Instant;

use super::Broker;
use super::outbound::{InflightState, Queued};
use super::outbox::{Chunk, Droppable, Outbox, RoutedMessage};
use super::retained::RetainOutcome;
use super::slab::SessionKey;
use super::wire::{PublishCache, PublishVariant};
use crate::protocol::mqtt::{Ack, Packet, PacketId, QoS};

/// A message being fanned out: borrowed when routed from another shard, turned into a shared
/// `Arc` only if some session must keep it (queue, in-flight window, retained replica).
pub(crate) struct Fanned<'m> {
    message: &'m RoutedMessage,
    shared: Option<Arc<RoutedMessage>>,
}

impl<'m> Fanned<'m> {
    fn shared(&mut self) -> Arc<RoutedMessage> {
        let message = self.message;
        Arc::clone(self.shared.get_or_insert_with(|| Arc::new(message.clone())))
    }
}

impl Broker {
    /// A publish from another shard: delivered to this shard's subscribers and applied to its
    /// retained replica.
    pub fn deliver_remote(&mut self, message: &RoutedMessage, _now: Instant, out: &mut Outbox) {
        self.stats.remote_publishes_received += 1;
        let mut fanned = Fanned {
            message,
            shared: None,
        };
        if message.retain {
            let shared = fanned.shared();
            self.retain(&shared);
        }
        self.deliver_local(&mut fanned, out);
    }

    /// A publish that entered on this shard (a client's PUBLISH or a will): retained here,
    /// delivered here, and pushed once for every other shard.
    pub(crate) fn route(&mut self, message: Arc<RoutedMessage>, _now: Instant, out: &mut Outbox) {
        if message.retain {
            self.retain(&message);
        }
        if self.shard_count > 1 {
            out.to_other_shards.push(Arc::clone(&message));
        }
        let keep = Arc::clone(&message);
        let mut fanned = Fanned {
            message: &keep,
            shared: Some(message),
        };
        self.deliver_local(&mut fanned, out);
    }

    fn retain(&mut self, message: &Arc<RoutedMessage>) {
        if self.retained.apply(message) == RetainOutcome::Rejected {
            self.stats.retained_rejected += 1;
        }
    }

    /// Every matching session of this shard, once each, with RETAIN=0 [MQTT-3.3.1-9].
    fn deliver_local(&mut self, fanned: &mut Fanned<'_>, out: &mut Outbox) {
        self.fanout_seq += 1;
        let seq = self.fanout_seq;
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        let sessions = &mut self.sessions;
        self.trie
            .for_each_match(&fanned.message.topic, &mut self.match_stack, |key, qos| {
                let Some(session) = sessions.get_mut(key) else {
                    debug_assert!(false, "the trie holds live sessions only");
                    return;
                };
                if session.match_stamp == seq {
                    let entry = &mut matches[session.match_slot];
                    entry.1 = entry.1.max(qos);
                } else {
                    session.match_stamp = seq;
                    session.match_slot = matches.len();
                    matches.push((key, qos));
                }
            });
        let mut cache = PublishCache::new();
        for &(key, granted) in &matches {
            let qos = granted.min(fanned.message.qos);
            self.deliver(key, qos, false, fanned, &mut cache, out);
        }
        self.matches = matches;
    }

    /// Hands one message to one session: sent now, queued, or (QoS 0 while offline) skipped.
    fn deliver(
        &mut self,
        key: SessionKey,
        qos: QoS,
        retain: bool,
        fanned: &mut Fanned<'_>,
        cache: &mut PublishCache,
        out: &mut Outbox,
    ) {
        let inflight_max = self.limits.inflight_max;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let connection = session.conn.and_then(|conn| {
            self.connections
                .get(&conn)
                .map(|connection| (conn, connection))
        });
        if qos == QoS::AtMostOnce {
            let Some((conn, connection)) = connection else {
                return;
            };
            let variant = PublishVariant {
                transport: connection.transport,
                version: connection.version,
                qos,
                retain,
                dup: false,
            };
            let bytes = cache.shared(fanned.message, variant);
            out.send(conn, Chunk::Shared(bytes), Droppable::Yes);
            self.stats.deliveries += 1;
            return;
        }
        let queued = Queued {
            message: fanned.shared(),
            qos,
            retain,
        };
        self.stats.deliveries += 1;
        match connection {
            Some((conn, connection)) if session.outbound.has_room(inflight_max) => {
                let id = session.outbound.start(queued);
                let variant = PublishVariant {
                    transport: connection.transport,
                    version: connection.version,
                    qos,
                    retain,
                    dup: false,
                };
                let bytes = cache.owned(fanned.message, variant, id);
                out.send(conn, Chunk::Owned(bytes), Droppable::No);
            }
            _ => {
                let queue_bytes_max = self.limits.session_queue_bytes_max;
                let dropped = session.outbound.enqueue(queued, queue_bytes_max);
                self.stats.session_queue_dropped += dropped;
            }
        }
    }

    /// On reconnect: the unacknowledged publishes again with DUP=1, and PUBREL for those
    /// already PUBREC'd, in their original order [MQTT-4.4.0-1]; then whatever was queued.
    pub(crate) fn resume_outbound(&mut self, key: SessionKey, out: &mut Outbox) {
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let Some(conn) = session.conn else {
            return;
        };
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        for entry in session.outbound.inflight() {
            match &entry.state {
                InflightState::Published { message, retain } => {
                    let variant = PublishVariant {
                        transport: connection.transport,
                        version: connection.version,
                        qos: entry.qos,
                        retain: *retain,
                        dup: true,
                    };
                    let bytes = PublishCache::new().owned(message, variant, entry.id);
                    out.send(conn, Chunk::Owned(bytes), Droppable::No);
                }
                InflightState::Released => {
                    let (transport, version) = (connection.transport, connection.version);
                    let packet = Packet::PubRel(Ack::new(entry.id));
                    super::connect::send_packet(out, conn, transport, version, &packet);
                }
            }
        }
        self.drain_queue(key, out);
    }

    /// Sends queued messages while the window of `key` has room (at most `inflight_max`).
    pub(crate) fn drain_queue(&mut self, key: SessionKey, out: &mut Outbox) {
        let inflight_max = self.limits.inflight_max;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(conn) = session.conn else {
            return;
        };
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        while let Some(queued) = session.outbound.dequeue(inflight_max) {
            let message = Arc::clone(&queued.message);
            let variant = PublishVariant {
                transport: connection.transport,
                version: connection.version,
                qos: queued.qos,
                retain: queued.retain,
                dup: false,
            };
            let id: PacketId = session.outbound.start(queued);
            let bytes = PublishCache::new().owned(&message, variant, id);
            out.send(conn, Chunk::Owned(bytes), Droppable::No);
        }
    }

    /// After a SUBSCRIBE: the retained messages matching `filter`, with RETAIN=1
    /// [MQTT-3.3.1-6], at min(retained QoS, granted QoS).
    pub(crate) fn send_retained(
        &mut self,
        key: SessionKey,
        filter: &str,
        granted: QoS,
        out: &mut Outbox,
    ) {
        let mut found = Vec::new();
        self.retained
            .for_each_match(filter, &mut self.retained_stack, |message| {
                found.push(Arc::clone(message));
            });
        for message in found {
            let qos = granted.min(message.qos);
            let keep = Arc::clone(&message);
            let mut fanned = Fanned {
                message: &keep,
                shared: Some(message),
            };
            self.deliver(key, qos, true, &mut fanned, &mut PublishCache::new(), out);
        }
    }
}
