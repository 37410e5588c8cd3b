//! Counters shared by the worker threads, the clock stamped into payloads, per-subscriber
//! sequence tracking, and sampling of `/proc` for the broker's and our own CPU and memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use hdrhistogram::Histogram;

/// Nanoseconds on CLOCK_MONOTONIC (since boot), the same for every thread and every process
/// of the machine: a publisher in one worker process stamps it, a subscriber in another
/// subtracts it, and the parent sets the measurement window on it.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC exists on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_MONOTONIC is always readable");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Latency histogram in nanoseconds, 1 ns .. 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("bounds are valid constants")
}

/// Payload layout (little endian): actual send time (ns), intended send time (ns), stream id,
/// sequence number within the stream.
pub const PAYLOAD_HEADER_BYTES: usize = 24;

/// What a publisher writes at the start of each payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// When the message was queued for sending.
    pub sent_ns: u64,
    /// When a fixed-rate schedule meant it to be sent: message k of a publisher at rate r is
    /// due at start + k/r, however late the publisher got to it. Latency from this time counts
    /// the time a stalled broker kept the publisher from sending (coordinated omission);
    /// latency from `sent_ns` does not. Equal to `sent_ns` where there is no schedule.
    pub intended_ns: u64,
    pub stream: u32,
    pub seq: u32,
}

pub fn stamp(payload: &mut [u8], s: Stamp) {
    payload[0..8].copy_from_slice(&s.sent_ns.to_le_bytes());
    payload[8..16].copy_from_slice(&s.intended_ns.to_le_bytes());
    payload[16..20].copy_from_slice(&s.stream.to_le_bytes());
    payload[20..24].copy_from_slice(&s.seq.to_le_bytes());
}

pub fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    let h = payload.get(..PAYLOAD_HEADER_BYTES)?;
    Some(Stamp {
        sent_ns: u64::from_le_bytes(h[0..8].try_into().ok()?),
        intended_ns: u64::from_le_bytes(h[8..16].try_into().ok()?),
        stream: u32::from_le_bytes(h[16..20].try_into().ok()?),
        seq: u32::from_le_bytes(h[20..24].try_into().ok()?),
    })
}

/// What a sequence number says about one delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum SeqEvent {
    InOrder,
    /// `missing` sequence numbers were skipped (lost, or arriving later out of order).
    Gap {
        missing: u64,
    },
    Duplicate,
    OutOfOrder,
}

/// Next expected sequence number per stream, for one subscriber. Most subscribers see one
/// stream (a linear scan of a tiny vector); a wildcard subscriber may see many (a map).
#[derive(Default)]
pub struct SeqTrack {
    few: Vec<(u32, u32)>,
    many: HashMap<u32, u32>,
}

const FEW_STREAMS_MAX: usize = 8;

impl SeqTrack {
    pub fn observe(&mut self, stream: u32, seq: u32, dup_flag: bool) -> SeqEvent {
        let next = if let Some(e) = self.few.iter_mut().find(|e| e.0 == stream) {
            &mut e.1
        } else if self.many.contains_key(&stream) || self.few.len() >= FEW_STREAMS_MAX {
            self.many.entry(stream).or_insert(seq)
        } else {
            self.few.push((stream, seq));
            &mut self.few.last_mut().expect("just pushed").1
        };
        let expected = *next;
        if seq == expected {
            *next = seq.wrapping_add(1);
            SeqEvent::InOrder
        } else if seq > expected {
            *next = seq.wrapping_add(1);
            SeqEvent::Gap {
                missing: u64::from(seq - expected),
            }
        } else if dup_flag || seq + 1 == expected {
            SeqEvent::Duplicate
        } else {
            SeqEvent::OutOfOrder
        }
    }
}

/// Counters every thread adds to, in batches (once per read, not per message).
#[derive(Default)]
pub struct Counters {
    /// Messages sent inside the measurement window.
    pub published: AtomicU64,
    /// Deliveries expected from them: sum over messages of the subscribers matching.
    pub expected: AtomicU64,
    /// Deliveries of messages sent inside the window.
    pub delivered: AtomicU64,
    pub duplicates: AtomicU64,
    pub out_of_order: AtomicU64,
    pub gap_missing: AtomicU64,
    /// All-time counts (warm-up included), for the closed loop's window of outstanding messages.
    pub published_all: AtomicU64,
    pub expected_all: AtomicU64,
    pub delivered_all: AtomicU64,
    /// Payloads without our header (another client's traffic on the same topics).
    pub foreign: AtomicU64,
    pub puback_received: AtomicU64,
    pub conn_ok: AtomicU64,
    /// TLS handshakes that resumed an earlier session (`--tls-resume`).
    pub tls_resumed: AtomicU64,
    /// Indexed by `FailKind as usize`.
    pub conn_failed: [AtomicU64; 6],
    /// Connections that ended before the run did.
    pub dropped: AtomicU64,
    pub setup_done: AtomicU64,
    pub retained_complete: AtomicU64,
}

