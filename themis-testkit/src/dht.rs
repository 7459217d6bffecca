//! Rings of `DhtNode`s (the tokio driver) over loopback TCP or UDP or the in-memory network,
//! checked against the true ring: convergence, finds, stores and lookups.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::{sync::Arc, time::Duration};

use themis_channel::{Mode, TcpConfig, UdpConfig};
use themis_crypto::NodeId;
use themis_dht::{Contact, DhtNode, DriverConfig, ServiceSpec};

use crate::channel::localhost;
use crate::identity::{Rng, identity, network, random_id};
use crate::net::{MemConfig, MemNetwork};
use crate::ring;

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

/// The transport a ring runs over.
#[derive(Clone, Debug)]
pub enum Kind {
    /// Loopback TCP.
    Tcp,
    /// Loopback UDP, carrying up to the UDP maximum (DHT messages with records exceed one
    /// path-MTU datagram).
    Udp,
    /// The in-memory network (deterministic under a paused clock).
    Mem(MemNetwork),
}

/// Node `seed` (its identity and its DHT and endpoint PRNGs) over `kind`, not joined.
pub async fn start(kind: &Kind, seed: u64, cfg: DriverConfig) -> DhtNode {
    match kind {
        Kind::Tcp => {
            let tcp = TcpConfig {
                max_connections: 512,
                ..TcpConfig::default()
            };
            DhtNode::bind_tcp(localhost(), tcp, identity(seed), network(), cfg)
                .await
                .unwrap()
        }
        Kind::Udp => {
            let udp = UdpConfig {
                max_frame_len: themis_channel::wire::UDP_MAX_PAYLOAD,
                ..UdpConfig::default()
            };
            DhtNode::bind_udp(localhost(), udp, identity(seed), network(), cfg)
                .await
                .unwrap()
        }
        Kind::Mem(net) => {
            DhtNode::on_transport(Arc::new(net.bind()), identity(seed), network(), cfg).unwrap()
        }
    }
}

/// `n` nodes, each joining through a random earlier one (by `id@addr`, or every third by bare
/// address), then stabilized until every successor and predecessor is the true one.
pub async fn ring(kind: &Kind, mode: Mode, n: usize, seed: u64) -> Vec<DhtNode> {
    let mut rng = Rng::with_seed(seed);
    let mut nodes: Vec<DhtNode> = Vec::with_capacity(n);
    for i in 0..n {
        let s = seed * 1000 + i as u64;
        let node = start(kind, s, config(mode, s)).await;
        if let Some(b) = (!nodes.is_empty()).then(|| &nodes[rng.usize(..nodes.len())]) {
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
    converge(&nodes, Duration::from_secs(120)).await;
    nodes
}

/// The nodes' ids in ring order.
pub fn sorted_ids(nodes: &[DhtNode]) -> Vec<NodeId> {
    ring::order(nodes.iter().map(DhtNode::id))
}

/// Waits until every node's predecessor and whole successor list are the true ones (a find
/// may be answered from any entry of the list, so a stale entry is a wrong answer).
pub async fn converge(nodes: &[DhtNode], limit: Duration) {
    let ids = sorted_ids(nodes);
    let n = ids.len();
    // the core's default length: every ring of the kit runs with it
    let len = themis_dht::Config::default().successor_list_len;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut wrong = 0;
        for node in nodes {
            let st = node.status().await.unwrap();
            let i = ids.iter().position(|x| *x == st.id).unwrap();
            let want: Vec<NodeId> = (1..n).take(len).map(|d| ids[(i + d) % n]).collect();
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

/// Finds `count` random targets from random nodes and checks each against the true ring.
pub async fn check_finds(nodes: &[DhtNode], rng: &mut Rng, count: usize) -> u32 {
    let ids = sorted_ids(nodes);
    let mut max_hops = 0;
    for _ in 0..count {
        let t = random_id(rng);
        let from = &nodes[rng.usize(..nodes.len())];
        let found = from.find(t).await.unwrap();
        let truth = ring::successor(&ids, &t);
        if Some(found.successor.id) != truth {
            let dump = dump(nodes).await;
            panic!(
                "find of {} from {} gave {:?} after {} hops, the true successor is {:?}\n{dump}",
                t.short(),
                from.id().short(),
                found.successor.id,
                found.hops,
                truth
            );
        }
        max_hops = max_hops.max(found.hops);
    }
    max_hops
}

/// An in-memory network with perfect links, for the paused-clock tests.
pub fn mem_network(seed: u64) -> MemNetwork {
    MemNetwork::new(MemConfig {
        seed,
        ..MemConfig::default()
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
            "{} {:?} pred={:?} succs={:?} stored={} failed={} dht_fail={} repairs={} rejected=[{}] ep_timeouts={} lookups_failed={} bad_answers={} malformed={} sent={}\n",
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
        let provider = &nodes[rng.usize(..nodes.len())];
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

/// Looks each registered name up `per_name` times from random nodes: every lookup must return
/// its provider's record.
pub async fn check_lookups(
    nodes: &[themis_dht::DhtNode],
    rng: &mut Rng,
    registered: &[(String, themis_crypto::NodeId)],
    per_name: usize,
) {
    for (name, provider) in registered {
        for _ in 0..per_name {
            let reader = &nodes[rng.usize(..nodes.len())];
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
