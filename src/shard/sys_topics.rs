//! The `$SYS` topics: every `sys_interval_s`, shard 0 reads every shard's figures summed
//! ([`Metrics::totals`], the same atomics `GET /metrics` renders) and publishes them as
//! retained QoS 0 messages through its broker, the way a will is published: each shard applies
//! them to its retained replica and delivers them to its subscribers of `$SYS/#`. Nothing of
//! this runs on the fan-out path; a publication is about 30 small messages per interval.
//!
//! Topic names are Mosquitto's where it has one, so dashboards built for it work. Two
//! differences: `messages/*` count PUBLISH packets only (fanfare counts no other packet), and
//! fanfare's own counters live under `$SYS/broker/fanfare/`. Every topic is published at every
//! interval, changed or not, so a value a client overwrote (without topic rules, clients may
//! publish to `$SYS`) or one the retained store had no room for comes back at the next one.
//!
//! The `load/.../1min|5min|15min` figures are per minute, averaged exponentially over 1, 5 and
//! 15 minutes: at each publication the rate since the previous one moves each average towards
//! it by `1 - e^(-elapsed / window)`, as load averages of Unix systems do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shard;
use crate::broker::RoutedMessage;
use crate::metrics::{MetricId, Totals};
use crate::protocol::mqtt::QoS;

const CONNECTIONS: MetricId = MetricId::of("fanfare_connections");
const SESSIONS: MetricId = MetricId::of("fanfare_sessions");
const OFFLINE_SESSIONS: MetricId = MetricId::of("fanfare_offline_sessions");
const SUBSCRIPTIONS: MetricId = MetricId::of("fanfare_subscriptions");
const RETAINED: MetricId = MetricId::of("fanfare_retained_messages");
const PUBLISHES_RECEIVED: MetricId = MetricId::of("fanfare_publishes_received_total");
const DELIVERIES: MetricId = MetricId::of("fanfare_deliveries_total");
const BYTES_RECEIVED: MetricId = MetricId::of("fanfare_bytes_received_total");
const BYTES_SENT: MetricId = MetricId::of("fanfare_bytes_sent_total");
const DROPPED_NEWEST: MetricId = MetricId::of("fanfare_slow_consumer_dropped_newest_total");
const DROPPED_OLDEST: MetricId = MetricId::of("fanfare_slow_consumer_dropped_oldest_total");
const CONFLATED: MetricId = MetricId::of("fanfare_slow_consumer_conflated_total");
const SLOW_DISCONNECTS: MetricId = MetricId::of("fanfare_slow_consumer_disconnects_total");
const SESSION_QUEUE_DROPPED: MetricId = MetricId::of("fanfare_session_queue_dropped_total");
const LINGERING_CLOSES: MetricId = MetricId::of("fanfare_lingering_closes_total");

/// What `$SYS/broker/version` says.
const VERSION: &str = concat!("fanfare version ", env!("CARGO_PKG_VERSION"));

/// A value read from the totals.
type Figure = fn(&Totals) -> u64;

/// Publishes dropped for full queues: QoS 0 by the slow consumer policies, QoS 1/2 from full
/// session queues (Mosquitto's "dropped due to inflight/queuing limits").
fn publishes_dropped(totals: &Totals) -> u64 {
    totals.get(DROPPED_NEWEST) + totals.get(DROPPED_OLDEST) + totals.get(SESSION_QUEUE_DROPPED)
}

/// Topics whose payload is one figure, in decimal.
const FIGURES: [(&str, Figure); 16] = [
    ("$SYS/broker/clients/connected", |t| t.get(CONNECTIONS)),
    ("$SYS/broker/clients/disconnected", |t| {
        t.get(OFFLINE_SESSIONS)
    }),
    ("$SYS/broker/clients/total", |t| t.get(SESSIONS)),
    ("$SYS/broker/messages/received", |t| {
        t.get(PUBLISHES_RECEIVED)
    }),
    ("$SYS/broker/messages/sent", |t| t.get(DELIVERIES)),
    ("$SYS/broker/publish/messages/dropped", publishes_dropped),
    ("$SYS/broker/subscriptions/count", |t| t.get(SUBSCRIPTIONS)),
    ("$SYS/broker/retained messages/count", |t| t.get(RETAINED)),
    ("$SYS/broker/bytes/received", |t| t.get(BYTES_RECEIVED)),
    ("$SYS/broker/bytes/sent", |t| t.get(BYTES_SENT)),
    ("$SYS/broker/fanfare/slow-consumer/dropped-newest", |t| {
        t.get(DROPPED_NEWEST)
    }),
    ("$SYS/broker/fanfare/slow-consumer/dropped-oldest", |t| {
        t.get(DROPPED_OLDEST)
    }),
    ("$SYS/broker/fanfare/slow-consumer/conflated", |t| {
        t.get(CONFLATED)
    }),
    ("$SYS/broker/fanfare/slow-consumer/disconnected", |t| {
        t.get(SLOW_DISCONNECTS)
    }),
    ("$SYS/broker/fanfare/session-queue/dropped", |t| {
        t.get(SESSION_QUEUE_DROPPED)
    }),
    ("$SYS/broker/fanfare/lingering-closes", |t| {
        t.get(LINGERING_CLOSES)
    }),
];

