//! Workloads whose code under test is still being written. Their figures, paper values and
//! goals are declared here so the report shows what is still to be measured; each becomes a
//! real [`Workload`] by implementing `run` once its crate lands.

use std::time::Duration;

use crate::workload::{Figure, Goal, Measurement, Metric, Params, PlotAxis, PointSel, Workload};
use crate::{Error, Mode, Progress};

/// A workload not implemented yet.
#[derive(Debug)]
pub(crate) struct Planned {
    name: &'static str,
    title: &'static str,
    method: &'static str,
    waiting_on: &'static str,
    figures: Vec<Figure>,
    axis: Option<PlotAxis>,
}

impl Workload for Planned {
    fn name(&self) -> &'static str {
        self.name
    }
    fn title(&self) -> &'static str {
        self.title
    }
    fn method(&self) -> String {
        format!(
            "{} *Not measured yet: waiting on {}.*",
            self.method, self.waiting_on
        )
    }
    fn figures(&self) -> Vec<Figure> {
        self.figures.clone()
    }
    fn plot_axis(&self) -> Option<PlotAxis> {
        self.axis
    }
    fn expected_duration(&self, _: &Params) -> Duration {
        Duration::ZERO
    }
    fn available(&self) -> bool {
        false
    }
    fn run(&self, _: Mode, _: &Params, _: &Progress) -> Result<Vec<Measurement>, Error> {
        Ok(Vec::new())
    }
}

const fn fig(
    what: &'static str,
    point: PointSel,
    metric: Metric,
    paper: &'static str,
    goal: Option<Goal>,
) -> Figure {
    Figure {
        what,
        point,
        metric,
        paper,
        goal,
    }
}

/// The declared figures of the workload called `name` (none if there is no such workload).
pub(crate) fn figures_of(name: &str) -> Vec<Figure> {
    planned()
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| p.figures)
        .unwrap_or_default()
}

/// Workloads 1, 2, 3 and 4 of paper §9.2, implemented in `dht.rs`, which takes its figures
/// from here (5 and 6 declare theirs in their own files). A workload added here beyond the
/// fourth is listed in the report as planned until it is implemented.
pub(crate) fn planned() -> Vec<Planned> {
    use Metric::*;
    use PointSel::*;
    vec![
        Planned {
            name: "local-find-store",
            title: "1. find and store resolved locally",
            method: "16-byte objects whose ids resolve to the node receiving the request, \
                     offered open-loop at 50K/s (`find @50K/s`, `store @50K/s`), and closed-loop \
                     at saturation (`find max`, `store max`).",
            waiting_on: "the DHT driver and the endpoint",
            figures: vec![
                fig(
                    "find, max throughput",
                    Label("find max"),
                    OpsPerSec,
                    "10,223 ops/s",
                    Some(Goal::SecureAtLeast(150_000.0)),
                ),
                fig(
                    "find at 50K/s, p99 latency",
                    Label("find @50K/s"),
                    P99Ms,
                    "",
                    Some(Goal::SecureAtMost(2.0)),
                ),
                fig(
                    "find, highest offered rate with p99 ≤ 2 ms",
                    Label("find sustained"),
                    OfferedPerSec,
                    "",
                    Some(Goal::SecureAtLeast(50_000.0)),
                ),
                fig(
                    "find at 50K/s, mean latency",
                    Label("find @50K/s"),
                    MeanMs,
                    "331 ms",
                    None,
                ),
                fig(
                    "store, max throughput",
                    Label("store max"),
                    OpsPerSec,
                    "9,332 ops/s",
                    None,
                ),
                fig(
                    "store at 50K/s, mean latency",
                    Label("store @50K/s"),
                    MeanMs,
                    "338 ms",
                    None,
                ),
            ],
            axis: None,
        },
        Planned {
            name: "find-scaling",
            title: "2. find across N nodes (Fig. 4)",
            method: "Random object ids over a ring of N nodes (`N=1` … `N=1000`), offered \
                     open-loop at 50K/s; throughput, latency and hops against N.",
            waiting_on: "the DHT driver and the endpoint",
            figures: vec![
                fig(
                    "find throughput, warm (second pass)",
                    Prefix("N="),
                    OpsPerSec,
                    "Fig. 4: overhead 2.1–31.6 %",
                    Some(Goal::OverheadAtMost(10.0)),
                ),
                fig(
                    "find throughput, cold (first pass over the fresh ring)",
                    Prefix("cold N="),
                    OpsPerSec,
                    "",
                    None,
                ),
                fig(
                    "key agreements during the cold pass",
                    Prefix("cold N="),
                    HandshakesPer1K,
                    "",
                    None,
                ),
                fig(
                    "key agreements during the warm pass",
                    Prefix("N="),
                    HandshakesPer1K,
                    "",
                    None,
                ),
                fig(
                    "connections dialed during the cold pass",
                    Prefix("cold N="),
                    DialsPer1K,
                    "",
                    None,
                ),
                fig(
                    "find mean latency",
                    Prefix("N="),
                    MeanMs,
                    "Fig. 4 (top)",
                    None,
                ),
                fig(
                    "provider store throughput",
                    Prefix("store N="),
                    OpsPerSec,
                    "",
                    None,
                ),
                fig(
                    "find at 1000 nodes, throughput",
                    Label("N=1000"),
                    OpsPerSec,
                    "",
                    Some(Goal::SecureAtLeast(10_000.0)),
                ),
                fig(
                    "find at 1000 nodes, p50 latency",
                    Label("N=1000"),
                    P50Ms,
                    "",
                    Some(Goal::SecureAtMost(1.0)),
                ),
            ],
            axis: Some(PlotAxis::Nodes),
        },
        Planned {
            name: "join",
            title: "3. join",
            method: "Nodes join through 10 bootstrap nodes round-robin, one after the other \
                     (`sequential`: mean latency per join) and all at once (`parallel`: wall \
                     time per node).",
            waiting_on: "the DHT driver and the endpoint",
            figures: vec![
                fig(
                    "join, sequential",
                    Label("sequential"),
                    MeanMs,
                    "720.5 ms/node",
                    Some(Goal::SecureAtMost(5.0)),
                ),
                fig(
                    "join, parallel",
                    Label("parallel"),
                    MsPerOp,
                    "30 ms/node",
                    None,
                ),
            ],
            axis: None,
        },
        Planned {
            name: "leave-blink",
            title: "4. leave and blink",
            method: "A node leaves (`leave`), and a node joins then leaves at once (`blink`), \
                     one after the other.",
            waiting_on: "the DHT driver and the endpoint",
            figures: vec![
                fig(
                    "leave, mean latency",
                    Label("leave"),
                    MeanMs,
                    "< 50 ms",
                    None,
                ),
                fig(
                    "blink (join then leave)",
                    Label("blink"),
                    MeanMs,
                    "780 ms",
                    None,
                ),
            ],
            axis: None,
        },
    ]
}
