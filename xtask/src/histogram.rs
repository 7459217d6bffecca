//! Latency histograms: [`hdrhistogram`] for the distribution, with the exact count, sum,
//! minimum and maximum kept beside it.
//!
//! Values are nanoseconds. The HdrHistogram keeps 3 significant digits: values below 2,048 ns
//! are exact, above, a quantile is within [`Histogram::RELATIVE_ERROR`] (0.1 %) of a recorded
//! value. It grows with the largest value recorded (about 150 KiB at 100 ms), whatever the
//! number of samples: memory is bounded.

use std::time::Duration;

/// Significant decimal digits the HdrHistogram keeps.
const SIGFIG: u8 = 3;
/// The largest value an auto-resizing HdrHistogram tracks (`i64::MAX / 2` ns, about 73
/// years); larger values are counted as this one (the exact maximum is kept apart).
const MAX_TRACKED: u64 = i64::MAX as u64 / 2;

/// A latency histogram with exact count, mean, min and max.
#[derive(Clone)]
pub struct Histogram {
    hdr: hdrhistogram::Histogram<u64>,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.len())
            .field("min_ns", &self.min_ns())
            .field("max_ns", &self.max)
            .finish_non_exhaustive()
    }
}

impl Histogram {
    /// Relative error bound of [`Histogram::value_at_quantile`] against the exact sample:
    /// with 3 significant digits every bucket is narrower than 1/1024 of its values.
    pub const RELATIVE_ERROR: f64 = 1.0 / 1024.0;

    /// An empty histogram.
    pub fn new() -> Self {
        #[allow(clippy::expect_used)]
        // Auto-resizing, 3 significant digits: within hdrhistogram's 0..=5, so it cannot fail.
        let hdr = hdrhistogram::Histogram::new(SIGFIG).expect("3 significant digits are valid");
        Self {
            hdr,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.record_ns(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one value in nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        if self.hdr.record(ns.min(MAX_TRACKED)).is_err() {
            // Unreachable below MAX_TRACKED; clamped to the current range if it ever happens.
            self.hdr.saturating_record(ns);
        }
        self.sum += u128::from(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if self.hdr.add(&other.hdr).is_err() {
            // Only if `other` holds values this one cannot grow to: add them one bucket at a
            // time, clamped.
            for v in other.hdr.iter_recorded() {
                self.hdr
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.hdr.len()
    }

    /// `true` if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hdr.is_empty()
    }

    /// Exact mean in nanoseconds (0 when empty).
    pub fn mean_ns(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.sum as f64 / self.len() as f64
        }
    }

    /// Exact smallest sample (0 when empty).
    pub fn min_ns(&self) -> u64 {
        if self.is_empty() { 0 } else { self.min }
    }

    /// Exact largest sample.
    pub fn max_ns(&self) -> u64 {
        self.max
    }

    /// The nearest-rank `q`-quantile (`q` in `[0, 1]`): the sample of rank `ceil(q * n)`,
    /// to within [`Histogram::RELATIVE_ERROR`], clamped to the exact min and max. 0 when empty.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        if self.is_empty() {
            return 0;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        self.hdr.value_at_quantile(q).clamp(self.min, self.max)
    }

    /// The cumulative distribution: `(value_ns, fraction of samples <= value)` at every
    /// non-empty bucket, ending at `(max, 1.0)`.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        let n = self.len() as f64;
        let mut seen = 0u64;
        self.hdr
            .iter_recorded()
            .map(|v| {
                seen += v.count_at_value();
                let top = v.value_iterated_to().clamp(self.min, self.max);
                (top, seen as f64 / n)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The 1-based nearest rank of quantile `q` among `n` samples: `ceil(q * n)` in `[1, n]`.
    fn nearest_rank(q: f64, n: u64) -> u64 {
        ((q * n as f64).ceil() as u64).clamp(1, n.max(1))
    }

    fn exact(sorted: &[u64], q: f64) -> u64 {
        sorted[(nearest_rank(q, sorted.len() as u64) - 1) as usize]
    }

    fn close(got: u64, want: u64) -> bool {
        (got as f64 - want as f64).abs() <= want as f64 * Histogram::RELATIVE_ERROR + 0.5
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record_ns(v);
        }
        assert_eq!(h.value_at_quantile(0.5), 50);
        assert_eq!(h.value_at_quantile(0.99), 99);
        assert_eq!(h.value_at_quantile(1.0), 100);
        assert_eq!(h.value_at_quantile(0.0), 1);
        assert_eq!(h.mean_ns(), 50.5);
    }

    #[test]
    fn empty_histogram_is_all_zero() {
        let h = Histogram::new();
        assert!(h.is_empty());
        assert_eq!(h.value_at_quantile(0.99), 0);
        assert_eq!(h.mean_ns(), 0.0);
        assert_eq!(h.min_ns(), 0);
        assert!(h.cdf().is_empty());
    }

    #[test]
    fn cdf_is_monotone_and_ends_at_one() {
        let mut h = Histogram::new();
        for v in [5u64, 1_000, 1_000, 70_000, 3_000_000] {
            h.record_ns(v);
        }
        let cdf = h.cdf();
        assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        assert_eq!(cdf.last().copied(), Some((3_000_000, 1.0)));
        assert_eq!(cdf[1].1, 0.6); // 5, 1000, 1000 of 5 samples
    }

    #[test]
    fn extreme_values_are_kept() {
        let mut h = Histogram::new();
        h.record_ns(u64::MAX);
        h.record_ns(0);
        assert_eq!(h.len(), 2);
        assert_eq!((h.min_ns(), h.max_ns()), (0, u64::MAX));
        assert!(h.value_at_quantile(1.0) >= MAX_TRACKED);
        assert_eq!(h.value_at_quantile(0.5), 0);
    }

    proptest! {
        #[test]
        fn quantiles_match_exact_sorted_array(
            mut samples in prop::collection::vec(0u64..50_000_000_000, 1..2000),
            q in 0.0f64..=1.0,
        ) {
            let mut h = Histogram::new();
            for &s in &samples { h.record_ns(s); }
            samples.sort_unstable();
            for q in [q, 0.5, 0.9, 0.99, 0.999, 1.0] {
                let got = h.value_at_quantile(q);
                let want = exact(&samples, q);
                prop_assert!(close(got, want), "q={q} got={got} want={want}");
            }
            let mean = samples.iter().map(|&s| s as f64).sum::<f64>() / samples.len() as f64;
            prop_assert!((h.mean_ns() - mean).abs() <= mean * 1e-9 + 1e-9);
            prop_assert_eq!(h.min_ns(), samples[0]);
            prop_assert_eq!(h.max_ns(), *samples.last().unwrap());
        }

        #[test]
        fn merge_equals_recording_everything(
            a in prop::collection::vec(any::<u64>(), 0..300),
            b in prop::collection::vec(any::<u64>(), 0..300),
        ) {
            let (mut ha, mut hb, mut hall) = (Histogram::new(), Histogram::new(), Histogram::new());
            for &v in &a { ha.record_ns(v); hall.record_ns(v); }
            for &v in &b { hb.record_ns(v); hall.record_ns(v); }
            ha.merge(&hb);
            prop_assert_eq!(ha.len(), hall.len());
            prop_assert_eq!(ha.cdf(), hall.cdf());
            for q in [0.0, 0.5, 0.99, 1.0] {
                prop_assert_eq!(ha.value_at_quantile(q), hall.value_at_quantile(q));
            }
        }
    }
}
