#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]
use std::time::Duration;
use themis_dht::sim::{Sim, SimConfig};
fn main() {
    let mut sim = Sim::new(SimConfig::new(1));
    sim.add_node();
    for i in 1..20 {
        let live = sim.live();
        let b = live[(sim.rng_u64() % live.len() as u64) as usize];
        sim.add_node();
        sim.join(i, b);
        sim.run_for(Duration::from_millis(100));
    }
    sim.run_for(Duration::from_secs(20));
    let mut v: Vec<_> = (0..sim.len()).map(|i| (sim.node(i).id(), i)).collect();
    v.sort();
    for (id, i) in v {
        let n = sim.node(i);
        println!("{i} {} state={} pred={:?} succs={:?} events={:?} m={:?}", id.short(), n.state_name(), n.predecessor().map(|p| p.id.short()), n.successors().iter().map(|p| p.id.short()).collect::<Vec<_>>(), sim.events(i), n.metrics());
    }
    println!("{:?}", sim.check_ring());
}
