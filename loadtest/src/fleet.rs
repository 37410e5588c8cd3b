//! The parent of `--procs`: starts its own binary N times as worker processes (`member.rs`),
//! tells them when to publish and stop (`wire::Command`), and folds their reports into its
//! own [`Shared`], so the conductor in `main.rs`, the progress line and the summary see one
//! run. Each worker's latest totals are kept; the parent's counters and histograms are their
//! sums, recomputed as reports arrive.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use hdrhistogram::Histogram;

use crate::config::{Config, PROC_INDEX_FLAG};
use crate::stats::{COUNTERS, Shared};
use crate::wire::{self, ProcessReport, Report};

/// What the parent last heard from one worker process.
struct Part {
    counters: [u64; COUNTERS],
    subs: Vec<u64>,
    wildcard: u64,
    first_conn_ns: u64,
    last_conn_ns: u64,
    histograms: Vec<Histogram<u64>>,
    done: Option<ProcessReport>,
}

impl Part {
    fn new(topics: usize) -> Self {
        Part {
            counters: [0; COUNTERS],
            subs: vec![0; topics],
            wildcard: 0,
            first_conn_ns: u64::MAX,
            last_conn_ns: 0,
            histograms: Vec::new(),
            done: None,
        }
    }
}

pub struct Fleet {
    children: Vec<Child>,
    commands: Vec<ChildStdin>,
    readers: Vec<std::thread::JoinHandle<()>>,
    parts: Arc<Mutex<Vec<Part>>>,
    shared: Arc<Shared>,
}

