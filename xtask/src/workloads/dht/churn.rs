//! Workloads 3 and 4 of paper §9.2: join, leave and blink.

use std::sync::Arc;
use std::time::Duration;

use themis_dht::DhtNode;

use super::{BOOTSTRAPS, Ring, check, check_keeping, settle_for, with_machine};
use crate::load::{self, ClosedLoop, OpOutcome};
use crate::machine;
use crate::workload::{Figure, Goal, Measurement, Metric, Params, PlotAxis, PointSel, Workload};
use crate::workloads::werr;
use crate::{Error, Mode, Progress};

const JOIN: &str = "join";
const LEAVE: &str = "leave-blink";

/// Joiner `i` of a batch and the bootstrap it joins through (round robin).
fn joiner_and_boot(
    batch: &[DhtNode],
    boots: &[themis_dht::Contact],
    i: u64,
) -> Option<(DhtNode, themis_dht::Contact)> {
    let k = usize::try_from(i).ok()?;
    let node = batch.get(k)?.clone();
    let boot = *boots.get(k % boots.len().max(1))?;
    Some((node, boot))
}

fn joiners(p: &Params) -> u64 {
    p.profile.pick(500, 100, 6)
}

fn leavers(p: &Params) -> u64 {
    p.profile.pick(500, 30, 6)
}

/// Workload 3.
#[derive(Debug, Default)]
pub(crate) struct Join;

impl Workload for Join {
    fn name(&self) -> &'static str {
        JOIN
    }
    fn title(&self) -> &'static str {
        "3. join"
    }
    fn method(&self) -> String {
        "A ring of 10 bootstrap nodes, stabilized. New nodes (bound beforehand, not timed) join \
         through the bootstraps round-robin: one after the other (`sequential`: latency per \
         join, from the join call to its result), then a second batch of the same size all at \
         once (`parallel`: wall time of the batch per node). Quick: 100 nodes per batch, full: \
         500. A join is done when the node has its successor (paper §6.1); the ring repairs \
         itself afterwards in the background."
            .into()
    }
    fn figures(&self) -> Vec<Figure> {
        use PointSel::Label;
        vec![
            Figure::new(
                "join, sequential",
                Label("sequential"),
                Metric::MeanMs,
                "720.5 ms/node",
            )
            .with_goal(Goal::SecureAtMost(5.0)),
            Figure::new(
                "join, parallel",
                Label("parallel"),
                Metric::MsPerOp,
                "30 ms/node",
            ),
        ]
    }
    fn plot_axis(&self) -> Option<PlotAxis> {
        None
    }
    fn expected_duration(&self, p: &Params) -> Duration {
        // Measured in the quick run on the idle machine (2026-11-25): a sequential join takes
        // 0.4-1.8 ms, a parallel batch of 100 about 0.1 s; binding the joiners, the bootstrap
        // ring's 5 s to stabilize and the shutdown dominate.
        Duration::from_secs_f64(joiners(p) as f64 * 2.0 * 0.01 + 8.0)
    }
    fn run(&self, mode: Mode, p: &Params, progress: &Progress) -> Result<Vec<Measurement>, Error> {
        let rt = load::runtime()?;
        let count = joiners(p);
        let n = usize::try_from(count).unwrap_or(usize::MAX);
        let seed = p.seed ^ 0x3000;
        let out = rt.block_on(async {
            let mut ring = Ring::new(mode, seed, BOOTSTRAPS + 2 * n, 100_000)
                .map_err(|e| werr(JOIN, mode, e))?;
            progress.message("bootstrap ring");
            ring.grow(BOOTSTRAPS, settle_for(p, Duration::from_secs(5)))
                .await
                .map_err(|e| werr(JOIN, mode, e))?;
            let boots: Arc<Vec<_>> = Arc::new(ring.nodes.iter().map(DhtNode::contact).collect());
            let mut out = Vec::new();
            for (point, concurrency) in [("sequential", 1), ("parallel", n)] {
                let mut batch = Vec::with_capacity(n);
                for _ in 0..n {
                    batch.push(ring.make().await.map_err(|e| werr(JOIN, mode, e))?);
                }
                let batch = Arc::new(batch);
                let (b2, boots2) = (Arc::clone(&batch), Arc::clone(&boots));
                let op = move |i: u64| {
                    let pair = joiner_and_boot(&b2, &boots2, i);
                    async move {
                        let (node, boot) = pair.ok_or("no node")?;
                        node.join([boot])
                            .await
                            .map(|_| OpOutcome::default())
                            .map_err(|e| format!("join failed: {e}"))
                    }
                };
                let rss = machine::reset_peak_rss();
                progress.add_len(count);
                progress.message(point);
                let stats =
                    load::closed_loop(ClosedLoop::new(concurrency.max(1), count), progress, op)
                        .await?;
                let nodes = u32::try_from(ring.nodes.len() + n).unwrap_or(u32::MAX);
                out.push(with_machine(
                    Measurement::from_stats(JOIN, mode, point, nodes, &stats)
                        .with_concurrency(concurrency),
                    rss,
                ));
                ring.nodes.extend(batch.iter().cloned());
            }
            ring.shutdown().await;
            Ok::<_, Error>(out)
        })?;
        let mut out = out;
        check_keeping(JOIN, mode, &mut out)?;
        Ok(out)
    }
}

