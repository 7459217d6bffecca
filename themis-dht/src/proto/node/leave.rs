//! Leaving a ring and handing records over (paper §6.1 leave and update): the leaver's side
//! (its table to the successor in chunks, then its new successors to the predecessor), the
//! successor's side, and the hand-off of records a closer predecessor is now responsible for
//! (paper Table 1: update rsp `(id, ObjTable)`).

use std::time::Instant;

use themis_crypto::NodeId;

use super::api::{Event, QueryError, RequestFailure};
use super::requests::Purpose;
use super::{Node, State};
use crate::Error;
use crate::proto::record::{ProviderRecord, Refusal};
use crate::proto::ring::in_open;
use crate::proto::wire::{Peer, Request, Response, WirePeer, WireRecord};

/// Retries of a refused leave before the records are given up.
const LEAVE_RETRIES: u32 = 20;

/// A graceful leave in progress.
#[derive(Debug)]
pub(super) struct LeaveState {
    records: Vec<ProviderRecord>,
    /// The chunk of `records` in flight (`usize::MAX` once all are acknowledged).
    chunk: usize,
    target: Peer,
    pub(super) retry_at: Option<Instant>,
    retries: u32,
    /// The first chunk waits for a Notify to the target still in flight: the successor must
    /// have handled it before our Leave, or it would adopt a node that has left as its
    /// predecessor (requests can be handled out of order) and refuse the next newcomer's
    /// handoff until its predecessor check notices.
    held: bool,
}

impl Node {
    /// Leaves gracefully (paper §6.1 leave): hands the object table and the predecessor to the
    /// successor, then tells the predecessor its new successors. Ends with [`Event::Left`].
    ///
    /// An orphaned node re-joining through its bootstraps (every successor failed) may leave
    /// too: it has no successor to hand its records to, so the re-join is abandoned and the
    /// leave ends at once, its records counted as lost (their other replicas remain). A node
    /// on its first join cannot leave ([`Error::InvalidState`]).
    pub fn leave(&mut self, now: Instant) -> Result<(), Error> {
        if matches!(&self.state, State::Joining(j) if j.orphaned) {
            let lost = self.store.all().len();
            self.finish_leave(0, lost);
            return Ok(());
        }
        self.check_member("leave")?;
        let records = self.store.all();
        match self.ring.succ() {
            None => self.finish_leave(0, records.len()),
            Some(target) => {
                let held = self.requests.notify_in_flight(&target.id);
                self.state = State::Leaving(LeaveState {
                    records,
                    chunk: 0,
                    target,
                    retry_at: None,
                    retries: 0,
                    held,
                });
                if !held {
                    self.send_leave_chunk(now);
                }
            }
        }
        Ok(())
    }

    fn finish_leave(&mut self, handed: usize, lost: usize) {
        self.state = State::Left;
        self.store.clear();
        self.kept.clear();
        self.regs.clear();
        for (id, job) in self.queries.take_all() {
            self.fail_job(id, job, QueryError::NotMember);
        }
        self.event(Event::Left {
            records_handed_over: handed,
            records_lost: lost,
        });
    }

    fn send_leave_chunk(&mut self, now: Instant) {
        let State::Leaving(ls) = &self.state else {
            return;
        };
        let per = self.cfg.max_records_per_message;
        let start = ls.chunk.saturating_mul(per);
        let end = start.saturating_add(per).min(ls.records.len());
        let records: Vec<WireRecord> = ls
            .records
            .get(start..end)
            .unwrap_or(&[])
            .iter()
            .map(WireRecord::from)
            .collect();
        let last = end >= ls.records.len();
        let total = ls.records.len();
        let target = ls.target;
        let req = Request::Leave {
            predecessor: self.ring.pred.map(WirePeer::from),
            records,
            last,
        };
        if !self.send(now, target.into(), &req, Purpose::Leave { last }) {
            self.finish_leave(0, total);
        }
    }

    /// The retry of a refused leave, from its first chunk, to the current first successor.
    pub(super) fn leave_timer(&mut self, now: Instant) {
        if let State::Leaving(ls) = &mut self.state
            && ls.retry_at.is_some_and(|t| t <= now)
        {
            ls.retry_at = None;
            ls.chunk = 0;
            if let Some(s) = self.ring.succ() {
                ls.target = s;
            }
            self.send_leave_chunk(now);
        }
    }

    /// A Notify was answered: a leave held back for it goes on (whatever its answer).
    pub(super) fn on_notify_answered(&mut self, now: Instant) {
        let release = match &self.state {
            State::Leaving(ls) if ls.held => !self.requests.notify_in_flight(&ls.target.id),
            _ => false,
        };
        if release {
            if let State::Leaving(ls) = &mut self.state {
                ls.held = false;
            }
            self.send_leave_chunk(now);
        }
    }

    /// The successor's answer to a chunk of the leave.
    pub(super) fn on_leave_answer(
        &mut self,
        now: Instant,
        last: bool,
        r: Result<Response, RequestFailure>,
    ) {
        let State::Leaving(ls) = &mut self.state else {
            return;
        };
        if matches!(r, Ok(Response::Ack)) {
            if !last {
                ls.chunk = ls.chunk.saturating_add(1);
                return self.send_leave_chunk(now);
            }
            let handed = ls.records.len();
            let target = ls.target;
            ls.chunk = usize::MAX;
            self.metrics.handoff_records_sent += handed as u64;
            self.tell_predecessor(now, target, handed);
        } else if matches!(
            r,
            Ok(Response::Refused {
                reason: Refusal::Leaving
                    | Refusal::NotPredecessor
                    | Refusal::Busy
                    | Refusal::RateLimited
            })
        ) && ls.retries < LEAVE_RETRIES
        {
            // the successor is itself leaving or does not see us as its predecessor
            // yet: the ring is in flux, try again after a stabilize period
            ls.retries += 1;
            ls.retry_at = Some(now + self.cfg.stabilize_period);
        } else {
            // try the next successor with the whole table
            let failed = ls.target.id;
            self.ring.drop_successor(&failed);
            match self.ring.succ() {
                Some(next) => {
                    if let State::Leaving(ls) = &mut self.state {
                        ls.target = next;
                        ls.chunk = 0;
                    }
                    self.send_leave_chunk(now);
                }
                None => {
                    let n = self.leaving_records();
                    self.finish_leave(0, n);
                }
            }
        }
    }

