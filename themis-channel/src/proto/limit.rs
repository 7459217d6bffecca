//! Rate limits: one token bucket, and a bounded table of buckets keyed by source.
//!
//! Pure: every method takes `now`. The endpoint limits its control answers with one
//! [`TokenBucket`]; the DHT limits requests per peer with a [`KeyedLimiter`] keyed by node id.

use std::collections::BTreeMap;
use std::time::Instant;

/// A token bucket: `per_sec` tokens a second, at most `burst` held, one taken per event.
///
/// A new bucket is full.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket refilled at `per_sec` tokens a second, holding at most `burst` (at least 1).
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_sec: f64::from(per_sec),
            burst,
            tokens: burst,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
        }
        self.last = Some(now);
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full at `now`: its source has been idle long enough to be
    /// forgotten without changing any future decision.
    pub fn is_full(&self, now: Instant) -> bool {
        let dt = self.last.map_or(0.0, |last| {
            now.saturating_duration_since(last).as_secs_f64()
        });
        self.tokens + dt * self.per_sec >= self.burst
    }
}

/// Size of the table below which idle buckets are not pruned.
const PRUNE_FLOOR: usize = 64;

/// One [`TokenBucket`] per source, in a table of at most `max_sources` entries.
///
/// Buckets that have refilled (idle sources) are forgotten whenever the table has doubled
/// since the last time (and at [`PRUNE_FLOOR`] entries at least): a new bucket starts full, so
/// forgetting a full one changes no decision, and the table stays about twice the number of
/// sources active in the last few bucket-refill times instead of growing to `max_sources` with
/// every peer ever heard (in a large ring a node hears from thousands). Amortized, a prune
/// costs O(1) per new source. When the table is full of active sources, an event from a new
/// source is refused: a flood of new sources cannot grow the table or reset anyone's bucket.
#[derive(Clone, Debug)]
pub struct KeyedLimiter<K> {
    per_sec: u32,
    burst: u32,
    max_sources: usize,
    buckets: BTreeMap<K, TokenBucket>,
    /// Table size at which idle buckets are pruned next.
    prune_at: usize,
}

impl<K: Ord + Clone> KeyedLimiter<K> {
    /// A limiter of `per_sec` events a second and bursts of `burst` per source, tracking at most
    /// `max_sources` sources.
    pub fn new(per_sec: u32, burst: u32, max_sources: usize) -> Self {
        Self {
            per_sec: per_sec.max(1),
            burst: burst.max(1),
            max_sources,
            buckets: BTreeMap::new(),
            prune_at: PRUNE_FLOOR,
        }
    }

    /// Takes one token from `source`'s bucket if there is one.
    pub fn allow(&mut self, now: Instant, source: &K) -> bool {
        if !self.buckets.contains_key(source)
            && self.buckets.len() >= self.prune_at.min(self.max_sources)
        {
            self.buckets.retain(|_, b| !b.is_full(now));
            self.prune_at = (self.buckets.len() * 2).max(PRUNE_FLOOR);
            if self.buckets.len() >= self.max_sources {
                return false;
            }
        }
        let (per_sec, burst) = (self.per_sec, self.burst);
        self.buckets
            .entry(source.clone())
            .or_insert_with(|| TokenBucket::new(per_sec, burst))
            .allow(now)
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut r = TokenBucket::new(10, 2);
        assert!(r.allow(t0));
        assert!(r.allow(t0));
        assert!(!r.allow(t0));
        assert!(r.allow(t0 + Duration::from_millis(150)));
        assert!(!r.allow(t0 + Duration::from_millis(150)));
        assert!(!r.is_full(t0 + Duration::from_millis(150)));
        assert!(r.is_full(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_full_table_forgets_idle_sources_and_refuses_new_ones_otherwise() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::new(1, 1, 2);
        assert!(l.allow(t0, &1));
        assert!(l.allow(t0, &2));
        // Both sources are mid-bucket: a third is refused and tracks nothing.
        assert!(!l.allow(t0, &3));
        assert_eq!(l.len(), 2);
        // A second later both have refilled: they are forgotten and the third gets a bucket.
        assert!(l.allow(t0 + Duration::from_secs(1), &3));
        assert_eq!(l.len(), 1);
        // A source keeps its own bucket.
        assert!(!l.allow(t0 + Duration::from_secs(1), &3));
    }

    #[test]
    fn idle_sources_are_forgotten_long_before_the_table_is_full() {
        let t0 = Instant::now();
        // a token a millisecond, burst 1: each source is idle again 1 ms after its event
        let mut l = KeyedLimiter::new(1000, 1, 4096);
        for s in 0..10_000u64 {
            assert!(l.allow(t0 + Duration::from_millis(s), &s));
            assert!(l.len() <= 2 * PRUNE_FLOOR, "{} sources tracked", l.len());
        }
    }

    proptest! {
        /// Pruning idle buckets changes no decision: the same events are allowed as with one
        /// bucket per source kept forever.
        #[test]
        fn pruning_changes_no_decision(
            rate in 1u32..50, burst in 1u32..5,
            events in proptest::collection::vec((0u64..200, 0u64..300), 1..600),
        ) {
            let t0 = Instant::now();
            let mut l = KeyedLimiter::new(rate, burst, 1 << 20);
            let mut all: BTreeMap<u64, TokenBucket> = BTreeMap::new();
            let mut t = 0;
            for (source, gap) in events {
                t += gap;
                let now = t0 + Duration::from_millis(t);
                let want = all
                    .entry(source)
                    .or_insert_with(|| TokenBucket::new(rate, burst))
                    .allow(now);
                prop_assert_eq!(l.allow(now, &source), want);
            }
        }

        /// Over any schedule, a source gets at most burst + rate * elapsed events.
        #[test]
        fn never_more_than_burst_plus_rate(
            rate in 1u32..50, burst in 1u32..20,
            gaps in proptest::collection::vec(0u64..200, 1..300),
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(rate, burst);
            let (mut t, mut allowed) = (0u64, 0u64);
            for g in gaps {
                t += g;
                if b.allow(t0 + Duration::from_millis(t)) {
                    allowed += 1;
                }
            }
            let bound = f64::from(burst) + f64::from(rate) * (t as f64 / 1000.0);
            prop_assert!(allowed as f64 <= bound + 1e-9);
        }
    }
}
