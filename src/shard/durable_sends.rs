//! Under `durability = "sync"`: what the broker sends a connection whose persistent session
//! changed, held until the flush that wrote the change is on disk (`docs/persistence.md`,
//! "Sends that wait for their session's record").
//!
//! A QoS 2 PUBLISH sent with a packet identifier the disk does not hold comes back after a
//! crash as a new message with a new identifier, and a PUBREL sent before the disk holds the
//! PUBREC that allowed it leaves the session, after a crash, sending the PUBLISH again to a
//! client that already delivered it and forgot its identifier (PUBCOMP): either way the client
//! gets the message twice and cannot tell. The PUBCOMP of an inbound QoS 2 exchange sent before
//! its identifier's release is on disk lets the client reuse the identifier while a restarted
//! broker still takes it for a duplicate. And a PUBREC sent before its identifier is on disk
//! promises what a crash forgets. So every packet the broker queues for such a connection
//! after noting its session waits for the local flush that took the session: the shard numbers
//! its flushes (marks), gates the connection with the mark of the flush that wrote its session,
//! and the store reports the highest mark on disk (`Durable` in `store/writer.rs`). Only this
//! shard writes its sessions, so one local sync suffices, no barrier round.
//!
//! Per connection the held packets keep their order, and whatever comes after them waits
//! behind them (a QoS 0 publish may name an outbound Topic Alias a held one defines). A QoS 0
//! publish to a connection with nothing held goes at once: it changes nothing on disk.
//!
//! Bounded per connection by `queue_bytes_max`, as the send queue behind it: past it a QoS 0
//! publish is dropped (counted as dropped, newest) and anything else closes the connection
//! as an overflowing send queue would. Held for about one `fdatasync`, so a connection holds
//! what the broker sends it in that time; at most connections × `queue_bytes_max` while the
//! disk cannot write.

use std::collections::{HashMap, VecDeque};

use crate::broker::CloseReason;
use crate::conn::{Chunk, ConnId, Droppable};

/// Something for a connection that waits for a mark.
pub(super) enum Held {
    Send(Chunk, Droppable),
    Close(CloseReason),
}

/// What becomes of a packet handed to [`DurableSends::route`].
pub(super) enum Routed {
    /// Nothing to wait for: carry it out now.
    Now(Held),
    Held,
    /// A QoS 0 publish past the connection's bound.
    Dropped,
    /// Anything else past it: the connection is closed.
    Overflow,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<(u64, Held)>,
    bytes: usize,
}

#[derive(Default)]
pub(super) struct DurableSends {
    /// Per connection, the mark of the last flush that wrote its session; dropped once durable.
    gates: HashMap<ConnId, u64>,
    /// Per connection, what waits, in order; marks grow from front to back.
    held: HashMap<ConnId, Queue>,
}

impl DurableSends {
    /// What is sent to `conn` from now on waits for flush `mark`.
    pub(super) fn gate(&mut self, conn: ConnId, mark: u64) {
        let gate = self.gates.entry(conn).or_insert(mark);
        *gate = (*gate).max(mark);
    }

    /// Holds `item` for `conn` if it must wait, given that flushes up to `durable` are on disk.
    pub(super) fn route(
        &mut self,
        conn: ConnId,
        item: Held,
        durable: u64,
        bytes_max: usize,
    ) -> Routed {
        let gate = self
            .gates
            .get(&conn)
            .copied()
            .filter(|&mark| mark > durable);
        let queue = match self.held.get_mut(&conn) {
            Some(queue) => queue,
            None => {
                // A QoS 0 publish changes nothing on disk, and a close carries nothing.
                let passes = matches!(item, Held::Send(_, Droppable::Yes { .. }) | Held::Close(_));
                if gate.is_none() || passes {
                    return Routed::Now(item);
                }
                self.held.entry(conn).or_default()
            }
        };
        let mark = gate
            .into_iter()
            .chain(queue.items.back().map(|(mark, _)| *mark))
            .max()
            .unwrap_or(durable);
        let bytes = match &item {
            Held::Send(chunk, _) => chunk.len(),
            Held::Close(_) => 0,
        };
        if queue.bytes.saturating_add(bytes) > bytes_max {
            return match item {
                Held::Send(_, Droppable::Yes { .. }) => Routed::Dropped,
                _ => Routed::Overflow,
            };
        }
        queue.bytes += bytes;
        queue.items.push_back((mark, item));
        Routed::Held
    }

