//! Operating `themis node` as an operator would (issue 14), with real processes and sockets:
//! the configuration file, THEMIS_* variables and their precedence; `themis members`,
//! `/v1/health`, `themis check`; the DNS interface; JSON logs and repeated warnings counted;
//! services and peers kept in the data directory across a restart of the whole cluster;
//! bootstrap mismatches named at once; the agent's own body limit honoured by `themis call`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use serde_json::Value;
use themis_testkit::process::{
    Proc, assert_fails, free_port, free_udp_tcp_port, run, run_until_ok, spawn_ready, text,
};
use themis_testkit::{eventually_ok, within};

const BIN: &str = env!("CARGO_BIN_EXE_themis");

async fn themis(args: &[&str]) -> Output {
    run(BIN, args, &[]).await
}

/// `themis ARGS` until it succeeds (20 tries 250 ms apart: a fresh ring settling).
async fn themis_ok(args: &[&str]) -> Output {
    run_until_ok(BIN, args, 20, |_| true).await
}

async fn node(dir: &Path, name: &str, args: &[&str]) -> Proc {
    let mut all = vec!["node", "--fast", "--api", "127.0.0.1:0"];
    all.extend_from_slice(args);
    spawn_ready(BIN, dir, name, &all, &[]).await
}

async fn echo(dir: &Path, name: &str) -> (Proc, String) {
    let p = spawn_ready(
        BIN,
        dir,
        name,
        &["echo", "--listen", "127.0.0.1:0", "--name", name],
        &[],
    )
    .await;
    let url = p.get("echo").to_owned();
    (p, url)
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// One DNS question over UDP.
async fn dns(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    q.metadata.id = 4242;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = within(10, "a DNS answer", sock.recv_from(&mut buf))
        .await
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_flags_then_environment_then_file() {
    within(60, "configuration", async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("themis.toml");
        std::fs::write(
            &file,
            "net = \"from-file\"\nlisten = \"127.0.0.1:7946\"\napi = \"127.0.0.1:9999\"\nmax-body = 5\n\n[[service]]\nname = \"hello\"\nupstream = \"http://127.0.0.1:8080/\"\nweight = 5\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let out = run(
            BIN,
            &["node", "--config", f, "--print-config", "--max-body", "3000000"],
            &[("THEMIS_API", "127.0.0.1:7171"), ("THEMIS_MAX_BODY", "7")],
        )
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let printed = text(&out.stdout);
        assert!(printed.contains("net = \"from-file\"  # file"), "{printed}");
        assert!(printed.contains("api = \"127.0.0.1:7171\"  # THEMIS_API"), "{printed}");
        assert!(printed.contains("max-body = 3000000  # --max-body"), "{printed}");
        assert!(printed.contains("upstream-timeout = 4  # default"), "{printed}");
        assert!(printed.contains("[[service]]") && printed.contains("weight = 5"), "{printed}");
        // THEMIS_CONFIG names the file too
        let out = run(BIN, &["node", "--print-config"], &[("THEMIS_CONFIG", f)]).await;
        assert!(text(&out.stdout).contains("from-file"), "{}", text(&out.stderr));

        // Mistakes: the file, the line and the key; exit code 2 (bad usage).
        std::fs::write(&file, "net = \"x\"\nlisen = \"127.0.0.1:1\"\n").unwrap();
        assert_fails(
            &themis(&["node", "--config", f]).await,
            2,
            &["themis.toml", "line 2", "lisen"],
        );
        assert_fails(
            &themis(&["node", "--net", "x"]).await,
            2,
            &["--listen", "THEMIS_LISTEN"],
        );
        assert_fails(
            &run(BIN, &["node", "--listen", "127.0.0.1:0"], &[("THEMIS_INSECURE", "maybe")]).await,
            2,
            &["--insecure", "not a boolean"],
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_answers_members_health_check_and_dns() {
    within(150, "members, health, check, DNS", ring_scenario()).await;
}

async fn ring_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, upstream) = echo(dir.path(), "hello-a").await;
    let conf = dir.path().join("a.toml");
    std::fs::write(
        &conf,
        format!(
            "net = \"ops\"\nlisten = \"127.0.0.1:0\"\nmax-body = 3000000\nlog-format = \"json\"\n[[service]]\nname = \"hello\"\nupstream = \"{upstream}\"\nversion = \"1.0\"\n"
        ),
    )
    .unwrap();
    let dns_port = free_udp_tcp_port();
    let dns_addr = format!("127.0.0.1:{dns_port}");
    let key = dir.path().join("a.key");
    assert!(
        themis(&["keygen", "--out", key.to_str().unwrap()])
            .await
            .status
            .success()
    );
    let a = node(
        dir.path(),
        "a",
        &[
            "--config",
            conf.to_str().unwrap(),
            "--dns",
            &dns_addr,
            "--key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(a.get("dns"), dns_addr);
    let b = node(
        dir.path(),
        "b",
        &[
            "--net",
            "ops",
            "--listen",
            "127.0.0.1:0",
            "--max-body",
            "3000000",
            "--bootstrap",
            &a.listen(),
        ],
    )
    .await;
    let c = node(
        dir.path(),
        "c",
        &[
            "--net",
            "ops",
            "--listen",
            "127.0.0.1:0",
            "--bootstrap",
            &b.listen(),
        ],
    )
    .await;

    // Health: live and ready once started; the routes an orchestrator probes.
    for n in [&a, &b, &c] {
        let (code, v) = get_json(&format!("http://{}/v1/health", n.api())).await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["ready"], true);
        let (code, _) = get_json(&format!("http://{}/v1/health/live", n.api())).await;
        assert_eq!(code, 200);
    }
    let (_, me) = get_json(&format!("http://{}/v1/agent/self", b.api())).await;
    assert_eq!(me["max_body"], 3_000_000);

    // Members, walked from C: three alive members, A with its configured service.
    let api_c = c.api();
    eventually_ok(30, "three members", || {
        let api = api_c.clone();
        async move {
            let out = themis(&["members", "--json", "--api", &api]).await;
            let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            let list = v["members"].as_array().ok_or("no list")?;
            let alive = list.iter().filter(|m| m["state"] == "alive").count();
            if alive == 3 && v["complete"] == true {
                Ok(())
            } else {
                Err(v.to_string())
            }
        }
    })
    .await;
    let out = themis(&["members", "--json", "--api", &c.api()]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let a_row = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == a.get("id"))
        .unwrap();
    assert_eq!(a_row["services"], 1, "{v}");
    let out = themis(&["members", "--api", &c.api()]).await;
    let table = text(&out.stdout);
    assert!(table.contains("3 members (3 alive)"), "{table}");
    assert!(table.contains(&a.get("id")[..16]), "{table}");

    // The doctor.
    let api_b = b.api();
    eventually_ok(30, "themis check passes", || {
        let api = api_b.clone();
        async move {
            let out = themis(&["check", "--api", &api]).await;
            let t = text(&out.stdout);
            if out.status.success() && t.contains("ok    ring") && t.contains("ok    clock") {
                Ok(())
            } else {
                Err(format!("{t}{}", text(&out.stderr)))
            }
        }
    })
    .await;

    // A 1.1 MB body through B, whose agent takes 3 MB (A's too).
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 1_100_000]).unwrap();
    let out = themis_ok(&[
        "call",
        "hello",
        "--data-file",
        big.to_str().unwrap(),
        "--api",
        &b.api(),
    ])
    .await;
    assert_eq!(out.stdout.len(), "hello-a: ".len() + 1_100_000);
    // ... and refused by C's, with the limit named.
    assert_fails(
        &themis(&[
            "call",
            "hello",
            "--data-file",
            big.to_str().unwrap(),
            "--api",
            &c.api(),
        ])
        .await,
        2,
        &["larger than 1048576 bytes", "--max-body"],
    );

    // -vv shows themis's own requests.
    let out = themis_ok(&["call", "hello", "x", "-vv", "--api", &c.api()]).await;
    assert!(
        text(&out.stderr).contains("request to the agent"),
        "{}",
        text(&out.stderr)
    );

    dns_checks(&a, dns_addr.parse().unwrap()).await;
    repeated_warnings_are_counted(&a).await;

    // Every line A wrote is one JSON object.
    for line in a.stderr_text().lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    c.stop("-TERM").await;
    b.stop("-TERM").await;
    a.stop("-TERM").await;
}

/// `hello.service.themis` answers A and SRV for A's provider; unknown names are NXDOMAIN,
/// names outside `themis.` are refused.
async fn dns_checks(a: &Proc, server: SocketAddr) {
    let port: u16 = a.listen().rsplit_once(':').unwrap().1.parse().unwrap();
    let m = dns(server, "hello.service.themis.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert!(
        m.answers
            .iter()
            .any(|r| r.data == RData::A("127.0.0.1".parse().unwrap())),
        "{m:?}"
    );
    assert!(m.answers.iter().all(|r| r.ttl >= 1 && r.ttl <= 30), "{m:?}");
    let m = dns(server, "hello.service.themis.", RecordType::SRV).await;
    let srv: Vec<_> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(srv.len(), 1, "{m:?}");
    assert_eq!(srv[0].port, port);
    let target = srv[0].target.to_ascii();
    assert!(target.starts_with(&a.get("id")[..16]), "{target}");
    assert!(!m.additionals.is_empty(), "{m:?}");
    // The SRV target resolves.
    let m = dns(server, &target, RecordType::A).await;
    assert_eq!(m.answers.len(), 1, "{m:?}");
    let m = dns(server, "nothere.service.themis.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = dns(server, "example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

/// A dead upstream called 25 times: one warning line, then one line counting the others.
async fn repeated_warnings_are_counted(a: &Proc) {
    let dead = format!("http://127.0.0.1:{}/", free_port());
    let out = themis(&["register", "dead", "--upstream", &dead, "--api", &a.api()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..25 {
        let _ = http
            .post(format!("http://{}/v1/call/dead", a.api()))
            .body("x")
            .send()
            .await
            .unwrap();
    }
    let stderr = || a.stderr_text();
    eventually_ok(30, "a line counting the repeated warnings", || async {
        let t = stderr();
        let counted = t.lines().any(|l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["repeated"].as_u64().is_some_and(|n| n >= 10))
        });
        if counted { Ok(()) } else { Err(t) }
    })
    .await;
    let written = stderr()
        .lines()
        .filter(|l| l.contains("forwarding a call failed") && !l.contains("repeated"))
        .count();
    assert!(written <= 3, "{}", stderr());
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restarted_at_once_rejoins_without_bootstraps() {
    within(180, "restart of the whole cluster", restart_scenario()).await;
}

async fn restart_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, upstream) = echo(dir.path(), "kept").await;
    let ports: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let data: Vec<String> = (0..3)
        .map(|i| {
            dir.path()
                .join(format!("d{i}"))
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let args = |i: usize, boot: Option<&str>| -> Vec<String> {
        let mut v: Vec<String> = [
            "--net",
            "restart",
            "--listen",
            &ports[i],
            "--data-dir",
            &data[i],
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(b) = boot {
            v.extend(["--bootstrap".to_owned(), b.to_owned()]);
        }
        v
    };
    let a = node(dir.path(), "a", &strs(&args(0, None))).await;
    let b = node(dir.path(), "b", &strs(&args(1, Some(&ports[0])))).await;
    let c = node(dir.path(), "c", &strs(&args(2, Some(&ports[1])))).await;
    let ids: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|n| n.get("id").to_owned())
        .collect();
    // `register` exits 1 while the ring is too young to store any replica (issue 11): again
    // until it is stored.
    let mut out = None;
    for _ in 0..40 {
        let o = themis(&[
            "register",
            "kept",
            "--upstream",
            &upstream,
            "--api",
            &a.api(),
        ])
        .await;
        if o.status.success() {
            out = Some(o);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(out.is_some(), "register never stored a replica");
    // Each node saves the peers it knows once it has some (then every 30 s and at shutdown).
    let files: Vec<_> = data
        .iter()
        .map(|d| Path::new(d).join("peers.json"))
        .collect();
    eventually_ok(30, "every node has saved its peers", || async {
        match files.iter().find(|f| !f.exists()) {
            Some(f) => Err(format!("{} missing", f.display())),
            None => Ok(()),
        }
    })
    .await;
    // Stop them all.
    for n in [c, b, a] {
        n.stop("-TERM").await;
    }
    // All at once, with no bootstrap: they rejoin the peers they remember.
    let (a0, a1, a2) = (args(0, None), args(1, None), args(2, None));
    let (s0, s1, s2) = (strs(&a0), strs(&a1), strs(&a2));
    let (a, b, c) = tokio::join!(
        node(dir.path(), "a2", &s0),
        node(dir.path(), "b2", &s1),
        node(dir.path(), "c2", &s2),
    );
    // Same identities (the keys live in the data directories).
    assert_eq!(
        [a.get("id"), b.get("id"), c.get("id")],
        [&ids[0], &ids[1], &ids[2]]
    );
    let mut last = String::new();
    let mut whole = false;
    for _ in 0..120 {
        let out = themis(&["members", "--json", "--api", &b.api()]).await;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let alive = v["members"]
            .as_array()
            .map_or(0, |l| l.iter().filter(|m| m["state"] == "alive").count());
        if alive == 3 && v["complete"] == true {
            whole = true;
            break;
        }
        last = format!("{v} {}", text(&out.stderr));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        whole,
        "not one ring of three again: {last}\na: {}\nb: {}\nc: {}",
        a.stderr_text(),
        b.stderr_text(),
        c.stderr_text()
    );
    // The service came back with A (from its data directory), callable from C.
    let out = themis_ok(&["call", "kept", "again", "--api", &c.api()]).await;
    assert_eq!(text(&out.stdout), "kept: again");
    for n in [c, b, a] {
        n.stop("-TERM").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_mismatches_are_named() {
    within(120, "bootstrap mismatches", async {
        let dir = tempfile::tempdir().unwrap();
        let seed = node(dir.path(), "seed", &["--net", "one", "--listen", "127.0.0.1:0"]).await;
        let at = seed.listen();
        let try_join = |net: &'static str, boot: String, extra: &'static [&'static str]| async move {
            let mut v = vec!["node", "--fast", "--api", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--net", net, "--bootstrap", &boot];
            v.extend_from_slice(extra);
            themis(&v).await
        };
        assert_fails(&try_join("two", at.clone(), &[]).await, 1, &["network mismatch", "--net"]);
        let wrong = format!("{}@{at}", "ab".repeat(32));
        assert_fails(&try_join("one", wrong, &[]).await, 1, &["identity mismatch", seed.get("id")]);
        assert_fails(
            &try_join("one", at.clone(), &["--insecure"]).await,
            1,
            &["mode mismatch", "runs secure and this one insecure", "insecure mode: channels are plaintext"],
        );
        // A bootstrap list naming this node itself: skipped, a new ring.
        let port = free_port();
        let me = format!("127.0.0.1:{port}");
        let alone = node(dir.path(), "alone", &["--net", "one", "--listen", &me, "--bootstrap", &me]).await;
        // --join-timeout: a seed that starts later is waited for.
        let later = format!("127.0.0.1:{}", free_port());
        let dir_path = dir.path().to_owned();
        let waiter = tokio::spawn({
            let later = later.clone();
            async move {
                node(&dir_path, "waiter", &["--net", "late", "--listen", "127.0.0.1:0", "--bootstrap", &later, "--join-timeout", "60"]).await
            }
        });
        // The seed starts once the waiter has said that it waits (its stderr is DIR/waiter.stderr).
        let waiter_log = dir.path().join("waiter.stderr");
        eventually_ok(30, "the waiter says it waits for its bootstrap", || async {
            let log = std::fs::read_to_string(&waiter_log).unwrap_or_default();
            if log.contains("no bootstrap node answers yet") { Ok(()) } else { Err(log) }
        })
        .await;
        let late_seed = node(dir.path(), "late-seed", &["--net", "late", "--listen", &later]).await;
        let waiter = waiter.await.unwrap();
        assert!(waiter.stderr_text().contains("no bootstrap node answers yet"), "{}", waiter.stderr_text());
        for n in [waiter, late_seed, alone, seed] {
            n.stop("-TERM").await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_usage_errors_and_log_settings() {
    within(60, "client usage", async {
        let free = format!("127.0.0.1:{}", free_port());
        assert_fails(
            &themis(&["call", "x", "--api", &format!("https://{free}")]).await,
            2,
            &["plain HTTP", &format!("http://{free}")],
        );
        let out = run(
            BIN,
            &["status", "--api", &free],
            &[("RUST_LOG", "themis=loud")],
        )
        .await;
        assert_fails(&out, 1, &["ignoring RUST_LOG", "no themis agent"]);
        // NO_COLOR: no escape sequences (stderr is not a terminal here either way).
        let out = run(BIN, &["status", "--api", &free], &[("NO_COLOR", "1")]).await;
        assert!(!text(&out.stderr).contains('\u{1b}'));
        // A ring not consistent within --settle-timeout is an error, not a `ready` (right after
        // the last join, the newest node has no predecessor yet).
        let base = themis_testkit::process::free_ports_outside_ephemeral_range(3);
        let listen = format!("127.0.0.1:{base}");
        let out = themis(&[
            "cluster",
            "--nodes",
            "3",
            "--fast",
            "--net",
            "t",
            "--settle-timeout",
            "0",
            "--listen-base",
            &listen,
            "--api",
            "127.0.0.1:0",
        ])
        .await;
        assert_fails(&out, 1, &["not consistent after", "--settle-timeout"]);
        assert!(
            !text(&out.stdout).contains("ready"),
            "{}",
            text(&out.stdout)
        );
        let out = themis(&[
            "cluster",
            "--nodes",
            "0",
            "--net",
            "t",
            "--listen-base",
            "127.0.0.1:7000",
        ])
        .await;
        let demo = themis(&["demo", "--nodes", "4"]).await;
        assert_eq!(out.status.code(), demo.status.code());
    })
    .await;
}
