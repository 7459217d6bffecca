//! The plug-in point: what a workload is, what it measures, and what the paper reported.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::load::RunStats;
use crate::spread::{Comparison, Spread, median};
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
    /// No themis either: two processes that only copy bytes between connections in the path
    /// of the direct client (the reference point of workload 7, what two proxies cost).
    Relay,
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
            Mode::Relay => "relay",
        })
    }
}

/// Which pass over a freshly built system a point is (workload 2 measures three).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The first pass: sessions (secure) and connections are set up as the operations need
    /// them, and that set-up is part of what is measured.
    Cold,
    /// A second pass of the same size right after the first: most pairs of nodes the
    /// operations involve already have their session, but in a large ring iterative lookups
    /// still meet new pairs.
    Warm,
    /// A pass measured once the operations have stopped setting up sessions: after the warm
    /// pass, operations ran on until a window of them made fewer than one set-up per 1,000
    /// (or a cap stopped them: see [`Measurement::steady_reached`]).
    Steady,
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

    /// The runs of every point unless `--runs` says otherwise: 3, so that every figure is a
    /// median with a spread; 1 for the test suite's smoke run, which checks the plumbing, not
    /// the figures.
    pub fn default_runs(self) -> u32 {
        self.pick(3, 3, 1)
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
    /// `--nodes N`: find-scaling measures only its ring of this many nodes (the profile's
    /// sizes otherwise).
    pub ring_nodes: Option<usize>,
    /// Node host processes over which find-scaling spreads each ring (at most one per node);
    /// 0: every node in the bench process.
    pub node_hosts: usize,
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
    /// DHT requests sent during the point, over all nodes (lookups' finds, stores, and the
    /// ring's maintenance meanwhile), where the workload counts them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dht_requests: Option<u64>,
    /// Steady pass: the operations run on the system since it was built before this pass
    /// (the cold and warm passes and the warm-up after them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops_before: Option<u64>,
    /// Steady pass: whether the warm-up reached the steady state (a window with fewer than
    /// one set-up per 1,000 operations) before its cap; over several runs, whether every run
    /// did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady_reached: Option<bool>,
    /// Anything the reader must know about this point.
    pub note: Option<String>,
    /// Every run of the point, in the order they ran (the figures above are the medians over
    /// them); empty for a measurement the harness has not combined yet (one run).
    pub runs: Vec<RunValues>,
    /// The latency distribution, for the CDF plot (not serialised): every operation of every
    /// run.
    #[serde(skip)]
    pub latency: Histogram,
}

/// The figures of one run of a point: one object of a result's `runs` in report.json.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunValues {
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Latency percentiles, mean and maximum, milliseconds.
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
    /// Mean overlay hops per operation, where counted.
    pub mean_hops: Option<f64>,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Wall time, seconds.
    pub duration_s: f64,
    /// Open loop: the rate actually offered, per second.
    pub offered_per_sec: Option<f64>,
    /// Open loop: sends more than 1 ms behind schedule.
    pub late_sends: Option<u64>,
    /// Open loop: 99th percentile of the send lag, ms.
    pub send_lag_p99_ms: Option<f64>,
    /// Peak resident set size, KiB.
    pub peak_rss_kib: Option<u64>,
    /// Open file descriptors at the end.
    pub open_fds: Option<u64>,
    /// Key agreements during the run, where counted.
    pub handshakes: Option<u64>,
    /// Connections dialed during the run, where counted.
    pub connections_dialed: Option<u64>,
    /// DHT requests sent during the run, where counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dht_requests: Option<u64>,
    /// Steady pass: operations run on the system before it (see [`Measurement::ops_before`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops_before: Option<u64>,
    /// Steady pass: whether this run reached the steady state before the cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady_reached: Option<bool>,
}

impl RunValues {
    /// `count` per 1,000 successful operations of this run.
    fn per_1k_ops(&self, count: Option<u64>) -> Option<f64> {
        count
            .filter(|_| self.ops > 0)
            .map(|c| c as f64 * 1000.0 / self.ops as f64)
    }

