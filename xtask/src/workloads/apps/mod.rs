//! Workload 6: end-to-end serverless-style applications over the mesh, in the spirit of the
//! paper's Table 2 (§9.1), each measured three ways in one run: through the mesh secure,
//! through the mesh insecure, and as the same application calling its functions directly
//! (plain function calls in this process, no themis at all).
//!
//! The applications:
//! - **AppAuth** (paper §7), the one `themis demo` runs (`themis_cli::appauth`): an ingress
//!   `handler` receives a username and a password, asks the back-end `check` for that user's
//!   credential record (a 16-byte salt and the salted hash of the password), validates the
//!   pair and answers `200` or `401`. Two mesh calls per request (client → handler → check).
//!   Light: the mesh dominates.
//! - **k-means** (Table 2's "K-Means Clustering"): the client sends 1,000 2-D points (8,000
//!   bytes); `kmeans` runs 10 Lloyd iterations with k = 8 and answers the centroids and the
//!   inertia. One mesh call per request. Compute-heavy: the application dominates.
//!
//! Four mesh nodes in this process over loopback TCP: the gateway (client), the handler, the
//! check, and the k-means provider.

mod deploy;
mod kmeans;

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use themis_cli::appauth::{CHECK, HANDLER};
use themis_mesh::Bytes;

use self::deploy::{Deployment, KMEANS, USERS};
use self::kmeans::{ITERATIONS, K, POINTS};
use crate::load::{self, ClosedLoop, OpOutcome, RunStats};
use crate::report::fmt_value;
use crate::spread::{Comparison, Spread, fmt_comparison};
use crate::workload::{Figure, Measurement, Metric, Params, PlotAxis, PointSel, Workload};
use crate::workloads::rng;
use crate::{Error, Histogram, Mode, Progress};

/// Name of this workload.
pub(crate) const NAME: &str = "apps";

/// Requests kept in flight by the throughput points.
const IN_FLIGHT: usize = 64;
/// Distinct k-means data sets the client cycles through (made before measuring).
const DATASETS: u64 = 32;
/// Bound on starting the applications: a hang is a failure with a message.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn werr(mode: Mode, reason: impl ToString) -> Error {
    super::werr(NAME, mode, reason)
}

/// Starts the applications `count` times from nothing (`startup`: each start timed up to the
/// paper's stable state); the last deployment stays up to serve the load.
async fn startups(
    mode: Mode,
    seed: u64,
    count: u64,
    progress: &Progress,
) -> Result<(RunStats, Deployment), Error> {
    progress.add_len(count);
    progress.message("startup");
    let mut stats = RunStats::default();
    let mut latency = Histogram::new();
    let mut dep = None;
    for r in 0..count {
        if let Some(d) = dep.take() {
            Deployment::stop(d).await;
        }
        let t0 = Instant::now();
        let d = tokio::time::timeout(START_TIMEOUT, deploy::start(mode, rng(seed, r).u64(..)))
            .await
            .map_err(|_| werr(mode, "startup timed out"))?
            .map_err(|e| werr(mode, format!("startup: {e}")))?;
        let took = t0.elapsed();
        latency.record(took);
        stats.elapsed += took;
        stats.ok += 1;
        progress.inc(1);
        dep = Some(d);
    }
    stats.latency = latency;
    Ok((stats, dep.ok_or_else(|| werr(mode, "no startup"))?))
}

/// One application's points: `warm` operations at [`IN_FLIGHT`] first (not recorded), then
/// each `(point, in flight, operations)` closed loop.
async fn measure<F, Fut>(
    mode: Mode,
    nodes: u32,
    progress: &Progress,
    warm: u64,
    points: [(&'static str, usize, u64); 2],
    op: F,
) -> Result<Vec<Measurement>, Error>
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<OpOutcome, String>> + Send + 'static,
{
    progress.add_len(warm);
    load::closed_loop(ClosedLoop::new(IN_FLIGHT, warm), progress, op.clone()).await?;
    let mut out = Vec::new();
    for (point, c, ops) in points {
        progress.add_len(ops);
        progress.message(point);
        let stats = load::closed_loop(ClosedLoop::new(c, ops), progress, op.clone()).await?;
        out.push(Measurement::from_stats(NAME, mode, point, nodes, &stats).with_concurrency(c));
    }
    Ok(out)
}

/// Workload 6.
#[derive(Debug, Default)]
pub(crate) struct Apps;

/// Sizes of one mode's run.
struct Sizes {
    startups: u64,
    auth_c1: u64,
    auth_max: u64,
    kmeans_c1: u64,
    kmeans_max: u64,
}

impl Apps {
    fn sizes(p: &Params) -> Sizes {
        let pick = |full, quick, tiny| p.profile.pick(full, quick, tiny);
        Sizes {
            startups: pick(10, 3, 1),
            auth_c1: pick(20_000, 2_000, 50),
            auth_max: pick(200_000, 10_000, 200),
            kmeans_c1: pick(5_000, 500, 10),
            kmeans_max: pick(20_000, 2_000, 40),
        }
    }
}

/// The points, in report order, and what each is compared on against the direct baseline.
const POINT_METRICS: [(&str, &[Metric]); 5] = [
    ("startup", &[Metric::MeanMs]),
    ("appauth c=1", &[Metric::P50Ms, Metric::P99Ms]),
    ("appauth c=64", &[Metric::OpsPerSec, Metric::P50Ms]),
    ("kmeans c=1", &[Metric::P50Ms, Metric::P99Ms]),
    ("kmeans c=64", &[Metric::OpsPerSec, Metric::P50Ms]),
];

fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::OpsPerSec => "throughput",
        Metric::MsPerOp => "time per op",
        Metric::MeanMs => "mean",
        Metric::P50Ms => "p50",
        Metric::P99Ms => "p99",
        Metric::HandshakesPer1K => "handshakes per 1K ops",
        Metric::DialsPer1K => "dials per 1K ops",
        Metric::RequestsPerOp => "DHT requests per op",
        Metric::OfferedPerSec => "offered rate",
        Metric::PeakRssMib => "peak memory",
    }
}

