#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! `MeshNode::on_transport`: mesh nodes on an in-memory network (no sockets), in virtual time
//! (tokio's paused clock advances whenever every task waits). Register, discover and call
//! across a three-node ring; every wait is for a condition, bounded in virtual time.

use std::sync::Arc;
use std::time::Duration;

use themis_mesh::channel::{MemConfig, MemNetwork};
use themis_mesh::{Bytes, IdentityKeypair, MeshConfig, MeshNode, NetworkId, NodeId, ServiceSpec};

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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let found = loop {
        match c.discover_detailed("echo").await {
            Ok(d) => break d,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("C never discovered 'echo': {e}"),
        }
    };
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
