//! One worker process of `--procs`, started by its parent (`fleet.rs`) with the same command
//! line plus `--proc-index I`. It takes its share of the run (connections I, I+N, ...; its
//! share of the cores and source addresses), runs its worker threads as a single process
//! would, obeys the parent's commands on standard input and reports on standard output
//! (`wire.rs`); it prints no progress line and no summary of its own.

use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::report::{self, Sampler};
use crate::run;
use crate::stats::{self, RemoteSubs, Shared};
use crate::wire::{self, Command, ProcessReport, Report};

/// How often the parent hears the counters: its progress line and phase changes wait on them.
const REPORT_EVERY: Duration = Duration::from_millis(100);
/// How often the phases are checked, for the CPU samples that measure this process's load.
const MARK_EVERY: Duration = Duration::from_millis(5);
/// How often reports carry the histograms too (they are larger): the progress line's p99.
const HISTOGRAMS_EVERY: Duration = Duration::from_secs(1);
/// How long the worker threads get to close their connections once told to stop.
const JOIN_GRACE: Duration = Duration::from_secs(5);

/// The items of process `index` of `procs`: every `procs`-th from `index`, or all of them
/// when there are fewer than `procs` to share.
pub fn share<T: Copy>(items: &[T], procs: usize, index: usize) -> Vec<T> {
    if items.len() < procs {
        return items.to_vec();
    }
    items.iter().copied().skip(index).step_by(procs).collect()
}

/// Source address of process `index` when none were given: its own 127.0.0.x, so each
/// process has its own range of ephemeral ports (about 28,000 per address) towards IPv4
/// loopback brokers. Elsewhere (any broker not on IPv4 loopback) the kernel chooses.
fn own_loopback(brokers: &[SocketAddr], index: usize) -> Vec<IpAddr> {
    let v4_loopback = |a: &SocketAddr| matches!(a.ip(), IpAddr::V4(ip) if ip.is_loopback());
    match u8::try_from(index + 1) {
        Ok(last) if brokers.iter().all(v4_loopback) => {
            vec![Ipv4Addr::new(127, 0, 0, last).into()]
        }
        _ => Vec::new(),
    }
}

/// Narrows the configuration to process `index`'s share; rates and bounds are divided so
/// the processes together keep to the command line's.
fn take_share(cfg: &mut Config, index: usize) {
    let n = cfg.procs;
    cfg.pin_cores = share(&cfg.pin_cores, n, index);
    cfg.target.sources = if cfg.target.sources.is_empty() {
        let brokers: Vec<SocketAddr> = cfg.target.all_endpoints().map(|e| e.addr).collect();
        own_loopback(&brokers, index)
    } else {
        share(&cfg.target.sources, n, index)
    };
    cfg.conn_rate /= n as f64;
    cfg.connect_concurrency = (cfg.connect_concurrency / n).max(1);
}

/// Runs this process's share of the run until the parent says stop (or goes away).
pub fn run(mut cfg: Config) -> anyhow::Result<()> {
    let index = cfg.proc_index.expect("member::run is for worker processes");
    take_share(&mut cfg, index);
    if !cfg.pin_cores.is_empty()
        && let Err(e) = wire::set_affinity(&cfg.pin_cores)
    {
        eprintln!("warning: process {index}: could not restrict to its cores: {e}");
    }
    let cfg = Arc::new(cfg);
    let shared = Arc::new(Shared::new(cfg.topic_slots()));
    let specs: Vec<_> = cfg
        .plan()
        .into_iter()
        .filter(|s| s.index % cfg.procs == index)
        .collect();
    let planned = specs.len();
    let mut sampler = Sampler::new(None);
    sampler.mark_setup_start();
    let handles = run::start_workers(&cfg, &shared, specs);
    sampler.learn_tids(&shared);
    obey_parent(shared.clone());
    let mut reporter = Reporter::new(cfg.topic_slots());
    follow(&shared, &mut sampler, &mut reporter, planned);
    run::join_workers(handles, Instant::now() + JOIN_GRACE);
    sampler.sample();
    let load = report::process_load(&cfg, &shared, &sampler);
    let done = ProcessReport {
        index,
        pid: std::process::id(),
        cores: wire::affinity(),
        sources: cfg.target.sources.iter().map(ToString::to_string).collect(),
        connections: planned,
        published: shared.counters.published.load(Relaxed),
        delivered: shared.counters.delivered.load(Relaxed),
        cpu_s: sampler.cpu_s(),
        busiest_thread_busy: load.busy,
        read_lag_us: load.read_lag,
        saturated: load.saturation.is_some(),
        saturation: load.saturation,
    };
    reporter.send(&shared, true, Some(done))?;
    Ok(())
}

