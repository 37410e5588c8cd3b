//! Per-connection publish limits (`publish_rate_max`, `publish_bytes_rate_max`): two token
//! buckets, each holding one second's allowance. A publish always goes through; one that
//! leaves a bucket in debt stops the reading of its connection until the debt is paid, so an
//! abusive publisher is slowed by TCP's own flow control and nothing accepted is dropped. An
//! MQTT 5 client is disconnected with 0x96 instead when `disconnect_on_rate` says so.
//!
//! The same pause, counted apart, holds a connection back while it waits for
//! `inbound_qos2_max` held acknowledgements under `durability = "sync"` (`shard/persist.rs`).
//!
//! Only publishing connections carry buckets (in `Peer::rare`, made at their first publish);
//! subscribers pay nothing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::{Duration, Instant};

use crate::conn::ConnId;

/// The two allowances, per second (both above zero: the configuration says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub messages_per_s: u32,
    pub bytes_per_s: u64,
}

/// One connection's buckets.
#[derive(Debug, Clone)]
pub struct PublishRate {
    messages: f64,
    bytes: f64,
    at: Instant,
}

impl PublishRate {
    /// Full buckets: a connection may start with a second's worth at once.
    pub fn new(limits: RateLimits, now: Instant) -> PublishRate {
        PublishRate {
            messages: f64::from(limits.messages_per_s),
            bytes: limits.bytes_per_s as f64,
            at: now,
        }
    }

    /// Takes one publish of `bytes`; `Err` holds how long the connection must wait before it
    /// is read again, when a bucket is in debt.
    pub fn take(&mut self, limits: RateLimits, bytes: usize, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        let messages_rate = f64::from(limits.messages_per_s.max(1));
        let bytes_rate = limits.bytes_per_s.max(1) as f64;
        self.messages = (self.messages + messages_rate * elapsed).min(messages_rate) - 1.0;
        self.bytes = (self.bytes + bytes_rate * elapsed).min(bytes_rate) - bytes as f64;
        let wait = (-self.messages / messages_rate).max(-self.bytes / bytes_rate);
        if wait > 0.0 {
            Err(Duration::from_secs_f64(wait))
        } else {
            Ok(())
        }
    }
}

/// Connections not read until their time comes.
#[derive(Default)]
pub struct Throttled {
    due: BinaryHeap<Reverse<(Instant, ConnId)>>,
    waiting: HashSet<ConnId>,
    /// Times a connection was paused, since start.
    pub pauses: u64,
}

impl Throttled {
    pub fn pause(&mut self, id: ConnId, until: Instant) {
        if self.waiting.insert(id) {
            self.pauses += 1;
            self.due.push(Reverse((until, id)));
        }
    }

    /// Like `pause`, for a connection waiting for its held acknowledgements
    /// (`durability = "sync"`) rather than for its rate: not counted as a rate pause.
    pub fn wait_for_acks(&mut self, id: ConnId, now: Instant) {
        if self.waiting.insert(id) {
            self.due.push(Reverse((now, id)));
        }
    }

    pub fn is_paused(&self, id: ConnId) -> bool {
        self.waiting.contains(&id)
    }

    /// The connections whose pause is over at `now`.
    pub fn resume(&mut self, now: Instant) -> Vec<ConnId> {
        let mut resumed = Vec::new();
        while let Some(&Reverse((until, id))) = self.due.peek() {
            if until > now {
                break;
            }
            self.due.pop();
            self.waiting.remove(&id);
            resumed.push(id);
        }
        resumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RateLimits = RateLimits {
        messages_per_s: 10,
        bytes_per_s: 1000,
    };

    #[test]
    fn a_second_of_allowance_then_a_pause_as_long_as_the_debt() {
        let t0 = Instant::now();
        let mut rate = PublishRate::new(LIMITS, t0);
        for _ in 0..10 {
            assert_eq!(rate.take(LIMITS, 10, t0), Ok(()));
        }
        let wait = rate.take(LIMITS, 10, t0).expect_err("the eleventh");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        // After the wait the debt is paid and one more fits.
        assert!(
            rate.take(LIMITS, 10, t0 + Duration::from_millis(200))
                .is_ok()
        );
    }

    #[test]
    fn a_large_publish_goes_through_and_pays_in_time() {
        let t0 = Instant::now();
        let mut rate = PublishRate::new(LIMITS, t0);
        let wait = rate.take(LIMITS, 3000, t0).expect_err("over the bytes");
        assert!((wait.as_secs_f64() - 2.0).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn throttled_connections_come_back_in_order() {
        let t0 = Instant::now();
        let mut throttled = Throttled::default();
        let (a, b) = (ConnId::new(1, 1), ConnId::new(2, 1));
        throttled.pause(b, t0 + Duration::from_millis(200));
        throttled.pause(a, t0 + Duration::from_millis(100));
        throttled.pause(a, t0 + Duration::from_millis(900));
        assert!(throttled.is_paused(a));
        assert_eq!(throttled.resume(t0 + Duration::from_millis(150)), [a]);
        assert_eq!(throttled.resume(t0 + Duration::from_secs(1)), [b]);
        assert_eq!(throttled.pauses, 2);
    }
}
