//! `fanfare-loadtest`: a load generator for any MQTT broker (3.1.1 and 5, TCP and WebSocket).
//!
//! Map: `config` turns the command line into a plan of connections; `run` starts one pinned
//! monoio runtime per worker thread, which opens its share of them (`conn`: source binding,
//! the broker of each from `target`,
//! TLS via `tls`, WebSocket upgrade via `ws`, MQTT via `codec`) and runs subscriber, publisher and keep-alive
//! tasks, each worker's state and connection set-up being in `ctx`; `retained` is the
//! late-joiner scenario; `stats` holds the shared counters, latency
//! histograms and `/proc` sampling; `file_limit` the open files a process may hold. With `--procs`, `fleet` starts worker processes (`member`)
//! in place of the threads and folds their reports (`wire`) into the same counters. This file
//! is the conductor: phases, progress line, report; `timeline` keeps the per-second samples
//! that `--report` draws (`html`, with the charts of `svg`).

mod alias;
mod codec;
mod compare;
mod config;
mod conn;
mod cores;
mod ctx;
mod direct;
mod file_limit;
mod fleet;
mod html;
mod member;
mod report;
mod retained;
mod run;
mod stamp;
mod stats;
mod svg;
mod target;
mod timeline;
mod tls;
mod url;
mod wire;
mod ws;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use config::Scenario;
use stats::Shared;

/// Exit status of a run that ended but failed a check (`report::failed_checks`); 2 is for a
/// run that could not start or finish.
const EXIT_CHECK_FAILED: i32 = 1;

