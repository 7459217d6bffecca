//! The pass/fail thresholds of one health check, as Consul has them
//! (`success_before_passing`, `failures_before_critical`): a pure state machine. It takes each
//! check result with `now` and says when the status changes; no clock, no I/O, no timers (the
//! runner in [`super::runner`] owns those).
//!
//! A check starts **critical** (as in Consul): a service with a check is announced only once
//! it has passed `successes_before_passing` times in a row. It turns critical again after
//! `failures_before_critical` failures in a row. A result that agrees with the status resets
//! the count of the other kind, so alternating results never flip the status once the
//! thresholds are above 1.

use std::time::Instant;

/// Longest output kept from one check result (an HTTP body, an error, a heartbeat's note),
/// in bytes, as Consul's 4 KiB.
pub(crate) const MAX_OUTPUT: usize = 4096;

/// Whether a check passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Failing, or not passed yet: the service is not announced.
    Critical,
    /// Passing: the service's record is stored.
    Passing,
}

impl Status {
    /// `passing` or `critical` (as Consul spells them).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Passing => "passing",
        }
    }
}

/// How many results in a row change the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Thresholds {
    /// Passes in a row before a critical check turns passing (at least 1).
    pub(crate) successes_before_passing: u32,
    /// Failures in a row before a passing check turns critical (at least 1).
    pub(crate) failures_before_critical: u32,
}

impl Default for Thresholds {
    /// One result flips the status (Consul's defaults): the mesh's balancer already rides
    /// out single failed calls, and a slower reaction keeps a dead provider in discovery
    /// longer. Raise them for an upstream whose check flaps.
    fn default() -> Self {
        Self {
            successes_before_passing: 1,
            failures_before_critical: 1,
        }
    }
}

/// The state of one check.
#[derive(Debug, Clone)]
pub(crate) struct CheckState {
    thresholds: Thresholds,
    status: Status,
    since: Instant,
    consecutive_passes: u32,
    consecutive_failures: u32,
    passes: u64,
    failures: u64,
    output: String,
    last_result: Option<Instant>,
}

impl CheckState {
    /// A check registered at `now`: critical, not checked yet. Thresholds of 0 count as 1.
    pub(crate) fn new(thresholds: Thresholds, now: Instant) -> Self {
        Self {
            thresholds: Thresholds {
                successes_before_passing: thresholds.successes_before_passing.max(1),
                failures_before_critical: thresholds.failures_before_critical.max(1),
            },
            status: Status::Critical,
            since: now,
            consecutive_passes: 0,
            consecutive_failures: 0,
            passes: 0,
            failures: 0,
            output: "not checked yet".to_owned(),
            last_result: None,
        }
    }

    /// Takes one result at `now` (`output` is cut to [`MAX_OUTPUT`] bytes); returns the new
    /// status if it changed.
    pub(crate) fn record(&mut self, passed: bool, output: &str, now: Instant) -> Option<Status> {
        self.output = cut(output, MAX_OUTPUT).to_owned();
        self.last_result = Some(now);
        let to = if passed {
            self.passes = self.passes.saturating_add(1);
            self.consecutive_passes = self.consecutive_passes.saturating_add(1);
            self.consecutive_failures = 0;
            (self.status == Status::Critical
                && self.consecutive_passes >= self.thresholds.successes_before_passing)
                .then_some(Status::Passing)
        } else {
            self.failures = self.failures.saturating_add(1);
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_passes = 0;
            (self.status == Status::Passing
                && self.consecutive_failures >= self.thresholds.failures_before_critical)
                .then_some(Status::Critical)
        };
        if let Some(s) = to {
            self.status = s;
            self.since = now;
        }
        to
    }

    pub(crate) fn status(&self) -> Status {
        self.status
    }

    /// When the status last changed (or the check was registered).
    pub(crate) fn since(&self) -> Instant {
        self.since
    }

    /// The output of the last result.
    pub(crate) fn output(&self) -> &str {
        &self.output
    }

    /// When the last result came, if any did.
    pub(crate) fn last_result(&self) -> Option<Instant> {
        self.last_result
    }

