//! In cluster mode: the PUBACKs and PUBRECs of accepted QoS 1/2 publishes, held until
//! JetStream stored the publish for the other nodes (`crate::cluster::qos`,
//! `docs/scale-out.md`, "QoS 1 and 2 across nodes").
//!
//! A publish that went to the cluster gets a ticket, a number this shard counts up; the
//! NATS thread answers each ticket (`crate::cluster::link`), in any order, and the
//! acknowledgements are released in ticket order, so a connection's PUBACKs keep the order of
//! its PUBLISHes [MQTT-4.6.0-2]. A stored publish's acknowledgement then goes on as any
//! other: sent, or under `durability = "sync"` held again until durable (`held_acks.rs`):
//! both promises hold before the publisher hears one.
//!
//! A publish JetStream did not store (NATS gone meanwhile, no answer in time, the stream
//! full) was delivered on this node already: MQTT 5 gets 0x97 Quota exceeded, 3.x no
//! acknowledgement, so its client sends it again (on its next connection at the latest); a
//! QoS 2 identifier is let go, so that the publish sent again is routed again. While a QoS 2
//! publish waits here its identifier is not written, as while its PUBREC is held for the disk:
//! a crash in between must not make the client's resend a duplicate of a message the other
//! nodes never got. While NATS is
//! known to be gone, QoS 1/2 publishes are refused before they are routed, as when the store
//! cannot write (`inbound.rs`).
//!
//! Bounded per connection by `inbound_qos2_max` as the held acknowledgements are: a
//! connection holding that many, here and in `held_acks.rs` together, is not read until some
//! are sent (`shard/ingest.rs`). Worst case connections × `inbound_qos2_max` × 64 B (a test
//! checks the size), and for a QoS 2 publish its identifier in a set.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::Broker;
use super::held_acks::AckKind;
use super::origins::Origin;
use super::outbox::Outbox;
use super::session::SessionKey;
use crate::conn::ConnId;
use crate::protocol::mqtt::{Ack, Packet, PacketId, Properties, ProtocolVersion, ReasonCode};

/// The session of a QoS 2 publish, and under `sync` the origin that makes it tentative
/// (`origins.rs`).
type Qos2 = (SessionKey, Option<Arc<Origin>>);

#[derive(Debug)]
struct Waiting {
    conn: ConnId,
    kind: AckKind,
    ack: Ack<'static>,
    /// For a QoS 2 publish: its identifier is not written while it waits, and let go if
    /// the publish was not stored.
    qos2: Option<Qos2>,
    v5: bool,
    /// JetStream's answer, once it came.
    stored: Option<bool>,
}

#[derive(Default)]
pub(crate) struct ClusterAcks {
    /// In ticket order; the front one has ticket `front`, the next ones count up from it.
    waiting: VecDeque<Waiting>,
    front: u64,
    /// Acknowledgements waiting per connection.
    per_conn: HashMap<ConnId, u16>,
    /// The inbound QoS 2 identifiers among them.
    qos2: HashSet<(SessionKey, PacketId)>,
}

impl ClusterAcks {
    /// Holds `waiting` and gives it the next ticket.
    fn hold(&mut self, waiting: Waiting) -> u64 {
        let ticket = self.front + self.waiting.len() as u64;
        let held = self.per_conn.entry(waiting.conn).or_insert(0);
        *held = held.saturating_add(1);
        if let Some((key, _)) = &waiting.qos2 {
            self.qos2.insert((*key, waiting.ack.packet_id));
        }
        self.waiting.push_back(waiting);
        ticket
    }

    /// Notes JetStream's answer for `ticket`. An unknown ticket (answered twice, or from
    /// before this shard's count began) changes nothing.
    fn settle(&mut self, ticket: u64, stored: bool) {
        let Some(index) = ticket.checked_sub(self.front) else {
            return;
        };
        let Ok(index) = usize::try_from(index) else {
            return;
        };
        if let Some(waiting) = self.waiting.get_mut(index) {
            waiting.stored = Some(stored);
        }
    }