fn main() {
    match real_main() {
        Ok(true) => {}
        Ok(false) => std::process::exit(EXIT_CHECK_FAILED),
        Err(e) => {
            eprintln!("fanfare-loadtest: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Who opens the connections: this process's threads, or worker processes (`--procs`).
enum Engine {
    Threads(Vec<std::thread::JoinHandle<()>>),
    Procs(fleet::Fleet),
}

/// How long the workers get to close their connections and report after `stop`.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Engine {
    fn start(cfg: &Arc<config::Config>, shared: &Arc<Shared>) -> anyhow::Result<Engine> {
        Ok(if cfg.procs > 1 {
            Engine::Procs(fleet::Fleet::spawn(cfg, shared.clone())?)
        } else {
            Engine::Threads(run::start_workers(cfg, shared, cfg.plan()))
        })
    }

    /// Opens the measurement window `[start_ns, end_ns)`: publishers start.
    fn go(&mut self, shared: &Shared, start_ns: u64, end_ns: u64) {
        shared.window_end_ns.store(end_ns, Relaxed);
        shared.window_start_ns.store(start_ns, Relaxed);
        shared.go.store(true, Relaxed);
        if let Engine::Procs(fleet) = self {
            fleet.go(start_ns, end_ns);
        }
    }

    fn publish_stop(&mut self, shared: &Shared) {
        shared.publish_stop.store(true, Relaxed);
        if let Engine::Procs(fleet) = self {
            fleet.publish_stop();
        }
    }

    /// Everyone disconnects; the worker processes' own reports, if there are any.
    fn stop(self, shared: &Shared) -> Vec<wire::ProcessReport> {
        shared.stop.store(true, Relaxed);
        let deadline = Instant::now() + STOP_GRACE;
        match self {
            Engine::Threads(handles) => {
                run::join_workers(handles, deadline);
                Vec::new()
            }
            Engine::Procs(fleet) => fleet.finish(deadline),
        }
    }
}

/// Runs the scenario and prints the report; `Ok(false)` when the run failed a check.
fn real_main() -> anyhow::Result<bool> {
    let mut args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "compare") {
        compare::run(args.split_off(1))?;
        return Ok(true);
    }
    file_limit::raise();
    let cfg = config::parse(args)?;
    if cfg.proc_index.is_some() {
        member::run(cfg)?;
        return Ok(true);
    }
    let cfg = Arc::new(cfg);
    let total = cfg.plan().len();
    let shared = Arc::new(Shared::new(cfg.topic_slots()));
    let mut sampler = report::Sampler::new(cfg.broker_pid);
    let started = Instant::now();
    let mut engine = Engine::start(&cfg, &shared)?;
    match &engine {
        Engine::Threads(_) => sampler.learn_tids(&shared),
        Engine::Procs(fleet) => sampler.watch_processes(fleet.pids()),
    }
    let c = &shared.counters;
    let mut progress = report::Progress::new(started);

    // Set-up: every connection open (or failed), bounded by rate, timeouts and a margin.
    let setup_limit = Duration::from_secs_f64(
        total as f64 / cfg.conn_rate + cfg.target.timeout.as_secs_f64() * 2.0 + 5.0,
    );
    sampler.mark_setup_start();
    while (c.setup_done.load(Relaxed) as usize) < total && started.elapsed() < setup_limit {
        progress.tick_for(&shared, &mut sampler, "setup", Duration::from_millis(10));
    }
    let setup_s = started.elapsed().as_secs_f64();
    let (open, done) = (c.conn_ok.load(Relaxed), c.setup_done.load(Relaxed));
    progress.timeline.setup(setup_s, open, done, true);
    sampler.mark_setup_end();

    let window_s;
    if cfg.scenario == Scenario::Conn {
        // Hold the connections idle; the window is the hold time.
        sampler.mark_window_start();
        let hold = Instant::now();
        while hold.elapsed().as_secs_f64() < cfg.duration_s {
            progress.tick(&shared, &mut sampler, "hold");
        }
        window_s = hold.elapsed().as_secs_f64();
        sampler.mark_window_end();
    } else if cfg.scenario == Scenario::Retained {
        sampler.mark_window_start();
        let run = Instant::now();
        let limit = cfg.warmup_s + cfg.duration_s + cfg.drain_s;
        loop {
            // Every joiner that connected (all but the publisher) has all values or is gone.
            let joiners = c.conn_ok.load(Relaxed).saturating_sub(1);
            let done = c.retained_complete.load(Relaxed) + c.dropped.load(Relaxed);
            if shared.go.load(Relaxed) && joiners > 0 && done >= joiners {
                break;
            }
            if run.elapsed().as_secs_f64() >= limit {
                break;
            }
            progress.tick_for(&shared, &mut sampler, "retained", Duration::from_millis(5));
        }
        window_s = run.elapsed().as_secs_f64();
        sampler.mark_window_end();
    } else {
        let start_ns = stats::now_ns() + (cfg.warmup_s * 1e9) as u64;
        engine.go(&shared, start_ns, start_ns + (cfg.duration_s * 1e9) as u64);
        let run = Instant::now();
        let mut window_marked = false;
        while run.elapsed().as_secs_f64() < cfg.warmup_s + cfg.duration_s {
            if !window_marked && run.elapsed().as_secs_f64() >= cfg.warmup_s {
                sampler.mark_window_start();
                window_marked = true;
            }
            let phase = if window_marked { "run" } else { "warmup" };
            progress.tick(&shared, &mut sampler, phase);
        }
        if !window_marked {
            sampler.mark_window_start();
        }
        window_s = cfg.duration_s;
        sampler.mark_window_end();
        engine.publish_stop(&shared);
        // Drain: wait for deliveries still in flight, at most --drain seconds.
        let drain = Instant::now();
        while drain.elapsed().as_secs_f64() < cfg.drain_s {
            let expected = c.expected.load(Relaxed);
            let unique = c.delivered.load(Relaxed)
                - c.duplicates.load(Relaxed).min(c.delivered.load(Relaxed));
            if unique >= expected {
                break;
            }
            progress.tick_for(&shared, &mut sampler, "drain", Duration::from_millis(100));
        }
    }
    let processes = engine.stop(&shared);
    // The worker processes have ended; their CPU is in their own reports.
    sampler.watch_processes(Vec::new());
    sampler.sample();
    let mut summary = report::summarize(&cfg, &shared, &sampler, setup_s, window_s, total);
    if !processes.is_empty() {
        report::add_processes(&mut summary, processes);
    }
    summary.failed_checks = report::failed_checks(&summary, cfg.max_loss_pct);
    eprint!("{}", report::text(&summary));
    if let Some(why) = &summary.loadgen.saturation {
        eprintln!("warning: the load generator was saturated: {why}");
    }
    for e in shared
        .first_errors
        .lock()
        .expect("no panics while held")
        .iter()
    {
        eprintln!("error: {e}");
    }
    for why in &summary.failed_checks {
        eprintln!("failed: {why}");
    }
    if let Some(path) = &cfg.report_html {
        let curves = latency_curves(&shared, summary.intended_latency_us.is_some());
        html::write(path, &summary, &progress.timeline, &curves)?;
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(summary.failed_checks.is_empty())
}

/// The percentile distributions the HTML report draws: end to end, and from the intended
/// send time and to the socket where those were measured.
fn latency_curves(shared: &Shared, fixed_rate: bool) -> html::Curves {
    let curve = |h: &std::sync::Mutex<hdrhistogram::Histogram<u64>>| {
        timeline::percentiles(&h.lock().expect("no panics while held"))
    };
    let mut curves = vec![("end to end".to_string(), curve(&shared.latency))];
    for (name, h) in [
        ("from intended send time", &shared.intended_latency),
        ("to the socket", &shared.socket_latency),
    ] {
        let points = curve(h);
        // In a closed loop every message is due when it is sent: that curve is the first.
        if !points.is_empty() && (fixed_rate || name != "from intended send time") {
            curves.push((name.to_string(), points));
        }
    }
    curves
}
