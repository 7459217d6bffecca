//! A measurement knob for the driver's find path (issue 6): one ring of N nodes over loopback
//! TCP in this process, an idle interval (background traffic of stabilization and finger
//! refreshes), then finds of random ids from random nodes, closed loop with 64 in flight, with
//! the summed driver and endpoint counters of every node before and after.
//!
//! ```text
//! cargo run --release -p themis-dht --example find_load -- [N] [FINDS] [secure|insecure] [MAXCONN]
//! ```
//!
//! Environment knobs: `ALPHA`, `STALL_MS` (0: α queries at once, the old behaviour),
//! `STAB_MS`, `FINGER_MS` (maintenance periods; default 200 and 2,000 as in xtask),
//! `TRANSPORT=udp` (one socket per node instead of a capped set of TCP connections),
//! `FIND_ROUNDS=R` (rounds of FINDS finds, default 2: later rounds show how the key
//! agreements of first contacts die down), `STORES=COUNT` (after the finds, COUNT provider registrations with k = 2, and their CPU),
//! `STORE_ROUNDS=R` (R such rounds of fresh names: the first meets new pairs of nodes, the
//! later ones show the cost of a store between nodes that already have a session).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use themis_channel::{Mode, TcpConfig, UdpConfig};
use themis_crypto::{NetworkId, NodeId};
use themis_dht::{DhtNode, DriverConfig};
use tokio::task::JoinSet;

use support::{IN_FLIGHT, cpu_secs, env_u64, identity, load_config, random_id, ring_args, settle};

/// The settings xtask's find-scaling workload gives its nodes, with knobs for experiments:
/// `ALPHA` (most queries in flight per lookup), `STALL_MS` (lookup stall before hedging; 0 = α
/// at once), `STAB_MS` and `FINGER_MS` (maintenance periods).
fn config(mode: Mode, seed: u64) -> DriverConfig {
    let mut c = load_config(mode, seed);
    if let Some(a) = env_u64("ALPHA") {
        c.dht.alpha = a as usize;
    }
    if let Some(v) = env_u64("STALL_MS") {
        c.dht.lookup_stall = Duration::from_millis(v);
    }
    if let Some(v) = env_u64("STAB_MS") {
        c.dht.stabilize_period = Duration::from_millis(v);
    }
    if let Some(v) = env_u64("FINGER_MS") {
        c.dht.finger_period = Duration::from_millis(v);
    }
    c
}

#[derive(Default, Debug, Clone, Copy)]
struct Sum {
    drv_sent: u64,
    drv_failed: u64,
    drv_stale: u64,
    drv_queued: u64,
    inc: u64,
    inc_busy: u64,
    ep_req: u64,
    ep_timeout: u64,
    hs: u64,
    conn_opened: u64,
    conn_open: u64,
    dropped_busy: u64,
    retrans: u64,
    lookups: u64,
    stalls: u64,
    sessions: u64,
    sessions_dropped: u64,
}

async fn sum(nodes: &[DhtNode]) -> Sum {
    let mut s = Sum::default();
    for n in nodes {
        let m = n.metrics().await.unwrap();
        s.drv_sent += m.requests_sent;
        s.drv_failed += m.requests_failed;
        s.drv_stale += m.requests_dropped_stale;
        s.drv_queued += m.requests_queued;
        s.inc += m.incoming_requests;
        s.inc_busy += m.incoming_refused_busy;
        s.ep_req += m.endpoint.requests_sent;
        s.ep_timeout += m.endpoint.requests_timed_out;
        s.hs += m.endpoint.handshakes_initiated_ok;
        s.conn_opened += m.endpoint.transport.connections_opened;
        s.conn_open += m.endpoint.transport.connections_open;
        s.dropped_busy += m.endpoint.commands_dropped_busy;
        s.retrans += m.endpoint.retransmissions;
        s.lookups += m.dht.lookups_started;
        s.stalls += m.dht.lookup_stalls;
        s.sessions += m.endpoint.sessions;
        s.sessions_dropped += m.endpoint.sessions_dropped;
    }
    s
}

