//! Line charts as inline SVG, for the HTML report: axes with round ticks, one polyline per
//! series, a legend. Written out by hand because a report needs only this, and the page must
//! stay a single file that loads nothing.

use std::fmt::Write;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
/// Room for the y ticks (left), the legend (top) and the x ticks and label (bottom).
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;
/// Series with this many points or fewer have each point marked.
const MARKED_POINTS_MAX: usize = 30;
/// Colours of the series in order, distinguishable for the common colour blindnesses.
const COLOURS: [&str; 6] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
];

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// How the x values are placed.
#[derive(Clone, Copy, PartialEq)]
pub enum XAxis {
    Linear,
    /// x is a percentile (50 ..= 100), placed at log10(1 / (1 - x/100)); 100 itself (the
    /// maximum) is drawn one decade past the highest other percentile.
    Percentile,
}

/// `<svg>` with a chart of `series` (for inline use in HTML); "no data" when no series has
/// a point.
pub fn chart(title: &str, x_label: &str, y_label: &str, x: XAxis, series: &[Series]) -> String {
    let series: Vec<Series> = series
        .iter()
        .map(|s| Series {
            name: s.name.clone(),
            points: place(x, &s.points),
        })
        .collect();
    let all = || series.iter().flat_map(|s| s.points.iter());
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"><title>{}</title>"#,
        escape(title)
    );
    if all().next().is_none() {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return out;
    }
    let (x0, x1) = bounds(all().map(|p| p.0), false);
    let (y0, y1) = bounds(all().map(|p| p.1), true);
    let frame = Frame { x0, x1, y0, y1 };
    axes(&mut out, &frame, x, x_label, y_label);
    let mut legend_x = LEFT + 10.0;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut d = String::new();
        for &(px, py) in &s.points {
            let _ = write!(d, "{:.1},{:.1} ", frame.sx(px), frame.sy(py));
        }
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            d.trim_end()
        );
        // A few points are hard to see as a line (one is none at all): mark each.
        if s.points.len() <= MARKED_POINTS_MAX {
            for &(px, py) in &s.points {
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                    frame.sx(px),
                    frame.sy(py)
                );
            }
        }
        let lx = legend_x;
        // About 7 px a character at the page's font size.
        legend_x += 40.0 + 7.0 * s.name.chars().count() as f64;
        let _ = write!(
            out,
            r#"<rect x="{lx}" y="8" width="12" height="12" fill="{colour}"/><text x="{}" y="18">{}</text>"#,
            lx + 16.0,
            escape(&s.name)
        );
    }
    out.push_str("</svg>");
    out
}

/// The points in plot coordinates: percentiles on their log scale, non-finite ones dropped.
fn place(x: XAxis, points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let finite = points.iter().filter(|p| p.0.is_finite() && p.1.is_finite());
    match x {
        XAxis::Linear => finite.copied().collect(),
        XAxis::Percentile => {
            let decades = |p: f64| (1.0 / (1.0 - p / 100.0)).log10();
            let top = finite
                .clone()
                .filter(|p| p.0 < 100.0)
                .map(|p| decades(p.0))
                .fold(0.0, f64::max);
            finite
                .map(|&(p, v)| (if p >= 100.0 { top + 1.0 } else { decades(p) }, v))
                .collect()
        }
    }
}

/// The range to draw: from the data's least to its largest value, with 0 in the y range.
fn bounds(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if from_zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    (lo, hi * if from_zero { 1.05 } else { 1.0 })
}

struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn sx(&self, x: f64) -> f64 {
        LEFT + (x - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)
    }
    fn sy(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (HEIGHT - TOP - BOTTOM)
    }
}

fn axes(out: &mut String, f: &Frame, x: XAxis, x_label: &str, y_label: &str) {
    let (bottom, top) = (f.sy(f.y0), f.sy(f.y1));
    let _ = write!(
        out,
        r##"<g stroke="#888" fill="none"><line x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}"/><line x1="{LEFT}" y1="{bottom}" x2="{LEFT}" y2="{top}"/></g><g font-size="11" fill="#333">"##,
        WIDTH - RIGHT
    );
    for y in ticks(f.y0, f.y1) {
        let sy = f.sy(y);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{sy:.1}" x2="{}" y2="{sy:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 5.0,
            sy + 4.0,
            number(y)
        );
    }
    let x_ticks: Vec<(f64, String)> = match x {
        XAxis::Linear => ticks(f.x0, f.x1).map(|v| (v, number(v))).collect(),
        XAxis::Percentile => (0..=f.x1.floor() as i32)
            .map(|d| (f64::from(d), percentile_label(d)))
            .collect(),
    };
    for (v, label) in x_ticks {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            f.sx(v),
            bottom + 15.0
        );
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(14 {}) rotate(-90)" text-anchor="middle">{}</text></g>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 8.0,
        escape(x_label),
        (top + bottom) / 2.0,
        escape(y_label)
    );
}

/// Decade d of 1 / (1 - p): 0 → "0%", 1 → "90%", 2 → "99%", 3 → "99.9%", ...
fn percentile_label(d: i32) -> String {
    match d {
        0 => "0%".into(),
        1 => "90%".into(),
        d => format!("99.{}%", "9".repeat((d - 2) as usize)).replace(".%", "%"),
    }
}

/// About five round ticks (1, 2 or 5 × 10^k apart) within [lo, hi].
fn ticks(lo: f64, hi: f64) -> impl Iterator<Item = f64> {
    let raw = (hi - lo) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(move |i| i as f64 * step)
}

/// A tick label: no more digits than it needs.
fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6).replace(".0M", "M")
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .into()
    }
}

/// Text for HTML and SVG: the five characters that could end it or start markup, escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        let t: Vec<f64> = ticks(0.0, 1000.0).collect();
        assert_eq!(t, [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]);
        let t: Vec<f64> = ticks(0.0, 7.3).collect();
        assert_eq!(t, [0.0, 2.0, 4.0, 6.0]);
    }

    #[test]
    fn percentile_labels_count_nines() {
        let labels: Vec<String> = (0..5).map(percentile_label).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%"]);
    }

    #[test]
    fn charts_hold_a_line_per_series_and_escape_names() {
        let s = |name: &str| Series {
            name: name.into(),
            points: vec![(50.0, 1.0), (99.0, 2.0), (100.0, 3.0)],
        };
        let svg = chart("t", "x", "y", XAxis::Percentile, &[s("a<b"), s("c")]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        assert!(chart("t", "x", "y", XAxis::Linear, &[]).contains("no data"));
    }
}
