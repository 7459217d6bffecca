#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Mesh nodes over real loopback TCP: register / discover / call across 50 nodes, discovery
//! when a responsible node dies (failover when a provider dies, in every transport and mode:
//! `node_modes.rs`), canary split, access denial. Every step is bounded
//! (`within`), and the tests wait for conditions (ring consistent, replicas stored), never for
//! fixed delays.

use std::collections::HashMap;

use themis_mesh::{Bytes, Error, NodeId, ServiceSpec, object_id};
use themis_testkit::mesh::*;
use themis_testkit::ring;
use themis_testkit::{eventually_ok, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_discover_call_on_50_nodes() {
    within(120, "the whole test", async {
        let nodes = ring(&Setup::TCP, 50, 50).await;
        let stored = within(
            20,
            "register",
            nodes[3].register("check", ServiceSpec::new("1.0", 100), echo("p3")),
        )
        .await
        .unwrap();
        assert!(stored >= 1, "stored {stored}"); // failed replicas are retried by the DHT
        replicated(&nodes, "check", 2).await;
        for i in [11, 29, 48] {
            let found = within(20, "discover", nodes[i].discover("check"))
                .await
                .unwrap();
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].provider.id, nodes[3].id());
            assert_eq!(found[0].provider.version, "1.0");
        }
        for i in (0..50).step_by(7) {
            let r = within(
                20,
                "call",
                nodes[i].call("check", Bytes::from_static(b"hi")),
            )
            .await
            .unwrap();
            assert_eq!(&r[..], b"p3:hi", "caller {i}");
        }
        // An unknown name is a typed error.
        let e = within(20, "discover an unknown name", nodes[5].discover("nobody"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        shutdown_all(&nodes).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_survives_the_death_of_the_responsible_node() {
    within(120, "the whole test", async {
        let nodes = ring(&Setup::TCP, 20, 20).await;
        let ids = sorted_ids(&nodes);
        let owner0 = ring::successor(&ids, &object_id("db", 0)).unwrap();
        let dead = nodes.iter().position(|n| n.id() == owner0).unwrap();
        let provider = (dead + 1) % nodes.len();
        within(
            20,
            "register",
            nodes[provider].register("db", ServiceSpec::new("2", 100), echo("db")),
        )
        .await
        .unwrap();
        replicated(&nodes, "db", 2).await;
        within(20, "crash the owner of replica 0", nodes[dead].crash()).await;
        let alive: Vec<_> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != dead)
            .map(|(_, n)| n.clone())
            .collect();
        consistent(&alive).await;
        // A caller with no cache entry, neither the provider nor the dead node. Replica 0's new
        // owner has no record (nothing was handed over in a crash): discovery falls back to a
        // sibling replica (paper §7).
        let caller = (0..nodes.len())
            .find(|&i| i != dead && i != provider)
            .unwrap();
        let raw = within(
            20,
            "provider lookup",
            nodes[caller].dht().lookup_providers("db", Some(2)),
        )
        .await
        .unwrap();
        assert!(raw.replica >= 1, "found on replica {}", raw.replica);
        let found = within(20, "discover", nodes[caller].discover("db"))
            .await
            .unwrap();
        assert_eq!(found[0].provider.id, nodes[provider].id());
        let r = within(
            20,
            "call",
            nodes[caller].call("db", Bytes::from_static(b"q")),
        )
        .await
        .unwrap();
        assert_eq!(&r[..], b"db:q");
        shutdown_all(&alive).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_split_within_3_points_over_10000_calls() {
    within(120, "the whole test", async {
        let nodes = ring(&Setup::TCP, 5, 5).await;
        within(
            20,
            "register stable",
            nodes[1].register("web", ServiceSpec::new("stable", 90), echo("stable")),
        )
        .await
        .unwrap();
        within(
            20,
            "register canary",
            nodes[2].register("web", ServiceSpec::new("canary", 10), echo("canary")),
        )
        .await
        .unwrap();
        let caller = nodes[4].clone();
        eventually_ok(20, "both versions discovered", || async {
            match caller.discover("web").await {
                Ok(f) if f.len() == 2 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let mut counts: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let c = caller.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..1250 {
                    got.push(c.call("web", Bytes::new()).await.unwrap().to_vec());
                }
                got
            }));
        }
        for t in tasks {
            for r in within(90, "10,000 calls", t).await.unwrap() {
                *counts.entry(r).or_default() += 1;
            }
        }
        let canary = f64::from(counts.get(&b"canary:"[..]).copied().unwrap_or(0));
        let stable = f64::from(counts.get(&b"stable:"[..]).copied().unwrap_or(0));
        assert_eq!(canary + stable, 10_000.0);
        let share = canary / 10_000.0;
        assert!((share - 0.10).abs() <= 0.03, "canary share {share}");
        shutdown_all(&nodes).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denial_is_a_clear_error() {
    within(90, "the whole test", async {
        let nodes = ring(&Setup::TCP, 4, 4).await;
        let allowed = nodes[1].id();
        within(
            20,
            "register",
            nodes[0].register("vault", ServiceSpec::default(), echo("v")),
        )
        .await
        .unwrap();
        nodes[0].restrict("vault", [allowed]).unwrap();
        let r = within(
            20,
            "allowed call",
            nodes[1].call("vault", Bytes::from_static(b"k")),
        )
        .await
        .unwrap();
        assert_eq!(&r[..], b"v:k");
        let e = within(
            20,
            "denied call",
            nodes[2].call("vault", Bytes::from_static(b"k")),
        )
        .await
        .unwrap_err();
        match &e {
            Error::AccessDenied { caller, service } => {
                assert_eq!(*caller, nodes[2].id());
                assert_eq!(service, "vault");
            }
            other => panic!("expected AccessDenied, got {other:?}"),
        }
        assert!(e.to_string().contains("allow-list"), "{e}");
        // A handler's own failure comes back typed too.
        within(
            20,
            "register a failing handler",
            nodes[3].register(
                "fails",
                ServiceSpec::default(),
                |_c: NodeId, _r: Bytes| async { Err::<Bytes, _>("disk full".to_string()) },
            ),
        )
        .await
        .unwrap();
        let e = within(
            20,
            "call the failing handler",
            nodes[1].call("fails", Bytes::new()),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, Error::Remote { message, .. } if message == "disk full"),
            "{e}"
        );
        shutdown_all(&nodes).await;
    })
    .await;
}
