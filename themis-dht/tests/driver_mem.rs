//! The DHT driver over the seeded in-memory network with tokio's paused clock: the whole stack
//! (core, driver, endpoint, handshakes) runs in virtual time, so a 30-node ring with
//! stabilization, stores and lookups takes no real time to speak of.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod driver_support;

use std::{sync::Arc, time::Duration};

use driver_support::*;
use themis_channel::Mode;
use themis_dht::DhtNode;

#[tokio::test(start_paused = true)]
async fn thirty_nodes_in_memory_virtual_time() {
    let net = mem_network(21);
    let mut rng = Rng::new(21);
    let mut nodes: Vec<DhtNode> = Vec::new();
    for i in 0..30u64 {
        let s = 7000 + i;
        let t = Arc::new(net.bind());
        let node = DhtNode::on_transport(
            t,
            identity(s),
            driver_support::net(),
            config(Mode::Secure, s),
        )
        .unwrap();
        if !nodes.is_empty() {
            let b = &nodes[rng.below(nodes.len())];
            node.join([b.contact()]).await.unwrap();
        }
        nodes.push(node);
    }
    converge(&nodes, Duration::from_secs(120)).await;
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
}
