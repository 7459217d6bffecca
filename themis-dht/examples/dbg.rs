#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]
use std::time::Duration;
use themis_dht::sim::{Sim, SimConfig};
#[path = "../tests/common/mod.rs"]
mod common;
fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let mut sim = common::build(
        SimConfig::new(11),
        n,
        Duration::from_millis(20),
        Duration::from_secs(15),
    );
    println!("{:?}", sim.check_ring());
    let mut live = sim.live();
    for _ in 0..n / 5 {
        let k = (sim.rng_u64() % live.len() as u64) as usize;
        sim.crash(live.swap_remove(k));
    }
    common::grow(&mut sim, n / 5, Duration::from_millis(20));
    for _ in 0..10 {
        sim.run_for(Duration::from_secs(2));
        println!("{:?}", sim.check_ring());
    }
    let jf = (0..sim.len())
        .filter(|i| {
            sim.events(*i)
                .iter()
                .any(|e| matches!(e, themis_dht::Event::JoinFailed))
        })
        .count();
    println!("join failed {jf}");
    dump(&sim, std::env::args().nth(2).unwrap_or_default());
}
fn dump(sim: &Sim, prefix: String) {
    let mut v: Vec<_> = sim
        .live()
        .into_iter()
        .map(|i| (sim.node(i).id(), i))
        .collect();
    v.sort();
    let pos = v
        .iter()
        .position(|(id, _)| id.to_string().starts_with(&prefix))
        .unwrap_or(0);
    for (id, i) in v.iter().skip(pos.saturating_sub(2)).take(6) {
        let n = sim.node(*i);
        println!(
            "{i} {} {} pred={:?} succs={:?} {:?}",
            id.short(),
            n.state_name(),
            n.predecessor().map(|p| p.id.short()),
            n.successors()
                .iter()
                .map(|p| p.id.short())
                .collect::<Vec<_>>(),
            sim.events(*i)
        );
    }
}
