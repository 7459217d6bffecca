//! Request correlation: every request this node sends gets an id, a deadline and a
//! [`Purpose`] that says which part of the node owns its answer (libp2p's rule: correlate every
//! response to its request by an id). The table is bounded by `Config::max_pending_requests`;
//! the core times requests out itself, so a late or missing report from the driver is harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;

use themis_crypto::NodeId;

use super::Node;
use super::api::{Contact, Output, QueryId};
use crate::proto::wire::{Peer, Request};

/// A join request may take this many request timeouts (the bootstrap runs a lookup first).
const JOIN_TIMEOUT_FACTOR: u32 = 8;

/// Why a request was sent: the owner of its answer (see `Node::on_result`).
#[derive(Debug)]
pub(super) enum Purpose {
    /// A query of a lookup (queries).
    Lookup {
        query: QueryId,
        peer: NodeId,
        /// The lookup's target: a provider lookup runs one lookup per replica in turn, and an
        /// answer still in flight from the previous one must not be taken for the current one.
        target: NodeId,
    },
    /// A replica store (registrations).
    Store {
        /// The registration the store is a replica of.
        query: QueryId,
        /// `Some(r)`: replica `r`, sent to the owner a lookup's claim named; refused
        /// `not_responsible`, its owner is looked up again (see [`Node::store_answer`]).
        relookup: Option<u8>,
    },
    /// A join through a bootstrap (membership).
    Join,
    /// The newcomer asks the successor its bootstrap named for its neighbours (membership).
    JoinVerify { succ: Peer },
    /// Zave's stabilize (ring maintenance).
    Stabilize { succ: Peer },
    /// A closer successor candidate, adopted once it answers (ring maintenance).
    StabilizeCandidate {
        cand: Peer,
        fallback: Vec<Peer>,
        depth: usize,
    },
    /// "I may be your predecessor" (ring maintenance; a leave may wait for it).
    Notify,
    /// Liveness of the predecessor (ring maintenance).
    CheckPred { pred: Peer },
    /// Records handed to a closer predecessor (hand-off).
    Handoff { records: Vec<(NodeId, NodeId, u64)> },
    /// A chunk of a graceful leave (membership).
    Leave { last: bool },
    /// The leaver tells its predecessor its new successors (membership).
    SetSuccessors,
    /// A probe of a lost peer or bootstrap (ring unification).
    Probe { contact: Contact },
    /// A `unify` sent or forwarded (ring unification; only acknowledged).
    UnifyForward,
    /// A candidate successor from another ring, adopted once it answers (ring unification).
    UnifyCandidate { cand: Peer, depth: usize },
    /// Who listens at `old.addr` now: `old.id` was seen at `new.addr` (moves).
    AddressCheck { old: Peer, new: Peer },
}

/// A request in flight.
#[derive(Debug)]
pub(super) struct Pending {
    /// When it was sent (the round trip of a lookup's query feeds the stall estimate).
    pub(super) sent: Instant,
    pub(super) deadline: Instant,
    /// The node id the answer must come from, if known.
    pub(super) expect: Option<NodeId>,
    pub(super) purpose: Purpose,
}

/// The requests in flight, by id and by deadline.
#[derive(Debug)]
pub(super) struct Requests {
    pending: BTreeMap<u64, Pending>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_id: u64,
    max: usize,
}

impl Requests {
    /// An empty table of at most `max` requests.
    pub(super) fn new(max: usize) -> Self {
        Self {
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            next_id: 1,
            max,
        }
    }