    /// Results of each kind: (passes, failures), in all.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.passes, self.failures)
    }

    /// Results of each kind in a row: (passes, failures); one of them is 0.
    pub(crate) fn streak(&self) -> (u32, u32) {
        (self.consecutive_passes, self.consecutive_failures)
    }

    pub(crate) fn thresholds(&self) -> Thresholds {
        self.thresholds
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn th(s: u32, f: u32) -> Thresholds {
        Thresholds {
            successes_before_passing: s,
            failures_before_critical: f,
        }
    }

    #[test]
    fn starts_critical_and_flips_at_the_thresholds() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut c = CheckState::new(th(2, 3), t0);
        assert_eq!(c.status(), Status::Critical);
        assert_eq!(c.output(), "not checked yet");
        assert_eq!(c.record(true, "ok", at(1)), None);
        assert_eq!(c.record(false, "down", at(2)), None);
        assert_eq!(c.record(true, "ok", at(3)), None);
        assert_eq!(c.record(true, "ok", at(4)), Some(Status::Passing));
        assert_eq!(c.since(), at(4));
        assert_eq!(c.record(true, "ok", at(5)), None);
        assert_eq!(c.record(false, "a", at(6)), None);
        assert_eq!(c.record(false, "b", at(7)), None);
        assert_eq!(c.record(true, "ok", at(8)), None);
        assert_eq!(c.record(false, "a", at(9)), None);
        assert_eq!(c.record(false, "b", at(10)), None);
        assert_eq!(c.record(false, "c", at(11)), Some(Status::Critical));
        assert_eq!((c.since(), c.output()), (at(11), "c"));
        assert_eq!(c.counts(), (5, 6));
        assert_eq!(c.streak(), (0, 3));
        assert_eq!(c.last_result(), Some(at(11)));
    }

    #[test]
    fn default_thresholds_flip_on_one_result_and_zero_counts_as_one() {
        let t0 = Instant::now();
        for t in [Thresholds::default(), th(0, 0)] {
            let mut c = CheckState::new(t, t0);
            assert_eq!(c.record(true, "", t0), Some(Status::Passing));
            assert_eq!(c.record(false, "", t0), Some(Status::Critical));
            assert_eq!(c.thresholds(), th(1, 1));
        }
    }

    #[test]
    fn output_is_cut_on_a_character_boundary() {
        let mut c = CheckState::new(Thresholds::default(), Instant::now());
        let long = "é".repeat(MAX_OUTPUT);
        c.record(true, &long, Instant::now());
        assert!(c.output().len() <= MAX_OUTPUT && c.output().len() >= MAX_OUTPUT - 1);
        assert_eq!(cut("abc", 2), "ab");
    }

    proptest! {
        /// Against a model: the status is the kind of the last run of equal results that
        /// reached its threshold (critical if none did); it changes exactly when such a run
        /// reaches its threshold, and the counts add up.
        #[test]
        fn follows_the_model(
            s in 1u32..5,
            f in 1u32..5,
            results in proptest::collection::vec(any::<bool>(), 0..200),
        ) {
            let t0 = Instant::now();
            let mut c = CheckState::new(th(s, f), t0);
            let mut model = Status::Critical;
            let mut run = (false, 0u32);
            for (i, &r) in results.iter().enumerate() {
                run = if run.0 == r && run.1 > 0 { (r, run.1 + 1) } else { (r, 1) };
                let before = model;
                if r && run.1 >= s { model = Status::Passing; }
                if !r && run.1 >= f { model = Status::Critical; }
                let changed = c.record(r, "x", t0 + Duration::from_millis(i as u64));
                prop_assert_eq!(changed, (model != before).then_some(model));
                prop_assert_eq!(c.status(), model);
                let (p, q) = c.streak();
                prop_assert!(p == 0 || q == 0);
                prop_assert_eq!(if r { p } else { q }, run.1);
            }
            let passes = results.iter().filter(|r| **r).count() as u64;
            prop_assert_eq!(c.counts(), (passes, results.len() as u64 - passes));
        }
    }
}
