//! Joining a ring (paper §6.1 join, with Zave's rule that a newcomer becomes a member only once
//! its successor has answered): the bootstrap rounds on the newcomer's side, the lookup a
//! bootstrap runs for a newcomer, and the re-join of a node that lost every neighbour.

use std::time::Instant;

use themis_crypto::NodeId;

use super::api::{Contact, Event, RequestFailure};
use super::queries::Job;
use super::requests::Purpose;
use super::{Node, State};
use crate::Error;
use crate::proto::record::Refusal;
use crate::proto::ring::finger_start;
use crate::proto::wire::{Peer, Request, Response};

/// Bootstraps remembered for a re-join.
const MAX_BOOTSTRAPS: usize = 16;
/// Rounds over the bootstrap list before a join fails.
const JOIN_ROUNDS: usize = 3;
/// Join answers naming a departed successor that get a free retry (through the same
/// bootstrap, a stabilize period later) before such an answer counts as a failed attempt.
/// One: the common case is a single leave just before the join, healed at the next
/// stabilize round; more free retries kept joiners waiting on survivors of heavy churn whose
/// own re-join had failed, until they joined them as a separate ring (tests/sim.rs,
/// `churn_case_leaving_nodes_keep_notifying`).
const JOIN_STALE_RETRIES: u32 = 1;

/// A join in progress.
#[derive(Debug)]
pub(super) struct JoinState {
    bootstraps: Vec<Contact>,
    /// Attempts made (the next bootstrap is `bootstraps[next % len]`).
    next: usize,
    /// When the next attempt goes out, after a failed round or a stale answer.
    pub(super) retry_at: Option<Instant>,
    /// Answers that named a successor which refused as no longer (or not yet) a member:
    /// the bootstrap's view was stale; each is retried through the same bootstrap after
    /// one stabilize period, at most [`JOIN_STALE_RETRIES`] times.
    stale: u32,
    /// Re-joining after losing every successor, finger and predecessor: meanwhile the
    /// node answers ring maintenance as a lone ring (see [`Node::answer_as_lone_ring`]).
    pub(super) orphaned: bool,
}

impl JoinState {
    fn new(bootstraps: Vec<Contact>, orphaned: bool) -> Self {
        Self {
            bootstraps,
            next: 0,
            retry_at: None,
            stale: 0,
            orphaned,
        }
    }
}

impl Node {
    /// Joins a ring through the bootstraps, tried in order (paper §6.1 join). The result comes
    /// as [`Event::Joined`] or [`Event::JoinFailed`].
    pub fn join(&mut self, now: Instant, bootstraps: Vec<Contact>) -> Result<(), Error> {
        self.check_member("join")?;
        // whatever ring view the node had is dropped: it learns its place from the bootstrap
        self.ring.reset();
        self.bootstraps = bootstraps.iter().copied().take(MAX_BOOTSTRAPS).collect();
        let b = self.bootstraps.clone();
        self.remember_bootstraps(now, &b);
        self.state = State::Joining(JoinState::new(self.bootstraps.clone(), false));
        self.try_next_bootstrap(now);
        Ok(())
    }

    /// Orphaned (every successor failed and no finger is left): join again through the
    /// bootstraps. Never while leaving: the leave would be dropped without its `Event::Left`
    /// (and `DhtNode::leave` would wait forever); a leaving node with no successor left ends
    /// its leave by itself. Returns whether the re-join started.
    pub(super) fn rejoin_orphaned(&mut self, now: Instant) -> bool {
        if self.bootstraps.is_empty() || !matches!(self.state, State::Member) {
            return false;
        }
        self.ring.forget_pred();
        self.state = State::Joining(JoinState::new(self.bootstraps.clone(), true));
        self.try_next_bootstrap(now);
        true
    }

    /// The retry of a join that waits after a failed round or a stale answer.
    pub(super) fn join_timer(&mut self, now: Instant) {
        if let State::Joining(JoinState {
            retry_at: Some(r), ..
        }) = &self.state
            && *r <= now
        {
            self.try_next_bootstrap(now);
        }
    }

    fn try_next_bootstrap(&mut self, now: Instant) {
        let delay = self.cfg.request_timeout * 2;
        let State::Joining(JoinState {
            bootstraps,
            next,
            retry_at,
            ..
        }) = &mut self.state
        else {
            return;
        };
        let round_len = bootstraps.len().max(1);
        if *next > 0
            && *next % round_len == 0
            && *next < round_len * JOIN_ROUNDS
            && retry_at.is_none()
        {
            // a round over every bootstrap failed: the ring may still be repairing (a
            // bootstrap's answer can name a successor that just crashed); wait before the next
            *retry_at = Some(now + delay);
            return;
        }
        *retry_at = None;
        let Some(c) = (*next < round_len * JOIN_ROUNDS)
            .then(|| bootstraps.get(*next % round_len).copied())
            .flatten()
        else {
            self.state = State::Member;
            self.event(Event::JoinFailed);
            return;
        };
        *next += 1;
        if !self.send(now, c, &Request::Join, Purpose::Join) {
            self.try_next_bootstrap(now);
        }
    }

