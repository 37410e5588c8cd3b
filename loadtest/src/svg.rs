//! Line charts as SVG, drawn with plotters' SVG backend: axes with round ticks, one line per
//! series, a legend. Text stays `<text>` elements, so no font is read or embedded, and the
//! chart is one self-contained element: inline in the HTML report ([`chart`]) or a file of its
//! own for pages that show images ([`standalone`]).

use plotters::prelude::*;

const WIDTH: u32 = 760;
const HEIGHT: u32 = 300;
/// Series with this many points or fewer have each point marked: a few points are hard to see
/// as a line (one is none at all).
const MARKED_POINTS_MAX: usize = 30;
/// Colours of the series in order, distinguishable for the common colour blindnesses.
const COLOURS: [RGBColor; 6] = [
    RGBColor(0x00, 0x72, 0xb2),
    RGBColor(0xd5, 0x5e, 0x00),
    RGBColor(0x00, 0x9e, 0x73),
    RGBColor(0xcc, 0x79, 0xa7),
    RGBColor(0xe6, 0x9f, 0x00),
    RGBColor(0x56, 0xb4, 0xe9),
];
/// What plotters writes on the root element; an SVG file needs it, an `<svg>` inside HTML
/// does not, and the report page holds no address at all.
const SVG_NAMESPACE: &str = r#" xmlns="http://www.w3.org/2000/svg""#;

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

/// `<svg>` with a chart of `series`, for inline use in HTML; "no data" when no series has a
/// point.
pub fn chart(title: &str, x_label: &str, y_label: &str, x: XAxis, series: &[Series]) -> String {
    standalone(title, x_label, y_label, x, series).replacen(SVG_NAMESPACE, "", 1)
}

/// The same chart as a complete SVG document.
pub fn standalone(
    title: &str,
    x_label: &str,
    y_label: &str,
    x: XAxis,
    series: &[Series],
) -> String {
    let series: Vec<Series> = series
        .iter()
        .map(|s| Series {
            name: s.name.clone(),
            points: place(x, &s.points),
        })
        .collect();
    let mut out = String::new();
    let drawn = draw(&mut out, title, x_label, y_label, x, &series);
    if let Err(e) = drawn {
        // Drawing into a String has no I/O to fail; a plotters error here is a bug, shown
        // in the picture rather than losing the rest of the report.
        out.clear();
        let _ = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT))
            .into_drawing_area()
            .titled(&format!("chart failed: {e}"), ("sans-serif", 14));
    }
    out
}

fn draw(
    out: &mut String,
    title: &str,
    x_label: &str,
    y_label: &str,
    x: XAxis,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let all = || series.iter().flat_map(|s| s.points.iter());
    if all().next().is_none() {
        root.titled(title, ("sans-serif", 16))?.draw_text(
            "no data",
            &TextStyle::from(("sans-serif", 14)),
            (340, 120),
        )?;
        root.present()?;
        return Ok(());
    }
    let (x0, x1) = bounds(all().map(|p| p.0), false);
    let (y0, y1) = bounds(all().map(|p| p.1), true);
    // Percentiles are labelled at whole decades only (90 %, 99 %, ...): room for one label
    // per decade keeps plotters' ticks on them.
    let x_labels = match x {
        XAxis::Linear => 8,
        XAxis::Percentile => (x1.floor() - x0.ceil()).max(0.0) as usize + 2,
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let x_format = |v: &f64| match x {
        XAxis::Linear => number(*v),
        XAxis::Percentile if v.fract() == 0.0 => percentile_label(*v as i32),
        XAxis::Percentile => String::new(),
    };
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(x_labels)
        .x_label_formatter(&x_format)
        .y_label_formatter(&|v| number(*v))
        .light_line_style(WHITE)
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(&s.name)
            .legend(move |(lx, ly)| {
                Rectangle::new([(lx, ly - 5), (lx + 12, ly + 5)], colour.filled())
            });
        if s.points.len() <= MARKED_POINTS_MAX {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    root.present()?;
    Ok(())
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

/// Decade d of 1 / (1 - p): 0 → "0%", 1 → "90%", 2 → "99%", 3 → "99.9%", ...
fn percentile_label(d: i32) -> String {
    match d {
        0 => "0%".into(),
        1 => "90%".into(),
        d => format!("99.{}%", "9".repeat((d - 2) as usize)).replace(".%", "%"),
    }
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
        for colour in &COLOURS[..2] {
            let stroke = format!(
                "stroke=\"#{:02X}{:02X}{:02X}\"",
                colour.0, colour.1, colour.2
            );
            let lines = svg.split("<polyline").skip(1);
            assert_eq!(lines.filter(|l| l.contains(&stroke)).count(), 1, "{svg}");
        }
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        assert!(
            svg.contains(">\n99%\n<") && svg.contains(">\n90%\n<"),
            "{svg}"
        );
        assert!(!svg.contains("http://"));
        assert!(standalone("t", "x", "y", XAxis::Linear, &[]).contains(SVG_NAMESPACE));
        assert!(chart("t", "x", "y", XAxis::Linear, &[]).contains("no data"));
    }
}
