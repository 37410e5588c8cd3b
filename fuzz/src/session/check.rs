//! What must hold after every call on a broker (see the module documentation), and what the
//! model learns from it.

use std::sync::Arc;

use fanfare::broker::{CloseReason, Outbox, ShardMessage};

use fanfare::config::Limits;
use fanfare::conn::{Chunk, ConnId, Droppable, Transport};
use fanfare::protocol::mqtt::{Delivery, Packet, Publish, QoS, decode_from_server, encode};

use super::{Conn, SLOTS, State, World};

impl World {
    /// Checks and carries out what one call on `shard`'s broker asked for.
    pub(super) fn after(&mut self, shard: usize, out: Outbox) {
        let n = self.shards.len();
        for (id, chunk, droppable) in &out.sends {
            self.check_send(shard, *id, chunk, *droppable);
        }
        for &(id, reason) in &out.closes {
            let slot = self.slot_of(shard, id, "a close");
            let conn = self.conn_mut(shard, slot);
            assert_ne!(conn.state, State::Closed, "{id:?} closed twice: {reason:?}");
            conn.input.clear();
            conn.state = match reason {
                // The broker asks for a slow consumer's close without forgetting the
                // connection (`Broker::deliver`): until `connection_lost` it still counts it,
                // delivers to it and may ask again. See docs/testing.md, "Fuzzing".
                CloseReason::SlowConsumer => State::Closing,
                _ => State::Closed,
            };
        }
        for (to, message) in out.to_shard {
            assert!(
                to < n && to != shard,
                "mail for shard {to} from {shard} of {n}"
            );
            self.mail[shard][to].push_back(message);
        }
        for message in out.to_other_shards {
            assert!(n > 1, "publishes for other shards with one shard");
            for to in (0..n).filter(|&to| to != shard) {
                let message = ShardMessage::Publish(Arc::clone(&message));
                self.mail[shard][to].push_back(message);
            }
        }
        self.check_stats(shard);
    }

    /// The slot of `id`, which must be a connection of `shard` with that generation.
    fn slot_of(&self, shard: usize, id: ConnId, what: &str) -> usize {
        let slot = id.index();
        assert!(
            slot < SLOTS,
            "{what} for {id:?}, not a slot of shard {shard}"
        );
        let place = &self.shards[shard].slots[slot];
        assert!(
            place.conn.is_some() && place.generation == id.generation(),
            "{what} for {id:?}, which is not open on shard {shard} (slot generation {})",
            place.generation
        );
        slot
    }

    fn check_send(&mut self, shard: usize, id: ConnId, chunk: &Chunk, droppable: Droppable) {
        let slot = self.slot_of(shard, id, "a chunk");
        let conn = self.conn(shard, slot);
        assert_ne!(
            conn.state,
            State::Closed,
            "a chunk for {id:?} after its close"
        );
        let (transport, version) = (conn.transport, conn.version);
        let bytes = chunk.to_vec();
        let stream = match transport {
            Transport::Tcp => bytes,
            Transport::Ws => unframe(&bytes),
        };
        let mut rest = &stream[..];
        // Generous limits: what the broker may send is bounded by the client, checked below.
        let limits = Limits::default().decode_limits();
        while !rest.is_empty() {
            let (packet, used) = match decode_from_server(rest, version, &limits) {
                Ok(Some(decoded)) => decoded,
                other => panic!("{id:?} ({version:?}) got bytes it cannot decode: {other:?}"),
            };
            let mut again = Vec::new();
            encode(&packet, version, &mut again);
            assert_eq!(
                again,
                rest[..used],
                "what the broker sends encodes back the same"
            );
            if let Droppable::Yes { .. } = droppable {
                assert!(
                    matches!(&packet, Packet::Publish(p) if p.delivery == Delivery::AtMostOnce),
                    "only QoS 0 publishes may be dropped, not {packet:?}"
                );
            }
            let conn = self.conn_mut(shard, slot);
            match &packet {
                Packet::Publish(publish) => {
                    check_alias(conn, publish, droppable);
                    // Resends at reconnect (DUP) too [MQTT-3.1.2-24], [MQTT-3.3.4-9].
                    assert!(
                        used <= conn.packet_bytes_max as usize,
                        "a {used}-byte publish to a client whose Maximum Packet Size is {}",
                        conn.packet_bytes_max
                    );
                    if let Some(packet_id) = publish.delivery.packet_id() {
                        let entry = (packet_id.get(), publish.delivery.qos());
                        let in_use = conn.inflight.iter().any(|&(id, _)| id == entry.0);
                        if in_use {
                            assert!(publish.dup, "{packet_id:?} reused while in flight");
                        } else {
                            assert!(
                                conn.inflight.len() < conn.window,
                                "more than {} QoS 1/2 publishes in flight",
                                conn.window
                            );
                            conn.inflight.push(entry);
                        }
                    }
                }
                Packet::PubRel(ack) => {
                    let entry = (ack.packet_id.get(), QoS::ExactlyOnce);
                    if !conn.inflight.contains(&entry) {
                        conn.inflight.push(entry);
                    }
                }
                _ => {}
            }
            rest = &rest[used..];
        }
    }

