//! Key rotation without a CA (issue 14 item 6, PROTOCOL.md §2.9 and §7.7), with real `themis`
//! processes: a node rotates its key (`themis key rotate`) and restarts with the new one; an
//! allow-list naming its old id still lets it call during the grace period and not after; a
//! node bootstrapping through the old id still joins during the grace period, and is told of an
//! identity mismatch after it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Output;

use themis_testkit::process::{Proc, free_port, run, run_until_ok, spawn_ready, text};
use themis_testkit::{eventually, eventually_ok, within};

const BIN: &str = env!("CARGO_BIN_EXE_themis");

async fn themis(args: &[&str]) -> Output {
    run(BIN, args, &[]).await
}

/// `themis ARGS` until it succeeds (a young ring may store no replica yet: register exits 1).
async fn themis_ok(args: &[&str]) -> Output {
    run_until_ok(BIN, args, 20, |_| true).await
}

async fn node(dir: &Path, name: &str, args: &[&str]) -> Proc {
    let mut all = vec!["node", "--fast", "--net", "rot", "--api", "127.0.0.1:0"];
    all.extend_from_slice(args);
    spawn_ready(BIN, dir, name, &all, &[]).await
}

/// `themis call svc` through the agent at `api`: Ok(body) or Err(stderr).
async fn call(api: &str) -> Result<String, String> {
    let out = themis(&["call", "svc", "hello", "--api", api]).await;
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_node_keeps_its_allow_lists_and_bootstraps_for_the_grace_period() {
    within(150, "key rotation", scenario()).await;
}

async fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = |n: &str| d.join(n).to_str().unwrap().to_owned();
    let up = spawn_ready(
        BIN,
        d,
        "up",
        &["echo", "--listen", "127.0.0.1:0", "--name", "svc"],
        &[],
    )
    .await;
    let provider = node(d, "provider", &["--listen", "127.0.0.1:0"]).await;
    let out = themis(&["keygen", "--out", &path("c.key")]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let c_listen = format!("127.0.0.1:{}", free_port());
    let boot = provider.get("contact").to_owned();
    let caller = node(
        d,
        "caller",
        &[
            "--listen",
            &c_listen,
            "--key",
            &path("c.key"),
            "--bootstrap",
            &boot,
        ],
    )
    .await;
    let old_id = caller.get("id").to_owned();

    // The provider's service is open to the caller's (old) id only.
    let out = themis_ok(&[
        "register",
        "svc",
        "--upstream",
        up.get("echo"),
        "--allow",
        &old_id,
        "--api",
        &provider.api(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually_ok(30, "the caller's first call", || async {
        call(&caller.api()).await.map(|_| ())
    })
    .await;

    // Rotate: stop the node, a new key and its statement, start again with the new key.
    caller.stop("-TERM").await;
    let out = themis(&[
        "key",
        "rotate",
        "--key",
        &path("c.key"),
        "--out",
        &path("c2.key"),
        "--net",
        "rot",
        "--grace",
        "30s",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains(&format!("old id  {old_id}")), "{shown}");
    assert!(Path::new(&path("c2.key.succession")).exists());
    let caller = node(
        d,
        "caller2",
        &[
            "--listen",
            &c_listen,
            "--key",
            &path("c2.key"),
            "--bootstrap",
            &boot,
        ],
    )
    .await;
    let new_id = caller.get("id").to_owned();
    assert_ne!(new_id, old_id);
    assert!(shown.contains(&format!("new id  {new_id}")), "{shown}");

    // During the grace period: the allow-list naming the old id lets the new one in ...
    eventually_ok(15, "the rotated caller's call", || async {
        call(&caller.api()).await.map(|_| ())
    })
    .await;
    // ... discovery maps the old id to the new one (the statement in its provider records) ...
    let out = themis_ok(&[
        "register",
        "own",
        "--upstream",
        up.get("echo"),
        "--api",
        &caller.api(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually_ok(15, "discovery shows the old id", || async {
        let out = themis(&["discover", "own", "--api", &provider.api()]).await;
        let shown = text(&out.stdout);
        if shown.contains(&format!("{new_id} ")) && shown.contains(&format!("succeeds={old_id}")) {
            Ok(())
        } else {
            Err(format!("{shown}{}", text(&out.stderr)))
        }
    })
    .await;
    // ... and a node bootstrapping through the old id joins through the new one.
    let late = node(
        d,
        "late",
        &[
            "--listen",
            "127.0.0.1:0",
            "--bootstrap",
            &format!("{old_id}@{c_listen}"),
        ],
    )
    .await;
    assert!(!late.get("id").is_empty());
    let log = late.stderr_text();
    assert!(!log.contains("mismatch"), "{log}");

    // After the grace period: refused, naming the new id; the old id no longer bootstraps.
    eventually_ok(
        40,
        "the rotated caller refused after the grace period",
        || async {
            match call(&caller.api()).await {
                Err(e) if e.contains("not allowed") && e.contains(&new_id) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let out = themis(&[
        "node",
        "--fast",
        "--net",
        "rot",
        "--api",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--bootstrap",
        &format!("{old_id}@{c_listen}"),
    ])
    .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("identity mismatch"), "{err}");
    for p in [late, caller, provider] {
        p.stop("-TERM").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_of_another_key_network_or_an_expired_one_is_refused_at_start() {
    within(60, "refused statements", async {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let path = |n: &str| d.join(n).to_str().unwrap().to_owned();
        for k in ["a.key", "other.key"] {
            assert!(
                themis(&["keygen", "--out", &path(k)])
                    .await
                    .status
                    .success()
            );
        }
        let rotate = |out: String, net: &'static str, grace: &'static str| {
            let key = path("a.key");
            async move {
                themis(&[
                    "key", "rotate", "--key", &key, "--out", &out, "--net", net, "--grace", grace,
                ])
                .await
            }
        };
        assert!(rotate(path("b.key"), "rot", "7d").await.status.success());
        let signed = std::time::SystemTime::now();
        assert!(rotate(path("c.key"), "rot", "1s").await.status.success());
        let start = |key: String, statement: String, net: &'static str| async move {
            themis(&[
                "node",
                "--fast",
                "--net",
                net,
                "--api",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
                "--key",
                &key,
                "--succession",
                &statement,
            ])
            .await
        };
        let refused = |out: Output, needle: &str| {
            assert!(!out.status.success());
            let err = text(&out.stderr);
            assert!(err.contains(needle), "{needle}: {err}");
        };
        refused(
            start(path("other.key"), path("b.key.succession"), "rot").await,
            "names the successor key",
        );
        refused(
            start(path("b.key"), path("b.key.succession"), "elsewhere").await,
            "is for network 'rot', not for 'elsewhere'",
        );
        // The 1 s grace period of c.key's statement has passed (the wall clock, which the
        // node checks the statement against).
        eventually(10, "the 1 s grace period over", || {
            signed
                .elapsed()
                .is_ok_and(|e| e > std::time::Duration::from_millis(1500))
        })
        .await;
        refused(
            start(path("c.key"), path("c.key.succession"), "rot").await,
            "has expired",
        );
    })
    .await;
}
