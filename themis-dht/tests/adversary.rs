#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Misbehaving nodes: responders that stall finds, responsible nodes that forge records.

use std::time::Duration;

use themis_dht::{Event, Found, ServiceSpec, object_id};
use themis_testkit::sim::{Adversary, SimConfig, build, providers_result};

#[test]
fn regressing_or_random_responders_cannot_stall_a_find() {
    let mut sim = build(
        SimConfig::new(21),
        150,
        Duration::from_millis(20),
        Duration::from_secs(25),
    );
    sim.check_ring().unwrap();
    let live = sim.live();
    // 20 % adversaries: half answer with nodes behind them, half with random nodes
    for (c, i) in live.iter().enumerate() {
        if c % 10 == 3 {
            sim.set_adversary(*i, Adversary::RegressFinds);
        } else if c % 10 == 7 {
            sim.set_adversary(*i, Adversary::RandomFinds);
        }
    }
    let honest: Vec<usize> = live
        .iter()
        .enumerate()
        .filter(|(c, _)| c % 10 != 3 && c % 10 != 7)
        .map(|(_, i)| *i)
        .collect();
    let mut pending = Vec::new();
    for c in 0..1000 {
        let from = honest[c % honest.len()];
        let target = sim.random_id();
        pending.push((from, sim.find(from, target), target));
        if c % 50 == 49 {
            sim.run_for(Duration::from_millis(100));
        }
    }
    sim.run_for(Duration::from_secs(10));
    let mut wrong = 0;
    for (from, q, target) in pending {
        let r = sim.events(from).iter().find_map(|e| match e {
            Event::Found { query, result } if *query == q => Some(result.clone()),
            _ => None,
        });
        match r {
            Some(Ok(Found { successor, .. }))
                if Some(successor.id) == sim.true_successor(&target) => {}
            _ => wrong += 1,
        }
    }
    let m = sim.metrics_total();
    eprintln!("bad answers rejected: {}", m.lookup_bad_answers);
    assert!(
        m.lookup_bad_answers > 0,
        "the adversaries were met and caught"
    );
    assert_eq!(wrong, 0, "every find completes through honest nodes");
}

#[test]
fn forged_records_are_caught_by_readers() {
    let mut sim = build(
        SimConfig::new(22),
        40,
        Duration::from_millis(20),
        Duration::from_secs(15),
    );
    sim.check_ring().unwrap();
    let live = sim.live();
    let provider = live[5];
    let reader = live[17];
    sim.with_node(provider, |n, now| {
        n.register(now, ServiceSpec::new("check"), Some(2))
    })
    .unwrap();
    sim.run_for(Duration::from_secs(2));
    // the node responsible for replica 0 turns bad
    let owner_id = sim.true_successor(&object_id("check", 0)).unwrap();
    let owner = live
        .iter()
        .copied()
        .find(|i| sim.node(*i).id() == owner_id)
        .unwrap();
    assert!(owner != reader && owner != provider, "pick another seed");
    sim.set_adversary(owner, Adversary::ForgeRecords);
    let q = sim
        .with_node(reader, |n, now| n.lookup_providers(now, "check", Some(2)))
        .unwrap();
    sim.run_for(Duration::from_secs(3));
    let recs = providers_result(&sim, reader, q).unwrap();
    // the forged and ghost records were dropped; the reader fell back to replica 1
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].provider(), sim.node(provider).id());
    assert_eq!(recs[0].addr(), sim.node(provider).peer().addr);
    assert!(sim.node(reader).metrics().records_rejected_by_reader >= 2);
    let replica = sim.events(reader).iter().find_map(|e| match e {
        Event::Providers {
            query,
            result: Ok(p),
        } if *query == q => Some(p.replica),
        _ => None,
    });
    assert_eq!(replica, Some(1));
}
