//! Churn on real sockets (loopback TCP, secure): a graceful leave of a few nodes loses no
//! record, and crashed nodes (dropped without a leave) are routed around.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use themis_channel::Mode;
use themis_dht::DhtNode;
use themis_testkit::dht::*;
use themis_testkit::{Rng, within};

/// Registers `names` names from the first `providers` nodes (which stay), k = 2.
async fn register(
    nodes: &[DhtNode],
    providers: usize,
    names: usize,
) -> Vec<(String, themis_crypto::NodeId)> {
    let mut out = Vec::new();
    for i in 0..names {
        let p = &nodes[i % providers];
        let name = format!("churn-{i}");
        let r = p
            .register(themis_dht::ServiceSpec::new(name.clone()), Some(2))
            .await
            .unwrap();
        assert_eq!((r.stored, r.failed), (3, 0), "{name}");
        out.push((name, p.id()));
    }
    out
}

async fn total_stored(nodes: &[DhtNode]) -> usize {
    let mut n = 0;
    for node in nodes {
        n += node.status().await.unwrap().stored_records;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leaves_lose_nothing() {
    within(180, "graceful_leaves_lose_nothing", async {
        let mut nodes = ring(&Kind::Tcp, Mode::Secure, 24, 4).await;
        let names = register(&nodes, 12, 15).await;
        assert_eq!(total_stored(&nodes).await, 45, "15 names × 3 replicas");

        // Three nodes that hold records (and provide nothing) leave.
        let mut leavers = Vec::new();
        for i in (12..nodes.len()).rev() {
            if leavers.len() < 3 && nodes[i].status().await.unwrap().stored_records > 0 {
                leavers.push(nodes.remove(i));
            }
        }
        assert_eq!(
            leavers.len(),
            3,
            "seed 4 puts records on at least three non-providers"
        );
        let mut handed = 0;
        for l in &leavers {
            let report = l.leave().await.unwrap();
            assert_eq!(report.records_lost, 0);
            handed += report.records_handed_over;
            assert_eq!(l.status().await.unwrap().state, themis_dht::NodeState::Left);
            l.shutdown().await;
        }
        assert!(handed > 0);

        converge(&nodes, Duration::from_secs(30)).await;
        assert_eq!(
            total_stored(&nodes).await,
            45,
            "every record is still stored once per replica"
        );
        let mut rng = Rng::with_seed(14);
        check_finds(&nodes, &mut rng, 100).await;
        check_lookups(&nodes, &mut rng, &names, 2).await;
        for n in &nodes {
            n.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_nodes_are_routed_around() {
    within(180, "crashed_nodes_are_routed_around", async {
        let mut nodes = ring(&Kind::Tcp, Mode::Secure, 24, 5).await;
        let names = register(&nodes, 12, 15).await;

        // Two non-providers crash: their handles are dropped, nothing is handed over.
        let crashed = [nodes.remove(20).id(), nodes.remove(15).id()];
        converge(&nodes, Duration::from_secs(30)).await;
        for n in &nodes {
            let st = n.status().await.unwrap();
            assert!(st.successors.iter().all(|p| !crashed.contains(&p.id)));
        }
        let mut rng = Rng::with_seed(15);
        // Fingers may still name the crashed nodes: finds time out on them and go around.
        check_finds(&nodes, &mut rng, 100).await;
        check_lookups(&nodes, &mut rng, &names, 2).await;
        let mut failures = 0;
        for n in &nodes {
            failures += n.metrics().await.unwrap().requests_failed;
        }
        assert!(failures > 0, "someone noticed the crashes");
        for n in &nodes {
            n.shutdown().await;
        }
    })
    .await;
}
