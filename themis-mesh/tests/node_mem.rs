#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! `MeshNode::on_transport`: mesh nodes on an in-memory network (no sockets), in virtual time
//! (tokio's paused clock advances whenever every task waits). Register, discover and call
//! across a three-node ring; every wait is for a condition, bounded in virtual time.

use std::sync::Arc;
use std::time::Duration;

use themis_mesh::channel::{MemConfig, MemNetwork};
use themis_mesh::{
    Bytes, Discovery, Error, IdentityKeypair, MeshConfig, MeshNode, NetworkId, NodeId, ServiceSpec,
    object_id,
};

async fn node(mem: &MemNetwork, bootstrap: Option<&MeshNode>, seed: u8) -> MeshNode {
    let transport = Arc::new(mem.bind());
    let mut config = MeshConfig::fast("127.0.0.1:0".parse().unwrap());
    config.seed = Some(u64::from(seed));
    config.bootstrap = bootstrap.map(MeshNode::contact).into_iter().collect();
    let net = NetworkId::new("mesh-mem").unwrap();
    let id = Arc::new(IdentityKeypair::from_seed(&[seed; 32]));
    MeshNode::on_transport(net, id, transport, config)
        .await
        .unwrap()
}

/// Discovers `service` from `node` afresh until the answer satisfies `want`, for at most 60 s
/// of virtual time.
async fn discovered(
    node: &MeshNode,
    service: &str,
    want: impl Fn(&Discovery) -> bool,
) -> Discovery {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last: Result<Discovery, Error>;
    loop {
        last = node.discover_detailed(service).await;
        if last.as_ref().is_ok_and(&want) {
            return last.unwrap();
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{service}: not discovered as wanted within 60 s: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn register_discover_and_call_over_an_in_memory_network() {
    let mem = MemNetwork::new(MemConfig {
        seed: 7,
        ..MemConfig::default()
    });
    let a = node(&mem, None, 1).await;
    let b = node(&mem, Some(&a), 2).await;
    let c = node(&mem, Some(&a), 3).await;
    let provider = b.id();
    b.register(
        "echo",
        ServiceSpec::new("1.0", 100),
        |caller: NodeId, body: Bytes| async move {
            Ok::<_, String>(Bytes::from(format!("{}:{}", caller.short(), body.len())))
        },
    )
    .await
    .unwrap();
    // The ring settles and the records reach their replicas: wait until C finds them.
    let found = discovered(&c, "echo", |_| true).await;
    assert_eq!(found.providers.len(), 1);
    assert_eq!(found.providers[0].provider.id, provider);
    assert_eq!(found.providers[0].provider.version, "1.0");
    let (answer, served_by) = c
        .call_traced("echo", Bytes::from_static(b"four"))
        .await
        .unwrap();
    assert_eq!(served_by, provider);
    assert_eq!(answer, Bytes::from(format!("{}:4", c.id().short())));
    for n in [c, b, a] {
        n.shutdown().await;
    }
}

/// Paper §7: when the node responsible for replica 0 is dead, discovery asks the sibling
/// replicas (the replica search's fallback), here with the crashed node's records lost.
#[tokio::test(start_paused = true)]
async fn discovery_falls_back_to_a_sibling_replica() {
    let mem = MemNetwork::new(MemConfig {
        seed: 11,
        ..MemConfig::default()
    });
    let mut nodes = vec![node(&mem, None, 10).await];
    for seed in 11..16 {
        let n = node(&mem, Some(&nodes[0]), seed).await;
        nodes.push(n);
    }
    let mut ids: Vec<NodeId> = nodes.iter().map(MeshNode::id).collect();
    ids.sort();
    let owner = |t: &NodeId| *ids.iter().find(|id| *id >= t).unwrap_or(&ids[0]);
    let (provider, reader) = (nodes[1].clone(), nodes[2].clone());
    // A name whose replica 0 lives neither on the provider nor on the reader.
    let name = (0..)
        .map(|i| format!("db-{i}"))
        .find(|n| {
            let o = owner(&object_id(n, 0));
            o != provider.id() && o != reader.id()
        })
        .unwrap();
    provider
        .register(
            &name,
            ServiceSpec::default(),
            |_: NodeId, b: Bytes| async move { Ok::<_, String>(b) },
        )
        .await
        .unwrap();
    let before = discovered(&reader, &name, |d| d.replica == 0).await;
    assert_eq!(before.providers[0].provider.id, provider.id());
    let dead = owner(&object_id(&name, 0));
    nodes.iter().find(|n| n.id() == dead).unwrap().crash().await;
    let after = discovered(&reader, &name, |d| d.replica >= 1).await;
    assert_eq!(after.providers[0].provider.id, provider.id());
    for n in nodes.iter().filter(|n| n.id() != dead) {
        n.shutdown().await;
    }
}