    /// Takes, connection by connection and in order, what waits for a flush up to `durable`.
    pub(super) fn release(&mut self, durable: u64, mut carry_out: impl FnMut(ConnId, Held)) {
        self.gates.retain(|_, mark| *mark > durable);
        self.held.retain(|&conn, queue| {
            while queue
                .items
                .front()
                .is_some_and(|(mark, _)| *mark <= durable)
            {
                if let Some((_, item)) = queue.items.pop_front() {
                    if let Held::Send(chunk, _) = &item {
                        queue.bytes -= chunk.len();
                    }
                    carry_out(conn, item);
                }
            }
            !queue.items.is_empty()
        });
    }

    /// Whether anything waits.
    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::TopicKey;

    fn send(bytes: &[u8]) -> Held {
        Held::Send(Chunk::Owned(bytes.to_vec()), Droppable::No)
    }

    fn qos0(bytes: &[u8]) -> Held {
        Held::Send(
            Chunk::Owned(bytes.to_vec()),
            Droppable::Yes {
                topic: TopicKey::of("t"),
                on_full: None,
            },
        )
    }

    fn released(sends: &mut DurableSends, durable: u64) -> Vec<(ConnId, usize)> {
        let mut out = Vec::new();
        sends.release(durable, |conn, item| {
            if let Held::Send(chunk, _) = item {
                out.push((conn, chunk.len()));
            }
        });
        out
    }

    #[test]
    fn an_ungated_connection_sends_at_once() {
        let mut sends = DurableSends::default();
        let conn = ConnId::new(1, 1);
        assert!(matches!(
            sends.route(conn, send(b"a"), 0, 100),
            Routed::Now(_)
        ));
        sends.gate(conn, 3);
        assert!(
            matches!(sends.route(conn, send(b"a"), 3, 100), Routed::Now(_)),
            "its flush is durable already"
        );
    }

    #[test]
    fn a_gated_connection_waits_for_its_mark_in_order() {
        let mut sends = DurableSends::default();
        let (a, b) = (ConnId::new(1, 1), ConnId::new(2, 1));
        sends.gate(a, 2);
        assert!(matches!(sends.route(a, send(b"1"), 1, 100), Routed::Held));
        assert!(matches!(
            sends.route(b, send(b"22"), 1, 100),
            Routed::Now(_)
        ));
        sends.gate(a, 3);
        assert!(matches!(sends.route(a, send(b"333"), 1, 100), Routed::Held));
        assert!(
            matches!(sends.route(a, qos0(b"4444"), 1, 100), Routed::Held),
            "behind what is held"
        );
        assert!(released(&mut sends, 1).is_empty());
        assert_eq!(released(&mut sends, 2), [(a, 1)]);
        assert!(!sends.is_empty(), "a's second waits for 3");
        assert_eq!(released(&mut sends, 3), [(a, 3), (a, 4)]);
        assert!(sends.is_empty());
        assert!(matches!(sends.route(a, send(b"5"), 3, 100), Routed::Now(_)));
    }

    #[test]
    fn a_qos0_publish_to_a_connection_holding_nothing_goes_at_once() {
        let mut sends = DurableSends::default();
        let conn = ConnId::new(1, 1);
        sends.gate(conn, 2);
        assert!(matches!(
            sends.route(conn, qos0(b"q"), 1, 100),
            Routed::Now(_)
        ));
    }

    #[test]
    fn past_its_bound_a_qos0_publish_is_dropped_and_anything_else_overflows() {
        let mut sends = DurableSends::default();
        let conn = ConnId::new(1, 1);
        sends.gate(conn, 2);
        assert!(matches!(
            sends.route(conn, send(b"12345"), 1, 8),
            Routed::Held
        ));
        assert!(matches!(
            sends.route(conn, qos0(b"6789"), 1, 8),
            Routed::Dropped
        ));
        assert!(matches!(
            sends.route(conn, send(b"6789"), 1, 8),
            Routed::Overflow
        ));
        assert!(matches!(
            sends.route(conn, send(b"678"), 1, 8),
            Routed::Held
        ));
        assert_eq!(released(&mut sends, 2), [(conn, 5), (conn, 3)]);
    }
}
