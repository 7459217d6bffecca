//! The plug-in point: what a workload is, what it measures, and what the paper reported.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::load::RunStats;
use crate::{Error, Histogram, Progress};

/// Secure (THEMIS) or insecure (the same operation without the security layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// With authentication and encryption.
    Secure,
    /// Without: the paper's "insecure counterpart".
    Insecure,
    /// No themis at all: the application calling its functions directly, in process (the
    /// baseline of workload 6 only).
    Direct,
}

impl Mode {
    /// Both modes, in the order a run measures them.
    pub const BOTH: [Mode; 2] = [Mode::Secure, Mode::Insecure];
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Secure => "secure",
            Mode::Insecure => "insecure",
            Mode::Direct => "direct",
        })
    }
}

/// Which pass over a freshly built system a point is (workload 2 measures two).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The first pass: sessions (secure) and connections are set up as the operations need
    /// them, and that set-up is part of what is measured.
    Cold,
    /// A second pass of the same size right after the first: nearly every pair of nodes the
    /// operations involve already has its session.
    Warm,
}

/// How big a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// The full run the report is meant for.
    Full,
    /// `--quick`: every workload at reduced size, under 3 minutes on 2 cores.
    Quick,
    /// The test suite's smoke run: tiny sizes, seconds in all.
    Tiny,
}

impl Profile {
    /// Picks the value for this profile.
    pub fn pick<T>(self, full: T, quick: T, tiny: T) -> T {
        match self {
            Profile::Full => full,
            Profile::Quick => quick,
            Profile::Tiny => tiny,
        }
    }

    /// `full`, `quick` or `tiny`.
    pub fn name(self) -> &'static str {
        self.pick("full", "quick", "tiny")
    }
}

/// What every workload's run receives.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Sizes to use.
    pub profile: Profile,
    /// Seed for anything a workload draws at random (object ids, node order).
    pub seed: u64,
    /// Cores the run may use.
    pub cores: usize,
}

/// One measured point of one workload in one mode: one object of report.json's `results`.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// The workload's name.
    pub workload: String,
    /// Secure or insecure.
    pub mode: Mode,
    /// Which point of the workload this is (`c=1`, `N=100`, `find @50K/s`); secure and
    /// insecure results with the same point are compared.
    pub point: String,
    /// Nodes in the system during the measurement.
    pub nodes: u32,
    /// Cold or warm pass, where the workload measures both (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Closed loop: operations kept in flight.
    pub concurrency: Option<u32>,
    /// Open loop: the rate actually offered, per second.
    pub offered_per_sec: Option<f64>,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Latency percentiles and mean, milliseconds (open loop: from the due time).
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean overlay hops per operation, where the workload counts them.
    pub mean_hops: Option<f64>,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Wall time of the measurement, seconds.
    pub duration_s: f64,
    /// Open loop: sends more than 1 ms behind schedule.
    pub late_sends: Option<u64>,
    /// Open loop: 99th percentile of how late operations left against their schedule, ms (the
    /// pacer's own error, plus waits for the in-flight bound).
    pub send_lag_p99_ms: Option<f64>,
    /// Peak resident set size of the harness process during this workload and mode, KiB.
    pub peak_rss_kib: Option<u64>,
    /// Open file descriptors at the end of the measurement.
    pub open_fds: Option<u64>,
    /// Key agreements (paper Fig. 2) completed during the point, over all nodes, counted once
    /// (on the initiator's side), where the workload counts them.
    pub handshakes: Option<u64>,
    /// Transport connections set up during the point (TCP dials), where the workload counts
    /// them.
    pub connections_dialed: Option<u64>,
    /// Anything the reader must know about this point.
    pub note: Option<String>,
    /// The latency distribution, for the CDF plot (not serialised).
    #[serde(skip)]
    pub latency: Histogram,
}

fn ms(ns: f64) -> f64 {
    ns / 1e6
}

