//! Ring maintenance (Zave's corrected Chord, paper §6.1 "update"): the periodic stabilize
//! round with its notify, rectify on the receiving side, the predecessor check and the finger
//! refresh sweep, and the timers that drive them.

use std::time::Instant;

use crate::proto::record::Refusal;
use crate::proto::ring::{ID_BITS, distance, finger_start, fingers_covered, in_open};
use crate::proto::wire::{Peer, Request, Response, WirePeer};

use super::Node;
use super::api::RequestFailure;
use super::queries::Job;
use super::requests::Purpose;

/// Most successive closer successors adopted in one stabilize round.
pub(super) const STABILIZE_CHAIN: usize = 32;

/// After the successor's answer changed our successor list, the next stabilize rounds come
/// this many times more often than the period, as many of them as the list is long. A change
/// (a heal, a join, a departure) moves down the predecessors' lists one stabilize round per
/// node; at the period's pace the list of the r-th predecessor had a gap (and a node find
/// answered from it could be wrong) for up to r periods (PROTOCOL.md §6.9, quick rounds).
const QUICK_STABILIZE_DIVISOR: u32 = 8;

/// The periodic work of a member and what of it is in flight.
#[derive(Debug)]
pub(super) struct Maintenance {
    pub(super) next_stabilize: Instant,
    /// Quick stabilize rounds left (see [`QUICK_STABILIZE_DIVISOR`]).
    pub(super) quick_stabilizes: usize,
    pub(super) next_fingers: Instant,
    pub(super) next_check_pred: Instant,
    pub(super) next_sweep: Instant,
    pub(super) stabilize_in_flight: bool,
    pub(super) check_pred_in_flight: bool,
    pub(super) handoff_in_flight: bool,
    pub(super) finger_sweep_running: bool,
    /// A [`Job::SuccessorCheck`] lookup is running.
    pub(super) successor_check_running: bool,
}

impl Maintenance {
    /// Everything due at `now` (the node draws the jittered times at once).
    pub(super) fn new(now: Instant) -> Self {
        Self {
            next_stabilize: now,
            quick_stabilizes: 0,
            next_fingers: now,
            next_check_pred: now,
            next_sweep: now,
            stabilize_in_flight: false,
            check_pred_in_flight: false,
            handoff_in_flight: false,
            finger_sweep_running: false,
            successor_check_running: false,
        }
    }

    /// When the next periodic task is due.
    pub(super) fn next_due(&self) -> Instant {
        self.next_stabilize
            .min(self.next_fingers)
            .min(self.next_check_pred)
            .min(self.next_sweep)
    }
}

impl Node {
    /// Runs the periodic tasks due at `now`: stabilize (and a hand-off), the predecessor check,
    /// the finger sweep and the expiry sweep of the object table.
    pub(super) fn maintain(&mut self, now: Instant) {
        if now >= self.maint.next_stabilize {
            self.maint.next_stabilize = if self.maint.quick_stabilizes > 0 {
                self.maint.quick_stabilizes -= 1;
                now + self.cfg.stabilize_period / QUICK_STABILIZE_DIVISOR
            } else {
                now + self.jitter(self.cfg.stabilize_period)
            };
            self.stabilize(now);
            self.maybe_handoff(now);
        }
        if now >= self.maint.next_check_pred {
            self.maint.next_check_pred = now + self.jitter(self.cfg.check_predecessor_period);
            self.check_predecessor(now);
        }
        if now >= self.maint.next_fingers {
            self.maint.next_fingers = now + self.jitter(self.cfg.finger_period);
            if !self.maint.finger_sweep_running {
                self.finger_step(now, 0);
            }
        }
        if now >= self.maint.next_sweep {
            self.maint.next_sweep = now + self.cfg.expiry_sweep_period;
            let wall = self.wall_ms(now);
            let n = self.store.expire(wall);
            self.metrics.expirations += n as u64;
            self.kept.sweep(now, wall);
        }
    }

    /// A node that has just become a member stabilizes one jittered period from now and
    /// refreshes its fingers at once.
    pub(super) fn restart_maintenance(&mut self, now: Instant) {
        self.maint.next_stabilize = now + self.jitter(self.cfg.stabilize_period);
        self.maint.next_fingers = now;
    }

    /// Stabilizes soon, and the next rounds too, to pass a change of the successor list on
    /// (see [`QUICK_STABILIZE_DIVISOR`]).
    fn quick_stabilize(&mut self, now: Instant) {
        self.maint.quick_stabilizes = self.cfg.successor_list_len;
        let soon = now + self.cfg.stabilize_period / QUICK_STABILIZE_DIVISOR;
        self.maint.next_stabilize = self.maint.next_stabilize.min(soon);
    }

    /// Zave's stabilize: ask the successor for its predecessor and successor list.
    fn stabilize(&mut self, now: Instant) {
        if self.maint.stabilize_in_flight {
            return;
        }
        if self.ring.succs.is_empty() {
            match self.ring.pred {
                // Chord's first node learns its successor from its predecessor.
                Some(p) => self.set_succs(vec![p]),
                None => return,
            }
        }
        if let Some(s) = self.ring.succ() {
            self.maint.stabilize_in_flight = self.send(
                now,
                s.into(),
                &Request::GetNeighbors,
                Purpose::Stabilize { succ: s },
            );
        }
    }

