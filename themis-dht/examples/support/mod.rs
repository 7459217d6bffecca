//! What the load examples share: the node settings of xtask's DHT workloads, seeded identities
//! and ids, the process's CPU time, and waiting for a built ring to settle.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use themis_channel::Mode;
use themis_crypto::{IdentityKeypair, NodeId, Transcript};
use themis_dht::{DhtNode, DriverConfig};

/// Operations in flight in the closed loops.
pub(crate) const IN_FLIGHT: usize = 64;

/// CPU seconds (user + system) this process used so far, from `/proc/self/stat` (Linux; 0
/// elsewhere). Clock ticks are 100 Hz on Linux.
pub(crate) fn cpu_secs() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // fields 14 and 15 of stat(5); `rest` starts at field 3
    (t(11) + t(12)) / 100.0
}

/// The settings xtask's DHT workloads give their nodes: the fast profile with maintenance
/// every 200 ms (fingers every 2 s), and the per-peer rate limit and quotas lifted (a load
/// test floods its peers on purpose).
pub(crate) fn load_config(mode: Mode, seed: u64) -> DriverConfig {
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
    c
}

/// The identity of node `s` of a run labelled `label`.
pub(crate) fn identity(label: &str, s: u64) -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::from_seed(&Transcript::digest(
        label,
        &[&s.to_be_bytes()],
    )))
}

/// A random id drawn from `rng`.
pub(crate) fn random_id(rng: &mut fastrand::Rng) -> NodeId {
    let mut b = [0u8; 32];
    rng.fill(&mut b);
    NodeId::from_bytes(b)
}

/// The `u64` value of environment variable `key`, if it is set and parses.
pub(crate) fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

/// The arguments `[N] [COUNT] [secure|insecure]` the ring examples start with: ring size
/// (default 100), operations per pass (default 5,000) and mode (default secure).
pub(crate) fn ring_args(args: &[String]) -> (usize, usize, Mode) {
    let n = args.first().and_then(|a| a.parse().ok()).unwrap_or(100);
    let count = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let mode = match args.get(2).map(String::as_str) {
        Some("insecure") => Mode::Insecure,
        _ => Mode::Secure,
    };
    (n, count, mode)
}

/// Waits until every successor list is the true one (at most 60 s), then 4 s more (finger
/// refreshes), as the workload does.
pub(crate) async fn settle(nodes: &[DhtNode]) -> bool {
    let n = nodes.len();
    let mut ids: Vec<NodeId> = nodes.iter().map(DhtNode::id).collect();
    ids.sort();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let ok = loop {
        let mut ok = true;
        for node in nodes {
            let st = node.status().await.unwrap();
            let i = ids.iter().position(|x| *x == st.id).unwrap();
            let want: Vec<NodeId> = (1..n)
                .take(st.successors.len().max(1))
                .map(|d| ids[(i + d) % n])
                .collect();
            let got: Vec<NodeId> = st.successors.iter().map(|p| p.id).collect();
            ok &= n == 1 || got == want;
        }
        if ok || std::time::Instant::now() > deadline {
            break ok;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    ok
}
