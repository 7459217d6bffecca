//! Writing report.md, report.json and the SVG plots.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::spread::{Comparison, Spread, fmt_comparison};
use crate::svg::{Chart, Series};
use crate::workload::{Figure, Goal, Metric, PlotAxis, PointSel, Verdict};
use crate::{Error, MachineInfo, Measurement, Mode, RunValues, Workload};

/// Everything one run produced, ready to be written.
pub(crate) struct RunReport<'a> {
    pub(crate) machine: &'a MachineInfo,
    pub(crate) workloads: &'a [Box<dyn Workload>],
    pub(crate) results: &'a [Measurement],
    /// Workload runs that failed.
    pub(crate) failures: &'a [String],
    /// The run's expected duration as announced, and the actual one, in seconds.
    pub(crate) expected_s: f64,
    pub(crate) actual_s: f64,
}

/// report.json, exactly: `{"machine": {...}, "results": [...]}`.
#[derive(Serialize)]
struct Json<'a> {
    machine: &'a MachineInfo,
    results: &'a [Measurement],
}

/// One row of a workload table, computed from the figures and the measurements.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) what: String,
    pub(crate) point: String,
    pub(crate) metric: Metric,
    pub(crate) paper: String,
    /// The median and range of each mode's runs.
    pub(crate) secure: Option<Spread>,
    pub(crate) insecure: Option<Spread>,
    /// Secure against insecure, from the medians, "within noise" where the runs overlap.
    pub(crate) overhead: Option<Comparison>,
    pub(crate) goal: Option<Goal>,
    /// `None`: no goal, or not measured.
    pub(crate) met: Option<Verdict>,
}

fn find<'m>(
    results: &'m [Measurement],
    workload: &str,
    mode: Mode,
    point: &str,
) -> Option<&'m Measurement> {
    results
        .iter()
        .find(|m| m.workload == workload && m.mode == mode && m.point == point)
}

/// The points of a workload in measurement order, without repeats.
fn points(results: &[Measurement], workload: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    results
        .iter()
        .filter(|m| m.workload == workload && seen.insert(m.point.clone()))
        .map(|m| m.point.clone())
        .collect()
}

/// The table rows of one workload.
pub(crate) fn rows(workload: &str, figures: &[Figure], results: &[Measurement]) -> Vec<Row> {
    let mut out = Vec::new();
    for f in figures {
        let selected: Vec<String> = match f.point {
            PointSel::Label(l) => vec![l.to_string()],
            PointSel::Each => points(results, workload),
            PointSel::Prefix(pre) => points(results, workload)
                .into_iter()
                .filter(|p| p.starts_with(pre))
                .collect(),
            PointSel::MostNodes => results
                .iter()
                .filter(|m| m.workload == workload)
                .max_by_key(|m| m.nodes)
                .map(|m| vec![m.point.clone()])
                .unwrap_or_default(),
        };
        let selected = if selected.is_empty() {
            vec!["—".to_string()]
        } else {
            selected
        };
        for point in selected {
            let secure =
                find(results, workload, Mode::Secure, &point).and_then(|m| m.spread(f.metric));
            let insecure =
                find(results, workload, Mode::Insecure, &point).and_then(|m| m.spread(f.metric));
            let overhead = secure
                .zip(insecure)
                .and_then(|(s, i)| Comparison::of(f.metric, s, i));
            out.push(Row {
                what: f.what.to_string(),
                point,
                metric: f.metric,
                paper: f.paper.to_string(),
                secure,
                insecure,
                overhead,
                goal: f.goal,
                met: f
                    .goal
                    .and_then(|g| g.verdict(secure.map(|s| s.median), overhead.as_ref())),
            });
        }
    }
    out
}

/// Three significant digits, thousands grouped: `10,223`, `0.312`, `52.0`.
pub(crate) fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        let int = v.round() as i64;
        let digits = int.unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(ch);
        }
        if int < 0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        // Three significant digits below 1.
        let decimals = (2 - a.log10().floor() as i32).clamp(3, 9) as usize;
        format!("{v:.decimals$}")
    }
}

/// `median (min–max) unit`, or `not measured`.
pub(crate) fn fmt_value(v: Option<Spread>, metric: Metric) -> String {
    v.map_or_else(
        || "not measured".into(),
        |v| format!("{} {}", v.display(), metric.unit()),
    )
}

