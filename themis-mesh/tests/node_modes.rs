#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! `MeshNode` in every transport and mode it can run: secure TCP, insecure TCP, secure UDP and
//! insecure UDP, through one scenario: register, discover, call, failover when a provider
//! crashes, and access policy, every step bounded (the larger secure-TCP scenarios are
//! `node_mesh.rs`).

use themis_mesh::{Bytes, CallOptions, Error, Mode, ServiceSpec};
use themis_testkit::dht::Kind;
use themis_testkit::mesh::*;
use themis_testkit::{eventually_ok, within};

async fn register_discover_call(setup: Setup, seed: u64) {
    let nodes = ring(&setup, 8, seed).await;
    for (i, tag) in [(1, "a"), (5, "b")] {
        within(
            20,
            "register",
            nodes[i].register("svc", ServiceSpec::new("1", 100), echo(tag)),
        )
        .await
        .unwrap();
    }
    let caller = &nodes[6];
    eventually_ok(20, "both providers discovered", || async {
        match caller.discover("svc").await {
            Ok(f) if f.len() == 2 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    for i in [0, 3, 6, 7] {
        let r = within(20, "call", nodes[i].call("svc", Bytes::from_static(b"x")))
            .await
            .unwrap();
        assert!(&r[..] == b"a:x" || &r[..] == b"b:x", "{r:?}");
    }
    // Failover: provider a crashes, every call is served by b. The calls are idempotent: a
    // call that may have reached a before it crashed (sent, then no answer) is failed over too.
    within(20, "crash", nodes[1].crash()).await;
    for _ in 0..10 {
        let (r, _) = within(
            20,
            "call after the crash",
            caller.call_with(
                "svc",
                Bytes::from_static(b"y"),
                CallOptions::default().idempotent(true),
            ),
        )
        .await
        .unwrap();
        assert_eq!(&r[..], b"b:y");
    }
    // Access policy: b lets only node 0 call (in insecure mode the caller's id is a claim,
    // and the policy checks that claim).
    nodes[5].restrict("svc", [nodes[0].id()]).unwrap();
    let e = within(
        20,
        "denied call",
        caller.call("svc", Bytes::from_static(b"z")),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::AccessDenied { .. }), "{e}");
    let alive: Vec<_> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, n)| n.clone())
        .collect();
    shutdown_all(&alive).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_tcp() {
    within(90, "the whole test", register_discover_call(Setup::TCP, 34)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_tcp() {
    let setup = Setup {
        kind: Kind::Tcp,
        mode: Mode::Insecure,
    };
    within(90, "the whole test", register_discover_call(setup, 31)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_udp() {
    let setup = Setup {
        kind: Kind::Udp,
        mode: Mode::Secure,
    };
    within(90, "the whole test", register_discover_call(setup, 32)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_udp() {
    let setup = Setup {
        kind: Kind::Udp,
        mode: Mode::Insecure,
    };
    within(90, "the whole test", register_discover_call(setup, 33)).await;
}
