//! Sampling of CPU and memory, the progress line on stderr, and the JSON summary on stdout.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::codec::Version;
use crate::config::{Config, RingMode, Scenario, Transport};
use crate::stats::{self, Shared, TICKS_PER_S};
use crate::timeline::{Second, Timeline};

/// A worker thread busier than this fraction of the window makes the figures suspect.
const SATURATED_BUSY: f64 = 0.9;
/// A generator whose own read lag (kernel receive stamp → read) is more than this share of the
/// end-to-end p99 is what the end-to-end figure mostly measures, however idle it is on
/// average: bursts (one publish to thousands of subscribers) queue in front of its one thread.
const SATURATED_LAG_SHARE: f64 = 0.25;
/// Read lag below this never counts as saturation: a loop turn of a busy thread.
const SATURATED_LAG_MIN_US: f64 = 1000.0;

#[derive(Clone, Default)]
pub struct Mark {
    at: Option<Instant>,
    broker_ticks: Option<u64>,
    broker_rss: Option<u64>,
    self_ticks: u64,
    thread_ticks: Vec<u64>,
}

pub struct Sampler {
    broker_pid: Option<u32>,
    tids: Vec<u32>,
    /// `--procs`: the worker processes, whose CPU the progress line counts as ours.
    processes: Vec<u32>,
    setup_start: Mark,
    setup_end: Mark,
    window_start: Mark,
    window_end: Mark,
    last: Mark,
    pub broker_rss_max: u64,
}

impl Sampler {
    pub fn new(broker_pid: Option<u32>) -> Self {
        let mut s = Sampler {
            broker_pid,
            tids: Vec::new(),
            processes: Vec::new(),
            setup_start: Mark::default(),
            setup_end: Mark::default(),
            window_start: Mark::default(),
            window_end: Mark::default(),
            last: Mark::default(),
            broker_rss_max: 0,
        };
        s.sample();
        s
    }

    /// Reads `/proc` once: broker CPU and RSS, our process and each worker thread.
    pub fn sample(&mut self) -> Mark {
        let pid = std::process::id();
        let mut m = Mark {
            at: Some(Instant::now()),
            self_ticks: stats::cpu_ticks("/proc/self/stat").unwrap_or(0)
                + self
                    .processes
                    .iter()
                    .filter_map(|p| stats::cpu_ticks(&format!("/proc/{p}/stat")))
                    .sum::<u64>(),
            ..Mark::default()
        };
        if let Some(broker) = self.broker_pid {
            m.broker_ticks = stats::cpu_ticks(&format!("/proc/{broker}/stat"));
            m.broker_rss = stats::rss_bytes(broker);
            self.broker_rss_max = self.broker_rss_max.max(m.broker_rss.unwrap_or(0));
        }
        m.thread_ticks = self
            .tids
            .iter()
            .map(|tid| stats::cpu_ticks(&format!("/proc/{pid}/task/{tid}/stat")).unwrap_or(0))
            .collect();
        self.last = m.clone();
        m
    }

    /// This process's CPU time up to the last sample.
    pub fn cpu_s(&self) -> f64 {
        self.last.self_ticks as f64 / TICKS_PER_S
    }

    pub fn watch_processes(&mut self, pids: Vec<u32>) {
        self.processes = pids;
    }

    pub fn learn_tids(&mut self, shared: &Shared) {
        if self.tids.is_empty() {
            self.tids = shared
                .worker_tids
                .lock()
                .expect("no panics while held")
                .clone();
        }
    }

    pub fn mark_setup_start(&mut self) {
        self.setup_start = self.sample();
    }
    pub fn mark_setup_end(&mut self) {
        self.setup_end = self.sample();
    }
    pub fn mark_window_start(&mut self) {
        self.window_start = self.sample();
    }
    pub fn mark_window_end(&mut self) {
        self.window_end = self.sample();
    }
}

fn seconds(a: &Mark, b: &Mark) -> f64 {
    match (a.at, b.at) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    }
}

fn broker_cpu_s(a: &Mark, b: &Mark) -> Option<f64> {
    Some(b.broker_ticks?.saturating_sub(a.broker_ticks?) as f64 / TICKS_PER_S)
}