fn fmt_goal(g: Goal, metric: Metric) -> String {
    match g {
        Goal::SecureAtMost(b) => format!("≤ {} {}", fmt_num(b), metric.unit()),
        Goal::SecureAtLeast(b) => format!("≥ {} {}", fmt_num(b), metric.unit()),
        Goal::OverheadAtMost(b) => format!("overhead ≤ {} %", fmt_num(b)),
    }
}

fn fmt_met(row: &Row) -> &'static str {
    match (row.goal, row.met) {
        (None, _) => "",
        (Some(_), None) => "not measured",
        (Some(_), Some(Verdict::Met)) => "yes",
        (Some(_), Some(Verdict::Missed)) => "**NO — misses the goal**",
        (Some(_), Some(Verdict::WithinNoise)) => {
            "undecided: over the bound at the medians, but the runs overlap"
        }
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), fmt_num)
}

/// The goals the run missed, as sentences (also printed at the end of the run).
pub(crate) fn missed_goals(
    workloads: &[Box<dyn Workload>],
    results: &[Measurement],
) -> Vec<String> {
    let mut out = Vec::new();
    for w in workloads {
        for r in rows(w.name(), &w.figures(), results) {
            if let (Some(g), Some(Verdict::Missed)) = (r.goal, r.met) {
                let value = match g {
                    Goal::OverheadAtMost(_) => format!("overhead {}", fmt_comparison(r.overhead)),
                    _ => fmt_value(r.secure, r.metric),
                };
                out.push(format!(
                    "{} — {} at {}: {} (goal {})",
                    w.title(),
                    r.what,
                    r.point,
                    value,
                    fmt_goal(g, r.metric)
                ));
            }
        }
    }
    out
}

/// A figure of the rust-libp2p peer measured on this machine (issue 6), and where ours is.
struct Peer {
    what: &'static str,
    /// The peer's value and unit.
    theirs: f64,
    unit: &'static str,
    /// `true` when higher is better (throughput).
    higher_is_better: bool,
    /// Our workload and point, and how to read the value from it.
    workload: &'static str,
    point: &'static str,
    value: fn(&Measurement) -> Option<f64>,
}

/// The rust-libp2p 0.57 figures of issue 6 (Kademlia over Noise/TCP, replication 3, 64
/// requests in flight, all nodes in one process, this machine), at 100 nodes.
const LIBP2P_100: [Peer; 5] = [
    Peer {
        what: "find throughput",
        theirs: 1_066.0,
        unit: "ops/s",
        higher_is_better: true,
        workload: "find-scaling",
        point: "N=100",
        value: |m| Some(m.ops_per_sec),
    },
    Peer {
        what: "find p50 latency",
        theirs: 57.0,
        unit: "ms",
        higher_is_better: false,
        workload: "find-scaling",
        point: "N=100",
        value: |m| Some(m.p50_ms),
    },
    Peer {
        what: "provider store throughput",
        theirs: 461.0,
        unit: "ops/s",
        higher_is_better: true,
        workload: "find-scaling",
        point: "store N=100",
        value: |m| Some(m.ops_per_sec),
    },
    Peer {
        what: "join, sequential",
        theirs: 100.0,
        unit: "ms/node",
        higher_is_better: false,
        workload: "join",
        point: "sequential",
        value: |m| Some(m.mean_ms),
    },
    Peer {
        what: "resident memory of the process(es) holding the nodes (summed over node hosts)",
        theirs: 788.0,
        unit: "MB",
        higher_is_better: false,
        workload: "find-scaling",
        point: "N=100",
        value: |m| m.peak_rss_kib.map(|k| k as f64 * 1024.0 / 1e6),
    },
];

