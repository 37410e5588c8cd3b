//! A replaced broker's drain (`fanfare --takeover`): once the successor serves on the same
//! listening sockets, this shard stops accepting, closes its copies of the listeners, and ends
//! its connections spread evenly over `drain_s` (MQTT 5: DISCONNECT 0x8B Server shutting down;
//! WebSocket: close 1001 Going away; 3.1.x over TCP: closed), so that a million clients do not
//! reconnect to the successor in the same second. Past `drain_s` it stops as on SIGTERM, with
//! the grace that gives whoever is left.

use std::time::{Duration, Instant};

use super::Shard;
use super::peer::{CloseCause, Phase};
use crate::conn::ConnId;

/// A drain in progress.
pub(super) struct Drain {
    started: Instant,
    spread: Duration,
    /// The connections at the start, in the order they are ended; those accepted later (an
    /// accept already under way when accepting stopped) are ended by the stop at the end.
    order: Vec<ConnId>,
    /// How many of `order` were handled.
    done: usize,
}

impl Shard {
    /// Stops accepting and schedules every connection's end over `drain_s`.
    pub(super) fn begin_drain(&mut self, now: Instant) {
        for index in 0..self.listeners.len() {
            if self.listeners[index].armed {
                // The copy closes once the cancelled accept has ended (`on_accept`).
                self.io.cancel_accept(index);
            } else {
                self.listeners[index].socket = None;
            }
        }
        self.drain = Some(Drain {
            started: now,
            spread: Duration::from_secs(self.config.drain_s.into()),
            order: self.io.ids(),
            done: 0,
        });
    }

    /// Ends the connections due by now; once all are, or `drain_s` passed, begins the stop.
    pub(super) fn continue_drain(&mut self, now: Instant) {
        if self.stop_deadline.is_some() {
            return;
        }
        let Some(mut drain) = self.drain.take() else {
            return;
        };
        let elapsed = now.saturating_duration_since(drain.started);
        let total = drain.order.len();
        if elapsed < drain.spread && drain.done < total {
            // `spread` is not zero here: `elapsed` would have reached it.
            let due = (total as u128 * elapsed.as_millis() / drain.spread.as_millis().max(1))
                .min(total as u128) as usize;
            for &id in drain.order.get(drain.done..due).unwrap_or_default() {
                self.end_for_drain(id, now);
            }
            drain.done = drain.done.max(due);
        }
        let finished = elapsed >= drain.spread || drain.done == total;
        self.drain = Some(drain);
        if finished {
            self.begin_stop(now);
        }
    }

    fn end_for_drain(&mut self, id: ConnId, now: Instant) {
        match self.io.state(id).map(|peer| peer.phase) {
            None | Some(Phase::Closing) => {}
            Some(Phase::Connected(_)) => self.broker.drain_connection(id, now, &mut self.outbox),
            Some(_) => self.pending_closes.push((id, CloseCause::Shutdown)),
        }
    }
}