/// The busiest worker thread's CPU time over `a..b` as a fraction of wall time.
fn busiest(a: &Mark, b: &Mark) -> f64 {
    let wall = seconds(a, b);
    if wall <= 0.0 {
        return 0.0;
    }
    a.thread_ticks
        .iter()
        .zip(&b.thread_ticks)
        .map(|(a, b)| b.saturating_sub(*a) as f64 / TICKS_PER_S / wall)
        .fold(0.0, f64::max)
}

pub struct Progress {
    /// The samples of `--report` (taken whether or not it is given: a few KiB a minute).
    pub timeline: Timeline,
    started: Instant,
    next_print: Instant,
    last_delivered: u64,
    last: Option<Mark>,
}

impl Progress {
    pub fn new(started: Instant) -> Self {
        let mut timeline = Timeline::default();
        timeline.setup(0.0, 0, 0, true);
        Progress {
            timeline,
            started,
            next_print: started + Duration::from_secs(1),
            last_delivered: 0,
            last: None,
        }
    }

    /// Sleeps until the next whole second, then prints one progress line.
    pub fn tick(&mut self, shared: &Shared, sampler: &mut Sampler, phase: &str) {
        let wait = self.next_print.saturating_duration_since(Instant::now());
        self.tick_for(shared, sampler, phase, wait.max(Duration::from_millis(1)));
    }

    /// Sleeps `wait`; prints a line if a second has passed since the last one.
    pub fn tick_for(
        &mut self,
        shared: &Shared,
        sampler: &mut Sampler,
        phase: &str,
        wait: Duration,
    ) {
        std::thread::sleep(wait);
        let c = &shared.counters;
        let t_s = self.started.elapsed().as_secs_f64();
        if phase == "setup" {
            let (open, done) = (c.conn_ok.load(Relaxed), c.setup_done.load(Relaxed));
            self.timeline.setup(t_s, open, done, false);
        }
        if Instant::now() < self.next_print {
            return;
        }
        self.next_print += Duration::from_secs(1);
        sampler.learn_tids(shared);
        let now = sampler.sample();
        let delivered = c.delivered_all.load(Relaxed);
        let per_s = delivered - self.last_delivered;
        self.last_delivered = delivered;
        let mut second = Second {
            t_s,
            delivered: per_s,
            p50_us: None,
            p99_us: None,
            broker_cpu_pct: None,
            broker_rss_mib: now.broker_rss.map(|b| b as f64 / f64::from(1 << 20)),
        };
        let p99_us = {
            let h = shared.latency.lock().expect("no panics while held");
            if let Some(last) = &self.last {
                second.broker_cpu_pct =
                    broker_cpu_s(last, &now).map(|cpu| cpu / seconds(last, &now).max(1e-3) * 100.0);
            }
            self.timeline.second(second, &h);
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(0.99) as f64 / 1000.0
            }
        };
        let mut line = format!(
            "[{:6.1}s] {phase:8} conns {}/{} fail {} | deliveries/s {per_s} | p99 {p99_us:.0} us | gaps {} dup {}",
            self.started.elapsed().as_secs_f64(),
            c.conn_ok.load(Relaxed),
            c.setup_done.load(Relaxed),
            c.conn_failed.iter().map(|f| f.load(Relaxed)).sum::<u64>() + c.dropped.load(Relaxed),
            c.gap_missing.load(Relaxed),
            c.duplicates.load(Relaxed),
        );
        if let Some(last) = &self.last {
            let wall = seconds(last, &now).max(1e-3);
            if let Some(cpu) = broker_cpu_s(last, &now) {
                line += &format!(" | broker cpu {:.0}%", cpu / wall * 100.0);
            }
            if let Some(rss) = now.broker_rss {
                line += &format!(" rss {} MiB", rss >> 20);
            }
            let own = now.self_ticks.saturating_sub(last.self_ticks) as f64 / TICKS_PER_S / wall;
            line += &format!(" | loadgen cpu {:.0}%", own * 100.0);
        }
        eprintln!("{line}");
        self.last = Some(now);
    }
}

