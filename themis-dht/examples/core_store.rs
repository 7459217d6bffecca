//! CPU cost of the sans-I/O core alone (no driver, no sockets) on the provider-store path
//! (issue 6): a lone node registers names with k = 2 (three signed records, all stored
//! locally) and reads them back with `lookup_providers`, with the verified-record cache on
//! (default size) and off (size 0). Prints microseconds per operation and the cache counters.
//!
//! ```text
//! cargo run --release -p themis-dht --example core_store -- [OPS]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use themis_crypto::{IdentityKeypair, NetworkId};
use themis_dht::{Config, Event, Node, Output, ServiceSpec};

/// Names registered in turn: re-registering one replaces its records (a newer sequence number),
/// so the table stays small.
const NAMES: u64 = 64;

fn drain(n: &mut Node) -> usize {
    let mut done = 0;
    while let Some(o) = n.poll_output() {
        if let Output::Event(Event::Registered { failed: 0, .. } | Event::Providers { .. }) = o {
            done += 1;
        }
    }
    done
}

fn main() {
    let ops: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let net = NetworkId::new("core-store").unwrap();
    for cache in [0usize, Config::default().verified_cache_size] {
        let mut cfg = Config::default();
        cfg.verified_cache_size = cache;
        let now = Instant::now();
        let kp = Arc::new(IdentityKeypair::from_seed(&[1; 32]));
        let mut n = Node::new(
            cfg,
            kp,
            net.clone(),
            "127.0.0.1:1".parse().unwrap(),
            now,
            SystemTime::now(),
            1,
        );
        let name = |i: u64| format!("{:016x}", i % NAMES);
        let t = Instant::now();
        let mut ok = 0;
        for i in 0..ops {
            n.register(now, ServiceSpec::new(name(i)), Some(2)).unwrap();
            ok += drain(&mut n);
        }
        let reg = t.elapsed();
        assert_eq!(
            ok as u64, ops,
            "every registration stores its three replicas"
        );
        let t = Instant::now();
        for i in 0..ops {
            n.lookup_providers(now, &name(i), Some(2)).unwrap();
            drain(&mut n);
        }
        let read = t.elapsed();
        let m = n.metrics();
        println!(
            "cache {cache:>5}: register k=2 {:>6.1} µs/op, lookup_providers {:>6.1} µs/op \
             (cache hits {}, misses {})",
            reg.as_secs_f64() * 1e6 / ops as f64,
            read.as_secs_f64() * 1e6 / ops as f64,
            m.verify_cache_hits,
            m.verify_cache_misses,
        );
    }
}
