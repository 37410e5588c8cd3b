//! Keep-alive deadlines of the connections of one shard [MQTT-3.1.2-24].
//!
//! A min-heap of (deadline, connection). A packet does not touch the heap: it only moves the
//! connection's `last_packet_at`. When an entry falls due, the connection's real deadline is
//! recomputed and, if it moved, the entry is pushed again. So each live connection has at most
//! one entry, a packet costs nothing here, and a timeout costs O(log connections).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::conn::ConnId;

/// Most due entries examined per `tick`: bounds the work of one call when many connections
/// fall due together (the rest are examined on the next tick, 100 ms later at most).
pub(crate) const DUE_PER_TICK_MAX: usize = 4096;

#[derive(Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl Deadlines {
    pub(crate) fn push(&mut self, deadline: Instant, conn: ConnId) {
        self.heap.push(Reverse((deadline, conn)));
    }

    /// Pops one entry due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<ConnId> {
        let Reverse((deadline, _)) = self.heap.peek()?;
        if *deadline > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, conn))| conn)
    }

    /// Drops the entries of connections that are gone once they outnumber the live ones, so
    /// churn of connections with long keep-alives (up to 27 hours) cannot grow the heap; and
    /// gives memory back once the heap uses a quarter of it, so it follows the connections.
    pub(crate) fn compact(&mut self, live: usize, is_live: impl Fn(ConnId) -> bool) {
        if self.heap.len() > 2 * live + 64 {
            self.heap.retain(|Reverse((_, conn))| is_live(*conn));
        }
        if self.heap.capacity() > 64 && self.heap.len() < self.heap.capacity() / 4 {
            self.heap.shrink_to(self.heap.len() * 2);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The entry the budget in `session.rs` counts.
    #[test]
    fn an_entry_is_a_deadline_and_a_connection() {
        assert_eq!(std::mem::size_of::<Reverse<(Instant, ConnId)>>(), 24);
    }

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let mut deadlines = Deadlines::default();
        deadlines.push(t0 + Duration::from_secs(2), ConnId(2));
        deadlines.push(t0 + Duration::from_secs(1), ConnId(1));
        assert_eq!(deadlines.pop_due(t0), None);
        let later = t0 + Duration::from_secs(3);
        assert_eq!(deadlines.pop_due(later), Some(ConnId(1)));
        assert_eq!(deadlines.pop_due(later), Some(ConnId(2)));
        assert_eq!(deadlines.pop_due(later), None);
    }

    #[test]
    fn compaction_drops_gone_connections() {
        let t0 = Instant::now();
        let mut deadlines = Deadlines::default();
        for id in 0..200 {
            deadlines.push(t0, ConnId(id));
        }
        deadlines.compact(1, |conn| conn == ConnId(7));
        assert_eq!(deadlines.len(), 1);
    }
}
