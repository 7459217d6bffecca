//! Health checks (issue 12 item 5) with real `themis node` processes: a provider whose check
//! turns critical is withdrawn from discovery on every node within one check interval plus one
//! discovery-cache TTL, and comes back when the check passes again: an HTTP check on an
//! upstream the test toggles, a TTL check whose heartbeats stop, a TCP check on a port that
//! closes. Also `GET /v1/health/service/{name}`, the check metrics and the refusal of
//! contradicting `themis register --check-*` flags.
//!
//! Every child process is killed when its guard drops, and every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::Value;
use themis_testkit::process::{Proc, assert_fails, run, run_until_ok, spawn_fast_node, text};
use themis_testkit::{eventually_ok, within};

const BIN: &str = env!("CARGO_BIN_EXE_themis");
/// The discovery cache's TTL with `--fast` (`MeshConfig::fast`).
const CACHE_TTL: Duration = Duration::from_secs(2);
/// The checks' interval (and the TTL of the TTL check).
const INTERVAL: Duration = Duration::from_millis(500);
/// Slack for a loaded machine (3 node processes and the test on 2 shared cores): the DHT
/// lookups of the withdrawal and of the checks' discoveries.
const SLACK: Duration = Duration::from_secs(4);

async fn spawn_node(dir: &Path, name: &str, extra: &[&str]) -> Proc {
    spawn_fast_node(BIN, dir, name, "health-test", extra).await
}

