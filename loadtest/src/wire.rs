//! What the worker processes of `--procs` and their parent say to each other: one JSON document
//! per line, the parent's [`Command`]s on a worker's standard input and the worker's
//! [`Report`]s on its standard output. Counters travel as totals so far, histograms as
//! HdrHistogram V2 (base64): the parent keeps each worker's latest and adds them up, and a
//! sum of histograms is the histogram all their samples would have built.

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

use crate::report::Latency;
use crate::stats;

/// The parent's word to one worker process.
#[derive(Debug, Serialize, Deserialize)]
pub enum Command {
    /// Every process finished set-up: publish into this window (CLOCK_MONOTONIC ns), and
    /// expect deliveries to the subscribers the other processes hold as well.
    Go {
        window_start_ns: u64,
        window_end_ns: u64,
        /// (topic index, subscribers of it in the other processes), non-zero ones only.
        remote_topics: Vec<(usize, u64)>,
        remote_wildcard: u64,
    },
    PublishStop,
    /// Disconnect, send the last report and exit.
    Stop,
}

/// A worker process's state so far.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// [`stats::Counters::all`], totals so far.
    pub counters: Vec<u64>,
    /// (topic index, this process's subscribers of it) where that changed since the last report.
    pub subs_changed: Vec<(usize, u64)>,
    pub wildcard_subs: u64,
    pub first_conn_ns: u64,
    pub last_conn_ns: u64,
    /// [`stats::Shared::histograms`] so far, each V2 and base64; empty in reports that skip them.
    pub histograms: Vec<String>,
    pub tls_negotiated: Option<crate::tls::Negotiated>,
    /// Errors noted since the last report.
    pub errors: Vec<String>,
    /// In the last report only.
    pub done: Option<ProcessReport>,
}

/// One worker process, as the summary shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessReport {
    pub index: usize,
    pub pid: u32,
    /// The cores it could run on (`sched_getaffinity`).
    pub cores: Vec<usize>,
    /// The source addresses it bound, round-robin; empty when the kernel chose.
    pub sources: Vec<String>,
    pub connections: usize,
    /// Its share of the summary's `published` and `delivered`: the summary's are their sums.
    pub published: u64,
    pub delivered: u64,
    pub cpu_s: f64,
    pub busiest_thread_busy: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_lag_us: Option<Latency>,
    pub saturated: bool,
    /// Why this process was the bottleneck, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saturation: Option<String>,
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("writing to a Vec cannot fail");
    BASE64.encode(bytes)
}

pub fn decode_histogram(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = BASE64.decode(text).context("histogram base64")?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("histogram V2: {e:?}"))?;
    Ok(h)
}

/// The sum of `parts`: every sample of every part, counted once.
pub fn merge<'a>(parts: impl IntoIterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut merged = stats::new_histogram();
    for part in parts {
        merged
            .add(part)
            .expect("parts share the bounds of new_histogram");
    }
    merged
}

/// The cores the calling thread may run on, from `sched_getaffinity`; empty if unknown.
pub fn affinity() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads the set within its fixed size (CPU_SETSIZE bits).
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Restricts the calling thread, and the threads it starts later, to `cores`.
pub fn set_affinity(cores: &[usize]) -> std::io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cores.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: `c` is below CPU_SETSIZE, inside the set.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a live cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `cores` as `taskset` writes them: "0-3,6".
pub fn cpu_list(cores: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cores.len() {
        let mut j = i;
        while j + 1 < cores.len() && cores[j + 1] == cores[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cores[i].to_string()
        } else {
            format!("{}-{}", cores[i], cores[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic, spread over several orders of magnitude (ns to s).
    fn samples(seed: u64, n: usize) -> Vec<u64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                1 + (x >> 33) % 10u64.pow(1 + (x % 9) as u32)
            })
            .collect()
    }

    #[test]
    fn merged_histogram_is_the_histogram_of_all_samples() {
        let parts: Vec<Vec<u64>> = (0..3).map(|p| samples(p + 1, 5000 + p as usize)).collect();
        let mut all = stats::new_histogram();
        let mut through_the_wire = Vec::new();
        for part in &parts {
            let mut h = stats::new_histogram();
            for &v in part {
                h.record(v).expect("in bounds");
                all.record(v).expect("in bounds");
            }
            through_the_wire.push(decode_histogram(&encode_histogram(&h)).expect("decodes"));
        }
        let merged = merge(&through_the_wire);
        let counts: u64 = through_the_wire.iter().map(Histogram::len).sum();
        assert_eq!(merged.len(), counts);
        assert_eq!(
            merged.len(),
            parts.iter().map(Vec::len).sum::<usize>() as u64
        );
        assert_eq!(merged, all);
        for q in [0.5, 0.99, 0.999, 1.0] {
            assert_eq!(merged.value_at_quantile(q), all.value_at_quantile(q));
        }
        assert_eq!(merged.max(), all.max());
        assert_eq!(merged.min(), all.min());
    }

    #[test]
    fn an_empty_histogram_round_trips() {
        let h = stats::new_histogram();
        let back = decode_histogram(&encode_histogram(&h)).expect("decodes");
        assert!(back.is_empty());
        assert!(decode_histogram("not base64!").is_err());
    }

    #[test]
    fn commands_and_reports_are_one_line_each() {
        let go = Command::Go {
            window_start_ns: 1,
            window_end_ns: 2,
            remote_topics: vec![(3, 4)],
            remote_wildcard: 5,
        };
        let line = serde_json::to_string(&go).expect("serializes");
        assert!(!line.contains('\n'));
        assert!(matches!(
            serde_json::from_str::<Command>(&line).expect("parses"),
            Command::Go {
                remote_wildcard: 5,
                ..
            }
        ));
        let report = Report {
            errors: vec!["a\nb".into()],
            ..Report::default()
        };
        assert!(
            !serde_json::to_string(&report)
                .expect("serializes")
                .contains('\n')
        );
    }

    #[test]
    fn affinity_and_cpu_lists() {
        assert!(!affinity().is_empty());
        assert_eq!(cpu_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(cpu_list(&[]), "");
    }
}
