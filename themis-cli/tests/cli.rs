//! The `themis` binary end to end: three `themis node` processes that bootstrap from one
//! another, a small HTTP upstream registered through one node's agent API and called through
//! another's; the client subcommands; and clear errors with non-zero exits on bad input.
//!
//! Every child process is killed when its guard drops, and every wait is bounded, so that a
//! hang is a failure with a message, never a stuck CI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use themis_testkit::process::{
    Proc, assert_fails, free_port, free_ports_outside_ephemeral_range, run, run_until_ok,
    spawn_ready, text,
};
use themis_testkit::within;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_themis");

/// Spawns `themis node ARGS` and waits for its `ready` line (stdout).
async fn spawn_node(dir: &Path, name: &str, args: &[&str]) -> Proc {
    let mut all = vec!["node"];
    all.extend_from_slice(args);
    spawn(dir, name, &all).await
}

/// Spawns `themis ARGS` and waits for its `ready` line (stdout).
async fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
    spawn_ready(BIN, dir, name, args, &[]).await
}

/// Runs `themis ARGS` to completion (at most 40 s).
async fn themis(args: &[&str]) -> Output {
    run(BIN, args, &[]).await
}

/// Runs `themis ARGS`, again (up to 20 times, 250 ms apart) while it fails with a transient
/// DHT error ("retry later": a fresh ring still stabilizing; "no provider found": a replica
/// that does not hold a fresh record yet), and asserts success.
async fn themis_ok(args: &[&str]) -> Output {
    run_until_ok(BIN, args, 20, |e| {
        e.contains("retry later") || e.contains("no provider found")
    })
    .await
}

/// POSTs `body` to `url`, again (up to 20 times) while the agent answers 503 (transient).
async fn post_retrying(http: &reqwest::Client, url: &str, body: &'static str) -> reqwest::Response {
    post_retrying_on(http, url, body, &[503]).await
}

