//! Ring unification (PROTOCOL.md §6.14): finding, and merging with, a ring this node was split
//! from.
//!
//! Zave's maintenance keeps one ring correct, but once a partition has lasted longer than the
//! request timeout each side has dropped the other from every table, and nothing in stabilize
//! ever contacts the other side again: two rings forever. Here each node remembers, in a
//! bounded [`LostTable`], the peers it lost contact with (failed successors, predecessor and
//! fingers) and its bootstraps, and probes a few of them per period for a long, bounded time
//! (as Serf retries failed members). A probe is a plain `get_neighbors`. A peer that answers and
//! is not visibly on our ring is merged with it, after the ring-unification algorithm of
//! Shafaat, Ghodsi and Haridi (P2P 2007), simplified for Zave-style maintenance:
//!
//! - `unify(q)` is routed through the receiver's ring toward `q`'s id (their `mlookup`) and
//!   ends at the node `m` with `q ∈ (m, m.successor)`; `m` asks `q` for its neighbours and, if
//!   `q` answers, adopts it as successor (their `trymerge`), notifies it, and sends
//!   `unify(old successor)` to `q`: the old successor is routed into `q`'s ring in turn. So
//!   the merge zips forward along both rings, one adoption per step.
//! - Zave's stabilize zips backward: `q` adopts `m` as predecessor on its notify, and `q`'s
//!   former predecessor learns `m` from `q` at its next stabilize.
//! - The node that detects a foreign peer starts both walks: `unify(q)` in its own ring, and
//!   `unify(me)` sent to `q`, for `q`'s ring. Every node probing its own lost peers starts the
//!   same in parallel, so the merge runs from many points at once.
//!
//! Records move as in a join: a node that adopts a closer predecessor hands it the records it
//! is no longer responsible for (§6.9 handoff). Everything is bounded: the table
//! (`Config::unify_table_len`), probes per period, forwards per `unify` ([`MAX_UNIFY_HOPS`]),
//! candidates being checked at once ([`MAX_UNIFY_CANDIDATES`]), and each merge step sends at
//! most three messages (`get_neighbors` to the candidate, `notify`, `unify`).

use std::time::Instant;

use themis_crypto::NodeId;

use super::api::{Contact, RequestFailure};
use super::requests::Purpose;
use super::{Node, State};
use crate::proto::record::Refusal;
use crate::proto::ring::{distance, in_open};
use crate::proto::wire::{Peer, Request, Response, WirePeer};

/// Forwards of one `unify` before it is dropped (a lookup in a ring of a million nodes takes
/// about 20).
pub(super) const MAX_UNIFY_HOPS: u8 = 32;
/// Candidate successors from another ring being checked (`get_neighbors`) at once.
const MAX_UNIFY_CANDIDATES: usize = 4;
/// Steps of the walk back from a candidate toward its predecessor (as stabilize's).
const MAX_UNIFY_CHAIN: usize = 32;
/// Probe periods an entry that answered waits before its next probe.
const ANSWERED_BACKOFF: u32 = 6;

/// One peer this node lost contact with, or one of its bootstraps.
#[derive(Debug, Clone)]
struct LostEntry {
    contact: Contact,
    bootstrap: bool,
    /// Forgotten after this (a bootstrap's is renewed whenever it answers from our ring).
    expires: Instant,
    /// When it was last probed (`None`: never).
    last_probe: Option<Instant>,
    /// Not probed again before this: an entry that answered waits [`ANSWERED_BACKOFF`]
    /// probe periods (a merge it started needs no second start soon after).
    not_before: Option<Instant>,
    probing: bool,
}

/// The lost-peer table and the probe schedule (PROTOCOL.md §6.14).
#[derive(Debug)]
pub(super) struct LostTable {
    entries: Vec<LostEntry>,
    pub(super) next_probe: Instant,
    /// `get_neighbors` to candidates of another ring in flight.
    candidates: usize,
}

