#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! `MeshNode::on_transport`: mesh nodes on an in-memory network (no sockets), in virtual time
//! (tokio's paused clock advances whenever every task waits). Register, discover and call
//! across a three-node ring; every wait is for a condition, bounded in virtual time.

use std::time::Duration;

use themis_mesh::{Bytes, Discovery, Error, MeshNode, NodeId, ServiceSpec, object_id};
use themis_testkit::mesh::{Setup, start};
use themis_testkit::{MemConfig, MemNetwork, ring};

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
    let setup = Setup::mem(&mem);
    let a = start(&setup, None, 1).await;
    let b = start(&setup, Some(&a), 2).await;
    let c = start(&setup, Some(&a), 3).await;
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
    let setup = Setup::mem(&mem);
    let mut nodes = vec![start(&setup, None, 10).await];
    for seed in 11..16 {
        let n = start(&setup, Some(&nodes[0]), seed).await;
        nodes.push(n);
    }
    let ids = ring::order(nodes.iter().map(MeshNode::id));
    let owner = |t: &NodeId| ring::successor(&ids, t).unwrap();
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