#[derive(Serialize)]
pub struct Summary {
    pub scenario: Scenario,
    pub params: Params,
    pub published: u64,
    pub delivered: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Sequence numbers skipped, summed over subscribers (lost or arriving late).
    pub gaps: u64,
    pub msgs_per_s: f64,
    /// Publish → application read in this generator: what a user of a client on this
    /// machine would see.
    pub latency_us: Latency,
    /// The distribution behind `latency_us`: (percentile, µs) from the median to the maximum,
    /// for `fanfare-loadtest compare`'s plot. Empty when nothing was delivered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_percentiles_us: Vec<(f64, f64)>,
    /// Fixed rate only: the time each message was *due* by the schedule → application read.
    /// A broker stall that holds the publisher back delays the messages it could not send;
    /// `latency_us` starts their clock only when they are sent and so hides the stall
    /// (coordinated omission), this does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intended_latency_us: Option<Latency>,
    /// Publish → the kernel's receive stamp at the subscriber's socket: what the broker and
    /// the network took, without this generator's read lag. Absent with --no-socket-stamps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_latency_us: Option<Latency>,
    /// QoS 1: PUBLISH sent → its PUBACK read by the publisher, for publishes sent in the
    /// window: what a broker that acknowledges only durable messages makes its publishers
    /// wait. Absent at QoS 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub puback_latency_us: Option<Latency>,
    pub connections: Connections,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retained: Option<Retained>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<Broker>,
    pub loadgen: Loadgen,
    pub errors: Vec<String>,
    /// Why the run failed (exit status 1); empty when it passed. See [`failed_checks`].
    pub failed_checks: Vec<String>,
}

#[derive(Serialize)]
pub struct Params {
    /// The first `--url`.
    pub url: String,
    /// Every `--url`, over which connections are spread round-robin.
    pub urls: Vec<String>,
    /// `--pub-url`: where connections that only publish went.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pub_urls: Vec<String>,
    /// `tcp`, `mqtts`, `ws` or `wss`.
    pub transport: Transport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsParams>,
    pub mqtt: &'static str,
    pub workers: usize,
    pub procs: usize,
    pub ring: RingMode,
    pub sources: Vec<String>,
    pub subscribers: usize,
    pub publishers: usize,
    pub topics: usize,
    pub wildcard_fraction: f64,
    pub pairs: usize,
    pub payload: usize,
    pub qos: u8,
    pub rate: Option<f64>,
    pub closed_loop: Option<u64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub drain_s: f64,
    pub max_loss_pct: f64,
    /// `--retain`: publishes carried RETAIN.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retain: bool,
}

#[derive(Serialize)]
pub struct TlsParams {
    /// `ca FILE`, `system` or `insecure`.
    pub verify: String,
    /// The name sent as SNI and checked in the certificate; an IP address sends no SNI.
    pub server_name: String,
    pub alpn: &'static str,
    /// `--tls-resume`: connections resume earlier sessions.
    pub resume: bool,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub samples: u64,
}

#[derive(Serialize)]
pub struct Connections {
    pub planned: usize,
    pub ok: u64,
    pub failed: Failures,
    /// Connections that ended before the run did.
    pub dropped: u64,
    pub setup_s: f64,
    /// Successful connections divided by the time from the first attempt to the last success.
    pub connects_per_s: f64,
    pub connect_latency_us: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConnections>,
}

#[derive(Serialize)]
pub struct TlsConnections {
    /// What the first connection's handshake agreed on (protocol, cipher suite, ALPN).
    #[serde(flatten)]
    pub negotiated: Option<crate::tls::Negotiated>,
    /// TCP connected → handshake done, per connection (included in `connect_latency_us`).
    pub handshake_us: Latency,
    /// Handshakes that resumed an earlier session; the rest were full handshakes.
    pub resumed: u64,
}

#[derive(Serialize)]
pub struct Failures {
    pub connect: u64,
    pub timeout: u64,
    pub upgrade: u64,
    pub refused: u64,
    pub closed: u64,
    pub tls: u64,
}

impl Failures {
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.upgrade + self.refused + self.closed + self.tls
    }
}

#[derive(Serialize)]
pub struct Retained {
    pub joiners_complete: u64,
    /// From the values being stored to the last joiner having all of them.
    pub time_to_all_ms: f64,
}

#[derive(Serialize)]
pub struct Broker {
    pub pid: u32,
    pub cpu_s: f64,
    pub cpu_s_per_million: Option<f64>,
    pub rss_bytes_start: u64,
    pub rss_bytes_end: u64,
    pub rss_bytes_max: u64,
    /// `conn`: RSS growth over set-up divided by the connections opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes_per_conn: Option<f64>,
}

