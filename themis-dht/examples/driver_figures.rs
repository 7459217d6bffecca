//! Figures of the DHT driver on real loopback sockets, one process: find and store throughput
//! and latency for rings of 1, 10 and 100 nodes over TCP, secure and insecure, with 64
//! operations in flight.
//!
//! ```text
//! cargo run --release -p themis-dht --example driver_figures [-- FINDS STORES]
//! ```
//!
//! A find is one iterative lookup from a random node to a random id; a store is one
//! `register` (k = 2: three lookups and three signed stores) of a fresh name from a random node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use themis_channel::{Mode, TcpConfig};
use themis_crypto::{IdentityKeypair, NetworkId, NodeId, Transcript};
use themis_dht::{DhtNode, DriverConfig, ServiceSpec};
use tokio::task::JoinSet;

const IN_FLIGHT: usize = 64;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn id(&mut self) -> NodeId {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_be_bytes());
        }
        NodeId::from_bytes(b)
    }
}

fn config(mode: Mode, seed: u64) -> DriverConfig {
    let mut c = DriverConfig::fast();
    c.dht.stabilize_period = Duration::from_millis(200);
    c.dht.finger_period = Duration::from_secs(2);
    // A benchmark floods its peers on purpose: lift the per-peer rate limit and the quotas.
    c.dht.peer_rate_per_sec = 1_000_000;
    c.dht.peer_rate_burst = 1_000_000;
    c.dht.max_registrations = 100_000;
    c.dht.max_records_per_provider = 1_000_000;
    c.dht.max_queries = 4096;
    c.endpoint.mode = mode;
    c.rng_seed = Some(seed);
    c
}

async fn ring(n: usize, mode: Mode, seed: u64) -> Vec<DhtNode> {
    let net = NetworkId::new("figures").unwrap();
    let mut rng = Rng(seed);
    let mut nodes: Vec<DhtNode> = Vec::new();
    for i in 0..n {
        let s = seed * 10_000 + i as u64;
        let id = Arc::new(IdentityKeypair::from_seed(&Transcript::digest(
            "figures",
            &[&s.to_be_bytes()],
        )));
        let tcp = TcpConfig {
            max_connections: 1024,
            ..TcpConfig::default()
        };
        let node = DhtNode::bind_tcp(
            "127.0.0.1:0".parse().unwrap(),
            tcp,
            id,
            net.clone(),
            config(mode, s),
        )
        .await
        .unwrap();
        if !nodes.is_empty() {
            let b = &nodes[rng.below(nodes.len())];
            node.join([b.contact()]).await.unwrap();
        }
        nodes.push(node);
    }
    // Let stabilization and finger refreshes settle.
    let mut ids: Vec<NodeId> = nodes.iter().map(DhtNode::id).collect();
    ids.sort();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ok = true;
        for node in &nodes {
            let st = node.status().await.unwrap();
            let i = ids.iter().position(|x| *x == st.id).unwrap();
            let want: Vec<NodeId> = (1..n).take(8).map(|d| ids[(i + d) % n]).collect();
            let got: Vec<NodeId> = st.successors.iter().map(|p| p.id).collect();
            ok &= got == want;
        }
        if ok || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    nodes
}

struct Run {
    ops: usize,
    failed: usize,
    elapsed: Duration,
    lat: Vec<Duration>,
    hops: u64,
}

impl Run {
    fn pct(&self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return 0.0;
        }
        let i = ((self.lat.len() as f64 - 1.0) * p).round() as usize;
        self.lat[i].as_secs_f64() * 1e3
    }
}

