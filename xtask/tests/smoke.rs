//! End-to-end smoke run: `cargo xtask bench --tiny` into a temp dir, then the report files'
//! structure. Keeps the harness from rotting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Command;

/// Checks that every tag is closed in order, attributes are quoted, and the root is `<svg>`.
fn assert_well_formed_svg(text: &str, name: &str) {
    assert!(
        text.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{name}"
    );
    let mut stack: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let close = rest[open..]
            .find('>')
            .unwrap_or_else(|| panic!("{name}: unclosed tag"))
            + open;
        let tag = &rest[open + 1..close];
        assert!(!tag.contains('<'), "{name}: '<' inside a tag: {tag}");
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "{name}: unbalanced quotes in {tag}"
        );
        if let Some(end) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(end),
                "{name}: mismatched </{end}>"
            );
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap().to_string());
        }
        let text_between = &rest[..open];
        assert!(!text_between.contains('>'), "{name}: stray '>'");
        assert!(!text_between.contains("& "), "{name}: unescaped '&'");
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "{name}: unclosed {stack:?}");
    assert!(
        !text.contains("NaN") && !text.contains("inf"),
        "{name}: non-finite coordinate"
    );
}

fn run(out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--tiny", "--out"])
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn tiny_bench_writes_a_complete_report() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path());

    // report.json: exactly {machine, results}, one object per point and mode.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    let top: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(top, ["machine", "results"]);
    for key in [
        "cpu_model",
        "cores",
        "memory_kib",
        "kernel",
        "rustc",
        "git_commit",
        "date_utc",
    ] {
        assert!(json["machine"].get(key).is_some(), "machine.{key}");
    }
    let results = json["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for mode in ["secure", "insecure"] {
        let n = results.iter().filter(|r| r["mode"] == mode).count();
        assert!(n >= 3, "{mode}: {n} points");
    }
    for r in results {
        for key in [
            "workload",
            "mode",
            "nodes",
            "offered_per_sec",
            "ops_per_sec",
            "p50_ms",
            "p99_ms",
            "mean_hops",
            "runs",
        ] {
            assert!(r.get(key).is_some(), "result without {key}: {r}");
        }
        let w = r["workload"].as_str().unwrap();
        assert!(
            [
                "local-find-store",
                "find-scaling",
                "join",
                "leave-blink",
                "key-agreement",
                "apps",
                "sidecar"
            ]
            .contains(&w),
            "{w}"
        );
        // The direct baseline (no themis) belongs to the end-to-end apps and the sidecar only,
        // the relay reference point to the sidecar.
        if r["mode"] == "direct" {
            assert!(w == "apps" || w == "sidecar", "{r}");
        }
        if r["mode"] == "relay" {
            assert_eq!(w, "sidecar", "{r}");
        }
        assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0);
        assert!(r["p50_ms"].as_f64().unwrap() > 0.0);
        assert!(r["p99_ms"].as_f64().unwrap() >= r["p50_ms"].as_f64().unwrap());
        assert_eq!(r["errors"], 0);
    }
    // Workload 2: a cold, a warm and a steady pass per ring size and mode, with their set-up
    // counts; a ring of 4 nodes has met all its pairs before the steady pass.
    for mode in ["secure", "insecure"] {
        for (point, phase) in [
            ("cold N=4", "cold"),
            ("warm N=4", "warm"),
            ("N=4", "steady"),
        ] {
            let r = results
                .iter()
                .find(|r| {
                    r["workload"] == "find-scaling" && r["point"] == point && r["mode"] == mode
                })
                .unwrap_or_else(|| panic!("find-scaling {point} {mode} missing"));
            assert_eq!(r["phase"], phase);
            assert!(
                r["handshakes"].is_u64() && r["connections_dialed"].is_u64(),
                "{r}"
            );
            if phase == "steady" {
                assert_eq!(r["steady_reached"], true, "{r}");
                assert!(r["ops_before"].as_u64().unwrap() >= 2 * 200 + 1_000, "{r}");
            }
        }
    }
    // Workload 7: the mesh both ways and the two reference points, each at both points.
    for mode in ["secure", "insecure", "direct", "relay"] {
        for point in ["c=1", "c=64"] {
            assert!(
                results.iter().any(|r| r["workload"] == "sidecar"
                    && r["point"] == point
                    && r["mode"] == mode),
                "sidecar {point} {mode} missing"
            );
        }
    }
    // Workload 1: the search for the highest rate within the p99 bound ran.
    assert!(results.iter().any(|r| r["point"] == "find sustained"));
    let open = results
        .iter()
        .find(|r| !r["offered_per_sec"].is_null())
        .unwrap();
    assert!(open["offered_per_sec"].as_f64().unwrap() > 0.0);

    // report.md: the machine, one table per workload, the planned ones marked as such.
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("| CPU |"));
    assert!(md.contains("Cold, warm and steady"));
    for title in [
        "## 1. find and store",
        "## 2. find across N nodes",
        "## 3. join",
        "## 4. leave",
        "## 5. Key pair",
        "## 6. end-to-end",
        "## 7. transparent HTTP sidecar",
    ] {
        assert!(md.contains(title), "missing {title}");
    }
    assert_eq!(
        md.matches(
            "| figure | point | paper | ours secure | ours insecure | overhead | goal | met? |"
        )
        .count(),
        7
    );
    assert!(md.contains("| key pair + agreement, mean latency | c=1 | ≈ 52 ms |"));
    assert!(
        !md.contains("Not measured yet"),
        "every workload is implemented"
    );

    // Workload 6: both applications, three ways each, and the comparison with direct calls.
    for point in [
        "startup",
        "appauth c=1",
        "appauth c=64",
        "kmeans c=1",
        "kmeans c=64",
    ] {
        for mode in ["secure", "insecure", "direct"] {
            assert!(
                results
                    .iter()
                    .any(|r| r["workload"] == "apps" && r["point"] == point && r["mode"] == mode),
                "apps {point} {mode} missing"
            );
        }
    }
    assert!(md.contains("| k-means, throughput | kmeans c=64 | 0.49 / 0.49 req/s (0.00 %) |"));
    assert!(md.contains(
        "| point | figure | direct | mesh insecure | mesh secure | insecure vs direct | secure vs direct | secure vs insecure |"
    ));
    assert!(md.contains("| appauth c=64 | throughput |"));

    // The goals against rust-libp2p (the tiny run has no 100-node ring: not measured).
    assert!(md.contains("## Goals: against rust-libp2p at 100 nodes"));
    assert!(md.contains("| find throughput | 1,066 ops/s | not measured |"));
    assert!(md.contains("| join, sequential | 100 ms/node |"));

    // Plots: throughput and latency against concurrency, and CDFs, all well formed.
    for name in [
        "key-agreement-throughput.svg",
        "key-agreement-latency.svg",
        "key-agreement-cdf.svg",
    ] {
        let svg = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_well_formed_svg(&svg, name);
        assert!(svg.contains("<polyline"), "{name} has no data");
        assert!(
            md.contains(&format!("]({name})")),
            "report.md does not show {name}"
        );
    }
}

