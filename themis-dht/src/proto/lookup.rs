//! The iterative find of paper §6.1 as a small pure state machine (in the shape of rust-libp2p's
//! `ClosestPeersIter`): the initiator drives every step, checks that every answer makes progress
//! toward the target on the ring and never asks again a peer that failed to make progress or
//! timed out (the eclipse defence of paper §6.2). The lookup owns its own stall timing: it asks
//! one peer at a time, and when that one is slow to answer ([`Lookup::poll_timeout`],
//! [`Lookup::handle_timeout`]) it opens to α queries at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use themis_crypto::{NODE_ID_LEN, NodeId};

use super::ring::{distance, finger_start, in_half_open, in_open};
use super::wire::Peer;

/// Times a lookup that ran out of candidates may be refilled ([`Lookup::reseed`]).
const MAX_RESEEDS: u8 = 2;

/// What a responder said, already decoded.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    /// "I am responsible for the target."
    Owner,
    /// "The target's successor is this peer" (target ∈ (responder, peer]), with the node just
    /// before it in the responder's view when the answer names it (PROTOCOL.md §6.5).
    Successor(Peer, Option<NodeId>),
    /// Closest preceding nodes the responder knows.
    Closer(Vec<Peer>),
}

/// The end of a lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing decided yet.
    Continue,
    /// The target's successor is `peer`; `owner_answered` tells whether `peer` itself answered
    /// `owner` (so the records that came with the answer are its own).
    Done {
        peer: Peer,
        hops: u32,
        owner_answered: bool,
        /// The first id of the range `peer` is known to be the successor of, when the answer
        /// said more than the target (a `successor` answer's `after`, plus one).
        from: Option<NodeId>,
    },
    /// The responder's answer made no progress: it is never asked again.
    Rejected,
}

/// How widely and how long a lookup may ask.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    /// Most queries in flight (α).
    pub(crate) alpha: usize,
    /// `Some(stall)`: ask one peer at a time and open to α when a query fails, is answered
    /// without progress, or stays unanswered for `stall`; then one more query each further
    /// `stall` without a query sent while queries are still unanswered, up to 2α. `None`: ask
    /// α at once from the start.
    pub(crate) stall: Option<Duration>,
    /// Requests the lookup may send before it gives up.
    pub(crate) max_requests: usize,
    /// Candidates it remembers.
    pub(crate) max_candidates: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct Lookup {
    target: NodeId,
    want_owner: bool,
    alpha: usize,
    /// Queries allowed in flight now: 1 while every answer comes in and makes progress (the
    /// paper's sequential iterative find), `alpha` once the lookup is hedged, one more after
    /// each further stall (at most [`Lookup::max_width`]).
    width: usize,
    max_requests: usize,
    max_candidates: usize,
    /// Unqueried candidates keyed by clockwise distance to the target (closest preceding first).
    cands: BTreeMap<([u8; NODE_ID_LEN], NodeId), (Peer, u32)>,
    /// A peer claimed to be the successor of the target: asked first (object lookups).
    final_cand: Option<(Peer, u32)>,
    /// Peers asked, in flight or rejected: never asked again.
    seen: BTreeSet<NodeId>,
    in_flight: BTreeMap<NodeId, (Peer, u32)>,
    sent: usize,
    /// How long the one query of a narrow lookup may stay unanswered.
    stall: Duration,
    /// The budget had a stall (else the lookup asks α at once and never stalls).
    stalls: bool,
    /// When the lookup stalls: armed by each query sent (and by each stall) while the lookup
    /// can still widen.
    stall_at: Option<Instant>,
    /// Times the candidates were refilled when they ran out.
    reseeds: u8,
}

impl Lookup {
    /// A lookup of `target` by `me` within `budget`: one peer at a time until trouble (or the
    /// stall timer) opens it to α, unless `budget.stall` is `None`.
    pub(crate) fn new(target: NodeId, want_owner: bool, me: NodeId, budget: Budget) -> Self {
        let mut seen = BTreeSet::new();
        seen.insert(me);
        let alpha = budget.alpha.max(1);
        Self {
            target,
            want_owner,
            alpha,
            width: if budget.stall.is_some() { 1 } else { alpha },
            max_requests: budget.max_requests,
            max_candidates: budget.max_candidates.max(1),
            cands: BTreeMap::new(),
            final_cand: None,
            seen,
            in_flight: BTreeMap::new(),
            sent: 0,
            stall: budget.stall.unwrap_or_default(),
            stalls: budget.stall.is_some(),
            stall_at: None,
            reseeds: 0,
        }
    }

