//! The iterative find of paper §6.1 as a small pure state machine (in the shape of rust-libp2p's
//! `ClosestPeersIter`): the initiator drives every step, checks that every answer makes progress
//! toward the target on the ring and never asks again a peer that failed to make progress or
//! timed out (the eclipse defence of paper §6.2).

use std::collections::{BTreeMap, BTreeSet};

use themis_crypto::{NODE_ID_LEN, NodeId};

use super::ring::{distance, in_half_open};
use super::wire::Peer;

/// What a responder said, already decoded.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    /// "I am responsible for the target."
    Owner,
    /// "The target's successor is this peer" (target ∈ (responder, peer]).
    Successor(Peer),
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
    },
    /// The responder's answer made no progress: it is never asked again.
    Rejected,
}

#[derive(Clone, Debug)]
pub(crate) struct Lookup {
    target: NodeId,
    want_owner: bool,
    alpha: usize,
    /// Queries allowed in flight now: 1 while every answer comes in and makes progress (the
    /// paper's sequential iterative find), `alpha` once the lookup is hedged.
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
    /// The stall timer armed for this lookup in the node (`(when, sent)`), to disarm it.
    pub(crate) stall: Option<(std::time::Instant, usize)>,
    /// Times the node refilled the candidates from its routing table when they ran out.
    pub(crate) reseeds: u8,
}

impl Lookup {
    /// A lookup of `target` with at most `alpha` queries in flight. `hedged` starts it with
    /// all `alpha` at once; otherwise it asks one peer at a time until [`Lookup::widen`] (or a
    /// failure or rejected answer) opens it to `alpha`.
    pub(crate) fn new(
        target: NodeId,
        want_owner: bool,
        me: NodeId,
        (alpha, hedged): (usize, bool),
        max_requests: usize,
        max_candidates: usize,
    ) -> Self {
        let mut seen = BTreeSet::new();
        seen.insert(me);
        let alpha = alpha.max(1);
        Self {
            target,
            want_owner,
            alpha,
            width: if hedged { alpha } else { 1 },
            max_requests,
            max_candidates: max_candidates.max(1),
            cands: BTreeMap::new(),
            final_cand: None,
            seen,
            in_flight: BTreeMap::new(),
            sent: 0,
            stall: None,
            reseeds: 0,
        }
    }

    pub(crate) fn target(&self) -> NodeId {
        self.target
    }

    /// Queries sent so far (a lookup that sent nothing new since a given count is stalled).
    pub(crate) fn sent(&self) -> usize {
        self.sent
    }

    /// True while the lookup asks one peer at a time and could ask more.
    pub(crate) fn is_narrow(&self) -> bool {
        self.width < self.alpha
    }

