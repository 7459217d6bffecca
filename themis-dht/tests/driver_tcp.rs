//! The DHT driver on real sockets: 50 nodes in one process over loopback TCP (secure), joined
//! by `id@addr` and by bare address, store and find; the same in insecure mode for a smaller
//! ring; API errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod driver_support;

use driver_support::*;
use themis_channel::Mode;
use themis_dht::{Contact, Error, ServiceSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_over_secure_tcp_join_store_and_find() {
    let nodes = ring(Kind::Tcp, Mode::Secure, 50, 1).await;
    let mut rng = Rng::new(11);
    let hops = check_finds(&nodes, &mut rng, 200).await;
    assert!(hops <= 12, "a find took {hops} hops in a ring of 50");
    store_and_lookup(&nodes, &mut rng, 20).await;

    // Every node joined and found its place; the stores landed somewhere.
    let mut stored = 0;
    for n in &nodes {
        let st = n.status().await.unwrap();
        assert_eq!(st.state, "member");
        stored += st.stored_records;
        let m = n.metrics().await.unwrap();
        assert_eq!(m.incoming_unanswered, 0);
        assert_eq!(m.incoming_refused_busy, 0);
        assert_eq!(m.dht.malformed_messages, 0);
    }
    assert!(stored >= 60, "20 names × 3 replicas, got {stored} records");
    let m = nodes[0].metrics().await.unwrap();
    assert!(m.endpoint.handshakes_initiated_ok + m.endpoint.handshakes_accepted_ok > 0);
    assert!(m.requests_sent > 0 && m.incoming_requests > 0);
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_tcp_ring_works_the_same() {
    let nodes = ring(Kind::Tcp, Mode::Insecure, 12, 2).await;
    let mut rng = Rng::new(12);
    check_finds(&nodes, &mut rng, 50).await;
    store_and_lookup(&nodes, &mut rng, 5).await;
    let m = nodes[1].metrics().await.unwrap();
    assert_eq!(
        m.endpoint.handshakes_initiated_ok, 0,
        "no handshake in insecure mode"
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_answers_locally_and_errors_are_reported() {
    let a = start(Kind::Tcp, 500, config(Mode::Secure, 500)).await;
    // Alone, a node is responsible for everything: 0 hops.
    let t = Rng::new(3).id();
    let f = a.find(t).await.unwrap();
    assert_eq!((f.successor.id, f.hops), (a.id(), 0));
    let r = a.register(ServiceSpec::new("solo"), None).await.unwrap();
    assert_eq!(r.stored, 3);
    let p = a.lookup_providers("solo", None).await.unwrap();
    assert_eq!(p.records.len(), 1);
    assert_eq!(p.records[0].provider(), a.id());
    assert!(a.unregister("solo").await.unwrap());
    assert!(!a.unregister("solo").await.unwrap());

    // A bad name and an excessive k are the caller's errors.
    let e = a.register(ServiceSpec::new(""), None).await.unwrap_err();
    assert!(matches!(e, Error::InvalidRecord(_)), "{e}");
    let e = a
        .register(ServiceSpec::new("x"), Some(200))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ReplicationTooHigh { .. }), "{e}");

    // Joining through nobody fails with a clear error; the node stays usable.
    let dead: Contact = "127.0.0.1:9".parse().unwrap();
    let e = a.join([dead]).await.unwrap_err();
    assert!(matches!(e, Error::JoinFailed { tried: 1 }), "{e}");
    assert!(e.to_string().contains("bootstrap"));

    // Joining through a node that holds another key than the one given fails too.
    let b = start(Kind::Tcp, 501, config(Mode::Secure, 501)).await;
    let impostor = Contact {
        addr: b.peer().addr,
        id: Some(identity(999).node_id(&net())),
    };
    let c = start(Kind::Tcp, 502, config(Mode::Secure, 502)).await;
    let e = c.join([impostor]).await.unwrap_err();
    assert!(matches!(e, Error::JoinFailed { .. }), "{e}");
    assert!(
        c.metrics()
            .await
            .unwrap()
            .endpoint
            .handshakes_failed_identity
            >= 1
    );
    // ... and through the right one it works.
    let s = c.join([b.contact()]).await.unwrap();
    assert_eq!(s.id, b.id());

    // After a leave the node refuses commands; after shutdown every call says so.
    let report = c.leave().await.unwrap();
    assert_eq!(report.records_lost, 0);
    let e = c.find(t).await.unwrap_err();
    assert!(matches!(e, Error::InvalidState { .. }), "{e}");
    c.shutdown().await;
    c.shutdown().await;
    assert!(matches!(c.status().await, Err(Error::Stopped)));
    assert!(matches!(c.find(t).await, Err(Error::Stopped)));
    a.shutdown().await;
    b.shutdown().await;
}