    /// The successor's answer to stabilize.
    pub(super) fn on_stabilize(
        &mut self,
        now: Instant,
        succ: Peer,
        r: Result<Response, RequestFailure>,
    ) {
        self.maint.stabilize_in_flight = false;
        match r {
            Ok(Response::Neighbors {
                predecessor,
                successors,
            }) => {
                let list = self.ring.list_from(succ, successors);
                match self.closer_candidate(succ, predecessor, 1) {
                    // Zave: a closer successor is adopted only once it has answered
                    Some(x) => self.ask_candidate(now, x, list, 1),
                    None => {
                        if list != self.ring.succs {
                            self.quick_stabilize(now);
                        }
                        self.set_succs(list);
                        self.notify(now, succ);
                    }
                }
            }
            Ok(Response::Refused {
                reason: Refusal::RateLimited | Refusal::Busy,
            }) => {}
            _ => self.repair_successor(now, succ),
        }
    }

    /// Zave: skip a dead successor using the successor list.
    fn repair_successor(&mut self, now: Instant, succ: Peer) {
        self.metrics.stabilization_repairs += 1;
        self.remember_lost(now, succ);
        self.neighbourhood_changed(now);
        self.purge(&succ.id, true);
        if self.ring.succs.is_empty() {
            let me = self.ring.me.id;
            let fallback = self
                .ring
                .routing()
                .iter()
                .filter(|p| p.id != me)
                .min_by_key(|p| distance(&me, &p.id))
                .copied()
                // Beyond the paper: with every successor and finger gone, the predecessor
                // (checked alive by `check_predecessor`) is still a member of our ring, and
                // stabilizing through it walks forward to the true successor (as Chord's first
                // node does when alone). Re-joining through the bootstraps instead could start a
                // second ring that nothing ever merges: the bootstraps may be gone, and a failed
                // join leaves the node alone as a ring of its own.
                .or(self.ring.pred.filter(|p| p.id != me && p.id != succ.id));
            match fallback {
                Some(f) => self.set_succs(vec![f]),
                None => {
                    if self.rejoin_orphaned(now) {
                        return;
                    }
                }
            }
        }
        self.stabilize(now);
    }

    /// The answer of a closer successor candidate (`cand`); `fallback` is the list to keep if it
    /// does not answer.
    pub(super) fn on_stabilize_candidate(
        &mut self,
        now: Instant,
        (cand, fallback, depth): (Peer, Vec<Peer>, usize),
        r: Result<Response, RequestFailure>,
    ) {
        self.maint.stabilize_in_flight = false;
        match r {
            Ok(Response::Neighbors {
                predecessor,
                successors,
            }) => {
                let list = self.ring.list_from(cand, successors);
                self.set_succs(list.clone());
                // keep walking back while the new successor knows a closer predecessor: one
                // round trip per step instead of one period
                let still_closer = self
                    .closer_candidate(cand, predecessor.clone(), 1)
                    .is_some();
                match self.closer_candidate(cand, predecessor, depth + 1) {
                    Some(x) => self.ask_candidate(now, x, list, depth + 1),
                    None => {
                        self.notify(now, cand);
                        if still_closer {
                            // the chain ended with a closer node still named
                            self.check_successor(now);
                        }
                    }
                }
            }
            _ => {
                if let Some(s) = fallback.first().copied() {
                    self.set_succs(fallback);
                    self.notify(now, s);
                }
            }
        }
    }

    /// Beyond Zave: looks our successor up through the rest of the ring (PROTOCOL.md §6.9,
    /// "A successor far past the true one"). A walk back toward the true successor that is
    /// still going after [`STABILIZE_CHAIN`] steps (or a unification chain after its bound)
    /// means our successor lies far past it, with nodes between that nobody has told us of: a
    /// node that joined through a ring whose successor lists a partition had emptied. Walking
    /// back one node per round trip took 68 s of simulated time after a heal at 10,000 nodes.
    /// A lookup of `me + 1` seeded with every entry of the routing table but ourselves (our own
    /// successor list would answer it at once, wrongly) ends at the node that names our true
    /// successor, in about log N hops; the answer is then checked and adopted as a unification
    /// candidate is (adopted only if it answers and still lies between us and our successor).
    /// One such lookup at a time.
    pub(super) fn check_successor(&mut self, now: Instant) {
        if self.maint.successor_check_running || !self.is_member() {
            return;
        }
        let me = self.ring.me.id;
        let seeds: Vec<Peer> = self
            .ring
            .routing()
            .iter()
            .filter(|p| p.id != me)
            .copied()
            .collect();
        if seeds.is_empty() {
            return;
        }
        let Some(q) = self.new_query(Job::SuccessorCheck) else {
            return;
        };
        self.maint.successor_check_running = true;
        self.metrics.successor_checks += 1;
        self.start_lookup_from(now, q, finger_start(&me, 0), seeds);
    }

