//! The simulator over the network model: partitions into any number of groups, healed at a
//! given time, and the same run from the same seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use themis_testkit::net::ModelStats;
use themis_testkit::sim::{SimConfig, build};

/// Counters before the split, at the heal, and a while after it; and the trace.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    before: ModelStats,
    at_heal: ModelStats,
    after: ModelStats,
    trace: u64,
    ring_after_heal: Result<(), String>,
}

fn partitioned(seed: u64, groups: usize) -> Run {
    let mut sim = build(
        SimConfig::new(seed),
        60,
        Duration::from_millis(20),
        Duration::from_secs(10),
    );
    sim.check_ring().unwrap();
    let before = sim.model_stats();
    let split = sim.split(groups);
    assert_eq!(split.len(), groups);
    assert!(split.iter().all(|g| g.len() >= 60 / groups));
    let heal = sim.now() + Duration::from_secs(120);
    sim.heal_at(heal);
    sim.run_for(Duration::from_secs(120));
    assert_eq!(sim.now(), heal);
    let at_heal = sim.model_stats();
    sim.run_for(Duration::from_secs(60));
    Run {
        before,
        at_heal,
        after: sim.model_stats(),
        trace: sim.trace_hash(),
        ring_after_heal: sim.check_ring(),
    }
}

#[test]
fn a_ring_split_in_two_or_three_groups_talks_across_again_once_healed() {
    for groups in [2, 3] {
        let r = partitioned(1, groups);
        eprintln!("{groups} groups: {r:?}");
        assert_eq!(r.before.partitioned, 0, "no partition before the split");
        assert!(
            r.at_heal.partitioned > 0,
            "cross-group messages were dropped"
        );
        assert!(r.at_heal.sent > r.before.sent);
        assert_eq!(
            r.after.partitioned, r.at_heal.partitioned,
            "nothing is dropped by the partition after the heal"
        );
        assert!(r.after.sent > r.at_heal.sent, "the nodes go on talking");
    }
}

#[test]
fn same_seed_same_partitioned_run() {
    let a = partitioned(7, 3);
    assert_eq!(a, partitioned(7, 3));
    assert_ne!(a.trace, partitioned(8, 3).trace);
}