#[derive(Serialize)]
pub struct Loadgen {
    pub cpu_s: f64,
    pub busiest_thread_busy: f64,
    /// Kernel receive stamp → read by this generator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_lag_us: Option<Latency>,
    pub saturated: bool,
    /// Why `saturated` is set; with `--procs`, which processes were saturated and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saturation: Option<String>,
    /// The cores this process could run on (`sched_getaffinity`, as `taskset` set them).
    pub cores: Vec<usize>,
    /// `--procs`: each worker process (the figures above include them all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<crate::wire::ProcessReport>,
}

/// Whether, and why, the figures measure this generator more than the broker.
fn saturation(busy: f64, end_to_end: &Latency, read_lag: Option<&Latency>) -> Option<String> {
    if busy > SATURATED_BUSY {
        return Some(format!(
            "a worker thread was {:.0}% busy: figures measure fanfare-loadtest, not only the \
             broker; add --workers or processes",
            busy * 100.0
        ));
    }
    let lag = read_lag?;
    (lag.p99 > SATURATED_LAG_MIN_US && lag.p99 > SATURATED_LAG_SHARE * end_to_end.p99).then(|| {
        format!(
            "its own read lag reached {:.1} ms at p99 of {:.1} ms end to end: bursts queue in \
             front of its threads; socket_latency_us is the broker's share",
            lag.p99 / 1000.0,
            end_to_end.p99 / 1000.0
        )
    })
}

fn latency(h: &Histogram<u64>) -> Latency {
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    if h.is_empty() {
        return Latency {
            p50: 0.0,
            p99: 0.0,
            p999: 0.0,
            max: 0.0,
            samples: 0,
        };
    }
    Latency {
        p50: us(h.value_at_quantile(0.5)),
        p99: us(h.value_at_quantile(0.99)),
        p999: us(h.value_at_quantile(0.999)),
        max: us(h.max()),
        samples: h.len(),
    }
}

fn stamped(h: &std::sync::Mutex<Histogram<u64>>) -> Option<Latency> {
    let h = h.lock().expect("no panics while held");
    (!h.is_empty()).then(|| latency(&h))
}

/// How hard this process worked over the measured span, and whether it was the bottleneck.
pub struct ProcessLoad {
    /// The busiest worker thread's share of wall time, rounded to 0.001.
    pub busy: f64,
    pub read_lag: Option<Latency>,
    pub saturation: Option<String>,
}

/// This process's load: over set-up for `conn` (the work is connecting), else the window.
pub fn process_load(cfg: &Config, shared: &Shared, sampler: &Sampler) -> ProcessLoad {
    let (a, b) = if cfg.scenario == Scenario::Conn {
        (&sampler.setup_start, &sampler.setup_end)
    } else {
        (&sampler.window_start, &sampler.window_end)
    };
    let busy = busiest(a, b);
    let end_to_end = latency(&shared.latency.lock().expect("no panics while held"));
    let read_lag = stamped(&shared.read_lag);
    ProcessLoad {
        busy: (busy * 1000.0).round() / 1000.0,
        saturation: saturation(busy, &end_to_end, read_lag.as_ref()),
        read_lag,
    }
}

/// The parent of `--procs`: the load is the worker processes'; the generator was saturated
/// when any of them was.
pub fn add_processes(summary: &mut Summary, processes: Vec<crate::wire::ProcessReport>) {
    let l = &mut summary.loadgen;
    l.cpu_s += processes.iter().map(|p| p.cpu_s).sum::<f64>();
    l.busiest_thread_busy = processes
        .iter()
        .map(|p| p.busiest_thread_busy)
        .fold(l.busiest_thread_busy, f64::max);
    let why: Vec<String> = processes
        .iter()
        .filter_map(|p| Some(format!("process {}: {}", p.index, p.saturation.as_ref()?)))
        .collect();
    l.saturated = !why.is_empty();
    l.saturation = l.saturated.then(|| why.join("; "));
    l.processes = processes;
}

