//! Cost of one pick (plus its outcome report) with 10 and 1000 providers.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use themis_crypto::NodeId;
use themis_mesh::{Balancer, BalancerConfig, Policy, Provider};

fn providers(n: usize) -> Vec<Provider> {
    (0..n)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let addr = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 7000));
            // 5 % canary.
            let (version, weight) = if i % 20 == 0 { ("2", 5) } else { ("1", 5) };
            Provider::new(NodeId::from_bytes(id), addr, version, weight)
        })
        .collect()
}

fn bench_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for policy in [Policy::P2cEwma, Policy::Random] {
        for n in [10usize, 1000] {
            let now = Instant::now();
            let mut cfg = BalancerConfig::default();
            cfg.policy = policy;
            let mut b = Balancer::new("bench", cfg, 7, now).unwrap();
            b.set_providers(providers(n), now);
            let mut t = now;
            group.bench_with_input(
                BenchmarkId::new(format!("{policy:?}"), n),
                &n,
                |bench, _| {
                    bench.iter(|| {
                        t += Duration::from_micros(10);
                        let mut call = b.begin_call(t);
                        let p = b.pick(&mut call, t).unwrap();
                        b.on_success(&p.id, Duration::from_millis(2), t);
                        p
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
