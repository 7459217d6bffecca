//! Peers that refused a connection recently (issue 12, fail fast): a call avoids them in its
//! provider choice until they answer again or their hold ends, so that a dead provider costs
//! one refused connect, not one attempt per call.
//!
//! Pure: the caller passes `now`. Bounded: at most `capacity` peers; a new one replaces the
//! entry whose hold ends first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use themis_crypto::NodeId;

/// Default of [`RecentRefusals::new`]'s `hold`: how long a refusing peer is avoided before a
/// call may try it again.
const DEFAULT_REFUSAL_HOLD: Duration = Duration::from_secs(10);
/// Default of [`RecentRefusals::new`]'s `capacity`.
const DEFAULT_REFUSAL_CAPACITY: usize = 1024;

/// The peers whose address refused a connection, each until its hold ends.
#[derive(Debug, Clone)]
pub struct RecentRefusals {
    until: HashMap<NodeId, Instant>,
    capacity: usize,
    hold: Duration,
}

impl RecentRefusals {
    /// A table of at most `capacity` peers (at least 1), each avoided for `hold` after its
    /// last refusal.
    pub fn new(capacity: usize, hold: Duration) -> Self {
        Self {
            until: HashMap::new(),
            capacity: capacity.max(1),
            hold,
        }
    }

    /// `peer` refused a connection at `now`: avoid it until `now + hold`.
    pub fn refused(&mut self, peer: NodeId, now: Instant) {
        let until = now.checked_add(self.hold).unwrap_or(now);
        if !self.until.contains_key(&peer) && self.until.len() >= self.capacity {
            self.until.retain(|_, t| *t > now);
            if self.until.len() >= self.capacity
                && let Some(first) = self
                    .until
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(id, _)| *id)
            {
                self.until.remove(&first);
            }
        }
        self.until.insert(peer, until);
    }

    /// `peer` answered: it is not avoided any more.
    pub fn answered(&mut self, peer: &NodeId) {
        self.until.remove(peer);
    }

    /// Whether `peer` is avoided at `now`.
    pub fn is_refusing(&self, peer: &NodeId, now: Instant) -> bool {
        self.until.get(peer).is_some_and(|t| *t > now)
    }

    /// The peers avoided at `now`, among `candidates`.
    pub fn refusing<'a>(
        &'a self,
        candidates: impl IntoIterator<Item = &'a NodeId> + 'a,
        now: Instant,
    ) -> impl Iterator<Item = NodeId> + 'a {
        candidates
            .into_iter()
            .filter(move |id| self.is_refusing(id, now))
            .copied()
    }

    /// Peers in the table (some may have ended their hold).
    pub fn len(&self) -> usize {
        self.until.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

impl Default for RecentRefusals {
    fn default() -> Self {
        Self::new(DEFAULT_REFUSAL_CAPACITY, DEFAULT_REFUSAL_HOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    #[test]
    fn a_refusal_is_avoided_until_the_peer_answers() {
        let t0 = Instant::now();
        let mut r = RecentRefusals::new(8, Duration::from_secs(10));
        assert!(!r.is_refusing(&id(1), t0));
        r.refused(id(1), t0);
        assert!(r.is_refusing(&id(1), t0 + Duration::from_secs(9)));
        r.answered(&id(1));
        assert!(!r.is_refusing(&id(1), t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_refusal_ends_with_its_hold() {
        let t0 = Instant::now();
        let mut r = RecentRefusals::new(8, Duration::from_secs(10));
        r.refused(id(1), t0);
        assert!(r.is_refusing(&id(1), t0 + Duration::from_millis(9_999)));
        assert!(!r.is_refusing(&id(1), t0 + Duration::from_secs(10)));
        // A new refusal starts a new hold.
        r.refused(id(1), t0 + Duration::from_secs(20));
        assert!(r.is_refusing(&id(1), t0 + Duration::from_secs(25)));
    }

    #[test]
    fn a_full_table_drops_the_hold_that_ends_first() {
        let t0 = Instant::now();
        let mut r = RecentRefusals::new(2, Duration::from_secs(10));
        r.refused(id(1), t0);
        r.refused(id(2), t0 + Duration::from_secs(1));
        r.refused(id(3), t0 + Duration::from_secs(2));
        assert_eq!(r.len(), 2);
        let now = t0 + Duration::from_secs(3);
        assert!(!r.is_refusing(&id(1), now));
        assert!(r.is_refusing(&id(2), now) && r.is_refusing(&id(3), now));
        let listed: Vec<NodeId> = r.refusing(&[id(1), id(2), id(4)], now).collect();
        assert_eq!(listed, vec![id(2)]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Refused(u8),
        Answered(u8),
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..16).prop_map(Op::Refused),
            (0u8..16).prop_map(Op::Answered),
            (0u16..3_000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Against a model without a bound: the table never holds more than its capacity, a
        /// peer is avoided only if the model avoids it, and the peer refused last is always
        /// avoided (a new refusal is never the one dropped).
        #[test]
        fn bounded_and_agrees_with_a_model(cap in 1usize..6, ops in proptest::collection::vec(op(), 0..200)) {
            let hold = Duration::from_millis(1_000);
            let t0 = Instant::now();
            let mut now = t0;
            let mut r = RecentRefusals::new(cap, hold);
            let mut model: HashMap<u8, Instant> = HashMap::new();
            for o in ops {
                match o {
                    Op::Refused(p) => {
                        r.refused(id(p), now);
                        model.insert(p, now + hold);
                        prop_assert!(r.is_refusing(&id(p), now));
                    }
                    Op::Answered(p) => {
                        r.answered(&id(p));
                        model.remove(&p);
                        prop_assert!(!r.is_refusing(&id(p), now));
                    }
                    Op::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
                }
                prop_assert!(r.len() <= cap);
                for p in 0u8..16 {
                    if r.is_refusing(&id(p), now) {
                        prop_assert!(model.get(&p).is_some_and(|t| *t > now));
                    }
                }
            }
        }
    }
}
