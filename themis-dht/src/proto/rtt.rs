//! How long a lookup waits for its one query before it hedges: Jacobson and Karels' round-trip
//! estimator (RFC 6298, as TCP sets its retransmission timeout) over the answers to this node's
//! lookup queries, bounded by `Config::lookup_stall_min` and `Config::lookup_stall`
//! (PROTOCOL.md §6.8 step 3).

use std::time::Duration;

/// Answers to see before the estimate is used: until then a lookup waits the fixed
/// `lookup_stall`, as the first answers may all have paid for a key agreement.
const MIN_SAMPLES: u32 = 8;

/// Smoothed round-trip time and its mean deviation, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RttEstimator {
    srtt_us: u64,
    rttvar_us: u64,
    samples: u32,
}

impl RttEstimator {
    /// Takes the round-trip time of one answered query.
    pub(crate) fn observe(&mut self, rtt: Duration) {
        let r = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        if self.samples == 0 {
            self.srtt_us = r;
            self.rttvar_us = r / 2;
        } else {
            // RFC 6298 §2.3: β = 1/4, α = 1/8 (the deviation first, from the old mean)
            let dev = self.srtt_us.abs_diff(r);
            self.rttvar_us = self.rttvar_us - self.rttvar_us / 4 + dev / 4;
            self.srtt_us = self.srtt_us - self.srtt_us / 8 + r / 8;
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// The stall time of a new lookup: `srtt + 4·rttvar` within `[min, max]`; `max` until
    /// [`MIN_SAMPLES`] answers have been seen.
    pub(crate) fn stall(&self, min: Duration, max: Duration) -> Duration {
        if self.samples < MIN_SAMPLES {
            return max;
        }
        let us = self
            .srtt_us
            .saturating_add(self.rttvar_us.saturating_mul(4));
        Duration::from_micros(us).clamp(min.min(max), max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: Duration = Duration::from_millis(20);
    const MAX: Duration = Duration::from_millis(500);

    #[test]
    fn the_fixed_stall_holds_until_enough_answers_were_seen() {
        let mut e = RttEstimator::default();
        for _ in 1..MIN_SAMPLES {
            e.observe(Duration::from_millis(30));
            assert_eq!(e.stall(MIN, MAX), MAX);
        }
        e.observe(Duration::from_millis(30));
        assert!(e.stall(MIN, MAX) < MAX);
    }

    #[test]
    fn steady_answers_bring_the_stall_near_their_round_trip() {
        let mut e = RttEstimator::default();
        for _ in 0..100 {
            e.observe(Duration::from_millis(40));
        }
        let s = e.stall(MIN, MAX);
        assert!(
            s >= Duration::from_millis(40) && s <= Duration::from_millis(41),
            "{s:?}"
        );
        // a fast network stalls no sooner than the floor
        let mut fast = RttEstimator::default();
        for _ in 0..100 {
            fast.observe(Duration::from_micros(100));
        }
        assert_eq!(fast.stall(MIN, MAX), MIN);
    }

    #[test]
    fn jittery_answers_stall_later_than_steady_ones() {
        let (mut steady, mut jittery) = (RttEstimator::default(), RttEstimator::default());
        for i in 0..100u64 {
            steady.observe(Duration::from_millis(50));
            jittery.observe(Duration::from_millis(if i % 2 == 0 { 20 } else { 80 }));
        }
        assert!(jittery.stall(MIN, MAX) > steady.stall(MIN, MAX) + Duration::from_millis(50));
    }

    proptest! {
        /// Whatever the answers, the stall lies within the bounds (`max` wins if they cross).
        #[test]
        fn the_stall_stays_within_its_bounds(
            rtts in proptest::collection::vec(0u64..20_000_000, 0..64),
            min_ms in 0u64..1_000,
            max_ms in 0u64..10_000,
        ) {
            let (min, max) = (Duration::from_millis(min_ms), Duration::from_millis(max_ms));
            let mut e = RttEstimator::default();
            for r in rtts {
                e.observe(Duration::from_micros(r));
                let s = e.stall(min, max);
                prop_assert!(s <= max);
                prop_assert!(s >= min.min(max));
            }
        }
    }
}
