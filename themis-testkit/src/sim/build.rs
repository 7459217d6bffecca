//! Rings in the simulator: grown by joins through random members, then settled; and bulk
//! registrations and lookups over them.

use std::time::Duration;

use themis_dht::{Event, NodeState, ProviderRecord, QueryId, ServiceSpec, object_id};

use super::{Sim, SimConfig};

/// Adds `n` nodes to `sim`, each joining through a random live member, `gap` apart.
pub fn grow(sim: &mut Sim, n: usize, gap: Duration) -> Vec<usize> {
    let mut added = Vec::new();
    if sim.is_empty() {
        added.push(sim.add_node());
    }
    while added.len() < n {
        let live: Vec<usize> = sim
            .live()
            .into_iter()
            .filter(|i| sim.node(*i).state() == NodeState::Member)
            .collect();
        let b = live[sim.rng().usize(..live.len())];
        let i = sim.add_node();
        sim.join(i, b);
        added.push(i);
        sim.run_for(gap);
    }
    added
}

/// A ring of `n` nodes joined one after another, then `settle` of stabilization.
pub fn build(cfg: SimConfig, n: usize, gap: Duration, settle: Duration) -> Sim {
    let mut sim = Sim::new(cfg);
    grow(&mut sim, n, gap);
    sim.run_for(settle);
    sim
}

/// A live ring member picked with the simulation's PRNG.
pub fn random_live(sim: &mut Sim) -> usize {
    let live = sim.live();
    live[sim.rng().usize(..live.len())]
}

/// Registers `count` names `svc-<i>` from random live providers with replication `k`,
/// `batch` at a time; returns (provider, name) pairs.
pub fn register_many(sim: &mut Sim, count: usize, k: u8, batch: usize) -> Vec<(usize, String)> {
    let mut regs = Vec::new();
    for i in 0..count {
        let p = random_live(sim);
        let name = format!("svc-{i}");
        let spec = ServiceSpec::new(name.clone());
        sim.with_node(p, |n, now| n.register(now, spec, Some(k)))
            .unwrap();
        regs.push((p, name));
        if i % batch == batch - 1 {
            sim.run_for(Duration::from_millis(100));
        }
    }
    sim.run_for(Duration::from_secs(3));
    regs
}

/// Finds the result event of query `q` on node `i`.
pub fn providers_result(sim: &Sim, i: usize, q: QueryId) -> Option<Vec<ProviderRecord>> {
    sim.events(i).iter().find_map(|e| match e {
        Event::Providers { query, result } if *query == q => {
            Some(result.clone().map(|p| p.records).unwrap_or_default())
        }
        _ => None,
    })
}

/// Looks up every name from a random live node; returns how many were not found with their
/// provider among the records.
pub fn count_missing(sim: &mut Sim, regs: &[(usize, String)], k: u8) -> usize {
    let mut pending = Vec::new();
    for (c, (p, name)) in regs.iter().enumerate() {
        let from = random_live(sim);
        let q = sim
            .with_node(from, |n, now| n.lookup_providers(now, name, Some(k)))
            .unwrap();
        pending.push((from, q, sim.node(*p).id()));
        if c % 200 == 199 {
            sim.run_for(Duration::from_millis(100));
        }
    }
    sim.run_for(Duration::from_secs(5));
    pending
        .into_iter()
        .filter(|(from, q, provider)| {
            !providers_result(sim, *from, *q)
                .is_some_and(|recs| recs.iter().any(|r| r.provider() == *provider))
        })
        .count()
}

/// How many replicas of the registrations `regs` (k = `k`) are not stored, under their
/// provider, on the live node responsible for them (the true successor of the replica's object
/// id).
pub fn misplaced_replicas(sim: &Sim, regs: &[(usize, String)], k: u8) -> usize {
    let mut misplaced = 0;
    for (p, name) in regs {
        let provider = sim.node(*p).id();
        for r in 0..=k {
            let oid = object_id(name, r);
            let owner = sim.true_successor(&oid).unwrap();
            let idx = (0..sim.len()).find(|i| sim.node(*i).id() == owner).unwrap();
            if !sim
                .node(idx)
                .stored(&oid)
                .iter()
                .any(|rec| rec.provider() == provider)
            {
                misplaced += 1;
            }
        }
    }
    misplaced
}
