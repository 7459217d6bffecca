//! Peers learnt from lookups (beyond the paper): a bounded cache of the peers that answered one
//! of this node's lookup queries lately, which seed later lookups beside the fingers and the
//! successor list (PROTOCOL.md §6.8 step 2). A ring of a few hundred nodes is then mostly known
//! to every node that looks things up, and its lookups end in one hop instead of log₂N / 2;
//! a large ring's lookups start closer to their targets, at peers this node already has a
//! session with. Nothing here is answered to other nodes (a `closer` answer still comes from
//! the fingers and the successor list), and nothing a peer merely names is kept: only a peer
//! that answered over its authenticated channel.
//!
//! An entry lives `ttl` from its last answer, leaves when a request to it fails or it answers
//! that it left (with the fingers, [`super::node`]'s `purge`), and the cache keeps at most
//! `max` (the oldest answer goes first; expired entries are swept as new ones come).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::time::{Duration, Instant};

use themis_crypto::NodeId;

use super::ring::in_half_open;
use super::wire::Peer;

/// The cache, keyed by peer id, with an index by age for the sweep and the eviction.
#[derive(Debug)]
pub(crate) struct PeerCache {
    entries: BTreeMap<NodeId, (Peer, Instant)>,
    /// `(last answer, id)` of every entry: the oldest first.
    by_age: BTreeSet<(Instant, NodeId)>,
    max: usize,
    ttl: Duration,
}

impl PeerCache {
    /// A cache of at most `max` peers (0: off), each kept `ttl` after its last answer.
    pub(crate) fn new(max: usize, ttl: Duration) -> Self {
        Self {
            entries: BTreeMap::new(),
            by_age: BTreeSet::new(),
            max,
            ttl,
        }
    }

    /// Number of peers remembered (expired ones included until they are swept).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// `peer` answered a lookup query at `now`. Costs O(log n) per entry added or swept.
    pub(crate) fn learn(&mut self, now: Instant, peer: Peer) {
        if self.max == 0 {
            return;
        }
        if let Some((_, at)) = self.entries.insert(peer.id, (peer, now)) {
            self.by_age.remove(&(at, peer.id));
        }
        self.by_age.insert((now, peer.id));
        // Expired entries go as new ones come; then the oldest while over the bound.
        while let Some(&(at, id)) = self.by_age.first() {
            let expired = now >= at + self.ttl;
            if !expired && self.entries.len() <= self.max {
                break;
            }
            self.by_age.pop_first();
            self.entries.remove(&id);
        }
    }

    /// Forgets `id` (a request to it failed, or it left).
    pub(crate) fn forget(&mut self, id: &NodeId) {
        if let Some((_, at)) = self.entries.remove(id) {
            self.by_age.remove(&(at, *id));
        }
    }

