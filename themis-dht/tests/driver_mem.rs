//! The DHT driver over the seeded in-memory network with tokio's paused clock: the whole stack
//! (core, driver, endpoint, handshakes) runs in virtual time, so a 30-node ring with
//! stabilization, stores and lookups takes no real time to speak of.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::{sync::Arc, time::Duration};

use themis_channel::Mode;
use themis_dht::DhtNode;
use themis_testkit::dht::*;
use themis_testkit::{Rng, identity, network, within};

#[tokio::test(start_paused = true)]
async fn thirty_nodes_in_memory_virtual_time() {
    within(600, "thirty_nodes_in_memory_virtual_time", async {
        let mut nodes = ring(&Kind::Mem(mem_network(21)), Mode::Secure, 30, 21).await;
        let mut rng = Rng::with_seed(21);
        check_finds(&nodes, &mut rng, 100).await;
        store_and_lookup(&nodes, &mut rng, 10).await;

        // A crash, in virtual time: the ring repairs itself.
        let gone = nodes.remove(7).id();
        converge(&nodes, Duration::from_secs(120)).await;
        let st = nodes[0].status().await.unwrap();
        assert!(st.successors.iter().all(|p| p.id != gone));
        check_finds(&nodes, &mut rng, 50).await;
        for n in &nodes {
            n.shutdown().await;
        }
    })
    .await;
}

/// Every operation of a `DhtNode` ends within `DriverConfig::command_timeout`: a join through
/// a bootstrap that never answers (a bound address with nobody serving it) fails with
/// `Error::TimedOut` once the limit passes, even though the core would keep retrying for longer.
#[tokio::test(start_paused = true)]
async fn an_operation_that_outlasts_command_timeout_fails_with_timed_out() {
    within(
        600,
        "an_operation_that_outlasts_command_timeout_fails_with_timed_out",
        async {
            let net = mem_network(5);
            let silent = net.bind(); // frames to it are delivered, never answered
            let mut cfg = config(Mode::Secure, 5);
            cfg.command_timeout = Duration::from_secs(2);
            let node =
                DhtNode::on_transport(Arc::new(net.bind()), identity(5), network(), cfg).unwrap();
            let started = tokio::time::Instant::now();
            let e = node
                .join([themis_dht::Contact::from(
                    themis_channel::Transport::local_addr(&silent),
                )])
                .await
                .unwrap_err();
            assert!(
                matches!(e, themis_dht::Error::TimedOut { what: "join", .. }),
                "{e}"
            );
            assert!(e.to_string().contains("command_timeout"), "{e}");
            // virtual time: exactly the limit, not the core's longer retry schedule
            let took = started.elapsed();
            assert!(
                took >= Duration::from_secs(2) && took < Duration::from_millis(2100),
                "{took:?}"
            );
            // the node still answers (the join goes on in the background) and shuts down
            node.status().await.unwrap();
            node.shutdown().await;
        },
    )
    .await;
}