/// Counters whose rate is published as `{topic}/1min`, `/5min` and `/15min`.
const LOADS: [(&str, Figure); 5] = [
    ("$SYS/broker/load/messages/received", |t| {
        t.get(PUBLISHES_RECEIVED)
    }),
    ("$SYS/broker/load/messages/sent", |t| t.get(DELIVERIES)),
    ("$SYS/broker/load/publish/dropped", publishes_dropped),
    ("$SYS/broker/load/bytes/received", |t| t.get(BYTES_RECEIVED)),
    ("$SYS/broker/load/bytes/sent", |t| t.get(BYTES_SENT)),
];

/// The averaging windows of the loads, in minutes, with their topic suffix.
const WINDOWS: [(f64, &str); 3] = [(1.0, "1min"), (5.0, "5min"), (15.0, "15min")];

/// When the next publication is due, and what the averages and maximum carry between them.
pub struct SysTopics {
    interval: Duration,
    started: Instant,
    next_at: Instant,
    /// The previous publication's time and load counters.
    last: Option<(Instant, [u64; LOADS.len()])>,
    /// Per load, per window: messages (or bytes) per minute.
    averages: [[f64; WINDOWS.len()]; LOADS.len()],
    /// The most clients seen connected at a publication.
    clients_max: u64,
}

impl SysTopics {
    /// Publications every `interval` from the first tick on; `started` is the broker's start,
    /// what the uptime counts from.
    pub fn new(interval: Duration, started: Instant) -> SysTopics {
        assert!(!interval.is_zero(), "an interval of 0 means no $SYS topics");
        SysTopics {
            interval,
            started,
            next_at: started,
            last: None,
            averages: [[0.0; WINDOWS.len()]; LOADS.len()],
            clients_max: 0,
        }
    }

    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_at
    }

    /// Every topic with its payload, from `totals` at `now`; the next publication is due an
    /// interval later.
    pub fn publication(&mut self, now: Instant, totals: &Totals) -> Vec<(String, String)> {
        self.next_at = now + self.interval;
        self.clients_max = self.clients_max.max(totals.get(CONNECTIONS));
        let counters = LOADS.map(|(_, figure)| figure(totals));
        if let Some((at, before)) = self.last {
            let elapsed_s = now.saturating_duration_since(at).as_secs_f64();
            if elapsed_s > 0.0 {
                for ((averages, count), previous) in
                    self.averages.iter_mut().zip(counters).zip(before)
                {
                    let per_minute = count.saturating_sub(previous) as f64 * 60.0 / elapsed_s;
                    for (average, (window_min, _)) in averages.iter_mut().zip(WINDOWS) {
                        let kept = (-elapsed_s / (window_min * 60.0)).exp();
                        *average = *average * kept + per_minute * (1.0 - kept);
                    }
                }
            }
        }
        self.last = Some((now, counters));

        let mut messages = Vec::with_capacity(3 + FIGURES.len() + LOADS.len() * WINDOWS.len());
        messages.push(("$SYS/broker/version".to_owned(), VERSION.to_owned()));
        let uptime_s = now.saturating_duration_since(self.started).as_secs();
        messages.push((
            "$SYS/broker/uptime".to_owned(),
            format!("{uptime_s} seconds"),
        ));
        for (topic, figure) in FIGURES {
            messages.push((topic.to_owned(), figure(totals).to_string()));
        }
        messages.push((
            "$SYS/broker/clients/maximum".to_owned(),
            self.clients_max.to_string(),
        ));
        for ((topic, _), averages) in LOADS.iter().zip(&self.averages) {
            for (average, (_, suffix)) in averages.iter().zip(WINDOWS) {
                messages.push((format!("{topic}/{suffix}"), format!("{average:.2}")));
            }
        }
        messages
    }
}

