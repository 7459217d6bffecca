//! Repeated runs: the median and range of a figure over a point's runs, and comparisons that
//! say "within noise" rather than print a percentage the runs do not support.
//!
//! Every point is measured several times (`--runs`); a figure is the median over the runs
//! and its spread is their range (min–max). Two modes are compared on their medians, but
//! only when their ranges are apart: when the ranges overlap, some run of the "slower" mode
//! was as good as some run of the "faster" one, and the difference of the medians is not a
//! conclusion (a quick run once reported the secure ring 235 % faster than the insecure
//! one: the runs' task placement, not the protocol).

use std::fmt;

use crate::report::fmt_num;
use crate::workload::Metric;

/// The median and range of one figure over a point's runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// The median (the mean of the two middle runs for an even count).
    pub median: f64,
    /// The smallest run.
    pub min: f64,
    /// The largest run.
    pub max: f64,
    /// How many runs.
    pub runs: usize,
}

impl Spread {
    /// The spread of `values`, ignoring NaN (a figure a run did not have); `None` when no
    /// value is left. Infinities are kept (a run with no successful operation has an
    /// infinite time per operation) and sort last.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        let (&min, &max) = (v.first()?, v.last()?);
        Some(Self {
            median: median_of_sorted(&v)?,
            min,
            max,
            runs: v.len(),
        })
    }

    /// One value, as a single run.
    pub fn single(v: f64) -> Option<Self> {
        Self::of([v])
    }

    /// The same runs in another unit: every value times `k` (> 0).
    pub fn scaled(self, k: f64) -> Self {
        Self {
            median: self.median * k,
            min: self.min * k,
            max: self.max * k,
            runs: self.runs,
        }
    }

    /// Whether the two ranges share a value (their ends included).
    pub fn overlaps(&self, other: &Spread) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// `median (min–max)`, or just the median when every run gave the same value (to the
    /// digits shown).
    pub fn display(&self) -> String {
        if fmt_num(self.min) == fmt_num(self.max) {
            fmt_num(self.median)
        } else {
            format!(
                "{} ({}–{})",
                fmt_num(self.median),
                fmt_num(self.min),
                fmt_num(self.max)
            )
        }
    }

    /// `min–max` (one value where both ends show the same).
    pub fn range(&self) -> String {
        if fmt_num(self.min) == fmt_num(self.max) {
            fmt_num(self.min)
        } else {
            format!("{}–{}", fmt_num(self.min), fmt_num(self.max))
        }
    }
}

/// The median of sorted values; `None` when empty.
fn median_of_sorted(v: &[f64]) -> Option<f64> {
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v.get(mid).copied()
    } else {
        Some((v.get(mid.checked_sub(1)?)? + v.get(mid)?) / 2.0)
    }
}

/// The median of `values` (NaN ignored); `None` when none is left.
pub(crate) fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    Spread::of(values).map(|s| s.median)
}

/// One mode's figure against another's (secure against insecure, or a mode against the
/// `direct` baseline): the overhead of `this` relative to `base`, from the medians, and
/// whether the runs allow a conclusion at all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// Throughput lost or latency added by `this` relative to `base`, in percent, from the
    /// medians ([`Metric::overhead_pct`]); negative when `this` is better.
    pub pct: f64,
    /// `this`'s runs.
    pub this: Spread,
    /// `base`'s runs.
    pub base: Spread,
    /// The unit of the metric, for the ranges.
    pub unit: &'static str,
}

impl Comparison {
    /// `this` against `base` for `metric`; `None` where the metric has no overhead (counts)
    /// or a median is not a finite positive base.
    pub fn of(metric: Metric, this: Spread, base: Spread) -> Option<Self> {
        Some(Self {
            pct: metric.overhead_pct(this.median, base.median)?,
            this,
            base,
            unit: metric.unit(),
        })
    }

    /// `true` when the two modes' run ranges overlap: the difference is not shown to be more
    /// than the run-to-run noise, and no signed percentage is reported.
    pub fn within_noise(&self) -> bool {
        self.this.overlaps(&self.base)
    }

    /// The overhead as a conclusion: `Some(pct)` only when the ranges are apart.
    pub fn conclusive_pct(&self) -> Option<f64> {
        (!self.within_noise()).then_some(self.pct)
    }
}

impl fmt::Display for Comparison {
    /// `12.3 %` when the ranges are apart (`-12.3 % (better)` where `this` is better in every
    /// run); `within noise (a–b vs c–d unit)` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.conclusive_pct() {
            Some(pct) if pct < 0.0 => write!(f, "{} % (better)", fmt_num(pct)),
            Some(pct) => write!(f, "{} %", fmt_num(pct)),
            None => write!(
                f,
                "within noise ({} vs {} {})",
                self.this.range(),
                self.base.range(),
                self.unit
            ),
        }
    }
}