/// Reports every `REPORT_EVERY` until stopped, marking the sampler as the phases pass: set-up
/// ends when this process's connections are all open or failed; the window is the parent's,
/// marked on the clock (the workers may be gone by the time the parent's `Stop` arrives).
fn follow(shared: &Shared, sampler: &mut Sampler, reporter: &mut Reporter, planned: usize) {
    let (mut setup_over, mut window_started, mut window_over) = (false, false, false);
    let mut next_report = Instant::now() + REPORT_EVERY;
    let mut next_histograms = Instant::now() + HISTOGRAMS_EVERY;
    while !shared.stop.load(Relaxed) {
        std::thread::sleep(MARK_EVERY);
        if !setup_over && shared.counters.setup_done.load(Relaxed) as usize >= planned {
            sampler.mark_setup_end();
            setup_over = true;
        }
        let (start, end) = (
            shared.window_start_ns.load(Relaxed),
            shared.window_end_ns.load(Relaxed),
        );
        if !window_started && start != 0 && stats::now_ns() >= start {
            sampler.mark_window_start();
            window_started = true;
        }
        if window_started && !window_over && stats::now_ns() >= end {
            sampler.mark_window_end();
            window_over = true;
        }
        if Instant::now() < next_report {
            continue;
        }
        next_report += REPORT_EVERY;
        let histograms = Instant::now() >= next_histograms;
        if histograms {
            next_histograms += HISTOGRAMS_EVERY;
        }
        if reporter.send(shared, histograms, None).is_err() {
            // The parent is gone: nobody reads the results.
            shared.stop.store(true, Relaxed);
        }
    }
    if !setup_over {
        sampler.mark_setup_end();
    }
    if !window_started {
        sampler.mark_window_start();
    }
    if !window_over {
        sampler.mark_window_end();
    }
}

/// Applies the parent's commands from standard input; its end (the parent died) stops the run.
fn obey_parent(shared: Arc<Shared>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Command>(&line) {
                Ok(Command::Go {
                    window_start_ns,
                    window_end_ns,
                    remote_topics,
                    remote_wildcard,
                }) => {
                    let mut topics = vec![0; shared.topic_subs.len()];
                    for (t, subs) in remote_topics {
                        if let Some(slot) = topics.get_mut(t) {
                            *slot = subs;
                        }
                    }
                    let remote = RemoteSubs {
                        topics,
                        wildcard: remote_wildcard,
                    };
                    let _ = shared.remote_subs.set(remote);
                    shared.window_end_ns.store(window_end_ns, Relaxed);
                    shared.window_start_ns.store(window_start_ns, Relaxed);
                    shared.go.store(true, Relaxed);
                }
                Ok(Command::PublishStop) => shared.publish_stop.store(true, Relaxed),
                Ok(Command::Stop) => break,
                Err(e) => shared.note_error(format!("bad command from the parent: {e}")),
            }
        }
        shared.publish_stop.store(true, Relaxed);
        shared.stop.store(true, Relaxed);
    });
}

/// Writes [`Report`]s, sending subscriber counts and errors only when they changed.
struct Reporter {
    sent_subs: Vec<u64>,
    errors_sent: usize,
}

impl Reporter {
    fn new(topics: usize) -> Self {
        Reporter {
            sent_subs: vec![0; topics.max(1)],
            errors_sent: 0,
        }
    }

