//! Helpers shared by the driver tests: rings of real nodes over loopback TCP/UDP or the
//! in-memory network, convergence checks against the true ring, and a seeded PRNG.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use std::collections::BTreeSet;
use themis_channel::{MemNetwork, Mode, TcpConfig, UdpConfig};
use themis_crypto::{IdentityKeypair, NetworkId, NodeId, Transcript};

use themis_dht::{Contact, DhtNode, DriverConfig, ServiceSpec};

pub fn net() -> NetworkId {
    NetworkId::new("dht-driver-test").unwrap()
}

/// A deterministic identity.
pub fn identity(seed: u64) -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::from_seed(&Transcript::digest(
        "themis-dht/driver-test",
        &[&seed.to_be_bytes()],
    )))
}

/// SplitMix64: a seeded PRNG for picking nodes and targets.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn id(&mut self) -> NodeId {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_be_bytes());
        }
        NodeId::from_bytes(b)
    }
}

/// Settings for rings on one machine: the fast core periods with quicker stabilization.
pub fn config(mode: Mode, seed: u64) -> DriverConfig {
    let mut c = DriverConfig::fast();
    c.dht.stabilize_period = Duration::from_millis(150);
    c.dht.check_predecessor_period = Duration::from_millis(300);
    c.dht.finger_period = Duration::from_secs(2);
    // Loopback requests answer in well under a millisecond: a dead peer is noticed fast.
    c.dht.request_timeout = Duration::from_millis(800);
    c.endpoint.request_timeout = Duration::from_millis(800);
    c.endpoint.handshake_timeout = Duration::from_millis(800);
    c.endpoint.mode = mode;
    c.endpoint.rng_seed = Some(seed);
    c.rng_seed = Some(seed);
    c
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Udp,
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub async fn start(kind: Kind, seed: u64, cfg: DriverConfig) -> DhtNode {
    match kind {
        Kind::Tcp => {
            let tcp = TcpConfig {
                max_connections: 512,
                ..TcpConfig::default()
            };
            DhtNode::bind_tcp(localhost(), tcp, identity(seed), net(), cfg)
                .await
                .unwrap()
        }
        Kind::Udp => {
            let udp = UdpConfig {
                max_frame_len: themis_channel::wire::UDP_MAX_PAYLOAD,
                ..UdpConfig::default()
            };
            DhtNode::bind_udp(localhost(), udp, identity(seed), net(), cfg)
                .await
                .unwrap()
        }
    }
}

/// `n` nodes, each joining through a random earlier one (by `id@addr`, or every third by bare
/// address), then stabilized until every successor and predecessor is the true one.
pub async fn ring(kind: Kind, mode: Mode, n: usize, seed: u64) -> Vec<DhtNode> {
    let mut rng = Rng::new(seed);
    let mut nodes: Vec<DhtNode> = Vec::with_capacity(n);
    for i in 0..n {
        let s = seed * 1000 + i as u64;
        let node = start(kind, s, config(mode, s)).await;
        if let Some(b) = (!nodes.is_empty()).then(|| &nodes[rng.below(nodes.len())]) {
            let contact = if i % 3 == 0 {
                Contact::from(b.peer().addr)
            } else {
                b.contact()
            };
            if let Err(e) = node.join([contact]).await {
                let m = node.metrics().await.unwrap();
                let bm = b.metrics().await.unwrap();
                panic!(
                    "node {i} could not join through {contact}: {e}\njoiner: {m:#?}\nbootstrap: {bm:#?}"
                );
            }
        }
        nodes.push(node);
    }
    converge(&nodes, Duration::from_secs(60)).await;
    nodes
}

/// The ids in ring order.
pub fn sorted_ids(nodes: &[DhtNode]) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = nodes.iter().map(|n| n.id()).collect();
    v.sort();
    v
}

/// The successor of `t` among `ids` (sorted): the first id ≥ t, wrapping.
pub fn true_successor(ids: &[NodeId], t: &NodeId) -> NodeId {
    *ids.iter().find(|id| *id >= t).unwrap_or(&ids[0])
}