/// How many counters [`Counters::all`] lists.
pub const COUNTERS: usize = 22;

impl Counters {
    /// Every counter, in a fixed order: how a worker process reports them to its parent.
    pub fn all(&self) -> [&AtomicU64; COUNTERS] {
        let f = &self.conn_failed;
        [
            &self.published,
            &self.expected,
            &self.delivered,
            &self.duplicates,
            &self.out_of_order,
            &self.gap_missing,
            &self.published_all,
            &self.expected_all,
            &self.delivered_all,
            &self.foreign,
            &self.puback_received,
            &self.conn_ok,
            &self.tls_resumed,
            &f[0],
            &f[1],
            &f[2],
            &f[3],
            &f[4],
            &f[5],
            &self.dropped,
            &self.setup_done,
            &self.retained_complete,
        ]
    }
}

/// Subscribers in the other worker processes (`--procs`), per topic index and on the
/// wildcard, which a publisher expects deliveries from as well as from its own process's.
#[derive(Default)]
pub struct RemoteSubs {
    pub topics: Vec<u64>,
    pub wildcard: u64,
}

pub struct Shared {
    pub counters: Counters,
    pub latency: Mutex<Histogram<u64>>,
    /// Intended send time (fixed rate) → application read: see [`Stamp::intended_ns`].
    pub intended_latency: Mutex<Histogram<u64>>,
    /// Publish → the kernel's receive stamp at the subscriber's socket (see `stamp.rs`).
    pub socket_latency: Mutex<Histogram<u64>>,
    /// The kernel's receive stamp → this generator reading the message: its own queueing.
    pub read_lag: Mutex<Histogram<u64>>,
    /// CONNECT sent → CONNACK (+ SUBACK) received, per connection.
    pub connect_latency: Mutex<Histogram<u64>>,
    /// TLS: TCP connected → handshake done, per connection.
    pub tls_handshake: Mutex<Histogram<u64>>,
    /// QoS 1: PUBLISH sent → its PUBACK read, per publish in the measurement window.
    pub puback_latency: Mutex<Histogram<u64>>,
    /// TLS: what the first connection's handshake agreed on.
    pub tls_negotiated: Mutex<Option<crate::tls::Negotiated>>,
    /// 0 until set-up is over; then the start of the measurement window (ns, `now_ns`).
    pub window_start_ns: AtomicU64,
    pub window_end_ns: AtomicU64,
    /// Set-up finished: publishers may start.
    pub go: AtomicBool,
    /// Publishers stop.
    pub publish_stop: AtomicBool,
    /// Everyone disconnects.
    pub stop: AtomicBool,
    /// Subscribers per topic index; a publisher adds `topic_subs[t] + wildcard_subs` to
    /// `expected` per message, so failed subscribers are not expected.
    pub topic_subs: Vec<AtomicU64>,
    pub wildcard_subs: AtomicU64,
    /// Set once, before `go`, in a worker process of `--procs`.
    pub remote_subs: OnceLock<RemoteSubs>,
    pub first_conn_ns: AtomicU64,
    pub last_conn_ns: AtomicU64,
    /// Retained scenario: when the last joiner had every value.
    pub retained_last_ns: AtomicU64,
    pub worker_tids: Mutex<Vec<u32>>,
    pub first_errors: Mutex<Vec<String>>,
}

impl Shared {
    pub fn new(topics: usize) -> Self {
        Shared {
            counters: Counters::default(),
            latency: Mutex::new(new_histogram()),
            intended_latency: Mutex::new(new_histogram()),
            socket_latency: Mutex::new(new_histogram()),
            read_lag: Mutex::new(new_histogram()),
            connect_latency: Mutex::new(new_histogram()),
            tls_handshake: Mutex::new(new_histogram()),
            puback_latency: Mutex::new(new_histogram()),
            tls_negotiated: Mutex::new(None),
            window_start_ns: AtomicU64::new(0),
            window_end_ns: AtomicU64::new(u64::MAX),
            go: AtomicBool::new(false),
            publish_stop: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            topic_subs: (0..topics.max(1)).map(|_| AtomicU64::new(0)).collect(),
            wildcard_subs: AtomicU64::new(0),
            remote_subs: OnceLock::new(),
            first_conn_ns: AtomicU64::new(u64::MAX),
            last_conn_ns: AtomicU64::new(0),
            retained_last_ns: AtomicU64::new(0),
            worker_tids: Mutex::new(Vec::new()),
            first_errors: Mutex::new(Vec::new()),
        }
    }

