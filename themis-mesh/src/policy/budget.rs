//! Retry budget (Finagle `RetryBudget`, Linkerd's retry budget): retries may add at most a ratio
//! of the recent calls, plus a small floor per second, so a failing service never sees a retry
//! storm.

use std::time::{Duration, Instant};

use crate::Error;

/// Number of time buckets the window is divided into.
const BUCKETS: usize = 10;

/// Retry budget settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryBudgetConfig {
    /// How long a call's deposit stays usable (default 10 s; 10 ms to 1 h).
    pub window: Duration,
    /// Retries allowed, in percent of the calls made in the window (default 20; at most 1000).
    pub retry_percent: u32,
    /// Retries always allowed per second of window, even with few calls (default 10; at most
    /// 10,000).
    pub min_retries_per_sec: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            retry_percent: 20,
            min_retries_per_sec: 10,
        }
    }
}

impl RetryBudgetConfig {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |reason| {
            Err(Error::InvalidConfig {
                what: "retry budget",
                reason,
            })
        };
        if self.window < Duration::from_millis(10) || self.window > Duration::from_secs(3600) {
            return bad("window must be between 10 ms and 1 h");
        }
        if self.retry_percent > 1000 {
            return bad("retry_percent must be at most 1000");
        }
        if self.min_retries_per_sec > 10_000 {
            return bad("min_retries_per_sec must be at most 10000");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Absolute bucket number since the epoch this bucket currently counts for.
    number: u64,
    deposits: u64,
    withdrawals: u64,
}

/// A sliding-window retry budget.
///
/// Each call deposits `retry_percent / 100` of a token ([`RetryBudget::deposit`]); each retry
/// withdraws one whole token ([`RetryBudget::try_withdraw`]). Deposits and withdrawals count for
/// `window` (kept in 10 buckets of `window / 10`, so the window slides by tenths). On top of the deposits a
/// reserve of `min_retries_per_sec × window` tokens is always available, so rarely-used clients
/// can still retry. Memory is constant.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    epoch: Instant,
    bucket_len_ns: u128,
    /// Highest bucket number seen: a `now` older than an earlier one counts as that one, so
    /// out-of-order timestamps never reset newer buckets.
    latest: u64,
    buckets: [Bucket; BUCKETS],
}

impl RetryBudget {
    /// A new budget whose window starts at `now`.
    pub fn new(config: RetryBudgetConfig, now: Instant) -> Result<Self, Error> {
        config.validate()?;
        let bucket_len_ns = (config.window.as_nanos() / BUCKETS as u128).max(1);
        Ok(Self {
            config,
            epoch: now,
            bucket_len_ns,
            latest: 0,
            buckets: [Bucket::default(); BUCKETS],
        })
    }

    /// The settings.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    fn bucket_number(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(elapsed / self.bucket_len_ns)
            .unwrap_or(u64::MAX)
            .max(self.latest)
    }

    /// The bucket for `now`, reset if it last counted for an older period.
    fn current(&mut self, now: Instant) -> Option<&mut Bucket> {
        let number = self.bucket_number(now);
        self.latest = number;
        let slot = usize::try_from(number % BUCKETS as u64).unwrap_or(0);
        let bucket = self.buckets.get_mut(slot)?;
        if bucket.number != number {
            *bucket = Bucket {
                number,
                deposits: 0,
                withdrawals: 0,
            };
        }
        Some(bucket)
    }

    /// (deposits, withdrawals) within the window ending at `now`.
    fn totals(&self, now: Instant) -> (u64, u64) {
        let number = self.bucket_number(now);
        let oldest = number.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| b.number >= oldest && b.number <= number)
            .fold((0u64, 0u64), |(d, w), b| {
                (
                    d.saturating_add(b.deposits),
                    w.saturating_add(b.withdrawals),
                )
            })
    }

    /// Budget in hundredths of a retry available at `now`.
    fn balance_hundredths(&self, now: Instant) -> u64 {
        let (deposits, withdrawals) = self.totals(now);
        let window_ms = u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX);
        // reserve = min_retries_per_sec × window, in hundredths of a retry.
        let reserve = u64::from(self.config.min_retries_per_sec)
            .saturating_mul(window_ms)
            .saturating_div(10);
        let earned = deposits.saturating_mul(u64::from(self.config.retry_percent));
        reserve
            .saturating_add(earned)
            .saturating_sub(withdrawals.saturating_mul(100))
    }

    /// Records one call (not a retry) at `now`.
    pub fn deposit(&mut self, now: Instant) {
        if let Some(b) = self.current(now) {
            b.deposits = b.deposits.saturating_add(1);
        }
    }

    /// Whole retries the budget allows at `now`.
    pub fn available(&self, now: Instant) -> u64 {
        self.balance_hundredths(now) / 100
    }

    /// Takes one retry from the budget at `now`; `false` (and nothing taken) if it is exhausted.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        if self.balance_hundredths(now) < 100 {
            return false;
        }
        match self.current(now) {
            Some(b) => {
                b.withdrawals = b.withdrawals.saturating_add(1);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(percent: u32, floor: u32) -> RetryBudgetConfig {
        RetryBudgetConfig {
            window: Duration::from_secs(10),
            retry_percent: percent,
            min_retries_per_sec: floor,
        }
    }

    #[test]
    fn reserve_only() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(cfg(20, 1), t0).unwrap();
        assert_eq!(b.available(t0), 10);
        for _ in 0..10 {
            assert!(b.try_withdraw(t0));
        }
        assert!(!b.try_withdraw(t0));
        // The withdrawals leave the window after 10 s.
        assert!(b.try_withdraw(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn ratio_of_calls() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(cfg(20, 0), t0).unwrap();
        for _ in 0..100 {
            b.deposit(t0);
        }
        let mut retries = 0;
        while b.try_withdraw(t0) {
            retries += 1;
        }
        assert_eq!(retries, 20);
        // Four more calls earn 0.8 of a retry: not enough.
        for _ in 0..4 {
            b.deposit(t0);
        }
        assert!(!b.try_withdraw(t0));
        b.deposit(t0);
        assert!(b.try_withdraw(t0));
    }

    #[test]
    fn deposits_expire() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(cfg(100, 0), t0).unwrap();
        b.deposit(t0);
        assert_eq!(b.available(t0 + Duration::from_millis(9_999)), 1);
        assert_eq!(b.available(t0 + Duration::from_secs(10)), 0);
        // Time before the epoch counts as the first bucket.
        let mut b = RetryBudget::new(cfg(100, 0), t0 + Duration::from_secs(1)).unwrap();
        b.deposit(t0);
        assert_eq!(b.available(t0), 1);
        // An out-of-order timestamp counts in the newest bucket instead of resetting it.
        b.deposit(t0 + Duration::from_secs(20));
        b.deposit(t0 + Duration::from_secs(2));
        assert_eq!(b.available(t0 + Duration::from_secs(20)), 2);
    }

    #[test]
    fn rejects_bad_config() {
        let t0 = Instant::now();
        assert!(RetryBudget::new(cfg(1001, 0), t0).is_err());
        let mut c = cfg(20, 0);
        c.window = Duration::from_millis(1);
        assert!(RetryBudget::new(c, t0).is_err());
    }
}
