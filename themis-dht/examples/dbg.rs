#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]
use std::time::Duration;
use themis_dht::sim::{Sim, SimConfig};
fn main() {
    let mut sim = Sim::new(SimConfig::new(1));
    sim.add_node();
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    for i in 1..n {
        let live = sim.live();
        let b = live[(sim.rng_u64() % live.len() as u64) as usize];
        sim.add_node();
        sim.join(i, b);
        sim.run_for(Duration::from_millis(50));
    }
    sim.run_for(Duration::from_secs(20));
    let mut v: Vec<_> = (0..sim.len()).map(|i| (sim.node(i).id(), i)).collect();
    v.sort();
    let t = std::time::Instant::now();
    let m = sim.metrics_total();
    println!("{m:?} delivered {} wall {:?}", sim.delivered, t.elapsed());
    let jf = (0..sim.len()).filter(|i| sim.events(*i).iter().any(|e| matches!(e, themis_dht::Event::JoinFailed))).count();
    println!("join failed {jf}");
    if n > 30 {
        println!("{:?}", sim.check_ring());
        let pos = v.iter().position(|(id, _)| id.to_string().starts_with(&std::env::args().nth(2).unwrap_or_default())).unwrap_or(0);
        for (id, i) in v.iter().skip(pos.saturating_sub(2)).take(40) {
            let n = sim.node(*i);
            println!("{i} {} pred={:?} succs={:?} fingers={:?}", id.short(), n.predecessor().map(|p| p.id.short()), n.successors().iter().map(|p| p.id.short()).collect::<Vec<_>>(), n.fingers().iter().map(|p| p.id.short()).collect::<Vec<_>>());
        }
        for _ in 0..30 {
            sim.run_for(Duration::from_millis(100));
            let n = sim.node(167);
            println!("{:?} {:?}", n.successors().first().map(|p| p.id.short()), n.metrics().successor_changes);
        }
        return;
    }
    for (id, i) in v {
        let n = sim.node(i);
        println!("{i} {} state={} pred={:?} succs={:?} events={:?} m={:?}", id.short(), n.state_name(), n.predecessor().map(|p| p.id.short()), n.successors().iter().map(|p| p.id.short()).collect::<Vec<_>>(), sim.events(i), n.metrics());
    }
    println!("{:?}", sim.check_ring());
}