/// The report's "Goals" section: the rust-libp2p peer beside us at 100 nodes, and the ratio.
pub(crate) fn libp2p_section(results: &[Measurement]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Goals: against rust-libp2p at 100 nodes

\
         The peer of issue 6: rust-libp2p 0.57, Kademlia over Noise/TCP, replication 3, 64 \
         requests in flight, all nodes in one process, measured on this machine (its 500-node \
         ring did not finish joining in 10 minutes). The goal is to beat it by an order of \
         magnitude at every N. Ratio: how many times better ours is (> 1 is better; ≥ 10 meets \
         the goal). Our join figure comes from workload 3 (10 bootstrap nodes plus the \
         joiners), the others from workload 2's ring of 100.\n"
    );
    let _ = writeln!(
        s,
        "| figure | rust-libp2p | themis secure | themis insecure | ratio (secure) | ≥ 10×? |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for p in &LIBP2P_100 {
        let ours = |mode| find(results, p.workload, mode, p.point).and_then(p.value);
        let (sec, ins) = (ours(Mode::Secure), ours(Mode::Insecure));
        let ratio = sec.filter(|v| *v > 0.0 && v.is_finite()).map(|v| {
            if p.higher_is_better {
                v / p.theirs
            } else {
                p.theirs / v
            }
        });
        let val = |v: Option<f64>| {
            v.map_or_else(
                || "not measured".into(),
                |v| format!("{} {}", fmt_num(v), p.unit),
            )
        };
        let _ = writeln!(
            s,
            "| {} | {} {} | {} | {} | {} | {} |",
            p.what,
            fmt_num(p.theirs),
            p.unit,
            val(sec),
            val(ins),
            ratio.map_or_else(|| "—".into(), |r| format!("{}×", fmt_num(r))),
            match ratio {
                None => "not measured",
                Some(r) if r >= 10.0 => "yes",
                Some(_) => "**NO**",
            }
        );
    }
    s
}

/// The table of every measured point of one workload: throughput and latencies as
/// `median (min–max)` over the point's runs, the other figures as medians. The set-up columns
/// (handshakes and connections dialed per 1,000 operations, during the point) appear only
/// where the workload counted them.
pub(crate) fn points_table(mine: &[&Measurement]) -> String {
    let setups = mine.iter().any(|m| m.handshakes.is_some());
    let mut header = vec![
        "point",
        "mode",
        "runs",
        "nodes",
        "in flight",
        "offered/s",
        "ops/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "mean",
        "max",
        "hops",
        "ops",
        "errors",
        "late sends",
        "send lag p99",
        "peak RSS MiB",
        "fds",
    ];
    if setups {
        header.extend(["handshakes", "per 1K ops", "dials", "per 1K ops"]);
    }
    let mut s = String::new();
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(header.len()));
    let count = |c: Option<u64>| c.map_or_else(|| "—".into(), |c| c.to_string());
    for m in mine {
        let spread =
            |f: fn(&RunValues) -> f64| m.spread_of(f).map_or_else(|| "—".into(), |s| s.display());
        let mut cells = vec![
            m.point.clone(),
            m.mode.to_string(),
            m.runs.len().max(1).to_string(),
            m.nodes.to_string(),
            count(m.concurrency.map(u64::from)),
            opt(m.offered_per_sec),
            spread(|r| r.ops_per_sec),
            spread(|r| r.p50_ms),
            spread(|r| r.p90_ms),
            spread(|r| r.p99_ms),
            spread(|r| r.p999_ms),
            spread(|r| r.mean_ms),
            spread(|r| r.max_ms),
            opt(m.mean_hops),
            m.ops.to_string(),
            m.errors.to_string(),
            count(m.late_sends),
            opt(m.send_lag_p99_ms),
            m.peak_rss_kib
                .map_or_else(|| "—".into(), |k| fmt_num(k as f64 / 1024.0)),
            count(m.open_fds),
        ];
        if setups {
            cells.extend([
                count(m.handshakes),
                opt(m.handshakes_per_1k_ops()),
                count(m.connections_dialed),
                opt(m.dials_per_1k_ops()),
            ]);
        }
        let _ = writeln!(s, "| {} |", cells.join(" | "));
        if let Some(note) = &m.note {
            let _ = writeln!(
                s,
                "| ↳ note: {} |{}",
                note.replace('|', "/"),
                "|".repeat(header.len())
            );
        }
    }
    s
}

fn markdown(r: &RunReport<'_>, plots: &[(String, PathBuf)]) -> String {
    let mut s = String::new();
    machine_section(&mut s, r);
    let _ = writeln!(s, "{}", libp2p_section(r.results));
    for w in r.workloads {
        workload_section(&mut s, w.as_ref(), r.results, plots);
    }
    s
}