    /// A join answer named a successor that refused as not a member: the same bootstrap is
    /// asked again after a stabilize period without counting the attempt, at most
    /// [`JOIN_STALE_RETRIES`] times per join; beyond that the attempt counts as failed.
    fn retry_join_stale(&mut self, now: Instant) {
        let at = now + self.cfg.stabilize_period;
        if let State::Joining(JoinState {
            next,
            retry_at,
            stale,
            ..
        }) = &mut self.state
            && *stale < JOIN_STALE_RETRIES
        {
            *stale += 1;
            *next = next.saturating_sub(1);
            *retry_at = Some(at);
            return;
        }
        self.try_next_bootstrap(now);
    }

    /// The bootstrap's answer to a join: the newcomer's successor.
    pub(super) fn on_join_answer(
        &mut self,
        now: Instant,
        from: Option<NodeId>,
        r: Result<Response, RequestFailure>,
    ) {
        match (r, from) {
            (Ok(Response::Joined { successor, .. }), Some(_)) => {
                let s: Peer = successor.into();
                if s.id == self.ring.me.id {
                    return self.try_next_bootstrap(now);
                }
                // Zave: a newcomer becomes a member only once its successor has answered
                // (with its successor list); a dead successor means another bootstrap
                if !self.send(
                    now,
                    s.into(),
                    &Request::GetNeighbors,
                    Purpose::JoinVerify { succ: s },
                ) {
                    self.try_next_bootstrap(now);
                }
            }
            // The bootstrap's lookup of our successor failed: typically its ring still routed
            // through a node that just crashed or restarted (a restart with the same key,
            // issue 11: the dead instance's entry is purged as the lookup meets the new one,
            // which is not a member yet). Like a stale answer, retried through the same
            // bootstrap after a stabilize period, not after a failed round's `retry_delay`
            // (10 s by default; 2 s with --fast, which a restart at the same address took).
            (
                Ok(Response::Refused {
                    reason: Refusal::Busy,
                }),
                Some(_),
            ) => self.retry_join_stale(now),
            _ => self.try_next_bootstrap(now),
        }
    }

    /// The named successor's answer: the newcomer is a member.
    pub(super) fn on_join_verified(
        &mut self,
        now: Instant,
        succ: Peer,
        r: Result<Response, RequestFailure>,
    ) {
        match r {
            Ok(Response::Neighbors { successors, .. }) => {
                let list = self.ring.list_from(succ, successors);
                self.state = State::Member;
                self.set_succs(list);
                self.event(Event::Joined { successor: succ });
                // paper §6.1: the newcomer then stabilizes; objects move to it on notify
                self.notify(now, succ);
                self.restart_maintenance(now);
            }
            // The named successor is alive but no longer (or not yet) in the ring: the
            // bootstrap's view is stale, typically just after a leave, until the successor
            // lists heal at the next stabilize round. A free retry through the same
            // bootstrap after one stabilize period, rather than the long delay between
            // rounds that is meant for a crashed successor.
            Ok(Response::Refused {
                reason: Refusal::NotMember | Refusal::Leaving,
            }) => self.retry_join_stale(now),
            _ => self.try_next_bootstrap(now),
        }
    }

    /// paper §6.1 join, bootstrap side: find the newcomer's successor (of id + 1, so that a
    /// node re-joining under the same id before the ring noticed its departure gets the next
    /// node, not itself). `None`: the answer comes when the lookup ends.
    pub(super) fn serve_join(
        &mut self,
        now: Instant,
        from: &NodeId,
        token: u64,
    ) -> Option<Response> {
        match self.new_query(Job::ServeJoin { token }) {
            Some(q) => {
                self.start_lookup(now, q, finger_start(from, 0), false);
                None
            }
            None => Some(Response::Refused {
                reason: Refusal::Busy,
            }),
        }
    }

    /// Beyond the paper (Zave's lone-node rule): an orphaned node re-joining through its
    /// bootstraps is still a ring of one for the peers that point at it. It answers their
    /// stabilize as a lone ring, and their notify makes it a member of their ring again (the
    /// join is dropped), so survivors of heavy churn merge rather than purge each other while
    /// the bootstraps may be gone. `None`: the request gets the usual answer.
    pub(super) fn answer_as_lone_ring(
        &mut self,
        now: Instant,
        from: Peer,
        req: &Request,
    ) -> Option<Response> {
        if !matches!(&self.state, State::Joining(j) if j.orphaned) {
            return None;
        }
        match req {
            Request::GetNeighbors => Some(Response::Neighbors {
                predecessor: None,
                successors: Vec::new(),
            }),
            Request::Ping => Some(Response::Pong),
            Request::Notify if from.id != self.ring.me.id => {
                self.state = State::Member;
                self.set_succs(vec![from]);
                self.rectify(now, from);
                self.event(Event::Joined { successor: from });
                self.restart_maintenance(now);
                Some(Response::Ack)
            }
            _ => None,
        }
    }
}
