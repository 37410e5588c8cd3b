//! The deadlines a connection must meet before the broker knows it: a complete WebSocket upgrade
//! request (`ws_handshake_timeout_ms` from accept) and a complete CONNECT (`connect_timeout_ms`
//! from accept or upgrade). Keep-alive, once connected, is the broker's (`broker/keep_alive.rs`).
//!
//! Every deadline of one kind has the same timeout, so each kind is a FIFO in deadline order:
//! pushing is O(1), and a tick pops only what is due. An entry whose connection has moved on
//! (upgraded, connected, closed) is dropped when it comes due, so nothing has to find and remove
//! it early.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::conn::ConnId;

/// Which deadline a connection must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// A complete HTTP upgrade request.
    Upgrade,
    /// A complete CONNECT packet.
    Connect,
}

#[derive(Default)]
pub struct Deadlines {
    upgrade: VecDeque<(Instant, ConnId)>,
    connect: VecDeque<(Instant, ConnId)>,
}

impl Deadlines {
    /// Connection `id` must meet `deadline` within `timeout` of `now`.
    pub fn push(&mut self, deadline: Deadline, id: ConnId, now: Instant, timeout: Duration) {
        let queue = match deadline {
            Deadline::Upgrade => &mut self.upgrade,
            Deadline::Connect => &mut self.connect,
        };
        debug_assert!(
            queue.back().is_none_or(|&(last, _)| last <= now + timeout),
            "one timeout per kind keeps each queue in deadline order"
        );
        queue.push_back((now + timeout, id));
    }

    /// Pops the deadlines due at `now`, calling `missed` for each; `missed` says whether the
    /// connection still had to meet it (and closes it if so). Returns how many were missed.
    pub fn expire(
        &mut self,
        now: Instant,
        mut missed: impl FnMut(Deadline, ConnId) -> bool,
    ) -> usize {
        let mut count = 0;
        for (kind, queue) in [
            (Deadline::Upgrade, &mut self.upgrade),
            (Deadline::Connect, &mut self.connect),
        ] {
            while let Some(&(at, id)) = queue.front() {
                if at > now {
                    break;
                }
                queue.pop_front();
                count += usize::from(missed(kind, id));
            }
            // A burst of connections grew the queue; give the memory back once it drained.
            if queue.capacity() > 64 && queue.len() < queue.capacity() / 4 {
                queue.shrink_to(queue.len() * 2);
            }
        }
        count
    }

    /// Deadlines waiting, met or not.
    pub fn len(&self) -> usize {
        self.upgrade.len() + self.connect.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_due_deadlines_are_popped_in_order_and_met_ones_are_dropped() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut deadlines = Deadlines::default();
        deadlines.push(Deadline::Upgrade, ConnId::new(1, 1), t0, second);
        deadlines.push(Deadline::Connect, ConnId::new(2, 1), t0, 2 * second);
        deadlines.push(Deadline::Upgrade, ConnId::new(3, 1), t0 + second, second);
        let mut seen = Vec::new();
        // Connection 1 upgraded in time: its deadline no longer applies.
        let missed = deadlines.expire(t0 + second, |kind, id| {
            seen.push((kind, id.index()));
            id.index() != 1
        });
        assert_eq!(missed, 0);
        assert_eq!(seen, [(Deadline::Upgrade, 1)]);
        seen.clear();
        let missed = deadlines.expire(t0 + 3 * second, |kind, id| {
            seen.push((kind, id.index()));
            true
        });
        assert_eq!(missed, 2);
        assert_eq!(seen, [(Deadline::Upgrade, 3), (Deadline::Connect, 2)]);
        assert!(deadlines.is_empty());
    }

    #[test]
    fn a_drained_queue_gives_its_memory_back() {
        let t0 = Instant::now();
        let mut deadlines = Deadlines::default();
        for index in 0..10_000 {
            deadlines.push(Deadline::Connect, ConnId::new(index, 1), t0, Duration::ZERO);
        }
        deadlines.expire(t0, |_, _| false);
        assert!(deadlines.connect.capacity() <= 64);
    }
}
