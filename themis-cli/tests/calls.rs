//! Calls reach a healthy provider (issue 12), with real `themis node` processes and HTTP
//! upstreams: a provider whose upstream is down fails over and is ejected; a provider whose port
//! refuses connections (SIGKILLed) costs no timeout; a slow non-idempotent POST reaches its
//! upstream exactly once; an upstream's 4xx comes back with its status; a service whose upstream
//! calls itself through the mesh is refused after the hop bound with bounded descriptors.
//!
//! Every child process is killed when its guard drops, and every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use themis_testkit::process::{Proc, free_port, run, run_until_ok, spawn_fast_node, text};
use themis_testkit::{eventually_ok, within};

const BIN: &str = env!("CARGO_BIN_EXE_themis");

async fn spawn_node(dir: &Path, name: &str, extra: &[&str]) -> Proc {
    spawn_fast_node(BIN, dir, name, "themis-test", extra).await
}

/// A ring of `n` nodes, each but the first bootstrapping from the first; `extra` flags on all.
async fn ring(dir: &Path, n: usize, extra: &[&str]) -> Vec<Proc> {
    let first = spawn_node(dir, "n0", extra).await;
    let contact = first.get("contact").to_owned();
    let mut nodes = vec![first];
    for i in 1..n {
        let mut args = vec!["--bootstrap", contact.as_str()];
        args.extend_from_slice(extra);
        nodes.push(spawn_node(dir, &format!("n{i}"), &args).await);
    }
    nodes
}

