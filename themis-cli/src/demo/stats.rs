//! Small pure helpers of the demo report: ring successors computed from the ids the demo holds,
//! latency percentiles, and the tolerance of the canary split.

use std::time::Duration;

use themis_mesh::NodeId;

/// The node responsible for `target` on a ring of `ids` (paper §6.1: "the closest node for
/// which `object_id ≤ node_id`", wrapping around): the first id `≥ target`, else the smallest.
pub(crate) fn ring_successor(ids: &[NodeId], target: &NodeId) -> Option<NodeId> {
    let above = ids.iter().filter(|id| *id >= target).min();
    above.or_else(|| ids.iter().min()).copied()
}

/// The node just before `id` on a ring of `ids` (wrapping around); `None` if `ids` holds no
/// other node.
pub(crate) fn ring_predecessor(ids: &[NodeId], id: &NodeId) -> Option<NodeId> {
    let below = ids.iter().filter(|x| *x < id).max();
    below
        .or_else(|| ids.iter().filter(|x| *x != id).max())
        .copied()
}

/// The (at most `len`) nodes that follow `id` clockwise on a ring of `ids`, nearest first,
/// stopping before `id` itself: the successor list a settled Chord node holds.
pub(crate) fn clockwise_after(ids: &[NodeId], id: &NodeId, len: usize) -> Vec<NodeId> {
    let mut sorted: Vec<NodeId> = ids.iter().filter(|x| *x != id).copied().collect();
    sorted.sort_unstable();
    let split = sorted.partition_point(|x| x < id);
    let (before, after) = sorted.split_at(split);
    after.iter().chain(before).take(len).copied().collect()
}

/// The `q`-quantile (0 < q ≤ 1) of `sorted` by the nearest-rank method; zero when empty.
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let n = sorted.len() as f64;
    let rank = (q * n).ceil().max(1.0) as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
        .unwrap_or_default()
}

/// The share, in percentage points, that the canary split may stray from its weight over
/// `calls` calls: 3 points (the library's test bound over 10,000 calls) or four standard
/// deviations of a binomial draw, whichever is larger, so that a small batch does not fail by
/// chance.
pub(crate) fn split_tolerance(expected_share: f64, calls: u64) -> f64 {
    if calls == 0 {
        return 100.0;
    }
    let p = expected_share.clamp(0.0, 1.0);
    let sigma = (p * (1.0 - p) / calls as f64).sqrt() * 100.0;
    (4.0 * sigma).max(3.0)
}

/// Milliseconds with two decimals, for the report.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;

    fn id(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    #[test]
    fn successor_wraps_around() {
        let ids = [id(10), id(200), id(90)];
        assert_eq!(
            ring_successor(&ids, &id(10)),
            Some(id(10)),
            "an equal id owns it"
        );
        assert_eq!(ring_successor(&ids, &id(11)), Some(id(90)));
        assert_eq!(ring_successor(&ids, &id(201)), Some(id(10)), "wraps");
        assert_eq!(ring_successor(&[], &id(1)), None);
        assert_eq!(ring_predecessor(&ids, &id(10)), Some(id(200)), "wraps");
        assert_eq!(ring_predecessor(&ids, &id(200)), Some(id(90)));
        assert_eq!(ring_predecessor(&[id(3)], &id(3)), None);
        assert_eq!(clockwise_after(&ids, &id(90), 8), vec![id(200), id(10)]);
        assert_eq!(clockwise_after(&ids, &id(200), 1), vec![id(10)]);
        assert_eq!(clockwise_after(&[id(3)], &id(3), 8), vec![]);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&v[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn tolerance_grows_for_small_batches() {
        assert!((split_tolerance(0.05, 10_000) - 3.0).abs() < 1e-9);
        let small = split_tolerance(0.05, 200);
        assert!(small > 6.0 && small < 6.5, "{small}");
        assert_eq!(split_tolerance(0.05, 0), 100.0);
    }

    proptest! {
        /// The successor is in the set, and no member lies strictly between target and it.
        #[test]
        fn successor_is_the_closest_clockwise(ids in proptest::collection::vec(any::<u8>(), 1..20), t in any::<u8>()) {
            let ids: Vec<NodeId> = ids.into_iter().map(id).collect();
            let s = ring_successor(&ids, &id(t)).unwrap();
            prop_assert!(ids.contains(&s));
            let dist = |x: &NodeId| x.as_bytes()[0].wrapping_sub(t);
            prop_assert!(ids.iter().all(|x| dist(x) >= dist(&s)));
        }
    }
}
