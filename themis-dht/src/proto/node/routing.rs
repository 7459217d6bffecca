//! The node's view of the ring (paper §6.1 with Zave's corrections): predecessor, successor
//! list, finger table, and the sorted routing table built from them; the pure questions asked
//! of it (who is responsible, who precedes a target) and the changes that the node reports as
//! events.

use std::net::SocketAddr;
use std::time::Instant;

use themis_crypto::NodeId;

use super::Node;
use super::api::Event;
use super::moves::Moves;
use crate::proto::ring::{ID_BITS, in_half_open};
use crate::proto::wire::{Peer, WirePeer};

/// Predecessor, successors and fingers of one node.
#[derive(Debug)]
pub(super) struct RingView {
    /// This node.
    pub(super) me: Peer,
    pub(super) pred: Option<Peer>,
    /// The predecessor last dropped as failed or gone, while no new one is known: the node is
    /// still responsible for the ids between it and this one (see [`RingView::responsible_for`]).
    lost_pred: Option<NodeId>,
    pub(super) succs: Vec<Peer>,
    /// Finger `bit` (0-based): the first node ≥ me + 2^bit, if known.
    pub(super) fingers: Vec<Option<Peer>>,
    /// Fingers and successors, sorted by id, without repeats (rebuilt when dirty).
    routing: Vec<Peer>,
    routing_dirty: bool,
    /// Length `r` of the successor list (Zave).
    list_len: usize,
    /// Peers found to have moved to a new address, and the checks that find them.
    pub(super) moves: Moves,
}

impl RingView {
    /// A lone node: no neighbours.
    pub(super) fn new(me: Peer, list_len: usize) -> Self {
        Self {
            me,
            pred: None,
            lost_pred: None,
            succs: Vec::new(),
            fingers: vec![None; ID_BITS],
            routing: Vec::new(),
            routing_dirty: false,
            list_len,
            moves: Moves::default(),
        }
    }

    /// The first successor.
    pub(super) fn succ(&self) -> Option<Peer> {
        self.succs.first().copied()
    }

    /// Forgets every neighbour (before a join), without events.
    pub(super) fn reset(&mut self) {
        self.forget_pred();
        self.succs.clear();
        self.fingers.iter_mut().for_each(|f| *f = None);
        self.routing_dirty = true;
    }

    /// Forgets the predecessor and the range it bounded, without an event (a re-join).
    pub(super) fn forget_pred(&mut self) {
        self.pred = None;
        self.lost_pred = None;
    }

    /// Sets finger `bit`.
    pub(super) fn set_finger(&mut self, bit: usize, p: Option<Peer>) {
        let p = p.map(|p| self.moves.correct(p));
        if let Some(f) = self.fingers.get_mut(bit) {
            *f = p;
        }
        self.routing_dirty = true;
    }

    /// Sets fingers `bits` to `p` (as many [`RingView::set_finger`]s).
    pub(super) fn set_fingers(&mut self, bits: std::ops::Range<usize>, p: Peer) {
        let p = self.moves.correct(p);
        if let Some(f) = self.fingers.get_mut(bits) {
            f.fill(Some(p));
        }
        self.routing_dirty = true;
    }

    /// Drops `id` from the fingers.
    pub(super) fn purge_fingers(&mut self, id: &NodeId) {
        for f in self.fingers.iter_mut() {
            if f.is_some_and(|p| p.id == *id) {
                *f = None;
            }
        }
        self.routing_dirty = true;
    }

    /// Drops `id` from the successor list without an event (a leaving node's failed target).
    pub(super) fn drop_successor(&mut self, id: &NodeId) {
        self.succs.retain(|p| p.id != *id);
        self.routing_dirty = true;
    }

    /// Replaces the successor list; returns whether the first successor changed.
    fn replace_succs(&mut self, list: Vec<Peer>) -> bool {
        if list == self.succs {
            return false;
        }
        let old = self.succ();
        self.succs = list;
        self.routing_dirty = true;
        self.succ() != old
    }

