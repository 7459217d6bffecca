//! `cargo xtask`: project automation for themis. See `cargo xtask --help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use xtask::{BenchOptions, Profile, Progress};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "Project automation for themis")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the benchmark workloads of paper §9 in secure and insecure mode and writes
    /// report.md, report.json and SVG plots.
    #[command(after_help = durations_help())]
    Bench(BenchArgs),
    /// Internal: holds a slice of a benchmark ring's nodes in this process, driven by the
    /// bench over standard input and output.
    #[command(hide = true)]
    NodeHost(xtask::NodeHostArgs),
    /// Internal: the sidecar workload's HTTP upstream, in a process of its own; prints its
    /// address and serves until standard input closes.
    #[command(hide = true)]
    HttpUpstream,
    /// Internal: the sidecar workload's relay (two of them are its `relay` reference point),
    /// in a process of its own; prints its address and copies bytes to `--to` until standard
    /// input closes.
    #[command(hide = true)]
    TcpRelay {
        /// Where every accepted connection is relayed.
        #[arg(long)]
        to: std::net::SocketAddr,
    },
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Reduced sizes: each run of the workloads takes under 3 minutes on 2 cores (so about 9
    /// with the default 3 runs; `--quick --runs 1` for a first look without spreads).
    #[arg(long)]
    quick: bool,
    /// Report directory [default: <workspace>/target/bench-report].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Runs the criterion micro-benchmarks of every crate instead (`cargo bench`); with
    /// --quick, criterion's quick mode.
    #[arg(long)]
    micro: bool,
    /// Runs only this workload (repeatable). Names: local-find-store, find-scaling, join,
    /// leave-blink, key-agreement, apps, sidecar.
    #[arg(long, value_name = "WORKLOAD")]
    only: Vec<String>,
    /// Seed for the workloads' random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runs of every point, the modes taking turns: each figure is the median over the runs,
    /// reported with their range, and an overhead whose modes' ranges overlap is reported as
    /// "within noise" [default: 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: Option<u32>,
    /// Processes find-scaling spreads each ring over (node hosts, a current-thread runtime
    /// each); 0 keeps every node in the bench process [default: one per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=64))]
    node_hosts: Option<u32>,
    /// find-scaling measures only its ring of N nodes (with the profile's numbers of
    /// operations), e.g. `--quick --only find-scaling --nodes 1000` [default: the profile's
    /// sizes: full 1, 10, 100, 500, 1000; quick 1, 10, 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=5000))]
    nodes: Option<u32>,
    /// Tiny sizes, for the test suite's smoke run (measures the build it runs in, even a
    /// debug one).
    #[arg(long, hide = true)]
    tiny: bool,
}

/// The expected durations of a full and a quick run, for `--help`.
fn durations_help() -> String {
    let secs = |profile| {
        let opts = BenchOptions {
            profile,
            out: PathBuf::new(),
            only: Vec::new(),
            seed: 1,
            runs: profile.default_runs(),
            node_hosts: None,
            ring_nodes: None,
        };
        xtask::expected_duration(&opts).map_or(0.0, |d| d.as_secs_f64())
    };
    format!(
        "Expected duration on 2 cores: full run about {:.0} minutes, --quick about {:.0} s \
         (each run prints its own estimate when it starts, and report.md the time it took).",
        secs(Profile::Full) / 60.0,
        secs(Profile::Quick)
    )
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Set in the environment of the release re-run, so it does not re-run itself.
const REEXEC_GUARD: &str = "THEMIS_XTASK_OPTIMISED";

/// `cargo xtask` builds in the dev profile, where the workspace's own crates are not optimised.
/// Measuring that would be meaningless, so a debug build re-runs itself with `--release`.
fn rerun_optimised() -> Result<ExitCode, xtask::Error> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .env(REEXEC_GUARD, "1");
    let command = format!("{cmd:?}");
    eprintln!("debug build: re-running optimised (cargo run --release)");
    let status = cmd.status().map_err(|source| xtask::Error::Spawn {
        command: command.clone(),
        source,
    })?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn bench(args: BenchArgs) -> Result<ExitCode, xtask::Error> {
    if args.micro {
        xtask::run_micro(&workspace_root(), args.quick)?;
        return Ok(ExitCode::SUCCESS);
    }
    if cfg!(debug_assertions) && !args.tiny && std::env::var_os(REEXEC_GUARD).is_none() {
        return rerun_optimised();
    }
    let profile = if args.tiny {
        Profile::Tiny
    } else if args.quick {
        Profile::Quick
    } else {
        Profile::Full
    };
    let opts = BenchOptions {
        profile,
        out: args
            .out
            .unwrap_or_else(|| workspace_root().join("target").join("bench-report")),
        only: args.only,
        seed: args.seed,
        runs: args.runs.unwrap_or_else(|| profile.default_runs()),
        node_hosts: args.node_hosts.map(|n| n as usize),
        ring_nodes: args.nodes.map(|n| n as usize),
    };
    let outcome = xtask::run_bench(&opts, &Progress::stderr())?;
    for f in &outcome.files {
        eprintln!("wrote {}", f.display());
    }
    if outcome.missed_goals.is_empty() {
        eprintln!(
            "{} points measured; every measured figure meets its goal",
            outcome.measurements
        );
    } else {
        eprintln!("{} points measured; goals missed:", outcome.measurements);
        for g in &outcome.missed_goals {
            eprintln!("  - {g}");
        }
    }
    if outcome.failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("workload runs failed (see report.md):");
        for f in &outcome.failures {
            eprintln!("  - {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench(args),
        Command::NodeHost(args) => xtask::node_host(&args).map(|()| ExitCode::SUCCESS),
        Command::HttpUpstream => xtask::http_upstream().map(|()| ExitCode::SUCCESS),
        Command::TcpRelay { to } => xtask::tcp_relay(to).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
