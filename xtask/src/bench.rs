//! `cargo xtask bench`: runs the selected workloads in both modes and writes the report.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::machine::{self, MachineInfo};
use crate::report::{self, RunReport};
use crate::workload::{Params, Profile};
use crate::{Error, Measurement, Progress, Workload, workloads};

/// How the harness runs the system under test (recorded in the report), with `node_hosts`
/// node host processes for find-scaling (0: none).
///
/// Workloads other than find-scaling keep their nodes in the bench process: 1000 processes on
/// 2 cores would measure the scheduler and process start-up (the paper's 320 ms V8 start per
/// node) more than themis. find-scaling spreads each ring over a few node host processes (one
/// per core by default), each a current-thread runtime, so that where a node's tasks land on
/// the bench's worker threads no longer decides the cost of a request.
pub fn harness(node_hosts: usize) -> String {
    let common = "nodes are tasks of the bench process (one tokio runtime with a worker per \
                  core; local-find-store: each of the two nodes on a current-thread runtime \
                  of its own thread, the client's also running the load) talking over \
                  127.0.0.1 sockets; key-agreement runs in memory, no sockets";
    if node_hosts == 0 {
        format!("in-process: {common}; find-scaling too: every node in the bench process")
    } else {
        format!(
            "find-scaling: each ring spread over {node_hosts} node host processes (at most one \
             per node; contiguous slices of the ring, a current-thread tokio runtime each, \
             nodes on 127.0.0.1 sockets), the bench process driving the finds and stores over \
             the hosts' standard input and output, so that its latencies include that round \
             trip; the other workloads: {common}"
        )
    }
}

/// Options of a benchmark run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Sizes.
    pub profile: Profile,
    /// Where the report goes.
    pub out: PathBuf,
    /// Workloads to run by name; empty means all.
    pub only: Vec<String>,
    /// Seed passed to every workload.
    pub seed: u64,
    /// Runs of every point (at least 1): each figure is the median over them.
    pub runs: u32,
    /// Node host processes of the workloads that spread a ring over processes (find-scaling);
    /// `Some(0)`: every node in the bench process; `None`: one per core.
    pub node_hosts: Option<usize>,
    /// find-scaling measures only its ring of this many nodes (`--nodes`); `None`: the
    /// profile's sizes.
    pub ring_nodes: Option<usize>,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct BenchOutcome {
    /// Files written, the report last.
    pub files: Vec<PathBuf>,
    /// Measured points.
    pub measurements: usize,
    /// Goals missed, one sentence each.
    pub missed_goals: Vec<String>,
    /// Workload runs that failed (the others were still measured and reported).
    pub failures: Vec<String>,
}

/// The names of all workloads, in report order.
pub fn workload_names() -> Vec<&'static str> {
    workloads::all().iter().map(|w| w.name()).collect()
}

fn select(only: &[String]) -> Result<Vec<Box<dyn Workload>>, Error> {
    let all = workloads::all();
    if only.is_empty() {
        return Ok(all);
    }
    for name in only {
        if !all.iter().any(|w| w.name() == name) {
            return Err(Error::UnknownWorkload {
                name: name.clone(),
                known: workload_names().join(", "),
            });
        }
    }
    Ok(all
        .into_iter()
        .filter(|w| only.iter().any(|n| n == w.name()))
        .collect())
}

/// The expected duration of a run with these options.
pub fn expected_duration(opts: &BenchOptions) -> Result<Duration, Error> {
    let params = params(opts);
    Ok(select(&opts.only)?
        .iter()
        .map(|w| {
            w.expected_duration(&params)
                * u32::try_from(w.modes().len()).unwrap_or(2)
                * opts.runs.max(1)
        })
        .sum())
}

fn params(opts: &BenchOptions) -> Params {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Params {
        profile: opts.profile,
        seed: opts.seed,
        cores,
        node_hosts: opts.node_hosts.unwrap_or(cores),
        ring_nodes: opts.ring_nodes,
    }
}