fn delta(a: &Sum, b: &Sum, secs: f64) {
    let r = |x: u64, y: u64| (y - x) as f64 / secs;
    println!(
        "  per s: driver requests {:.0} (failed {:.0}, stale {:.0}), incoming {:.0} (busy {:.0}), \
         endpoint requests {:.0} (timed out {:.0}), handshakes {:.0}, connections opened {:.0}, \
         commands dropped busy {:.0}, retransmissions {:.0}, lookups {:.0} (stalled {:.0}), sessions dropped {:.0}",
        r(a.drv_sent, b.drv_sent),
        r(a.drv_failed, b.drv_failed),
        r(a.drv_stale, b.drv_stale),
        r(a.inc, b.inc),
        r(a.inc_busy, b.inc_busy),
        r(a.ep_req, b.ep_req),
        r(a.ep_timeout, b.ep_timeout),
        r(a.hs, b.hs),
        r(a.conn_opened, b.conn_opened),
        r(a.dropped_busy, b.dropped_busy),
        r(a.retrans, b.retrans),
        r(a.lookups, b.lookups),
        r(a.stalls, b.stalls),
        r(a.sessions_dropped, b.sessions_dropped),
    );
    println!(
        "  gauges now: queued {}, connections open {}, sessions {}",
        b.drv_queued, b.conn_open, b.sessions
    );
}

/// Runs `count` operations from [`IN_FLIGHT`] worker tasks, each doing its operations one
/// after the other (as xtask's closed loop does: a single task spawning every operation caps
/// the rate at its own speed). Operation `i` is `op(node, i, target)` on a random node with a
/// random id; it returns its hop count, `None` if it failed. Returns (latency, outcome) of each.
async fn closed_loop<F, Fut>(
    nodes: &[DhtNode],
    count: usize,
    seed: u64,
    op: F,
) -> Vec<(Duration, Option<u32>)>
where
    F: Fn(DhtNode, usize, NodeId) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Option<u32>> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shared: Arc<Vec<DhtNode>> = Arc::new(nodes.to_vec());
    let mut set = JoinSet::new();
    for w in 0..IN_FLIGHT {
        let (next, shared, op) = (Arc::clone(&next), Arc::clone(&shared), op.clone());
        let mut rng = fastrand::Rng::with_seed(seed ^ w as u64);
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let node = shared[rng.usize(..shared.len())].clone();
                let target = random_id(&mut rng);
                let s = Instant::now();
                let r = op(node, i, target).await;
                out.push((s.elapsed(), r));
            }
            out
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(r) = set.join_next().await {
        all.extend(r.unwrap());
    }
    all
}

/// The sorted latencies of the operations that succeeded, and the number that failed.
fn latencies(results: &[(Duration, Option<u32>)]) -> (Vec<Duration>, usize) {
    let mut lat: Vec<Duration> = results
        .iter()
        .filter(|r| r.1.is_some())
        .map(|r| r.0)
        .collect();
    lat.sort();
    let failed = results.len() - lat.len();
    (lat, failed)
}

