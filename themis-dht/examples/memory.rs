//! Memory of N DHT nodes in one process (issue 15, item 3): the ring of xtask's find-scaling
//! workload (loopback TCP, at most `16,000 / N` connections per node, stabilize every 200 ms,
//! fingers every 2 s, rate limits lifted), built by sequential joins and left to stabilize,
//! then two passes of finds of random ids from random nodes, closed loop with 64 in flight.
//!
//! ```text
//! cargo run --release -p themis-dht --example memory -- [N] [FINDS] [secure|insecure]
//! ```
//!
//! Release, as `cargo xtask bench` runs (a debug build's figures are close: the structures are
//! the same). Defaults: 100 nodes, 5,000 finds per pass (xtask's quick profile), secure.
//!
//! After each phase it prints the resident set (`VmRSS`, and the peak `VmHWM`, from
//! /proc/self/status), the heap this process holds (live bytes and blocks, counted by a
//! counting global allocator, `stats_alloc`, allowed here and nowhere in the library), and
//! what the nodes hold: TCP connections open (each node's end counted), sessions, tokio tasks
//! alive. The heap's growth per connection end (with the session it carries: over TCP every
//! connection a node holds carries one session) is the difference between two phases divided
//! by the growth of the count. First, before the ring exists, two fresh nodes measure one
//! join alone: the heap it adds with one connection and one session on each side (and the
//! join's ring state); then two bare TCP transports measure one idle connection alone (its
//! tasks, queue and buffers), the rest of a connection end's heap being the session's.
//!
//! `STORES=COUNT`: then two passes of COUNT provider registrations of fresh names each (k = 2,
//! so three records each), from random nodes, 64 in flight, as xtask's `store` points make
//! them; it prints the heap's growth per record stored (the object tables of the replicas)
//! with the registrations kept by their providers and the verified-signature caches. The first
//! pass also meets new pairs of nodes; the second's growth is the records'.
//!
//! `TRANSPORT=udp` binds UDP instead (one socket per node, sessions without connections), as
//! the workload does from 500 nodes on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::alloc::System;
use std::sync::Arc;
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use themis_channel::{Mode, TcpConfig, TcpTransport, Transport, UdpConfig};
use themis_crypto::{NetworkId, NodeId};
use themis_dht::{DhtNode, DriverConfig};
use tokio::task::JoinSet;

use support::{IN_FLIGHT, identity, load_config, random_id, ring_args, settle};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap held now: (bytes, blocks).
fn heap() -> (i64, i64) {
    let s = GLOBAL.stats();
    // `stats_alloc` counts a realloc's growth in `bytes_allocated` (its shrinking in
    // `bytes_deallocated`) as well as in `bytes_reallocated`.
    let bytes = s.bytes_allocated as i64 - s.bytes_deallocated as i64;
    let blocks = s.allocations as i64 - s.deallocations as i64;
    (bytes, blocks)
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One phase's figures.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    rss_kib: u64,
    hwm_kib: u64,
    heap: i64,
    blocks: i64,
    connections: u64,
    sessions: u64,
    tasks: usize,
    /// Records in the nodes' object tables.
    records: u64,
}