/// POSTs `body` to `url`, again (up to 20 times, 250 ms apart) while the status is in `retry`.
async fn post_retrying_on(
    http: &reqwest::Client,
    url: &str,
    body: &'static str,
    retry: &[u16],
) -> reqwest::Response {
    for _ in 0..20 {
        let r = http.post(url).body(body).send().await.unwrap();
        if !retry.contains(&r.status().as_u16()) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("POST {url} kept answering 503");
}

/// A tiny upstream: `POST /hello` answers `hello <body>` and remembers the caller header.
async fn upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let callers = Arc::new(Mutex::new(Vec::new()));
    let seen = callers.clone();
    let app = Router::new().route(
        "/hello",
        post(move |headers: HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                if let Some(c) = headers.get("x-themis-caller") {
                    seen.lock().unwrap().push(c.to_str().unwrap().to_owned());
                }
                format!("hello {body}")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hello"), callers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_register_discover_and_call_through_the_agents() {
    within(90, "the whole three-node scenario", scenario()).await;
}

async fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("a.key");
    let out = themis(&["keygen", "--out", key.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let common = ["--net", "themis-test", "--fast", "--api", "127.0.0.1:0"];
    let with = |extra: &[&str]| {
        let mut v: Vec<String> = common.iter().map(|s| (*s).to_owned()).collect();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let a_args = with(&["--listen", "127.0.0.1:0", "--key", key.to_str().unwrap()]);
    let a = spawn_node(
        dir.path(),
        "a",
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    // The node id from the key file is the one the node runs with.
    let id = themis(&["id", "--key", key.to_str().unwrap(), "--net", "themis-test"]).await;
    assert_eq!(text(&id.stdout).trim(), a.get("id"));
    // B joins through A with A's identity checked (NODEID@HOST:PORT); B listens on every
    // interface and says which address others reach it at ...
    let b_args = with(&[
        "--listen",
        "0.0.0.0:0",
        "--advertise",
        "127.0.0.1",
        "--bootstrap",
        a.get("contact"),
    ]);
    let b = spawn_node(
        dir.path(),
        "b",
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    assert!(b.listen().starts_with("127.0.0.1:"), "{}", b.listen());
    // ... and C through B by host name (HOST:PORT, resolved), on every interface with no
    // --advertise: it advertises the interface that routes to B (the loopback here).
    let b_port = b.listen().rsplit_once(':').unwrap().1.to_owned();
    let b_by_name = format!("localhost:{b_port}");
    let c_args = with(&["--listen", "0.0.0.0:0", "--bootstrap", &b_by_name]);
    let c = spawn_node(
        dir.path(),
        "c",
        &c_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;

    assert!(c.listen().starts_with("127.0.0.1:"), "{}", c.listen());

    let (upstream_url, callers) = upstream().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    // Register the upstream as `hello` through A's agent API.
    let r = http
        .put(format!("http://{}/v1/services/hello", a.api()))
        .json(&serde_json::json!({"upstream": upstream_url, "version": "1.0", "weight": 100, "tags": ["test"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["provider"], a.get("id"));
    assert_eq!(v["replicas"], 3);

    // Call it through C's agent (retrying while the three-node ring settles).
    let mut last = String::new();
    let mut answered = None;
    for _ in 0..60 {
        let r = http
            .post(format!("http://{}/v1/call/hello", c.api()))
            .body("world")
            .send()
            .await
            .unwrap();
        let status = r.status();
        let provider = r
            .headers()
            .get("x-themis-provider")
            .map(|h| h.to_str().unwrap().to_owned());
        let body = r.text().await.unwrap();
        if status == 200 {
            answered = Some((body, provider));
            break;
        }
        last = format!("{status}: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (body, provider) = answered.unwrap_or_else(|| panic!("call never succeeded: {last}"));
    assert_eq!(body, "hello world");
    assert_eq!(provider.as_deref(), Some(a.get("id")));
    // The sidecar told the upstream who called: C's authenticated node id.
    assert!(
        callers
            .lock()
            .unwrap()
            .iter()
            .any(|c_id| c_id == c.get("id"))
    );

    // `themis discover` through C finds A, with the replica object ids.
    let out = themis_ok(&["discover", "hello", "--api", &c.api()]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains(a.get("id")), "{stdout}");
    assert!(stdout.contains("version=1.0"), "{stdout}");
    assert_eq!(stdout.matches("r=").count(), 3, "{stdout}");
    let out = themis_ok(&["discover", "hello", "--json", "--api", &c.api()]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["providers"][0]["node"], a.get("id"));
    assert_eq!(v["replicas"].as_array().unwrap().len(), 3);

    // `themis call` through B: the body on stdout, the provider on stderr with -v.
    let out = themis_ok(&["call", "hello", "again", "-v", "--api", &b.api()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello again");
    assert!(text(&out.stderr).contains(&format!("provider: {}", a.get("id"))));
    let data = dir.path().join("body");
    std::fs::write(&data, "from a file").unwrap();
    let out = themis_ok(&[
        "call",
        "hello",
        "--data-file",
        data.to_str().unwrap(),
        "--api",
        &b.api(),
    ])
    .await;
    assert_eq!(text(&out.stdout), "hello from a file");

    // `themis status` through B.
    let out = themis(&["status", "--api", &b.api()]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains(b.get("id")), "{stdout}");
    assert!(stdout.contains("themis-test (secure)"), "{stdout}");
    let st: serde_json::Value = http
        .get(format!("http://{}/v1/status", a.api()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["services"], serde_json::json!(["hello"]));
    assert!(!st["successors"].as_array().unwrap().is_empty(), "{st}");

    // Metrics on A: the sidecar forwarded the calls.
    let m = http
        .get(format!("http://{}/metrics", a.api()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // OpenMetrics (prometheus-client): a counter family is named without `_total`, its
    // samples with it.
    assert!(
        m.contains("# TYPE themis_mesh_upstream_forwards counter"),
        "{m}"
    );
    let forwarded: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("themis_mesh_upstream_forwards_total{outcome=\"ok\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(forwarded >= 3, "{m}");

    // Errors: an unknown service, from the CLI and the API.
    let mut out = themis(&["discover", "nothere", "--api", &c.api()]).await;
    for _ in 0..20 {
        if !text(&out.stderr).contains("retry later") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        out = themis(&["discover", "nothere", "--api", &c.api()]).await;
    }
    assert_fails(
        &out,
        1,
        &["no provider found for 'nothere' after searching its 3 replicas"],
    );
    let r = post_retrying(&http, &format!("http://{}/v1/call/nothere", c.api()), "").await;
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("no provider found"),
        "{v}"
    );
    // A body over the agent's limit.
    let r = http
        .post(format!("http://{}/v1/call/hello", c.api()))
        .body(vec![0u8; (1 << 20) + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // A bad registration.
    let r = http
        .put(format!("http://{}/v1/services/x", a.api()))
        .body("{\"upstream\": \"https://example.invalid\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // An upstream that is down: the caller gets a 502 naming it.
    let dead = format!("http://127.0.0.1:{}/", free_port());
    // (A young ring may store no replica yet: `register` then exits 1, issue 11; again.)
    let out = run_until_ok(
        BIN,
        &["register", "broken", "--upstream", &dead, "--api", &a.api()],
        20,
        |e| e.contains("stored on 0 of"),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // (Right after registering, a replica may not hold the record yet: 404 is retried.)
    let r = post_retrying_on(
        &http,
        &format!("http://{}/v1/call/broken", a.api()),
        "",
        &[404, 503],
    )
    .await;
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 502, "{v}");
    assert!(v["error"].as_str().unwrap().contains("unreachable"), "{v}");

    // Ports in use: A's endpoint, A's API.
    let out = themis(&[
        "node",
        "--net",
        "themis-test",
        "--listen",
        &a.listen(),
        "--api",
        "127.0.0.1:0",
    ])
    .await;
    assert_fails(&out, 1, &["cannot listen on", "in use"]);
    // ... said once (issue 14: the address and the cause were repeated).
    assert_eq!(
        text(&out.stderr).matches("cannot listen on").count(),
        1,
        "{}",
        text(&out.stderr)
    );
    let out = themis(&[
        "node",
        "--net",
        "themis-test",
        "--listen",
        "127.0.0.1:0",
        "--api",
        &a.api(),
    ])
    .await;
    assert_fails(&out, 1, &["for the agent API", "pick another address"]);

    // Deregister through the CLI; a second time is a clear 404.
    let out = themis(&["deregister", "hello", "--api", &a.api()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = themis(&["deregister", "hello", "--api", &a.api()]).await;
    assert_fails(&out, 1, &["does not provide 'hello'"]);
    // Ctrl-C / SIGTERM: the nodes leave gracefully and exit 0.
    c.stop("-TERM").await;
    b.stop("-INT").await;
    a.stop("-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_four_nodes_serves_node_0s_api() {
    within(60, "the cluster scenario", cluster()).await;
}

async fn cluster() {
    let dir = tempfile::tempdir().unwrap();
    // Four consecutive ports from a free one (a collision with another process is unlikely;
    // the node's "cannot listen" error would say so).
    let base = format!("127.0.0.1:{}", free_ports_outside_ephemeral_range(4));
    let args = [
        "cluster",
        "--nodes",
        "4",
        "--net",
        "themis-cluster",
        "--fast",
        "--listen-base",
        &base,
        "--api",
        "127.0.0.1:0",
    ];
    let cl = spawn(dir.path(), "cluster", &args).await;
    assert_eq!(cl.get("nodes"), "4");
    assert_eq!(cl.listen(), base);
    let (upstream_url, _) = upstream().await;
    let out = themis(&[
        "register",
        "hello",
        "--upstream",
        &upstream_url,
        "--version",
        "2.0",
        "--tag",
        "a",
        "--api",
        &cl.api(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Node 0 provides and calls its own service (run locally, not over the network).
    let out = themis_ok(&["call", "hello", "me", "-v", "--api", &cl.api()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello me");
    assert!(text(&out.stderr).contains(&format!("provider: {}", cl.get("id"))));
    let out = themis(&["status", "--json", "--api", &cl.api()]).await;
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["id"], cl.get("id"));
    assert_eq!(st["state"], "member");
    cl.stop("-INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_a_clear_message_and_a_non_zero_exit() {
    within(60, "the bad-input checks", bad_input()).await;
}

async fn bad_input() {
    let dir = tempfile::tempdir().unwrap();
    // Usage errors (clap): exit 2.
    assert_fails(&themis(&[]).await, 2, &["Usage"]);
    assert_fails(&themis(&["node", "--net", "x"]).await, 2, &["--listen"]);
    assert_fails(
        &themis(&["frobnicate"]).await,
        2,
        &["unrecognized subcommand"],
    );
    for sub in [
        "keygen",
        "id",
        "node",
        "cluster",
        "register",
        "deregister",
        "discover",
        "call",
        "status",
    ] {
        let out = themis(&[sub, "--help"]).await;
        assert!(out.status.success(), "{sub} --help");
        assert!(text(&out.stdout).contains("Usage: themis"), "{sub}");
    }
    let free = format!("127.0.0.1:{}", free_port());
    let node = |extra: &[&str]| {
        let mut v = vec!["node", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"];
        v.extend_from_slice(extra);
        v.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>()
    };
    let run = |v: Vec<String>| async move {
        themis(&v.iter().map(String::as_str).collect::<Vec<_>>()).await
    };
    // An address to advertise that nobody can dial, or that does not resolve.
    // (Invalid values are bad usage, exit code 2, like clap's own errors: issue 14.)
    assert_fails(
        &run(node(&["--net", "t", "--advertise", "0.0.0.0"])).await,
        2,
        &["--advertise", "cannot dial"],
    );
    assert_fails(
        &run(node(&["--net", "t", "--advertise", "no-such-host.invalid"])).await,
        2,
        &["--advertise", "cannot resolve"],
    );
    // An invalid network name.
    assert_fails(
        &run(node(&["--net", " padded"])).await,
        2,
        &["invalid network id", "whitespace"],
    );
    assert_fails(
        &themis(&["id", "--key", "k", "--net", ""]).await,
        2,
        &["invalid network id"],
    );
    // A missing key file, a foreign one.
    let missing = dir.path().join("missing.key");
    assert_fails(
        &run(node(&["--net", "t", "--key", missing.to_str().unwrap()])).await,
        1,
        &["missing.key", "does not exist", "themis keygen"],
    );
    let foreign = dir.path().join("foreign.key");
    std::fs::write(&foreign, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    std::fs::set_permissions(
        &foreign,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    assert_fails(
        &themis(&["id", "--key", foreign.to_str().unwrap(), "--net", "t"]).await,
        1,
        &["foreign.key", "not a themis identity key file"],
    );
    // keygen refuses to overwrite.
    let key = dir.path().join("k");
    let out = themis(&["keygen", "--out", key.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public = text(&out.stdout);
    assert_eq!(public.trim().len(), 64, "{public}");
    assert!(
        public.trim().bytes().all(|b| b.is_ascii_hexdigit()),
        "{public}"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert_fails(
        &themis(&["keygen", "--out", key.to_str().unwrap()]).await,
        1,
        &["--force"],
    );
    // Bootstrap addresses: garbage, and nobody there.
    assert_fails(
        &run(node(&["--net", "t", "--bootstrap", "nonsense"])).await,
        1,
        &["invalid bootstrap address 'nonsense'"],
    );
    assert_fails(
        &run(node(&["--net", "t", "--bootstrap", "abcd@127.0.0.1:1"])).await,
        1,
        &["invalid bootstrap address"],
    );
    assert_fails(
        &run(node(&["--net", "t", "--bootstrap", &free])).await,
        1,
        &["cannot join the ring through", "unreachable"],
    );
    // No agent running.
    for args in [
        vec!["status", "--api", free.as_str()],
        vec!["discover", "x", "--api", free.as_str()],
        vec!["call", "x", "hi", "--api", free.as_str()],
    ] {
        assert_fails(
            &themis(&args).await,
            1,
            &[
                &format!("no themis agent at {free}"),
                "is `themis node` running?",
            ],
        );
    }
    // THEMIS_API is read too.
    let out = Command::new(BIN)
        .args(["status"])
        .env("THEMIS_API", &free)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = within(20, "status with THEMIS_API", out).await.unwrap();
    assert_fails(&out, 1, &[&format!("no themis agent at {free}")]);
    // cluster: nonsense sizes.
    assert_fails(
        &themis(&[
            "cluster",
            "--nodes",
            "0",
            "--net",
            "t",
            "--listen-base",
            "127.0.0.1:7000",
        ])
        .await,
        2,
        &["--nodes", "not in 1..=2000"],
    );
}