    /// Takes the answered acknowledgements from the front, in ticket order, up to the first
    /// one still unanswered.
    fn release(&mut self, mut release: impl FnMut(Waiting, bool)) {
        while let Some(stored) = self.waiting.front().and_then(|waiting| waiting.stored) {
            let Some(waiting) = self.waiting.pop_front() else {
                break;
            };
            self.front += 1;
            if let Some((key, _)) = &waiting.qos2 {
                self.qos2.remove(&(*key, waiting.ack.packet_id));
            }
            if let Some(count) = self.per_conn.get_mut(&waiting.conn) {
                *count -= 1;
                if *count == 0 {
                    self.per_conn.remove(&waiting.conn);
                }
            }
            release(waiting, stored);
        }
    }

    fn held_by(&self, conn: ConnId) -> u16 {
        self.per_conn.get(&conn).copied().unwrap_or(0)
    }
}

impl Broker {
    /// Holds the acknowledgements of accepted QoS 1/2 publishes that go to the cluster until
    /// JetStream stored them, from now on (in cluster mode, right after `join_cluster`).
    pub fn hold_acks_for_cluster(&mut self) {
        self.cluster_acks = Some(ClusterAcks::default());
    }

    /// Whether the cluster can take QoS 1/2 publishes now (the NATS connection is up): one
    /// relaxed load per turn, as for the store.
    pub fn set_cluster_writable(&mut self, writable: bool) {
        self.cluster_writable = writable;
    }

    /// Whether a QoS 1/2 publish to `topic` is refused before it is routed: NATS is gone, and
    /// the other nodes could not be promised it. `$` topics are each node's own.
    pub(super) fn refused_by_cluster(&self, topic: &str) -> bool {
        self.cluster_acks.is_some() && !self.cluster_writable && !topic.starts_with('$')
    }