/// Workload 4.
#[derive(Debug, Default)]
pub(crate) struct LeaveBlink;

impl Workload for LeaveBlink {
    fn name(&self) -> &'static str {
        LEAVE
    }
    fn title(&self) -> &'static str {
        "4. leave and blink"
    }
    fn method(&self) -> String {
        "A ring of 10 bootstrap nodes plus 30 joiners (full: 500), stabilized. `leave`: the joiners leave one after the other (latency of the leave call: \
         records handed over, predecessor and successor told). `blink`: as many fresh nodes, \
         one after the other, join through a bootstrap and leave at once (latency of both)."
            .into()
    }
    fn figures(&self) -> Vec<Figure> {
        use PointSel::Label;
        vec![
            Figure::new(
                "leave, mean latency",
                Label("leave"),
                Metric::MeanMs,
                "< 50 ms",
            ),
            Figure::new(
                "blink (join then leave)",
                Label("blink"),
                Metric::MeanMs,
                "780 ms",
            ),
        ]
    }
    fn plot_axis(&self) -> Option<PlotAxis> {
        None
    }
    fn expected_duration(&self, p: &Params) -> Duration {
        // Measured in the quick run on the idle machine (2026-11-25): a leave takes well under
        // 1 ms, a blink 68 ms on average (most about 1 ms, a few wait 2 s for a request to a
        // node that has left); growing the ring and its 10 s to stabilize come on top.
        Duration::from_secs_f64(leavers(p) as f64 * (0.07 + 0.02) + 10.0)
    }
    fn run(&self, mode: Mode, p: &Params, progress: &Progress) -> Result<Vec<Measurement>, Error> {
        let rt = load::runtime()?;
        let count = leavers(p);
        let n = usize::try_from(count).unwrap_or(usize::MAX);
        let seed = p.seed ^ 0x4000;
        let out = rt.block_on(async {
            let mut ring = Ring::new(mode, seed, BOOTSTRAPS + 2 * n, 100_000)
                .map_err(|e| werr(LEAVE, mode, e))?;
            progress.message("ring");
            ring.grow(BOOTSTRAPS + n, settle_for(p, Duration::from_secs(10)))
                .await
                .map_err(|e| werr(LEAVE, mode, e))?;
            let boots: Vec<_> = ring
                .nodes
                .iter()
                .take(BOOTSTRAPS)
                .map(DhtNode::contact)
                .collect();
            let leavers: Arc<Vec<DhtNode>> =
                Arc::new(ring.nodes.iter().skip(BOOTSTRAPS).cloned().collect());
            let mut out = Vec::new();
            let rss = machine::reset_peak_rss();
            progress.add_len(count);
            progress.message("leave");
            let l2 = Arc::clone(&leavers);
            let stats = load::closed_loop(ClosedLoop::new(1, count), progress, move |i: u64| {
                let node = usize::try_from(i).ok().and_then(|k| l2.get(k)).cloned();
                async move {
                    let node = node.ok_or("no node")?;
                    node.leave()
                        .await
                        .map(|_| OpOutcome::default())
                        .map_err(|_| "leave failed")
                }
            })
            .await?;
            let nodes = u32::try_from(ring.nodes.len()).unwrap_or(u32::MAX);
            out.push(with_machine(
                Measurement::from_stats(LEAVE, mode, "leave", nodes, &stats).with_concurrency(1),
                rss,
            ));
            let mut batch = Vec::with_capacity(n);
            for _ in 0..n {
                batch.push(ring.make().await.map_err(|e| werr(LEAVE, mode, e))?);
            }
            let batch = Arc::new(batch);
            let (b2, boots) = (Arc::clone(&batch), Arc::new(boots));
            let rss = machine::reset_peak_rss();
            progress.add_len(count);
            progress.message("blink");
            let stats = load::closed_loop(ClosedLoop::new(1, count), progress, move |i: u64| {
                let pair = joiner_and_boot(&b2, &boots, i);
                async move {
                    let (node, boot) = pair.ok_or("no node")?;
                    node.join([boot]).await.map_err(|_| "join failed")?;
                    node.leave()
                        .await
                        .map(|_| OpOutcome::default())
                        .map_err(|_| "leave failed")
                }
            })
            .await?;
            out.push(with_machine(
                Measurement::from_stats(LEAVE, mode, "blink", nodes, &stats).with_concurrency(1),
                rss,
            ));
            ring.nodes.extend(batch.iter().cloned());
            ring.shutdown().await;
            Ok::<_, Error>(out)
        })?;
        check(LEAVE, mode, &out)?;
        Ok(out)
    }
}
