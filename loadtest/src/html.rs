//! `--report FILE.html`: the run as one page that loads nothing (inline SVG and CSS, no
//! scripts, fonts or images): the latency percentile distribution, deliveries and latency
//! per second, connections during set-up, the broker's CPU and memory, the parameters and
//! the machine.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;

use crate::report::{Latency, Summary};
use crate::svg::{Series, XAxis, chart, escape};
use crate::timeline::Timeline;

/// The latency percentile distributions to draw: (label, (percentile, µs) points).
pub type Curves = Vec<(String, Vec<(f64, f64)>)>;

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;max-width:820px;color:#222}\
h2{margin-top:1.6em;font-size:1.1em}table{border-collapse:collapse}\
td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}\
td.n{text-align:right}.fail{color:#b00}svg{display:block;margin:.5em 0}";

/// Writes the page for `summary` to `path`.
pub fn write(
    path: &Path,
    summary: &Summary,
    timeline: &Timeline,
    curves: &Curves,
) -> anyhow::Result<()> {
    let page = page(summary, timeline, curves);
    std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))
}

pub fn page(summary: &Summary, timeline: &Timeline, curves: &Curves) -> String {
    let scenario = serde_json::to_value(summary.scenario).unwrap_or_default();
    let title = format!(
        "fanfare-loadtest {} → {}",
        scenario.as_str().unwrap_or("run"),
        summary.params.url
    );
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>{STYLE}</style></head><body><h1>{t}</h1>",
        t = escape(&title)
    );
    headline(&mut out, summary);
    out.push_str("<h2>Latency distribution</h2>");
    let series: Vec<Series> = curves
        .iter()
        .map(|(name, points)| Series {
            name: name.clone(),
            points: points.clone(),
        })
        .collect();
    out += &chart(
        "latency by percentile",
        "percentile",
        "latency (µs)",
        XAxis::Percentile,
        &series,
    );
    over_time(&mut out, timeline);
    out.push_str("<h2>Parameters</h2>");
    let params = serde_json::to_value(&summary.params).unwrap_or_default();
    table(&mut out, &flatten(&params));
    out.push_str("<h2>Machine</h2>");
    table(&mut out, &machine());
    out.push_str("</body></html>\n");
    out
}

/// The figures people look for first, and whether the run passed.
fn headline(out: &mut String, s: &Summary) {
    let lat = |l: &Latency| {
        format!(
            "p50 {:.0} · p99 {:.0} · p99.9 {:.0} · max {:.0} µs ({} samples)",
            l.p50, l.p99, l.p999, l.max, l.samples
        )
    };
    let mut rows = vec![
        ("deliveries/s".to_string(), format!("{:.0}", s.msgs_per_s)),
        (
            "delivered / expected".into(),
            format!("{} / {} ({} lost)", s.delivered, s.expected, s.lost),
        ),
        (
            "connections ok / planned".into(),
            format!("{} / {}", s.connections.ok, s.connections.planned),
        ),
        ("latency".into(), lat(&s.latency_us)),
    ];
    if let Some(l) = &s.intended_latency_us {
        rows.push(("latency from intended send time".into(), lat(l)));
    }
    if let Some(l) = &s.socket_latency_us {
        rows.push(("latency to the socket".into(), lat(l)));
    }
    table(out, &rows);
    for why in &s.failed_checks {
        let _ = write!(out, "<p class=\"fail\">failed: {}</p>", escape(why));
    }
}

/// Deliveries and latency per second, connections during set-up, the broker's load.
fn over_time(out: &mut String, t: &Timeline) {
    let per_second = |f: &dyn Fn(&crate::timeline::Second) -> Option<f64>| -> Vec<(f64, f64)> {
        t.seconds
            .iter()
            .filter_map(|s| Some((s.t_s, f(s)?)))
            .collect()
    };
    let line = |name: &str, points| Series {
        name: name.into(),
        points,
    };
    out.push_str("<h2>Over the run</h2>");
    let delivered = per_second(&|s| Some(s.delivered as f64));
    *out += &chart(
        "deliveries per second",
        "time (s)",
        "deliveries/s",
        XAxis::Linear,
        &[line("deliveries/s", delivered)],
    );
    *out += &chart(
        "latency per second",
        "time (s)",
        "latency (µs)",
        XAxis::Linear,
        &[
            line("p50", per_second(&|s| s.p50_us)),
            line("p99", per_second(&|s| s.p99_us)),
        ],
    );
    out.push_str("<h2>Connections during set-up</h2>");
    let setup = |f: fn(&(f64, u64, u64)) -> u64| -> Vec<(f64, f64)> {
        t.setup.iter().map(|p| (p.0, f(p) as f64)).collect()
    };
    *out += &chart(
        "connections during set-up",
        "time (s)",
        "connections",
        XAxis::Linear,
        &[
            line("open", setup(|p| p.1)),
            line("attempted", setup(|p| p.2)),
        ],
    );
    let cpu = per_second(&|s| s.broker_cpu_pct);
    if !cpu.is_empty() {
        out.push_str("<h2>Broker</h2>");
        *out += &chart(
            "broker CPU",
            "time (s)",
            "CPU (% of one core)",
            XAxis::Linear,
            &[line("CPU", cpu)],
        );
        *out += &chart(
            "broker memory",
            "time (s)",
            "RSS (MiB)",
            XAxis::Linear,
            &[line("RSS", per_second(&|s| s.broker_rss_mib))],
        );
    }
}

/// A JSON object as (dotted key, value) rows.
fn flatten(v: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &serde_json::Value, rows: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, rows);
                }
            }
            serde_json::Value::String(s) => rows.push((prefix.into(), s.clone())),
            serde_json::Value::Null => {}
            other => rows.push((prefix.into(), other.to_string())),
        }
    }
    let mut rows = Vec::new();
    walk("", v, &mut rows);
    rows
}

/// Where the run was made: host, kernel, CPU, cores and memory, from `/proc`.
fn machine() -> Vec<(String, String)> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let cpuinfo = read("/proc/cpuinfo");
    let meminfo = read("/proc/meminfo");
    vec![
        (
            "host".into(),
            read("/proc/sys/kernel/hostname").trim().into(),
        ),
        (
            "kernel".into(),
            read("/proc/sys/kernel/osrelease").trim().into(),
        ),
        ("cpu".into(), field(&cpuinfo, "model name")),
        (
            "cores".into(),
            std::thread::available_parallelism()
                .map_or(0, |n| n.get())
                .to_string(),
        ),
        ("memory".into(), field(&meminfo, "MemTotal")),
        (
            "allowed cores".into(),
            format!("{:?}", crate::cores::allowed_cores()),
        ),
    ]
}

fn table(out: &mut String, rows: &[(String, String)]) {
    out.push_str("<table>");
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    }
    out.push_str("</table>");
}