    /// The acknowledgement of an accepted QoS 1/2 publish, just routed: held for JetStream
    /// when the routing sent it to the cluster, which gets its ticket in
    /// `Outbox::cluster_tickets`; else acknowledged at once. `remote_before` is the length of
    /// `Outbox::to_remote` before the routing: what it pushed there is the copy that went to
    /// the cluster. Not the routed `Arc` itself: the routing gives a copy its cluster identity
    /// (`with_cluster_id`), so the caller's handle is not the one sent.
    pub(super) fn acknowledge_after_cluster(
        &mut self,
        (conn, kind, ack): (ConnId, AckKind, Ack<'static>),
        qos2: Option<Qos2>,
        remote_before: usize,
        out: &mut Outbox,
    ) {
        let sent = out.to_remote.get(remote_before).map(Arc::clone);
        let v5 = self
            .clients
            .get(conn)
            .is_some_and(|connection| connection.version == ProtocolVersion::V5);
        match (&mut self.cluster_acks, sent) {
            (Some(acks), Some(sent)) => {
                let waiting = Waiting {
                    conn,
                    kind,
                    ack,
                    qos2,
                    v5,
                    stored: None,
                };
                let ticket = acks.hold(waiting);
                out.cluster_tickets.push((sent, ticket));
            }
            _ => self.after_cluster(conn, kind, ack, qos2, out),
        }
    }

    /// The acknowledgement once the cluster has the publish (or it never went there).
    fn after_cluster(
        &mut self,
        conn: ConnId,
        kind: AckKind,
        ack: Ack<'static>,
        qos2: Option<Qos2>,
        out: &mut Outbox,
    ) {
        match qos2 {
            Some((key, origin)) => {
                self.acknowledge_routed_qos2(conn, key, ack, origin, out);
                // Left out of the session's records while it waited here.
                self.note_inbound_qos2(key);
            }
            None => self.acknowledge(conn, kind, ack, out),
        }
    }

    /// Whether the inbound QoS 2 identifier `id` of session `key` waits for JetStream: it is
    /// not written until then, as while its PUBREC is held for the disk (`held_acks.rs`).
    pub(super) fn inbound_qos2_waits_for_cluster(&self, key: SessionKey, id: PacketId) -> bool {
        self.cluster_acks
            .as_ref()
            .is_some_and(|acks| acks.qos2.contains(&(key, id)))
    }

    /// JetStream's answer for `ticket`; sends (or holds for the disk) the acknowledgements
    /// now due, in order, and says how many were released.
    pub fn settle_cluster_ack(&mut self, ticket: u64, stored: bool, out: &mut Outbox) -> usize {
        let Some(mut acks) = self.cluster_acks.take() else {
            return 0;
        };
        acks.settle(ticket, stored);
        let mut released = 0;
        acks.release(|waiting, stored| {
            released += 1;
            let Waiting {
                conn,
                kind,
                ack,
                qos2,
                v5,
                ..
            } = waiting;
            if stored {
                self.after_cluster(conn, kind, ack, qos2, out);
            } else {
                self.refused_after_cluster(conn, kind, ack.packet_id, qos2, v5, out);
            }
        });
        self.cluster_acks = Some(acks);
        released
    }

    /// A publish JetStream did not store (see the module documentation).
    fn refused_after_cluster(
        &mut self,
        conn: ConnId,
        kind: AckKind,
        id: PacketId,
        qos2: Option<Qos2>,
        v5: bool,
        out: &mut Outbox,
    ) {
        self.stats.publishes_refused_cluster += 1;
        if let Some((key, origin)) = qos2 {
            let released = self
                .sessions
                .get_mut(key)
                .is_some_and(|session| session.release_inbound_qos2(id));
            if released {
                self.note_inbound_qos2(key);
            }
            // Its local copies were delivered: they need not wait any longer (`origins.rs`).
            if let Some(origin) = origin {
                self.commit_origin(key, origin);
            }
        }
        if v5 {
            let ack = Ack {
                packet_id: id,
                reason: ReasonCode::QUOTA_EXCEEDED,
                properties: Properties::EMPTY,
            };
            let packet = match kind {
                AckKind::PubAck => Packet::PubAck(ack),
                AckKind::PubRec => Packet::PubRec(ack),
            };
            self.reply(conn, &packet, out);
        }
    }

    /// Acknowledgements waiting for connection `conn`: for JetStream here, and for the disk
    /// (`held_acks.rs`).
    pub fn acks_waiting_of(&self, conn: ConnId) -> u16 {
        let cluster = self
            .cluster_acks
            .as_ref()
            .map_or(0, |acks| acks.held_by(conn));
        self.held_acks_of(conn).saturating_add(cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(conn: ConnId, id: u16) -> Waiting {
        Waiting {
            conn,
            kind: AckKind::PubAck,
            ack: Ack::new(PacketId::new(id).expect("non-zero")),
            qos2: None,
            v5: false,
            stored: None,
        }
    }

    fn released(acks: &mut ClusterAcks) -> Vec<(u16, bool)> {
        let mut ids = Vec::new();
        acks.release(|waiting, stored| ids.push((waiting.ack.packet_id.get(), stored)));
        ids
    }

    #[test]
    fn a_waiting_acknowledgement_takes_at_most_64_bytes() {
        assert!(std::mem::size_of::<Waiting>() <= 64);
    }

    #[test]
    fn answers_in_any_order_release_in_ticket_order() {
        let mut acks = ClusterAcks::default();
        let (a, b) = (ConnId::new(1, 1), ConnId::new(2, 1));
        let tickets: Vec<u64> = [(a, 1), (b, 2), (a, 3)]
            .into_iter()
            .map(|(conn, id)| acks.hold(waiting(conn, id)))
            .collect();
        assert_eq!(tickets, [0, 1, 2]);
        assert_eq!(acks.held_by(a), 2);
        acks.settle(2, true);
        acks.settle(1, false);
        assert!(released(&mut acks).is_empty(), "the first is unanswered");
        acks.settle(0, true);
        assert_eq!(released(&mut acks), [(1, true), (2, false), (3, true)]);
        assert_eq!(acks.held_by(a), 0);
        assert!(acks.per_conn.is_empty());
        assert_eq!(acks.hold(waiting(a, 4)), 3, "tickets go on counting");
    }

    #[test]
    fn unknown_tickets_change_nothing() {
        let mut acks = ClusterAcks::default();
        let conn = ConnId::new(1, 1);
        acks.hold(waiting(conn, 1));
        acks.settle(0, true);
        assert_eq!(released(&mut acks), [(1, true)]);
        acks.settle(0, false);
        acks.settle(7, true);
        assert!(released(&mut acks).is_empty());
        acks.hold(waiting(conn, 2));
        acks.settle(u64::MAX, true);
        assert!(released(&mut acks).is_empty());
        assert_eq!(acks.held_by(conn), 1);
    }
}
