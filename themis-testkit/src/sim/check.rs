//! Checks against the truth the simulator knows: the true successor of a point, and Zave's
//! ring invariants over the live members.

use themis_crypto::NodeId;

use super::Sim;
use crate::ring::{in_open, order, successor};

impl Sim {
    /// The true successor of `t` among live members.
    pub fn true_successor(&self, t: &NodeId) -> Option<NodeId> {
        let ring = order(self.live().iter().map(|i| self.nodes[*i].node.id()));
        successor(&ring, t)
    }

    /// Checks Zave's invariants on the live members: every successor and predecessor is right
    /// (hence at least one ring, at most one ring, an ordered ring), and every successor list is
    /// ordered and starts with the true successor.
    pub fn check_ring(&self) -> Result<(), String> {
        let live = self.live();
        let mut ids: Vec<(NodeId, usize)> = live
            .iter()
            .map(|i| (self.nodes[*i].node.id(), *i))
            .collect();
        ids.sort();
        let n = ids.len();
        if n == 0 {
            return Err("no live node".into());
        }
        for (k, (id, i)) in ids.iter().enumerate() {
            let node = &self.nodes[*i].node;
            let next = ids[(k + 1) % n].0;
            let prev = ids[(k + n - 1) % n].0;
            if n == 1 {
                if let Some(s) = node.successors().first() {
                    return Err(format!(
                        "lone node {} has successor {}",
                        id.short(),
                        s.id.short()
                    ));
                }
                continue;
            }
            match node.successors().first() {
                Some(s) if s.id == next => {}
                other => {
                    // What the node and the two peers know of each other (why no mechanism
                    // mends it: a stuck heal is diagnosed from this line).
                    let short = |p: Option<themis_dht::Peer>| p.map(|p| p.id.short());
                    let expected = &self.nodes[ids[(k + 1) % n].1].node;
                    let actual = other.and_then(|s| {
                        ids.binary_search_by(|(x, _)| x.cmp(&s.id))
                            .ok()
                            .map(|at| &self.nodes[ids[at].1].node)
                    });
                    return Err(format!(
                        "node {} has successor {:?}, expected {} (the node: {} lost peers, \
                         expected in its fingers {}, in its successor list {}; expected's \
                         predecessor {:?}, successor {:?}, node #{} of the simulation, {} \
                         successors, {} fingers, {} lost peers, {} stabilize repairs, {} \
                         merges; actual's predecessor {:?})",
                        id.short(),
                        other.map(|p| p.id.short()),
                        next.short(),
                        node.lost_peers(),
                        node.fingers().iter().any(|f| f.id == next),
                        node.successors().iter().any(|f| f.id == next),
                        short(expected.predecessor()),
                        short(expected.successors().first().copied()),
                        ids[(k + 1) % n].1,
                        expected.successors().len(),
                        expected.fingers().len(),
                        expected.lost_peers(),
                        expected.metrics().stabilization_repairs,
                        expected.metrics().unify_merges,
                        actual.map(|a| short(a.predecessor())),
                    ));
                }
            }
            match node.predecessor() {
                Some(p) if p.id == prev => {}
                other => {
                    return Err(format!(
                        "node {} has predecessor {:?}, expected {}",
                        id.short(),
                        other.map(|p| p.id.short()),
                        prev.short()
                    ));
                }
            }
            // ordered successor list (Zave's OrderedSuccessorLists)
            let mut last = *id;
            for (x, s) in node.successors().iter().enumerate() {
                if x > 0 && !in_open(&last, &s.id, id) {
                    return Err(format!(
                        "node {} has an unordered successor list",
                        id.short()
                    ));
                }
                last = s.id;
            }
        }
        Ok(())
    }

    /// Checks that every live member's successor list is complete: the next `r` live members
    /// in ring order (fewer in a ring of `r` nodes or less). Zave's invariants allow gaps
    /// further down a list (a node that joined, or a ring that merged, is learnt one stabilize
    /// round per place), and a find answered from a list with a gap names a node past the
    /// true successor.
    pub fn check_successor_lists(&self) -> Result<(), String> {
        let mut ids: Vec<(NodeId, usize)> = self
            .live()
            .iter()
            .map(|i| (self.nodes[*i].node.id(), *i))
            .collect();
        ids.sort();
        let n = ids.len();
        for (k, (id, i)) in ids.iter().enumerate() {
            let node = &self.nodes[*i].node;
            let want = node.config().successor_list_len.min(n.saturating_sub(1));
            let list = node.successors();
            let complete =
                list.len() >= want && (0..want).all(|x| list[x].id == ids[(k + 1 + x) % n].0);
            if !complete {
                return Err(format!(
                    "node {} has {} of its {want} successors in place",
                    id.short(),
                    (0..want.min(list.len()))
                        .take_while(|x| list[*x].id == ids[(k + 1 + x) % n].0)
                        .count()
                ));
            }
        }
        Ok(())
    }
}