/// Runs the benchmark and writes report.md, report.json and the plots into `opts.out`.
pub fn run_bench(opts: &BenchOptions, progress: &Progress) -> Result<BenchOutcome, Error> {
    let selected = select(&opts.only)?;
    let params = params(opts);
    let expected = expected_duration(opts)?;
    progress.println(format!(
        "themis bench ({} profile): {} workload(s), expected duration about {:.0} s",
        opts.profile.name(),
        selected.len(),
        expected.as_secs_f64()
    ));
    let mut machine = MachineInfo::collect(opts.profile.name(), &harness(params.node_hosts));
    let runs = opts.runs.max(1);
    machine.runs = runs;
    let started = Instant::now();
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for w in &selected {
        // The modes take turns (secure, insecure, secure, ...), so that a change in the
        // machine's load during the workload falls on both modes alike.
        let mut measured = Vec::new();
        for run in 1..=runs {
            for &mode in w.modes() {
                let label = if runs > 1 {
                    format!("{} {mode} {run}/{runs}", w.name())
                } else {
                    format!("{} {mode}", w.name())
                };
                progress.stage(label.clone(), 0);
                let rss_reset = machine::reset_peak_rss();
                let mut points = match w.run(mode, &params, progress) {
                    Ok(points) => points,
                    Err(e) => {
                        // One failing run must not cost the whole report: report it, go on.
                        progress.println(format!("{label} failed: {e}"));
                        let of = if runs > 1 {
                            format!(", run {run} of {runs}")
                        } else {
                            String::new()
                        };
                        failures.push(format!("{} ({mode}{of}): {e}", w.name()));
                        continue;
                    }
                };
                let (rss, fds) = (machine::peak_rss_kib(), machine::open_fds());
                for p in &mut points {
                    // Peak RSS is per workload and mode only if the kernel let us reset it.
                    if p.peak_rss_kib.is_none() && rss_reset {
                        p.peak_rss_kib = rss;
                    }
                    if p.open_fds.is_none() {
                        p.open_fds = fds;
                    }
                }
                measured.extend(points);
            }
        }
        results.extend(combine_runs(measured));
    }
    progress.finish();
    let run = RunReport {
        machine: &machine,
        workloads: &selected,
        results: &results,
        failures: &failures,
        expected_s: expected.as_secs_f64(),
        actual_s: started.elapsed().as_secs_f64(),
    };
    let files = report::write_all(&opts.out, &run)?;
    Ok(BenchOutcome {
        files,
        measurements: results.len(),
        missed_goals: report::missed_goals(&selected, &results),
        failures,
    })
}

/// One measurement per workload, mode and point from the runs' measurements (in the order the
/// runs produced them): the medians over the runs, every run kept. The points keep the order
/// in which they were first measured.
pub(crate) fn combine_runs(measured: Vec<Measurement>) -> Vec<Measurement> {
    let mut groups: Vec<Vec<Measurement>> = Vec::new();
    for m in measured {
        match groups.iter_mut().find(|g| {
            g.first()
                .is_some_and(|f| f.workload == m.workload && f.mode == m.mode && f.point == m.point)
        }) {
            Some(g) => g.push(m),
            None => groups.push(vec![m]),
        }
    }
    groups
        .into_iter()
        .filter_map(Measurement::median_of)
        .collect()
}

/// `cargo xtask bench --micro`: runs every crate's criterion benches (`cargo bench --workspace
/// --bench '*'`) with the output passed through. `quick` adds criterion's own `--quick`.
pub fn run_micro(workspace: &Path, quick: bool) -> Result<(), Error> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace)
        .args(["bench", "--workspace", "--bench", "*"]);
    if quick {
        cmd.args(["--", "--quick"]);
    }
    let command = format!("{cmd:?}");
    let status = cmd.status().map_err(|source| Error::Spawn {
        command: command.clone(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::ChildFailed { command, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_is_checked() {
        assert!(matches!(
            select(&["nope".into()]),
            Err(Error::UnknownWorkload { .. })
        ));
        let one = select(&["apps".into()]).unwrap();
        assert_eq!(one[0].modes().len(), 3, "secure, insecure and direct");
        let one = select(&["key-agreement".into()]).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(select(&[]).unwrap().len(), 7);
        assert_eq!(
            workload_names(),
            [
                "local-find-store",
                "find-scaling",
                "join",
                "leave-blink",
                "key-agreement",
                "apps",
                "sidecar"
            ]
        );
    }

    #[test]
    fn a_quick_run_is_expected_under_three_minutes_per_run() {
        let mut opts = BenchOptions {
            profile: Profile::Quick,
            out: PathBuf::new(),
            only: vec![],
            seed: 1,
            runs: 1,
            node_hosts: None,
            ring_nodes: None,
        };
        let one = expected_duration(&opts).unwrap();
        assert!(one < Duration::from_secs(180), "{one:?}");
        opts.runs = Profile::Quick.default_runs();
        assert_eq!(expected_duration(&opts).unwrap(), one * opts.runs);
    }

    #[test]
    fn runs_combine_per_workload_mode_and_point_in_first_measured_order() {
        let m = |mode, point: &str, ops| {
            let mut stats = crate::RunStats::default();
            stats.ok = ops;
            stats.elapsed = Duration::from_secs(1);
            Measurement::from_stats("w", mode, point, 1, &stats)
        };
        use crate::Mode::{Insecure, Secure};
        let measured = vec![
            m(Secure, "a", 10),
            m(Secure, "b", 20),
            m(Insecure, "a", 30),
            m(Secure, "a", 12),
            m(Secure, "b", 22),
            // Insecure's second run failed: its point keeps the one run it has.
            m(Secure, "a", 11),
            m(Secure, "b", 21),
            m(Insecure, "a", 31),
        ];
        let out = combine_runs(measured);
        let summary: Vec<(String, crate::Mode, usize, u64)> = out
            .iter()
            .map(|m| (m.point.clone(), m.mode, m.runs.len(), m.ops))
            .collect();
        assert_eq!(
            summary,
            [
                ("a".to_owned(), Secure, 3, 11),
                ("b".to_owned(), Secure, 3, 21),
                ("a".to_owned(), Insecure, 2, 31),
            ]
        );
    }
}
