//! A measurement knob for the provider-store path (issue 6): a ring of two nodes over loopback
//! TCP in this process; one node registers COUNT fresh names (k = 0, one replica each), closed
//! loop with 64 in flight, and the store rate and CPU time are printed per chunk of CHUNK
//! stores, so a rate that falls as the registrations pile up shows.
//!
//! ```text
//! cargo run --release -p themis-dht --example store_load -- [COUNT] [CHUNK] [secure|insecure]
//! ```
//!
//! Environment knobs: `RESTORE_S` and `TTL_S` (re-store period and record TTL; default the fast
//! profile's 20 s and 60 s: re-stores of earlier names then run during the measurement).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use themis_channel::{Mode, TcpConfig};
use themis_crypto::NetworkId;
use themis_dht::{DhtNode, DriverConfig, ServiceSpec};
use tokio::task::JoinSet;

use support::{IN_FLIGHT, cpu_secs, env_u64, identity, load_config};

/// xtask's node settings with room for `count` registrations and the fast profile's
/// re-store schedule (`RESTORE_S` and `TTL_S` override it).
fn config(mode: Mode, seed: u64, count: usize) -> DriverConfig {
    let mut c = load_config(mode, seed);
    c.dht.max_registrations = count + 10;
    c.dht.max_records_per_provider = count + 10;
    c.dht.max_records_total = count + 10;
    c.dht.request_timeout = Duration::from_secs(10);
    c.endpoint.request_timeout = Duration::from_secs(10);
    if let Some(v) = env_u64("RESTORE_S") {
        c.dht.restore_period = Duration::from_secs(v);
    }
    if let Some(v) = env_u64("TTL_S") {
        c.dht.record_ttl = Duration::from_secs(v);
    }
    c
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let chunk: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let mode = match args.get(2).map(String::as_str) {
        Some("insecure") => Mode::Insecure,
        _ => Mode::Secure,
    };
    let net = NetworkId::new("store-load").unwrap();
    let mut nodes = Vec::new();
    for s in 0..2u64 {
        let id = identity("store-load", s);
        let node = DhtNode::bind_tcp(
            "127.0.0.1:0".parse().unwrap(),
            TcpConfig::default(),
            id,
            net.clone(),
            config(mode, s, count),
        )
        .await
        .unwrap();
        if let Some(b) = nodes.first() {
            node.join([DhtNode::contact(b)]).await.unwrap();
        }
        nodes.push(node);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let client = nodes[0].clone();
    println!("{count} stores, {mode:?}, {IN_FLIGHT} in flight, chunks of {chunk}");
    let t_all = Instant::now();
    let mut done = 0;
    while done < count {
        let end = (done + chunk).min(count);
        let next = Arc::new(AtomicUsize::new(done));
        let (t0, c0) = (Instant::now(), cpu_secs());
        let mut set = JoinSet::new();
        for _ in 0..IN_FLIGHT {
            let (client, next) = (client.clone(), Arc::clone(&next));
            set.spawn(async move {
                let mut failed = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        return failed;
                    }
                    let r = client
                        .register(ServiceSpec::new(format!("{i:016x}")), Some(0))
                        .await;
                    if !matches!(r, Ok(ref r) if r.failed == 0) {
                        failed += 1;
                    }
                }
            });
        }
        let mut failed = 0;
        while let Some(f) = set.join_next().await {
            failed += f.unwrap();
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "  stores {done:>7}..{end:<7}: {:>8.0} /s, cpu {:.2} s/s, failed {failed}",
            (end - done) as f64 / secs,
            (cpu_secs() - c0) / secs
        );
        done = end;
    }
    println!(
        "  total: {:.0} stores/s over {:.1} s",
        count as f64 / t_all.elapsed().as_secs_f64(),
        t_all.elapsed().as_secs_f64()
    );
    for n in &nodes {
        n.shutdown().await;
    }
}
