//! The iterative lookups the queries run (paper §6.1 find, every answer checked as §6.2 asks):
//! seeding from the local tables, sending what each [`Lookup`] wants, its answers, refills and
//! stall timers; and the responder side of a find.

use std::time::Instant;

use themis_crypto::NodeId;

use super::Node;
use super::api::{QueryId, RequestFailure};
use super::queries::Job;
use super::requests::Purpose;
use crate::proto::lookup::{Answer, Budget, Lookup, Step};
use crate::proto::record::Refusal;
use crate::proto::ring::in_open;
use crate::proto::wire::{MAX_RECORDS, Peer, Request, Response, WirePeer, WireRecord};

impl Node {
    /// Starts (or restarts, for the next replica of a provider lookup) the lookup of query
    /// `q`: answered from the local tables when they tell, else iteratively.
    pub(super) fn start_lookup(
        &mut self,
        now: Instant,
        q: QueryId,
        target: NodeId,
        want_owner: bool,
    ) {
        self.metrics.lookups_started += 1;
        self.queries.set_lookup(q, None);
        if self.ring.responsible_for(&target) {
            let me = self.ring.me;
            let recs: Vec<WireRecord> = self
                .store
                .get(&target)
                .iter()
                .map(WireRecord::from)
                .collect();
            self.lookup_done(now, q, me, 0, recs);
            return;
        }
        let local = self.ring.successor_of(&target);
        if let Some(s) = local
            && !want_owner
        {
            self.lookup_done(now, q, s, 0, Vec::new());
            return;
        }
        let job = self.queries.job(q);
        // A registration's replica: its owner may be known from a lookup that ended lately
        // (its store confirms it, PROTOCOL.md §6.8).
        if matches!(job, Some(Job::Replica { confirm: false, .. }))
            && let Some(owner) = self.cached_owner(now, &target)
        {
            self.metrics.owner_cache_hits += 1;
            self.lookup_done(now, q, owner, 0, Vec::new());
            return;
        }
        let job = self.queries.job(q);
        // finger refreshes are background work: one query at a time is enough
        let background = matches!(job, Some(Job::Finger { .. }));
        // The lookup a bootstrap runs for a joining node is ring maintenance, rare, and waited
        // for by the newcomer: it asks α at once. The others (finds, provider lookups,
        // registrations) ask one peer at a time and hedge when it stalls.
        let hedged = self.cfg.lookup_stall.is_zero() || matches!(job, Some(Job::ServeJoin { .. }));
        let mut l = Lookup::new(
            target,
            want_owner,
            self.ring.me.id,
            self.lookup_budget(background, hedged),
        );
        let mut seeds = self
            .ring
            .closest_preceding(&target, self.cfg.max_lookup_candidates.min(8));
        // and the peers that answered lately (PROTOCOL.md §6.8 step 2): the lookup keeps the
        // closest of both
        let me = self.ring.me.id;
        seeds.extend(self.peers.closest_preceding(now, &me, &target, 8));
        l.seed(local, seeds);
        self.queries.set_lookup(q, Some(l));
        self.pump(now, q);
    }

    /// A lookup's budget: α queries (one for `background` work), each asking one peer at a
    /// time and widening when it stalls unless `hedged` (α at once).
    fn lookup_budget(&self, background: bool, hedged: bool) -> Budget {
        Budget {
            alpha: if background { 1 } else { self.cfg.alpha },
            stall: (!hedged).then(|| {
                self.rtt
                    .stall(self.cfg.lookup_stall_min, self.cfg.lookup_stall)
            }),
            max_requests: self.cfg.max_lookup_requests,
            max_candidates: self.cfg.max_lookup_candidates,
        }
    }

