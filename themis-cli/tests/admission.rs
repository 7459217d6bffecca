//! Closed networks (issue 13 item 3, PROTOCOL.md §2.10) with real `themis` processes: a node
//! joins a closed ring only with a certificate from the network's admission key. An
//! uncertified node of the same network name is refused with a clear error on both sides; a
//! node without a valid certificate of its own refuses to start; a certified node joins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Output;

use themis_testkit::process::{assert_fails, run, spawn_ready, text};
use themis_testkit::{eventually, eventually_ok, within};

const BIN: &str = env!("CARGO_BIN_EXE_themis");
const NET: &str = "closed-net";

async fn themis(args: &[&str]) -> Output {
    run(BIN, args, &[]).await
}

async fn ok(args: &[&str]) -> String {
    let out = themis(args).await;
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// `themis node --fast --net NET ARGS` to completion (a node expected not to start).
async fn node_fails(args: &[&str]) -> Output {
    let mut all = vec!["node", "--fast", "--net", NET, "--api", "127.0.0.1:0"];
    all.extend_from_slice(args);
    run(BIN, &all, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_certified_nodes_join_a_closed_ring() {
    within(120, "closed network", scenario()).await;
}

async fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = |n: &str| d.join(n).to_str().unwrap().to_owned();

    // The admission key, three node keys, ids on the closed network, certificates for a and b.
    let ak = ok(&["admission", "keygen", "--out", &path("ak.key")]).await;
    let ak = ak.trim().to_owned();
    assert_eq!(ak.len(), 64, "{ak}");
    for n in ["a", "b", "u"] {
        ok(&["keygen", "--out", &path(&format!("{n}.key"))]).await;
    }
    let id = |n: &'static str| {
        let (key, ak) = (path(&format!("{n}.key")), ak.clone());
        async move {
            ok(&["id", "--key", &key, "--net", NET, "--admission-key", &ak])
                .await
                .trim()
                .to_owned()
        }
    };
    let (a_id, b_id) = (id("a").await, id("b").await);
    let open_a = ok(&["id", "--key", &path("a.key"), "--net", NET]).await;
    assert_ne!(
        open_a.trim(),
        a_id,
        "the closed network binds the admission key"
    );
    for (n, nid) in [("a", &a_id), ("b", &b_id)] {
        ok(&[
            "admission",
            "issue",
            "--key",
            &path("ak.key"),
            "--net",
            NET,
            "--node-id",
            nid,
            "--valid",
            "1h",
            "--out",
            &path(&format!("{n}.cert")),
        ])
        .await;
    }

    // A node of the closed network without a certificate, or with another node's, refuses to
    // start, saying why.
    let out = node_fails(&[
        "--listen",
        "127.0.0.1:0",
        "--key",
        &path("u.key"),
        "--admission-key",
        &ak,
    ])
    .await;
    assert_fails(
        &out,
        2,
        &["--admission-cert", "is closed", "themis admission issue"],
    );
    let out = node_fails(&[
        "--listen",
        "127.0.0.1:0",
        "--key",
        &path("u.key"),
        "--admission-key",
        &ak,
        "--admission-cert",
        &path("a.cert"),
    ])
    .await;
    assert_fails(&out, 1, &["a.cert", "admits another node"]);

    // A certified node's arguments: its key NAME.key and certificate NAME.cert.
    let certified = |name: &str| -> Vec<String> {
        let (key, cert) = (path(&format!("{name}.key")), path(&format!("{name}.cert")));
        [
            "node",
            "--fast",
            "--net",
            NET,
            "--api",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--key",
            &key,
            "--admission-key",
            &ak,
            "--admission-cert",
            &cert,
        ]
        .map(String::from)
        .to_vec()
    };
    // The closed ring's first node logs refused handshakes (debug level).
    let args = certified("a");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = spawn_ready(
        BIN,
        d,
        "a",
        &args,
        &[("RUST_LOG", "info,themis_channel=debug")],
    )
    .await;
    assert_eq!(a.get("id"), a_id);
    let boot = a.listen();

    // An uncertified node of the open network of the same name cannot join through it: a clear
    // error on its side ...
    let out = node_fails(&[
        "--listen",
        "127.0.0.1:0",
        "--key",
        &path("u.key"),
        "--bootstrap",
        &boot,
    ])
    .await;
    assert_fails(&out, 1, &["network mismatch", "admission"]);
    // ... and on the closed node's.
    eventually(10, "the closed node logs the refused handshake", || {
        let err = a.stderr_text();
        err.contains("message 1 refused")
            && err.contains("'closed-net' (open)")
            && err.contains("'closed-net' (closed, admission key")
    })
    .await;

    // A certified node joins (its ready line comes after the join through a).
    let mut args = certified("b");
    args.extend(["--bootstrap".to_owned(), boot.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let b = spawn_ready(BIN, d, "b", &args, &[]).await;
    assert_eq!(b.get("id"), b_id);
    let a_api = a.api();
    eventually_ok(30, "both certified nodes in the ring", || {
        let (api, a_id, b_id) = (a_api.clone(), a_id.clone(), b_id.clone());
        async move {
            let out = themis(&["members", "--api", &api]).await;
            let m = text(&out.stdout);
            if m.contains(&a_id[..8]) && m.contains(&b_id[..8]) {
                Ok(())
            } else {
                Err(format!("{m}{}", text(&out.stderr)))
            }
        }
    })
    .await;
    b.stop("-TERM").await;
    a.stop("-TERM").await;
}
