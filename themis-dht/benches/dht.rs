//! DHT benchmarks: codec of find/store messages, a simulated 1000-node ring build, finds per
//! second in the simulator.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use themis_crypto::{IdentityKeypair, NetworkId, NodeId};
use themis_dht::fuzz::{bench_decode_request, bench_find, bench_store};
use themis_dht::{ProviderRecord, ServiceSpec};
use themis_testkit::sim::{Sim, SimConfig};

fn build(n: usize) -> Sim {
    let (gap, settle) = (Duration::from_millis(20), Duration::from_secs(25));
    themis_testkit::sim::build(SimConfig::new(1), n, gap, settle)
}

fn codec(c: &mut Criterion) {
    let target = NodeId::from_bytes([7; 32]);
    let find = bench_find(target);
    c.bench_function("codec/find/encode", |b| {
        b.iter(|| bench_find(black_box(target)))
    });
    c.bench_function("codec/find/decode", |b| {
        b.iter(|| bench_decode_request(black_box(&find)))
    });
    let kp = Arc::new(IdentityKeypair::from_seed(&[1; 32]));
    let rec = ProviderRecord::sign(
        &kp,
        &NetworkId::new("bench").unwrap(),
        &ServiceSpec::new("check"),
        "10.0.0.1:7000".parse().unwrap(),
        0,
        1_800_000_000_000,
        1,
    );
    let store = bench_store(&rec);
    c.bench_function("codec/store/encode", |b| {
        b.iter(|| bench_store(black_box(&rec)))
    });
    c.bench_function("codec/store/decode", |b| {
        b.iter(|| bench_decode_request(black_box(&store)))
    });
}

fn simulation(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("build_ring_1000", |b| b.iter(|| build(1000)));
    let mut sim = build(1000);
    let live = sim.live();
    g.bench_function("finds_1000_in_ring_1000", |b| {
        b.iter(|| {
            for k in 0..1000 {
                let t = sim.random_id();
                sim.find(live[k % live.len()], t);
            }
            sim.run_for(Duration::from_secs(2));
            for i in &live {
                sim.take_events(*i);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, codec, simulation);
criterion_main!(benches);
