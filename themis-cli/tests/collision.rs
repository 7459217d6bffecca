//! Issue 11, identity collisions, with real `themis node` processes: a second node started
//! with a key that a live member runs with is refused (exit 1, naming the member's address)
//! and the member is not disturbed.
//!
//! Every child process is killed when its guard drops, and every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use themis_testkit::process::{Proc, run, spawn_ready, text};
use themis_testkit::within;

const BIN: &str = env!("CARGO_BIN_EXE_themis");
const NET: &str = "collision-test";

fn node_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![
        "node",
        "--net",
        NET,
        "--fast",
        "--listen",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(extra);
    all
}

async fn spawn_node(dir: &Path, name: &str, extra: &[&str]) -> Proc {
    spawn_ready(BIN, dir, name, &node_args(extra), &[]).await
}

async fn themis(args: &[&str]) -> Output {
    run(BIN, args, &[]).await
}

/// `themis register NAME` on `node` until a replica stores it, then `themis discover NAME`
/// through `from` until `provider` is listed.
async fn provided_and_found(node: &Proc, from: &Proc, name: &str, provider: &str) {
    let (api, from_api) = (node.api(), from.api());
    for _ in 0..40 {
        let out = themis(&[
            "register",
            name,
            "--upstream",
            "http://127.0.0.1:9/",
            "--api",
            &api,
        ])
        .await;
        if out.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for _ in 0..40 {
        let out = themis(&["discover", name, "--json", "--api", &from_api]).await;
        if out.status.success() && text(&out.stdout).contains(provider) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{name} by {provider} never discovered through {from_api}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_a_live_members_key_is_refused_and_the_member_undisturbed() {
    within(90, "identity collision", async {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("b.key");
        let key = key.to_str().unwrap();
        assert!(themis(&["keygen", "--out", key]).await.status.success());
        let a = spawn_node(dir.path(), "a", &[]).await;
        let b = spawn_node(
            dir.path(),
            "b",
            &["--key", key, "--bootstrap", a.get("contact")],
        )
        .await;
        let c = spawn_node(dir.path(), "c", &["--bootstrap", a.get("contact")]).await;
        provided_and_found(&b, &a, "kept", b.get("id")).await;

        // the same key again, at another port, through C, while B may still be settling in:
        // C may adopt the newcomer as its predecessor before B (a race that made B stop in
        // about 1 in 20 runs before the ring's answer for the id decided, see join.rs)
        let started = Instant::now();
        let out = themis(&node_args(&["--key", key, "--bootstrap", c.get("contact")])).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("another live node already runs as")
                && err.contains(b.get("id"))
                && err.contains(&b.listen()),
            "{err}"
        );
        println!("duplicate refused after {:?}", started.elapsed());
        // B is still the member with that id, and still provides its service
        let st = themis(&["status", "--json", "--api", &b.api()]).await;
        assert!(st.status.success(), "{}", text(&st.stderr));
        provided_and_found(&b, &c, "kept", b.get("id")).await;
        assert!(
            !b.stderr_text().contains("ANOTHER LIVE NODE"),
            "{}",
            b.stderr_text()
        );
        b.stop("-TERM").await;
        c.stop("-TERM").await;
        a.stop("-TERM").await;
    })
    .await;
}
