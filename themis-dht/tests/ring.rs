#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Ring formation, Zave's invariants and lookups in the deterministic simulator.

use std::time::Duration;

use themis_dht::{Event, Found};
use themis_testkit::sim::{Sim, SimConfig, build};

/// A ring of `n` nodes joined one after another through random earlier members, `gap` apart,
/// then left to stabilize.
fn ring(seed: u64, n: usize, gap: Duration, settle: Duration) -> Sim {
    build(SimConfig::new(seed), n, gap, settle)
}

fn finds(sim: &mut Sim, count: usize) -> (usize, Vec<u32>) {
    let live = sim.live();
    let mut wrong = 0;
    let mut hops = Vec::new();
    let mut pending = Vec::new();
    for c in 0..count {
        let from = live[sim.rng().usize(..live.len())];
        let target = sim.random_id();
        let q = sim.find(from, target);
        pending.push((from, q, target));
        if c % 100 == 99 {
            sim.run_for(Duration::from_millis(200));
        }
    }
    sim.run_for(Duration::from_secs(5));
    for (from, q, target) in pending {
        let ev = sim
            .events(from)
            .iter()
            .find_map(|e| match e {
                Event::Found { query, result } if *query == q => Some(result.clone()),
                _ => None,
            })
            .expect("every find finishes");
        match ev {
            Ok(Found { successor, hops: h }) => {
                if Some(successor.id) != sim.true_successor(&target) {
                    wrong += 1;
                }
                hops.push(h);
            }
            Err(_) => wrong += 1,
        }
    }
    (wrong, hops)
}

#[test]
fn small_ring_converges() {
    let mut sim = ring(1, 20, Duration::from_millis(100), Duration::from_secs(20));
    sim.check_ring().unwrap();
    let (wrong, _) = finds(&mut sim, 200);
    assert_eq!(wrong, 0);
    // Every query was answered well within `lookup_stall`: no lookup had to hedge, each asked
    // one node at a time (paper §6.1).
    assert_eq!(sim.metrics_total().lookup_stalls, 0);
}

#[test]
fn lookups_hedge_around_crashed_peers() {
    let mut sim = ring(3, 30, Duration::from_millis(50), Duration::from_secs(20));
    sim.check_ring().unwrap();
    let live = sim.live();
    // Crash a sixth of the ring; before stabilization notices, lookups meet silent peers.
    for k in 0..5 {
        sim.crash(live[k * 6 + 1]);
    }
    let before = sim.metrics_total();
    let (_, hops) = finds(&mut sim, 300);
    let after = sim.metrics_total();
    assert!(
        after.lookup_stalls > before.lookup_stalls,
        "some lookup waited on a crashed peer and asked others"
    );
    // A stalled lookup goes on with its other candidates instead of failing.
    assert_eq!(hops.len(), 300, "every find succeeds");
}

#[test]
fn thousand_nodes_one_after_another() {
    let n = 1000;
    let t0 = std::time::Instant::now();
    let mut sim = ring(7, n, Duration::from_millis(20), Duration::from_secs(25));
    let built = t0.elapsed();
    sim.check_ring().unwrap();
    let t1 = std::time::Instant::now();
    let (wrong, hops) = finds(&mut sim, 10_000);
    let found = t1.elapsed();
    let mut histogram = [0usize; 10];
    for h in &hops {
        histogram[(*h as usize).min(9)] += 1;
    }
    eprintln!(
        "built {n} nodes in {built:?} (wall, test profile); 10 000 finds in {found:?}; hop histogram {histogram:?}"
    );
    assert_eq!(wrong, 0, "every find returns the true successor");
    let mean = hops.iter().map(|h| f64::from(*h)).sum::<f64>() / hops.len() as f64;
    let bound = 0.5 * (n as f64).log2() + 1.0;
    eprintln!(
        "mean hops {mean:.2} (bound {bound:.2}); delivered {}",
        sim.delivered
    );
    assert!(mean <= bound, "mean hops {mean} above {bound}");
}
