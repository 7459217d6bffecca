#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! The cluster view and the node-info request: `MeshNode::members` walks the ring along the
//! successor lists and finds every member in ring order with its service count; a crashed
//! member is reported failed and walked past; `MeshNode::node_info` answers a bare address
//! (identified first) with the node's clock and services. On the in-memory network in virtual
//! time.

use themis_mesh::{Contact, MemberState, ServiceSpec};
use themis_testkit::dht::mem_network;
use themis_testkit::mesh::{Setup, echo, ring, sorted_ids};
use themis_testkit::within;

#[tokio::test(start_paused = true)]
async fn the_walk_finds_every_member_in_ring_order_with_its_services() {
    within(600, "members", async {
        let setup = Setup::mem(&mem_network(51));
        let nodes = ring(&setup, 7, 51).await;
        nodes[2]
            .register("a", ServiceSpec::default(), echo("a"))
            .await
            .unwrap();
        nodes[2]
            .register("b", ServiceSpec::default(), echo("b"))
            .await
            .unwrap();
        let ids = sorted_ids(&nodes);
        let from = &nodes[4];
        let m = from.members(100).await.unwrap();
        assert!(m.complete && !m.limited, "{m:?}");
        let walked: Vec<_> = m.members.iter().map(|x| x.peer.id).collect();
        let start = ids.iter().position(|x| *x == from.id()).unwrap();
        let want: Vec<_> = (0..ids.len())
            .map(|d| ids[(start + d) % ids.len()])
            .collect();
        assert_eq!(walked, want);
        for x in &m.members {
            assert_eq!(x.state, MemberState::Alive, "{x:?}");
            let info = x.info.as_ref().unwrap();
            let want = if x.peer.id == nodes[2].id() { 2 } else { 0 };
            assert_eq!(info.services, want, "{x:?}");
            assert!(!info.version.is_empty());
            // every node runs on this machine's clock
            assert!(info.clock_offset_ms().abs() < 2_000, "{info:?}");
        }

        // A crashed member: reported failed, and the walk goes on past it.
        let crashed_id = nodes[3].id();
        let walker = &nodes[4];
        nodes[3].crash().await;
        let m = walker.members(100).await.unwrap();
        let gone = m.members.iter().find(|x| x.peer.id == crashed_id);
        if let Some(gone) = gone {
            assert_eq!(gone.state, MemberState::Failed, "{gone:?}");
            assert!(gone.error.is_some());
        }
        let alive = m
            .members
            .iter()
            .filter(|x| x.state == MemberState::Alive)
            .count();
        assert_eq!(alive, nodes.len() - 1, "{m:?}");
        assert!(m.complete, "{m:?}");
        // The limit bounds the walk.
        let m = walker.members(2).await.unwrap();
        assert_eq!(m.members.len(), 3);
        assert!(m.limited && !m.complete);
        for n in &nodes {
            n.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn node_info_identifies_a_bare_address_first() {
    within(600, "node info", async {
        let setup = Setup::mem(&mem_network(52));
        let nodes = ring(&setup, 2, 52).await;
        let target = nodes[1].dht().peer();
        let info = nodes[0]
            .node_info(Contact::from(target.addr))
            .await
            .unwrap();
        assert_eq!(info.id, target.id);
        assert_eq!(info.services, 0);
        // asking itself needs no network
        let me = nodes[0].node_info(nodes[0].contact()).await.unwrap();
        assert_eq!(me.id, nodes[0].id());
        for n in &nodes {
            n.shutdown().await;
        }
    })
    .await;
}