    /// The value of `metric` in this run (NaN where the run does not have it).
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
            Metric::HandshakesPer1K => self.per_1k_ops(self.handshakes).unwrap_or(f64::NAN),
            Metric::DialsPer1K => self.per_1k_ops(self.connections_dialed).unwrap_or(f64::NAN),
            Metric::RequestsPerOp => self
                .per_1k_ops(self.dht_requests)
                .map_or(f64::NAN, |v| v / 1000.0),
            Metric::OfferedPerSec => self.offered_per_sec.unwrap_or(f64::NAN),
            Metric::PeakRssMib => self.peak_rss_kib.map_or(f64::NAN, |k| k as f64 / 1024.0),
        }
    }
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
            dht_requests: None,
            ops_before: None,
            steady_reached: None,
            note: stats
                .first_error
                .as_ref()
                .map(|e| format!("first error: {e}")),
            runs: Vec::new(),
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

    /// Sets the DHT requests sent during the point, over all nodes.
    pub fn with_dht_requests(mut self, requests: u64) -> Self {
        self.dht_requests = Some(requests);
        self
    }

    /// Marks a steady pass: `ops_before` operations ran on the system before it, and the
    /// warm-up before it did (`reached`) or did not reach the steady state before its cap.
    pub fn with_steady(mut self, ops_before: u64, reached: bool) -> Self {
        self.ops_before = Some(ops_before);
        self.steady_reached = Some(reached);
        self
    }

    /// Handshakes per 1,000 successful operations (the median over the runs), where counted.
    pub fn handshakes_per_1k_ops(&self) -> Option<f64> {
        Some(self.value(Metric::HandshakesPer1K)).filter(|v| !v.is_nan())
    }

    /// Connections dialed per 1,000 successful operations (the median over the runs), where
    /// counted.
    pub fn dials_per_1k_ops(&self) -> Option<f64> {
        Some(self.value(Metric::DialsPer1K)).filter(|v| !v.is_nan())
    }

    /// This measurement's own figures, as one run.
    pub fn values(&self) -> RunValues {
        RunValues {
            ops_per_sec: self.ops_per_sec,
            p50_ms: self.p50_ms,
            p90_ms: self.p90_ms,
            p99_ms: self.p99_ms,
            p999_ms: self.p999_ms,
            mean_ms: self.mean_ms,
            max_ms: self.max_ms,
            mean_hops: self.mean_hops,
            ops: self.ops,
            errors: self.errors,
            duration_s: self.duration_s,
            offered_per_sec: self.offered_per_sec,
            late_sends: self.late_sends,
            send_lag_p99_ms: self.send_lag_p99_ms,
            peak_rss_kib: self.peak_rss_kib,
            open_fds: self.open_fds,
            handshakes: self.handshakes,
            connections_dialed: self.connections_dialed,
            dht_requests: self.dht_requests,
            ops_before: self.ops_before,
            steady_reached: self.steady_reached,
        }
    }

    /// The median and range of `metric` over the runs (this measurement alone when it has
    /// none); `None` where no run has the metric.
    pub fn spread(&self, metric: Metric) -> Option<Spread> {
        if self.runs.is_empty() {
            Spread::of([self.values().value(metric)])
        } else {
            Spread::of(self.runs.iter().map(|r| r.value(metric)))
        }
    }

    /// The median and range of any figure of a run (`ops`, `p90_ms`, ...) over the runs.
    pub fn spread_of(&self, f: impl Fn(&RunValues) -> f64) -> Option<Spread> {
        if self.runs.is_empty() {
            Spread::of([f(&self.values())])
        } else {
            Spread::of(self.runs.iter().map(f))
        }
    }

    /// The value of `metric` at this point: the median over the runs (NaN where not
    /// measured).
    pub fn value(&self, metric: Metric) -> f64 {
        self.spread(metric).map_or(f64::NAN, |s| s.median)
    }

    /// One measurement from the runs of the same point (same workload, mode and label), in
    /// the order they ran: every figure is the median over the runs (counts rounded), the
    /// runs are kept in [`Measurement::runs`], the latency histograms merged (for the CDF)
    /// and the runs' notes joined. `None` for no run.
    pub fn median_of(runs: Vec<Measurement>) -> Option<Measurement> {
        let values: Vec<RunValues> = runs.iter().map(Measurement::values).collect();
        let med = |f: &dyn Fn(&RunValues) -> f64| median(values.iter().map(f));
        let med_opt = |f: &dyn Fn(&RunValues) -> Option<f64>| {
            median(values.iter().map(|r| f(r).unwrap_or(f64::NAN)))
        };
        let count = |f: &dyn Fn(&RunValues) -> Option<u64>| {
            med_opt(&|r| f(r).map(|c| c as f64)).map(|c| c.round() as u64)
        };
        let mut notes: Vec<String> = Vec::new();
        let many = runs.len() > 1;
        for (i, r) in runs.iter().enumerate() {
            if let Some(n) = &r.note
                && !notes.iter().any(|seen| seen.ends_with(n.as_str()))
            {
                notes.push(if many {
                    format!("run {}: {n}", i + 1)
                } else {
                    n.clone()
                });
            }
        }
        let mut latency = Histogram::new();
        for r in &runs {
            latency.merge(&r.latency);
        }
        let first = runs.into_iter().next()?;
        Some(Measurement {
            ops_per_sec: med(&|r| r.ops_per_sec)?,
            p50_ms: med(&|r| r.p50_ms)?,
            p90_ms: med(&|r| r.p90_ms)?,
            p99_ms: med(&|r| r.p99_ms)?,
            p999_ms: med(&|r| r.p999_ms)?,
            mean_ms: med(&|r| r.mean_ms)?,
            max_ms: med(&|r| r.max_ms)?,
            mean_hops: med_opt(&|r| r.mean_hops),
            ops: count(&|r| Some(r.ops))?,
            errors: count(&|r| Some(r.errors))?,
            duration_s: med(&|r| r.duration_s)?,
            offered_per_sec: med_opt(&|r| r.offered_per_sec),
            late_sends: count(&|r| r.late_sends),
            send_lag_p99_ms: med_opt(&|r| r.send_lag_p99_ms),
            peak_rss_kib: count(&|r| r.peak_rss_kib),
            open_fds: count(&|r| r.open_fds),
            handshakes: count(&|r| r.handshakes),
            connections_dialed: count(&|r| r.connections_dialed),
            dht_requests: count(&|r| r.dht_requests),
            ops_before: count(&|r| r.ops_before),
            steady_reached: values
                .iter()
                .map(|r| r.steady_reached)
                .try_fold(true, |all, r| r.map(|r| all && r)),
            note: (!notes.is_empty()).then(|| notes.join("; ")),
            runs: values,
            latency,
            ..first
        })
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
    /// DHT requests sent during the point (all nodes) per operation.
    RequestsPerOp,
    /// The offered rate of an open-loop point (higher is better: the search for the highest
    /// rate within a latency bound reports it).
    OfferedPerSec,
    /// Peak resident memory of the processes holding the nodes, in MiB (summed over node
    /// hosts; lower is better).
    PeakRssMib,
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
            Metric::RequestsPerOp => "DHT requests per op",
            Metric::PeakRssMib => "MiB",
        }
    }

    /// Security overhead in percent: throughput lost, or latency added, relative to insecure.
    /// `None` for counts (handshakes, dials), which are not a cost to compare that way.
    pub fn overhead_pct(self, secure: f64, insecure: f64) -> Option<f64> {
        if matches!(
            self,
            Metric::HandshakesPer1K | Metric::DialsPer1K | Metric::RequestsPerOp
        ) {
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

/// Whether a measured figure meets its goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The median meets it.
    Met,
    /// The median misses it (for an overhead goal: with the two modes' runs apart).
    Missed,
    /// An overhead goal whose median overhead exceeds the bound while the two modes' runs
    /// overlap: the runs cannot tell whether the goal is missed.
    WithinNoise,
}

impl Goal {
    /// Whether the goal is met by the secure median and the comparison with insecure
    /// (`None` when a value it needs is missing).
    pub fn verdict(self, secure: Option<f64>, overhead: Option<&Comparison>) -> Option<Verdict> {
        let met = |ok: bool| if ok { Verdict::Met } else { Verdict::Missed };
        match self {
            Goal::SecureAtMost(b) => secure.map(|v| met(v <= b)),
            Goal::SecureAtLeast(b) => secure.map(|v| met(v >= b)),
            Goal::OverheadAtMost(b) => overhead.map(|c| {
                if c.pct <= b {
                    Verdict::Met
                } else if c.within_noise() {
                    Verdict::WithinNoise
                } else {
                    Verdict::Missed
                }
            }),
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
/// (`find @50K/s`, `N=1000`, `sequential`, ...), each point measured once: the harness calls
/// `run` `--runs` times per mode (the modes taking turns) and reports the medians and ranges
/// over the runs ([`Measurement::median_of`]). The harness adds peak RSS and open fds, writes
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
        let v = |g: Goal, s| g.verdict(Some(s), None);
        assert_eq!(v(Goal::SecureAtMost(0.5), 0.4), Some(Verdict::Met));
        assert_eq!(v(Goal::SecureAtMost(0.5), 0.6), Some(Verdict::Missed));
        assert_eq!(v(Goal::SecureAtLeast(10.0), 9.0), Some(Verdict::Missed));
        assert_eq!(Goal::OverheadAtMost(10.0).verdict(Some(1.0), None), None);
        let spread = |v: &[f64]| Spread::of(v.iter().copied()).unwrap();
        let cmp = |sec: &[f64], ins: &[f64]| {
            Comparison::of(Metric::OpsPerSec, spread(sec), spread(ins)).unwrap()
        };
        let g = Goal::OverheadAtMost(10.0);
        // 12 % lost, runs apart: missed.
        let apart = cmp(&[87.0, 88.0, 89.0], &[99.0, 100.0, 101.0]);
        assert_eq!(g.verdict(None, Some(&apart)), Some(Verdict::Missed));
        // 12 % lost at the medians, but the runs overlap: no conclusion.
        let noisy = cmp(&[70.0, 88.0, 99.0], &[95.0, 100.0, 130.0]);
        assert_eq!(g.verdict(None, Some(&noisy)), Some(Verdict::WithinNoise));
        // 5 % lost: met, whether or not the runs overlap.
        let small = cmp(&[80.0, 95.0, 99.0], &[95.0, 100.0, 130.0]);
        assert_eq!(g.verdict(None, Some(&small)), Some(Verdict::Met));
    }

    #[test]
    fn runs_combine_into_medians_with_every_run_kept() {
        let run = |ops: u64, secs: f64, lat_ms: u64, note: Option<&str>| {
            let mut stats = RunStats::default();
            stats.ok = ops;
            stats.elapsed = std::time::Duration::from_secs_f64(secs);
            for _ in 0..ops {
                stats.latency.record_ns(lat_ms * 1_000_000);
            }
            let mut m = Measurement::from_stats("w", Mode::Secure, "N=10", 10, &stats)
                .with_concurrency(64)
                .with_setups(ops / 10, 0);
            m.note = note.map(str::to_owned);
            m.peak_rss_kib = Some(ops);
            m
        };
        let m = Measurement::median_of(vec![
            run(1000, 1.0, 3, None),
            run(3000, 1.0, 1, Some("slow start")),
            run(2000, 1.0, 2, Some("slow start")),
        ])
        .unwrap();
        assert_eq!((m.point.as_str(), m.concurrency), ("N=10", Some(64)));
        assert_eq!(m.ops_per_sec, 2000.0);
        assert_eq!(m.p50_ms, 2.0);
        assert_eq!((m.ops, m.peak_rss_kib), (2000, Some(2000)));
        assert_eq!(m.runs.len(), 3);
        assert_eq!(m.runs[0].ops_per_sec, 1000.0);
        assert_eq!(
            m.latency.len(),
            6000,
            "the CDF holds every run's operations"
        );
        assert_eq!(m.note.as_deref(), Some("run 2: slow start"));
        let s = m.spread(Metric::OpsPerSec).unwrap();
        assert_eq!(
            (s.median, s.min, s.max, s.runs),
            (2000.0, 1000.0, 3000.0, 3)
        );
        assert_eq!(m.value(Metric::MsPerOp), 0.5);
        assert_eq!(m.handshakes_per_1k_ops(), Some(100.0));
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["runs"].as_array().unwrap().len(), 3);
        assert_eq!(json["runs"][2]["p50_ms"], 2.0);
        assert_eq!(json["ops_per_sec"], 2000.0);
        // An even count: the mean of the middle two.
        let two =
            Measurement::median_of(vec![run(1000, 1.0, 1, None), run(2000, 1.0, 1, None)]).unwrap();
        assert_eq!(two.ops_per_sec, 1500.0);
        assert_eq!(Measurement::median_of(Vec::new()).map(|m| m.ops), None);
        // Not combined: the measurement is its own single run.
        let one = run(1000, 2.0, 1, None);
        assert_eq!(one.spread(Metric::OpsPerSec).unwrap().runs, 1);
        assert!(
            serde_json::to_value(&one).unwrap()["runs"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
}