impl Measurement {
    /// A measurement from a load run's statistics.
    pub fn from_stats(
        workload: &str,
        mode: Mode,
        point: impl Into<String>,
        nodes: u32,
        stats: &RunStats,
    ) -> Self {
        let h = &stats.latency;
        let q = |q| ms(h.value_at_quantile(q) as f64);
        Self {
            workload: workload.into(),
            mode,
            point: point.into(),
            nodes,
            phase: None,
            concurrency: None,
            offered_per_sec: stats.offered_per_sec,
            ops_per_sec: stats.ops_per_sec(),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            mean_ms: ms(h.mean_ns()),
            max_ms: ms(h.max_ns() as f64),
            mean_hops: stats.mean_hops(),
            ops: stats.ok,
            errors: stats.errors,
            duration_s: stats.elapsed.as_secs_f64(),
            late_sends: stats.offered_per_sec.map(|_| stats.late_sends),
            send_lag_p99_ms: stats
                .offered_per_sec
                .map(|_| ms(stats.send_lag.value_at_quantile(0.99) as f64)),
            peak_rss_kib: None,
            open_fds: None,
            handshakes: None,
            connections_dialed: None,
            note: stats
                .first_error
                .as_ref()
                .map(|e| format!("first error: {e}")),
            latency: h.clone(),
        }
    }

    /// Sets the closed-loop concurrency.
    pub fn with_concurrency(mut self, c: usize) -> Self {
        self.concurrency = u32::try_from(c).ok();
        self
    }

    /// Sets the phase.
    pub fn with_phase(mut self, phase: Phase) -> Self {
        self.phase = Some(phase);
        self
    }

    /// Sets the set-up counts of the point (handshakes and connections made during it).
    pub fn with_setups(mut self, handshakes: u64, connections_dialed: u64) -> Self {
        self.handshakes = Some(handshakes);
        self.connections_dialed = Some(connections_dialed);
        self
    }

    /// `count` per 1,000 successful operations of this point.
    fn per_1k_ops(&self, count: Option<u64>) -> Option<f64> {
        count
            .filter(|_| self.ops > 0)
            .map(|c| c as f64 * 1000.0 / self.ops as f64)
    }

    /// Handshakes per 1,000 successful operations, where counted.
    pub fn handshakes_per_1k_ops(&self) -> Option<f64> {
        self.per_1k_ops(self.handshakes)
    }

    /// Connections dialed per 1,000 successful operations, where counted.
    pub fn dials_per_1k_ops(&self) -> Option<f64> {
        self.per_1k_ops(self.connections_dialed)
    }

    /// The value of `metric` at this point.
    pub fn value(&self, metric: Metric) -> f64 {
        match metric {
            Metric::OpsPerSec => self.ops_per_sec,
            Metric::MsPerOp => {
                if self.ops_per_sec > 0.0 {
                    1e3 / self.ops_per_sec
                } else {
                    f64::INFINITY
                }
            }
            Metric::MeanMs => self.mean_ms,
            Metric::P50Ms => self.p50_ms,
            Metric::P99Ms => self.p99_ms,
            Metric::HandshakesPer1K => self.handshakes_per_1k_ops().unwrap_or(f64::NAN),
            Metric::DialsPer1K => self.dials_per_1k_ops().unwrap_or(f64::NAN),
            Metric::OfferedPerSec => self.offered_per_sec.unwrap_or(f64::NAN),
        }
    }
}

/// A figure a workload reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Throughput (higher is better).
    OpsPerSec,
    /// Wall time per operation, `1000 / ops_per_sec` (lower is better): the paper's
    /// "ms/node" of a parallel join.
    MsPerOp,
    /// Mean latency (lower is better).
    MeanMs,
    /// Median latency.
    P50Ms,
    /// 99th percentile latency.
    P99Ms,
    /// Key agreements during the point per 1,000 operations (set-up work, not a speed).
    HandshakesPer1K,
    /// Connections dialed during the point per 1,000 operations.
    DialsPer1K,
    /// The offered rate of an open-loop point (higher is better: the search for the highest
    /// rate within a latency bound reports it).
    OfferedPerSec,
}

