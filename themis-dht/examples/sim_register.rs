//! Registration latency in the simulator (simulated time, so independent of machine load):
//! a ring of 100 nodes (message latency uniform in 1..5 ms), then 200 registrations with
//! k = 2 from random nodes, one at a time; prints the p50 / p90 / max simulated time from
//! `register` to `Event::Registered`, and per registration what the ring spent on it: lookups
//! (with the ring's finger refreshes during the run: about 2 per registration), the finds its
//! replica lookups sent, stores, DHT payload bytes of all requests and responses (with the
//! background: stabilize, finger refreshes), records signed and signatures verified.
//!
//! ```text
//! cargo run --release -p themis-dht --example sim_register -- [NODES] [COUNT]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use themis_dht::{Event, ServiceSpec};
use themis_testkit::sim::{Sim, SimConfig, build};

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let (gap, settle) = (Duration::from_millis(20), Duration::from_secs(25));
    let mut sim = build(SimConfig::new(7), nodes, gap, settle);
    sim.check_ring().unwrap();
    let before = sim.metrics_total();
    let mut lat = Vec::new();
    let (mut stored, mut failed) = (0u64, 0u64);
    for k in 0..count {
        let live = sim.live();
        let i = live[sim.rng().usize(..live.len())];
        sim.take_events(i);
        let start = sim.now();
        sim.with_node(i, |n, now| {
            n.register(now, ServiceSpec::new(format!("svc-{k}")), Some(2))
                .unwrap()
        });
        let done = |s: &Sim| {
            s.events(i)
                .iter()
                .any(|e| matches!(e, Event::Registered { .. }))
        };
        while !done(&sim) {
            sim.run_for(Duration::from_millis(1));
        }
        for e in sim.take_events(i) {
            if let Event::Registered {
                stored: s,
                failed: f,
                ..
            } = e
            {
                stored += u64::from(s);
                failed += u64::from(f);
            }
        }
        lat.push(sim.now() - start);
    }
    let after = sim.metrics_total();
    lat.sort();
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    let per = |f: fn(&themis_dht::Metrics) -> u64| (f(&after) - f(&before)) as f64 / count as f64;
    println!(
        "{nodes} nodes, {count} registrations (k = 2): latency p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms \
         (simulated); lookups {:.2} per registration; replicas stored {stored}, failed {failed}",
        q(0.5),
        q(0.9),
        q(1.0),
        per(|m| m.lookups_started),
    );
    println!(
        "per registration: replica finds {:.2} + stores {:.2} = {:.2} requests; all requests \
         {:.2}, payload bytes {:.0} (requests) + {:.0} (responses) with the background; records \
         signed {:.2}, signatures verified {:.2} (cache hits {:.2}); replicas looked up again \
         {:.2}; replicas stored from the owner cache {:.2}",
        per(|m| m.replica_finds_sent),
        per(|m| m.stores_sent),
        per(|m| m.replica_finds_sent + m.stores_sent),
        per(|m| m.requests_sent),
        per(|m| m.request_bytes_sent),
        per(|m| m.response_bytes_sent),
        per(|m| m.records_signed),
        per(|m| m.verify_cache_misses),
        per(|m| m.verify_cache_hits),
        per(|m| m.replica_relookups),
        per(|m| m.owner_cache_hits),
    );
}