pub fn summarize(
    cfg: &Config,
    shared: &Shared,
    sampler: &Sampler,
    setup_s: f64,
    window_s: f64,
    planned: usize,
) -> Summary {
    let c = &shared.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    let delivered = load(&c.delivered);
    let duplicates = load(&c.duplicates);
    let expected = match cfg.scenario {
        Scenario::Retained => load(&shared.wildcard_subs) * cfg.topics as u64,
        _ => load(&c.expected),
    };
    let lost = expected.saturating_sub(delivered.saturating_sub(duplicates));
    let first = load(&shared.first_conn_ns);
    let last = load(&shared.last_conn_ns);
    let ok = load(&c.conn_ok);
    let connects_per_s = if ok > 0 && last > first {
        ok as f64 / ((last - first) as f64 / 1e9)
    } else {
        0.0
    };
    let retained = (cfg.scenario == Scenario::Retained).then(|| {
        let go = load(&shared.window_start_ns);
        let done = load(&shared.retained_last_ns);
        Retained {
            joiners_complete: load(&c.retained_complete),
            time_to_all_ms: if done > go {
                (done - go) as f64 / 1e6
            } else {
                0.0
            },
        }
    });
    let msgs_per_s = match &retained {
        Some(r) if r.time_to_all_ms > 0.0 => delivered as f64 / (r.time_to_all_ms / 1e3),
        _ if window_s > 0.0 => delivered as f64 / window_s,
        _ => 0.0,
    };
    let broker = cfg.broker_pid.map(|pid| {
        let cpu_s = broker_cpu_s(&sampler.window_start, &sampler.window_end).unwrap_or(0.0);
        let rss_per_conn = (cfg.scenario == Scenario::Conn && ok > 0).then(|| {
            let before = sampler.setup_start.broker_rss.unwrap_or(0) as f64;
            let after = sampler.setup_end.broker_rss.unwrap_or(0) as f64;
            (after - before) / ok as f64
        });
        Broker {
            pid,
            cpu_s: if cfg.scenario == Scenario::Conn {
                broker_cpu_s(&sampler.setup_start, &sampler.window_end).unwrap_or(0.0)
            } else {
                cpu_s
            },
            cpu_s_per_million: (delivered > 0).then(|| cpu_s / (delivered as f64 / 1e6)),
            rss_bytes_start: sampler.setup_start.broker_rss.unwrap_or(0),
            rss_bytes_end: sampler
                .window_end
                .broker_rss
                .or(sampler.last.broker_rss)
                .unwrap_or(0),
            rss_bytes_max: sampler.broker_rss_max,
            rss_bytes_per_conn: rss_per_conn,
        }
    });
    let failed = |k: usize| load(&c.conn_failed[k]);
    let end_to_end = latency(&shared.latency.lock().expect("no panics while held"));
    let socket_latency = stamped(&shared.socket_latency);
    let fixed_rate =
        cfg.closed_loop.is_none() && !matches!(cfg.scenario, Scenario::Conn | Scenario::Retained);
    let intended_latency = fixed_rate.then(|| {
        latency(
            &shared
                .intended_latency
                .lock()
                .expect("no panics while held"),
        )
    });
    let load_of_us = process_load(cfg, shared, sampler);
    Summary {
        scenario: cfg.scenario,
        params: Params {
            url: cfg.target.endpoints[0].url.clone(),
            urls: cfg.target.endpoints.iter().map(|e| e.url.clone()).collect(),
            pub_urls: cfg
                .target
                .pub_endpoints
                .iter()
                .map(|e| e.url.clone())
                .collect(),
            transport: cfg.transport,
            tls: cfg.target.endpoints[0].tls.as_ref().map(|t| TlsParams {
                verify: t.verify.describe(),
                server_name: t.server_name.to_str().into_owned(),
                alpn: t.alpn,
                resume: t.resume,
            }),
            mqtt: match cfg.target.version {
                Version::V311 => "3.1.1",
                Version::V5 => "5",
            },
            workers: cfg.workers,
            procs: cfg.procs,
            ring: cfg.ring_mode,
            sources: cfg.target.sources.iter().map(ToString::to_string).collect(),
            subscribers: cfg.subscribers,
            publishers: cfg.publishers,
            topics: cfg.topics,
            wildcard_fraction: cfg.wildcard_fraction,
            pairs: cfg.pairs,
            payload: cfg.payload_bytes,
            qos: cfg.qos,
            rate: cfg.closed_loop.is_none().then_some(cfg.rate),
            closed_loop: cfg.closed_loop,
            duration_s: cfg.duration_s,
            warmup_s: cfg.warmup_s,
            drain_s: cfg.drain_s,
            max_loss_pct: cfg.max_loss_pct,
            retain: cfg.retain,
        },
        published: load(&c.published),
        delivered,
        expected,
        lost,
        duplicates,
        out_of_order: load(&c.out_of_order),
        gaps: load(&c.gap_missing),
        msgs_per_s: msgs_per_s.round(),
        latency_us: end_to_end,
        latency_percentiles_us: crate::timeline::percentiles(
            &shared.latency.lock().expect("no panics while held"),
        ),
        intended_latency_us: intended_latency,
        socket_latency_us: socket_latency,
        puback_latency_us: stamped(&shared.puback_latency),
        connections: Connections {
            planned,
            ok,
            failed: Failures {
                connect: failed(0),
                timeout: failed(1),
                upgrade: failed(2),
                refused: failed(3),
                closed: failed(4),
                tls: failed(5),
            },
            dropped: load(&c.dropped),
            setup_s,
            connects_per_s: connects_per_s.round(),
            connect_latency_us: latency(
                &shared.connect_latency.lock().expect("no panics while held"),
            ),
            tls: cfg.transport.tls().then(|| TlsConnections {
                negotiated: shared
                    .tls_negotiated
                    .lock()
                    .expect("no panics while held")
                    .clone(),
                handshake_us: latency(&shared.tls_handshake.lock().expect("no panics while held")),
                resumed: load(&c.tls_resumed),
            }),
        },
        retained,
        broker,
        loadgen: Loadgen {
            cpu_s: sampler.last.self_ticks as f64 / TICKS_PER_S,
            busiest_thread_busy: load_of_us.busy,
            read_lag_us: load_of_us.read_lag,
            saturated: load_of_us.saturation.is_some(),
            saturation: load_of_us.saturation,
            cores: crate::wire::affinity(),
            processes: Vec::new(),
        },
        errors: shared
            .first_errors
            .lock()
            .expect("no panics while held")
            .clone(),
        failed_checks: Vec::new(),
    }
}

