//! The DHT driver on real sockets: 50 nodes in one process over loopback TCP (secure), joined
//! by `id@addr` and by bare address, store and find; the same in insecure mode for a smaller
//! ring; API errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use themis_channel::Mode;
use themis_dht::{Contact, Error, ServiceSpec};
use themis_testkit::dht::*;
use themis_testkit::{Rng, identity, network, random_id, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_over_secure_tcp_join_store_and_find() {
    within(
        180,
        "fifty_nodes_over_secure_tcp_join_store_and_find",
        async {
            let nodes = ring(&Kind::Tcp, Mode::Secure, 50, 1).await;
            let mut rng = Rng::with_seed(11);
            let hops = check_finds(&nodes, &mut rng, 200).await;
            assert!(hops <= 12, "a find took {hops} hops in a ring of 50");
            store_and_lookup(&nodes, &mut rng, 20).await;

            // Every node joined and found its place; the stores landed somewhere.
            let mut stored = 0;
            for n in &nodes {
                let st = n.status().await.unwrap();
                assert_eq!(st.state, themis_dht::NodeState::Member);
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
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_tcp_ring_works_the_same() {
    within(180, "insecure_tcp_ring_works_the_same", async {
        let nodes = ring(&Kind::Tcp, Mode::Insecure, 12, 2).await;
        let mut rng = Rng::with_seed(12);
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
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_answers_locally_and_errors_are_reported() {
    within(
        180,
        "a_lone_node_answers_locally_and_errors_are_reported",
        async {
            let a = start(&Kind::Tcp, 500, config(Mode::Secure, 500)).await;
            // Alone, a node is responsible for everything: 0 hops.
            let t = random_id(&mut Rng::with_seed(3));
            let f = a.find(t).await.unwrap();
            assert_eq!((f.successor.id, f.hops), (a.id(), 0));
            let r = a.register(ServiceSpec::new("solo"), None).await.unwrap();
            assert_eq!(r.stored, 3);
            let p = a.lookup_providers("solo", None).await.unwrap();
            assert_eq!(p.records.len(), 1);
            assert_eq!(p.records[0].provider(), a.id());
            // the withdrawal stores a tombstone on every replica (all local here): readers
            // drop the provider at once
            let u = a.unregister("solo").await.unwrap();
            assert!(u.registered);
            assert_eq!((u.tombstones_stored, u.tombstones_failed), (3, 0));
            let p = a.lookup_providers("solo", None).await.unwrap();
            assert!(p.records.is_empty(), "{:?}", p.records);
            assert!(
                p.withdrawn
                    .iter()
                    .all(|t| t.is_withdrawn() && t.provider() == a.id())
            );
            assert_eq!(p.withdrawn.len(), 3);
            assert!(!a.unregister("solo").await.unwrap().registered);

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
            let b = start(&Kind::Tcp, 501, config(Mode::Secure, 501)).await;
            let impostor = Contact {
                addr: b.peer().addr,
                id: Some(identity(999).node_id(&network())),
            };
            let c = start(&Kind::Tcp, 502, config(Mode::Secure, 502)).await;
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
        },
    )
    .await;
}

/// A node listening on every interface (0.0.0.0) must say which address others reach it at:
/// without `advertise` it refuses to start (its records and ring answers would name 0.0.0.0,
/// which makes every peer dial itself); with it, that address is what the ring learns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_every_interface_advertises_a_dialable_address() {
    within(
        60,
        "a_node_on_every_interface_advertises_a_dialable_address",
        async {
            use themis_channel::TcpConfig;
            use themis_dht::DhtNode;
            let any: std::net::SocketAddr = "0.0.0.0:0".parse().unwrap();
            let bind = |seed: u64, cfg| {
                DhtNode::bind_tcp(any, TcpConfig::default(), identity(seed), network(), cfg)
            };
            let e = bind(700, config(Mode::Secure, 700)).await.unwrap_err();
            assert!(matches!(e, Error::UnspecifiedAddress { .. }), "{e}");
            assert!(e.to_string().contains("advertise"), "{e}");

            let mut cfg = config(Mode::Secure, 701);
            cfg.advertise = Some("127.0.0.1:0".parse().unwrap());
            let a = bind(701, cfg).await.unwrap();
            let addr = a.peer().addr;
            assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
            let b = start(&Kind::Tcp, 702, config(Mode::Secure, 702)).await;
            b.join([a.contact()]).await.unwrap();
            let (a, b) = {
                let nodes = [a, b];
                converge(&nodes, std::time::Duration::from_secs(20)).await;
                let [a, b] = nodes;
                (a, b)
            };
            // a's own record and b's view of a both carry the advertised address
            a.register(ServiceSpec::new("from-a"), Some(0))
                .await
                .unwrap();
            let found = b.lookup_providers("from-a", Some(0)).await.unwrap();
            assert_eq!(found.records[0].addr(), addr);
            let f = b.find(a.id()).await.unwrap();
            assert_eq!(f.successor.addr, addr);
            a.shutdown().await;
            b.shutdown().await;
        },
    )
    .await;
}

/// The sender the core sees is the peer the endpoint authenticated: a record signed by A and
/// sent by M is refused (`not_provider`), the very same bytes sent by A are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_accepted_only_from_the_authenticated_provider() {
    within(
        180,
        "records_are_accepted_only_from_the_authenticated_provider",
        async {
            use std::sync::Arc;
            use std::time::{SystemTime, UNIX_EPOCH};
            use themis_channel::{Endpoint, EndpointConfig, PeerAddr, TcpConfig};

            let b = start(&Kind::Tcp, 600, config(Mode::Secure, 600)).await;
            let endpoint = |seed: u64| async move {
                let handler = |_: PeerAddr, _: bytes::Bytes| async { bytes::Bytes::new() };
                Endpoint::bind_tcp(
                    "127.0.0.1:0".parse().unwrap(),
                    TcpConfig::default(),
                    identity(seed),
                    network(),
                    EndpointConfig::default(),
                    Arc::new(handler),
                )
                .await
                .unwrap()
            };
            let (a, m) = (endpoint(601).await, endpoint(602).await);
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            let record = themis_dht::ProviderRecord::sign(
                &identity(601),
                &network(),
                &ServiceSpec::new("guarded"),
                a.local_addr(),
                0,
                now_ms + 30_000,
                1,
            );
            // A DHT command: the DHT's protocol id, then the store request (PROTOCOL.md §5.4).
            let request = bytes::Bytes::from(
                [
                    &[themis_dht::DhtHandler::PROTOCOL_ID][..],
                    &themis_dht::fuzz::bench_store(&record),
                ]
                .concat(),
            );
            let contains =
                |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);

            let r = m
                .request(&b.peer().into_addr(), request.clone())
                .await
                .unwrap();
            assert!(contains(&r, b"not_provider"), "{r:?}");
            let r = a.request(&b.peer().into_addr(), request).await.unwrap();
            assert!(contains(&r, b"stored"), "{r:?}");
            let m = b.metrics().await.unwrap();
            assert_eq!(m.dht.rejected_for(themis_dht::Refusal::NotProvider), 1);
            assert_eq!(b.status().await.unwrap().stored_records, 1);
            let found = b.lookup_providers("guarded", Some(0)).await.unwrap();
            assert_eq!(
                found.records[0].provider(),
                identity(601).node_id(&network())
            );
            b.shutdown().await;
        },
    )
    .await;
}

trait IntoAddr {
    fn into_addr(self) -> themis_channel::PeerAddr;
}
impl IntoAddr for themis_dht::Peer {
    fn into_addr(self) -> themis_channel::PeerAddr {
        themis_channel::PeerAddr {
            id: self.id,
            addr: self.addr,
        }
    }
}