/// An upstream answering `POST /` with `ok` and `GET /health` with 200 or 503 as `healthy`.
async fn upstream(healthy: Arc<AtomicBool>) -> String {
    let app = Router::new().route("/", post(|| async { "ok" })).route(
        "/health",
        get(move || {
            let h = healthy.load(Ordering::SeqCst);
            async move {
                if h {
                    (StatusCode::OK, "fine")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "database down")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn register(node: &Proc, args: &[&str]) -> String {
    let api = node.api();
    let mut all = vec!["register"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--api", &api]);
    let out = run_until_ok(BIN, &all, 40, |e| e.contains("stored on 0 of")).await;
    text(&out.stdout)
}

/// A call through `node`'s discovery cache, then a fresh discovery: their statuses and the
/// number of providers discovered.
async fn look(http: &reqwest::Client, node: &Proc, name: &str) -> (u16, u16, usize) {
    let call = http
        .post(format!("http://{}/v1/call/{name}", node.api()))
        .body("x")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    let r = http
        .get(format!("http://{}/v1/services/{name}", node.api()))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    let n = v["providers"].as_array().map_or(0, Vec::len);
    (call, status, n)
}

/// Waits until every node finds the provider (`present`) or none (`!present`), by a fresh
/// discovery and by a call; returns how long that took from `since`, asserting the bound.
async fn everywhere(
    http: &reqwest::Client,
    nodes: &[Proc],
    name: &str,
    present: bool,
    since: Instant,
    bound: Duration,
) -> Duration {
    for n in nodes {
        loop {
            let (call, disc, providers) = look(http, n, name).await;
            let ok = if present {
                call == 200 && disc == 200 && providers == 1
            } else {
                call != 200 && disc == 404
            };
            if ok {
                break;
            }
            assert!(
                since.elapsed() < bound,
                "'{name}' still {} after {:?}: call {call}, discover {disc} ({providers} providers)",
                if present { "missing" } else { "there" },
                since.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    since.elapsed()
}

async fn health(http: &reqwest::Client, node: &Proc, path: &str) -> (u16, Value) {
    let r = http
        .get(format!("http://{}{path}", node.api()))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn heartbeat(http: &reqwest::Client, node: &Proc, name: &str, verb: &str) -> (u16, Value) {
    let r = http
        .put(format!("http://{}/v1/services/{name}/{verb}", node.api()))
        .body("from the test")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_withdraws_the_provider_everywhere_and_a_passing_one_brings_it_back() {
    within(300, "health checks across three processes", async {
        let dir = tempfile::tempdir().unwrap();
        let a = spawn_node(dir.path(), "a", &[]).await;
        let contact = a.get("contact").to_owned();
        let b = spawn_node(dir.path(), "b", &["--bootstrap", &contact]).await;
        let c = spawn_node(dir.path(), "c", &["--bootstrap", &contact]).await;
        let nodes = [a, b, c];
        let a = &nodes[0];
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let interval = format!("{}ms", INTERVAL.as_millis());
        let gone_bound = INTERVAL + CACHE_TTL + SLACK;
        let mut figures = Vec::new();

        // --- HTTP: an upstream whose /health the test toggles ---
        let healthy = Arc::new(AtomicBool::new(true));
        let up = upstream(healthy.clone()).await;
        let out = register(
            a,
            &[
                "web",
                "--upstream",
                &format!("{up}/"),
                "--check-http",
                &format!("{up}/health"),
                "--check-interval",
                &interval,
            ],
        )
        .await;
        assert!(out.contains("its http check passes"), "{out}");
        everywhere(&http, &nodes, "web", true, Instant::now(), Duration::from_secs(30)).await;
        let (s, v) = health(&http, a, "/v1/health/service/web").await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "passing", "{v}");
        assert_eq!(v["check"]["kind"], "http", "{v}");
        assert_eq!(v["check"]["announced"], true, "{v}");
        assert_eq!(v["providers_found"], 1, "{v}");

        healthy.store(false, Ordering::SeqCst);
        let t = Instant::now();
        let gone = everywhere(&http, &nodes, "web", false, t, gone_bound).await;
        let (_, v) = health(&http, a, "/v1/health/web").await;
        assert_eq!(v["status"], "critical", "{v}");
        assert!(
            v["check"]["output"].as_str().unwrap().contains("503")
                && v["check"]["output"].as_str().unwrap().contains("database down"),
            "{v}"
        );
        assert_eq!(v["check"]["announced"], false, "{v}");
        assert_eq!(v["providers_found"], 0, "{v}");
        // another node sees no provider, and says where it looked
        let (s, v) = health(&http, &nodes[1], "/v1/health/service/web").await;
        assert_eq!(s, 404, "{v}");
        healthy.store(true, Ordering::SeqCst);
        let t = Instant::now();
        let back = everywhere(&http, &nodes, "web", true, t, gone_bound).await;
        figures.push(("http", gone, back));

        // --- TTL: heartbeats that stop ---
        let out = register(
            a,
            &[
                "beat",
                "--upstream",
                &format!("{up}/"),
                "--check-ttl",
                &interval,
            ],
        )
        .await;
        assert!(out.contains("its ttl check is critical"), "{out}");
        let (_, _, n) = look(&http, &nodes[1], "beat").await;
        assert_eq!(n, 0, "a TTL check is critical until its first heartbeat");
        // heartbeats every 100 ms until told to stop
        let beating = Arc::new(AtomicBool::new(true));
        let beats = {
            let (http, api, beating) = (http.clone(), a.api(), beating.clone());
            tokio::spawn(async move {
                while beating.load(Ordering::SeqCst) {
                    let _ = http
                        .put(format!("http://{api}/v1/services/beat/pass"))
                        .send()
                        .await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        everywhere(&http, &nodes, "beat", true, Instant::now(), Duration::from_secs(30)).await;
        beating.store(false, Ordering::SeqCst);
        beats.await.unwrap();
        let t = Instant::now();
        let gone = everywhere(&http, &nodes, "beat", false, t, gone_bound).await;
        let (_, v) = health(&http, a, "/v1/health/service/beat").await;
        assert!(
            v["check"]["output"].as_str().unwrap().contains("no heartbeat within the TTL"),
            "{v}"
        );
        let t = Instant::now();
        let (s, v) = heartbeat(&http, a, "beat", "pass").await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["check"]["status"], "passing", "{v}");
        assert_eq!(v["check"]["output"], "from the test", "{v}");
        let back = everywhere(&http, &nodes, "beat", true, t, gone_bound).await;
        figures.push(("ttl", gone, back));
        // a failing heartbeat withdraws at once; an HTTP check takes no heartbeats
        let (s, v) = heartbeat(&http, a, "beat", "fail").await;
        assert_eq!((s, &v["check"]["status"]), (200, &Value::from("critical")), "{v}");
        let (s, v) = heartbeat(&http, a, "web", "pass").await;
        assert_eq!(s, 409, "{v}");

        // --- TCP: a port that closes ---
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().to_string();
        let out = register(
            a,
            &[
                "db",
                "--upstream",
                &format!("{up}/"),
                "--check-tcp",
                &port,
                "--check-interval",
                &interval,
            ],
        )
        .await;
        assert!(out.contains("its tcp check passes"), "{out}");
        everywhere(&http, &nodes, "db", true, Instant::now(), Duration::from_secs(30)).await;
        drop(listener);
        let t = Instant::now();
        let gone = everywhere(&http, &nodes, "db", false, t, gone_bound).await;
        let listener = std::net::TcpListener::bind(&port).unwrap();
        let t = Instant::now();
        let back = everywhere(&http, &nodes, "db", true, t, gone_bound).await;
        drop(listener);
        figures.push(("tcp", gone, back));

        // the metrics count the results and the changes
        let m = http
            .get(format!("http://{}/metrics", a.api()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for want in [
            "themis_health_check_results_total{check=\"http\",result=\"fail\"}",
            "themis_health_check_results_total{check=\"ttl\",result=\"pass\"}",
            "themis_health_check_results_total{check=\"tcp\",result=\"fail\"}",
            "themis_health_check_changes_total{to=\"critical\"}",
        ] {
            assert!(m.contains(want), "missing {want}:\n{m}");
        }
        // the probes of the node stay where they were
        let (s, v) = health(&http, a, "/v1/health/live").await;
        assert_eq!((s, &v["live"]), (200, &Value::Bool(true)), "{v}");
        // ... and a service named `live` is asked for under /v1/health/service/
        let (s, v) = health(&http, a, "/v1/health/service/live").await;
        assert_eq!(s, 404, "{v}");
        assert!(v["error"].as_str().unwrap().contains("'live' is neither provided"), "{v}");
        // deregistering a service held back by its check works, and ends the check
        let out = run(BIN, &["deregister", "beat", "--api", &a.api()], &[]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        eventually_ok(10, "the check of a deregistered service is gone", || async {
            let (s, v) = heartbeat(&http, a, "beat", "pass").await;
            if s == 404 { Ok(()) } else { Err(format!("{s} {v}")) }
        })
        .await;

        for (kind, gone, back) in figures {
            println!(
                "{kind} check: failing to gone from discovery and calls on all 3 nodes {gone:?}, passing to back on all {back:?} (interval {INTERVAL:?}, cache TTL {CACHE_TTL:?})"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn contradicting_check_flags_are_refused_before_anything_is_sent() {
    // No agent listens on this address: the flags are refused first.
    let api = ["--api", "127.0.0.1:9"];
    let reg = |extra: &'static [&'static str]| async move {
        let mut args = vec!["register", "x", "--upstream", "http://127.0.0.1:1/"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&api);
        run(BIN, &args, &[]).await
    };
    let out = reg(&["--check-ttl", "5s", "--check-interval", "1s"]).await;
    assert_fails(&out, 2, &["--check-ttl takes no --check-interval"]);
    let out = reg(&[
        "--check-http",
        "http://127.0.0.1:1/h",
        "--check-timeout",
        "2s",
        "--check-interval",
        "1s",
    ])
    .await;
    assert_fails(&out, 2, &["below its interval"]);
    let out = reg(&["--check-interval", "1s"]).await;
    assert_fails(&out, 2, &["--check-interval needs a check"]);
    let out = reg(&[
        "--check-http",
        "http://127.0.0.1:1/h",
        "--check-tcp",
        "127.0.0.1:1",
    ])
    .await;
    assert_fails(&out, 2, &["cannot be used with"]);
}