    pub(super) fn check_stats(&self, shard: usize) {
        let stats = self.shards[shard].broker.stats();
        let known = self.shards[shard]
            .slots
            .iter()
            .filter_map(|slot| slot.conn.as_ref())
            .filter(|conn| conn.state != State::Closed)
            .count();
        assert_eq!(stats.connections, known, "connections the broker knows");
        assert!(
            stats.sessions >= stats.connections,
            "a session per connection"
        );
        assert!(
            stats.offline_sessions <= self.limits.offline_sessions_per_shard_max as usize,
            "offline_sessions_per_shard_max"
        );
        assert!(
            stats.retained <= self.limits.retained_messages_max as usize,
            "retained_messages_max"
        );
    }
}

/// A publish names its topic or an alias the broker set on this connection before; setting one
/// is within the client's Topic Alias Maximum, and never in a chunk that may be dropped (the
/// later publishes that use the alias alone would name nothing).
fn check_alias(conn: &mut Conn, publish: &Publish<'_>, droppable: Droppable) {
    let Some(alias) = publish.properties.topic_alias() else {
        assert!(
            !publish.topic.is_empty(),
            "a publish without topic or alias"
        );
        return;
    };
    assert!(
        (1..=conn.alias_max).contains(&alias),
        "alias {alias} to a client whose Topic Alias Maximum is {}",
        conn.alias_max
    );
    let index = usize::from(alias - 1);
    if publish.topic.is_empty() {
        assert!(
            conn.aliases.get(index).is_some_and(Option::is_some),
            "alias {alias} used alone before the broker set it on this connection"
        );
        return;
    }
    assert!(
        matches!(droppable, Droppable::No),
        "alias {alias} set in a chunk that may be dropped"
    );
    if conn.aliases.len() <= index {
        conn.aliases.resize(index + 1, None);
    }
    conn.aliases[index] = Some(publish.topic.to_owned());
}

/// The MQTT bytes of a server's WebSocket chunk: whole unmasked binary frames.
fn unframe(mut bytes: &[u8]) -> Vec<u8> {
    let mut stream = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 2, "a frame header");
        assert_eq!(bytes[0], 0x82, "FIN and the binary opcode");
        assert_eq!(bytes[1] & 0x80, 0, "server frames are not masked");
        let (len, header) = match bytes[1] {
            126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => {
                let len = u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes"));
                (usize::try_from(len).expect("fits"), 10)
            }
            len => (usize::from(len), 2),
        };
        assert!(bytes.len() >= header + len, "a whole frame");
        stream.extend_from_slice(&bytes[header..header + len]);
        bytes = &bytes[header + len..];
    }
    stream
}
