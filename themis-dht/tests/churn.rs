#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Registrations under churn: crashes repaired by stabilization and re-store; graceful leaves
//! that lose nothing.

use std::time::Duration;

use themis_dht::{Config, Event};
use themis_testkit::sim::{
    SimConfig, build, count_missing, grow, misplaced_replicas, register_many,
};

#[test]
fn crash_twenty_percent_and_join_twenty_percent() {
    let n = 1000;
    let cfg = SimConfig::new(11);
    let restore = cfg.node.restore_period;
    let mut sim = build(cfg, n, Duration::from_millis(20), Duration::from_secs(15));
    sim.check_ring().unwrap();
    let regs = register_many(&mut sim, 10_000, 2, 500);
    let stored: u64 = (0..sim.len())
        .flat_map(|i| sim.events(i).to_vec())
        .filter_map(|e| match e {
            Event::Registered { stored, .. } => Some(u64::from(stored)),
            _ => None,
        })
        .sum();
    // a store may meet a node whose view of the ring is a moment old; it is retried later
    assert!(
        stored >= 29_970,
        "{stored} of 30 000 replicas stored at once"
    );

    // crash 20 % with no leave, join 20 % new ones
    let mut live = sim.live();
    for _ in 0..n / 5 {
        let k = sim.rng().usize(..live.len());
        sim.crash(live.swap_remove(k));
    }
    grow(&mut sim, n / 5, Duration::from_millis(20));
    // one re-store period
    sim.run_for(restore + Duration::from_secs(2));
    sim.check_ring().unwrap();
    let stuck = (0..sim.len())
        .filter(|i| sim.is_alive(*i) && !sim.node(*i).is_member())
        .count();
    assert_eq!(stuck, 0, "every live node is a ring member");
    let alive: Vec<(usize, String)> = regs.into_iter().filter(|(p, _)| sim.is_alive(*p)).collect();
    let missing = count_missing(&mut sim, &alive, 2);
    let m = sim.metrics_total();
    eprintln!(
        "{} registrations with a live owner, {missing} missing; repairs {}, handoffs {}, rejected {:?}",
        alive.len(),
        m.stabilization_repairs,
        m.handoff_records_sent,
        m.rejected
    );
    assert_eq!(missing, 0);
}

#[test]
fn graceful_leave_of_thirty_percent_loses_nothing() {
    let n = 1000;
    let mut cfg = SimConfig::new(12);
    // no re-store may help: the records must survive through handoffs alone
    let mut node = Config::fast();
    node.record_ttl = Duration::from_secs(3600);
    node.restore_period = Duration::from_secs(3000);
    cfg.node = node;
    let mut sim = build(cfg, n, Duration::from_millis(20), Duration::from_secs(15));
    let regs = register_many(&mut sim, 10_000, 2, 500);
    let mut live = sim.live();
    for _ in 0..(n * 3 / 10) {
        let k = sim.rng().usize(..live.len());
        let i = live.swap_remove(k);
        sim.leave(i);
        sim.run_for(Duration::from_millis(30));
    }
    sim.run_for(Duration::from_secs(3));
    sim.check_ring().unwrap();
    // every replica of every registration is at its true owner now
    let lost = misplaced_replicas(&sim, &regs, 2);
    let left: usize = (0..sim.len())
        .flat_map(|i| sim.events(i).to_vec())
        .filter_map(|e| match e {
            Event::Left { records_lost, .. } => Some(records_lost),
            _ => None,
        })
        .sum();
    assert_eq!(left, 0, "no leave reports lost records");
    assert_eq!(lost, 0, "replicas not at their owner after the leaves");
    // and every registration is found by a reader
    assert_eq!(count_missing(&mut sim, &regs, 2), 0);
}

/// Joiners that crash soon after their join lose nothing: a join hands the newcomer the
/// records of its range, and with heavy-tailed sessions a newcomer is the likeliest node to
/// crash soon (sim_scale 10000: a registration's three replicas gone for two minutes, two of
/// them on such joiners). The node that handed them keeps copies, unserved, and takes them
/// back when it is responsible for them again (PROTOCOL.md §6.9, "Handed records kept").
#[test]
fn joiners_that_crash_soon_lose_no_record() {
    let n = 300;
    let mut cfg = SimConfig::new(13);
    // no re-store may help: the records must survive through the kept copies alone
    let mut node = Config::fast();
    node.record_ttl = Duration::from_secs(3600);
    node.restore_period = Duration::from_secs(3000);
    cfg.node = node;
    let mut sim = build(cfg, n, Duration::from_millis(20), Duration::from_secs(15));
    let regs = register_many(&mut sim, 3_000, 2, 500);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        misplaced_replicas(&sim, &regs, 2),
        0,
        "every replica stored"
    );
    let joiners = grow(&mut sim, n / 5, Duration::from_millis(20));
    sim.run_for(Duration::from_secs(5));
    let handed = sim.metrics_total().handoff_records_sent;
    assert!(handed > 0, "the joiners took records over");
    for j in &joiners {
        sim.crash(*j);
    }
    sim.run_for(Duration::from_secs(15));
    sim.check_ring().unwrap();
    let lost = misplaced_replicas(&sim, &regs, 2);
    let m = sim.metrics_total();
    assert_eq!(
        lost,
        0,
        "{lost} replicas not at their owner after the crash of {} joiners that had taken {handed} records; {} taken back",
        joiners.len(),
        m.records_taken_back
    );
    assert_eq!(count_missing(&mut sim, &regs, 2), 0);
}