impl LostTable {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            entries: Vec::new(),
            next_probe: now,
            candidates: 0,
        }
    }

    /// Number of entries (tests and diagnostics).
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty (no probe round is scheduled then).
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, c: &Contact) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| match (e.contact.id, c.id) {
                (Some(a), Some(b)) => a == b,
                _ => e.contact.addr == c.addr,
            })
    }

    /// Adds or refreshes `c`; when full, the oldest lost peer (never a bootstrap) makes room.
    fn remember(&mut self, c: Contact, bootstrap: bool, expires: Instant, cap: usize) {
        if cap == 0 {
            return;
        }
        if let Some(i) = self.position(&c) {
            if let Some(e) = self.entries.get_mut(i) {
                e.expires = e.expires.max(expires);
                e.bootstrap |= bootstrap;
                if c.id.is_some() {
                    e.contact = c;
                }
            }
            return;
        }
        if self.entries.len() >= cap {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| !e.bootstrap && !e.probing)
                .min_by_key(|(_, e)| e.expires)
                .map(|(i, _)| i);
            match victim {
                Some(i) => {
                    self.entries.swap_remove(i);
                }
                None => return,
            }
        }
        self.entries.push(LostEntry {
            contact: c,
            bootstrap,
            expires,
            last_probe: None,
            not_before: None,
            probing: false,
        });
    }

    fn remove(&mut self, c: &Contact) {
        if let Some(i) = self.position(c) {
            self.entries.swap_remove(i);
        }
    }
}

impl Node {
    /// Remembers `p` as lost (it failed as successor, predecessor or finger).
    pub(super) fn remember_lost(&mut self, now: Instant, p: Peer) {
        if p.id == self.ring.me.id {
            return;
        }
        let exp = now + self.cfg.unify_retention;
        self.lost
            .remember(p.into(), false, exp, self.cfg.unify_table_len);
    }

    /// Remembers the bootstraps of a join as contacts to probe.
    pub(super) fn remember_bootstraps(&mut self, now: Instant, list: &[Contact]) {
        let exp = now + self.cfg.unify_retention;
        for c in list {
            if c.id == Some(self.ring.me.id) || c.addr == self.ring.me.addr {
                continue;
            }
            self.lost.remember(*c, true, exp, self.cfg.unify_table_len);
        }
    }

    /// Entries in the lost-peer table (tests and diagnostics).
    pub fn lost_peers(&self) -> usize {
        self.lost.len()
    }

    /// True if `id` is in our view of the ring (predecessor, successors, fingers).
    fn in_view(&self, id: &NodeId) -> bool {
        self.ring.pred.is_some_and(|p| p.id == *id)
            || self.ring.succs.iter().any(|p| p.id == *id)
            || self.ring.fingers.iter().flatten().any(|p| p.id == *id)
    }

    /// The probe round: expired entries go, lost peers back in our view go (they are on our
    /// ring again), and the least recently probed of the rest get a `get_neighbors`.
    pub(super) fn probe_round(&mut self, now: Instant) {
        self.lost.next_probe = now + self.jitter(self.cfg.unify_probe_period);
        let ids: Vec<Option<NodeId>> = self.lost.entries.iter().map(|e| e.contact.id).collect();
        let back: Vec<bool> = ids
            .iter()
            .map(|id| id.is_some_and(|id| self.in_view(&id)))
            .collect();
        let mut k = 0;
        self.lost.entries.retain(|e| {
            let keep = e.expires > now && (e.bootstrap || !back.get(k).copied().unwrap_or(false));
            k += 1;
            keep || e.probing
        });
        let mut order: Vec<usize> = (0..self.lost.entries.len())
            .filter(|i| {
                self.lost
                    .entries
                    .get(*i)
                    .is_some_and(|e| !e.probing && e.not_before.is_none_or(|t| t <= now))
            })
            .collect();
        order.sort_by_key(|i| self.lost.entries.get(*i).and_then(|e| e.last_probe));
        for i in order.into_iter().take(self.cfg.unify_probes_per_period) {
            let Some(e) = self.lost.entries.get(i) else {
                continue;
            };
            let c = e.contact;
            // a bootstrap that is a member of our ring costs nothing to skip
            if e.bootstrap && c.id.is_some_and(|id| self.in_view(&id)) {
                continue;
            }
            if self.send(
                now,
                c,
                &Request::GetNeighbors,
                Purpose::Probe { contact: c },
            ) {
                self.metrics.unify_probes += 1;
                if let Some(e) = self.lost.entries.get_mut(i) {
                    e.probing = true;
                    e.last_probe = Some(now);
                }
            }
        }
    }

