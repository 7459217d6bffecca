//! Internet scale in the simulator (issue 15, item 6): for each ring size N, a ring grown by
//! joins, N/10 registrations (k = 2), then a stable minute, churn with heavy-tailed session
//! times like those measured in deployed DHTs (Weibull, shape 0.5, median 10 min; departures
//! replaced by joins), and a partition into two halves, healed. Prints per N and phase: hops
//! (mean, p50, p99, max) against ½·log₂N + 1 (the bound is on the mean), find latency in
//! virtual time, registrations missing, maintenance messages and bytes per node per simulated
//! minute, wall-clock time per simulated minute and memory; then the trend across N.
//! The experiment itself is `themis_testkit::sim::run_scale`; its test runs it at 300 nodes.
//!
//! ```text
//! cargo run --release -p themis-dht --example sim_scale -- [N ...] [--seed S] [--stable SECS]
//!     [--churn SECS] [--partition SECS] [--median SECS] [--lookups L] [--registrations R]
//!     [--growth-percent P] [--bootstraps B] [--fast] [--quiet]
//! ```
//!
//! Each joining node is given `B` distinct random members as bootstraps (default 3; `--bootstraps
//! 1` gives the single bootstrap of earlier runs, whose joins can end alone when that member
//! departs first). Node settings are `Config::default()` (a real network's periods: stabilize 1 s, fingers
//! 5 s, predecessor check 2 s, re-store 200 s); `--fast` takes the simulation profile
//! `Config::fast()` instead. Each N runs in its own process (`--child`) so that its peak memory
//! is its own, with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` unless the variable is set (huge
//! pages: 18% less CPU at 10,000 nodes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use themis_dht::Config;
use themis_testkit::sim::{ScaleReport, ScaleScenario, Sessions, markdown, run_scale};

const USAGE: &str = "usage: sim_scale [N ...] [--seed S] [--stable SECS] [--churn SECS] \
    [--partition SECS] [--median SECS] [--lookups L] [--registrations R] [--growth-percent P] \
    [--bootstraps B] [--fast] [--quiet]\n(default N: 1000 10000; see the example's documentation for each option)";

struct Args {
    sizes: Vec<usize>,
    seed: u64,
    stable: u64,
    churn: u64,
    partition: u64,
    median: u64,
    growth: f64,
    bootstraps: u64,
    lookups: Option<usize>,
    registrations: Option<usize>,
    fast: bool,
    quiet: bool,
    child: bool,
}

fn parse() -> Args {
    let mut a = Args {
        sizes: Vec::new(),
        seed: 1,
        stable: 60,
        churn: 300,
        partition: 120,
        median: 600,
        growth: 0.2,
        bootstraps: 3,
        lookups: None,
        registrations: None,
        fast: false,
        quiet: false,
        child: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut num = || -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{x} needs a number"))
        };
        match x.as_str() {
            "--seed" => a.seed = num(),
            "--stable" => a.stable = num(),
            "--churn" => a.churn = num(),
            "--partition" => a.partition = num(),
            "--median" => a.median = num(),
            "--growth-percent" => a.growth = num() as f64 / 100.0,
            "--bootstraps" => a.bootstraps = num().max(1),
            "--lookups" => a.lookups = Some(num() as usize),
            "--registrations" => a.registrations = Some(num() as usize),
            "--fast" => a.fast = true,
            "--quiet" => a.quiet = true,
            "--child" => a.child = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            n => a
                .sizes
                .push(n.parse().unwrap_or_else(|_| panic!("unknown argument {n}"))),
        }
    }
    if a.sizes.is_empty() {
        a.sizes = vec![1_000, 10_000];
    }
    a
}

fn scenario(a: &Args, n: usize) -> ScaleScenario {
    let mut sc = ScaleScenario::new(a.seed, n);
    if a.fast {
        sc.node = Config::fast();
    }
    sc.sessions = Sessions::deployed(Duration::from_secs(a.median));
    sc.growth_per_sec = a.growth;
    sc.bootstraps = a.bootstraps as usize;
    sc.stable = Duration::from_secs(a.stable);
    sc.churn = Duration::from_secs(a.churn);
    sc.partition = Duration::from_secs(a.partition);
    if let Some(l) = a.lookups {
        sc.lookups = l;
    }
    if let Some(r) = a.registrations {
        sc.registrations = r;
    }
    sc.verbose = !a.quiet;
    sc
}

