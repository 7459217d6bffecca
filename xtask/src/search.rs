//! A short search for the highest offered rate a system sustains within a latency bound.
//!
//! Above its capacity an open-loop point measures the queue that builds up, not the path: its
//! p99 is the length of the run. The search probes offered rates, each a short open-loop run,
//! and keeps the highest one whose p99 stays within the bound. It is pure bookkeeping (the
//! caller runs the probes), so its logic is tested without a clock.

/// The state of a search for the highest passing rate.
///
/// The first probe is `start`; while every probe passes the rate doubles (up to `max`), while
/// every probe fails it halves (down to `min`); once a pass and a fail bracket the answer, the
/// search bisects (geometrically) until the bracket is narrower than `precision` or the probe
/// budget is spent.
#[derive(Clone, Debug)]
pub struct RateSearch {
    min: f64,
    max: f64,
    precision: f64,
    probes_left: u32,
    next: Option<f64>,
    /// Highest rate that passed.
    best: Option<f64>,
    /// Lowest rate that failed.
    lowest_fail: Option<f64>,
}

impl RateSearch {
    /// A search starting at `start`, within `[min, max]` (rates per second), stopping when the
    /// bracket `lowest fail / highest pass` is below `1 + precision` or after `probes` probes.
    pub fn new(start: f64, min: f64, max: f64, precision: f64, probes: u32) -> Self {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        let (min, max) = if ok(min) && ok(max) && min <= max {
            (min, max)
        } else {
            (1.0, 1.0)
        };
        let start = if ok(start) {
            start.clamp(min, max)
        } else {
            min
        };
        Self {
            min,
            max,
            precision: if precision.is_finite() && precision > 0.0 {
                precision
            } else {
                0.1
            },
            probes_left: probes,
            next: (probes > 0).then_some(start),
            best: None,
            lowest_fail: None,
        }
    }

    /// The next rate to probe, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        self.next
    }

    /// Records the outcome of the probe at `rate` and chooses the next one.
    pub fn record(&mut self, rate: f64, passed: bool) {
        if passed {
            self.best = Some(self.best.map_or(rate, |b| b.max(rate)));
        } else {
            self.lowest_fail = Some(self.lowest_fail.map_or(rate, |f| f.min(rate)));
        }
        self.probes_left = self.probes_left.saturating_sub(1);
        self.next = if self.probes_left == 0 {
            None
        } else {
            match (self.best, self.lowest_fail) {
                (Some(b), None) if b >= self.max => None,
                (Some(b), None) => Some((b * 2.0).min(self.max)),
                (None, Some(f)) if f <= self.min => None,
                (None, Some(f)) => Some((f / 2.0).max(self.min)),
                (Some(b), Some(f)) if f <= b * (1.0 + self.precision) => None,
                (Some(b), Some(f)) => Some((b * f).sqrt()),
                (None, None) => None,
            }
        };
    }

    /// The highest rate that passed so far.
    pub fn best(&self) -> Option<f64> {
        self.best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a system that passes every rate up to `capacity`.
    fn run(mut s: RateSearch, capacity: f64) -> (Option<f64>, Vec<f64>) {
        let mut probes = Vec::new();
        while let Some(r) = s.next_rate() {
            probes.push(r);
            s.record(r, r <= capacity);
        }
        (s.best(), probes)
    }

    #[test]
    fn finds_the_capacity_within_the_precision() {
        for capacity in [900.0, 7_000.0, 23_456.0, 49_000.0] {
            let (best, probes) = run(
                RateSearch::new(10_000.0, 500.0, 50_000.0, 0.1, 12),
                capacity,
            );
            let best = best.unwrap();
            assert!(best <= capacity, "{capacity}: {best}");
            assert!(best * 1.1 >= capacity, "{capacity}: {best} ({probes:?})");
            assert!(probes.len() <= 12);
        }
    }

    #[test]
    fn stops_at_the_bounds() {
        // Everything passes: up to max, then stop.
        let (best, probes) = run(RateSearch::new(10_000.0, 500.0, 50_000.0, 0.1, 12), 1e9);
        assert_eq!(best, Some(50_000.0));
        assert_eq!(probes, [10_000.0, 20_000.0, 40_000.0, 50_000.0]);
        // Nothing passes: down to min, then stop with no answer.
        let (best, probes) = run(RateSearch::new(4_000.0, 500.0, 50_000.0, 0.1, 12), 0.0);
        assert_eq!(best, None);
        assert_eq!(probes, [4_000.0, 2_000.0, 1_000.0, 500.0]);
    }

    #[test]
    fn the_probe_budget_bounds_the_search() {
        let (best, probes) = run(RateSearch::new(10_000.0, 1.0, 1e6, 0.001, 3), 12_345.0);
        assert_eq!(probes.len(), 3);
        assert_eq!(best, Some(10_000.0));
        assert_eq!(RateSearch::new(10.0, 1.0, 100.0, 0.1, 0).next_rate(), None);
    }

    #[test]
    fn nonsense_bounds_do_not_loop() {
        let (_, probes) = run(RateSearch::new(f64::NAN, 10.0, 1.0, f64::NAN, 50), 5.0);
        assert!(probes.len() <= 2, "{probes:?}");
    }
}
