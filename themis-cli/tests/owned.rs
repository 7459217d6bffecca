//! Owned service names with real `themis node` processes (issue 13 item 2, PROTOCOL.md §6.4
//! "Owned names"): `themis owner new` makes an owner key and prints the owned name,
//! `themis delegate` lets one provider node provide it, and `themis register --delegation`
//! announces it. Impostor nodes that try to register the name (without a delegation, with
//! the genuine provider's delegation file, with a delegation of their own key, under an
//! upper-case look-alike) are refused with the reason; the genuine provider is discovered on
//! every node, alone, and called.
//!
//! Every child process is killed when its guard drops, and every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Output;
use std::time::Instant;

use axum::Router;
use axum::routing::post;
use serde_json::Value;
use themis_testkit::process::{Proc, assert_fails, run, spawn_fast_node, text};
use themis_testkit::{eventually_ok, within};

const BIN: &str = env!("CARGO_BIN_EXE_themis");
const NET: &str = "owned-test";

async fn spawn_node(dir: &Path, name: &str, extra: &[&str]) -> Proc {
    spawn_fast_node(BIN, dir, name, NET, extra).await
}

async fn themis(args: &[&str]) -> Output {
    run(BIN, args, &[]).await
}

/// An upstream answering every POST with `who`.
async fn upstream(who: &'static str) -> String {
    let app = Router::new().route("/", post(move || async move { who }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

/// The providers a fresh discovery on `node` lists for `name` (node ids).
async fn providers(http: &reqwest::Client, node: &Proc, name: &str) -> Result<Vec<String>, String> {
    let rsp = http
        .get(format!("http://{}/v1/services/{name}", node.api()))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = rsp.status();
    let v: Value = rsp.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {v}"));
    }
    Ok(v["providers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["node"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostors_cannot_register_an_owned_name_and_its_delegated_provider_is_found_and_called() {
    within(120, "owned names across five processes", async {
        let dir = tempfile::tempdir().unwrap();
        let d = |f: &str| dir.path().join(f).to_string_lossy().into_owned();

        // The owner: a key file (0600) and the owned form of "pay".
        let out = themis(&["owner", "new", "--out", &d("owner.key"), "--label", "pay"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let name = text(&out.stdout).trim().to_owned();
        assert!(name.starts_with("pay~") && name.len() == 4 + 32, "{name}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d("owner.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let genuine = spawn_node(dir.path(), "genuine", &[]).await;
        let contact = genuine.get("contact").to_owned();
        let mut impostors = Vec::new();
        for i in 0..4 {
            impostors.push(spawn_node(dir.path(), &format!("impostor{i}"), &["--bootstrap", &contact]).await);
        }
        let gid = genuine.get("id").to_owned();

        // The owner delegates the name to the genuine provider's node id, for an hour.
        let out = themis(&[
            "delegate", "--owner-key", &d("owner.key"), "--net", NET, "--name", &name,
            "--provider", &gid, "--expires", "1h", "--out", &d("pay.delegation"),
        ])
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        // Another owner key cannot delegate the name.
        let out = themis(&["owner", "new", "--out", &d("other.key")]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = themis(&[
            "delegate", "--owner-key", &d("other.key"), "--net", NET, "--name", &name,
            "--provider", impostors[0].get("id"), "--expires", "1h", "--out", &d("x"),
        ])
        .await;
        assert_fails(&out, 2, &["belongs to owner"]);

        let evil = upstream("impostor").await;
        let good = upstream("genuine").await;
        // Impostors: each way of trying is refused by the impostor's own agent, with the
        // reason (HTTP 403 from the agent, exit 1); nothing is stored.
        let mut refused = 0;
        let started = Instant::now();
        let genuine_file = d("pay.delegation");
        for (i, imp) in impostors.iter().enumerate() {
            let api = imp.api();
            let other_delegation;
            let look_alike;
            let mut args = vec!["register", &name, "--upstream", &evil, "--api", &api];
            let needle = match i {
                0 => "needs a delegation from its owner",
                1 => {
                    // the genuine provider's delegation, copied
                    args.extend(["--delegation", genuine_file.as_str()]);
                    "not signed for this network, name and provider id"
                }
                2 => {
                    // a delegation of the impostor's own owner key, for its own "pay~..."
                    let out = themis(&["owner", "new", "--out", &d("imp.key"), "--label", "pay"]).await;
                    let own_name = text(&out.stdout).trim().to_owned();
                    let out = themis(&[
                        "delegate", "--owner-key", &d("imp.key"), "--net", NET, "--name",
                        &own_name, "--provider", imp.get("id"), "--expires", "1h", "--out",
                        &d("imp.delegation"),
                    ])
                    .await;
                    assert!(out.status.success(), "{}", text(&out.stderr));
                    other_delegation = d("imp.delegation");
                    args.extend(["--delegation", other_delegation.as_str()]);
                    "belongs to owner"
                }
                _ => {
                    // the look-alike name with the fingerprint in upper case
                    look_alike = format!("pay~{}", name[4..].to_ascii_uppercase());
                    args[1] = look_alike.as_str();
                    "upper-case"
                }
            };
            let out = themis(&args).await;
            assert_fails(&out, 1, &[needle]);
            refused += 1;
        }
        // Held back by a health check, it is refused all the same, at once.
        let api0 = impostors[0].api();
        let out = themis(&[
            "register", &name, "--upstream", &evil, "--api", &api0, "--check-ttl", "30s",
        ])
        .await;
        assert_fails(&out, 1, &["needs a delegation from its owner"]);
        refused += 1;
        let refusing = started.elapsed();

        // The genuine provider, with its delegation: stored on all 3 replicas.
        let api = genuine.api();
        let t0 = Instant::now();
        let mut out = themis(&["register", &name, "--upstream", &good, "--api", &api, "--delegation", &genuine_file]).await;
        for _ in 0..40 {
            if text(&out.stdout).contains("stored on 3 of 3") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            out = themis(&["register", &name, "--upstream", &good, "--api", &api, "--delegation", &genuine_file]).await;
        }
        assert!(text(&out.stdout).contains("stored on 3 of 3"), "{} {}", text(&out.stdout), text(&out.stderr));

        // Discovered on every node, and only the genuine provider; a call reaches it.
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        for n in impostors.iter().chain([&genuine]) {
            eventually_ok(30, "discovery lists the genuine provider alone", || async {
                match providers(&http, n, &name).await? {
                    p if p == vec![gid.clone()] => Ok(()),
                    p => Err(format!("providers {p:?}")),
                }
            })
            .await;
        }
        let discovered = t0.elapsed();
        for n in &impostors {
            let body = http
                .post(format!("http://{}/v1/call/{name}", n.api()))
                .body("x")
                .send()
                .await
                .unwrap();
            assert_eq!(body.status().as_u16(), 200);
            assert_eq!(body.text().await.unwrap(), "genuine");
        }
        // An unowned name stays first-come as before: an impostor provides "pay".
        let out = themis(&["register", "pay", "--upstream", &evil, "--api", &api0]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        eprintln!(
            "owned name {name}: {refused} impostor registrations refused in {refusing:?}; the delegated provider registered and discovered, alone, on all 5 nodes {discovered:?} after its registration began"
        );
    })
    .await;
}