    /// The answer of probe `contact`.
    pub(super) fn on_probe(
        &mut self,
        now: Instant,
        contact: Contact,
        from: Option<NodeId>,
        r: Result<Response, RequestFailure>,
    ) {
        let Some(i) = self.lost.position(&contact) else {
            return;
        };
        let bootstrap = self.lost.entries.get(i).is_some_and(|e| e.bootstrap);
        let backoff = now + self.cfg.unify_probe_period * ANSWERED_BACKOFF;
        if let Some(e) = self.lost.entries.get_mut(i) {
            e.probing = false;
            if r.is_ok() {
                e.not_before = Some(backoff);
            }
        }
        let me = self.ring.me;
        match (r, from) {
            (
                Ok(Response::Neighbors {
                    predecessor,
                    successors,
                }),
                Some(id),
            ) if id != me.id => {
                let q = Peer {
                    id,
                    addr: contact.addr,
                };
                let names_us = predecessor
                    .into_iter()
                    .chain(successors)
                    .any(|p| Peer::from(p).id == me.id);
                if names_us || self.in_view(&id) {
                    // on our ring: a lost peer is found again; a bootstrap stays, renewed
                    if bootstrap {
                        let exp = now + self.cfg.unify_retention;
                        if let Some(e) = self.lost.entries.get_mut(i) {
                            e.expires = exp;
                            e.contact.id = Some(id);
                        }
                    } else {
                        self.lost.remove(&contact);
                    }
                    return;
                }
                if !matches!(self.state, State::Member) {
                    return;
                }
                // Not visibly on our ring: route it into ours, and us into its ring. Two
                // routed lookups; when `q` is on our ring after all, they end with nothing to do.
                self.metrics.unify_foreign += 1;
                if let Some(e) = self.lost.entries.get_mut(i) {
                    e.contact.id = Some(id);
                }
                self.unify_with(now, q, 0);
                let req = Request::Unify {
                    peer: WirePeer::from(me),
                    hops: 0,
                };
                self.send(now, q.into(), &req, Purpose::UnifyForward);
            }
            // it answers but has left or is joining: a lost peer that left is forgotten
            (
                Ok(Response::Refused {
                    reason: Refusal::NotMember | Refusal::Leaving,
                }),
                _,
            ) if !bootstrap => self.lost.remove(&contact),
            // our own id answering at another address (a duplicate identity) is no ring to
            // merge with
            (Ok(_), Some(id)) if id == me.id => self.lost.remove(&contact),
            _ => {}
        }
    }

    /// A `unify(peer)` request (or our own detection, `hops = 0`): `peer` may belong between
    /// us and our successor. Adopt it (after it answers) or route it on toward its id.
    pub(super) fn unify_with(&mut self, now: Instant, q: Peer, hops: u8) {
        let me = self.ring.me.id;
        if q.id == me || !matches!(self.state, State::Member) {
            return;
        }
        match self.ring.succ() {
            Some(s) if s.id == q.id => {}
            Some(s) if !in_open(&me, &q.id, &s.id) => {
                if hops >= MAX_UNIFY_HOPS {
                    return;
                }
                // mlookup: the closest preceding node of q's id that we know, not q itself
                let next = self
                    .ring
                    .closest_preceding(&q.id, 2)
                    .into_iter()
                    .find(|p| p.id != q.id);
                if let Some(n) = next {
                    let req = Request::Unify {
                        peer: WirePeer::from(q),
                        hops: hops.saturating_add(1),
                    };
                    self.send(now, n.into(), &req, Purpose::UnifyForward);
                }
            }
            // q ∈ (me, successor), or we are alone: a candidate successor
            _ => self.unify_candidate(now, q, 1),
        }
    }