impl Fleet {
    /// Starts `cfg.procs` copies of this binary with this command line, pinned to this run's
    /// topic prefix and client ids (their defaults name the parent's pid).
    pub fn spawn(cfg: &Config, shared: Arc<Shared>) -> anyhow::Result<Fleet> {
        let exe = std::env::current_exe().context("finding this binary to start workers")?;
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        let topics = shared.topic_subs.len();
        let parts = Arc::new(Mutex::new(
            (0..cfg.procs)
                .map(|_| Part::new(topics))
                .collect::<Vec<_>>(),
        ));
        let mut fleet = Fleet {
            children: Vec::new(),
            commands: Vec::new(),
            readers: Vec::new(),
            parts,
            shared,
        };
        for index in 0..cfg.procs {
            let mut child = Command::new(&exe)
                .args(&args)
                .args(["--topic-prefix", &cfg.topic_prefix])
                .args(["--client-id", &cfg.client_id])
                .arg(format!("--{PROC_INDEX_FLAG}"))
                .arg(index.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting worker process {index}"))?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            let (parts, shared) = (fleet.parts.clone(), fleet.shared.clone());
            fleet.readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Report>(&line) {
                        Ok(report) => absorb(index, report, &parts, &shared),
                        Err(e) => shared.note_error(format!("process {index}: bad report: {e}")),
                    }
                }
            }));
            fleet.children.push(child);
            fleet.commands.push(stdin);
        }
        Ok(fleet)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    fn send(&mut self, index: usize, command: &wire::Command) {
        let mut line = serde_json::to_vec(command).expect("commands serialize");
        line.push(b'\n');
        let stdin = &mut self.commands[index];
        if let Err(e) = stdin.write_all(&line).and_then(|()| stdin.flush()) {
            self.shared
                .note_error(format!("process {index} is gone ({e})"));
        }
    }

    /// Starts publishing everywhere, each process told the subscribers the others hold.
    pub fn go(&mut self, window_start_ns: u64, window_end_ns: u64) {
        let commands: Vec<wire::Command> = {
            let parts = self.parts.lock().expect("no panics while held");
            (0..parts.len())
                .map(|i| {
                    let others = || parts.iter().enumerate().filter(move |(j, _)| *j != i);
                    let topics = parts[i].subs.len();
                    let remote_topics = (0..topics)
                        .map(|t| (t, others().map(|(_, p)| p.subs[t]).sum::<u64>()))
                        .filter(|&(_, subs)| subs > 0)
                        .collect();
                    wire::Command::Go {
                        window_start_ns,
                        window_end_ns,
                        remote_topics,
                        remote_wildcard: others().map(|(_, p)| p.wildcard).sum(),
                    }
                })
                .collect()
        };
        for (i, command) in commands.iter().enumerate() {
            self.send(i, command);
        }
    }

    pub fn publish_stop(&mut self) {
        for i in 0..self.children.len() {
            self.send(i, &wire::Command::PublishStop);
        }
    }

    /// Stops every process and waits for its last report until `deadline`, then ends those
    /// still running. Returns the processes' own reports, in order.
    pub fn finish(mut self, deadline: Instant) -> Vec<ProcessReport> {
        for i in 0..self.children.len() {
            self.send(i, &wire::Command::Stop);
        }
        for reader in std::mem::take(&mut self.readers) {
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        for (index, child) in self.children.iter_mut().enumerate() {
            if !matches!(child.try_wait(), Ok(Some(_))) {
                self.shared
                    .note_error(format!("process {index} did not finish in time; ended"));
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let mut parts = self.parts.lock().expect("no panics while held");
        let mut done = Vec::new();
        for (index, part) in parts.iter_mut().enumerate() {
            match part.done.take() {
                Some(report) => done.push(report),
                None => self
                    .shared
                    .note_error(format!("process {index} ended without its last report")),
            }
        }
        done
    }
}

/// Keeps process `index`'s report and recomputes the parent's totals from all processes'.
fn absorb(index: usize, r: Report, parts: &Mutex<Vec<Part>>, shared: &Shared) {
    let mut parts = parts.lock().expect("no panics while held");
    let part = &mut parts[index];
    if let Ok(counters) = <[u64; COUNTERS]>::try_from(r.counters.as_slice()) {
        part.counters = counters;
    }
    for &(t, subs) in &r.subs_changed {
        if let Some(slot) = part.subs.get_mut(t) {
            *slot = subs;
        }
    }
    part.wildcard = r.wildcard_subs;
    part.first_conn_ns = r.first_conn_ns;
    part.last_conn_ns = r.last_conn_ns;
    let fresh_histograms = !r.histograms.is_empty();
    if fresh_histograms {
        match r
            .histograms
            .iter()
            .map(|h| wire::decode_histogram(h))
            .collect()
        {
            Ok(histograms) => part.histograms = histograms,
            Err(e) => shared.note_error(format!("process {index}: {e:#}")),
        }
    }
    if r.done.is_some() {
        part.done = r.done;
    }
    for (k, total) in shared.counters.all().iter().enumerate() {
        total.store(parts.iter().map(|p| p.counters[k]).sum(), Relaxed);
    }
    for &(t, _) in &r.subs_changed {
        if let Some(total) = shared.topic_subs.get(t) {
            total.store(parts.iter().map(|p| p.subs[t]).sum(), Relaxed);
        }
    }
    let wildcard = parts.iter().map(|p| p.wildcard).sum();
    shared.wildcard_subs.store(wildcard, Relaxed);
    let first = parts.iter().map(|p| p.first_conn_ns).min();
    shared
        .first_conn_ns
        .store(first.unwrap_or(u64::MAX), Relaxed);
    let last = parts.iter().map(|p| p.last_conn_ns).max();
    shared.last_conn_ns.store(last.unwrap_or(0), Relaxed);
    if fresh_histograms {
        for (k, total) in shared.histograms().iter().enumerate() {
            let merged = wire::merge(parts.iter().filter_map(|p| p.histograms.get(k)));
            *total.lock().expect("no panics while held") = merged;
        }
    }
    if let Some(negotiated) = r.tls_negotiated {
        let mut first = shared.tls_negotiated.lock().expect("no panics while held");
        first.get_or_insert(negotiated);
    }
    for e in r.errors {
        shared.note_error(format!("process {index}: {e}"));
    }
}
