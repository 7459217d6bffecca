//! The DHT driver over loopback UDP (secure): 50 nodes join, store and find. The endpoint
//! retransmits lost datagrams; DHT messages with records need more than a path-MTU datagram, so
//! the transport carries up to the UDP maximum here (loopback).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use themis_channel::Mode;
use themis_testkit::dht::*;
use themis_testkit::{Rng, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_over_secure_udp_join_store_and_find() {
    within(
        180,
        "fifty_nodes_over_secure_udp_join_store_and_find",
        async {
            let nodes = ring(&Kind::Udp, Mode::Secure, 50, 3).await;
            let mut rng = Rng::with_seed(13);
            check_finds(&nodes, &mut rng, 200).await;
            store_and_lookup(&nodes, &mut rng, 20).await;
            let m = nodes[0].metrics().await.unwrap();
            assert!(m.endpoint.handshakes_initiated_ok + m.endpoint.handshakes_accepted_ok > 0);
            assert_eq!(m.incoming_refused_busy, 0);
            for n in &nodes {
                n.shutdown().await;
            }
        },
    )
    .await;
}
