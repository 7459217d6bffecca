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
                    return Err(format!(
                        "node {} has successor {:?}, expected {}",
                        id.short(),
                        other.map(|p| p.id.short()),
                        next.short()
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