impl Metric {
    /// `true` for throughput, where the overhead is the fraction lost.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::OpsPerSec | Metric::OfferedPerSec)
    }

    /// Unit for the tables.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::OpsPerSec | Metric::OfferedPerSec => "ops/s",
            Metric::MsPerOp | Metric::MeanMs | Metric::P50Ms | Metric::P99Ms => "ms",
            Metric::HandshakesPer1K => "handshakes per 1K ops",
            Metric::DialsPer1K => "dials per 1K ops",
        }
    }

    /// Security overhead in percent: throughput lost, or latency added, relative to insecure.
    /// `None` for counts (handshakes, dials), which are not a cost to compare that way.
    pub fn overhead_pct(self, secure: f64, insecure: f64) -> Option<f64> {
        if matches!(self, Metric::HandshakesPer1K | Metric::DialsPer1K) {
            return None;
        }
        if !(insecure.is_finite() && secure.is_finite()) || insecure <= 0.0 {
            return None;
        }
        Some(if self.higher_is_better() {
            (insecure - secure) / insecure * 100.0
        } else {
            (secure - insecure) / insecure * 100.0
        })
    }
}

/// Which measured points a figure covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointSel {
    /// The point with this label.
    Label(&'static str),
    /// Every point the workload measured (one table row each).
    Each,
    /// Every point whose label starts with this (one table row each).
    Prefix(&'static str),
    /// The point with the most nodes.
    MostNodes,
}

/// What a goal constrains.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    /// The secure value is at most this.
    SecureAtMost(f64),
    /// The secure value is at least this.
    SecureAtLeast(f64),
    /// The security overhead, in percent, is at most this.
    OverheadAtMost(f64),
}

impl Goal {
    /// Whether the goal is met by these values (`None` when they are missing).
    pub fn met(self, secure: Option<f64>, overhead: Option<f64>) -> Option<bool> {
        match self {
            Goal::SecureAtMost(b) => secure.map(|v| v <= b),
            Goal::SecureAtLeast(b) => secure.map(|v| v >= b),
            Goal::OverheadAtMost(b) => overhead.map(|v| v <= b),
        }
    }
}

/// One row of a workload's table in report.md: the paper's figure and our goal for a metric.
#[derive(Clone, Copy, Debug)]
pub struct Figure {
    /// What is measured, in words.
    pub what: &'static str,
    /// The points it covers.
    pub point: PointSel,
    /// The metric.
    pub metric: Metric,
    /// The paper's figure, as text (`"≈ 52 ms"`), or `""` when the paper has none.
    pub paper: &'static str,
    /// Our goal, if any.
    pub goal: Option<Goal>,
}

impl Figure {
    /// A figure without a goal.
    pub const fn new(
        what: &'static str,
        point: PointSel,
        metric: Metric,
        paper: &'static str,
    ) -> Self {
        Self {
            what,
            point,
            metric,
            paper,
            goal: None,
        }
    }

    /// The same figure with `goal`.
    pub const fn with_goal(mut self, goal: Goal) -> Self {
        self.goal = Some(goal);
        self
    }
}

/// The x axis of a workload's scaling plot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlotAxis {
    /// Against node count (the paper's Fig. 4).
    Nodes,
    /// Against operations in flight.
    Concurrency,
}