async fn snapshot(nodes: &[DhtNode]) -> Snapshot {
    let (mut connections, mut sessions, mut records) = (0, 0, 0);
    for n in nodes {
        let m = n.metrics().await.unwrap();
        connections += m.endpoint.transport.connections_open;
        sessions += m.endpoint.sessions;
        records += m.dht.stored_records;
    }
    let (rss_kib, hwm_kib) = rss_kib();
    let (heap, blocks) = heap();
    Snapshot {
        rss_kib,
        hwm_kib,
        heap,
        blocks,
        connections,
        sessions,
        tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        records,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print(label: &str, s: &Snapshot, n: usize) {
    let n = n.max(1);
    println!(
        "{label:<16} RSS {:>7.1} MiB (peak {:>7.1})  heap {:>7.1} MiB in {:>8} blocks  \
         per node: RSS {:>6.0} KiB, heap {:>6.0} KiB, {:>5.1} connections, {:>5.1} sessions, \
         {:>5.1} tasks",
        mib(s.rss_kib),
        mib(s.hwm_kib),
        s.heap as f64 / 1048576.0,
        s.blocks,
        s.rss_kib as f64 / n as f64,
        s.heap as f64 / 1024.0 / n as f64,
        s.connections as f64 / n as f64,
        s.sessions as f64 / n as f64,
        s.tasks as f64 / n as f64,
    );
}

async fn bind(i: u64, mode: Mode, max_conn: usize, udp: bool) -> DhtNode {
    let net = NetworkId::new("memory").unwrap();
    let id = identity("memory", i);
    let config: DriverConfig = load_config(mode, i);
    let addr = "127.0.0.1:0".parse().unwrap();
    if udp {
        DhtNode::bind_udp(addr, UdpConfig::default(), id, net, config)
            .await
            .unwrap()
    } else {
        let tcp = TcpConfig {
            max_connections: max_conn,
            ..TcpConfig::default()
        };
        DhtNode::bind_tcp(addr, tcp, id, net, config).await.unwrap()
    }
}

/// `count` operations from random nodes, [`IN_FLIGHT`] at once: `op(node, i, id)` for the
/// `i`-th operation with a random id; returns how many failed (`op` gave false).
async fn closed_loop<F, Fut>(nodes: &[DhtNode], count: usize, seed: u64, op: F) -> usize
where
    F: Fn(DhtNode, usize, NodeId) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shared: Arc<Vec<DhtNode>> = Arc::new(nodes.to_vec());
    let mut set = JoinSet::new();
    for w in 0..IN_FLIGHT {
        let (next, shared, op) = (Arc::clone(&next), Arc::clone(&shared), op.clone());
        let mut rng = fastrand::Rng::with_seed(seed ^ w as u64);
        set.spawn(async move {
            let mut failed = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let node = shared[rng.usize(..shared.len())].clone();
                failed += usize::from(!op(node, i, random_id(&mut rng)).await);
            }
            failed
        });
    }
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        failed += r.unwrap();
    }
    failed
}

/// Finds of random ids from random nodes, [`IN_FLIGHT`] at once; returns how many failed.
async fn finds(nodes: &[DhtNode], count: usize, seed: u64) -> usize {
    closed_loop(nodes, count, seed, |node, _, id| async move {
        node.find(id).await.is_ok()
    })
    .await
}

/// `count` registrations of fresh names (k = 2) from random nodes, [`IN_FLIGHT`] at once;
/// returns how many failed.
async fn stores(nodes: &[DhtNode], count: usize, pass: u64, seed: u64) -> usize {
    closed_loop(nodes, count, seed, move |node, i, _| async move {
        let spec = themis_dht::ServiceSpec::new(format!("memory-store-{pass}-{i:08}"));
        node.register(spec, Some(2))
            .await
            .is_ok_and(|r| r.failed == 0 && r.stored == 3)
    })
    .await
}

/// Heap growth per unit of `count` between two snapshots, in bytes ("-" when it did not grow).
fn per(a: &Snapshot, b: &Snapshot, count: impl Fn(&Snapshot) -> u64) -> String {
    let d = count(b).saturating_sub(count(a));
    if d == 0 {
        return "-".into();
    }
    format!("{:.0}", (b.heap - a.heap) as f64 / d as f64)
}

