#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Mesh nodes over real loopback TCP: register / discover / call, failover, discovery when a
//! responsible node dies, canary split, access denial.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use themis_mesh::{
    Bytes, Error, IdentityKeypair, MeshConfig, MeshNode, NetworkId, NodeId, ServiceSpec, object_id,
};

fn net() -> NetworkId {
    NetworkId::new("mesh-test").unwrap()
}

async fn start(bootstrap: Option<&MeshNode>, seed: u64) -> MeshNode {
    let mut cfg = MeshConfig::fast("127.0.0.1:0".parse().unwrap());
    cfg.seed = Some(seed);
    if let Some(b) = bootstrap {
        cfg.bootstrap = vec![b.contact()];
    }
    MeshNode::start(net(), Arc::new(IdentityKeypair::generate()), cfg)
        .await
        .unwrap()
}

/// `n` nodes, each joining through the first; then a few stabilization rounds.
async fn ring(n: usize) -> Vec<MeshNode> {
    let first = start(None, 1).await;
    let mut nodes = vec![first];
    for i in 1..n {
        let b = nodes[0].clone();
        nodes.push(start(Some(&b), i as u64 + 1).await);
    }
    settle(&nodes).await;
    nodes
}

/// Waits until every node's successor list is non-empty and consistent enough to route.
async fn settle(nodes: &[MeshNode]) {
    for _ in 0..50 {
        let mut ok = true;
        for n in nodes {
            let s = n.dht().status().await.unwrap();
            ok &= s.state == "member" && (nodes.len() == 1 || !s.successors.is_empty());
        }
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// A handler answering `who:<version>`.
fn echo(tag: &'static str) -> impl themis_mesh::ServiceHandler {
    move |_caller: NodeId, req: Bytes| async move {
        let mut v = tag.as_bytes().to_vec();
        v.push(b':');
        v.extend_from_slice(&req);
        Ok::<_, String>(Bytes::from(v))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing-sensitive while the ring is still stabilizing (flaky under load); run with --ignored; to be fixed in issue 5"]
async fn register_discover_call_on_20_nodes() {
    let nodes = ring(20).await;
    let stored = nodes[3]
        .register("check", ServiceSpec::new("1.0", 100), echo("p3"))
        .await
        .unwrap();
    assert!(stored >= 1, "stored {stored}"); // failed replicas are retried by the DHT
    let found = nodes[11].discover("check").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].provider.id, nodes[3].id());
    assert_eq!(found[0].provider.version, "1.0");
    for caller in [&nodes[0], &nodes[11], &nodes[19]] {
        // The ring may still be stabilizing under the load of the other tests: an
        // application retries discovery a few times.
        let mut r = caller.call("check", Bytes::from_static(b"hi")).await;
        for _ in 0..20 {
            if r.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            r = caller.call("check", Bytes::from_static(b"hi")).await;
        }
        assert_eq!(&r.unwrap()[..], b"p3:hi");
    }
    // An unknown name is a typed error.
    let e = nodes[5].discover("nobody").await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_when_a_provider_dies() {
    let nodes = ring(10).await;
    for i in [2, 6] {
        let tag: &'static str = if i == 2 { "a" } else { "b" };
        nodes[i]
            .register("svc", ServiceSpec::new("1", 100), echo(tag))
            .await
            .unwrap();
    }
    let caller = &nodes[8];
    assert_eq!(caller.discover("svc").await.unwrap().len(), 2);
    // Warm the balancer with both providers, then crash one.
    for _ in 0..4 {
        caller.call("svc", Bytes::from_static(b"x")).await.unwrap();
    }
    nodes[2].crash().await;
    for _ in 0..20 {
        let r = caller.call("svc", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(&r[..], b"b:x", "only the survivor answers");
    }
    for (i, n) in nodes.iter().enumerate() {
        if i != 2 {
            n.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing-sensitive while the ring is still stabilizing (flaky under load); run with --ignored; to be fixed in issue 5"]
async fn discovery_survives_the_death_of_the_responsible_node() {
    let nodes = ring(20).await;
    let owner = nodes[0]
        .dht()
        .find(object_id("db", 0))
        .await
        .unwrap()
        .successor
        .id;
    let dead = nodes.iter().position(|n| n.id() == owner).unwrap();
    let provider = (dead + 1) % nodes.len();
    nodes[provider]
        .register("db", ServiceSpec::new("2", 100), echo("db"))
        .await
        .unwrap();
    nodes[dead].crash().await;
    // A caller that has no cache entry yet, neither the provider nor the dead node.
    let caller = (0..nodes.len())
        .find(|&i| i != dead && i != provider)
        .unwrap();
    let found = nodes[caller].discover("db").await.unwrap();
    assert_eq!(found[0].provider.id, nodes[provider].id());
    let r = nodes[caller]
        .call("db", Bytes::from_static(b"q"))
        .await
        .unwrap();
    assert_eq!(&r[..], b"db:q");
    for (i, n) in nodes.iter().enumerate() {
        if i != dead {
            n.crash().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_split_within_3_points_over_10000_calls() {
    let nodes = ring(5).await;
    nodes[1]
        .register("web", ServiceSpec::new("stable", 90), echo("stable"))
        .await
        .unwrap();
    nodes[2]
        .register("web", ServiceSpec::new("canary", 10), echo("canary"))
        .await
        .unwrap();
    let caller = nodes[4].clone();
    assert_eq!(caller.discover("web").await.unwrap().len(), 2);
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
        for r in t.await.unwrap() {
            *counts.entry(r).or_default() += 1;
        }
    }
    let canary = f64::from(counts.get(&b"canary:"[..]).copied().unwrap_or(0));
    let stable = f64::from(counts.get(&b"stable:"[..]).copied().unwrap_or(0));
    assert_eq!(canary + stable, 10_000.0);
    let share = canary / 10_000.0;
    assert!((share - 0.10).abs() <= 0.03, "canary share {share}");
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denial_is_a_clear_error() {
    let nodes = ring(4).await;
    let allowed = nodes[1].id();
    nodes[0]
        .register("vault", ServiceSpec::default(), echo("v"))
        .await
        .unwrap();
    nodes[0].restrict("vault", [allowed]).unwrap();
    let r = nodes[1]
        .call("vault", Bytes::from_static(b"k"))
        .await
        .unwrap();
    assert_eq!(&r[..], b"v:k");
    let e = nodes[2]
        .call("vault", Bytes::from_static(b"k"))
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
    nodes[3]
        .register(
            "fails",
            ServiceSpec::default(),
            |_c: NodeId, _r: Bytes| async { Err::<Bytes, _>("disk full".to_string()) },
        )
        .await
        .unwrap();
    let e = nodes[1].call("fails", Bytes::new()).await.unwrap_err();
    assert!(
        matches!(&e, Error::Remote { message, .. } if message == "disk full"),
        "{e}"
    );
    for n in &nodes {
        n.shutdown().await;
    }
}