impl Workload for Apps {
    fn name(&self) -> &'static str {
        NAME
    }

    fn title(&self) -> &'static str {
        "6. end-to-end apps (Table 2)"
    }

    fn method(&self) -> String {
        format!(
            "Two serverless-style applications on four mesh nodes in this process over loopback \
             TCP (a client, AppAuth's `{HANDLER}` and `{CHECK}`, and `{KMEANS}`), measured \
             three ways in one run: through the mesh secure, through the mesh insecure, and \
             `direct`: the same application code calling its functions as plain function calls \
             (no themis, no sockets). **AppAuth** (paper §7, the application of `themis demo`): \
             the handler gets a user name and password, fetches the user's record (16-byte \
             salt, salted hash) from `{CHECK}` through the mesh and answers 200 or 401 \
             ({USERS} users; 70 % of the logins are valid, 15 % carry a wrong password, 15 % \
             name an unknown user; every answer is checked): two calls per request. **k-means** (Table 2's \
             K-Means Clustering): the client sends {POINTS} 2-D points (8,000 bytes), the \
             service runs {ITERATIONS} Lloyd iterations with k = {K} and answers centroids and \
             inertia: one call per request. `startup`: from nothing to the paper's stable state \
             (credential store built, nodes up and joined, services registered, discovered by \
             their callers, and called once each so every channel exists), repeated (quick: 3, \
             full: 10). Then closed loop at 1 request in flight (`c=1`: latency) and at \
             {IN_FLIGHT} (`c=64`: throughput). Quick: 2K/10K AppAuth and 500/2K k-means \
             requests per point; full: 10× that. The paper's Table 2 has no AppAuth row; its \
             T / V (%Δ) compare THEMIS with its insecure vanilla version, like our secure and \
             insecure columns; `direct` is a baseline the paper does not have."
        )
    }

    fn figures(&self) -> Vec<Figure> {
        use Metric::*;
        use PointSel::Label;
        let fig = |what, point, metric, paper| Figure::new(what, Label(point), metric, paper);
        vec![
            fig(
                "startup to stable state",
                "startup",
                MeanMs,
                "K-Means 310 / 210 ms (+45.9 %); all apps +0–357 %",
            ),
            fig(
                "AppAuth, p50 latency",
                "appauth c=1",
                P50Ms,
                "— (not in Table 2)",
            ),
            fig("AppAuth, p99 latency", "appauth c=1", P99Ms, ""),
            fig(
                "AppAuth, throughput",
                "appauth c=64",
                OpsPerSec,
                "— (Table 2 throughput overhead: 1.24 % on average)",
            ),
            fig(
                "k-means, mean latency",
                "kmeans c=1",
                MeanMs,
                "92.19 / 91.98 s (+0.23 %)",
            ),
            fig("k-means, p99 latency", "kmeans c=1", P99Ms, ""),
            fig(
                "k-means, throughput",
                "kmeans c=64",
                OpsPerSec,
                "0.49 / 0.49 req/s (0.00 %)",
            ),
        ]
    }

    fn plot_axis(&self) -> Option<PlotAxis> {
        None
    }

    fn modes(&self) -> &'static [Mode] {
        &[Mode::Secure, Mode::Insecure, Mode::Direct]
    }

    fn expected_duration(&self, p: &Params) -> Duration {
        // Per mode, averaged over the three: about 0.4 s per mesh startup, 4K AppAuth and 2K
        // k-means requests per second through the mesh on 2 cores, 0.3 ms per AppAuth request
        // and 0.5 ms per k-means request at c=1; the direct run takes well under a second.
        let s = Self::sizes(p);
        let mesh = s.startups as f64 * 0.4
            + (s.auth_c1 as f64) * 0.3e-3
            + s.auth_max as f64 / 4_000.0
            + s.kmeans_c1 as f64 * 0.5e-3
            + s.kmeans_max as f64 / 2_000.0;
        Duration::from_secs_f64((2.0 * mesh + 1.0) / 3.0)
    }

    fn run(&self, mode: Mode, p: &Params, progress: &Progress) -> Result<Vec<Measurement>, Error> {
        let rt = load::runtime()?;
        let s = Self::sizes(p);
        let seed = p.seed ^ 0x6000;
        let nodes = if mode == Mode::Direct { 0 } else { 4 };
        let out = rt.block_on(async {
            let (startup, dep) = startups(mode, seed, s.startups, progress).await?;
            let mut out = vec![Measurement::from_stats(
                NAME, mode, "startup", nodes, &startup,
            )];
            let dep = Arc::new(dep);
            let run_seed = rng(seed, s.startups.saturating_sub(1)).u64(..);
            let auth = {
                let dep = Arc::clone(&dep);
                move |i: u64| {
                    let dep = Arc::clone(&dep);
                    async move { dep.login(run_seed ^ 0xd, i).await }
                }
            };
            let points = [
                ("appauth c=1", 1, s.auth_c1),
                ("appauth c=64", IN_FLIGHT, s.auth_max),
            ];
            let warm = IN_FLIGHT as u64 * 4;
            out.extend(measure(mode, nodes, progress, warm, points, auth).await?);
            let sets: Arc<Vec<Bytes>> = Arc::new(
                (0..DATASETS)
                    .map(|d| kmeans::request(run_seed ^ 0xe, d))
                    .collect(),
            );
            let km = {
                let dep = Arc::clone(&dep);
                move |i: u64| {
                    let dep = Arc::clone(&dep);
                    let req = sets.get((i % DATASETS) as usize).cloned();
                    async move { dep.kmeans(req.unwrap_or_default()).await }
                }
            };
            let points = [
                ("kmeans c=1", 1, s.kmeans_c1),
                ("kmeans c=64", IN_FLIGHT, s.kmeans_max),
            ];
            out.extend(measure(mode, nodes, progress, IN_FLIGHT as u64, points, km).await?);
            if let Ok(d) = Arc::try_unwrap(dep) {
                d.stop().await;
            }
            Ok::<_, Error>(out)
        })?;
        if let Some(m) = out.iter().find(|m| m.errors > 0 || m.ops == 0) {
            return Err(werr(
                mode,
                m.note
                    .clone()
                    .unwrap_or_else(|| format!("{}: no operation succeeded", m.point)),
            ));
        }
        Ok(out)
    }

    fn extra_markdown(&self, results: &[Measurement]) -> Option<String> {
        let get = |mode: Mode, point: &str| {
            results
                .iter()
                .find(|m| m.workload == NAME && m.mode == mode && m.point == point)
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Against the same application calling its functions directly (no themis, no \
             sockets): overhead is throughput lost or latency added relative to `direct`, from \
             the medians over the runs (their range in brackets), or \"within noise\" where the \
             two columns' runs overlap.\n"
        );
        let _ = writeln!(
            s,
            "| point | figure | direct | mesh insecure | mesh secure | insecure vs direct | secure vs direct | secure vs insecure |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        let mut any = false;
        for (point, metrics) in POINT_METRICS {
            for &metric in metrics {
                let v = |mode| get(mode, point).and_then(|m| m.spread(metric));
                let (d, i, sec) = (v(Mode::Direct), v(Mode::Insecure), v(Mode::Secure));
                any |= d.is_some() || i.is_some() || sec.is_some();
                let val = |x: Option<Spread>| fmt_value(x, metric);
                let ovh = |a: Option<Spread>, b: Option<Spread>| {
                    fmt_comparison(a.zip(b).and_then(|(a, b)| Comparison::of(metric, a, b)))
                };
                let _ = writeln!(
                    s,
                    "| {point} | {} | {} | {} | {} | {} | {} | {} |",
                    metric_name(metric),
                    val(d),
                    val(i),
                    val(sec),
                    ovh(i, d),
                    ovh(sec, d),
                    ovh(sec, i),
                );
            }
        }
        any.then_some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_mode_runs_and_reports_against_the_baseline() {
        let p = Params {
            profile: crate::Profile::Tiny,
            seed: 1,
            cores: 2,
            node_hosts: 0,
            ring_nodes: None,
        };
        let out = Apps.run(Mode::Direct, &p, &Progress::hidden()).unwrap();
        let points: Vec<&str> = out.iter().map(|m| m.point.as_str()).collect();
        assert_eq!(
            points,
            POINT_METRICS.iter().map(|(p, _)| *p).collect::<Vec<_>>()
        );
        assert!(out.iter().all(|m| m.errors == 0 && m.ops > 0));
        let md = Apps.extra_markdown(&out).unwrap();
        assert!(md.contains("| appauth c=64 | throughput |"), "{md}");
        assert!(md.contains("not measured"), "{md}");
    }
}
