//! `DhtNode::neighbors_of`: another member's own predecessor and successor list, as it answers
//! `get_neighbors`; a refusal from a node that left; the local node answered from its status.
//! Over the in-memory network in virtual time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use themis_channel::Mode;
use themis_dht::{Error, Refusal};
use themis_testkit::dht::{Kind, mem_network, ring, sorted_ids};
use themis_testkit::within;

#[tokio::test(start_paused = true)]
async fn a_member_answers_with_its_true_neighbours() {
    within(600, "a_member_answers_with_its_true_neighbours", async {
        let nodes = ring(&Kind::Mem(mem_network(41)), Mode::Secure, 6, 41).await;
        let ids = sorted_ids(&nodes);
        let asker = &nodes[0];
        for target in &nodes {
            let n = asker.neighbors_of(target.peer()).await.unwrap();
            assert_eq!(n.peer, target.peer());
            let i = ids.iter().position(|x| *x == target.id()).unwrap();
            let succ: Vec<_> = n.successors.iter().map(|p| p.id).collect();
            assert_eq!(succ[0], ids[(i + 1) % ids.len()]);
            assert!(!succ.contains(&target.id()), "{succ:?}");
            let pred = n.predecessor.unwrap().id;
            assert_eq!(pred, ids[(i + ids.len() - 1) % ids.len()]);
        }
        // A node that left refuses: it is no longer a member.
        let gone = nodes[3].peer();
        nodes[3].leave().await.unwrap();
        let e = asker.neighbors_of(gone).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::Refused {
                    reason: Refusal::NotMember,
                    ..
                }
            ),
            "{e}"
        );
        // A node that is gone: the endpoint's error.
        nodes[3].shutdown().await;
        let e = asker.neighbors_of(gone).await.unwrap_err();
        assert!(matches!(e, Error::Endpoint(_)), "{e}");
        for n in &nodes {
            n.shutdown().await;
        }
    })
    .await;
}
