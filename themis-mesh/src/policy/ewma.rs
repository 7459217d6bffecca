//! Peak-EWMA latency estimate (Finagle/Linkerd/tower `PeakEwma`), decayed by elapsed time.
//!
//! Why peak-EWMA rather than a plain EWMA: a provider that suddenly gets slow is shed at once
//! (a sample above the estimate replaces it), while it regains traffic only gradually; and the
//! estimate, read at time `now`, decays towards zero with the time since the last sample, so an
//! idle slow provider is tried again after a while and is never starved forever (its next
//! sample then tells the truth). A plain EWMA with a fixed per-sample weight reacts in a number
//! of *requests*, not of seconds, and never revisits a provider it stopped picking.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(crate) struct PeakEwma {
    /// Estimate in nanoseconds at `stamp`.
    estimate_ns: f64,
    /// Time of the last sample (or of creation).
    stamp: Instant,
}

fn nanos(d: Duration) -> f64 {
    // u128 -> f64 loses precision only above 2^53 ns (104 days), harmlessly.
    d.as_nanos() as f64
}

impl PeakEwma {
    /// A new estimate at the neutral prior `prior`.
    pub(crate) fn new(prior: Duration, now: Instant) -> Self {
        Self {
            estimate_ns: nanos(prior),
            stamp: now,
        }
    }

    /// `exp(-elapsed / tau)`: the weight the old estimate keeps after `elapsed`.
    fn keep(&self, now: Instant, tau: Duration) -> f64 {
        let elapsed = nanos(now.saturating_duration_since(self.stamp));
        let tau = nanos(tau).max(1.0);
        (-elapsed / tau).exp()
    }

    /// The estimate read at `now`: decayed towards zero since the last sample.
    pub(crate) fn read_ns(&self, now: Instant, tau: Duration) -> f64 {
        self.estimate_ns * self.keep(now, tau)
    }

    /// Feeds one latency sample observed at `now`.
    pub(crate) fn observe(&mut self, sample: Duration, now: Instant, tau: Duration) {
        let sample = nanos(sample);
        if sample > self.estimate_ns {
            // Peak: a slower sample replaces the estimate at once.
            self.estimate_ns = sample;
        } else {
            // EWMA weighted by elapsed time (the longer since the last sample, the more the new
            // one counts).
            let keep = self.keep(now, tau);
            self.estimate_ns = self.estimate_ns * keep + sample * (1.0 - keep);
        }
        if now > self.stamp {
            self.stamp = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: Duration = Duration::from_secs(10);

    #[test]
    fn peak_then_slow_recovery() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(Duration::from_millis(10), t0);
        e.observe(Duration::from_millis(100), t0, TAU);
        assert_eq!(e.read_ns(t0, TAU), 100e6);
        // One fast sample 100 ms later moves the estimate only a little.
        let t1 = t0 + Duration::from_millis(100);
        e.observe(Duration::from_millis(10), t1, TAU);
        let v = e.read_ns(t1, TAU);
        assert!(v > 90e6 && v < 100e6, "{v}");
    }

    #[test]
    fn idle_estimate_decays_towards_zero() {
        let t0 = Instant::now();
        let e = PeakEwma::new(Duration::from_millis(100), t0);
        let later = e.read_ns(t0 + TAU, TAU);
        assert!((later - 100e6 / std::f64::consts::E).abs() < 1.0, "{later}");
        assert!(e.read_ns(t0 + TAU * 10, TAU) < 0.01e6);
        // Time going backwards reads as no time elapsed.
        assert_eq!(e.read_ns(t0, TAU), 100e6);
    }

    #[test]
    fn sample_after_long_idle_replaces_estimate() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(Duration::from_millis(100), t0);
        let t1 = t0 + TAU * 20;
        e.observe(Duration::from_millis(5), t1, TAU);
        assert!((e.read_ns(t1, TAU) - 5e6).abs() < 1e3);
    }
}
