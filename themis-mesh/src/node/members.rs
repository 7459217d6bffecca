//! The cluster view (`consul members` for a THEMIS ring): a walk of the ring from this node
//! along the successor lists (each member answers `get_neighbors` with its own, PROTOCOL.md
//! §6.5), with each member's own node-info answer (§7.6: services, clock, version).
//!
//! The walk itself is the pure [`RingWalk`]: it says which node to ask next and takes each
//! answer or failure; [`MeshNode::members`] does the asking. A member that does not answer is
//! reported as failed and skipped for the next entry of the last successor list, as Chord's
//! own lookups do.

use std::collections::{HashSet, VecDeque};

use themis_crypto::NodeId;
use themis_dht::{Contact, Peer, Refusal};

use super::MeshNode;
use super::info::NodeInfo;
use crate::Error;

/// How a walk of the ring found a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberState {
    /// It answered as a ring member.
    Alive,
    /// It answered that it is not a ring member (it left, or has not finished joining).
    Left,
    /// It did not answer (crashed, unreachable, or overloaded); others still list it.
    Failed,
}

impl MemberState {
    /// `"alive"`, `"left"` or `"failed"` (Consul's words).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Left => "left",
            Self::Failed => "failed",
        }
    }
}

/// One member of the ring, as the walk found it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// Its id and listening address, as its predecessor lists it.
    pub peer: Peer,
    /// What it answered.
    pub state: MemberState,
    /// Its node-info answer (services, clock, version), when it gave one.
    pub info: Option<NodeInfo>,
    /// Why it is not alive, or why it gave no node-info answer.
    pub error: Option<String>,
}

/// The result of a ring walk.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Members {
    /// The members in ring order from this node (this node first).
    pub members: Vec<Member>,
    /// Whether the walk came back to this node: the list is the whole ring. `false`: it ran
    /// out of answering successors, or stopped at the size limit ([`Members::limited`]).
    pub complete: bool,
    /// Whether the walk stopped at the size limit it was given.
    pub limited: bool,
}

/// The pure plan of a ring walk: which node to ask next, given the successor lists so far.
#[derive(Debug)]
pub(crate) struct RingWalk {
    me: Peer,
    /// The candidates still to try: the successor list of the last node that answered, minus
    /// the ones already tried.
    queue: VecDeque<Peer>,
    seen: HashSet<NodeId>,
    asked: usize,
    max: usize,
    came_back: bool,
}

impl RingWalk {
    /// A walk from `me`, whose successor list is `successors`, asking at most `max` nodes.
    pub(crate) fn new(me: Peer, successors: Vec<Peer>, max: usize) -> Self {
        let mut seen = HashSet::new();
        seen.insert(me.id);
        Self {
            me,
            queue: successors.into(),
            seen,
            asked: 0,
            max,
            came_back: false,
        }
    }

    /// The next node to ask, or `None` when the walk is over.
    pub(crate) fn next_peer(&mut self) -> Option<Peer> {
        if self.came_back || self.asked >= self.max {
            return None;
        }
        while let Some(p) = self.queue.pop_front() {
            if p.id == self.me.id {
                self.came_back = true;
                return None;
            }
            if self.seen.insert(p.id) {
                self.asked += 1;
                return Some(p);
            }
        }
        None
    }

    /// `peer` answered with its successor list: the walk goes on from there.
    pub(crate) fn on_answer(&mut self, successors: Vec<Peer>) {
        self.queue = successors.into();
    }

    /// `peer` gave no list: the walk goes on with the next entry of the previous list.
    pub(crate) fn on_failure(&mut self) {}

    /// Whether the walk came back to its start (the whole ring was seen).
    pub(crate) fn complete(&self) -> bool {
        self.came_back
    }

    /// Whether the walk stopped at its limit.
    pub(crate) fn limited(&self) -> bool {
        !self.came_back && self.asked >= self.max && !self.queue.is_empty()
    }
}

