//! The identifier ring (paper §6): ring order, the successor of a point, clockwise intervals.
//! What the tests check a DHT against, whichever driver runs it.

use themis_crypto::NodeId;

/// `ids` in ring order (ascending from zero).
pub fn order(ids: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = ids.into_iter().collect();
    v.sort();
    v
}

/// The successor of `t` on the ring `ids` (in ring order): the first id `>= t`, wrapping
/// around; the node responsible for `t`. `None` for an empty ring.
pub fn successor(ids: &[NodeId], t: &NodeId) -> Option<NodeId> {
    ids.iter().find(|id| *id >= t).or(ids.first()).copied()
}

/// `x ∈ (a, b)` clockwise on the ring; the whole ring but `a` when `a == b`.
pub fn in_open(a: &NodeId, x: &NodeId, b: &NodeId) -> bool {
    if a < b {
        a < x && x < b
    } else {
        x > a || x < b
    }
}

/// `x ∈ (a, b]` clockwise on the ring; the whole ring when `a == b`.
pub fn in_half_open(a: &NodeId, x: &NodeId, b: &NodeId) -> bool {
    a == b || in_open(a, x, b) || x == b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(v: u8) -> NodeId {
        let mut b = [0u8; 32];
        b[0] = v;
        NodeId::from_bytes(b)
    }

    #[test]
    fn intervals_wrap_around_the_ring() {
        assert!(in_open(&id(10), &id(20), &id(30)));
        assert!(!in_open(&id(10), &id(10), &id(30)));
        assert!(!in_open(&id(10), &id(30), &id(30)));
        assert!(in_open(&id(200), &id(5), &id(10)));
        assert!(in_open(&id(200), &id(250), &id(10)));
        assert!(!in_open(&id(200), &id(100), &id(10)));
        assert!(in_open(&id(7), &id(8), &id(7)) && !in_open(&id(7), &id(7), &id(7)));
        assert!(in_half_open(&id(10), &id(30), &id(30)));
        assert!(in_half_open(&id(7), &id(7), &id(7)));
        assert!(!in_half_open(&id(10), &id(10), &id(30)));
    }

    #[test]
    fn successor_wraps() {
        let ring = order([id(30), id(10), id(20)]);
        assert_eq!(ring, [id(10), id(20), id(30)]);
        assert_eq!(successor(&ring, &id(15)), Some(id(20)));
        assert_eq!(successor(&ring, &id(20)), Some(id(20)));
        assert_eq!(successor(&ring, &id(31)), Some(id(10)));
        assert_eq!(successor(&[], &id(1)), None);
    }
}