/// An upstream answering `POST /` with `status` and `NAME:body` after `delay`; counts its hits.
async fn upstream(
    name: &'static str,
    status: StatusCode,
    delay: Duration,
) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let app = Router::new().route(
        "/",
        post(move |body: String| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                (status, format!("{name}:{body}"))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/"), hits)
}

/// Registers `service` on `node`, again while a young ring stores no replica (`register`
/// then exits 1, issue 11).
async fn register(node: &Proc, service: &str, upstream: &str) {
    let out = run_until_ok(
        BIN,
        &[
            "register",
            service,
            "--upstream",
            upstream,
            "--api",
            &node.api(),
        ],
        20,
        |e| e.contains("stored on 0 of"),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Waits until `node` discovers `n` providers of `service`.
async fn discovered(http: &reqwest::Client, node: &Proc, service: &str, n: usize) {
    let url = format!("http://{}/v1/services/{service}", node.api());
    eventually_ok(30, "providers discovered", || async {
        let r = http.get(&url).send().await.map_err(|e| e.to_string())?;
        let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
        match v["providers"].as_array() {
            Some(p) if p.len() == n => Ok(()),
            _ => Err(format!("{v}")),
        }
    })
    .await;
}

/// The value of `family{outcome="error"}` in `node`'s metrics (0 if absent).
async fn errors(http: &reqwest::Client, node: &Proc, family: &str) -> u64 {
    let m = http
        .get(format!("http://{}/metrics", node.api()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = format!("{family}{{outcome=\"error\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

async fn call(http: &reqwest::Client, node: &Proc, service: &str, body: &str) -> reqwest::Response {
    http.post(format!("http://{}/v1/call/{service}", node.api()))
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_providers_with_a_dead_upstream_fails_over_and_is_ejected() {
    within(180, "dead upstream", async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = ring(dir.path(), 3, &[]).await;
        let http = reqwest::Client::new();
        let (good, _) = upstream("good", StatusCode::OK, Duration::ZERO).await;
        let dead = format!("http://127.0.0.1:{}/", free_port());
        register(&nodes[0], "multi", &good).await;
        register(&nodes[1], "multi", &dead).await;
        discovered(&http, &nodes[2], "multi", 2).await;
        let (mut ok, total) = (0, 1000);
        for i in 0..total {
            let r = call(&http, &nodes[2], "multi", &i.to_string()).await;
            if r.status() == 200 {
                assert_eq!(r.text().await.unwrap(), format!("good:{i}"));
                ok += 1;
            }
        }
        let failed_forwards = errors(&http, &nodes[1], "themis_mesh_upstream_forwards_total").await;
        eprintln!(
            "one of two providers broken: {ok}/{total} calls succeeded ({:.2} % errors); the broken provider forwarded {failed_forwards} calls to its dead upstream",
            100.0 * f64::from(total - ok) / f64::from(total)
        );
        assert!(ok * 100 >= total * 99, "{ok} of {total} calls succeeded");
        // Ejected after at most its consecutive_failures (5): no later call reached it within
        // the 30 s cooldown (P2C may also never pick it again after its first failure).
        assert!(
            failed_forwards <= 5,
            "the broken provider was tried {failed_forwards} times"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_provider_fails_over_at_once_on_its_refused_port() {
    within(180, "refused port", async {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = ring(dir.path(), 4, &[]).await;
        let http = reqwest::Client::new();
        let (a, _) = upstream("a", StatusCode::OK, Duration::ZERO).await;
        let (b, _) = upstream("b", StatusCode::OK, Duration::ZERO).await;
        register(&nodes[1], "pair", &a).await;
        register(&nodes[2], "pair", &b).await;
        discovered(&http, &nodes[3], "pair", 2).await;
        // Both providers serve the caller (it holds a session with each).
        let mut served = std::collections::HashSet::new();
        for _ in 0..200 {
            let r = call(&http, &nodes[3], "pair", "x").await;
            served.insert(r.text().await.unwrap());
            if served.len() == 2 {
                break;
            }
        }
        assert_eq!(served.len(), 2, "{served:?}");
        // SIGKILL provider b: its port refuses connections; its records stay in the DHT.
        nodes[2].signal("-KILL");
        nodes[2].wait(20).await;
        let mut worst = Duration::ZERO;
        for i in 0..50 {
            let t = Instant::now();
            // Non-idempotent POSTs: they fail over only because the refused command never left.
            let r = call(&http, &nodes[3], "pair", &i.to_string()).await;
            let took = t.elapsed();
            worst = worst.max(took);
            let status = r.status();
            assert_eq!(status, 200, "call {i}: {}", r.text().await.unwrap());
            assert_eq!(r.text().await.unwrap(), format!("a:{i}"));
            // Far below the 5 s request timeout: the refusal ended the attempt, not a timeout.
            assert!(took < Duration::from_millis(2500), "call {i} took {took:?}");
        }
        eprintln!("after SIGKILL of a provider: the slowest of 50 calls took {worst:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_non_idempotent_post_reaches_its_upstream_exactly_once() {
    within(180, "slow POST", async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = ring(dir.path(), 3, &["--upstream-timeout", "1"]).await;
        let http = reqwest::Client::new();
        let (slow, hits) = upstream("slow", StatusCode::OK, Duration::from_secs(3)).await;
        register(&nodes[0], "slow", &slow).await;
        register(&nodes[1], "slow", &slow).await;
        discovered(&http, &nodes[2], "slow", 2).await;
        let r = call(&http, &nodes[2], "slow", "once").await;
        assert_eq!(r.status(), 504, "{}", r.text().await.unwrap());
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "a timed-out POST was sent again"
        );
        // Marked idempotent, the same call is failed over after the timeout.
        let r = http
            .post(format!("http://{}/v1/call/slow", nodes[2].api()))
            .header("x-themis-idempotent", "true")
            .body("again")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 504);
        assert!(
            hits.load(Ordering::SeqCst) >= 3,
            "an idempotent call was not retried"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_4xx_comes_back_with_its_status_and_counts_as_an_answer() {
    within(120, "4xx", async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = ring(dir.path(), 2, &[]).await;
        let http = reqwest::Client::new();
        let (denying, hits) = upstream("denied", StatusCode::UNAUTHORIZED, Duration::ZERO).await;
        register(&nodes[0], "guarded", &denying).await;
        discovered(&http, &nodes[1], "guarded", 1).await;
        let r = call(&http, &nodes[1], "guarded", "me").await;
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("x-themis-provider"));
        assert_eq!(r.text().await.unwrap(), "denied:me");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "a caller error is not failed over"
        );
        assert_eq!(
            errors(&http, &nodes[0], "themis_mesh_upstream_forwards_total").await,
            0
        );
    })
    .await;
}

/// Open descriptors of process `pid`.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_looping_service_is_refused_after_the_hop_bound() {
    if !Path::new("/proc/self/fd").exists() {
        eprintln!("skipped: no /proc to count descriptors");
        return;
    }
    within(120, "self loop", async {
        let dir = tempfile::tempdir().unwrap();
        let nodes = ring(dir.path(), 1, &[]).await;
        let node = &nodes[0];
        let http = reqwest::Client::new();
        // The service's upstream is its own agent's call route: every call calls itself.
        let own = format!("http://{}/v1/call/loop", node.api());
        register(node, "loop", &own).await;
        discovered(&http, node, "loop", 1).await;
        let before = descriptors(node.pid());
        let r = call(&http, node, "loop", "x").await;
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, 508, "{body}");
        assert!(body.contains("nested in 9 calls"), "{body}");
        assert!(body.contains("limit of 8"), "{body}");
        let after = descriptors(node.pid());
        eprintln!("self loop: refused after the hop bound; descriptors {before} -> {after}");
        // Nine nested HTTP calls hold a few descriptors each, not thousands.
        assert!(after < before + 100, "descriptors {before} -> {after}");
    })
    .await;
}

/// An upstream that answers after `delay` and says whether its request ended early: the
/// counters of requests that completed and of requests dropped before their answer.
async fn watched_upstream(delay: Duration) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    struct Watch(Arc<AtomicUsize>, bool);
    impl Drop for Watch {
        fn drop(&mut self) {
            if !self.1 {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let (done, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (d, x) = (done.clone(), dropped.clone());
    let app = Router::new().route(
        "/",
        post(move || {
            let (d, x) = (d.clone(), x.clone());
            async move {
                let mut w = Watch(x, false);
                tokio::time::sleep(delay).await;
                w.1 = true;
                d.fetch_add(1, Ordering::SeqCst);
                "late"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/"), done, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_deadline_ends_the_call_and_cuts_the_upstream() {
    within(120, "deadline", async {
        let dir = tempfile::tempdir().unwrap();
        // --fast: the mesh's request timeout and the upstream timeout are 1 s; the upstream
        // answers after 5 s; the caller gives the call 300 ms.
        let nodes = ring(dir.path(), 2, &["--upstream-timeout", "1"]).await;
        let http = reqwest::Client::new();
        let (slow, done, dropped) = watched_upstream(Duration::from_secs(5)).await;
        register(&nodes[0], "late", &slow).await;
        discovered(&http, &nodes[1], "late", 1).await;
        let t = Instant::now();
        let r = http
            .post(format!(
                "http://{}/v1/call/late?timeout_ms=300",
                nodes[1].api()
            ))
            .body("x")
            .send()
            .await
            .unwrap();
        let took = t.elapsed();
        let status = r.status();
        let body = r.text().await.unwrap();
        eprintln!("a 300 ms deadline ended the call after {took:?}: {status} {body}");
        assert_eq!(status, 504, "{body}");
        // The caller's deadline, or the provider's cut at the budget it was sent, whichever
        // is seen first.
        assert!(
            body.contains("deadline") || body.contains("did not answer within"),
            "{body}"
        );
        // Ended by the caller's 300 ms, not by the mesh's or the upstream's 1 s.
        assert!(took < Duration::from_millis(900), "{took:?}");
        // The provider cut its upstream at the budget: the upstream's request was dropped
        // before it could answer (at 5 s).
        eventually_ok(4, "the upstream's request dropped", || async {
            match (dropped.load(Ordering::SeqCst), done.load(Ordering::SeqCst)) {
                (1, 0) => Ok(()),
                other => Err(format!("(dropped, done) = {other:?}")),
            }
        })
        .await;
        // The header works the same way.
        let r = http
            .post(format!("http://{}/v1/call/late", nodes[1].api()))
            .header("x-themis-timeout-ms", "200")
            .body("y")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 504);
    })
    .await;
}

#[tokio::test]
async fn contradictory_flags_are_refused_with_a_clear_error() {
    let out = run(
        BIN,
        &[
            "node",
            "--net",
            "t",
            "--listen",
            "127.0.0.1:0",
            "--upstream-timeout",
            "10",
        ],
        &[],
    )
    .await;
    themis_testkit::process::assert_fails(
        &out,
        2,
        &["upstream-timeout", "above the mesh's request timeout"],
    );
    let out = run(
        BIN,
        &[
            "node",
            "--net",
            "t",
            "--listen",
            "127.0.0.1:0",
            "--max-body",
            "0",
        ],
        &[],
    )
    .await;
    themis_testkit::process::assert_fails(&out, 2, &["max-body", "at least 1"]);
}
