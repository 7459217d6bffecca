//! Real `themis node` processes in network namespaces (issues 11 and 12; root only, skipped with a
//! printed reason otherwise): a black-holed provider (every packet to and from its namespace
//! silently dropped: no refusal, no reset, only silence) fails over within the caller's
//! deadline; a node restarted with its key on another host while the old host is a black hole
//! replaces the dead instance.
//!
//! Every child process is killed when its guard drops, every namespace is removed when the kit
//! drops, and every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use themis_testkit::netns::{Netns, skip_unless_root};
use themis_testkit::process::{Proc, text};
use themis_testkit::{eventually_ok, within};

const BIN: &str = env!("CARGO_BIN_EXE_themis");
const NET: &str = "netns-test";

/// A node in namespace `i`, listening on the namespace's address, its API on the namespace's
/// loopback.
async fn spawn_node(net: &Netns, i: usize, dir: &Path, name: &str, extra: &[&str]) -> Proc {
    net.spawn_fast_node(i, BIN, dir, name, NET, extra, &[])
        .await
}

/// An upstream inside namespace `i` answering `POST /` with `NAME:body` after `delay`.
fn upstream(net: &Netns, i: usize, name: &'static str, delay: Duration) -> String {
    let listener = net.run_in(i, || std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let app = Router::new().route(
        "/",
        post(move |body: String| async move {
            tokio::time::sleep(delay).await;
            format!("{name}:{body}")
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

/// `themis register SERVICE --upstream URL` on `node` (in namespace `i`), again (for at most
/// 40 s) while the node is joining or its ring stores no replica.
async fn register(net: &Netns, i: usize, node: &Proc, service: &str, upstream: &str) {
    net.register(i, BIN, &node.api(), service, upstream, 160)
        .await;
}

/// A call of `service` through the agent at `api` (a forwarded port) with a deadline.
async fn call(
    http: &reqwest::Client,
    api: SocketAddr,
    service: &str,
    body: &str,
    deadline_ms: u64,
    idempotent: bool,
) -> (u16, String, Duration) {
    let t = Instant::now();
    let r = http
        .post(format!("http://{api}/v1/call/{service}"))
        .header("x-themis-timeout-ms", deadline_ms.to_string())
        .header("x-themis-idempotent", idempotent.to_string())
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    (status, body, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_provider_fails_over_within_the_callers_deadline() {
    if skip_unless_root() {
        return;
    }
    // 0: the seed and the caller; 1: provider a; 2: provider b, black-holed later
    let mut net = Netns::new("themis_bh", &[1, 1, 1]);
    within(240, "black hole failover", async {
        let dir = tempfile::tempdir().unwrap();
        let seed = spawn_node(&net, 0, dir.path(), "seed", &[]).await;
        let contact = seed.get("contact").to_owned();
        let boot = ["--bootstrap", contact.as_str()];
        let a = spawn_node(&net, 1, dir.path(), "a", &boot).await;
        let b = spawn_node(&net, 2, dir.path(), "b", &boot).await;
        let caller = spawn_node(&net, 0, dir.path(), "caller", &boot).await;
        // a answers 30 ms later than b: the caller's balancer (P2C-EWMA) prefers b, so the
        // first calls after the cut go to the black hole and must fail over.
        let up_a = upstream(&net, 1, "a", Duration::from_millis(30));
        let up_b = upstream(&net, 2, "b", Duration::ZERO);
        register(&net, 1, &a, "pair", &up_a).await;
        register(&net, 2, &b, "pair", &up_b).await;
        let api = net.forward(0, caller.api().parse().unwrap());
        let http = reqwest::Client::new();
        // Both providers serve the caller (it holds a session with each).
        eventually_ok(60, "both providers answer the caller", || {
            let http = http.clone();
            async move {
                let mut served = std::collections::HashSet::new();
                for _ in 0..160 {
                    let (status, body, _) = call(&http, api, "pair", "x", 5000, true).await;
                    if status == 200 {
                        served.insert(body);
                    }
                }
                if served.len() == 2 {
                    Ok(())
                } else {
                    Err(format!("served by {served:?}"))
                }
            }
        })
        .await;

        // b is preferred now (its latency is the lower one).
        eventually_ok(30, "b preferred", || {
            let http = http.clone();
            async move {
                let (status, body, _) = call(&http, api, "pair", "x", 5000, true).await;
                (status == 200 && body == "b:x")
                    .then_some(())
                    .ok_or(format!("{status} {body}"))
            }
        })
        .await;
        net.cut(2);
        // Idempotent calls: each is answered by a within the deadline, whichever provider the
        // caller tries first.
        let deadline_ms = 800;
        let mut worst = Duration::ZERO;
        let mut slow = 0;
        for i in 0..40 {
            let (status, body, took) =
                call(&http, api, "pair", &i.to_string(), deadline_ms, true).await;
            assert_eq!(status, 200, "idempotent call {i} after {took:?}: {body}");
            assert_eq!(body, format!("a:{i}"));
            worst = worst.max(took);
            if took > Duration::from_millis(200) {
                slow += 1;
            }
        }
        eprintln!(
            "black hole, {deadline_ms} ms deadline, idempotent: 40 of 40 calls answered; the slowest took {worst:?}; {slow} took over 200 ms (tried b first)"
        );
        // Calls that are not idempotent: answered by a, or (sent to b, which may have run
        // them) a 504 at the deadline; never anything else, never later.
        let (mut ok, mut timed_out) = (0, 0);
        let mut worst = Duration::ZERO;
        for i in 0..40 {
            let (status, body, took) =
                call(&http, api, "pair", &i.to_string(), deadline_ms, false).await;
            match status {
                200 => ok += 1,
                504 => timed_out += 1,
                _ => panic!("call {i}: {status} {body}"),
            }
            worst = worst.max(took);
        }
        eprintln!(
            "black hole, {deadline_ms} ms deadline, not idempotent: {ok} answered, {timed_out} timed out (504); the slowest took {worst:?}"
        );
        assert!(ok >= 30, "{ok} of 40 answered, {timed_out} timed out");
        assert!(slow >= 1, "no call tried the black hole first: the failover was not exercised");

        net.heal(2);
        drop((seed, a, b, caller));
    })
    .await;
}

/// One call of `service` through the agent at `api` (a forwarded port): Ok when `want`
/// answered it.
async fn answered_by(
    http: &reqwest::Client,
    api: SocketAddr,
    service: &str,
    want: &str,
) -> Result<(), String> {
    let (status, body, _) = call(http, api, service, "ping", 2000, false).await;
    if status == 200 && body == format!("{want}:ping") {
        Ok(())
    } else {
        Err(format!("{status} {body}"))
    }
}

/// Issue 11, a crash and a restart with the same key on another host: the dead instance's
/// address is a black hole (its namespace cut), so nothing refuses for it; the restarted node
/// must still not be refused as a duplicate, join, have its service called by the others, and
/// call theirs.
///
/// Before the address checks (PROTOCOL.md §6.15), the restarted node's registration was stored
/// on 0 of 3 replicas for 40 s in 2 of 4 runs: the ring kept routing to the black-holed address.
/// Measured since, 4 of 4 runs: ready 4.0 s after the start (its own collision check waits out
/// its 3 s TCP connect to the old address), stored and called by both others within 30 ms after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_elsewhere_with_its_key_replaces_a_black_holed_instance() {
    if skip_unless_root() {
        return;
    }
    // 0: a (the seed) and c; 1: b's first host, black-holed after b's crash; 2: b's second host
    let mut net = Netns::new("themis_rs", &[1, 1, 1]);
    within(240, "restart elsewhere", async {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("b.key");
        let key = key.to_str().unwrap().to_owned();
        let out = net.run(0, BIN, &["keygen", "--out", &key], &[]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let a = spawn_node(&net, 0, dir.path(), "a", &[]).await;
        let contact = a.get("contact").to_owned();
        let c = spawn_node(&net, 0, dir.path(), "c", &["--bootstrap", &contact]).await;
        let b_args = ["--key", key.as_str(), "--bootstrap", contact.as_str()];
        let mut b = spawn_node(&net, 1, dir.path(), "b", &b_args).await;
        let id = b.get("id").to_owned();
        let up_c = upstream(&net, 0, "c", Duration::ZERO);
        register(&net, 0, &c, "other", &up_c).await;
        register(&net, 1, &b, "held", &upstream(&net, 1, "b", Duration::ZERO)).await;
        let api_a = net.forward(0, a.api().parse().unwrap());
        let api_c = net.forward(0, c.api().parse().unwrap());
        let http = reqwest::Client::new();
        for api in [api_a, api_c] {
            eventually_ok(30, "b's service called", || answered_by(&http, api, "held", "b"))
                .await;
        }

        b.signal("-KILL");
        b.wait(20).await;
        net.cut(1);
        let started = Instant::now();
        b = spawn_node(&net, 2, dir.path(), "b2", &b_args).await;
        assert_eq!(b.get("id"), id);
        let ready = started.elapsed();
        let api_b = net.forward(2, b.api().parse().unwrap());
        let up_b = upstream(&net, 2, "b", Duration::ZERO);
        register(&net, 2, &b, "held", &up_b).await;
        let stored = started.elapsed();
        for api in [api_a, api_c] {
            eventually_ok(40, "the restarted node's service called", || {
                answered_by(&http, api, "held", "b")
            })
            .await;
        }
        let called = started.elapsed();
        eventually_ok(40, "the restarted node calls the others", || {
            answered_by(&http, api_b, "other", "c")
        })
        .await;
        eprintln!(
            "restart with the same key on another host, the old one black-holed: ready after {ready:?}, stored after {stored:?}, called by both after {called:?}, calls theirs after {:?}",
            started.elapsed()
        );
        let err = b.stderr_text();
        assert!(!err.contains("ANOTHER LIVE NODE"), "{err}");
        drop((a, b, c));
    })
    .await;
}