impl Shard {
    /// On shard 0's tick, when due and not stopping: publishes the `$SYS` topics, retained, as
    /// the broker's own messages.
    pub(super) fn publish_sys_topics(&mut self, now: Instant) {
        if self.stop_deadline.is_some() {
            return;
        }
        let Some(sys) = self.sys_topics.as_mut().filter(|sys| sys.due(now)) else {
            return;
        };
        for (topic, payload) in sys.publication(now, &self.metrics.totals()) {
            let message = RoutedMessage::new(&topic, payload.as_bytes(), QoS::AtMostOnce, true);
            self.broker
                .publish_own(Arc::new(message), now, &mut self.outbox);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mqtt::topic::{filter_matches, is_valid_topic_name};

    fn payload<'a>(messages: &'a [(String, String)], topic: &str) -> &'a str {
        messages
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("no {topic}"))
    }

    #[test]
    fn publishes_mosquittos_names_with_the_summed_figures() {
        let start = Instant::now();
        let mut sys = SysTopics::new(Duration::from_secs(10), start);
        assert!(sys.due(start));
        let totals = Totals::zero()
            .with(CONNECTIONS, 3)
            .with(SESSIONS, 5)
            .with(OFFLINE_SESSIONS, 2)
            .with(RETAINED, 7)
            .with(PUBLISHES_RECEIVED, 11)
            .with(DELIVERIES, 40)
            .with(DROPPED_NEWEST, 1)
            .with(DROPPED_OLDEST, 2)
            .with(SESSION_QUEUE_DROPPED, 4)
            .with(CONFLATED, 9)
            .with(BYTES_SENT, 1234);
        let now = start + Duration::from_secs(42);
        let messages = sys.publication(now, &totals);
        assert!(!sys.due(now + Duration::from_secs(9)));
        assert!(sys.due(now + Duration::from_secs(10)));
        assert!(payload(&messages, "$SYS/broker/version").starts_with("fanfare version "));
        assert_eq!(payload(&messages, "$SYS/broker/uptime"), "42 seconds");
        assert_eq!(payload(&messages, "$SYS/broker/clients/connected"), "3");
        assert_eq!(payload(&messages, "$SYS/broker/clients/total"), "5");
        assert_eq!(payload(&messages, "$SYS/broker/clients/disconnected"), "2");
        assert_eq!(payload(&messages, "$SYS/broker/messages/received"), "11");
        assert_eq!(payload(&messages, "$SYS/broker/messages/sent"), "40");
        assert_eq!(
            payload(&messages, "$SYS/broker/publish/messages/dropped"),
            "7"
        );
        assert_eq!(
            payload(&messages, "$SYS/broker/retained messages/count"),
            "7"
        );
        assert_eq!(payload(&messages, "$SYS/broker/bytes/sent"), "1234");
        assert_eq!(
            payload(&messages, "$SYS/broker/fanfare/slow-consumer/conflated"),
            "9"
        );
        assert_eq!(
            payload(&messages, "$SYS/broker/load/messages/received/15min"),
            "0.00"
        );
        for (topic, _) in &messages {
            assert!(is_valid_topic_name(topic), "{topic}");
            assert!(filter_matches("$SYS/#", topic), "{topic}");
            assert!(!filter_matches("#", topic), "{topic}");
            let once = messages.iter().filter(|(t, _)| t == topic).count();
            assert_eq!(once, 1, "{topic}");
        }
        assert_eq!(messages.len(), 3 + FIGURES.len() + 15);
    }

    #[test]
    fn loads_move_towards_the_rate_per_minute() {
        let start = Instant::now();
        let mut sys = SysTopics::new(Duration::from_secs(10), start);
        sys.publication(start, &Totals::zero());
        // 100 publishes in 10 s: 600 a minute.
        let at = start + Duration::from_secs(10);
        let messages = sys.publication(at, &Totals::zero().with(PUBLISHES_RECEIVED, 100));
        let load = |window: &str| -> f64 {
            payload(
                &messages,
                &format!("$SYS/broker/load/messages/received/{window}"),
            )
            .parse()
            .expect("a number")
        };
        // 600 × (1 - e^(-10/60)) ≈ 92.11; the longer windows move less.
        assert_eq!(
            payload(&messages, "$SYS/broker/load/messages/received/1min"),
            "92.11"
        );
        assert!(load("5min") < load("1min"));
        assert!(load("15min") < load("5min"));
        assert!(load("15min") > 0.0);

        // A steady rate: every average approaches it.
        let mut count = 100;
        let mut at = at;
        let mut messages = Vec::new();
        for _ in 0..2000 {
            count += 100;
            at += Duration::from_secs(10);
            messages = sys.publication(at, &Totals::zero().with(PUBLISHES_RECEIVED, count));
        }
        for window in ["1min", "5min", "15min"] {
            let topic = format!("$SYS/broker/load/messages/received/{window}");
            assert_eq!(payload(&messages, &topic), "600.00");
        }
    }

    #[test]
    fn clients_maximum_is_the_most_seen() {
        let start = Instant::now();
        let mut sys = SysTopics::new(Duration::from_secs(1), start);
        sys.publication(start, &Totals::zero().with(CONNECTIONS, 8));
        let messages = sys.publication(
            start + Duration::from_secs(1),
            &Totals::zero().with(CONNECTIONS, 3),
        );
        assert_eq!(payload(&messages, "$SYS/broker/clients/maximum"), "8");
        assert_eq!(payload(&messages, "$SYS/broker/clients/connected"), "3");
    }
}
