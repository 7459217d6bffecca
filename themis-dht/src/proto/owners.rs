//! Owners learnt from lookups that ended (beyond the paper): a bounded cache of "the successor
//! of every id in `[from, owner]` is `owner`", from which a registration's replica store goes
//! straight to the owner of its object id instead of looking it up again (PROTOCOL.md §6.8).
//!
//! An entry is the claim that ended a lookup of `from` (a peer's `successor` answer, or the
//! owner's own `owner` answer): the successor of `from` is `owner`, so no node lies in
//! `[from, owner)`, and `owner` is the successor of every id in `[from, owner]` as well. Later
//! lookups of ids nearer `owner` widen nothing; ids before `from` extend the entry. Entries live
//! `ttl` (`Config::owner_cache_ttl`: a stale entry costs one refused store), are
//! dropped when their owner fails or refuses a store as not responsible, and the cache keeps at
//! most `max` of them (the oldest goes first). The store itself is the confirmation: the owner
//! accepts it only for an id it is responsible for (§6.7).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use themis_crypto::NodeId;

use super::ring::distance;
use super::wire::Peer;

#[derive(Clone, Copy, Debug)]
struct Entry {
    owner: Peer,
    /// The farthest id before `owner` known to have it as successor.
    from: NodeId,
    /// When the first claim of this entry was learnt (it expires `ttl` after).
    learnt: Instant,
}

/// The cache, keyed by owner id.
#[derive(Debug)]
pub(crate) struct OwnerCache {
    entries: BTreeMap<NodeId, Entry>,
    max: usize,
    ttl: Duration,
}

impl OwnerCache {
    /// A cache of at most `max` owners (0: off), each kept `ttl`.
    pub(crate) fn new(max: usize, ttl: Duration) -> Self {
        Self {
            entries: BTreeMap::new(),
            max,
            ttl,
        }
    }

    /// Number of owners remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn live(&self, e: &Entry, now: Instant) -> bool {
        now < e.learnt + self.ttl
    }

    /// A lookup of `target` ended at `owner` at `now`: the successor of `target` is `owner`.
    pub(crate) fn learn(&mut self, now: Instant, target: NodeId, owner: Peer) {
        if self.max == 0 {
            return;
        }
        let fresh = Entry {
            owner,
            from: target,
            learnt: now,
        };
        let merged = match self.entries.get(&owner.id) {
            Some(old) if self.live(old, now) && old.owner.addr == owner.addr => {
                // the wider interval: the id farther (counterclockwise) from the owner
                if distance(&target, &owner.id) > distance(&old.from, &owner.id) {
                    Entry {
                        from: target,
                        ..*old
                    }
                } else {
                    *old
                }
            }
            _ => fresh,
        };
        self.entries.insert(owner.id, merged);
        if self.entries.len() > self.max {
            self.entries.retain(|_, e| now < e.learnt + self.ttl);
        }
        while self.entries.len() > self.max {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.learnt)
                .map(|(id, _)| *id)
            else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    /// The owner of `t` if an entry that has not expired covers it: the first owner at or after
    /// `t` clockwise, with `t ∈ [from, owner]`.
    pub(crate) fn owner_of(&self, now: Instant, t: &NodeId) -> Option<Peer> {
        let (_, e) = self
            .entries
            .range(*t..)
            .next()
            .or_else(|| self.entries.iter().next())?;
        let covered = distance(&e.from, t) <= distance(&e.from, &e.owner.id);
        (covered && self.live(e, now)).then_some(e.owner)
    }

    /// Forgets `id` (it failed, left, or refused a store as not responsible).
    pub(crate) fn forget(&mut self, id: &NodeId) {
        self.entries.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::SocketAddr;

    fn id(v: u8) -> NodeId {
        let mut b = [0u8; 32];
        b[0] = v;
        NodeId::from_bytes(b)
    }

    fn p(v: u8) -> Peer {
        Peer {
            id: id(v),
            addr: SocketAddr::from(([10, 0, 0, v], 1)),
        }
    }

    const TTL: Duration = Duration::from_secs(5);

    #[test]
    fn covers_only_from_the_lookup_target_to_its_owner_and_widens() {
        let t0 = Instant::now();
        let mut c = OwnerCache::new(8, TTL);
        c.learn(t0, id(50), p(60));
        assert_eq!(c.owner_of(t0, &id(50)), Some(p(60)));
        assert_eq!(c.owner_of(t0, &id(55)), Some(p(60)));
        assert_eq!(c.owner_of(t0, &id(60)), Some(p(60)));
        // before the target: nothing is known (a node may lie in [40, 50))
        assert_eq!(c.owner_of(t0, &id(40)), None);
        // after the owner: another arc
        assert_eq!(c.owner_of(t0, &id(61)), None);
        // a lookup of 40 that ended at 60 widens the entry; one of 55 narrows nothing
        c.learn(t0, id(40), p(60));
        c.learn(t0, id(55), p(60));
        assert_eq!(c.owner_of(t0, &id(41)), Some(p(60)));
        // wrapping around zero
        c.learn(t0, id(250), p(3));
        assert_eq!(c.owner_of(t0, &id(255)), Some(p(3)));
        assert_eq!(c.owner_of(t0, &id(1)), Some(p(3)));
        assert_eq!(c.owner_of(t0, &id(200)), None);
        // forgotten, and expired
        c.forget(&id(3));
        assert_eq!(c.owner_of(t0, &id(1)), None);
        assert_eq!(c.owner_of(t0 + TTL, &id(55)), None);
        // an expired entry is not widened: the new claim starts afresh
        c.learn(t0 + TTL, id(58), p(60));
        assert_eq!(c.owner_of(t0 + TTL, &id(45)), None);
        assert_eq!(c.owner_of(t0 + TTL, &id(59)), Some(p(60)));
        // off
        let mut off = OwnerCache::new(0, TTL);
        off.learn(t0, id(50), p(60));
        assert_eq!(off.owner_of(t0, &id(55)), None);
    }

    proptest! {
        /// Against a model: whatever was learnt, an answer is an owner some unexpired claim
        /// named for an interval containing the id, and the cache stays within its bound.
        #[test]
        fn answers_only_what_a_live_claim_covers(
            claims in proptest::collection::vec((any::<u8>(), any::<u8>(), 0u64..1500), 1..60),
            probes in proptest::collection::vec((any::<u8>(), 0u64..3000), 1..40),
        ) {
            // claims come in time order (each some ms after the last); probes after the last
            let mut at = Instant::now();
            let mut c = OwnerCache::new(4, TTL);
            let mut seen: Vec<(u8, u8, Instant)> = Vec::new();
            for (from, owner, gap) in &claims {
                at += Duration::from_millis(*gap);
                c.learn(at, id(*from), p(*owner));
                seen.push((*from, *owner, at));
                prop_assert!(c.len() <= 4);
            }
            for (t, later) in probes {
                let now = at + Duration::from_millis(later);
                if let Some(o) = c.owner_of(now, &id(t)) {
                    let ok = seen.iter().any(|(from, owner, at)| {
                        *owner == o.id.as_bytes()[0]
                            && *at + TTL > now
                            && distance(&id(*from), &id(t)) <= distance(&id(*from), &id(*owner))
                    });
                    prop_assert!(ok, "{t} answered {:?} without a live claim", o.id);
                }
            }
        }
    }
}