/// The report's head: the run, the machine, how to read the figures, the failures and the
/// goals missed.
fn machine_section(s: &mut String, r: &RunReport<'_>) {
    let m = r.machine;
    let _ = writeln!(s, "# themis benchmark report\n");
    let _ = writeln!(
        s,
        "Run of {} ({} profile); expected about {:.0} s, took {:.0} s.\n",
        m.date_utc, m.profile, r.expected_s, r.actual_s
    );
    let _ = writeln!(s, "| machine | |\n|---|---|");
    let _ = writeln!(s, "| CPU | {} |", m.cpu_model);
    let _ = writeln!(
        s,
        "| cores | {} usable, {} logical CPUs |",
        m.cores, m.logical_cpus
    );
    let _ = writeln!(
        s,
        "| memory | {} |",
        m.memory_kib.map_or_else(
            || "unknown".into(),
            |k| format!("{:.1} GiB", k as f64 / 1048576.0)
        )
    );
    let _ = writeln!(s, "| kernel | {} |", m.kernel);
    let _ = writeln!(s, "| rustc | {} |", m.rustc);
    let _ = writeln!(
        s,
        "| commit | {}{} |",
        m.git_commit,
        if m.git_dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
    );
    let _ = writeln!(s, "| harness | {} |", m.harness);
    let _ = writeln!(s, "| runs of every point | {} |\n", m.runs);
    let _ = writeln!(
        s,
        "The paper's figures (ARES 2022, §9) come from a 128-core Xeon E7-8830 at 2.13 GHz running \
         QuickJS processes; ours from the machine above. Overhead is throughput lost or latency \
         added by the security layer, relative to insecure. Open-loop latencies are measured from \
         each operation's scheduled send time (no coordinated omission).\n"
    );
    let _ = writeln!(
        s,
        "{}\n",
        if m.runs > 1 {
            format!(
                "Every point was measured {} times, the modes of a workload taking turns (secure, \
                 insecure, secure, ...), each run on a system built afresh. A figure is the median \
                 over the runs, with their range beside it: `median (min–max)`. An overhead is \
                 computed from the medians, and only where the two modes' ranges are apart; where \
                 they overlap the table says **within noise** and gives both ranges, since the \
                 runs do not show a difference beyond their own spread (an overhead goal is then \
                 met if the medians meet it, and undecided otherwise).",
                m.runs
            )
        } else {
            "Every point was measured once (`--runs 1`): the figures have no spread, and an \
             overhead is a single difference that the run-to-run noise may exceed; run with \
             `--runs 3` or more before drawing a conclusion."
                .to_owned()
        }
    );
    if let Some(load) = m.load_avg_1m
        && load > m.cores as f64 * 0.5
    {
        let _ = writeln!(
            s,
            "**Warning:** the 1-minute load average was {load:.1} on {} cores when the run \
                 started: other processes competed for the CPU, and the latency tails below \
                 are theirs as much as ours.\n",
            m.cores
        );
    }
    if !r.failures.is_empty() {
        let _ = writeln!(s, "## Failures\n");
        for f in r.failures {
            let _ = writeln!(s, "- {f}");
        }
        s.push('\n');
    }
    let missed = missed_goals(r.workloads, r.results);
    let _ = writeln!(s, "## Goals missed\n");
    if missed.is_empty() {
        let _ = writeln!(s, "None of the measured figures misses its goal.\n");
    } else {
        for line in &missed {
            let _ = writeln!(s, "- {line}");
        }
        s.push('\n');
    }
}

/// One workload's section: its method, its table of figures, its own comparisons, every
/// measured point, and its plots.
fn workload_section(
    s: &mut String,
    w: &dyn Workload,
    results: &[Measurement],
    plots: &[(String, PathBuf)],
) {
    let _ = writeln!(s, "## {}\n\n{}\n", w.title(), w.method());
    let _ = writeln!(
        s,
        "| figure | point | paper | ours secure | ours insecure | overhead | goal | met? |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for row in rows(w.name(), &w.figures(), results) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.what,
            row.point,
            if row.paper.is_empty() {
                "—"
            } else {
                &row.paper
            },
            fmt_value(row.secure, row.metric),
            fmt_value(row.insecure, row.metric),
            fmt_comparison(row.overhead),
            row.goal
                .map_or_else(|| "—".into(), |g| fmt_goal(g, row.metric)),
            fmt_met(&row),
        );
    }
    s.push('\n');
    if let Some(extra) = w.extra_markdown(results) {
        let _ = writeln!(s, "{extra}");
    }
    let mine: Vec<&Measurement> = results.iter().filter(|m| m.workload == w.name()).collect();
    if !mine.is_empty() {
        let _ = writeln!(s, "All measured points (latencies in ms):\n");
        let _ = write!(s, "{}", points_table(&mine));
        s.push('\n');
    }
    for (workload, file) in plots {
        if workload == w.name() {
            let name = file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = writeln!(s, "![{name}]({name})\n");
        }
    }
}