    /// Starts the lookup of query `q` for `target` from `seeds` alone: not answered from the
    /// local tables, which are what it checks ([`Job::SuccessorCheck`]).
    pub(super) fn start_lookup_from(
        &mut self,
        now: Instant,
        q: QueryId,
        target: NodeId,
        seeds: Vec<Peer>,
    ) {
        self.metrics.lookups_started += 1;
        let hedged = self.cfg.lookup_stall.is_zero();
        let mut l = Lookup::new(
            target,
            false,
            self.ring.me.id,
            self.lookup_budget(false, hedged),
        );
        l.seed(None, seeds);
        self.queries.set_lookup(q, Some(l));
        self.pump(now, q);
    }

    /// The owner of `t` in the owner cache, unless the routing table knows a node between `t`
    /// and it (then the entry is out of date: a node joined there) or it is this node.
    fn cached_owner(&mut self, now: Instant, t: &NodeId) -> Option<Peer> {
        let owner = self.owners.owner_of(now, t)?;
        let me = self.ring.me.id;
        let r = self.ring.routing();
        // the first entry of the routing table at or after `t`, clockwise
        let first = r
            .get(r.partition_point(|p| p.id < *t))
            .or_else(|| r.first())
            .map(|p| p.id);
        // a node in [t, owner) is the successor of t, not the owner
        let before_owner = |x: &NodeId| *x != owner.id && (x == t || in_open(t, x, &owner.id));
        if first.is_some_and(|f| before_owner(&f)) || before_owner(&me) {
            self.owners.forget(&owner.id);
            return None;
        }
        Some(owner)
    }

    /// Sends the queries the lookup of `q` wants now; ends it when it has nothing left to ask.
    fn pump(&mut self, now: Instant, q: QueryId) {
        let Some((target, batch)) = self.queries.with_lookup(q, |l| (l.target(), l.next(now)))
        else {
            return;
        };
        let job = self.queries.job(q);
        let want = matches!(job, Some(Job::Providers { .. }));
        if matches!(job, Some(Job::Replica { .. })) {
            self.metrics.replica_finds_sent += batch.len() as u64;
        }
        for (peer, _) in batch {
            let req = Request::Find {
                target,
                records: want,
            };
            let purpose = Purpose::Lookup {
                query: q,
                peer: peer.id,
                target,
            };
            if !self.send(now, peer.into(), &req, purpose) {
                self.queries.with_lookup(q, |l| l.on_failure(peer.id));
            }
        }
        let exhausted = self
            .queries
            .with_lookup(q, |l| l.is_exhausted())
            .unwrap_or(true);
        if exhausted {
            if self.reseed_lookup(now, q) {
                return self.pump(now, q);
            }
            self.lookup_failed(now, q);
        }
    }

    /// A lookup ran out of candidates. Its first seeds were the closest preceding entries of
    /// the routing table, which may all be fingers to nodes that have just left (they refuse,
    /// and are purged from the fingers as they do). Beyond the paper: refill the candidates
    /// from the routing table as it is now (a bounded number of times, see [`Lookup::reseed`]).
    /// Returns whether the lookup has something to ask.
    fn reseed_lookup(&mut self, now: Instant, q: QueryId) -> bool {
        let Some(target) = self
            .queries
            .with_lookup(q, |l| l.can_reseed().then(|| l.target()))
            .flatten()
        else {
            return false;
        };
        // every preceding entry: those asked already are skipped, the closest of the rest kept
        let all = self.ring.routing().len();
        let mut seeds = self.ring.closest_preceding(&target, all);
        let me = self.ring.me.id;
        seeds.extend(self.peers.closest_preceding(now, &me, &target, usize::MAX));
        let local = self.ring.successor_of(&target);
        self.queries
            .with_lookup(q, |l| l.reseed(local, seeds))
            .unwrap_or(false)
    }

    /// Lookups whose one query has been unanswered for `Config::lookup_stall` open to α.
    pub(super) fn lookup_timers(&mut self, now: Instant) {
        while let Some(q) = self.queries.pop_stalled(now) {
            if self.queries.with_lookup(q, |l| l.handle_timeout(now)) == Some(true) {
                self.metrics.lookup_stalls += 1;
                self.pump(now, q);
            }
        }
    }

