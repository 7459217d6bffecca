//! Peers that move (issue 11): a node restarted elsewhere with its key (a crash, a rescheduled
//! container, a VM moved) keeps its id and gets a new address.
//!
//! Before this, every table entry naming the old address was used until it failed on its own,
//! one request timeout at a time, and meanwhile lookups through those entries timed out: with
//! the old host black-holed, a restarted node's registration was stored on none of its replicas
//! for 40 s in half the runs. An id seen at a new address is not enough to move it, though: the
//! same key started twice must not make the ring forget the live member (issue 11, identity
//! collisions), and a node reachable at two addresses must not flap between them.
//!
//! So a request from a known id at a new address starts an **address check**: the driver asks
//! whoever listens at the old address for its id (the endpoint's IDENTIFY, no handshake and no
//! session touched; [`Output::Identify`](super::api::Output::Identify)). If the old address still answers with that id, the
//! entry stays (a live duplicate, or a second address of the same node) and the pair is not
//! checked again for a while. Otherwise (no answer, a refused connection, another id) every entry
//! for the id takes the new address, and the move is remembered in a small table so that
//! successor lists still gossiping the old address are corrected as they arrive.
//!
//! Bounded: [`MAX_CHECKS`] checks remembered (in flight or concluded "still there"), one per id,
//! and [`MAX_MOVES`] moves.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use themis_crypto::NodeId;

use super::Node;
use super::api::{Event, RequestFailure};
use super::requests::Purpose;
use crate::proto::wire::Peer;

/// Address checks remembered at once (in flight, or answered "still there" and not repeated
/// before their time is up).
pub(super) const MAX_CHECKS: usize = 16;
/// Moves remembered to correct gossiped successor lists.
pub(super) const MAX_MOVES: usize = 64;
/// A pair (id, new address) whose old address still answered is not checked again for this
/// many request timeouts.
const STILL_THERE_FOR: u32 = 12;

/// One address check: `id` was seen at `new`.
#[derive(Debug, Clone, Copy)]
struct Check {
    id: NodeId,
    new: SocketAddr,
    /// `None` while the IDENTIFY is in flight; then the end of the quiet time.
    quiet_until: Option<Instant>,
}

/// The address checks and the moves they found.
#[derive(Debug, Default)]
pub(super) struct Moves {
    checks: Vec<Check>,
    /// (id, old address, new address), oldest first; one entry per id.
    moved: VecDeque<(NodeId, SocketAddr, SocketAddr)>,
}

impl Moves {
    /// `p` with its address corrected if its id moved away from exactly that address.
    pub(super) fn correct(&self, mut p: Peer) -> Peer {
        if let Some((_, _, new)) = self
            .moved
            .iter()
            .find(|(id, old, _)| *id == p.id && *old == p.addr)
        {
            p.addr = *new;
        }
        p
    }

    fn record(&mut self, id: NodeId, old: SocketAddr, new: SocketAddr) {
        self.moved.retain(|(i, _, _)| *i != id);
        if self.moved.len() >= MAX_MOVES {
            self.moved.pop_front();
        }
        self.moved.push_back((id, old, new));
    }
}

impl Node {
    /// `from` sent us a request (its id authenticated by the handshake): if our tables know
    /// that id at another address, check whether it moved (see the module docs).
    pub(super) fn learn_address(&mut self, now: Instant, from: Peer) {
        if from.id == self.ring.me.id {
            return;
        }
        let Some(old) = self.ring.other_address(from) else {
            return;
        };
        let m = &mut self.ring.moves;
        m.checks.retain(|c| c.quiet_until.is_none_or(|t| t > now));
        if m.checks
            .iter()
            .any(|c| c.id == from.id && (c.new == from.addr || c.quiet_until.is_none()))
        {
            return;
        }
        if m.checks.len() >= MAX_CHECKS {
            return;
        }
        let purpose = Purpose::AddressCheck {
            old: Peer {
                id: from.id,
                addr: old,
            },
            new: from,
        };
        if !self.identify(now, old, purpose) {
            return;
        }
        self.ring.moves.checks.push(Check {
            id: from.id,
            new: from.addr,
            quiet_until: None,
        });
        self.metrics.address_checks += 1;
    }

    /// The answer to an address check: who listens at the old address now.
    pub(super) fn on_address_check(
        &mut self,
        now: Instant,
        old: Peer,
        new: Peer,
        r: Result<NodeId, RequestFailure>,
    ) {
        let quiet = now + self.cfg.request_timeout * STILL_THERE_FOR;
        if r.as_ref().is_ok_and(|id| *id == old.id) {
            // still there: a second instance with the same key, or a second address of the
            // same node. The tables keep the old address.
            self.metrics.address_conflicts += 1;
            if let Some(c) = self
                .ring
                .moves
                .checks
                .iter_mut()
                .find(|c| c.id == new.id && c.new == new.addr)
            {
                c.quiet_until = Some(quiet);
            }
            return;
        }
        self.ring.moves.checks.retain(|c| c.id != new.id);
        self.ring.moves.record(new.id, old.addr, new.addr);
        if self.ring.readdress(new.id, new.addr) {
            self.metrics.peers_readdressed += 1;
            if self.ring.succ() == Some(new) {
                self.event(Event::SuccessorChanged {
                    successor: Some(new),
                });
            }
            if self.ring.pred == Some(new) {
                self.event(Event::PredecessorChanged {
                    predecessor: Some(new),
                });
            }
        }
    }

    /// The driver's answer to [`Output::Identify`] `request_id`: the id of the node that
    /// answered at that address, or why none did. Unknown ids are ignored.
    pub fn handle_identified(
        &mut self,
        now: Instant,
        request_id: u64,
        result: Result<NodeId, RequestFailure>,
    ) {
        let Some(p) = self.requests.take(request_id) else {
            return;
        };
        match p.purpose {
            Purpose::AddressCheck { old, new } => self.on_address_check(now, old, new, result),
            // an answer of the wrong kind: as if the request failed
            _ => self.on_result(now, p, None, Err(RequestFailure::Refused)),
        }
    }
}