fn x_of(axis: PlotAxis, m: &Measurement) -> Option<f64> {
    match axis {
        PlotAxis::Nodes => Some(f64::from(m.nodes)),
        PlotAxis::Concurrency => m.concurrency.map(f64::from),
    }
}

/// The charts of one workload: throughput and latency against its axis, and latency CDFs.
pub(crate) fn charts(w: &dyn Workload, results: &[Measurement]) -> Vec<(String, Chart)> {
    let mine: Vec<&Measurement> = results
        .iter()
        .filter(|m| m.workload == w.name() && w.plotted(&m.point))
        .collect();
    let mut out = Vec::new();
    if let Some(axis) = w.plot_axis() {
        let xs: BTreeSet<u64> = mine
            .iter()
            .filter_map(|m| x_of(axis, m))
            .map(|x| x as u64)
            .collect();
        if xs.len() >= 2 {
            let (x_label, log_x) = match axis {
                PlotAxis::Nodes => ("nodes", true),
                PlotAxis::Concurrency => ("operations in flight", false),
            };
            let line = |mode: Mode, f: &dyn Fn(&Measurement) -> f64| {
                let mut pts: Vec<(f64, f64)> = mine
                    .iter()
                    .filter(|m| m.mode == mode)
                    .filter_map(|m| x_of(axis, m).map(|x| (x, f(m))))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                pts
            };
            let series = |name: &str, mode: Mode, colour, f: &dyn Fn(&Measurement) -> f64| Series {
                name: name.into(),
                points: line(mode, f),
                colour,
                dashed: mode == Mode::Insecure,
            };
            out.push((
                format!("{}-throughput.svg", w.name()),
                Chart {
                    title: format!("{}: throughput", w.title()),
                    x_label: x_label.into(),
                    y_label: "operations per second".into(),
                    log_x,
                    y_range: None,
                    series: vec![
                        series("secure", Mode::Secure, 0, &|m| m.ops_per_sec),
                        series("insecure", Mode::Insecure, 1, &|m| m.ops_per_sec),
                    ],
                },
            ));
            out.push((
                format!("{}-latency.svg", w.name()),
                Chart {
                    title: format!("{}: latency", w.title()),
                    x_label: x_label.into(),
                    y_label: "latency (ms)".into(),
                    log_x,
                    y_range: None,
                    series: vec![
                        series("secure p50", Mode::Secure, 0, &|m| m.p50_ms),
                        series("secure p99", Mode::Secure, 2, &|m| m.p99_ms),
                        series("insecure p50", Mode::Insecure, 1, &|m| m.p50_ms),
                        series("insecure p99", Mode::Insecure, 4, &|m| m.p99_ms),
                    ],
                },
            ));
        }
    }
    // Latency CDFs, one colour per point, secure solid and insecure dashed; at most 8 lines.
    let pts = points(results, w.name());
    let mut series = Vec::new();
    for (i, point) in pts.iter().enumerate() {
        for &mode in w.modes() {
            if let Some(m) = find(results, w.name(), mode, point) {
                let cdf: Vec<(f64, f64)> = m
                    .latency
                    .cdf()
                    .into_iter()
                    .map(|(ns, f)| ((ns as f64 / 1e6).max(1e-6), f))
                    .collect();
                if !cdf.is_empty() && series.len() < 8 {
                    series.push(Series {
                        name: format!("{point} {mode}"),
                        points: cdf,
                        colour: i,
                        dashed: mode != Mode::Secure,
                    });
                }
            }
        }
    }
    if !series.is_empty() {
        out.push((
            format!("{}-cdf.svg", w.name()),
            Chart {
                title: format!("{}: latency CDF", w.title()),
                x_label: "latency (ms, log scale)".into(),
                y_label: "fraction of operations".into(),
                log_x: true,
                y_range: Some((0.0, 1.0)),
                series,
            },
        ));
    }
    out
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes report.md, report.json and the plots into `dir`; returns the files written.
pub(crate) fn write_all(dir: &Path, r: &RunReport<'_>) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    let mut plots = Vec::new();
    for w in r.workloads {
        for (name, chart) in charts(w.as_ref(), r.results) {
            let path = dir.join(&name);
            write(&path, &chart.render())?;
            plots.push((w.name().to_string(), path.clone()));
            files.push(path);
        }
    }
    let json = dir.join("report.json");
    let mut text = serde_json::to_string_pretty(&Json {
        machine: r.machine,
        results: r.results,
    })?;
    text.push('\n');
    write(&json, &text)?;
    files.push(json);
    let md = dir.join("report.md");
    write(&md, &markdown(r, &plots))?;
    files.push(md);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::RunStats;
    use crate::workload::Params;
    use crate::{Error, Histogram, Progress};
    use std::time::Duration;

    struct Fake;
    impl Workload for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn title(&self) -> &'static str {
            "9. fake find"
        }
        fn method(&self) -> String {
            "made up".into()
        }
        fn figures(&self) -> Vec<Figure> {
            vec![
                Figure {
                    what: "tput",
                    point: PointSel::Each,
                    metric: Metric::OpsPerSec,
                    paper: "Fig. 4",
                    goal: Some(Goal::OverheadAtMost(10.0)),
                },
                Figure {
                    what: "p50 at 1000",
                    point: PointSel::Label("N=1000"),
                    metric: Metric::P50Ms,
                    paper: "",
                    goal: Some(Goal::SecureAtMost(1.0)),
                },
                Figure {
                    what: "biggest",
                    point: PointSel::MostNodes,
                    metric: Metric::MeanMs,
                    paper: "331 ms",
                    goal: None,
                },
            ]
        }
        fn plot_axis(&self) -> Option<PlotAxis> {
            Some(PlotAxis::Nodes)
        }
        fn expected_duration(&self, _: &Params) -> Duration {
            Duration::ZERO
        }
        fn run(&self, _: Mode, _: &Params, _: &Progress) -> Result<Vec<Measurement>, Error> {
            Ok(vec![])
        }
    }

    fn point(mode: Mode, nodes: u32, ops: u64, latency_ms: u64) -> Measurement {
        let mut stats = RunStats::default();
        stats.ok = ops;
        stats.elapsed = Duration::from_secs(1);
        let mut h = Histogram::new();
        for i in 0..100 {
            h.record_ns(latency_ms * 1_000_000 + i);
        }
        stats.latency = h;
        Measurement::from_stats("fake", mode, format!("N={nodes}"), nodes, &stats)
    }

    fn results() -> Vec<Measurement> {
        vec![
            point(Mode::Secure, 10, 950, 1),
            point(Mode::Insecure, 10, 1000, 1),
            point(Mode::Secure, 1000, 800, 2),
            point(Mode::Insecure, 1000, 1000, 1),
        ]
    }

    #[test]
    fn rows_compare_secure_with_insecure() {
        let rows = rows("fake", &Fake.figures(), &results());
        assert_eq!(rows.len(), 4); // 2 points + 1 label + 1 most-nodes
        assert_eq!(rows[0].point, "N=10");
        assert!((rows[0].overhead.unwrap().pct - 5.0).abs() < 1e-9);
        assert_eq!(rows[0].met, Some(Verdict::Met));
        assert!((rows[1].overhead.unwrap().pct - 20.0).abs() < 1e-9);
        assert_eq!(rows[1].met, Some(Verdict::Missed));
        assert_eq!(rows[2].met, Some(Verdict::Missed)); // p50 2 ms > 1 ms
        assert_eq!(rows[3].point, "N=1000");
        assert_eq!(rows[3].met, None);
        let missing = super::rows("fake", &Fake.figures(), &[]);
        assert!(
            missing
                .iter()
                .all(|r| r.secure.is_none() && r.met.is_none())
        );
    }

    /// A point measured over several runs, one throughput per run.
    fn runs(mode: Mode, nodes: u32, ops: &[u64]) -> Measurement {
        Measurement::median_of(ops.iter().map(|&o| point(mode, nodes, o, 1)).collect()).unwrap()
    }

    #[test]
    fn overlapping_runs_are_reported_within_noise() {
        // N=10: the secure median is 20 % lower, but the runs overlap; N=1000: apart.
        let results = vec![
            runs(Mode::Secure, 10, &[700, 800, 1_050]),
            runs(Mode::Insecure, 10, &[950, 1_000, 1_100]),
            runs(Mode::Secure, 1000, &[780, 800, 820]),
            runs(Mode::Insecure, 1000, &[990, 1_000, 1_010]),
        ];
        let rows = rows("fake", &Fake.figures(), &results);
        assert!(rows[0].overhead.unwrap().within_noise());
        assert_eq!(rows[0].met, Some(Verdict::WithinNoise));
        assert_eq!(rows[1].met, Some(Verdict::Missed));
        let workloads: Vec<Box<dyn Workload>> = vec![Box::new(Fake)];
        let missed = missed_goals(&workloads, &results);
        assert!(missed.iter().all(|m| !m.contains("N=10:")), "{missed:?}");
        assert!(missed[0].contains("N=1000: overhead 20.0 %"), "{missed:?}");
        let mut machine = MachineInfo::collect("tiny", "test");
        machine.runs = 3;
        let r = RunReport {
            machine: &machine,
            workloads: &workloads,
            results: &results,
            failures: &[],
            expected_s: 1.0,
            actual_s: 1.0,
        };
        let md = markdown(&r, &[]);
        assert!(md.contains("| runs of every point | 3 |"), "{md}");
        assert!(
            md.contains(
                "| tput | N=10 | Fig. 4 | 800 (700–1,050) ops/s | 1,000 (950–1,100) ops/s | \
                 within noise (700–1,050 vs 950–1,100 ops/s) | overhead ≤ 10.0 % | undecided"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 800 (780–820) ops/s | 1,000 (990–1,010) ops/s | 20.0 % |"),
            "{md}"
        );
        // The points table: the runs and each figure's range.
        assert!(
            md.contains("| N=10 | secure | 3 | 10 | — | — | 800 (700–1,050) | 1.00 |"),
            "{md}"
        );
        let dir = tempfile::tempdir().unwrap();
        write_all(dir.path(), &r).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json["machine"]["runs"], 3);
        let first = &json["results"][0];
        assert_eq!(first["ops_per_sec"], 800.0);
        let each: Vec<f64> = first["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["ops_per_sec"].as_f64().unwrap())
            .collect();
        assert_eq!(each, [700.0, 800.0, 1_050.0]);
    }

    #[test]
    fn missed_goals_are_listed() {
        let workloads: Vec<Box<dyn Workload>> = vec![Box::new(Fake)];
        let missed = missed_goals(&workloads, &results());
        assert_eq!(missed.len(), 2, "{missed:?}");
        assert!(missed[0].contains("overhead 20.0 %"), "{}", missed[0]);
    }

    #[test]
    fn numbers() {
        assert_eq!(fmt_num(10_223.4), "10,223");
        assert_eq!(fmt_num(1_234_567.0), "1,234,567");
        assert_eq!(fmt_num(331.0), "331");
        assert_eq!(fmt_num(52.04), "52.0");
        assert_eq!(fmt_num(2.1), "2.10");
        assert_eq!(fmt_num(0.3124), "0.312");
        assert_eq!(fmt_num(0.01234), "0.0123");
        assert_eq!(fmt_num(-12_000.0), "-12,000");
        assert_eq!(fmt_num(f64::INFINITY), "—");
    }

    #[test]
    fn writes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let machine = MachineInfo::collect("tiny", "test");
        let workloads: Vec<Box<dyn Workload>> = vec![Box::new(Fake)];
        let results = results();
        let r = RunReport {
            machine: &machine,
            workloads: &workloads,
            results: &results,
            failures: &["fake (secure): it broke".to_string()],
            expected_s: 1.0,
            actual_s: 1.0,
        };
        let files = write_all(dir.path(), &r).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "fake-throughput.svg",
                "fake-latency.svg",
                "fake-cdf.svg",
                "report.json",
                "report.md"
            ]
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json.as_object().unwrap().len(), 2);
        assert_eq!(json["results"].as_array().unwrap().len(), 4);
        assert_eq!(json["results"][0]["mode"], "secure");
        assert_eq!(
            json["results"][0]["offered_per_sec"],
            serde_json::Value::Null
        );
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("| tput | N=1000 | Fig. 4 | 800 ops/s | 1,000 ops/s | 20.0 % | overhead ≤ 10.0 % | **NO — misses the goal** |"), "{md}");
        assert!(md.contains("![fake-cdf.svg](fake-cdf.svg)"));
        assert!(md.contains("## Failures\n\n- fake (secure): it broke"));
    }
}
