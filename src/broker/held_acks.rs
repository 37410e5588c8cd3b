//! Under `durability = "sync"`: the PUBACKs and PUBRECs of accepted QoS 1/2 publishes, held
//! until what the publishes changed is on disk on every shard (`docs/persistence.md`,
//! "Acknowledgements under sync").
//!
//! An acknowledgement is first **open**: its publish was routed, but deliveries sliced over
//! later turns (`fanout.rs`) may still be due. Once this shard has no fan-out pending, the
//! shard seals the open ones with the next barrier number and posts that barrier behind them
//! to every other shard; they are sent once every shard reported the barrier durable.
//!
//! **Inbound QoS 2.** The identifier of a QoS 2 publish, once held, makes a resent PUBLISH a
//! duplicate that is not routed again. Written before what the publish changed on the other
//! shards is durable, a crash in between would lose the message for their subscribers (the
//! client's resend taken for a duplicate). So while the PUBREC that answers the publish is held,
//! the identifier is left out of the session's records; once it is released, the session is
//! noted and the identifier written at the next flush. A crash before that write repeats the
//! message if the client had not received the PUBREC (it sends the PUBLISH again), and costs
//! nothing if it had (its PUBREL gets PUBCOMP): a duplicate at worst, never a loss. A
//! publish of a persistent session is tentative meanwhile, so that this duplicate cannot
//! happen: its copies are dropped at load unless the identifier's flush committed it
//! (`origins.rs`).
//!
//! Bounded per connection by `inbound_qos2_max`, the Receive Maximum announced to MQTT 5
//! clients, which bounds their unacknowledged QoS 1 and 2 publishes [MQTT-3.3.4-7]: a
//! connection holding that many is not read until some are sent (`shard/ingest.rs`). So at
//! most connections × `inbound_qos2_max` acknowledgements of 56 B are held (a sealed one with
//! its barrier; a test checks the size): 100 000 connections × 64 × 56 B = 358 MB in the worst
//! case, and a few hundred bytes per publisher
//! while the disk keeps up.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::Broker;
use super::origins::Origin;
use super::outbox::Outbox;
use super::session::SessionKey;
use crate::conn::ConnId;
use crate::protocol::mqtt::{Ack, Packet, PacketId};

/// The acknowledgement a publish gets: PUBACK for QoS 1, PUBREC for QoS 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckKind {
    PubAck,
    PubRec,
}