    /// The table is handed to `target`: tell the predecessor its new successors, then the
    /// leave ends.
    fn tell_predecessor(&mut self, now: Instant, target: Peer, handed: usize) {
        match self.ring.pred.filter(|p| p.id != target.id) {
            Some(p) => {
                let req = Request::SetSuccessors {
                    successors: self.ring.wire_succs(),
                };
                if !self.send(now, p.into(), &req, Purpose::SetSuccessors) {
                    self.finish_leave(handed, 0);
                }
            }
            None => self.finish_leave(handed, 0),
        }
    }

    /// The predecessor took its new successors (or failed to): the leave ends.
    pub(super) fn on_set_successors_answer(&mut self) {
        let handed = self.leaving_records();
        self.finish_leave(handed, 0);
    }

    fn leaving_records(&self) -> usize {
        match &self.state {
            State::Leaving(ls) => ls.records.len(),
            _ => 0,
        }
    }

    /// paper §6.1 leave, successor side: take the object table; with the last chunk adopt the
    /// leaver's predecessor.
    pub(super) fn on_leave(
        &mut self,
        now: Instant,
        from: Peer,
        new_pred: Option<Peer>,
        records: Vec<WireRecord>,
        last: bool,
    ) -> Response {
        let plausible = match self.ring.pred {
            None => true,
            Some(p) => p.id == from.id || in_open(&p.id, &from.id, &self.ring.me.id),
        };
        if !plausible {
            return Response::Refused {
                reason: Refusal::NotPredecessor,
            };
        }
        self.accept_records(now, records);
        if last {
            self.purge(&from.id, true);
            let me = self.ring.me.id;
            let np = new_pred.filter(|p| p.id != me && p.id != from.id);
            if self.ring.succs.is_empty()
                && let Some(p) = np
            {
                self.set_succs(vec![p]);
            }
            // adopt the leaver's predecessor unless we know a closer live one (rectify rule)
            if let Some(np) = np {
                self.rectify(now, np);
            }
        }
        Response::Ack
    }

    /// A leaving successor names our new successors.
    pub(super) fn on_set_successors(&mut self, from: Peer, successors: Vec<WirePeer>) -> Response {
        if self.ring.succ().is_some_and(|s| s.id == from.id) {
            let l = self.ring.sanitize_list(
                successors
                    .into_iter()
                    .map(Peer::from)
                    .filter(|p| p.id != from.id),
            );
            self.set_succs(l);
        }
        self.purge(&from.id, true);
        Response::Ack
    }

    /// Hands records that belong before our predecessor's position to the predecessor, one
    /// chunk at a time (paper Table 1: update rsp `(id, ObjTable)`).
    pub(super) fn maybe_handoff(&mut self, now: Instant) {
        if self.maint.handoff_in_flight || !matches!(self.state, State::Member) {
            return;
        }
        let Some(p) = self.ring.pred else { return };
        let recs =
            self.store
                .not_in_range(&p.id, &self.ring.me.id, self.cfg.max_records_per_message);
        if recs.is_empty() {
            return;
        }
        let keys = recs
            .iter()
            .map(|r| (r.object_id(), r.provider, r.seq))
            .collect();
        let req = Request::Handoff {
            records: recs.iter().map(WireRecord::from).collect(),
        };
        self.maint.handoff_in_flight =
            self.send(now, p.into(), &req, Purpose::Handoff { records: keys });
    }

    /// The predecessor took the records handed to it: they are dropped from the object table
    /// and kept as copies (PROTOCOL.md §6.9, "Handed records kept").
    pub(super) fn on_handoff_answer(
        &mut self,
        now: Instant,
        records: Vec<(NodeId, NodeId, u64)>,
        r: Result<Response, RequestFailure>,
    ) {
        self.maint.handoff_in_flight = false;
        if matches!(r, Ok(Response::Ack)) {
            let mut n = 0u64;
            let until = now + self.cfg.restore_period;
            let q = self.quotas();
            for (oid, provider, seq) in records {
                if self.ring.responsible_for(&oid) {
                    continue;
                }
                let copy = self
                    .store
                    .get(&oid)
                    .iter()
                    .find(|r| r.provider == provider && r.seq == seq)
                    .cloned();
                if self.store.remove_exact(&oid, &provider, seq) {
                    n += 1;
                    // kept, unserved, in case the predecessor fails before the next re-store
                    if let Some(c) = copy {
                        self.kept.keep(c, until, q);
                    }
                }
            }
            self.metrics.handoff_records_sent += n;
            if n > 0 {
                self.maybe_handoff(now);
            }
        }
    }

    /// Records handed to us by a successor; those that are not ours travel on toward their
    /// owner.
    pub(super) fn accept_handoff(&mut self, now: Instant, records: Vec<WireRecord>) -> Response {
        self.accept_records(now, records);
        self.maybe_handoff(now);
        Response::Ack
    }
}