    /// Number of requests in flight.
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Records a request; `None` when the table is full.
    fn insert(
        &mut self,
        sent: Instant,
        deadline: Instant,
        expect: Option<NodeId>,
        purpose: Purpose,
    ) -> Option<u64> {
        if self.pending.len() >= self.max {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(
            id,
            Pending {
                sent,
                deadline,
                expect,
                purpose,
            },
        );
        self.deadlines.insert((deadline, id));
        Some(id)
    }

    /// Removes the request `id` (answered or failed); `None` if unknown (late or stray).
    pub(super) fn take(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        self.deadlines.remove(&(p.deadline, id));
        Some(p)
    }

    /// Removes and returns a request whose deadline is at or before `now`, earliest first.
    pub(super) fn pop_expired(&mut self, now: Instant) -> Option<Pending> {
        while let Some(&(d, id)) = self.deadlines.first() {
            if d > now {
                return None;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.pending.remove(&id) {
                return Some(p);
            }
        }
        None
    }

    /// The earliest deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// True while a Notify to `to` is unanswered.
    pub(super) fn notify_in_flight(&self, to: &NodeId) -> bool {
        self.pending
            .values()
            .any(|p| matches!(p.purpose, Purpose::Notify) && p.expect == Some(*to))
    }

    /// The first request (lowest id) that `f` selects (tests).
    #[cfg(test)]
    pub(super) fn find(&self, f: impl Fn(&Pending) -> bool) -> Option<u64> {
        self.pending.iter().find(|(_, p)| f(p)).map(|(id, _)| *id)
    }

    /// The request `id` (tests).
    #[cfg(test)]
    pub(super) fn get(&self, id: u64) -> Option<&Pending> {
        self.pending.get(&id)
    }
}

impl Node {
    /// Sends `req` to `to` for `purpose`: false (and nothing sent) when too many requests are
    /// in flight.
    pub(super) fn send(
        &mut self,
        now: Instant,
        to: Contact,
        req: &Request,
        purpose: Purpose,
    ) -> bool {
        // a join is answered after the bootstrap's own lookup, which may meet timeouts itself
        let timeout = match purpose {
            Purpose::Join => self.cfg.request_timeout * JOIN_TIMEOUT_FACTOR,
            _ => self.cfg.request_timeout,
        };
        let Some(request_id) = self.requests.insert(now, now + timeout, to.id, purpose) else {
            return false;
        };
        let bytes = req.encode();
        self.metrics.requests_sent += 1;
        self.metrics.request_bytes_sent += bytes.len() as u64;
        match req {
            Request::Find { .. } => self.metrics.finds_sent += 1,
            Request::Store { .. } => self.metrics.stores_sent += 1,
            _ => {}
        }
        self.outputs.push_back(Output::Send {
            request_id,
            to: to.addr,
            expect: to.id,
            bytes,
        });
        true
    }

    /// Asks who listens at `to` ([`Output::Identify`]) for `purpose`: false (and nothing
    /// asked) when too many requests are in flight.
    pub(super) fn identify(&mut self, now: Instant, to: SocketAddr, purpose: Purpose) -> bool {
        let deadline = now + self.cfg.request_timeout;
        let Some(request_id) = self.requests.insert(now, deadline, None, purpose) else {
            return false;
        };
        self.outputs.push_back(Output::Identify { request_id, to });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn requests_are_bounded_correlated_and_expire_in_deadline_order() {
        let t = Instant::now();
        let mut r = Requests::new(2);
        let a = r
            .insert(t, t + Duration::from_secs(2), None, Purpose::Notify)
            .unwrap();
        let b = r
            .insert(t, t + Duration::from_secs(1), None, Purpose::Join)
            .unwrap();
        assert_ne!(a, b);
        assert!(r.insert(t, t, None, Purpose::Notify).is_none(), "full");
        assert_eq!(r.next_deadline(), Some(t + Duration::from_secs(1)));
        assert!(r.pop_expired(t).is_none());
        let p = r.pop_expired(t + Duration::from_secs(5)).unwrap();
        assert!(matches!(p.purpose, Purpose::Join));
        assert!(r.take(b).is_none(), "an expired request is gone");
        assert!(r.take(a).is_some());
        assert!(r.take(a).is_none(), "answered once");
        assert_eq!((r.len(), r.next_deadline()), (0, None));
    }
}
