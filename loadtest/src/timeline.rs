//! What the run looked like over time, for the HTML report (`html.rs`): one sample a second
//! (deliveries, that second's latency percentiles, the broker's CPU and memory) and the
//! connections open during set-up, a few times a second.

use hdrhistogram::Histogram;

/// Most one-second samples kept: an hour's run (`--duration` is at most 3600 s) with its
/// set-up, warm-up and drain.
const SECONDS_MAX: usize = 2 * 3600;
/// Most set-up samples kept, and how far apart they are: an hour of set-up at 5 a second.
const SETUP_POINTS_MAX: usize = 5 * 3600;
const SETUP_EVERY_S: f64 = 0.2;

/// One second of the run.
#[derive(Clone, Debug)]
pub struct Second {
    /// Seconds since the start, at the end of this second.
    pub t_s: f64,
    pub delivered: u64,
    /// Latency percentiles of the deliveries of this second within the measurement window.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// `--broker-pid`: its CPU over this second (100 = one core) and its resident memory.
    pub broker_cpu_pct: Option<f64>,
    pub broker_rss_mib: Option<f64>,
}

#[derive(Default)]
pub struct Timeline {
    pub seconds: Vec<Second>,
    /// (seconds since the start, connections open, connections set up or failed).
    pub setup: Vec<(f64, u64, u64)>,
    /// The cumulative latency histogram at the previous second: the difference is this
    /// second's.
    previous: Option<Histogram<u64>>,
}

impl Timeline {
    /// Records one second; `latency` is the run's cumulative end-to-end histogram.
    pub fn second(&mut self, mut s: Second, latency: &Histogram<u64>) {
        let mut this_second = latency.clone();
        if let Some(previous) = &self.previous {
            // Histograms only grow, so this cannot fail; if it did, the second has no
            // percentiles rather than wrong ones.
            if this_second.subtract(previous).is_err() {
                this_second.reset();
            }
        }
        if !this_second.is_empty() {
            s.p50_us = Some(this_second.value_at_quantile(0.5) as f64 / 1000.0);
            s.p99_us = Some(this_second.value_at_quantile(0.99) as f64 / 1000.0);
        }
        self.previous = Some(latency.clone());
        if self.seconds.len() < SECONDS_MAX {
            self.seconds.push(s);
        }
    }

    /// Records the connections during set-up, at most every `SETUP_EVERY_S` unless `last`
    /// (the end of set-up, always drawn).
    pub fn setup(&mut self, t_s: f64, open: u64, done: u64, last: bool) {
        let due = last
            || self
                .setup
                .last()
                .is_none_or(|&(at, _, _)| t_s - at >= SETUP_EVERY_S);
        if due && self.setup.len() < SETUP_POINTS_MAX {
            self.setup.push((t_s, open, done));
        }
    }
}

/// The percentile distribution of `h`: (percentile, latency in µs) at evenly spaced points of
/// log10(1 / (1 - p)), from the median to the largest recorded value, as HdrHistogram plots it.
pub fn percentiles(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    /// Points per decade of 1 / (1 - p); six decades reach the 99.9999th percentile.
    const PER_DECADE: u32 = 20;
    const DECADES: u32 = 6;
    if h.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    for k in 0..=PER_DECADE * DECADES {
        let q = 1.0 - 10f64.powf(-f64::from(k) / f64::from(PER_DECADE));
        let q = q.max(0.5);
        // Past 1 / samples the distribution holds nothing more: stop at the maximum.
        if 1.0 - q < 1.0 / h.len() as f64 {
            break;
        }
        points.push((q * 100.0, h.value_at_quantile(q) as f64 / 1000.0));
    }
    points.dedup_by(|a, b| a.0 == b.0);
    points.push((100.0, h.max() as f64 / 1000.0));
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values_us: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        for v in values_us {
            h.record(v * 1000).expect("in range");
        }
        h
    }

    #[test]
    fn each_second_has_its_own_percentiles() {
        let mut t = Timeline::default();
        let mut h = histogram([100; 100]);
        let at = |t_s| Second {
            t_s,
            delivered: 100,
            p50_us: None,
            p99_us: None,
            broker_cpu_pct: None,
            broker_rss_mib: None,
        };
        t.second(at(1.0), &h);
        // The second second is all slow: its median is slow, though the run's is not.
        for _ in 0..100 {
            h.record(5_000_000).expect("in range");
        }
        t.second(at(2.0), &h);
        t.second(at(3.0), &h);
        // Three significant digits: values within 0.1 %.
        let p50: Vec<Option<u64>> = t
            .seconds
            .iter()
            .map(|s| s.p50_us.map(|v| (v / 10.0).round() as u64))
            .collect();
        assert_eq!(p50, [Some(10), Some(500), None]);
    }

    #[test]
    fn percentile_curve_rises_to_the_maximum() {
        let h = histogram(1..=10_000);
        let curve = percentiles(&h);
        assert_eq!(curve[0].0, 50.0);
        assert!((curve[0].1 - 5000.0).abs() < 10.0, "{curve:?}");
        let (top, max) = curve[curve.len() - 1];
        assert_eq!(top, 100.0);
        assert!((max - 10_000.0).abs() <= 10.0, "{curve:?}");
        assert!(
            curve
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        // 10,000 samples support the 99.99th percentile, not the 99.999th.
        assert!(curve.iter().any(|p| p.0 > 99.98 && p.0 < 100.0));
        assert!(!curve.iter().any(|p| p.0 > 99.995 && p.0 < 100.0));
        assert!(percentiles(&Histogram::new(3).expect("histogram")).is_empty());
    }

    #[test]
    fn setup_points_are_spaced() {
        let mut t = Timeline::default();
        for i in 0..100 {
            t.setup(f64::from(i) * 0.01, i as u64, i as u64, false);
        }
        assert_eq!(t.setup.len(), 5);
        t.setup(1.0, 100, 100, true);
        assert_eq!(t.setup.last(), Some(&(1.0, 100, 100)));
    }
}
