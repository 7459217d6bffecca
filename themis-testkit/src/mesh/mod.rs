//! Rings of `MeshNode`s over loopback TCP or UDP or the in-memory network (secure or
//! insecure), waits for conditions on them (ring consistent, replicas stored), and fixtures of
//! the pure policies ([`policy`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod policy;

use std::sync::Arc;
use std::time::Duration;

use themis_mesh::channel::wire::UDP_MAX_PAYLOAD;
use themis_mesh::dht::DhtNode;
use themis_mesh::{Bytes, MeshConfig, MeshNode, Mode, NodeId, TransportKind, object_id};

use crate::dht::{Kind, converge};
use crate::identity::{Rng, identity, network};
use crate::net::MemNetwork;
use crate::ring;
use crate::wait::{eventually_ok, within};

/// How the nodes of a test talk.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Loopback TCP or UDP, or the in-memory network.
    pub kind: Kind,
    /// Secure or insecure.
    pub mode: Mode,
}

impl Setup {
    /// Secure TCP, the default deployment.
    pub const TCP: Setup = Setup {
        kind: Kind::Tcp,
        mode: Mode::Secure,
    };

    /// Secure, on the in-memory network `net` (deterministic under a paused clock).
    pub fn mem(net: &MemNetwork) -> Self {
        Self {
            kind: Kind::Mem(net.clone()),
            mode: Mode::Secure,
        }
    }
}

/// Settings for rings on one machine: `MeshConfig::fast` with quicker stabilization, so that
/// a ring converges in a few seconds even on a loaded 2-core box.
pub fn config(setup: &Setup, seed: u64) -> MeshConfig {
    let mut c = MeshConfig::fast("127.0.0.1:0".parse().unwrap());
    c.seed = Some(seed);
    if matches!(setup.kind, Kind::Udp) {
        c.transport = TransportKind::Udp;
    }
    c.mode = setup.mode;
    c.udp.max_frame_len = UDP_MAX_PAYLOAD;
    c.tcp.max_connections = 512;
    c.driver.dht.stabilize_period = Duration::from_millis(200);
    c.driver.dht.check_predecessor_period = Duration::from_millis(400);
    c.driver.dht.finger_period = Duration::from_secs(2);
    c.driver.dht.retry_delay = Duration::from_millis(500);
    // No periodic re-store while a test runs (TTL 60 s): a test sees exactly the replicas
    // of the registration itself (and of its retries).
    c.driver.dht.restore_period = Duration::from_secs(45);
    c
}

/// Node `seed` (its identity and PRNG), joined through `bootstrap` if given.
pub async fn start(setup: &Setup, bootstrap: Option<&MeshNode>, seed: u64) -> MeshNode {
    let mut cfg = config(setup, seed);
    if let Some(b) = bootstrap {
        cfg.bootstrap = vec![b.contact()];
    }
    let node = match &setup.kind {
        Kind::Tcp | Kind::Udp => {
            within(
                30,
                "start a node",
                MeshNode::start(network(), identity(seed), cfg),
            )
            .await
        }
        Kind::Mem(net) => {
            let transport = Arc::new(net.bind());
            within(
                30,
                "start a node",
                MeshNode::on_transport(network(), identity(seed), transport, cfg),
            )
            .await
        }
    };
    node.unwrap()
}

/// `n` nodes, each joining through an earlier one (chosen by `seed`), then waits until the
/// ring is [`consistent`].
pub async fn ring(setup: &Setup, n: usize, seed: u64) -> Vec<MeshNode> {
    let mut rng = Rng::with_seed(seed);
    let mut nodes: Vec<MeshNode> = Vec::with_capacity(n);
    for i in 0..n {
        let b = (!nodes.is_empty()).then(|| nodes[rng.usize(..nodes.len())].clone());
        nodes.push(start(setup, b.as_ref(), seed * 1000 + i as u64).await);
    }
    consistent(&nodes).await;
    nodes
}

/// The nodes' ids in ring order.
pub fn sorted_ids(nodes: &[MeshNode]) -> Vec<NodeId> {
    ring::order(nodes.iter().map(MeshNode::id))
}

/// Waits (30 s at most) until every node's predecessor and whole successor list are the true
/// ones, as [`crate::dht::converge`] does for the DHT nodes underneath.
pub async fn consistent(nodes: &[MeshNode]) {
    let dht: Vec<DhtNode> = nodes.iter().map(|n| n.dht().clone()).collect();
    converge(&dht, Duration::from_secs(30)).await;
}

/// Waits until the records of `service` (registered by one provider only, replication `k`)
/// are stored on every one of its `k + 1` responsible nodes.
pub async fn replicated(nodes: &[MeshNode], service: &str, k: u8) {
    let ids = sorted_ids(nodes);
    let mut want: Vec<(NodeId, usize)> = Vec::new();
    for r in 0..=k {
        let o = ring::successor(&ids, &object_id(service, r)).unwrap();
        match want.iter_mut().find(|(id, _)| *id == o) {
            Some((_, c)) => *c += 1,
            None => want.push((o, 1)),
        }
    }
    let want = &want;
    eventually_ok(30, "records on all k+1 responsible nodes", || async move {
        for (id, count) in want {
            let node = nodes.iter().find(|n| n.id() == *id).unwrap();
            let s = node.dht().status().await.map_err(|e| e.to_string())?;
            if s.stored_records < *count {
                return Err(format!(
                    "{} stores {} records, wants {count}",
                    id.short(),
                    s.stored_records
                ));
            }
        }
        Ok(())
    })
    .await;
}

/// A handler answering `tag:request`.
pub fn echo(tag: &'static str) -> impl themis_mesh::ServiceHandler {
    move |_caller: NodeId, req: Bytes| async move {
        let mut v = tag.as_bytes().to_vec();
        v.push(b':');
        v.extend_from_slice(&req);
        Ok::<_, String>(Bytes::from(v))
    }
}

/// Shuts every node down gracefully, one after the other. Each leave hands records to a
/// successor that may itself be gone already: the case that used to hang (a leave that never
/// ended), so every leave must end well (within `command_timeout`, else `TimedOut`).
pub async fn shutdown_all(nodes: &[MeshNode]) {
    for (i, n) in nodes.iter().enumerate() {
        let left = within(30, &format!("leave of node {i}"), n.dht().leave()).await;
        if let Err(e) = left {
            panic!("node {i}: the leave did not end well: {e}");
        }
        within(30, &format!("shut down node {i}"), n.shutdown()).await;
    }
}