/// The transport's part of a connection alone: two bare TCP transports, one frame from each to
/// the other (one connection, an end on each side: its tasks, queue and buffers), heap before
/// and after, once the frames are read and the connection is idle.
async fn transport_pair(max_conn: usize) {
    let tcp = TcpConfig {
        max_connections: max_conn,
        ..TcpConfig::default()
    };
    let addr = "127.0.0.1:0".parse().unwrap();
    let a = TcpTransport::bind(addr, tcp.clone()).await.unwrap();
    let b = TcpTransport::bind(addr, tcp).await.unwrap();
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (before, tasks_before) = (heap(), tasks());
    // Version 1, an application frame type: what the endpoint sends.
    let frame = bytes::Bytes::from_static(&[1, 0x10, 0]);
    a.send(b.local_addr(), frame.clone()).await.unwrap();
    b.recv().await.unwrap();
    b.send(a.local_addr(), frame).await.unwrap();
    a.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (after, tasks_after) = (heap(), tasks());
    println!(
        "one idle TCP connection (transport alone): {} ends open, +{} tasks, heap +{} bytes in \
         {} blocks per end",
        a.stats().connections_open + b.stats().connections_open,
        tasks_after.saturating_sub(tasks_before),
        (after.0 - before.0) / 2,
        (after.1 - before.1) / 2,
    );
    a.close().await;
    b.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (n, count, mode) = ring_args(&args);
    let udp = std::env::var("TRANSPORT").is_ok_and(|t| t == "udp");
    // xtask's find-scaling: `FD_BUDGET / N` connections per node, 8 to 1,024.
    let max_conn = (16_000 / n.max(1)).clamp(8, 1024);
    println!(
        "N={n} {mode:?} over {}, at most {max_conn} connections per node, {count} finds per pass",
        if udp { "UDP" } else { "TCP" }
    );
    if !udp {
        transport_pair(max_conn).await;
    }
    // One connection and one session alone: two fresh nodes, one find between them (the
    // join's requests), before the ring exists.
    let mut pair = Vec::new();
    for i in 0..2 {
        pair.push(bind(1_000_000 + i, mode, max_conn, udp).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = snapshot(&pair).await;
    pair[1].join([pair[0].contact()]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = snapshot(&pair).await;
    println!(
        "two fresh nodes, one join: +{} connections, +{} sessions, +{} tasks, heap +{} bytes \
         (with the join's ring state)",
        after.connections.saturating_sub(before.connections),
        after.sessions.saturating_sub(before.sessions),
        after.tasks.saturating_sub(before.tasks),
        after.heap - before.heap,
    );
    for node in &pair {
        node.shutdown().await;
    }
    drop(pair);
    let start = snapshot(&[]).await;
    print("start", &start, n);

    let mut nodes: Vec<DhtNode> = Vec::new();
    for i in 0..n {
        nodes.push(bind(i as u64, mode, max_conn, udp).await);
    }
    let bound = snapshot(&nodes).await;
    print("bound", &bound, n);

    let mut rng = fastrand::Rng::with_seed(7);
    for i in 1..n {
        let mut tries = 0;
        loop {
            let b = nodes[rng.usize(..i)].contact();
            match nodes[i].join([b]).await {
                Ok(_) => break,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 5, "five joins of node {i} failed, the last: {e}");
                }
            }
        }
    }
    let right = settle(&nodes).await;
    let settled = snapshot(&nodes).await;
    print("ring built", &settled, n);
    if !right {
        println!("  (the successor lists were not all right after 60 s)");
    }

    let mut passes = Vec::new();
    for (pass, label) in [(0u64, "cold finds"), (1, "warm finds")] {
        let failed = finds(&nodes, count, 0x5eed ^ pass).await;
        let s = snapshot(&nodes).await;
        print(label, &s, n);
        if failed > 0 {
            println!("  ({failed} finds failed)");
        }
        passes.push(s);
    }
    let last = passes[passes.len() - 1];
    println!(
        "heap growth: binding, {:.0} KiB per node; building the ring, {} bytes per connection \
         end or {} per session; the finds, {} per connection end or {} per session",
        (bound.heap - start.heap) as f64 / 1024.0 / n.max(1) as f64,
        per(&bound, &settled, |s| s.connections),
        per(&bound, &settled, |s| s.sessions),
        per(&settled, &last, |s| s.connections),
        per(&settled, &last, |s| s.sessions),
    );

    let store_count = std::env::var("STORES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    // Two passes of fresh names: the first also meets new pairs of nodes (connections and
    // sessions grow with it), the second mostly does not, so its growth is the records'.
    let mut before = last;
    for pass in 0..if store_count > 0 { 2u64 } else { 0 } {
        let failed = stores(&nodes, store_count, pass, 0x570e ^ pass).await;
        let s = snapshot(&nodes).await;
        print(if pass == 0 { "stores" } else { "more stores" }, &s, n);
        if failed > 0 {
            println!("  ({failed} registrations failed)");
        }
        println!(
            "heap growth over {store_count} registrations: {} records stored, {} bytes per \
             record (the replicas' tables, the providers' registrations and the caches, with \
             {} connection ends more)",
            s.records.saturating_sub(before.records),
            per(&before, &s, |s| s.records),
            s.connections.saturating_sub(before.connections),
        );
        before = s;
    }

    for node in &nodes {
        node.shutdown().await;
    }
}