    /// Asks candidate successor `q` for its neighbours before adopting it (Zave: only a live
    /// node becomes a successor).
    pub(super) fn unify_candidate(&mut self, now: Instant, q: Peer, depth: usize) {
        if self.lost.candidates >= MAX_UNIFY_CANDIDATES {
            return;
        }
        if self.send(
            now,
            q.into(),
            &Request::GetNeighbors,
            Purpose::UnifyCandidate { cand: q, depth },
        ) {
            self.lost.candidates += 1;
        }
    }

    /// The candidate's answer: adopt it if it still lies between us and our successor, tell it
    /// about our old successor, and walk back toward its predecessor if that is closer still.
    pub(super) fn on_unify_candidate(
        &mut self,
        now: Instant,
        (cand, depth): (Peer, usize),
        r: Result<Response, RequestFailure>,
    ) {
        self.lost.candidates = self.lost.candidates.saturating_sub(1);
        let Ok(Response::Neighbors {
            predecessor,
            successors,
        }) = r
        else {
            return;
        };
        if !matches!(self.state, State::Member) {
            return;
        }
        let me = self.ring.me.id;
        let old = self.ring.succ();
        if old.is_some_and(|s| !in_open(&me, &cand.id, &s.id)) {
            return;
        }
        // The successor list: the candidate's list and ours merged in ring order from us (both
        // come from valid rings; the merged one is the better of the two).
        let mut all: Vec<Peer> = self.ring.list_from(cand, successors);
        all.extend(self.ring.succs.iter().copied());
        all.sort_by_key(|p| distance(&me, &p.id));
        let list = self.ring.sanitize_list(all);
        self.set_succs(list);
        self.metrics.unify_merges += 1;
        self.neighbourhood_changed(now);
        self.notify(now, cand);
        // Shafaat et al.'s trymerge: our old successor finds its place in the candidate's ring
        if let Some(o) = old.filter(|o| o.id != cand.id) {
            let req = Request::Unify {
                peer: WirePeer::from(o),
                hops: 0,
            };
            self.send(now, cand.into(), &req, Purpose::UnifyForward);
        }
        // the candidate's predecessor may be closer to us still (the backward walk)
        let closer = predecessor
            .map(Peer::from)
            .filter(|x| x.id != me && in_open(&me, &x.id, &cand.id));
        match closer {
            Some(x) if depth < MAX_UNIFY_CHAIN => self.unify_candidate(now, x, depth + 1),
            // a walk still going at its bound: our successor is far past the true one
            Some(_) => self.check_successor(now),
            None => {}
        }
    }

    /// A `unify` request from a peer: acknowledged at once, then handled.
    pub(super) fn serve_unify(&mut self, now: Instant, peer: Peer, hops: u8) -> Response {
        self.unify_with(now, peer, hops);
        Response::Ack
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn c(b: u8) -> Contact {
        Contact {
            addr: SocketAddr::from(([10, 0, 0, b], 7000)),
            id: Some(NodeId::from_bytes([b; 32])),
        }
    }

    #[test]
    fn table_is_bounded_and_keeps_bootstraps() {
        let t = Instant::now();
        let mut l = LostTable::new(t);
        l.remember(c(1), true, t + Duration::from_secs(1), 3);
        for b in 2..10u8 {
            l.remember(c(b), false, t + Duration::from_secs(u64::from(b)), 3);
        }
        assert_eq!(l.len(), 3);
        assert!(l.position(&c(1)).is_some(), "a bootstrap is never evicted");
        assert!(l.position(&c(9)).is_some() && l.position(&c(8)).is_some());
        // refreshing an entry does not grow the table
        l.remember(c(9), false, t + Duration::from_secs(99), 3);
        assert_eq!(l.len(), 3);
        l.remove(&c(9));
        assert_eq!(l.len(), 2);
        // a table of size 0 stays empty
        let mut z = LostTable::new(t);
        z.remember(c(1), true, t, 0);
        assert_eq!(z.len(), 0);
    }
}