async fn finds(nodes: &[DhtNode], count: usize, seed: u64) -> Run {
    let mut rng = Rng(seed);
    let mut set = JoinSet::new();
    let mut lat = Vec::with_capacity(count);
    let (mut failed, mut hops) = (0, 0u64);
    let start = Instant::now();
    let mut collect = |r: Result<(Duration, Option<u32>), tokio::task::JoinError>| {
        let (d, h) = r.unwrap();
        match h {
            Some(h) => {
                lat.push(d);
                hops += u64::from(h);
            }
            None => failed += 1,
        }
    };
    for _ in 0..count {
        if set.len() >= IN_FLIGHT {
            collect(set.join_next().await.unwrap());
        }
        let node = nodes[rng.below(nodes.len())].clone();
        let t = rng.id();
        set.spawn(async move {
            let s = Instant::now();
            let r = node.find(t).await.ok().map(|f| f.hops);
            (s.elapsed(), r)
        });
    }
    while let Some(r) = set.join_next().await {
        collect(r);
    }
    let elapsed = start.elapsed();
    lat.sort();
    Run {
        ops: count,
        failed,
        elapsed,
        lat,
        hops,
    }
}

async fn stores(nodes: &[DhtNode], count: usize, seed: u64, tag: &str) -> Run {
    let mut rng = Rng(seed);
    let mut set = JoinSet::new();
    let mut lat = Vec::with_capacity(count);
    let mut failed = 0;
    let start = Instant::now();
    let mut collect = |r: Result<(Duration, bool), tokio::task::JoinError>| {
        let (d, ok) = r.unwrap();
        if ok {
            lat.push(d);
        } else {
            failed += 1;
        }
    };
    for i in 0..count {
        if set.len() >= IN_FLIGHT {
            collect(set.join_next().await.unwrap());
        }
        let node = nodes[rng.below(nodes.len())].clone();
        let name = format!("{tag}-{i}");
        set.spawn(async move {
            let s = Instant::now();
            let ok = node
                .register(ServiceSpec::new(name), Some(2))
                .await
                .is_ok_and(|r| r.failed == 0);
            (s.elapsed(), ok)
        });
    }
    while let Some(r) = set.join_next().await {
        collect(r);
    }
    let elapsed = start.elapsed();
    lat.sort();
    Run {
        ops: count,
        failed,
        elapsed,
        lat,
        hops: 0,
    }
}

fn row(n: usize, mode: Mode, what: &str, r: &Run) {
    let ok = r.ops - r.failed;
    let hops = if what == "find" && ok > 0 {
        format!("{:.2}", r.hops as f64 / ok as f64)
    } else {
        "-".into()
    };
    println!(
        "| {n:>3} | {:<8} | {what:<5} | {:>6} | {:>4} | {:>9.0} | {:>7.2} | {:>7.2} | {:>7.2} | {hops:>5} |",
        format!("{mode:?}"),
        r.ops,
        r.failed,
        ok as f64 / r.elapsed.as_secs_f64(),
        r.pct(0.5),
        r.pct(0.9),
        r.pct(0.99),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let find_count = args.first().copied().unwrap_or(4000);
    let store_count = args.get(1).copied().unwrap_or(1000);
    println!(
        "loopback TCP, one process, 2 worker threads, {IN_FLIGHT} operations in flight; {find_count} finds, {store_count} stores (register, k = 2) per row\n"
    );
    println!(
        "| n   | mode     | op    | ops    | fail | ops/s     | p50 ms  | p90 ms  | p99 ms  | hops  |"
    );
    println!(
        "|-----|----------|-------|--------|------|-----------|---------|---------|---------|-------|"
    );
    for n in [1usize, 10, 100] {
        for (k, mode) in [Mode::Secure, Mode::Insecure].into_iter().enumerate() {
            let seed = 1 + n as u64 * 10 + k as u64;
            let nodes = ring(n, mode, seed).await;
            // warm-up: sessions and connections
            let _ = finds(&nodes, (n * 20).min(1000), seed ^ 1).await;
            let f = finds(&nodes, find_count, seed ^ 2).await;
            row(n, mode, "find", &f);
            let s = stores(&nodes, store_count, seed ^ 3, &format!("{n}-{mode:?}")).await;
            row(n, mode, "store", &s);
            for node in &nodes {
                node.shutdown().await;
            }
        }
    }
}