    /// Opens the lookup to `alpha` queries in flight: a query failed, was answered without
    /// progress, or is slow to answer.
    pub(crate) fn widen(&mut self) {
        self.width = self.alpha;
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

    /// The next peers to query (up to α in flight), with their path length.
    pub(crate) fn next(&mut self) -> Vec<(Peer, u32)> {
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
        out
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
            },
            Answer::Successor(s) => {
                // paper §6.2: the answer must be consistent with the ring: target ∈ (from, s].
                if !in_half_open(&from, &self.target, &s.id) || s.id == from {
                    self.widen();
                    return Step::Rejected;
                }
                if self.want_owner {
                    self.set_final(s, depth + 1);
                    Step::Continue
                } else {
                    Step::Done {
                        peer: s,
                        hops: depth,
                        owner_answered: false,
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

    #[test]
    fn closer_answers_must_progress() {
        let mut l = Lookup::new(p(100).id, false, p(0).id, (1, true), 10, 10);
        l.add_candidate(p(50), 1);
        assert_eq!(l.next(), vec![(p(50), 1)]);
        // regressing answer
        assert_eq!(
            l.on_answer(p(50).id, Answer::Closer(vec![p(40)])),
            Step::Rejected
        );
        // p(50) never asked again
        l.add_candidate(p(50), 1);
        assert!(l.next().is_empty());
        assert!(l.is_exhausted());
    }

    #[test]
    fn lookup_completes_and_counts_hops() {
        let mut l = Lookup::new(p(100).id, false, p(0).id, (2, true), 10, 10);
        l.add_candidate(p(50), 1);
        l.add_candidate(p(20), 1);
        let first = l.next();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].0, p(50)); // closest preceding first
        assert_eq!(
            l.on_answer(p(50).id, Answer::Closer(vec![p(90), p(80)])),
            Step::Continue
        );
        assert_eq!(l.next(), vec![(p(90), 2)]);
        assert_eq!(
            l.on_answer(p(90).id, Answer::Successor(p(110))),
            Step::Done {
                peer: p(110),
                hops: 2,
                owner_answered: false
            }
        );
    }

    #[test]
    fn object_lookup_asks_the_successor() {
        let mut l = Lookup::new(p(100).id, true, p(0).id, (1, true), 10, 10);
        l.add_candidate(p(90), 1);
        l.next();
        assert_eq!(
            l.on_answer(p(90).id, Answer::Successor(p(110))),
            Step::Continue
        );
        assert_eq!(l.next(), vec![(p(110), 2)]);
        assert_eq!(
            l.on_answer(p(110).id, Answer::Owner),
            Step::Done {
                peer: p(110),
                hops: 2,
                owner_answered: true
            }
        );
    }

    #[test]
    fn a_narrow_lookup_asks_one_peer_until_trouble() {
        let mut l = Lookup::new(p(100).id, false, p(0).id, (3, false), 10, 10);
        for v in [50, 40, 30, 20, 10] {
            l.add_candidate(p(v), 1);
        }
        // healthy: one query at a time, closest first
        assert_eq!(l.next(), vec![(p(50), 1)]);
        assert!(l.next().is_empty());
        assert!(l.is_narrow());
        assert_eq!(
            l.on_answer(p(50).id, Answer::Closer(vec![p(90), p(80)])),
            Step::Continue
        );
        assert_eq!(l.next(), vec![(p(90), 2)]);
        assert_eq!(l.sent(), 2);
        // a failure opens it to α: the next three candidates at once
        l.on_failure(p(90).id);
        assert!(!l.is_narrow());
        assert_eq!(l.next().len(), 3);
        // a stray failure report of a peer never asked changes nothing
        let mut m = Lookup::new(p(100).id, false, p(0).id, (3, false), 10, 10);
        m.on_failure(p(7).id);
        assert!(m.is_narrow());
    }

    #[test]
    fn a_rejected_answer_or_a_stall_widens() {
        let mut l = Lookup::new(p(100).id, false, p(0).id, (2, false), 10, 10);
        for v in [50, 40, 30] {
            l.add_candidate(p(v), 1);
        }
        assert_eq!(l.next().len(), 1);
        assert_eq!(
            l.on_answer(p(50).id, Answer::Closer(vec![p(45)])),
            Step::Rejected
        );
        assert_eq!(l.next().len(), 2);

        let mut m = Lookup::new(p(100).id, false, p(0).id, (2, false), 10, 10);
        for v in [50, 40, 30] {
            m.add_candidate(p(v), 1);
        }
        assert_eq!(m.next(), vec![(p(50), 1)]);
        // the node's stall timer fired: one more query, the first one still in flight
        m.widen();
        assert_eq!(m.next(), vec![(p(40), 1)]);
        assert!(m.next().is_empty());
    }

    #[test]
    fn inconsistent_successor_rejected() {
        let mut l = Lookup::new(p(100).id, false, p(0).id, (1, true), 10, 10);
        l.add_candidate(p(90), 1);
        l.next();
        assert_eq!(
            l.on_answer(p(90).id, Answer::Successor(p(95))),
            Step::Rejected
        );
    }

    proptest! {
        /// Whatever peers answer, the lookup never asks a peer twice, never exceeds its
        /// request budget and is exhausted once nobody is left.
        #[test]
        fn never_asks_twice(ops in proptest::collection::vec((any::<u8>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..4)), 1..60)) {
            let mut l = Lookup::new(p(128).id, true, p(0).id, (3, true), 20, 8);
            for v in [10u8, 20, 30] { l.add_candidate(p(v), 1); }
            let mut asked = BTreeSet::new();
            for (_, ok, peers) in ops {
                let batch = l.next();
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
}
