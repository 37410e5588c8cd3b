//! `fanfare-loadtest compare A.json B.json ... [--out FILE.html] [--svg FILE.svg]`: several
//! runs' JSON summaries side by side, as a text table on stderr; with `--out`, a
//! self-contained page with the same table and their latency percentile distributions
//! overlaid; with `--svg`, that plot alone as an SVG file, for pages that show images (as
//! docs/benchmarks.md does).

use std::ffi::OsString;
use std::fmt::Write;
use std::path::PathBuf;

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use crate::svg::{Series, XAxis, chart, escape, standalone};

/// Most runs compared at once: the table stays readable, the legend fits.
const RUNS_MAX: usize = 12;
/// Largest summary read: a run's JSON is a few KiB; this bounds a wrong file.
const SUMMARY_BYTES_MAX: u64 = 16 << 20;

/// The rows of the table: (label, path in the summary, digits after the point).
const ROWS: [(&str, &str, usize); 14] = [
    ("scenario", "scenario", 0),
    ("url", "params.url", 0),
    ("deliveries/s", "msgs_per_s", 0),
    ("delivered", "delivered", 0),
    ("lost", "lost", 0),
    ("p50 µs", "latency_us.p50", 0),
    ("p99 µs", "latency_us.p99", 0),
    ("p99.9 µs", "latency_us.p999", 0),
    ("max µs", "latency_us.max", 0),
    ("p99 from intended µs", "intended_latency_us.p99", 0),
    ("connections ok", "connections.ok", 0),
    ("connects/s", "connections.connects_per_s", 0),
    ("broker cpu s", "broker.cpu_s", 2),
    ("broker rss max bytes", "broker.rss_bytes_max", 0),
];

/// Runs the subcommand; `args` follow the word `compare`.
pub fn run(args: Vec<OsString>) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut out: Option<PathBuf> = None;
    let mut svg: Option<PathBuf> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--out" {
            out = Some(args.next().context("--out needs a file")?.into());
        } else if arg == "--svg" {
            svg = Some(args.next().context("--svg needs a file")?.into());
        } else if arg.to_string_lossy().starts_with('-') {
            bail!(
                "usage: fanfare-loadtest compare A.json B.json ... [--out FILE.html] [--svg FILE.svg]"
            );
        } else {
            files.push(arg.into());
        }
    }
    ensure!(
        (1..=RUNS_MAX).contains(&files.len()),
        "compare takes 1 to {RUNS_MAX} summaries"
    );
    let mut runs = Vec::new();
    for path in &files {
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into(),
        );
        runs.push((name, load(path)?));
    }
    eprint!("{}", text(&runs));
    if let Some(out) = out {
        std::fs::write(&out, page(&runs)).with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(svg) = svg {
        let (title, x_label, y_label, series) = percentile_plot(&runs);
        let picture = standalone(title, x_label, y_label, XAxis::Percentile, &series);
        std::fs::write(&svg, picture).with_context(|| format!("writing {}", svg.display()))?;
    }
    Ok(())
}

fn load(path: &PathBuf) -> anyhow::Result<Value> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    ensure!(
        size <= SUMMARY_BYTES_MAX,
        "{}: too large for a summary",
        path.display()
    );
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    ensure!(
        v.get("params").is_some(),
        "{}: not a fanfare-loadtest summary",
        path.display()
    );
    Ok(v)
}

/// The value at a dotted path, formatted; "-" where the run has none.
fn cell(v: &Value, path: &str, digits: usize) -> String {
    let found = path.split('.').try_fold(v, |v, key| v.get(key));
    match found {
        Some(Value::Number(n)) => n
            .as_f64()
            .map_or_else(|| n.to_string(), |f| format!("{f:.digits$}")),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

fn table(runs: &[(String, Value)]) -> Vec<Vec<String>> {
    let mut rows = vec![
        std::iter::once(String::new())
            .chain(runs.iter().map(|(name, _)| name.clone()))
            .collect::<Vec<_>>(),
    ];
    for (label, path, digits) in ROWS {
        let mut row = vec![label.to_string()];
        row.extend(runs.iter().map(|(_, v)| cell(v, path, digits)));
        rows.push(row);
    }
    rows
}

/// The table as aligned text columns.
pub fn text(runs: &[(String, Value)]) -> String {
    let rows = table(runs);
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (c, value) in row.iter().enumerate() {
            let _ = write!(out, "{value:>width$}  ", width = widths[c]);
        }
        out = out.trim_end().to_string();
        out.push('\n');
    }
    out
}

/// The page: the table and the overlaid percentile distributions.
pub fn page(runs: &[(String, Value)]) -> String {
    let mut out = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>fanfare-loadtest \
         compare</title><style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #ddd;\
         text-align:right}</style></head><body><h1>fanfare-loadtest compare</h1><table>",
    );
    for (i, row) in table(runs).iter().enumerate() {
        let tag = if i == 0 { "th" } else { "td" };
        out.push_str("<tr>");
        for (c, value) in row.iter().enumerate() {
            let tag = if c == 0 { "th" } else { tag };
            let _ = write!(out, "<{tag}>{}</{tag}>", escape(value));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table><h2>Latency distribution</h2>");
    let (title, x_label, y_label, series) = percentile_plot(runs);
    out += &chart(title, x_label, y_label, XAxis::Percentile, &series);
    out.push_str("</body></html>\n");
    out
}

/// The runs' latency distributions overlaid: title, axis labels and one series per run.
fn percentile_plot(
    runs: &[(String, Value)],
) -> (&'static str, &'static str, &'static str, Vec<Series>) {
    let series = runs
        .iter()
        .map(|(name, v)| Series {
            name: name.clone(),
            points: curve(v),
        })
        .collect();
    (
        "latency by percentile",
        "percentile",
        "latency (µs)",
        series,
    )
}

/// `latency_percentiles_us` of a summary: [[percentile, µs], ...].
fn curve(v: &Value) -> Vec<(f64, f64)> {
    let points = v.get("latency_percentiles_us").and_then(Value::as_array);
    points
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, p99: f64) -> (String, Value) {
        let v = serde_json::json!({
            "scenario": "fanout",
            "params": {"url": "tcp://127.0.0.1:1883"},
            "msgs_per_s": 1000.0,
            "latency_us": {"p50": 10.0, "p99": p99},
            "latency_percentiles_us": [[50.0, 10.0], [99.0, p99], [100.0, p99 * 2.0]],
        });
        (name.into(), v)
    }

    #[test]
    fn runs_side_by_side() {
        let runs = [run("a", 20.0), run("b<x>", 40.0)];
        let t = text(&runs);
        let p99 = t
            .lines()
            .find(|l| l.starts_with("p99 µs") || l.trim_start().starts_with("p99 µs"));
        let p99 = p99.expect("a p99 row");
        assert!(p99.contains("20") && p99.contains("40"), "{t}");
        assert!(
            t.lines().any(|l| l.contains("lost") && l.contains('-')),
            "{t}"
        );
        let html = page(&runs);
        // One chart: the two runs' curves among the axes' lines.
        assert_eq!(html.matches("<svg").count(), 1);
        assert!(html.matches("<polyline").count() >= 2);
        assert!(html.contains("b&lt;x&gt;") && !html.contains("b<x>"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