    fn send(
        &mut self,
        shared: &Shared,
        histograms: bool,
        done: Option<ProcessReport>,
    ) -> std::io::Result<()> {
        let mut subs_changed = Vec::new();
        for (t, (count, sent)) in shared
            .topic_subs
            .iter()
            .zip(&mut self.sent_subs)
            .enumerate()
        {
            let count = count.load(Relaxed);
            if count != *sent {
                subs_changed.push((t, count));
                *sent = count;
            }
        }
        let errors: Vec<String> = {
            let all = shared.first_errors.lock().expect("no panics while held");
            let new = all[self.errors_sent.min(all.len())..].to_vec();
            self.errors_sent = all.len();
            new
        };
        let report = Report {
            counters: shared
                .counters
                .all()
                .iter()
                .map(|c| c.load(Relaxed))
                .collect(),
            subs_changed,
            wildcard_subs: shared.wildcard_subs.load(Relaxed),
            first_conn_ns: shared.first_conn_ns.load(Relaxed),
            last_conn_ns: shared.last_conn_ns.load(Relaxed),
            histograms: if histograms {
                let all = shared.histograms();
                all.iter()
                    .map(|h| wire::encode_histogram(&h.lock().expect("no panics while held")))
                    .collect()
            } else {
                Vec::new()
            },
            tls_negotiated: shared
                .tls_negotiated
                .lock()
                .expect("no panics while held")
                .clone(),
            errors,
            done,
        };
        let mut line = serde_json::to_vec(&report).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        out.write_all(&line)?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_disjoint_and_cover_everything() {
        let items: Vec<u32> = (0..10).collect();
        let parts: Vec<Vec<u32>> = (0..3).map(|i| share(&items, 3, i)).collect();
        assert_eq!(parts[0], [0, 3, 6, 9]);
        assert_eq!(parts[1], [1, 4, 7]);
        assert_eq!(parts[2], [2, 5, 8]);
        // Fewer items than processes: they share all of them.
        assert_eq!(share(&[5u32, 6], 3, 2), [5, 6]);
    }

    fn parse(line: &str) -> anyhow::Result<Config> {
        crate::config::parse(line.split_whitespace().map(Into::into))
    }

    #[test]
    fn procs_hold_more_connections_than_one_process_may() {
        let big = "conn --subscribers 99000 --no-pin";
        assert!(parse(big).is_err());
        assert!(parse(&format!("{big} --procs 5")).is_ok());
        assert!(parse(&format!("{big} --procs 4")).is_err());
        assert!(parse("fanout --procs 2 --closed-loop 10").is_err());
        assert!(parse("retained --procs 2").is_err());
        assert!(parse("fanout --procs 2 --proc-index 2").is_err());
    }

    #[test]
    fn each_process_takes_its_share() {
        let line = "fanout --subscribers 10 --publishers 2 --procs 3 --source \
                    127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5 --conn-rate 300 --workers 1";
        let whole = parse(line).expect("parses").plan().len();
        let mut seen = Vec::new();
        for i in 0..3 {
            let mut cfg = parse(&format!("{line} --proc-index {i}")).expect("parses");
            take_share(&mut cfg, i);
            assert_eq!(cfg.conn_rate, 100.0);
            let sources = cfg.target.sources.iter().map(ToString::to_string);
            let want: &[&str] = match i {
                0 => &["127.0.0.2", "127.0.0.5"],
                1 => &["127.0.0.3"],
                _ => &["127.0.0.4"],
            };
            assert_eq!(sources.collect::<Vec<_>>(), want);
            let plan = cfg.plan().into_iter().filter(|s| s.index % 3 == i);
            seen.extend(plan.map(|s| s.index));
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..whole).collect::<Vec<_>>());
    }

    #[test]
    fn each_process_has_its_own_loopback_source() {
        let v4: SocketAddr = "127.0.0.1:1883".parse().expect("address");
        assert_eq!(own_loopback(&[v4], 0), [IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(own_loopback(&[v4, v4], 3), [IpAddr::from([127, 0, 0, 4])]);
        let v6: SocketAddr = "[::1]:1883".parse().expect("address");
        assert!(own_loopback(&[v6], 1).is_empty());
        assert!(own_loopback(&[v4, v6], 1).is_empty());
    }
}