    /// The answer (or failure) of `peer` to a query of the lookup of `query` for `target`.
    pub(super) fn on_lookup_answer(
        &mut self,
        now: Instant,
        (query, peer, target): (QueryId, NodeId, NodeId),
        r: Result<Response, RequestFailure>,
    ) {
        let dead = matches!(
            r,
            Err(RequestFailure::Timeout | RequestFailure::Unreachable)
        );
        // A peer that answers it is no longer a member (it left, or is re-joining) is as
        // useless to route through as a dead one: out of the fingers with it.
        let gone = matches!(
            r,
            Ok(Response::Refused {
                reason: Refusal::NotMember | Refusal::Leaving
            })
        );
        if dead {
            // a finger that stopped answering may be on the other side of a partition
            if let Some(p) = self
                .ring
                .fingers
                .iter()
                .flatten()
                .find(|p| p.id == peer)
                .copied()
            {
                self.remember_lost(now, p);
            }
        }
        if dead || gone {
            self.purge(&peer, false);
        }
        self.lookup_answer(now, query, peer, target, r.ok());
    }

    fn lookup_answer(
        &mut self,
        now: Instant,
        q: QueryId,
        from: NodeId,
        target: NodeId,
        resp: Option<Response>,
    ) {
        let mut records = Vec::new();
        let answer = match resp {
            Some(Response::Owner { records: r }) => {
                records = r;
                Some(Answer::Owner)
            }
            Some(Response::Successor { peer, after }) => {
                Some(Answer::Successor(peer.into(), after))
            }
            Some(Response::Closer { peers }) => {
                Some(Answer::Closer(peers.into_iter().map(Peer::from).collect()))
            }
            _ => None,
        };
        let mut answered = None;
        let step = self.queries.with_lookup(q, |l| {
            if l.target() != target {
                // A late answer to the query's previous lookup (another replica's object id).
                return None;
            }
            Some(match answer {
                Some(a) => {
                    let asked = l.asked(&from);
                    let step = l.on_answer(from, a);
                    if step != Step::Rejected {
                        answered = asked;
                    }
                    step
                }
                None => {
                    l.on_failure(from);
                    Step::Continue
                }
            })
        });
        // a peer that answered a query with progress seeds later lookups
        if let Some(p) = answered {
            self.peers.learn(now, p);
        }
        match step.flatten() {
            None => {}
            Some(Step::Done {
                peer,
                hops,
                owner_answered,
                from,
            }) => {
                if !owner_answered {
                    records.clear();
                }
                self.owners.learn(now, from.unwrap_or(target), peer);
                self.queries.set_lookup(q, None);
                self.lookup_done(now, q, peer, hops, records);
            }
            Some(Step::Rejected) => {
                self.metrics.lookup_bad_answers += 1;
                self.pump(now, q);
            }
            Some(Step::Continue) => self.pump(now, q),
        }
    }

    /// paper §6.1 find, responder side: the value for an object we are responsible for, the
    /// successor if the target lies between us and it, else the closest preceding nodes.
    pub(super) fn answer_find(&mut self, target: &NodeId, want_records: bool) -> Response {
        if self.ring.responsible_for(target) {
            let records = if want_records {
                self.store
                    .get(target)
                    .iter()
                    .take(MAX_RECORDS)
                    .map(WireRecord::from)
                    .collect()
            } else {
                Vec::new()
            };
            return Response::Owner { records };
        }
        if let Some((after, s)) = self.ring.successor_range_of(target) {
            return Response::Successor {
                peer: s.into(),
                after: Some(after),
            };
        }
        let peers = self.ring.closest_preceding(target, self.cfg.closer_count);
        Response::Closer {
            peers: peers.into_iter().map(WirePeer::from).collect(),
        }
    }
}
