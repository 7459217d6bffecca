#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! `MeshNode::locate`: the k+1 replica object ids of a name, the node responsible for each (the
//! ring successor of the object id), and the replica the providers were found under. Over
//! loopback TCP; every wait is bounded.

use themis_mesh::{Bytes, MeshNode, NodeId, ServiceSpec, object_id};
use themis_testkit::mesh::{self, Setup};
use themis_testkit::{ring, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locate_names_every_replica_and_its_responsible_node() {
    within(60, "locate", async {
        // six nodes, every successor list right (then `find` is exact)
        let nodes = mesh::ring(&Setup::TCP, 6, 1).await;
        let ids = ring::order(nodes.iter().map(MeshNode::id));
        let echo = |_c: NodeId, r: Bytes| async move { Ok::<_, String>(r) };
        nodes[1]
            .register("db", ServiceSpec::new("2.0", 7), echo)
            .await
            .unwrap();

        let loc = nodes[4].locate("db").await.unwrap();
        assert_eq!(loc.service, "db");
        assert_eq!(loc.found_under, 0);
        assert_eq!(loc.providers.len(), 1);
        assert_eq!(loc.providers[0].id, nodes[1].id());
        assert_eq!(loc.providers[0].version, "2.0");
        assert_eq!(loc.replicas.len(), 3, "k = 2 by default");
        for (r, p) in loc.replicas.iter().enumerate() {
            assert_eq!(usize::from(p.replica), r);
            assert_eq!(p.object_id, object_id("db", p.replica));
            let (id, _addr) = p.responsible.unwrap();
            assert_eq!(
                id,
                ring::successor(&ids, &p.object_id).unwrap(),
                "replica {r}"
            );
        }

        // A name nobody provides: every replica was asked, none had records.
        let none = nodes[2].locate("nobody").await.unwrap();
        assert!(none.providers.is_empty());
        assert_eq!(none.found_under, 2);
        for n in &nodes {
            n.crash().await;
        }
    })
    .await;
}