/// One line of the trend table, as the child prints it for the parent.
fn trend_line(r: &ScaleReport) -> String {
    let phase = |name: &str| r.phases.iter().find(|p| p.name == name);
    let stable = phase("stable").unwrap();
    let churn = phase("churn").unwrap();
    let sp = stable.probe.as_ref().unwrap();
    let cp = churn.probe.as_ref().unwrap();
    let (worst_hops, worst_missing) = r.worst();
    let settled_missing = phase("settled")
        .and_then(|p| p.probe.as_ref())
        .map_or("—".to_owned(), |p| p.missing.to_string());
    format!(
        "| {} | {:.0} | {} | {:.2} | {:.2} / {:.0} / {:.0} | {:.2} | {:.0} / {:.0} ms | {:.0} / {:.0} ms | {:.0} | {:.0} | {:.1} KB | {:.1} | {:.1} | {:.2} | {} / {} | {:?} | {:?} |",
        r.nodes,
        r.peak_rss.unwrap_or(0) as f64 / 1e6,
        r.bytes_per_node().unwrap_or(0),
        r.hop_bound,
        sp.hops.mean,
        sp.hops.p99,
        sp.hops.max,
        worst_hops,
        sp.latency_ms.p50,
        sp.latency_ms.p99,
        cp.latency_ms.p50,
        cp.latency_ms.p99,
        stable.messages_per_node_minute(),
        churn.messages_per_node_minute(),
        churn.bytes_per_node_minute() / 1e3,
        stable.cpu_per_sim_minute().as_secs_f64(),
        churn.cpu_per_sim_minute().as_secs_f64(),
        churn.cpu_us_per_event(),
        worst_missing,
        settled_missing,
        r.to_one_ring,
        r.to_discovery,
    )
}

const TREND_HEAD: &str = "| N | peak RSS MB | bytes/node | bound | hops mean / p99 / max (stable) | worst mean hops | latency p50 / p99 (stable) | latency p50 / p99 (churn) | msgs/node/min stable | msgs/node/min churn | bytes/node/min churn | CPU s per sim min stable | CPU s per sim min churn | CPU µs per event (churn) | most missing in a probe / missing at the end | heal: one ring | heal: all found |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

fn main() {
    let a = parse();
    if a.child {
        let n = a.sizes[0];
        let r = run_scale(&scenario(&a, n));
        println!("{}", markdown(&r));
        println!("TREND {}", trend_line(&r));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut trend = Vec::new();
    for n in &a.sizes {
        let mut cmd = std::process::Command::new(&exe);
        for (flag, v) in [
            ("--seed", a.seed),
            ("--stable", a.stable),
            ("--churn", a.churn),
            ("--partition", a.partition),
            ("--median", a.median),
            ("--growth-percent", (a.growth * 100.0).round() as u64),
            ("--bootstraps", a.bootstraps),
        ] {
            cmd.arg(flag).arg(v.to_string());
        }
        for (flag, v) in [
            ("--lookups", a.lookups),
            ("--registrations", a.registrations),
        ] {
            if let Some(v) = v {
                cmd.arg(flag).arg(v.to_string());
            }
        }
        for (flag, on) in [("--fast", a.fast), ("--quiet", a.quiet)] {
            if on {
                cmd.arg(flag);
            }
        }
        // glibc's malloc on transparent huge pages (glibc >= 2.35; ignored elsewhere): the
        // nodes' tables are touched at random over gigabytes, and with 4 KB pages a good part
        // of the time went to TLB misses (10,000 nodes: 65.7 -> 53.8 s CPU per simulated
        // minute). A value set by the caller is kept.
        if std::env::var_os("GLIBC_TUNABLES").is_none() {
            cmd.env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1");
        }
        cmd.arg("--child")
            .arg(n.to_string())
            .stderr(std::process::Stdio::inherit());
        let out = cmd.output().expect("run the child");
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            match line.strip_prefix("TREND ") {
                Some(t) => trend.push(t.to_owned()),
                None => println!("{line}"),
            }
        }
        if !out.status.success() {
            println!("N = {n}: the run failed ({})", out.status);
        }
    }
    println!("### Trend\n\n{TREND_HEAD}");
    for t in &trend {
        println!("{t}");
    }
}