/// What makes a run fail, for scripts: a connection that failed or dropped (the load was not
/// what was asked for), or more deliveries lost than `max_loss_pct` percent of those expected.
pub fn failed_checks(s: &Summary, max_loss_pct: f64) -> Vec<String> {
    let mut failed = Vec::new();
    let c = &s.connections;
    if c.failed.total() > 0 {
        failed.push(format!(
            "{} of {} connections failed",
            c.failed.total(),
            c.planned
        ));
    }
    if c.dropped > 0 {
        failed.push(format!("{} connections dropped during the run", c.dropped));
    }
    if s.expected > 0 {
        let loss_pct = s.lost as f64 * 100.0 / s.expected as f64;
        if loss_pct > max_loss_pct {
            failed.push(format!(
                "{} of {} expected deliveries lost ({loss_pct:.3} % > --max-loss {max_loss_pct} %)",
                s.lost, s.expected
            ));
        }
    }
    failed
}

/// The summary's figures for a reader, on standard error: the JSON on standard output stays
/// one document for scripts.
pub fn text(s: &Summary) -> String {
    let line = |label: &str, l: &Latency| {
        format!(
            "  {label:<34} p50 {:>10.1}  p99 {:>10.1}  p99.9 {:>10.1}  max {:>10.1}  ({} samples)\n",
            l.p50, l.p99, l.p999, l.max, l.samples
        )
    };
    let mut out = format!(
        "{:?}: published {}, delivered {} of {} expected, lost {}, {} msgs/s\n\
         connections: {} of {} ok, {} failed, {} dropped\n\
         latency (us):\n",
        s.scenario,
        s.published,
        s.delivered,
        s.expected,
        s.lost,
        s.msgs_per_s,
        s.connections.ok,
        s.connections.planned,
        s.connections.failed.total(),
        s.connections.dropped,
    );
    out += &line("from actual send", &s.latency_us);
    if let Some(l) = &s.intended_latency_us {
        out += &line("from intended send (fixed rate)", l);
    }
    if let Some(l) = &s.socket_latency_us {
        out += &line("actual send to socket", l);
    }
    if let Some(l) = &s.puback_latency_us {
        out += &line("publish to its PUBACK", l);
    }
    for p in &s.loadgen.processes {
        out += &format!(
            "process {} (pid {}, cores {}): {} connections, cpu {:.1} s, busiest thread {:.0}% busy{}\n",
            p.index,
            p.pid,
            crate::wire::cpu_list(&p.cores),
            p.connections,
            p.cpu_s,
            p.busiest_thread_busy * 100.0,
            match &p.saturation {
                Some(why) => format!(", the bottleneck: {why}"),
                None => String::new(),
            },
        );
    }
    out
}
