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
//! `STORES=COUNT` (after the finds, COUNT provider registrations with k = 2, and their CPU).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use themis_channel::{Mode, TcpConfig, UdpConfig};
use themis_crypto::{IdentityKeypair, NetworkId, NodeId, Transcript};
use themis_dht::{DhtNode, DriverConfig};
use tokio::task::JoinSet;

const IN_FLIGHT: usize = 64;

/// CPU seconds (user + system) this process used so far, from `/proc/self/stat` (Linux; 0
/// elsewhere). Clock ticks are 100 Hz on Linux.
fn cpu_secs() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // fields 14 and 15 of stat(5); `rest` starts at field 3
    (t(11) + t(12)) / 100.0
}

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

/// The settings xtask's find-scaling workload gives its nodes.
fn config(mode: Mode, seed: u64) -> DriverConfig {
    let mut c = DriverConfig::fast();
    c.dht.stabilize_period = Duration::from_millis(200);
    c.dht.finger_period = Duration::from_secs(2);
    c.dht.peer_rate_per_sec = 1_000_000;
    c.dht.peer_rate_burst = 1_000_000;
    c.dht.max_registrations = 100_000;
    c.dht.max_records_per_provider = 100_000;
    c.dht.max_queries = 4096;
    c.endpoint.mode = mode;
    c.rng_seed = Some(seed);
    // Knobs for experiments: `ALPHA` (most queries in flight per lookup), `STALL_MS` (lookup
    // stall before hedging; 0 = α at once), `STAB_MS` and `FINGER_MS` (maintenance periods).
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(a) = env("ALPHA") {
        c.dht.alpha = a as usize;
    }
    if let Some(v) = env("STALL_MS") {
        c.dht.lookup_stall = Duration::from_millis(v);
    }
    if let Some(v) = env("STAB_MS") {
        c.dht.stabilize_period = Duration::from_millis(v);
    }
    if let Some(v) = env("FINGER_MS") {
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
        let mut rng = Rng(seed ^ w as u64);
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let node = shared[rng.below(shared.len())].clone();
                let target = rng.id();
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
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100);
    let count: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let mode = match args.get(2).map(String::as_str) {
        Some("insecure") => Mode::Insecure,
        _ => Mode::Secure,
    };
    let max_conn: usize = args
        .get(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or((16_000 / n.max(1)).clamp(8, 1024));
    let seed = 7;
    let net = NetworkId::new("find-load").unwrap();
    let mut rng = Rng(seed);
    let mut nodes: Vec<DhtNode> = Vec::new();
    let t0 = Instant::now();
    for i in 0..n {
        let s = seed * 10_000 + i as u64;
        let id = Arc::new(IdentityKeypair::from_seed(&Transcript::digest(
            "find-load",
            &[&s.to_be_bytes()],
        )));
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
            let b = &nodes[rng.below(nodes.len())];
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
    let mut ids: Vec<NodeId> = nodes.iter().map(DhtNode::id).collect();
    ids.sort();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ok = true;
        for node in &nodes {
            let st = node.status().await.unwrap();
            let i = ids.iter().position(|x| *x == st.id).unwrap();
            let want: Vec<NodeId> = (1..n)
                .take(st.successors.len().max(1))
                .map(|d| ids[(i + d) % n])
                .collect();
            let got: Vec<NodeId> = st.successors.iter().map(|p| p.id).collect();
            ok &= n == 1 || got == want;
        }
        if ok || Instant::now() > deadline {
            println!(
                "  ring right: {ok} after {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let idle = Duration::from_secs(3);
    let a = sum(&nodes).await;
    let c0 = cpu_secs();
    tokio::time::sleep(idle).await;
    let c1 = cpu_secs();
    let b = sum(&nodes).await;
    println!("idle {} s: CPU {:.2} s", idle.as_secs(), c1 - c0);
    delta(&a, &b, idle.as_secs_f64());

    for round in 0..2 {
        let before = sum(&nodes).await;
        let c0 = cpu_secs();
        let start = Instant::now();
        let results = closed_loop(&nodes, count, rng.next(), |node, _, target| async move {
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
    if stores > 0 {
        let before = sum(&nodes).await;
        let c0 = cpu_secs();
        let start = Instant::now();
        let results = closed_loop(&nodes, stores, rng.next(), |node, i, _| async move {
            let spec = themis_dht::ServiceSpec::new(format!("store-{i}"));
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
            "stores: {stores} in {el:.2} s: {:.0}/s, failed {failed}, p50 {:.2} ms, p99 {:.2} ms; CPU {cpu:.2} s = {:.0} us/store, {:.1} us/request, {:.1} requests/store",
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