    /// The address other than `p.addr` at which a table entry (predecessor, successors,
    /// fingers) knows `p.id`, if any. Cheap when there is none: the id is looked up in the
    /// sorted routing table.
    pub(super) fn other_address(&mut self, p: Peer) -> Option<SocketAddr> {
        if let Some(q) = self.pred.filter(|q| q.id == p.id && q.addr != p.addr) {
            return Some(q.addr);
        }
        let r = self.routing();
        let i = r.partition_point(|q| q.id < p.id);
        r.get(i..)?
            .iter()
            .take_while(|q| q.id == p.id)
            .find(|q| q.addr != p.addr)
            .map(|q| q.addr)
    }

    /// Points every entry for `id` at `addr`; returns whether any changed.
    pub(super) fn readdress(&mut self, id: NodeId, addr: SocketAddr) -> bool {
        let mut changed = false;
        let entries = self
            .pred
            .iter_mut()
            .chain(self.succs.iter_mut())
            .chain(self.fingers.iter_mut().flatten());
        for q in entries {
            if q.id == id && q.addr != addr {
                q.addr = addr;
                changed = true;
            }
        }
        if changed {
            self.routing_dirty = true;
        }
        changed
    }

    /// The distinct finger-table entries, sorted.
    pub(super) fn distinct_fingers(&self) -> Vec<Peer> {
        let mut v: Vec<Peer> = self.fingers.iter().flatten().copied().collect();
        v.sort();
        v.dedup();
        v
    }

    /// The routing table: fingers and successors, sorted by id.
    pub(super) fn routing(&mut self) -> &[Peer] {
        if self.routing_dirty {
            // consecutive fingers are mostly the same node: skip repeats before sorting
            let mut v: Vec<Peer> = Vec::with_capacity(64);
            for f in self.fingers.iter().flatten() {
                if v.last().is_none_or(|l: &Peer| l.id != f.id) {
                    v.push(*f);
                }
            }
            v.extend(self.succs.iter().copied());
            v.sort_unstable();
            v.dedup_by_key(|p| p.id);
            self.routing = v;
            self.routing_dirty = false;
        }
        &self.routing
    }

    /// paper §6.1: the closest entries of the routing table that precede `target`
    /// (here: in `(me, target]`), best first.
    pub(super) fn closest_preceding(&mut self, target: &NodeId, count: usize) -> Vec<Peer> {
        let me = self.me.id;
        let r = self.routing();
        let n = r.len();
        // the routing table is sorted by id: walk counterclockwise from the target
        let start = r.partition_point(|p| p.id <= *target);
        let mut out = Vec::with_capacity(count);
        for k in 1..=n {
            let Some(p) = r.get((start + n - k) % n) else {
                break;
            };
            if p.id == me {
                continue;
            }
            if !in_half_open(&me, &p.id, target) {
                break;
            }
            out.push(*p);
            if out.len() >= count {
                break;
            }
        }
        out
    }

    /// The successor of `t` if `t` falls within our successor list: `t ∈ (s[i-1], s[i]]` with
    /// `s[-1] = me` gives `s[i]`. Beyond the paper (which only looks at the first successor):
    /// answering from the whole list saves hops and routes around a bad immediate predecessor
    /// of the target.
    pub(super) fn successor_of(&self, t: &NodeId) -> Option<Peer> {
        self.successor_range_of(t).map(|(_, s)| s)
    }

    /// [`Self::successor_of`] with the start of its range: `(after, s)` where `t ∈ (after, s]`
    /// and `after` is the entry before `s` in the successor list (this node for the first).
    pub(super) fn successor_range_of(&self, t: &NodeId) -> Option<(NodeId, Peer)> {
        let mut prev = self.me.id;
        for s in &self.succs {
            if in_half_open(&prev, t, &s.id) {
                return Some((prev, *s));
            }
            prev = s.id;
        }
        None
    }