/// A benchmark workload. Implementations measure both modes through the same code path so
/// the overhead compares like with like.
///
/// To add one: implement this trait in `xtask/src/workloads/<name>.rs` and list it in
/// `workloads::all()`; its [`Workload::figures`] carry the paper's figures and our goals. In
/// `run`, build a runtime with [`crate::runtime`],
/// start the nodes (in-process tasks on 127.0.0.1), drive load with [`crate::open_loop`] (use
/// `Timer::Precise`) or [`crate::closed_loop`], call `progress.add_len(ops)` before each point,
/// and return one [`Measurement::from_stats`] per point, labelled as the figures expect
/// (`find @50K/s`, `N=1000`, `sequential`, ...). The harness adds peak RSS and open fds, writes
/// the tables and plots, and flags missed goals.
pub trait Workload {
    /// Short name, used by `--only` and in file names (`key-agreement`).
    fn name(&self) -> &'static str;
    /// Title for the report (`5. Key pair creation + key agreement`).
    fn title(&self) -> &'static str;
    /// How it is measured: a paragraph for the report.
    fn method(&self) -> String;
    /// The rows of the report's table.
    fn figures(&self) -> Vec<Figure>;
    /// The axis of its scaling plot, if it has one.
    fn plot_axis(&self) -> Option<PlotAxis>;
    /// How long one mode's run is expected to take (on average over [`Workload::modes`]).
    fn expected_duration(&self, params: &Params) -> Duration;
    /// The modes a run measures, in order: secure and insecure unless the workload also has
    /// a [`Mode::Direct`] baseline.
    fn modes(&self) -> &'static [Mode] {
        &Mode::BOTH
    }
    /// Whether the point labelled `point` belongs on the scaling plot (default: all).
    fn plotted(&self, _point: &str) -> bool {
        true
    }
    /// Markdown the report adds after the workload's table (its own comparisons), if any.
    fn extra_markdown(&self, _results: &[Measurement]) -> Option<String> {
        None
    }
    /// Runs the workload in `mode` and returns its measured points.
    fn run(
        &self,
        mode: Mode,
        params: &Params,
        progress: &Progress,
    ) -> Result<Vec<Measurement>, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_direction_follows_the_metric() {
        let t = Metric::OpsPerSec.overhead_pct(90.0, 100.0).unwrap();
        assert!((t - 10.0).abs() < 1e-9);
        let l = Metric::MeanMs.overhead_pct(1.1, 1.0).unwrap();
        assert!((l - 10.0).abs() < 1e-9);
        assert_eq!(Metric::MeanMs.overhead_pct(1.0, 0.0), None);
        assert_eq!(Metric::MsPerOp.overhead_pct(f64::INFINITY, 1.0), None);
        assert_eq!(Metric::HandshakesPer1K.overhead_pct(5.0, 1.0), None);
        let o = Metric::OfferedPerSec.overhead_pct(45.0, 50.0).unwrap();
        assert!((o - 10.0).abs() < 1e-9);
    }

    #[test]
    fn setups_are_counted_per_thousand_operations() {
        let mut stats = RunStats::default();
        stats.ok = 4000;
        stats.elapsed = std::time::Duration::from_secs(1);
        let m = Measurement::from_stats("w", Mode::Secure, "cold N=10", 10, &stats)
            .with_phase(Phase::Cold)
            .with_setups(90, 12);
        assert_eq!(m.handshakes_per_1k_ops(), Some(22.5));
        assert_eq!(m.value(Metric::DialsPer1K), 3.0);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["phase"], "cold");
        assert_eq!(json["handshakes"], 90);
        let plain = Measurement::from_stats("w", Mode::Secure, "p", 1, &stats);
        assert_eq!(plain.handshakes_per_1k_ops(), None);
        assert!(plain.value(Metric::HandshakesPer1K).is_nan());
        assert!(serde_json::to_value(&plain).unwrap().get("phase").is_none());
    }

    #[test]
    fn goals() {
        assert_eq!(Goal::SecureAtMost(0.5).met(Some(0.4), None), Some(true));
        assert_eq!(Goal::SecureAtMost(0.5).met(Some(0.6), None), Some(false));
        assert_eq!(Goal::SecureAtLeast(10.0).met(Some(9.0), None), Some(false));
        assert_eq!(
            Goal::OverheadAtMost(10.0).met(Some(1.0), Some(12.0)),
            Some(false)
        );
        assert_eq!(Goal::OverheadAtMost(10.0).met(Some(1.0), None), None);
    }
}
