//! Which authenticated peers succeed which old ids (key rotation without a CA, PROTOCOL.md §2.9
//! and §7.7): the statements this node verified, and the peers it asked recently without getting
//! one. Pure: the caller passes the wall clock (statements expire on it) and a monotonic instant.

use std::time::{Duration, Instant};

use hashlink::LruCache;
use themis_crypto::{NodeId, Succession};

/// Default number of verified successions remembered.
pub(crate) const DEFAULT_MAX_SUCCESSIONS: usize = 4096;
/// How long a peer that presented no statement is not asked again.
pub(crate) const ASK_AGAIN_AFTER: Duration = Duration::from_secs(30);

/// The verified successions, by new id, and the peers recently asked in vain. Both tables are
/// bounded (least recently used entries dropped).
#[derive(Debug)]
pub struct Successions {
    /// new id → (old id, end of the grace period, Unix ms).
    known: LruCache<NodeId, (NodeId, u64)>,
    /// peer → when it was last asked and presented nothing.
    asked: LruCache<NodeId, Instant>,
}

impl Default for Successions {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_SUCCESSIONS)
    }
}

impl Successions {
    /// Empty tables of at most `capacity` entries each.
    pub fn new(capacity: usize) -> Self {
        Self {
            known: LruCache::new(capacity.max(1)),
            asked: LruCache::new(capacity.max(1)),
        }
    }

    /// Remembers a statement that was verified and found in force, and presented by the peer
    /// the channel authenticated as its new id (the caller's checks, PROTOCOL.md §7.7).
    pub fn insert(&mut self, s: &Succession) {
        let new = s.new_id();
        self.asked.remove(&new);
        self.known.insert(new, (s.old_id(), s.grace_end_ms()));
    }

    /// The old id `peer` succeeds, if a statement of it is known and in force at `now_ms`.
    pub fn predecessor(&mut self, peer: &NodeId, now_ms: u64) -> Option<NodeId> {
        match self.known.get(peer) {
            Some(&(old, end)) if now_ms < end => Some(old),
            Some(_) => {
                self.known.remove(peer);
                None
            }
            None => None,
        }
    }

    /// Whether `peer` may be asked for its statement at `now`: not if it was asked within
    /// [`ASK_AGAIN_AFTER`] and presented none. Marks it asked (a refused caller cannot make
    /// this node ask again and again).
    pub fn should_ask(&mut self, peer: &NodeId, now: Instant) -> bool {
        if let Some(&at) = self.asked.get(peer)
            && now.saturating_duration_since(at) < ASK_AGAIN_AFTER
        {
            return false;
        }
        self.asked.insert(*peer, now);
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use themis_crypto::{IdentityKeypair, NetworkId};

    #[test]
    fn known_until_the_grace_period_ends_and_asked_at_most_once_per_period() {
        let net = NetworkId::new("n").unwrap();
        let (old, new) = (IdentityKeypair::generate(), IdentityKeypair::generate());
        let s = Succession::sign(&old, &new, &net, 1_000, 5_000).unwrap();
        let mut t = Successions::new(2);
        let now = Instant::now();
        assert!(t.should_ask(&s.new_id(), now));
        assert!(!t.should_ask(&s.new_id(), now + Duration::from_secs(1)));
        assert!(t.should_ask(&s.new_id(), now + ASK_AGAIN_AFTER));
        t.insert(&s);
        assert_eq!(t.predecessor(&s.new_id(), 4_999), Some(old.node_id(&net)));
        assert_eq!(t.predecessor(&old.node_id(&net), 4_999), None);
        assert_eq!(t.predecessor(&s.new_id(), 5_000), None);
        // expired entries are dropped
        assert_eq!(t.predecessor(&s.new_id(), 1_000), None);
    }

    #[test]
    fn bounded() {
        let net = NetworkId::new("n").unwrap();
        let mut t = Successions::new(2);
        let mut ids = Vec::new();
        for _ in 0..3 {
            let s = Succession::sign(
                &IdentityKeypair::generate(),
                &IdentityKeypair::generate(),
                &net,
                0,
                10,
            )
            .unwrap();
            t.insert(&s);
            ids.push(s.new_id());
        }
        assert_eq!(t.predecessor(&ids[0], 1), None);
        assert!(t.predecessor(&ids[1], 1).is_some() && t.predecessor(&ids[2], 1).is_some());
    }
}