    /// True if this node is responsible for `t` in its current view (t ∈ (pred, me]).
    ///
    /// Beyond the paper: with no predecessor known because the last one failed (or left), the
    /// node stays responsible for `(that predecessor, me]` until a new one notifies it. Those
    /// ids were its own, and the departed node's range only adds to them; without this, the
    /// keys of a node were unreachable from its predecessor's failure until the next live node
    /// before it notified it (up to a stabilize period, and a lookup that asked then failed).
    pub(super) fn responsible_for(&self, t: &NodeId) -> bool {
        match (self.pred, self.succs.is_empty()) {
            (_, true) => true,
            (Some(p), false) => in_half_open(&p.id, t, &self.me.id),
            (None, false) => match self.lost_pred {
                Some(lost) => in_half_open(&lost, t, &self.me.id),
                None => *t == self.me.id,
            },
        }
    }

    /// The successor list `first` followed by `rest` (as a peer reported it), sanitized.
    pub(super) fn list_from(&self, first: Peer, rest: Vec<WirePeer>) -> Vec<Peer> {
        self.sanitize_list(std::iter::once(first).chain(rest.into_iter().map(Peer::from)))
    }

    /// The successor list as sent on the wire.
    pub(super) fn wire_succs(&self) -> Vec<WirePeer> {
        self.succs.iter().copied().map(WirePeer::from).collect()
    }

    /// A successor list as this node keeps it: without repeats, at most `r` long, ending where
    /// it wraps back to this node.
    pub(super) fn sanitize_list(&self, list: impl IntoIterator<Item = Peer>) -> Vec<Peer> {
        let mut out: Vec<Peer> = Vec::new();
        for p in list {
            let p = self.moves.correct(p);
            // Zave: a successor list ends where it wraps back to this node
            if p.id == self.me.id {
                break;
            }
            if out.iter().any(|q| q.id == p.id) {
                continue;
            }
            out.push(p);
            if out.len() >= self.list_len {
                break;
            }
        }
        out
    }
}

impl Node {
    /// Replaces the successor list, reporting a new first successor.
    pub(super) fn set_succs(&mut self, list: Vec<Peer>) {
        if self.ring.replace_succs(list) {
            self.metrics.successor_changes += 1;
            let s = self.ring.succ();
            self.event(Event::SuccessorChanged { successor: s });
        }
    }

    /// Sets the predecessor, reporting the change.
    pub(super) fn set_pred(&mut self, now: Instant, p: Option<Peer>) {
        let p = p.map(|p| self.ring.moves.correct(p));
        if self.ring.pred == p {
            return;
        }
        self.ring.pred = p;
        if p.is_some() {
            self.ring.lost_pred = None;
        }
        self.metrics.predecessor_changes += 1;
        self.event(Event::PredecessorChanged { predecessor: p });
        self.take_back_kept();
        // paper §6.1 update: hand objects a closer predecessor is now responsible for
        self.maybe_handoff(now);
    }

    /// Forgets the predecessor (it failed or left), reporting the change.
    pub(super) fn drop_pred(&mut self) {
        self.ring.lost_pred = self.ring.pred.take().map(|p| p.id);
        self.metrics.predecessor_changes += 1;
        self.event(Event::PredecessorChanged { predecessor: None });
    }

    /// Forgets a peer that failed or left (fingers; and successors/predecessor if `all`).
    pub(super) fn purge(&mut self, id: &NodeId, all: bool) {
        self.ring.purge_fingers(id);
        self.owners.forget(id);
        self.peers.forget(id);
        if all {
            if self.ring.succs.iter().any(|p| p.id == *id) {
                let l: Vec<Peer> = self
                    .ring
                    .succs
                    .iter()
                    .filter(|p| p.id != *id)
                    .copied()
                    .collect();
                self.set_succs(l);
            }
            if self.ring.pred.is_some_and(|p| p.id == *id) {
                self.drop_pred();
            }
        }
    }
}