/// Waits until every node's predecessor and whole successor list are the true ones (a find
/// may be answered from any entry of the list, so a stale entry is a wrong answer).
pub async fn converge(nodes: &[DhtNode], limit: Duration) {
    let ids = sorted_ids(nodes);
    let n = ids.len();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut wrong = 0;
        for node in nodes {
            let st = node.status().await.unwrap();
            let i = ids.iter().position(|x| *x == st.id).unwrap();
            let want: Vec<NodeId> = (1..n).take(SUCCESSORS).map(|d| ids[(i + d) % n]).collect();
            let got: Vec<NodeId> = st.successors.iter().map(|p| p.id).collect();
            let pred_ok = n == 1 || st.predecessor.map(|p| p.id) == Some(ids[(i + n - 1) % n]);
            if got != want || !pred_ok {
                wrong += 1;
            }
        }
        if wrong == 0 {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let dump = dump(nodes).await;
            panic!(
                "{wrong} of {n} nodes still have a wrong successor list or predecessor after {limit:?}\n{dump}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The core's default successor list length.
pub const SUCCESSORS: usize = 8;

/// Finds `count` random targets from random nodes and checks each against the true ring.
pub async fn check_finds(nodes: &[DhtNode], rng: &mut Rng, count: usize) -> u32 {
    let ids = sorted_ids(nodes);
    let mut max_hops = 0;
    for _ in 0..count {
        let t = rng.id();
        let from = &nodes[rng.below(nodes.len())];
        let found = from.find(t).await.unwrap();
        if found.successor.id != true_successor(&ids, &t) {
            let dump = dump(nodes).await;
            panic!(
                "find of {} from {} gave {:?} after {} hops, the true successor is {:?}\n{dump}",
                t.short(),
                from.id().short(),
                found.successor.id,
                found.hops,
                true_successor(&ids, &t)
            );
        }
        max_hops = max_hops.max(found.hops);
    }
    max_hops
}

/// An in-memory network for the paused-clock tests.
pub fn mem_network(seed: u64) -> MemNetwork {
    MemNetwork::new(themis_channel::MemConfig {
        seed,
        ..themis_channel::MemConfig::default()
    })
}

/// Every node's view and failure counters, in ring order, for failure messages.
pub async fn dump(nodes: &[DhtNode]) -> String {
    let mut out = String::new();
    let mut v: Vec<&DhtNode> = nodes.iter().collect();
    v.sort_by_key(|n| n.id());
    for n in v {
        let st = n.status().await.unwrap();
        let m = n.metrics().await.unwrap();
        let rej: Vec<String> = themis_dht::Refusal::ALL
            .iter()
            .filter(|r| m.dht.rejected_for(**r) > 0)
            .map(|r| format!("{r}={}", m.dht.rejected_for(*r)))
            .collect();
        out.push_str(&format!(
            "{} {} pred={:?} succs={:?} stored={} failed={} dht_fail={} repairs={} rejected=[{}] ep_timeouts={} lookups_failed={} bad_answers={} malformed={} sent={}\n",
            st.id.short(),
            st.state,
            st.predecessor.map(|p| p.id),
            st.successors.iter().map(|p| p.id).collect::<Vec<_>>(),
            st.stored_records,
            m.requests_failed,
            m.dht.request_failures,
            m.dht.stabilization_repairs,
            rej.join(","),
            m.endpoint.requests_timed_out,
            m.dht.lookups_failed,
            m.dht.lookup_bad_answers,
            m.dht.malformed_messages,
            m.requests_sent,
        ));
    }
    out
}

/// Registers `names` from random nodes, then looks each up from several random nodes: every
/// lookup must return the registering node's signed record.
pub async fn store_and_lookup(
    nodes: &[themis_dht::DhtNode],
    rng: &mut Rng,
    names: usize,
) -> Vec<(String, themis_crypto::NodeId)> {
    let mut registered = Vec::new();
    for i in 0..names {
        let provider = &nodes[rng.below(nodes.len())];
        let name = format!("svc-{i}");
        let mut spec = ServiceSpec::new(name.clone());
        spec.addr = Some(provider.peer().addr);
        let r = provider.register(spec, Some(2)).await.unwrap();
        if (r.stored, r.failed) != (3, 0) {
            let dump = dump(nodes).await;
            panic!("{name}: {r:?} from {}\n{dump}", provider.id().short());
        }
        registered.push((name, provider.id()));
    }
    check_lookups(nodes, rng, &registered, 3).await;
    registered
}

pub async fn check_lookups(
    nodes: &[themis_dht::DhtNode],
    rng: &mut Rng,
    registered: &[(String, themis_crypto::NodeId)],
    per_name: usize,
) {
    for (name, provider) in registered {
        for _ in 0..per_name {
            let reader = &nodes[rng.below(nodes.len())];
            let p = reader.lookup_providers(name, Some(2)).await.unwrap();
            let providers: BTreeSet<_> = p.records.iter().map(|r| r.provider()).collect();
            assert!(
                providers.contains(provider),
                "{name} looked up from {}: providers {providers:?}",
                reader.id()
            );
            assert!(p.records.iter().all(|r| r.name() == name));
        }
    }
}

/// Runs `fut`, failing the test with the step's name if it takes longer than `secs` (tokio's
/// clock: virtual time under a paused clock). A hang in the code under test becomes a failure
/// with a message, never a stuck CI.
pub async fn within<T>(secs: u64, step: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("step '{step}' did not finish within {secs} s"),
    }
}