    /// Up to `count` live peers in `(me, target]`, the closest to `target` first (walking
    /// counterclockwise from it).
    pub(crate) fn closest_preceding(
        &self,
        now: Instant,
        me: &NodeId,
        target: &NodeId,
        count: usize,
    ) -> Vec<Peer> {
        let mut out = Vec::new();
        if count == 0 {
            return out;
        }
        let below = self.entries.range(..=*target).rev();
        let above = self
            .entries
            .range((Bound::Excluded(*target), Bound::Unbounded))
            .rev();
        for (id, (peer, at)) in below.chain(above) {
            if !in_half_open(me, id, target) {
                break;
            }
            if now < *at + self.ttl {
                out.push(*peer);
                if out.len() >= count {
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::SocketAddr;

    fn p(v: u8) -> Peer {
        let mut b = [0u8; 32];
        b[0] = v;
        Peer {
            id: NodeId::from_bytes(b),
            addr: SocketAddr::from(([10, 0, 0, v], 1)),
        }
    }

    const TTL: Duration = Duration::from_secs(5);

    #[test]
    fn the_closest_preceding_live_peers_wrapping_around_the_ring() {
        let t0 = Instant::now();
        let mut c = PeerCache::new(16, TTL);
        for v in [10, 40, 60, 200, 250] {
            c.learn(t0, p(v));
        }
        // me 30, target 100: 60, 40 (10 and 250 are before me)
        assert_eq!(
            c.closest_preceding(t0, &p(30).id, &p(100).id, 8),
            vec![p(60), p(40)]
        );
        // me 220, target 50: wraps past zero
        assert_eq!(
            c.closest_preceding(t0, &p(220).id, &p(50).id, 8),
            vec![p(40), p(10), p(250)]
        );
        assert_eq!(
            c.closest_preceding(t0, &p(220).id, &p(50).id, 1),
            vec![p(40)]
        );
        // the target itself counts; me never does
        assert_eq!(
            c.closest_preceding(t0, &p(40).id, &p(60).id, 8),
            vec![p(60)]
        );
        // expired entries are skipped; an answer refreshes one
        c.learn(t0 + TTL, p(40));
        assert_eq!(
            c.closest_preceding(t0 + TTL, &p(30).id, &p(100).id, 8),
            vec![p(40)]
        );
        c.forget(&p(40).id);
        assert!(
            c.closest_preceding(t0 + TTL, &p(30).id, &p(100).id, 8)
                .is_empty()
        );
    }

    #[test]
    fn bounded_oldest_first_expired_swept_and_off_at_zero() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = PeerCache::new(3, TTL);
        c.learn(t0, p(1));
        c.learn(t0 + s(1), p(2));
        c.learn(t0 + s(2), p(3));
        c.learn(t0 + s(3), p(4));
        assert_eq!(c.len(), 3, "the oldest (p1) went");
        let all = c.closest_preceding(t0 + s(3), &p(0).id, &p(255).id, 8);
        assert_eq!(all, vec![p(4), p(3), p(2)]);
        // a new answer makes an entry young again: p2 outlives p3
        c.learn(t0 + s(4), p(2));
        c.learn(t0 + s(4), p(5));
        let all = c.closest_preceding(t0 + s(4), &p(0).id, &p(255).id, 8);
        assert_eq!(all, vec![p(5), p(4), p(2)]);
        // by t0 + 8 s, p4 (answered at 3 s) has expired: it is swept, the others stay
        c.learn(t0 + s(8), p(6));
        assert_eq!(c.len(), 3);
        let all = c.closest_preceding(t0 + s(8), &p(0).id, &p(255).id, 8);
        assert_eq!(all, vec![p(6), p(5), p(2)]);
        c.forget(&p(5).id);
        assert_eq!(c.len(), 2);
        let mut off = PeerCache::new(0, TTL);
        off.learn(t0, p(1));
        assert_eq!(off.len(), 0);
    }

    proptest! {
        /// Whatever was learnt: never more than `max`, every peer returned is live, in
        /// `(me, target]`, ordered by closeness to the target, and no live one that belongs
        /// there is skipped before `count` is reached.
        #[test]
        fn answers_are_the_closest_preceding_live_peers(
            ops in proptest::collection::vec((any::<u8>(), 0u64..20), 0..64),
            me in any::<u8>(),
            target in any::<u8>(),
            count in 0usize..8,
            max in 0usize..16,
        ) {
            let t0 = Instant::now();
            let mut c = PeerCache::new(max, TTL);
            let mut last = t0;
            for (v, dt) in ops {
                last = t0 + Duration::from_secs(dt);
                c.learn(last, p(v));
            }
            prop_assert!(c.len() <= max);
            // the age index names every entry once, at its last answer
            prop_assert_eq!(c.by_age.len(), c.entries.len());
            for (at, id) in &c.by_age {
                prop_assert_eq!(c.entries.get(id).map(|(_, a)| *a), Some(*at));
            }
            let (me, target) = (p(me).id, p(target).id);
            let got = c.closest_preceding(last, &me, &target, count);
            prop_assert!(got.len() <= count);
            let live: Vec<Peer> = c
                .entries
                .values()
                .filter(|(peer, at)| last < *at + TTL && in_half_open(&me, &peer.id, &target))
                .map(|(peer, _)| *peer)
                .collect();
            let mut want = live.clone();
            want.sort_by_key(|x| super::super::ring::distance(&x.id, &target));
            want.truncate(count);
            prop_assert_eq!(got, want);
        }
    }
}