/// A comparison's text, or `—` where there is none.
pub(crate) fn fmt_comparison(c: Option<Comparison>) -> String {
    c.map_or_else(|| "—".into(), |c| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(values: &[f64]) -> Spread {
        Spread::of(values.iter().copied()).unwrap()
    }

    #[test]
    fn median_and_range() {
        let x = s(&[3.0, 1.0, 2.0]);
        assert_eq!((x.median, x.min, x.max, x.runs), (2.0, 1.0, 3.0, 3));
        assert_eq!(s(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(s(&[f64::NAN, 5.0]).runs, 1);
        assert_eq!(Spread::of([f64::NAN]), None);
        assert_eq!(Spread::of([]), None);
        let inf = s(&[f64::INFINITY, 2.0, 1.0]);
        assert_eq!((inf.median, inf.max), (2.0, f64::INFINITY));
        assert_eq!(
            s(&[10_000.0, 9_500.0, 11_000.0]).display(),
            "10,000 (9,500–11,000)"
        );
        assert_eq!(s(&[2.0, 2.0]).display(), "2.00");
        assert_eq!(s(&[209.9, 210.2, 210.0]).display(), "210");
        assert_eq!(s(&[2.0]).range(), "2.00");
    }

    #[test]
    fn overlapping_runs_are_within_noise() {
        // The case: a secure ring "235 % faster" from runs that overlap.
        let secure = s(&[3_000.0, 10_000.0, 10_500.0]);
        let insecure = s(&[2_900.0, 3_100.0, 9_800.0]);
        let c = Comparison::of(Metric::OpsPerSec, secure, insecure).unwrap();
        assert!(c.within_noise());
        assert_eq!(c.conclusive_pct(), None);
        assert_eq!(
            c.to_string(),
            "within noise (3,000–10,500 vs 2,900–9,800 ops/s)"
        );
        // Apart: the overhead from the medians.
        let secure = s(&[900.0, 950.0, 920.0]);
        let insecure = s(&[1_000.0, 1_010.0, 990.0]);
        let c = Comparison::of(Metric::OpsPerSec, secure, insecure).unwrap();
        assert_eq!(c.to_string(), "8.00 %");
        let c = Comparison::of(Metric::OpsPerSec, insecure, secure).unwrap();
        assert_eq!(c.to_string(), "-8.70 % (better)");
        assert_eq!(fmt_comparison(None), "—");
        assert_eq!(
            Comparison::of(Metric::HandshakesPer1K, secure, insecure),
            None
        );
    }

    fn range() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(0.001f64..1e6, 1..6)
    }

    proptest! {
        #[test]
        fn spread_bounds_its_median(mut v in range(), rot in 0usize..6) {
            let a = s(&v);
            prop_assert!(a.min <= a.median && a.median <= a.max);
            prop_assert_eq!(a.runs, v.len());
            let len = v.len();
            v.rotate_left(rot % len);
            prop_assert_eq!(s(&v), a, "the order of the runs does not matter");
        }

        #[test]
        fn overlapping_ranges_never_yield_a_signed_overhead(
            this in range(),
            base in range(),
            higher in any::<bool>(),
        ) {
            let metric = if higher { Metric::OpsPerSec } else { Metric::P50Ms };
            let (t, b) = (s(&this), s(&base));
            let c = Comparison::of(metric, t, b).unwrap();
            let text = c.to_string();
            if t.overlaps(&b) {
                prop_assert!(c.within_noise());
                prop_assert_eq!(c.conclusive_pct(), None);
                prop_assert!(text.starts_with("within noise ("), "{}", text);
                prop_assert!(!text.contains('%'), "{}", text);
            } else {
                // Apart: the sign says which mode is better, in the metric's direction.
                let pct = c.conclusive_pct().unwrap();
                let this_better = if higher { t.min > b.max } else { t.max < b.min };
                prop_assert_eq!(pct < 0.0, this_better, "{} {:?} {:?}", pct, t, b);
                prop_assert!(text.ends_with(" %") || text.ends_with(" % (better)"), "{}", text);
                prop_assert_eq!(text.starts_with('-'), pct < 0.0, "{}", text);
            }
        }

        #[test]
        fn a_range_overlaps_itself_and_overlap_is_symmetric(a in range(), b in range()) {
            let (a, b) = (s(&a), s(&b));
            prop_assert!(a.overlaps(&a));
            prop_assert_eq!(a.overlaps(&b), b.overlaps(&a));
        }
    }
}