    pub(crate) fn target(&self) -> NodeId {
        self.target
    }

    /// Queries sent so far.
    #[cfg(test)]
    pub(crate) fn sent(&self) -> usize {
        self.sent
    }

    /// True while the lookup asks one peer at a time and could ask more.
    pub(crate) fn is_narrow(&self) -> bool {
        self.width < self.alpha
    }

    /// Opens the lookup to (at least) `alpha` queries in flight: a query failed, was answered
    /// without progress, or is slow to answer.
    fn widen(&mut self) {
        self.width = self.width.max(self.alpha);
    }

    /// Most queries in flight after repeated stalls: 2α (α = 1, the finger sweep, and a
    /// lookup hedged from the start never stall).
    fn max_width(&self) -> usize {
        if self.alpha <= 1 || !self.stalls {
            1
        } else {
            self.alpha.saturating_mul(2)
        }
    }

    /// True while a stall would let the lookup ask one more peer.
    fn can_widen(&self) -> bool {
        self.width < self.max_width()
    }

    /// When the lookup stalls if its queries are still unanswered and none was sent since.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.stall_at
            .filter(|_| self.can_widen() && !self.in_flight.is_empty())
    }

    /// Hedge (beyond the paper, which asks one node at a time): if the one query has been
    /// unanswered since the stall time, the lookup opens to α (without giving up on it); if
    /// it is open already, and no query was sent for a stall while some are unanswered, it
    /// may ask one more (up to 2α). Peers that left while this node could not notice (a
    /// partition, churn) answer nothing until the request timeout; without the extra width a
    /// lookup whose first α peers had all left waited that timeout (5 s by default) before it
    /// asked anyone else. Returns true if it widened: the caller asks [`Lookup::next`] for
    /// more peers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.poll_timeout() {
            Some(t) if t <= now => {
                self.width = if self.is_narrow() {
                    self.alpha
                } else {
                    self.width + 1
                };
                self.stall_at = self.can_widen().then(|| now + self.stall);
                true
            }
            _ => false,
        }
    }

    /// Adds a candidate found at path length `depth` (the number of sequential queries that
    /// led to it; the first peers queried have depth 1).
    pub(crate) fn add_candidate(&mut self, peer: Peer, depth: u32) {
        if self.seen.contains(&peer.id) {
            return;
        }
        let key = (distance(&peer.id, &self.target), peer.id);
        self.cands.entry(key).or_insert((peer, depth));
        while self.cands.len() > self.max_candidates {
            self.cands.pop_last();
        }
    }

    /// Sets the peer to ask next because someone said it is the target's successor.
    pub(crate) fn set_final(&mut self, peer: Peer, depth: u32) {
        if !self.seen.contains(&peer.id) {
            self.final_cand = Some((peer, depth));
        }
    }

    /// Seeds the lookup from the initiator's own tables: `local`, the target's successor if
    /// the initiator's successor list tells it, and the closest preceding entries.
    pub(crate) fn seed(&mut self, local: Option<Peer>, seeds: Vec<Peer>) {
        if let Some(s) = local {
            self.set_final(s, 1);
        }
        for p in seeds {
            self.add_candidate(p, 1);
        }
    }

    /// True while the lookup may still be refilled ([`Lookup::reseed`]).
    pub(crate) fn can_reseed(&self) -> bool {
        self.reseeds < MAX_RESEEDS
    }

    /// Refills a lookup that ran out of candidates (at most [`MAX_RESEEDS`] times; peers
    /// already asked are never asked again). Returns whether it has something to ask.
    pub(crate) fn reseed(&mut self, local: Option<Peer>, seeds: Vec<Peer>) -> bool {
        if !self.can_reseed() {
            return false;
        }
        self.reseeds += 1;
        self.seed(local, seeds);
        !self.is_exhausted()
    }

    /// The next peers to query at `now` (up to the width in flight), with their path length.
    /// A narrow lookup that sends a query arms its stall timer from `now`.
    pub(crate) fn next(&mut self, now: Instant) -> Vec<(Peer, u32)> {
        let mut out = Vec::new();
        while self.in_flight.len() < self.width && self.sent < self.max_requests {
            let pick = match self.final_cand.take() {
                Some(f) => Some(f),
                None => self.cands.pop_first().map(|(_, v)| v),
            };
            let Some((peer, depth)) = pick else { break };
            if !self.seen.insert(peer.id) {
                continue;
            }
            self.in_flight.insert(peer.id, (peer, depth));
            self.sent += 1;
            out.push((peer, depth));
        }
        if !out.is_empty() {
            // paper §6.1 asks one node at a time; if it is slow, hedge (`handle_timeout`)
            self.stall_at = self.can_widen().then(|| now + self.stall);
        }
        out
    }

    /// The peer `id` as asked, while its query is in flight.
    pub(crate) fn asked(&self, id: &NodeId) -> Option<Peer> {
        self.in_flight.get(id).map(|(p, _)| *p)
    }

    /// Handles an answer from `from` (which must be in flight; stray answers are ignored).
    pub(crate) fn on_answer(&mut self, from: NodeId, answer: Answer) -> Step {
        let Some((peer, depth)) = self.in_flight.remove(&from) else {
            return Step::Continue;
        };
        match answer {
            Answer::Owner => Step::Done {
                peer,
                hops: depth,
                owner_answered: true,
                from: None,
            },
            Answer::Successor(s, after) => {
                // paper §6.2: the answer must be consistent with the ring: target ∈ (from, s].
                if !in_half_open(&from, &self.target, &s.id) || s.id == from {
                    self.widen();
                    return Step::Rejected;
                }
                if self.want_owner {
                    self.set_final(s, depth + 1);
                    Step::Continue
                } else {
                    // The range's start counts only within [responder, target): a responder
                    // vouches for no node before itself (PROTOCOL.md §6.8 step 6).
                    let from_id = after
                        .filter(|a| *a == from || in_open(&from, a, &self.target))
                        .map(|a| finger_start(&a, 0));
                    Step::Done {
                        peer: s,
                        hops: depth,
                        owner_answered: false,
                        from: from_id,
                    }
                }
            }
            Answer::Closer(peers) => {
                // paper §6.2: every proposed node must lie strictly closer to the target than
                // the responder (in (from, target]); otherwise the responder is not making
                // progress and is never asked again.
                if peers.is_empty()
                    || peers
                        .iter()
                        .any(|p| p.id == from || !in_half_open(&from, &p.id, &self.target))
                {
                    self.widen();
                    return Step::Rejected;
                }
                for p in peers {
                    self.add_candidate(p, depth + 1);
                }
                Step::Continue
            }
        }
    }

    /// The request to `from` failed (timeout, unreachable, refused, garbage).
    pub(crate) fn on_failure(&mut self, from: NodeId) {
        if self.in_flight.remove(&from).is_some() {
            self.widen();
        }
    }

    /// True when nothing is in flight and nothing is left to ask.
    pub(crate) fn is_exhausted(&self) -> bool {
        self.in_flight.is_empty()
            && (self.sent >= self.max_requests
                || (self.cands.is_empty() && self.final_cand.is_none()))
    }
}