    /// The end of a [`Node::check_successor`] lookup: `found` names our successor.
    pub(super) fn successor_checked(&mut self, now: Instant, found: Peer) {
        self.maint.successor_check_running = false;
        let me = self.ring.me.id;
        if found.id != me
            && self
                .ring
                .succ()
                .is_some_and(|s| in_open(&me, &found.id, &s.id))
        {
            self.unify_candidate(now, found, 1);
        }
    }

    /// The predecessor `succ` reported, if it lies strictly between us and `succ` and the
    /// chain of candidates is at most [`STABILIZE_CHAIN`] long at `depth`.
    fn closer_candidate(
        &self,
        succ: Peer,
        predecessor: Option<WirePeer>,
        depth: usize,
    ) -> Option<Peer> {
        let me = self.ring.me.id;
        predecessor
            .map(Peer::from)
            .filter(|x| depth <= STABILIZE_CHAIN && x.id != me && in_open(&me, &x.id, &succ.id))
    }

    /// Asks the candidate `x` for its neighbours; `list` is kept if it does not answer.
    fn ask_candidate(&mut self, now: Instant, x: Peer, list: Vec<Peer>, depth: usize) {
        self.maint.stabilize_in_flight = self.send(
            now,
            x.into(),
            &Request::GetNeighbors,
            Purpose::StabilizeCandidate {
                cand: x,
                fallback: list,
                depth,
            },
        );
    }

    /// Zave's notify: "I may be your predecessor".
    pub(super) fn notify(&mut self, now: Instant, to: Peer) {
        self.send(now, to.into(), &Request::Notify, Purpose::Notify);
    }

    /// Zave's rectify (the receiving half of notify): adopt `from` as predecessor if it lies
    /// between the current predecessor and us, or if we have none.
    pub(super) fn rectify(&mut self, now: Instant, from: Peer) {
        if from.id == self.ring.me.id {
            return;
        }
        if self.ring.succs.is_empty() {
            self.set_succs(vec![from]);
        }
        let adopt = match self.ring.pred {
            None => true,
            Some(p) => in_open(&p.id, &from.id, &self.ring.me.id),
        };
        if adopt {
            self.set_pred(now, Some(from));
        }
    }

    /// The answer to `get_neighbors`: our predecessor and successor list.
    pub(super) fn neighbors(&self) -> Response {
        Response::Neighbors {
            predecessor: self.ring.pred.map(WirePeer::from),
            successors: self.ring.wire_succs(),
        }
    }

    fn check_predecessor(&mut self, now: Instant) {
        if self.maint.check_pred_in_flight {
            return;
        }
        if let Some(p) = self.ring.pred {
            self.maint.check_pred_in_flight = self.send(
                now,
                p.into(),
                &Request::Ping,
                Purpose::CheckPred { pred: p },
            );
        }
    }

    /// The predecessor's answer to the liveness check.
    pub(super) fn on_check_pred(
        &mut self,
        now: Instant,
        pred: Peer,
        r: Result<Response, RequestFailure>,
    ) {
        self.maint.check_pred_in_flight = false;
        let alive = matches!(r, Ok(Response::Pong));
        if !alive && self.ring.pred == Some(pred) {
            // Zave: the predecessor is dead; a live one will notify us
            self.metrics.stabilization_repairs += 1;
            if !matches!(r, Ok(Response::Refused { .. })) {
                self.remember_lost(now, pred);
            }
            self.neighbourhood_changed(now);
            self.drop_pred();
        }
    }

    /// One step of the finger refresh sweep, from finger `bit` (0-based: entry `bit + 1` of
    /// the paper, first node ≥ n + 2^bit).
    fn finger_step(&mut self, now: Instant, mut bit: usize) {
        self.maint.finger_sweep_running = false;
        let Some(s) = self.ring.succ() else { return };
        let me = self.ring.me.id;
        // the fingers whose start lies in (me, s] are s
        let covered = fingers_covered(&me, &s.id);
        if bit < covered {
            self.ring.set_fingers(bit..covered, s);
            bit = covered;
        }
        if bit < ID_BITS {
            let start = finger_start(&me, bit);
            if let Some(q) = self.new_query(Job::Finger { bit }) {
                self.maint.finger_sweep_running = true;
                self.start_lookup(now, q, start, false);
            }
        }
    }

    /// The lookup of finger `bit` ended with `found` (`None`: it failed).
    pub(super) fn finger_done(&mut self, now: Instant, bit: usize, found: Option<Peer>) {
        let me = self.ring.me.id;
        let mut next = bit + 1;
        match found {
            Some(s) if s.id != me => {
                self.ring.set_finger(bit, Some(s));
                // every later finger whose start is still in (me, s] is s too
                let covered = fingers_covered(&me, &s.id);
                if next < covered {
                    self.ring.set_fingers(next..covered, s);
                    next = covered;
                }
            }
            _ => self.ring.set_finger(bit, None),
        }
        self.finger_step(now, next);
    }
}
