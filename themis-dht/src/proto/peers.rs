//! Peers learnt from lookups (beyond the paper): a bounded cache of the peers that answered one
//! of this node's lookup queries lately, which seed later lookups beside the fingers and the
//! successor list (PROTOCOL.md §6.8 step 2). A ring of a few hundred nodes is then mostly known
//! to every node that looks things up, and its lookups end in one hop instead of log₂N / 2;
//! a large ring's lookups start closer to their targets. Nothing here is answered to other
//! nodes (a `closer` answer still comes from the fingers and the successor list), and nothing
//! a peer merely names is kept: only a peer that answered over its authenticated channel.
//!
//! An entry lives `ttl` (the finger-refresh period: routing state of the same age) from its
//! last answer, leaves when a request to it fails or it answers that it left (with the
//! fingers, [`super::node`]'s `purge`), and the cache keeps at most `max` (the oldest goes
//! first).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use themis_crypto::NodeId;

use super::ring::in_half_open;
use super::wire::Peer;

/// The cache, keyed by peer id.
#[derive(Debug)]
pub(crate) struct PeerCache {
    entries: BTreeMap<NodeId, (Peer, Instant)>,
    max: usize,
    ttl: Duration,
}

impl PeerCache {
    /// A cache of at most `max` peers (0: off), each kept `ttl` after its last answer.
    pub(crate) fn new(max: usize, ttl: Duration) -> Self {
        Self {
            entries: BTreeMap::new(),
            max,
            ttl,
        }
    }

    /// Number of peers remembered (expired ones included until they are swept).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// `peer` answered a lookup query at `now`.
    pub(crate) fn learn(&mut self, now: Instant, peer: Peer) {
        if self.max == 0 {
            return;
        }
        self.entries.insert(peer.id, (peer, now));
        if self.entries.len() <= self.max {
            return;
        }
        let ttl = self.ttl;
        self.entries.retain(|_, (_, at)| now < *at + ttl);
        while self.entries.len() > self.max {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(id, _)| *id)
            else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    /// Forgets `id` (a request to it failed, or it left).
    pub(crate) fn forget(&mut self, id: &NodeId) {
        self.entries.remove(id);
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
    fn bounded_expired_first_then_oldest_and_off_at_zero() {
        let t0 = Instant::now();
        let mut c = PeerCache::new(3, TTL);
        c.learn(t0, p(1));
        c.learn(t0 + Duration::from_secs(1), p(2));
        c.learn(t0 + Duration::from_secs(2), p(3));
        c.learn(t0 + Duration::from_secs(3), p(4));
        assert_eq!(c.len(), 3);
        let all = c.closest_preceding(t0 + Duration::from_secs(3), &p(0).id, &p(255).id, 8);
        assert_eq!(all, vec![p(4), p(3), p(2)]);
        // p(2), p(3) expired by then: swept before the oldest live one goes
        c.learn(t0 + Duration::from_secs(7), p(5));
        c.learn(t0 + Duration::from_secs(8), p(6));
        assert_eq!(c.len(), 3);
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
