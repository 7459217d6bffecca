//! A fixed-size, log-linear latency histogram (the HdrHistogram layout, written out so the
//! harness has no extra dependency and its error bound is visible).
//!
//! Values are nanoseconds. Values below `2^SUB_BITS` get one bucket each; above, every power of
//! two is split into `2^SUB_BITS` equal buckets, so a reported value is within
//! `1 / 2^(SUB_BITS + 1)` (0.4 %) of a recorded one. The table has a fixed number of buckets
//! whatever is recorded: memory is bounded.

use std::time::Duration;

/// Bits of sub-bucket precision: 128 buckets per power of two.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets for the whole `u64` range.
const BUCKETS: usize = ((64 - SUB_BITS + 1) as usize) << SUB_BITS;

/// A latency histogram with exact count, sum, min and max.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
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
            .field("count", &self.count)
            .field("min_ns", &self.min)
            .field("max_ns", &self.max)
            .finish_non_exhaustive()
    }
}

fn index_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // floor(log2 v) >= SUB_BITS
    let mantissa = v >> (e - SUB_BITS); // in [SUB, 2 * SUB)
    (((e - SUB_BITS + 1) as usize) << SUB_BITS) + (mantissa - SUB) as usize
}

/// `(lowest value, width)` of bucket `idx`.
fn bucket_range(idx: usize) -> (u64, u64) {
    let block = (idx >> SUB_BITS) as u32;
    let sub = (idx as u64) & (SUB - 1);
    if block == 0 {
        return (sub, 1);
    }
    let shift = block - 1;
    ((SUB + sub) << shift, 1u64 << shift)
}

impl Histogram {
    /// Relative error bound of [`Histogram::value_at_quantile`] against the exact sample.
    pub const RELATIVE_ERROR: f64 = 1.0 / (1u64 << (SUB_BITS + 1)) as f64;

    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            count: 0,
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
        if let Some(c) = self.counts.get_mut(index_of(ns)) {
            *c += 1;
        }
        self.count += 1;
        self.sum += u128::from(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// `true` if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Exact mean in nanoseconds (0 when empty).
    pub fn mean_ns(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// Exact smallest sample (0 when empty).
    pub fn min_ns(&self) -> u64 {
        if self.count == 0 { 0 } else { self.min }
    }

    /// Exact largest sample.
    pub fn max_ns(&self) -> u64 {
        self.max
    }

    /// The nearest-rank `q`-quantile (`q` in `[0, 1]`): the sample of rank `ceil(q * n)`,
    /// to within [`Histogram::RELATIVE_ERROR`], clamped to the exact min and max. 0 when empty.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = nearest_rank(q, self.count);
        let mut seen = 0u64;
        for (idx, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bucket_range(idx);
                let mid = low.saturating_add((width - 1) / 2);
                return mid.clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// The cumulative distribution: `(value_ns, fraction of samples <= value)` at every
    /// non-empty bucket, ending at `(max, 1.0)`.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        let mut out = Vec::new();
        if self.count == 0 {
            return out;
        }
        let mut seen = 0u64;
        for (idx, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            seen += c;
            let (low, width) = bucket_range(idx);
            let top = low.saturating_add(width - 1).clamp(self.min, self.max);
            out.push((top, seen as f64 / self.count as f64));
        }
        out
    }
}

/// The 1-based nearest rank of quantile `q` among `n` samples: `ceil(q * n)` in `[1, n]`.
pub(crate) fn nearest_rank(q: f64, n: u64) -> u64 {
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    ((q * n as f64).ceil() as u64).clamp(1, n.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(sorted: &[u64], q: f64) -> u64 {
        sorted[(nearest_rank(q, sorted.len() as u64) - 1) as usize]
    }

    fn close(got: u64, want: u64) -> bool {
        (got as f64 - want as f64).abs() <= want as f64 * Histogram::RELATIVE_ERROR + 0.5
    }

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        let mut expect_low = 0u64;
        for idx in 0..BUCKETS {
            let (low, width) = bucket_range(idx);
            assert_eq!(low, expect_low, "bucket {idx}");
            assert_eq!(index_of(low), idx);
            assert_eq!(index_of(low + (width - 1)), idx);
            expect_low = match low.checked_add(width) {
                Some(v) => v,
                None => {
                    assert_eq!(idx, BUCKETS - 1);
                    break;
                }
            };
        }
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
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
