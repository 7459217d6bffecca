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
fn crash_allowed(sim: &Sim, victim: usize) -> bool {
    let vid = sim.node(victim).id();
    sim.live().into_iter().filter(|i| *i != victim).all(|i| {
        sim.node(i)
            .successors()
            .iter()
            .any(|s| s.id != vid && sim.live().iter().any(|j| sim.node(*j).id() == s.id))
    })
}
fn dump(sim: &Sim) {
    let mut v: Vec<_> = (0..sim.len()).map(|i| (sim.node(i).id(), i)).collect();
    v.sort();
    for (id, i) in v {
        let n = sim.node(i);
        println!(
            "  {i} {} alive={} {} pred={:?} succs={:?}",
            id.short(),
            sim.is_alive(i),
            n.state_name(),
            n.predecessor().map(|p| p.id.short()),
            n.successors()
                .iter()
                .map(|p| p.id.short())
                .collect::<Vec<_>>()
        );
    }
}
fn main() {
    // ops: 0 join, 1 leave, 2 crash
    let ops: Vec<(u8, usize)> = vec![
        (2, 25558070808814124),
        (0, 0),
        (1, 4922434805036238963),
        (1, 39086298316986543),
        (0, 0),
        (2, 4749132670671002747),
        (0, 0),
        (1, 5647101052654212631),
        (1, 5707302601707108371),
        (0, 0),
    ];
    let mut cfg = SimConfig::new(6233366065199866502);
    cfg.node.successor_list_len = 4;
    let mut sim = common::build(cfg, 4, Duration::from_millis(50), Duration::from_secs(3));
    dump(&sim);
    for (o, k) in ops {
        let live: Vec<usize> = sim
            .live()
            .into_iter()
            .filter(|i| sim.node(*i).state_name() == "member")
            .collect();
        match o {
            0 => {
                let a = common::grow(&mut sim, 1, Duration::from_millis(10));
                println!("join {:?}", a);
            }
            1 if live.len() > 2 => {
                let v = live[k % live.len()];
                println!("leave {v}");
                sim.leave(v);
            }
            2 if live.len() > 2 => {
                let v = live[k % live.len()];
                if crash_allowed(&sim, v) {
                    println!("crash {v}");
                    sim.crash(v);
                }
            }
            _ => {}
        }
        sim.run_for(Duration::from_millis(300));
        dump(&sim);
    }
    sim.run_for(Duration::from_secs(20));
    println!("final {:?}", sim.check_ring());
    dump(&sim);
    for i in 0..sim.len() {
        println!("{i} {:?}", sim.events(i));
    }
}
