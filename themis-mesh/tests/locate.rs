#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! `MeshNode::locate`: the k+1 replica object ids of a name, the node responsible for each (the
//! ring successor of the object id), and the replica the providers were found under. Over
//! loopback TCP; every wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use themis_mesh::{
    Bytes, IdentityKeypair, MeshConfig, MeshNode, NetworkId, NodeId, ServiceSpec, object_id,
};

const LIMIT: Duration = Duration::from_secs(60);

/// The first id `>= target`, wrapping: the node responsible for `target`.
fn successor(ids: &[NodeId], target: &NodeId) -> NodeId {
    let mut sorted = ids.to_vec();
    sorted.sort();
    *sorted.iter().find(|id| *id >= target).unwrap_or(&sorted[0])
}

/// Waits until each node's successor list is the one the ids say (then `find` is exact).
async fn settle(nodes: &[MeshNode]) {
    let mut ids: Vec<NodeId> = nodes.iter().map(MeshNode::id).collect();
    ids.sort();
    let len = MeshConfig::fast("127.0.0.1:0".parse().unwrap())
        .driver
        .dht
        .successor_list_len;
    loop {
        let mut ok = true;
        for n in nodes {
            let s = n.dht().status().await.unwrap();
            let me = ids.iter().position(|x| *x == n.id()).unwrap();
            let want: Vec<NodeId> = (1..ids.len())
                .map(|i| ids[(me + i) % ids.len()])
                .take(len)
                .collect();
            let got: Vec<NodeId> = s.successors.iter().map(|p| p.id).collect();
            ok &= got == want;
        }
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locate_names_every_replica_and_its_responsible_node() {
    tokio::time::timeout(LIMIT, async {
        let net = NetworkId::new("locate-test").unwrap();
        let mut nodes: Vec<MeshNode> = Vec::new();
        for i in 0..6u8 {
            let mut cfg = MeshConfig::fast("127.0.0.1:0".parse().unwrap());
            cfg.seed = Some(u64::from(i));
            if let Some(first) = nodes.first() {
                cfg.bootstrap = vec![first.contact()];
            }
            let key = Arc::new(IdentityKeypair::from_seed(&[i + 1; 32]));
            nodes.push(MeshNode::start(net.clone(), key, cfg).await.unwrap());
        }
        settle(&nodes).await;
        let ids: Vec<NodeId> = nodes.iter().map(MeshNode::id).collect();
        let echo = |_c: NodeId, r: Bytes| async move { Ok::<_, String>(r) };
        nodes[1]
            .register("db", ServiceSpec::new("2.0", 7), echo)
            .await
            .unwrap();

        let loc = nodes[4].locate("db").await.unwrap();
        assert_eq!(loc.service, "db");
        assert_eq!(loc.found_under, 0);
        assert_eq!(loc.providers.len(), 1);
        assert_eq!(loc.providers[0].id, ids[1]);
        assert_eq!(loc.providers[0].version, "2.0");
        assert_eq!(loc.replicas.len(), 3, "k = 2 by default");
        for (r, p) in loc.replicas.iter().enumerate() {
            assert_eq!(usize::from(p.replica), r);
            assert_eq!(p.object_id, object_id("db", p.replica));
            let (id, _addr) = p.responsible.unwrap();
            assert_eq!(id, successor(&ids, &p.object_id), "replica {r}");
        }

        // A name nobody provides: every replica was asked, none had records.
        let none = nodes[2].locate("nobody").await.unwrap();
        assert!(none.providers.is_empty());
        assert_eq!(none.found_under, 2);
        for n in &nodes {
            n.crash().await;
        }
    })
    .await
    .expect("locate test did not finish within its limit");
}