    /// Keeps the first few error messages for the report; the rest are only counted.
    pub fn note_error(&self, e: String) {
        let mut errors = self.first_errors.lock().expect("no panics while held");
        if errors.len() < 5 {
            errors.push(e);
        }
    }

    /// The latency histograms, in a fixed order: how a worker process reports them.
    pub fn histograms(&self) -> [&Mutex<Histogram<u64>>; 7] {
        [
            &self.latency,
            &self.intended_latency,
            &self.socket_latency,
            &self.read_lag,
            &self.connect_latency,
            &self.tls_handshake,
            &self.puback_latency,
        ]
    }

    pub fn in_window(&self, sent_ns: u64) -> bool {
        let start = self.window_start_ns.load(Relaxed);
        start != 0 && sent_ns >= start && sent_ns < self.window_end_ns.load(Relaxed)
    }
}

/// Per-thread accumulators, flushed into `Shared` once per read batch (counts) or once a
/// second (histogram): the hot path touches no shared cache line per message.
pub struct Local {
    pub latency: Histogram<u64>,
    pub intended_latency: Histogram<u64>,
    pub socket_latency: Histogram<u64>,
    pub read_lag: Histogram<u64>,
    pub puback_latency: Histogram<u64>,
    pub delivered: u64,
    pub delivered_all: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub gap_missing: u64,
    pub foreign: u64,
}

impl Local {
    pub fn new() -> Self {
        Local {
            latency: new_histogram(),
            intended_latency: new_histogram(),
            socket_latency: new_histogram(),
            read_lag: new_histogram(),
            puback_latency: new_histogram(),
            delivered: 0,
            delivered_all: 0,
            duplicates: 0,
            out_of_order: 0,
            gap_missing: 0,
            foreign: 0,
        }
    }

    pub fn flush_counts(&mut self, shared: &Shared) {
        let c = &shared.counters;
        for (local, global) in [
            (&mut self.delivered, &c.delivered),
            (&mut self.delivered_all, &c.delivered_all),
            (&mut self.duplicates, &c.duplicates),
            (&mut self.out_of_order, &c.out_of_order),
            (&mut self.gap_missing, &c.gap_missing),
            (&mut self.foreign, &c.foreign),
        ] {
            if *local != 0 {
                global.fetch_add(*local, Relaxed);
                *local = 0;
            }
        }
    }

    pub fn flush_histogram(&mut self, shared: &Shared) {
        for (local, global) in [
            (&mut self.latency, &shared.latency),
            (&mut self.intended_latency, &shared.intended_latency),
            (&mut self.socket_latency, &shared.socket_latency),
            (&mut self.read_lag, &shared.read_lag),
            (&mut self.puback_latency, &shared.puback_latency),
        ] {
            if local.is_empty() {
                continue;
            }
            let mut h = global.lock().expect("no panics while held");
            h.add(&*local).expect("same bounds");
            local.reset();
        }
    }
}

impl Default for Local {
    fn default() -> Self {
        Self::new()
    }
}

/// `/proc` clock ticks per second. USER_HZ is 100 on every Linux architecture we run on.
pub const TICKS_PER_S: f64 = 100.0;

/// utime + stime in clock ticks from a `/proc/.../stat` file.
pub fn cpu_ticks(stat_path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The calling thread's id, from the `/proc/thread-self` link ("PID/task/TID").
pub fn thread_id() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trip() {
        let mut p = [0u8; 30];
        let s = Stamp {
            sent_ns: 123_456_789,
            intended_ns: 123_000_000,
            stream: 7,
            seq: 42,
        };
        stamp(&mut p, s);
        assert_eq!(read_stamp(&p), Some(s));
        assert_eq!(read_stamp(&p[..23]), None);
    }

    #[test]
    fn sequence_events() {
        let mut t = SeqTrack::default();
        assert_eq!(t.observe(1, 0, false), SeqEvent::InOrder);
        assert_eq!(t.observe(1, 1, false), SeqEvent::InOrder);
        assert_eq!(t.observe(1, 4, false), SeqEvent::Gap { missing: 2 });
        assert_eq!(t.observe(1, 4, false), SeqEvent::Duplicate);
        assert_eq!(t.observe(1, 2, false), SeqEvent::OutOfOrder);
        assert_eq!(t.observe(1, 3, true), SeqEvent::Duplicate);
        // Many streams spill into the map and keep their own counters.
        for s in 2..40 {
            assert_eq!(t.observe(s, 10, false), SeqEvent::InOrder);
        }
        for s in 2..40 {
            assert_eq!(t.observe(s, 11, false), SeqEvent::InOrder);
        }
        assert_eq!(t.observe(1, 5, false), SeqEvent::InOrder);
    }

    #[test]
    fn proc_parsing_reads_ourselves() {
        assert!(cpu_ticks("/proc/self/stat").is_some());
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
        assert!(thread_id().is_some());
    }
}
