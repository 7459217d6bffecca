//! Issue 11, a crash and a restart with the same key, with real `themis node` processes: a node
//! SIGKILLed and started again with its key file, at the same port and at another one, replaces
//! the dead instance: the identity-collision check does not refuse it, it joins, its service
//! (registered again) is discovered and called from every other node, and it calls theirs
//! (the others' sessions with the dead instance do not stand in the way).
//!
//! Every child process is killed when its guard drops, and every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use themis_testkit::process::{Proc, free_port, run, spawn_ready, text};
use themis_testkit::{eventually_ok, within};

const BIN: &str = env!("CARGO_BIN_EXE_themis");
const NET: &str = "restart-test";

async fn spawn_node(dir: &Path, name: &str, listen: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "node",
        "--net",
        NET,
        "--fast",
        "--listen",
        listen,
        "--api",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    spawn_ready(BIN, dir, name, &args, &[]).await
}

/// An upstream answering `POST /` with `NAME:body`.
async fn upstream(name: &'static str) -> String {
    let app = Router::new().route(
        "/",
        post(move |body: String| async move { format!("{name}:{body}") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

/// One `themis register` of `service` on `node`: Ok once at least one replica stored it.
async fn register_once(node: &Proc, service: &str, upstream: &str) -> Result<(), String> {
    let api = node.api();
    let out = run(
        BIN,
        &["register", service, "--upstream", upstream, "--api", &api],
        &[],
    )
    .await;
    if out.status.success() {
        Ok(())
    } else {
        Err(text(&out.stderr))
    }
}

/// One call of `service` through `node`'s agent: Ok when `want` answered it.
async fn call_once(
    http: &reqwest::Client,
    node: &Proc,
    service: &str,
    want: &str,
) -> Result<(), String> {
    let r = http
        .post(format!("http://{}/v1/call/{service}", node.api()))
        .header("x-themis-timeout-ms", "2000")
        .body("ping")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body = r.text().await.map_err(|e| e.to_string())?;
    if status == 200 && body == format!("{want}:ping") {
        Ok(())
    } else {
        Err(format!("{status} {body}"))
    }
}

/// Until `b` works as a member again: its registration is stored, `a` and `c` call its
/// service, and it calls `c`'s. Returns when that first held, from `since`.
async fn working_again(
    http: &reqwest::Client,
    (a, b, c): (&Proc, &Proc, &Proc),
    up_b: &str,
    since: Instant,
) -> Duration {
    eventually_ok(40, "the restarted node's service stored", || {
        register_once(b, "held", up_b)
    })
    .await;
    let stored = since.elapsed();
    for from in [a, c] {
        eventually_ok(40, "the restarted node's service called", || {
            call_once(http, from, "held", "b")
        })
        .await;
    }
    let called = since.elapsed();
    eventually_ok(40, "the restarted node calls the others", || {
        call_once(http, b, "other", "c")
    })
    .await;
    let all = since.elapsed();
    eprintln!(
        "  stored after {stored:?}, called by both after {called:?}, calls theirs after {all:?}"
    );
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_its_key_replaces_the_dead_instance() {
    within(240, "crash and restart with the same key", async {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("b.key");
        let key = key.to_str().unwrap().to_owned();
        let out = run(BIN, &["keygen", "--out", &key], &[]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let http = reqwest::Client::new();
        let (up_b, up_c) = (upstream("b").await, upstream("c").await);

        let a = spawn_node(dir.path(), "a", "127.0.0.1:0", &[]).await;
        let contact = a.get("contact").to_owned();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let b_args = ["--key", key.as_str(), "--bootstrap", contact.as_str()];
        let mut b = spawn_node(dir.path(), "b", &listen, &b_args).await;
        let c = spawn_node(dir.path(), "c", "127.0.0.1:0", &["--bootstrap", &contact]).await;
        let id = b.get("id").to_owned();
        eventually_ok(40, "c's service stored", || register_once(&c, "other", &up_c)).await;
        let first = working_again(&http, (&a, &b, &c), &up_b, Instant::now()).await;
        eprintln!("first start: a working member after {first:?}");

        for (round, listen) in [
            ("same port", listen.clone()),
            ("another port", format!("127.0.0.1:{}", free_port())),
        ] {
            b.signal("-KILL");
            b.wait(20).await;
            let started = Instant::now();
            b = spawn_node(dir.path(), &format!("b-{round}"), &listen, &b_args).await;
            assert_eq!(b.get("id"), id);
            let ready = started.elapsed();
            let working = working_again(&http, (&a, &b, &c), &up_b, started).await;
            eprintln!(
                "restart with the same key at {round}: ready after {ready:?}, a working member after {working:?}"
            );
            let err = b.stderr_text();
            assert!(!err.contains("ANOTHER LIVE NODE"), "{err}");
            let st = run(BIN, &["status", "--json", "--api", &b.api()], &[]).await;
            assert!(st.status.success(), "{}", text(&st.stderr));
        }
        b.stop("-TERM").await;
        c.stop("-TERM").await;
        a.stop("-TERM").await;
    })
    .await;
}