impl AckKind {
    fn packet(self, ack: Ack<'static>) -> Packet<'static> {
        match self {
            AckKind::PubAck => Packet::PubAck(ack),
            AckKind::PubRec => Packet::PubRec(ack),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeldAck {
    conn: ConnId,
    kind: AckKind,
    ack: Ack<'static>,
    /// The PUBREC of a QoS 2 publish that was routed: the session whose inbound identifier
    /// waits for it to be written.
    routed_qos2: Option<SessionKey>,
}

#[derive(Default)]
pub(crate) struct HeldAcks {
    /// Not sealed yet, in arrival order.
    open: Vec<HeldAck>,
    /// Sealed, with their barrier; barriers grow from front to back.
    sealed: VecDeque<(u64, HeldAck)>,
    /// Acknowledgements held per connection, open and sealed.
    per_conn: HashMap<ConnId, u16>,
    /// Inbound QoS 2 identifiers whose PUBREC is held: not written yet; with the origin of
    /// a tentative publish, committed when the PUBREC is released (`origins.rs`).
    unwritten_qos2: HashMap<(SessionKey, PacketId), Option<Arc<Origin>>>,
    /// Tickets of QoS stream messages delivered here (`Broker::acknowledge_stream`), not
    /// sealed yet, then sealed with their barrier: their acknowledgement to JetStream waits
    /// as a client's PUBACK does. Bounded by what the node's JetStream consumers hold out,
    /// `qos_ack_pending_max` each.
    open_stream: Vec<u64>,
    sealed_stream: VecDeque<(u64, u64)>,
    /// The last barrier given.
    barrier: u64,
}

impl HeldAcks {
    fn hold(&mut self, held: HeldAck, origin: Option<Arc<Origin>>) {
        let HeldAck {
            conn,
            ack,
            routed_qos2,
            ..
        } = held;
        if let Some(key) = routed_qos2 {
            self.unwritten_qos2.insert((key, ack.packet_id), origin);
        }
        self.open.push(held);
        let held = self.per_conn.entry(conn).or_insert(0);
        *held = held.saturating_add(1);
    }

    /// Seals every open acknowledgement with a new barrier, which is returned; `None` when
    /// none is open.
    fn seal(&mut self) -> Option<u64> {
        if self.open.is_empty() && self.open_stream.is_empty() {
            return None;
        }
        self.barrier += 1;
        let barrier = self.barrier;
        self.sealed
            .extend(self.open.drain(..).map(|held| (barrier, held)));
        self.sealed_stream
            .extend(self.open_stream.drain(..).map(|ticket| (barrier, ticket)));
        Some(barrier)
    }

    /// Takes the sealed stream tickets whose barrier is at most `durable`, in order.
    fn release_stream(&mut self, durable: u64, into: &mut Vec<u64>) {
        while let Some(&(barrier, ticket)) = self.sealed_stream.front() {
            if barrier > durable {
                break;
            }
            self.sealed_stream.pop_front();
            into.push(ticket);
        }
    }

    /// Takes the sealed acknowledgements whose barrier is at most `durable`, in order.
    fn release(&mut self, durable: u64, mut send: impl FnMut(HeldAck, Option<Arc<Origin>>)) {
        while let Some(&(barrier, held)) = self.sealed.front() {
            if barrier > durable {
                break;
            }
            self.sealed.pop_front();
            if let Some(count) = self.per_conn.get_mut(&held.conn) {
                *count -= 1;
                if *count == 0 {
                    self.per_conn.remove(&held.conn);
                }
            }
            let origin = held
                .routed_qos2
                .and_then(|key| self.unwritten_qos2.remove(&(key, held.ack.packet_id)))
                .flatten();
            send(held, origin);
        }
    }

    fn held_by(&self, conn: ConnId) -> u16 {
        self.per_conn.get(&conn).copied().unwrap_or(0)
    }
}

impl Broker {
    /// Holds the acknowledgements of accepted QoS 1/2 publishes until the store reports them
    /// durable, from now on (`durability = "sync"`).
    pub fn hold_acks_until_durable(&mut self) {
        self.held_acks = Some(HeldAcks::default());
    }

    /// The PUBACK or PUBREC of an accepted publish: sent now, or held until durable.
    pub(super) fn acknowledge(
        &mut self,
        conn: ConnId,
        kind: AckKind,
        ack: Ack<'static>,
        out: &mut Outbox,
    ) {
        let held = HeldAck {
            conn,
            kind,
            ack,
            routed_qos2: None,
        };
        match &mut self.held_acks {
            Some(acks) => acks.hold(held, None),
            None => self.reply(conn, &kind.packet(ack), out),
        }
    }

    /// The PUBREC of a QoS 2 publish of session `key` that was just routed: while it is held,
    /// its identifier is not written (see the module documentation). `origin`: the publish
    /// is tentative until then (`origins.rs`).
    pub(super) fn acknowledge_routed_qos2(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        ack: Ack<'static>,
        origin: Option<Arc<Origin>>,
        out: &mut Outbox,
    ) {
        let held = HeldAck {
            conn,
            kind: AckKind::PubRec,
            ack,
            routed_qos2: Some(key),
        };
        match &mut self.held_acks {
            Some(acks) => acks.hold(held, origin),
            None => self.reply(conn, &Packet::PubRec(ack), out),
        }
    }

    /// Whether the inbound QoS 2 identifier `id` of session `key` waits for its PUBREC to be
    /// released before it is written.
    pub(super) fn inbound_qos2_unwritten(&self, key: SessionKey, id: PacketId) -> bool {
        self.held_acks
            .as_ref()
            .is_some_and(|held| held.unwritten_qos2.contains_key(&(key, id)))
    }

    /// Seals the open acknowledgements with a new barrier once every publish they answer was
    /// delivered on this shard (no fan-out pending); the shard posts the barrier behind those
    /// publishes to every other shard and notes it in its own flush.
    pub fn seal_held_acks(&mut self) -> Option<u64> {
        if self.fanout_pending() {
            return None;
        }
        self.held_acks.as_mut()?.seal()
    }

    /// Whether sealed acknowledgements wait for their barrier.
    pub fn held_acks_waiting(&self) -> bool {
        self.held_acks
            .as_ref()
            .is_some_and(|held| !held.sealed.is_empty() || !held.sealed_stream.is_empty())
    }

    /// A message from the QoS stream, with its `ticket`, was delivered on this node: its
    /// acknowledgement to JetStream goes now, or under `sync` once what it changed is on
    /// disk on every shard, as a client's PUBACK (`crate::cluster::qos`).
    pub fn acknowledge_stream(&mut self, ticket: u64, out: &mut Outbox) {
        match &mut self.held_acks {
            Some(acks) => acks.open_stream.push(ticket),
            None => out.stream_acks.push(ticket),
        }
    }

    /// Sends the acknowledgements whose barrier every shard reported durable, and says how
    /// many. Those of connections gone meanwhile are dropped: their clients send the
    /// publishes again.
    pub fn release_held_acks(&mut self, durable: u64, out: &mut Outbox) -> usize {
        let Some(mut held) = self.held_acks.take() else {
            return 0;
        };
        let mut released = 0;
        held.release(durable, |ack, origin| {
            released += 1;
            self.reply(ack.conn, &ack.kind.packet(ack.ack), out);
            if let Some(key) = ack.routed_qos2 {
                // Its identifier may be written now, and with it the commit.
                self.note_inbound_qos2(key);
                if let Some(origin) = origin {
                    self.commit_origin(key, origin);
                }
            }
        });
        held.release_stream(durable, &mut out.stream_acks);
        self.held_acks = Some(held);
        released
    }

    /// Acknowledgements held for connection `conn`.
    pub fn held_acks_of(&self, conn: ConnId) -> u16 {
        self.held_acks.as_ref().map_or(0, |held| held.held_by(conn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::SlotKey;

    fn ack(id: u16) -> Ack<'static> {
        Ack::new(PacketId::new(id).expect("non-zero"))
    }

    fn plain(conn: ConnId, kind: AckKind, id: u16) -> HeldAck {
        HeldAck {
            conn,
            kind,
            ack: ack(id),
            routed_qos2: None,
        }
    }

    fn released(held: &mut HeldAcks, durable: u64) -> Vec<u16> {
        let mut ids = Vec::new();
        held.release(durable, |held, _| ids.push(held.ack.packet_id.get()));
        ids
    }

    #[test]
    fn a_sealed_acknowledgement_takes_at_most_56_bytes() {
        assert!(std::mem::size_of::<(u64, HeldAck)>() <= 56);
    }

    #[test]
    fn nothing_open_seals_nothing() {
        let mut held = HeldAcks::default();
        assert_eq!(held.seal(), None);
        assert!(released(&mut held, u64::MAX).is_empty());
    }

    #[test]
    fn an_open_ack_waits_for_its_seal_and_its_barrier() {
        let mut held = HeldAcks::default();
        let conn = ConnId::new(1, 1);
        held.hold(plain(conn, AckKind::PubAck, 1), None);
        assert!(released(&mut held, u64::MAX).is_empty(), "not sealed yet");
        assert_eq!(held.seal(), Some(1));
        held.hold(plain(conn, AckKind::PubRec, 2), None);
        assert_eq!(held.held_by(conn), 2);
        assert!(released(&mut held, 0).is_empty(), "barrier 1 not durable");
        assert_eq!(released(&mut held, 1), [1]);
        assert_eq!(held.held_by(conn), 1, "the open one is still held");
        assert_eq!(held.seal(), Some(2));
        assert_eq!(released(&mut held, 2), [2]);
        assert_eq!(held.held_by(conn), 0);
        assert!(held.per_conn.is_empty());
    }

    #[test]
    fn a_routed_qos2_identifier_is_unwritten_until_its_pubrec_is_released() {
        let mut held = HeldAcks::default();
        let conn = ConnId::new(1, 1);
        let key = SessionKey::from_parts(3, 1);
        let id = PacketId::new(9).expect("non-zero");
        let origin = Arc::new(Origin::new("pub", 5, 1));
        held.hold(
            HeldAck {
                routed_qos2: Some(key),
                ..plain(conn, AckKind::PubRec, 9)
            },
            Some(Arc::clone(&origin)),
        );
        assert!(held.unwritten_qos2.contains_key(&(key, id)));
        assert_eq!(held.seal(), Some(1));
        assert!(released(&mut held, 0).is_empty());
        assert!(held.unwritten_qos2.contains_key(&(key, id)), "still held");
        let mut origins = Vec::new();
        held.release(1, |_, released| origins.push(released));
        assert_eq!(origins, [Some(origin)], "the origin comes with its PUBREC");
        assert!(held.unwritten_qos2.is_empty());
    }

    #[test]
    fn barriers_release_in_order_and_only_up_to_the_durable_one() {
        let mut held = HeldAcks::default();
        let (a, b) = (ConnId::new(1, 1), ConnId::new(2, 1));
        for (barrier, ids) in [(1, [1, 2]), (2, [3, 4]), (3, [5, 6])] {
            held.hold(plain(a, AckKind::PubAck, ids[0]), None);
            held.hold(plain(b, AckKind::PubAck, ids[1]), None);
            assert_eq!(held.seal(), Some(barrier));
        }
        assert_eq!(released(&mut held, 2), [1, 2, 3, 4]);
        assert_eq!(held.held_by(a), 1);
        assert_eq!(held.held_by(b), 1);
        assert_eq!(released(&mut held, 2), Vec::<u16>::new());
        assert_eq!(released(&mut held, 7), [5, 6]);
    }

    #[test]
    fn a_stream_message_is_acknowledged_to_jetstream_once_durable() {
        let mut held = HeldAcks::default();
        held.open_stream.push(10);
        assert_eq!(held.seal(), Some(1), "a stream ticket alone is sealed");
        held.open_stream.push(11);
        let mut tickets = Vec::new();
        held.release_stream(0, &mut tickets);
        assert!(tickets.is_empty(), "barrier 1 not durable");
        held.release_stream(1, &mut tickets);
        assert_eq!(tickets, [10], "the open one waits for its seal");
        assert_eq!(held.seal(), Some(2));
        held.release_stream(2, &mut tickets);
        assert_eq!(tickets, [10, 11]);
    }
}