#[test]
fn repeated_runs_give_medians_with_every_run_kept() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "bench",
            "--tiny",
            "--runs",
            "3",
            "--only",
            "key-agreement",
            "--out",
        ])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["machine"]["runs"], 3);
    let results = json["results"].as_array().unwrap();
    // One result per point and mode, not one per run.
    let c1 = results
        .iter()
        .filter(|r| r["point"] == "c=1" && r["mode"] == "secure")
        .count();
    assert_eq!(c1, 1);
    for r in results {
        let runs = r["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 3, "{r}");
        let mut tput: Vec<f64> = runs
            .iter()
            .map(|x| x["ops_per_sec"].as_f64().unwrap())
            .collect();
        tput.sort_by(f64::total_cmp);
        assert_eq!(
            r["ops_per_sec"].as_f64().unwrap(),
            tput[1],
            "the median: {r}"
        );
    }
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("| runs of every point | 3 |"));
    assert!(md.contains("Every point was measured 3 times"));
    // Key agreement against key pair creation alone: never a negative overhead.
    let row = md
        .lines()
        .find(|l| l.starts_with("| key pair + agreement, mean latency | c=1 |"))
        .unwrap();
    assert!(!row.contains("| -"), "{row}");
}

#[test]
fn find_scaling_runs_in_process_and_over_node_hosts_alike() {
    // The default spreads each ring over node host processes; `--node-hosts 0` keeps it in
    // the bench process. Both build the same rings and report the same points.
    let points = |hosts: &str| {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args([
                "bench",
                "--tiny",
                "--only",
                "find-scaling",
                "--node-hosts",
                hosts,
            ])
            .arg("--out")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "--node-hosts {hosts}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
                .unwrap();
        let harness = json["machine"]["harness"].as_str().unwrap().to_owned();
        let mut points: Vec<(String, String, u64)> = json["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r["errors"], 0, "{r}");
                assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
                (
                    r["point"].as_str().unwrap().to_owned(),
                    r["mode"].as_str().unwrap().to_owned(),
                    r["nodes"].as_u64().unwrap(),
                )
            })
            .collect();
        points.sort();
        (points, harness)
    };
    let (local, local_harness) = points("0");
    let (hosted, hosted_harness) = points("3");
    assert_eq!(local, hosted);
    // 2 sizes × 2 modes × (cold, warm, steady, store, store warm)
    assert_eq!(local.len(), 20, "{local:?}");
    assert!(
        local_harness.contains("in the bench process"),
        "{local_harness}"
    );
    assert!(
        hosted_harness.contains("3 node host processes"),
        "{hosted_harness}"
    );
}

#[test]
fn unknown_workload_is_refused_with_the_list() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--tiny", "--only", "nope", "--out"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown workload \"nope\"") && err.contains("key-agreement"),
        "{err}"
    );
}