/// Quantile `p` of sorted latencies, in milliseconds (0 when empty).
fn percentile_ms(lat: &[Duration], p: f64) -> f64 {
    lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (n, count, mode) = ring_args(&args);
    let max_conn: usize = args
        .get(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or((16_000 / n.max(1)).clamp(8, 1024));
    let seed = 7;
    let net = NetworkId::new("find-load").unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut nodes: Vec<DhtNode> = Vec::new();
    let t0 = Instant::now();
    for i in 0..n {
        let s = seed * 10_000 + i as u64;
        let id = identity("find-load", s);
        let tcp = TcpConfig {
            max_connections: max_conn,
            ..TcpConfig::default()
        };
        let node = if std::env::var("TRANSPORT").is_ok_and(|t| t == "udp") {
            DhtNode::bind_udp(
                "127.0.0.1:0".parse().unwrap(),
                UdpConfig::default(),
                id,
                net.clone(),
                config(mode, s),
            )
            .await
            .unwrap()
        } else {
            DhtNode::bind_tcp(
                "127.0.0.1:0".parse().unwrap(),
                tcp,
                id,
                net.clone(),
                config(mode, s),
            )
            .await
            .unwrap()
        };
        let mut tries = 0;
        while !nodes.is_empty() {
            let b = &nodes[rng.usize(..nodes.len())];
            match node.join([b.contact()]).await {
                Ok(_) => break,
                Err(e) => {
                    tries += 1;
                    println!("  join {i} failed ({e}), try {tries}");
                    assert!(tries < 5, "five joins failed");
                }
            }
        }
        nodes.push(node);
    }
    println!(
        "N={n} {mode:?} max_connections={max_conn}: built in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let ok = settle(&nodes).await;
    println!(
        "  ring right: {ok}; settled after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let idle = Duration::from_secs(3);
    let a = sum(&nodes).await;
    let c0 = cpu_secs();
    tokio::time::sleep(idle).await;
    let c1 = cpu_secs();
    let b = sum(&nodes).await;
    println!("idle {} s: CPU {:.2} s", idle.as_secs(), c1 - c0);
    delta(&a, &b, idle.as_secs_f64());

    for round in 0..env_u64("FIND_ROUNDS").unwrap_or(2) {
        let before = sum(&nodes).await;
        let c0 = cpu_secs();
        let start = Instant::now();
        let results = closed_loop(&nodes, count, rng.u64(..), |node, _, target| async move {
            node.find(target).await.ok().map(|f| f.hops)
        })
        .await;
        let hops: u64 = results.iter().filter_map(|r| r.1).map(u64::from).sum();
        let (lat, failed) = latencies(&results);
        let el = start.elapsed().as_secs_f64();
        let cpu = cpu_secs() - c0;
        let after = sum(&nodes).await;
        let pct = |p| percentile_ms(&lat, p);
        let ok = lat.len();
        println!(
            "finds round {round}: {count} in {el:.2} s: {:.0}/s, failed {failed}, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, mean hops {:.2}; CPU {cpu:.2} s = {:.0} us/find, {:.1} us/request",
            ok as f64 / el,
            pct(0.5),
            pct(0.9),
            pct(0.99),
            hops as f64 / ok.max(1) as f64,
            cpu * 1e6 / count as f64,
            cpu * 1e6 / (after.drv_sent - before.drv_sent).max(1) as f64,
        );
        delta(&before, &after, el);
    }
    // `STORES=COUNT`: then COUNT provider registrations (k = 2: three lookups and three signed
    // stores each) of fresh names from random nodes, 64 in flight, with their CPU cost.
    let stores = std::env::var("STORES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let store_rounds = env_u64("STORE_ROUNDS").unwrap_or(1);
    for round in 0..if stores > 0 { store_rounds } else { 0 } {
        let before = sum(&nodes).await;
        let c0 = cpu_secs();
        let start = Instant::now();
        let results = closed_loop(&nodes, stores, rng.u64(..), move |node, i, _| async move {
            let spec = themis_dht::ServiceSpec::new(format!("store-{round}-{i}"));
            let r = node.register(spec, None).await.ok()?;
            (r.failed == 0 && r.stored > 0).then_some(0)
        })
        .await;
        let (lat, failed) = latencies(&results);
        let el = start.elapsed().as_secs_f64();
        let cpu = cpu_secs() - c0;
        let after = sum(&nodes).await;
        let pct = |p| percentile_ms(&lat, p);
        println!(
            "stores round {round}: {stores} in {el:.2} s: {:.0}/s, failed {failed}, p50 {:.2} ms, p99 {:.2} ms; CPU {cpu:.2} s = {:.0} us/store, {:.1} us/request, {:.1} requests/store",
            lat.len() as f64 / el,
            pct(0.5),
            pct(0.99),
            cpu * 1e6 / stores as f64,
            cpu * 1e6 / (after.drv_sent - before.drv_sent).max(1) as f64,
            (after.drv_sent - before.drv_sent) as f64 / stores as f64,
        );
        delta(&before, &after, el);
    }
    for node in &nodes {
        node.shutdown().await;
    }
}