#[cfg(test)]
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

    const STALL: Duration = Duration::from_millis(500);

    /// `hedged`: α at once from the start; otherwise one at a time with a stall of [`STALL`].
    fn budget(alpha: usize, hedged: bool, max_requests: usize, max_candidates: usize) -> Budget {
        Budget {
            alpha,
            stall: (!hedged).then_some(STALL),
            max_requests,
            max_candidates,
        }
    }

    /// One fixed instant per test run: the tests that do not look at time use it throughout.
    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    #[test]
    fn closer_answers_must_progress() {
        let mut l = Lookup::new(p(100).id, false, p(0).id, budget(1, true, 10, 10));
        l.add_candidate(p(50), 1);
        assert_eq!(l.next(t0()), vec![(p(50), 1)]);
        // regressing answer
        assert_eq!(
            l.on_answer(p(50).id, Answer::Closer(vec![p(40)])),
            Step::Rejected
        );
        // p(50) never asked again
        l.add_candidate(p(50), 1);
        assert!(l.next(t0()).is_empty());
        assert!(l.is_exhausted());
    }

    #[test]
    fn lookup_completes_and_counts_hops() {
        let mut l = Lookup::new(p(100).id, false, p(0).id, budget(2, true, 10, 10));
        l.add_candidate(p(50), 1);
        l.add_candidate(p(20), 1);
        let first = l.next(t0());
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].0, p(50)); // closest preceding first
        assert_eq!(
            l.on_answer(p(50).id, Answer::Closer(vec![p(90), p(80)])),
            Step::Continue
        );
        assert_eq!(l.next(t0()), vec![(p(90), 2)]);
        assert_eq!(
            l.on_answer(p(90).id, Answer::Successor(p(110), None)),
            Step::Done {
                peer: p(110),
                hops: 2,
                owner_answered: false,
                from: None,
            }
        );
    }

    #[test]
    fn a_successor_answer_names_its_range_from_the_responder_on() {
        let done = |after: Option<u8>| {
            let mut l = Lookup::new(p(100).id, false, p(0).id, budget(1, true, 10, 10));
            l.add_candidate(p(90), 1);
            l.next(t0());
            match l.on_answer(p(90).id, Answer::Successor(p(110), after.map(|a| p(a).id))) {
                Step::Done { peer, from, .. } => {
                    assert_eq!(peer, p(110));
                    from
                }
                s => panic!("{s:?}"),
            }
        };
        // the responder itself, or a node of its successor list before the target
        assert_eq!(done(Some(90)), Some(finger_start(&p(90).id, 0)));
        assert_eq!(done(Some(95)), Some(finger_start(&p(95).id, 0)));
        // before the responder, at or past the target, or not given: the target alone
        assert_eq!(done(Some(80)), None);
        assert_eq!(done(Some(100)), None);
        assert_eq!(done(Some(105)), None);
        assert_eq!(done(None), None);
    }

    #[test]
    fn object_lookup_asks_the_successor() {
        let mut l = Lookup::new(p(100).id, true, p(0).id, budget(1, true, 10, 10));
        l.add_candidate(p(90), 1);
        l.next(t0());
        assert_eq!(
            l.on_answer(p(90).id, Answer::Successor(p(110), None)),
            Step::Continue
        );
        assert_eq!(l.next(t0()), vec![(p(110), 2)]);
        assert_eq!(
            l.on_answer(p(110).id, Answer::Owner),
            Step::Done {
                peer: p(110),
                hops: 2,
                owner_answered: true,
                from: None,
            }
        );
    }

    #[test]
    fn a_narrow_lookup_asks_one_peer_until_trouble() {
        let mut l = Lookup::new(p(100).id, false, p(0).id, budget(3, false, 10, 10));
        for v in [50, 40, 30, 20, 10] {
            l.add_candidate(p(v), 1);
        }
        // healthy: one query at a time, closest first
        assert_eq!(l.next(t0()), vec![(p(50), 1)]);
        assert!(l.next(t0()).is_empty());
        assert!(l.is_narrow());
        assert_eq!(
            l.on_answer(p(50).id, Answer::Closer(vec![p(90), p(80)])),
            Step::Continue
        );
        assert_eq!(l.next(t0()), vec![(p(90), 2)]);
        assert_eq!(l.sent(), 2);
        // a failure opens it to α: the next three candidates at once
        l.on_failure(p(90).id);
        assert!(!l.is_narrow());
        assert_eq!(l.next(t0()).len(), 3);
        // a stray failure report of a peer never asked changes nothing
        let mut m = Lookup::new(p(100).id, false, p(0).id, budget(3, false, 10, 10));
        m.on_failure(p(7).id);
        assert!(m.is_narrow());
    }

    #[test]
    fn a_rejected_answer_or_a_stall_widens() {
        let mut l = Lookup::new(p(100).id, false, p(0).id, budget(2, false, 10, 10));
        for v in [50, 40, 30] {
            l.add_candidate(p(v), 1);
        }
        assert_eq!(l.next(t0()).len(), 1);
        assert_eq!(
            l.on_answer(p(50).id, Answer::Closer(vec![p(45)])),
            Step::Rejected
        );
        assert_eq!(l.next(t0()).len(), 2);

        let mut m = Lookup::new(p(100).id, false, p(0).id, budget(2, false, 10, 10));
        for v in [50, 40, 30] {
            m.add_candidate(p(v), 1);
        }
        assert_eq!(m.next(t0()), vec![(p(50), 1)]);
        // the stall timer fired: one more query, the first one still in flight
        assert!(m.handle_timeout(t0() + STALL));
        assert_eq!(m.next(t0() + STALL), vec![(p(40), 1)]);
        assert!(m.next(t0()).is_empty());
    }

    #[test]
    fn a_narrow_lookup_stalls_after_its_query_stays_unanswered() {
        let t = t0();
        let ms = Duration::from_millis;
        let mut l = Lookup::new(p(100).id, false, p(0).id, budget(3, false, 10, 10));
        for v in [50, 40, 30, 20, 10] {
            l.add_candidate(p(v), 1);
        }
        assert_eq!(l.poll_timeout(), None, "nothing asked yet");
        assert_eq!(l.next(t), vec![(p(50), 1)]);
        assert_eq!(l.poll_timeout(), Some(t + STALL));
        assert!(!l.handle_timeout(t + STALL - ms(1)), "not yet");
        assert!(l.is_narrow());
        // an answer that makes progress: the next query re-arms the timer from its own send
        let t1 = t + ms(100);
        l.on_answer(p(50).id, Answer::Closer(vec![p(90)]));
        assert_eq!(l.poll_timeout(), None, "nothing in flight");
        assert_eq!(l.next(t1), vec![(p(90), 2)]);
        assert_eq!(l.poll_timeout(), Some(t1 + STALL));
        assert!(!l.handle_timeout(t + STALL), "the old deadline is gone");
        // unanswered until the stall: α at once
        assert!(l.handle_timeout(t1 + STALL));
        assert!(!l.is_narrow());
        let t2 = t1 + STALL;
        assert_eq!(l.next(t2).len(), 2, "p(90) is still in flight");
        // all three unanswered for another stall (peers gone): one more each stall, up to 2α
        assert_eq!(l.poll_timeout(), Some(t2 + STALL));
        assert!(l.handle_timeout(t2 + STALL));
        assert_eq!(l.next(t2 + STALL).len(), 1);
        assert!(l.handle_timeout(t2 + STALL * 2));
        assert_eq!(l.next(t2 + STALL * 2).len(), 1, "the last candidate");
        assert!(l.handle_timeout(t2 + STALL * 3), "width 6 = 2α");
        assert_eq!(l.poll_timeout(), None, "at 2α the timer is off");
        assert!(!l.handle_timeout(t2 + STALL * 10));
    }

    #[test]
    fn wide_and_single_query_lookups_never_stall() {
        let t = t0();
        // hedged from the start
        let mut w = Lookup::new(p(100).id, false, p(0).id, budget(3, true, 10, 10));
        // α = 1 (the finger sweep): narrow and wide are the same
        let mut one = Lookup::new(p(100).id, false, p(0).id, budget(1, false, 10, 10));
        for l in [&mut w, &mut one] {
            for v in [50, 40, 30] {
                l.add_candidate(p(v), 1);
            }
            assert!(!l.next(t).is_empty());
            assert_eq!(l.poll_timeout(), None);
            assert!(!l.handle_timeout(t + STALL * 10));
        }
    }

    #[test]
    fn a_failure_widens_and_the_next_queries_rearm_the_stall() {
        let t = t0();
        let ms = Duration::from_millis;
        let mut l = Lookup::new(p(100).id, false, p(0).id, budget(2, false, 10, 10));
        for v in [50, 40, 30, 20, 10] {
            l.add_candidate(p(v), 1);
        }
        l.next(t);
        l.on_failure(p(50).id);
        assert_eq!(l.poll_timeout(), None, "nothing in flight");
        assert!(!l.handle_timeout(t + STALL));
        assert_eq!(l.next(t + ms(10)).len(), 2);
        assert_eq!(l.poll_timeout(), Some(t + ms(10) + STALL));
        // a failure never narrows a lookup that stalls had widened
        assert!(l.handle_timeout(t + ms(10) + STALL));
        l.on_failure(p(40).id);
        assert_eq!(l.next(t + ms(20) + STALL).len(), 2, "width 3 kept");
    }

    #[test]
    fn a_lookup_is_reseeded_at_most_twice_and_never_asks_a_peer_again() {
        let t = t0();
        let mut l = Lookup::new(p(100).id, false, p(0).id, budget(1, true, 10, 10));
        l.seed(None, vec![p(50)]);
        assert_eq!(l.next(t), vec![(p(50), 1)]);
        l.on_failure(p(50).id);
        assert!(l.is_exhausted());
        // a refill with only peers already asked leaves nothing to ask
        assert!(!l.reseed(None, vec![p(50)]));
        assert!(l.reseed(Some(p(120)), vec![p(60)]));
        assert_eq!(l.next(t), vec![(p(120), 1)], "the successor first");
        l.on_failure(p(120).id);
        assert_eq!(l.next(t), vec![(p(60), 1)]);
        l.on_failure(p(60).id);
        assert!(!l.can_reseed());
        assert!(!l.reseed(None, vec![p(70)]));
        assert!(l.is_exhausted());
    }

    #[test]
    fn inconsistent_successor_rejected() {
        let mut l = Lookup::new(p(100).id, false, p(0).id, budget(1, true, 10, 10));
        l.add_candidate(p(90), 1);
        l.next(t0());
        assert_eq!(
            l.on_answer(p(90).id, Answer::Successor(p(95), None)),
            Step::Rejected
        );
    }

    proptest! {
        /// Whatever peers answer, the lookup never asks a peer twice, never exceeds its
        /// request budget and is exhausted once nobody is left.
        #[test]
        fn never_asks_twice(ops in proptest::collection::vec((any::<u8>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..4)), 1..60)) {
            let mut l = Lookup::new(p(128).id, true, p(0).id, budget(3, true, 20, 8));
            for v in [10u8, 20, 30] { l.add_candidate(p(v), 1); }
            let mut asked = BTreeSet::new();
            for (_, ok, peers) in ops {
                let batch = l.next(t0());
                for (peer, _) in &batch {
                    prop_assert!(asked.insert(peer.id));
                }
                prop_assert!(asked.len() <= 20);
                if let Some((peer, _)) = batch.first() {
                    if ok {
                        let _ = l.on_answer(peer.id, Answer::Closer(peers.iter().map(|v| p(*v)).collect()));
                    } else {
                        l.on_failure(peer.id);
                    }
                }
                for (peer, _) in batch.iter().skip(1) {
                    l.on_failure(peer.id);
                }
            }
        }
    }

    proptest! {
        /// Whatever peers answer and whenever the timer fires, a lookup asks for a timeout only
        /// while it can widen (below 2α) with queries in flight, one stall after its last
        /// query sent or its last stall; a timeout widens the lookup exactly when it comes at
        /// or after it, and nothing narrows it.
        #[test]
        fn the_stall_timer_follows_the_query_in_flight(ops in proptest::collection::vec((0u8..4, 0u64..800, proptest::collection::vec(any::<u8>(), 0..3)), 1..40)) {
            let mut t = t0();
            let mut l = Lookup::new(p(200).id, false, p(0).id, budget(3, false, 30, 8));
            for v in [10u8, 20, 30, 40, 50] { l.add_candidate(p(v), 1); }
            prop_assert_eq!(l.next(t).len(), 1);
            let mut last_arm = t;
            for (op, dt, peers) in ops {
                t += Duration::from_millis(dt);
                let width = l.width;
                match op {
                    0 => {
                        let due = l.poll_timeout();
                        let fired = l.handle_timeout(t);
                        prop_assert_eq!(fired, due.is_some_and(|d| d <= t));
                        if fired {
                            prop_assert!(l.width > width && l.width <= 6);
                            last_arm = t;
                        } else {
                            prop_assert_eq!(l.width, width);
                        }
                    }
                    1 => {
                        if let Some(id) = l.in_flight.keys().next().copied() {
                            let _ = l.on_answer(id, Answer::Closer(peers.iter().map(|v| p(*v)).collect()));
                        }
                    }
                    2 => {
                        if let Some(id) = l.in_flight.keys().next().copied() {
                            l.on_failure(id);
                        }
                    }
                    _ => {}
                }
                prop_assert!(l.width >= width, "never narrower");
                if !l.next(t).is_empty() {
                    last_arm = t;
                }
                prop_assert!(l.in_flight.len() <= l.width);
                match l.poll_timeout() {
                    Some(d) => {
                        prop_assert!(l.can_widen() && !l.in_flight.is_empty());
                        prop_assert_eq!(d, last_arm + STALL);
                    }
                    None => prop_assert!(!l.can_widen() || l.in_flight.is_empty()),
                }
            }
        }
    }
}