impl MeshNode {
    /// Walks the ring from this node along the successor lists, asking each member for its
    /// neighbours and its node info, at most `max` members besides this one (one request
    /// pair per member, one member at a time: about a millisecond per member on a LAN, and at
    /// most the endpoint's request timeout per member that does not answer).
    pub async fn members(&self, max: usize) -> Result<Members, Error> {
        let me = self.inner.dht.peer();
        let status = self.inner.dht.status().await?;
        let alone = status.state == themis_dht::NodeState::Member && status.successors.is_empty();
        let mut walk = RingWalk::new(me, status.successors, max);
        let local = self.node_info(Contact::from(me)).await;
        let mut members = vec![Member {
            peer: me,
            state: MemberState::Alive,
            error: local.as_ref().err().map(ToString::to_string),
            info: local.ok(),
        }];
        while let Some(peer) = walk.next_peer() {
            let (neighbors, info) = tokio::join!(
                self.inner.dht.neighbors_of(peer),
                self.node_info(Contact::from(peer))
            );
            let (state, error) = match neighbors {
                Ok(n) => {
                    walk.on_answer(n.successors);
                    (
                        MemberState::Alive,
                        info.as_ref().err().map(ToString::to_string),
                    )
                }
                Err(themis_dht::Error::Refused {
                    reason: Refusal::NotMember,
                    ..
                }) => {
                    walk.on_failure();
                    (MemberState::Left, None)
                }
                Err(e @ themis_dht::Error::Refused { .. }) => {
                    // Busy or rate-limited: alive, but its list is not known now.
                    walk.on_failure();
                    (MemberState::Alive, Some(e.to_string()))
                }
                Err(e) => {
                    walk.on_failure();
                    (MemberState::Failed, Some(e.to_string()))
                }
            };
            members.push(Member {
                peer,
                state,
                info: info.ok().filter(|_| state == MemberState::Alive),
                error,
            });
        }
        Ok(Members {
            members,
            complete: walk.complete() || alone,
            limited: walk.limited(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(i: u8) -> Peer {
        Peer {
            id: NodeId::from_bytes([i; 32]),
            addr: ([127, 0, 0, 1], 7000 + u16::from(i)).into(),
        }
    }

    /// Walks a ring of `n` nodes (ids 1..=n in ring order) from node 1, where `dead` nodes do
    /// not answer and every live node's successor list is the next `len` nodes.
    fn walk(n: u8, dead: &[u8], len: usize, max: usize) -> (Vec<u8>, bool) {
        let succs = |i: u8| -> Vec<Peer> {
            (1..=len as u8)
                .map(|d| peer(((i - 1 + d) % n) + 1))
                .collect()
        };
        let mut w = RingWalk::new(peer(1), succs(1), max);
        let mut order = Vec::new();
        while let Some(p) = w.next_peer() {
            let i = p.id.as_bytes()[0];
            order.push(i);
            if dead.contains(&i) {
                w.on_failure();
            } else {
                w.on_answer(succs(i));
            }
        }
        (order, w.complete())
    }

    #[test]
    fn a_healthy_ring_is_walked_in_order_and_closes() {
        let (order, complete) = walk(6, &[], 3, 100);
        assert_eq!(order, vec![2, 3, 4, 5, 6]);
        assert!(complete);
    }

    #[test]
    fn dead_members_are_skipped_through_the_previous_list() {
        let (order, complete) = walk(8, &[3, 4], 3, 100);
        assert_eq!(order, vec![2, 3, 4, 5, 6, 7, 8]);
        assert!(complete);
        // More dead in a row than a list is long: the walk cannot go on.
        let (order, complete) = walk(8, &[3, 4, 5], 3, 100);
        assert_eq!(order, vec![2, 3, 4, 5]);
        assert!(!complete);
    }

    #[test]
    fn the_limit_stops_the_walk() {
        let mut w = RingWalk::new(peer(1), vec![peer(2), peer(3)], 1);
        assert_eq!(w.next_peer(), Some(peer(2)));
        w.on_answer(vec![peer(3), peer(4)]);
        assert_eq!(w.next_peer(), None);
        assert!(w.limited() && !w.complete());
    }

    proptest! {
        #[test]
        fn every_live_member_is_visited_once_when_no_gap_exceeds_the_list(
            n in 2u8..40, len in 1usize..6, dead_mask in any::<u64>()
        ) {
            let dead: Vec<u8> = (2..=n).filter(|i| dead_mask >> i & 1 == 1).collect();
            // the longest run of dead nodes (after node 1, which is alive)
            let mut run = 0; let mut longest = 0;
            for i in 2..=n { if dead.contains(&i) { run += 1; longest = longest.max(run) } else { run = 0 } }
            let len = len.min(usize::from(n) - 1);
            let (order, complete) = walk(n, &dead, len, 1000);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), order.len(), "a node asked twice: {:?}", order);
            if longest < len {
                prop_assert!(complete);
                prop_assert_eq!(order, (2..=n).collect::<Vec<_>>());
            }
        }
    }
}
