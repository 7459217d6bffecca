//! Workload 2 of paper §9.2 (Fig. 4): find across rings of N nodes, cold, warm and steady
//! passes, and provider stores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::members::{Members, Usage};
use super::{
    BASE_FINGER_PERIOD, BASE_STABILIZE_PERIOD, IN_FLIGHT, check_keeping, maintenance_scale, pick,
    random_id, random_name, settle_for,
};
use crate::load::{self, ClosedLoop, OpOutcome, OpenLoop, Timer};
use crate::machine;
use crate::spread::{Comparison, fmt_comparison};
use crate::workload::{
    Figure, Goal, Measurement, Metric, Params, Phase, PlotAxis, PointSel, Workload,
};
use crate::workloads::werr;
use crate::{Error, Mode, Progress};

const SCALING: &str = "find-scaling";

/// The offered rate of the open-loop point after the steady pass: a quarter of the closed
/// loop's throughput at 100 nodes, half of it at 1,000 on 2 cores. The closed loop keeps 64
/// finds in flight, so its latency is that of a full queue (Little's law: 64 / 16K/s = 4 ms);
/// this point gives the latency of a find on a ring with room to spare.
const OPEN_RATE: f64 = 5_000.0;
/// Bound on the open-loop point's finds in flight (a stalled ring cannot make it spawn
/// without end); waits for a slot count in the latency.
const OPEN_IN_FLIGHT: usize = 512;

/// The label of the open-loop point at `n` nodes.
fn open_point(n: usize) -> String {
    format!("@{}K/s N={n}", OPEN_RATE / 1000.0)
}

/// Workload 2.
#[derive(Debug, Default)]
pub(crate) struct FindScaling {
    /// The warm-up finds of the secure ring of each size in the latest run (the secure mode
    /// runs first in every run): the insecure ring warms up on at least as many, so that both
    /// are measured with routing state of the same age (see [`SteadyRule::min_finds`]).
    secure_warm_up: std::sync::Mutex<std::collections::BTreeMap<usize, u64>>,
}

impl FindScaling {
    /// The warm-up finds of the latest secure ring of `n` nodes, if one was measured.
    fn secure_warm_up(&self, n: usize) -> Option<u64> {
        let map = self
            .secure_warm_up
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(&n).copied()
    }
    fn record_secure_warm_up(&self, n: usize, finds: u64) {
        let mut map = self
            .secure_warm_up
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.insert(n, finds);
    }
    fn sizes(p: &Params) -> Vec<usize> {
        match p.ring_nodes {
            Some(n) => vec![n],
            None => p
                .profile
                .pick(vec![1, 10, 100, 500, 1000], vec![1, 10, 100], vec![1, 4]),
        }
    }
    fn ops(p: &Params) -> u64 {
        p.profile.pick(100_000, 5_000, 200)
    }
    fn store_ops(p: &Params) -> u64 {
        p.profile.pick(20_000, 500, 50)
    }
    /// Finds of the open-loop point (full: 6 s at [`OPEN_RATE`], quick: 0.5 s), from 100 nodes
    /// on (smaller rings answer nearly every find from the asking node's own tables).
    fn open_ops(p: &Params, n: usize) -> u64 {
        if n < 100 {
            return 0;
        }
        p.profile.pick(30_000, 2_500, 100)
    }
    /// The shortest a find pass may last: at N = 1 and 10, 5K finds took 10-30 ms, short
    /// enough for one stall of another process to decide the figure.
    fn min_pass(p: &Params) -> Duration {
        p.profile.pick(
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::ZERO,
        )
    }
}

/// The label of a find pass of workload 2: `cold N=100` for the first pass, `warm N=100` for
/// the second, `N=100` for the steady one (the goals and the plots are about the steady pass).
fn scaling_point(n: usize, phase: Phase) -> String {
    match phase {
        Phase::Cold => format!("cold N={n}"),
        Phase::Warm => format!("warm N={n}"),
        Phase::Steady => format!("N={n}"),
    }
}

/// The smallest window of finds the steady state is judged on: "fewer than one set-up per
/// 1,000 finds" means nothing over fewer.
const MIN_WINDOW: u64 = 1_000;

/// How far the mean hops of two warm-up windows in a row may differ for the lookups to count as
/// settled: 0.05 hops, or 3 % of the earlier mean if that is more. The mean of 1,000 finds
/// varies by about 0.02 hops between windows of a settled ring.
const HOPS_SETTLED: (f64, f64) = (0.05, 0.03);

/// When the warm-up between the warm and the steady pass stops: it runs windows of `window`
/// finds until one of them makes fewer than one set-up (secure: key agreement; insecure: TCP
/// dial) per 1,000 finds with as many hops on average as the window before, once the ring has
/// been finding for `min_time` (cold and warm passes included); or once it has run `max_finds`
/// finds or lasted `max_time`, whichever comes first (a ring that never settles cannot keep the
/// bench running).
///
/// `min_time` is one finger period, which was the life of a peer cache entry (PROTOCOL.md §6.8
/// step 2) when the rule was made: lookups learn shortcuts for at least that long after they
/// stop meeting new pairs (entries now live 10 minutes, so the caches go on filling beyond it). A ring judged on
/// set-ups alone was measured with colder caches: at 1,000 nodes over UDP (no dials) the
/// insecure ring was steady after two windows of 1,000 finds, with 1.98 and 2.08 hops against
/// 1.20 and 1.25 on the secure ring, whose warm-up ran into the cap (120 s); hops falling by
/// less than 0.05 per window did not tell (they fall slowly, window after window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SteadyRule {
    window: u64,
    min_time: Duration,
    max_finds: u64,
    max_time: Duration,
    /// Finds the warm-up makes whatever the windows show (the insecure ring's: as many as the
    /// secure ring's warm-up made in the same run). Set-ups alone end the insecure warm-up
    /// early, as it makes none over UDP: at 1,000 nodes it was steady after 86,000 finds with
    /// 1.36 hops in the steady pass, against 1.04 on the secure ring warmed up for 452,000
    /// (capped), so the overhead compared rings with peer caches of different ages. Its own
    /// cap is then three times `max_time`.
    min_finds: u64,
}

/// The rule's verdict after a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WarmUp {
    /// Another window.
    Continue,
    /// The window made fewer than one set-up per 1,000 finds.
    Steady,
    /// The cap stopped the warm-up before the steady state.
    Capped,
}

impl SteadyRule {
    /// The rule of profile `p` for a ring of `n` nodes.
    fn for_profile(p: &Params, n: usize) -> Self {
        Self {
            window: p.profile.pick(20_000, 2_000, MIN_WINDOW),
            // Up to 10 nodes a find takes about no hop (the successor list alone names 8 of
            // the 9 others): there is no shortcut to learn.
            min_time: if n > 10 {
                p.profile.pick(
                    BASE_FINGER_PERIOD * maintenance_scale(n),
                    BASE_FINGER_PERIOD * maintenance_scale(n),
                    Duration::ZERO,
                )
            } else {
                Duration::ZERO
            },
            max_finds: p.profile.pick(4_000_000, 1_000_000, 20_000),
            max_time: p.profile.pick(
                Duration::from_secs(600),
                Duration::from_secs(120),
                Duration::from_secs(20),
            ),
            min_finds: 0,
        }
    }

    /// True if a window of `finds` successful finds and `failed` failed ones that made
    /// `setups` set-ups is steady. A window with failures is no evidence: in a ring still
    /// forming, finds that fail or are answered from the node's own table set nothing up.
    fn is_steady(finds: u64, failed: u64, setups: u64) -> bool {
        failed == 0 && finds >= MIN_WINDOW && setups.saturating_mul(1000) < finds
    }

    /// True if the mean hops of a window, `(before, now)` for the window before and this one,
    /// no longer fall (see [`HOPS_SETTLED`]). A workload that counts no hops is settled.
    fn hops_settled((before, now): (Option<f64>, Option<f64>)) -> bool {
        match (before, now) {
            (Some(b), Some(n)) => b - n <= HOPS_SETTLED.0.max(b * HOPS_SETTLED.1),
            (None, Some(_)) => false,
            (_, None) => true,
        }
    }

    /// The verdict after a window of `finds` successful and `failed` failed finds that made
    /// `setups` set-ups with `hops` on average (the window before's, this one's), `total` finds
    /// and `elapsed` into the warm-up, `finding` since the cold pass began.
    fn judge(
        &self,
        (finds, failed): (u64, u64),
        (setups, hops): (u64, (Option<f64>, Option<f64>)),
        total: u64,
        (elapsed, finding): (Duration, Duration),
    ) -> WarmUp {
        if total < self.min_finds {
            return if elapsed >= self.max_time * 3 {
                WarmUp::Capped
            } else {
                WarmUp::Continue
            };
        }
        if Self::is_steady(finds, failed, setups)
            && Self::hops_settled(hops)
            && finding >= self.min_time
        {
            WarmUp::Steady
        } else if total >= self.max_finds || elapsed >= self.max_time {
            WarmUp::Capped
        } else {
            WarmUp::Continue
        }
    }

    /// The expected length of the warm-up at `n` nodes finding at `find_rate`: a few windows
    /// up to 100 nodes (where the cold and warm passes meet nearly every pair), the cap beyond.
    fn expected(&self, n: usize, find_rate: f64) -> f64 {
        if n <= 100 {
            // the cold and warm passes usually last one finger period already
            3.0 * self.window as f64 / find_rate
        } else {
            self.max_time
                .as_secs_f64()
                .min(self.max_finds as f64 / find_rate)
        }
    }
}

/// Up to `max` of `rates` (the set-ups per 1,000 finds of each warm-up window), evenly
/// spaced, first and last included, for the steady pass's note.
fn trajectory(rates: &[f64], max: usize) -> String {
    let n = rates.len();
    let picked: Vec<String> = if n <= max {
        rates.iter().map(|r| crate::report::fmt_num(*r)).collect()
    } else {
        (0..max)
            .filter_map(|i| rates.get(i * (n - 1) / (max - 1).max(1)))
            .map(|r| crate::report::fmt_num(*r))
            .collect()
    };
    picked.join(" → ")
}

/// The report's tables of the passes of workload 2: per ring size, the three passes'
/// throughput in both modes with the overhead of each; then the set-up work done during each
/// pass and the finds the ring took to reach its steady state.
fn cold_warm_table(results: &[Measurement]) -> Option<String> {
    use std::fmt::Write as _;
    let get = |mode: Mode, point: &str| {
        results
            .iter()
            .find(|m| m.workload == SCALING && m.mode == mode && m.point == point)
    };
    let mut sizes: Vec<u32> = results
        .iter()
        .filter(|m| m.workload == SCALING && m.phase == Some(Phase::Cold))
        .map(|m| m.nodes)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() {
        return None;
    }
    let num = |v: Option<f64>| v.map_or_else(|| "—".into(), crate::report::fmt_num);
    let phases = [Phase::Cold, Phase::Warm, Phase::Steady];
    let mut s = String::from(
        "Cold, warm and steady: find throughput (ops/s, median over the runs with their range) \
         of each pass and the security overhead of each (\"within noise\" where the modes' runs \
         overlap). The goals and the plots are judged on the steady pass, measured once the \
         finds have stopped setting up sessions; what the cold and warm passes lose beyond it \
         is the cost of first contacts.\n\n\
         | N | secure cold | warm | steady | insecure cold | warm | steady | overhead cold | \
         warm | steady |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let ops = |mode, point: &str| get(mode, point).and_then(|m| m.spread(Metric::OpsPerSec));
    for &n in &sizes {
        let n = n as usize;
        let mut row = format!("| {n} |");
        for mode in Mode::BOTH {
            for phase in phases {
                let point = scaling_point(n, phase);
                let t = ops(mode, &point).map_or_else(|| "—".into(), |s| s.display());
                let _ = write!(row, " {t} |");
            }
        }
        for phase in phases {
            let point = scaling_point(n, phase);
            let o = fmt_comparison(
                ops(Mode::Secure, &point)
                    .zip(ops(Mode::Insecure, &point))
                    .and_then(|(s, i)| Comparison::of(Metric::OpsPerSec, s, i)),
            );
            let _ = write!(row, " {o} |");
        }
        let _ = writeln!(s, "{row}");
    }
    s.push_str(
        "\nSet-up work per 1,000 finds (medians over the runs), counted on all nodes from their \
         metrics: key agreements on the secure ring, TCP dials on the insecure one (whose set-up \
         is only connections; none over UDP). Between the warm and the steady pass the finds go \
         on in windows until one window without a failed find makes fewer than one set-up per \
         1,000 finds with as many hops on average as the window before (within 0.05 hops or 3 %), \
         once the ring has been finding for one finger period (while lookups fill their peer \
         caches; the cold and warm passes count), or a cap \
         stops them; \"finds until steady\" counts every find since the ring was built, up to \
         the steady pass (the cold and warm passes included), \"> …, capped\" where the cap \
         came first (the steady pass is then measured all the same, and its note gives the \
         windows' set-ups per 1,000 finds). The insecure ring, which makes no set-up over UDP, \
         warms up on at least as many finds as the secure one did in the same run, so that \
         both steady passes run on peer caches of the same age.\n\n\
         | N | handshakes / 1K finds, cold | warm | steady | finds until steady, secure | \
         insecure dials / 1K finds, cold | warm | steady | finds until steady, insecure |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for n in sizes {
        let n = n as usize;
        let mut row = format!("| {n} |");
        for mode in Mode::BOTH {
            for phase in phases {
                let m = get(mode, &scaling_point(n, phase));
                let v = match mode {
                    Mode::Secure => m.and_then(Measurement::handshakes_per_1k_ops),
                    _ => m.and_then(Measurement::dials_per_1k_ops),
                };
                let _ = write!(row, " {} |", num(v));
            }
            let steady = get(mode, &scaling_point(n, Phase::Steady));
            let until = match steady.map(|m| (m.ops_before, m.steady_reached)) {
                Some((Some(ops), Some(true))) => crate::report::fmt_num(ops as f64),
                Some((Some(ops), Some(false))) => {
                    format!("> {}, capped", crate::report::fmt_num(ops as f64))
                }
                _ => "—".into(),
            };
            let _ = write!(row, " {until} |");
        }
        let _ = writeln!(s, "{row}");
    }
    Some(s)
}

impl Workload for FindScaling {
    fn name(&self) -> &'static str {
        SCALING
    }
    fn title(&self) -> &'static str {
        "2. find across N nodes (Fig. 4)"
    }
    fn method(&self) -> String {
        "A ring of N nodes (`N=1` … `N=1000`), built by sequential joins through random members \
         and left to stabilize; then iterative finds of random ids, each from a random node, \
         closed loop with 64 in flight, in three passes of the same size (quick: 5K finds each, \
         full: 100K; the cold and the steady pass last at least 1 s, with more finds if needed: at N = 1 and 10 a pass \
         of 5K finds took 10–30 ms, and one stall in so short a window, another process's \
         time slice or the page faults of a mode's first pass, made the 23 % \"overhead\" at \
         N = 1 of earlier reports, where nothing secure happens: every find is answered from \
         the node's own table; over 1 s passes the N = 1 figures of both modes agree \
         within the noise). `cold N=…`: the \
         first pass over the fresh ring, where sessions (secure: a key agreement, paper Fig. 2) \
         and connections are set up as the finds need them. `warm N=…`: the second pass right \
         after, with other random ids, where most pairs on the lookup paths already have their \
         session; in a large ring iterative lookups still meet new pairs for a long time (the \
         initiator asks nodes its own tables do not hold). Then a warm-up: windows of finds \
         (quick: 2K, full: 20K) until one window without a failed find makes fewer than one set-up (secure: key \
         agreement, insecure: TCP dial) per 1,000 finds, counted from the nodes' metrics, and \
         its lookups took as many hops on average as the window before's (within 0.05 hops or \
         3 %), and the ring has been finding for one finger period, the cold and warm passes \
         included (none up to 10 nodes, whose finds take about no hop; 2 s at 100, 20 s at 1,000: lookups keep \
         learning shortcuts into their peer caches for at least that long after they stop \
         meeting new pairs), or \
         a cap stops it (quick: 1M finds or 120 s, full: 4M finds or 600 s). `N=…`: the \
         steady pass after it; the overhead goal and the plots are judged on it, as the \
         paper's overhead (§9.2) is that of pairs that have already agreed on a key (where the \
         cap stopped the warm-up first, the steady pass is measured all the same and its note \
         says so; the insecure warm-up makes at least as many finds as the secure one of the \
         same run, its cap then three times as long). The handshakes and TCP dials counted on \
         all nodes during each pass are \
         reported per 1,000 finds. Then, from 100 nodes on, `@5K/s N=…`: finds offered at \
         5,000/s (open loop, latency from each find's due time, at most 512 in flight; quick: \
         2.5K finds, full: 30K), \
         the latency of a find on a warm ring with room to spare, where the closed loop's \
         latency is that of 64 finds queued (Little's law: 64 in flight at 16K/s is 4 ms). \
         Then, on the same \
         ring, provider stores (`store N=…`): a random node registers a fresh name on k + 1 = 3 \
         replicas (lookup plus three signed stores), 64 in flight (quick: 500, full: 20K); a \
         replica's owner is often a node the registering one never talked to, so these stores \
         pay for first contacts (at 100 nodes in one process, 0.84 new connections per store in \
         the first 5,000). Then as many stores again of other fresh names (`store warm N=…`), \
         between pairs most of which have met: the cost of a store itself. Up to \
         100 nodes run over loopback TCP, every node keeping at most 16,000 / N connections (at \
         least 8); from 500 nodes on over loopback UDP (one socket per node, sessions without \
         connections), because 32 or 16 TCP connections per node are fewer than a node's working \
         set and the ring could not be built in time. Stabilize every 200 ms and fingers every \
         2 s up to 100 nodes; beyond, both periods grow in proportion to N (500: 1 s and 10 s; \
         1,000: 2 s and 20 s) so that the ring's total maintenance traffic stays that of 100 \
         nodes. Hops: nodes queried in sequence per find (0 = answered from the local table). \
         By default each ring is spread over node host processes, one per core (at most one \
         per node; `--node-hosts N`, 0 to keep every node in the bench process): this \
         executable re-run as the host of a contiguous slice of the ring's nodes on a \
         current-thread runtime, built as the in-process ring is (same identities, \
         configuration, sockets and joins); the bench process keeps the closed loop and sends \
         each find or store to the host of its node over the host's standard input, so a \
         latency includes that round trip (the same in both modes). With hosts, peak RSS \
         (since the host started for a cold pass, since the point began otherwise) and open fds \
         are summed over the host processes; without, they are the bench process's, per point."
            .into()
    }
    fn figures(&self) -> Vec<Figure> {
        use Metric::*;
        use PointSel::{Label, Prefix};
        vec![
            Figure::new(
                "find throughput, steady (after the warm-up)",
                Prefix("N="),
                OpsPerSec,
                "Fig. 4: overhead 2.1–31.6 %",
            )
            .with_goal(Goal::OverheadAtMost(10.0)),
            Figure::new(
                "find throughput, warm (second pass)",
                Prefix("warm N="),
                OpsPerSec,
                "",
            ),
            Figure::new(
                "find throughput, cold (first pass over the fresh ring)",
                Prefix("cold N="),
                OpsPerSec,
                "",
            ),
            Figure::new(
                "key agreements during the cold pass",
                Prefix("cold N="),
                HandshakesPer1K,
                "",
            ),
            Figure::new(
                "key agreements during the warm pass",
                Prefix("warm N="),
                HandshakesPer1K,
                "",
            ),
            Figure::new(
                "key agreements during the steady pass",
                Prefix("N="),
                HandshakesPer1K,
                "",
            ),
            Figure::new(
                "connections dialed during the cold pass",
                Prefix("cold N="),
                DialsPer1K,
                "",
            ),
            Figure::new(
                "DHT requests per find, steady pass (all nodes, maintenance included)",
                Prefix("N="),
                RequestsPerOp,
                "",
            ),
            Figure::new(
                "DHT requests per provider store (k + 1 = 3 replicas: lookups and stores)",
                Prefix("store N="),
                RequestsPerOp,
                "",
            ),
            Figure::new(
                "DHT requests per provider store between pairs that have met",
                Prefix("store warm N="),
                RequestsPerOp,
                "",
            ),
            Figure::new("find mean latency", Prefix("N="), MeanMs, "Fig. 4 (top)"),
            Figure::new(
                "find p50 latency at 5K/s offered (open loop, after the steady pass)",
                Prefix("@5K/s N="),
                P50Ms,
                "",
            ),
            Figure::new(
                "find p99 latency at 5K/s offered",
                Prefix("@5K/s N="),
                P99Ms,
                "",
            ),
            Figure::new(
                "provider store throughput",
                Prefix("store N="),
                OpsPerSec,
                "",
            ),
            Figure::new(
                "provider store throughput between pairs that have met",
                Prefix("store warm N="),
                OpsPerSec,
                "",
            ),
            // Issue 15's goals at 100 nodes: finds and their latency as at 1,000 nodes, the
            // first store pass (the figure, measured before the warm pass existed) and
            // the memory of the processes holding the ring.
            Figure::new(
                "find at 100 nodes, throughput",
                Label("N=100"),
                OpsPerSec,
                "",
            )
            .with_goal(Goal::SecureAtLeast(15_000.0)),
            Figure::new("find at 100 nodes, p50 latency", Label("N=100"), P50Ms, "")
                .with_goal(Goal::SecureAtMost(1.0)),
            Figure::new(
                "provider stores at 100 nodes",
                Label("store N=100"),
                OpsPerSec,
                "",
            )
            .with_goal(Goal::SecureAtLeast(6_000.0)),
            Figure::new(
                "peak memory of the processes holding 100 nodes (summed over node hosts), \
                 stores included",
                Label("store warm N=100"),
                PeakRssMib,
                "",
            )
            .with_goal(Goal::SecureAtMost(80.0)),
            Figure::new(
                "find at 1000 nodes, throughput",
                Label("N=1000"),
                OpsPerSec,
                "",
            )
            .with_goal(Goal::SecureAtLeast(10_000.0)),
            Figure::new(
                "find at 1000 nodes, p50 latency",
                Label("N=1000"),
                P50Ms,
                "",
            )
            .with_goal(Goal::SecureAtMost(1.0)),
        ]
    }
    fn plot_axis(&self) -> Option<PlotAxis> {
        Some(PlotAxis::Nodes)
    }
    fn plotted(&self, point: &str) -> bool {
        point.starts_with("N=")
    }
    fn extra_markdown(&self, results: &[Measurement]) -> Option<String> {
        cold_warm_table(results)
    }
    fn expected_duration(&self, p: &Params) -> Duration {
        // Rates of a full run on 2 cores shared with other work (load 5-8, 2026-11-26): finds
        // about 10K/s at 100 nodes, 7K/s at 500, 3K/s at 1,000; provider stores 1.2K/s, 550/s,
        // 450/s; a join while the ring grows about 50 ms over TCP, 150 ms over UDP with the
        // scaled periods. The whole full run of this workload took 1,114 s (both modes).
        let secs: f64 = Self::sizes(p)
            .into_iter()
            .map(|n| {
                let (join, find_rate, store_rate) = match n {
                    0..=10 => (0.05, 150_000.0, 4_000.0),
                    11..=100 => (0.05, 10_000.0, 1_200.0),
                    101..=500 => (0.15, 7_000.0, 550.0),
                    _ => (0.15, 3_000.0, 450.0),
                };
                let scale = f64::from(maintenance_scale(n));
                let settle = if scale > 1.0 {
                    3.0 * BASE_FINGER_PERIOD.as_secs_f64() * scale
                } else {
                    5.0
                };
                let fixed = Self::ops(p) as f64 / find_rate;
                let pass = fixed.max(Self::min_pass(p).as_secs_f64());
                let warm_up = SteadyRule::for_profile(p, n).expected(n, find_rate);
                n as f64 * join
                    + settle
                    + 2.0 * pass
                    + fixed
                    + warm_up
                    + Self::open_ops(p, n) as f64 / OPEN_RATE
                    + Self::store_ops(p) as f64 / store_rate
            })
            .sum();
        Duration::from_secs_f64(secs)
    }
    fn run(&self, mode: Mode, p: &Params, progress: &Progress) -> Result<Vec<Measurement>, Error> {
        let rt = load::runtime()?;
        let ops = Self::ops(p);
        let out = rt.block_on(async {
            let mut out = Vec::new();
            for n in Self::sizes(p) {
                let seed = p.seed ^ (n as u64).wrapping_mul(0x51);
                let hosts = p.node_hosts.min(n);
                let rss_reset = machine::reset_peak_rss();
                progress.message(format!("N={n}: building the ring"));
                // Successor lists converge in a number of stabilize rounds: the bound grows
                // with the scaled period.
                let bound =
                    Duration::from_secs(30).max(BASE_STABILIZE_PERIOD * 40 * maintenance_scale(n));
                let ring = Members::build(mode, seed, n, 100_000, hosts, settle_for(p, bound))
                    .await
                    .map_err(|e| werr(SCALING, mode, e))?;
                let ring = Arc::new(ring);
                // Operation `i` of pass `pass` draws its node and target from `pass * 2^32 + i`:
                // the warm pass repeats none of the cold pass's finds.
                let op = |pass: u64| {
                    let ring = Arc::clone(&ring);
                    move |i: u64| {
                        let k = (pass << 32) + i;
                        let node = pick(ring.len(), seed ^ 5, k);
                        let target = random_id(seed ^ 6, k);
                        let ring = Arc::clone(&ring);
                        async move {
                            ring.find(node, target)
                                .await
                                .map(|hops| OpOutcome { hops: Some(hops) })
                        }
                    }
                };
                let nodes_u32 = u32::try_from(n).unwrap_or(u32::MAX);
                // The set-ups the steady state is judged on: key agreements on the secure
                // ring, connections on the insecure one.
                let setups = |(handshakes, dials): (u64, u64)| match mode {
                    Mode::Secure => handshakes,
                    _ => dials,
                };
                let mut finds_so_far = 0;
                // Cold: the first pass over the fresh ring, sessions and connections made as the
                // finds need them. Warm: a second pass of the same size, right after. Then the
                // warm-up (windows of finds until one is steady, or the cap) and the steady pass.
                let finding_since = Instant::now();
                for (pass, phase) in [(0, Phase::Cold), (1, Phase::Warm), (2, Phase::Steady)] {
                    let mut warm_up = None;
                    if phase == Phase::Steady {
                        let mut rule = SteadyRule::for_profile(p, n);
                        let matched = match mode {
                            Mode::Secure => None,
                            _ => self.secure_warm_up(n),
                        };
                        rule.min_finds = matched.unwrap_or(0);
                        let started = Instant::now();
                        let (mut finds, mut rates) = (0, Vec::new());
                        let mut hops_before = None;
                        let verdict = loop {
                            progress.add_len(rule.window);
                            progress.message(format!(
                                "N={n}: warm-up window {} (set-ups per 1K finds so far: {})",
                                rates.len() + 1,
                                trajectory(&rates, 6)
                            ));
                            let before = ring.setup_counts().await;
                            let stats = load::closed_loop(
                                ClosedLoop::new(IN_FLIGHT, rule.window),
                                progress,
                                op(3 + rates.len() as u64),
                            )
                            .await?;
                            let made =
                                setups(ring.setup_counts().await).saturating_sub(setups(before));
                            finds += stats.ok;
                            rates.push(made as f64 * 1000.0 / stats.ok.max(1) as f64);
                            let hops = (hops_before, stats.mean_hops());
                            hops_before = stats.mean_hops();
                            match rule.judge(
                                (stats.ok, stats.errors),
                                (made, hops),
                                finds,
                                (started.elapsed(), finding_since.elapsed()),
                            ) {
                                WarmUp::Continue => {}
                                v => break v,
                            }
                        };
                        finds_so_far += finds;
                        if mode == Mode::Secure {
                            self.record_secure_warm_up(n, finds);
                        }
                        warm_up =
                            Some((verdict == WarmUp::Steady, rates, started.elapsed(), matched));
                    }
                    let point = scaling_point(n, phase);
                    progress.add_len(ops);
                    progress.message(point.clone());
                    // The cold pass's peak includes the ring's construction.
                    let rss_reset = if pass == 0 {
                        rss_reset || hosts > 0
                    } else {
                        ring.reset_peak_rss().await
                    };
                    let before = ring.setup_counts().await;
                    let requests_before = ring.dht_requests().await;
                    let stats = load::closed_loop(
                        // The warm pass is not judged: its set-up counts are the point, and
                        // a quick run stays within its 3 minutes.
                        ClosedLoop::new(IN_FLIGHT, ops).lasting(if phase == Phase::Warm {
                            Duration::ZERO
                        } else {
                            Self::min_pass(p)
                        }),
                        progress,
                        op(pass),
                    )
                    .await?;
                    let after = ring.setup_counts().await;
                    let requests = ring.dht_requests().await.saturating_sub(requests_before);
                    let mut m = Measurement::from_stats(SCALING, mode, point, nodes_u32, &stats)
                        .with_concurrency(IN_FLIGHT)
                        .with_phase(phase)
                        .with_setups(
                            after.0.saturating_sub(before.0),
                            after.1.saturating_sub(before.1),
                        )
                        .with_dht_requests(requests);
                    if let Some((reached, rates, took, matched)) = warm_up {
                        m = m.with_steady(finds_so_far, reached);
                        let what = if reached {
                            "steady state reached"
                        } else {
                            "steady state NOT reached (capped)"
                        };
                        let matched = matched.map_or(String::new(), |f| {
                            format!(" (at least {f} finds, as the secure ring's warm-up)")
                        });
                        let note = format!(
                            "{what} after a warm-up of {} windows{matched} ({:.0} s); set-ups \
                             per 1K finds over them: {}",
                            rates.len(),
                            took.as_secs_f64(),
                            trajectory(&rates, 8)
                        );
                        m.note = Some(match m.note.take() {
                            Some(n) => format!("{note}; {n}"),
                            None => note,
                        });
                    }
                    finds_so_far += stats.ok;
                    out.push(with_usage(m, ring.usage(rss_reset).await));
                }
                // The latency of a find with room to spare: open loop at OPEN_RATE, right
                // after the steady pass (so on warm tables), from each find's due time.
                let open_ops = Self::open_ops(p, n);
                if open_ops > 0 {
                    let rss_reset = ring.reset_peak_rss().await;
                    let point = open_point(n);
                    progress.add_len(open_ops);
                    progress.message(point.clone());
                    let stats = load::open_loop(
                        OpenLoop {
                            rate_per_sec: OPEN_RATE,
                            ops: open_ops,
                            max_in_flight: OPEN_IN_FLIGHT,
                            timer: Timer::Precise,
                        },
                        progress,
                        // a pass number no warm-up window reaches (those count up from 3)
                        op(u64::from(u32::MAX)),
                    )
                    .await?;
                    let m = Measurement::from_stats(SCALING, mode, point, nodes_u32, &stats);
                    out.push(with_usage(m, ring.usage(rss_reset).await));
                }
                // Provider stores on the same ring: a random node registers a fresh name on
                // k + 1 = 3 replicas (the network default k = 2, libp2p's replication 3). The
                // first pass meets new pairs; the second, with other fresh names, mostly not.
                for (pass, label, salt) in [(0, "store", 8), (1, "store warm", 9)] {
                    let rss_reset = ring.reset_peak_rss().await;
                    let point = format!("{label} N={n}");
                    let store_ops = Self::store_ops(p);
                    progress.add_len(store_ops);
                    progress.message(point.clone());
                    let members = Arc::clone(&ring);
                    let requests_before = ring.dht_requests().await;
                    let stats = load::closed_loop(
                        ClosedLoop::new(IN_FLIGHT, store_ops),
                        progress,
                        move |i: u64| {
                            let node = pick(members.len(), seed ^ 7 ^ pass, i);
                            let name = random_name(seed ^ salt, i);
                            let members = Arc::clone(&members);
                            async move {
                                members
                                    .store(node, name)
                                    .await
                                    .map(|()| OpOutcome::default())
                            }
                        },
                    )
                    .await?;
                    let requests = ring.dht_requests().await.saturating_sub(requests_before);
                    let m = Measurement::from_stats(SCALING, mode, point, nodes_u32, &stats)
                        .with_concurrency(IN_FLIGHT)
                        .with_dht_requests(requests);
                    out.push(with_usage(m, ring.usage(rss_reset).await));
                }
                match Arc::try_unwrap(ring) {
                    Ok(ring) => ring.shutdown().await,
                    // An operation still holds the ring (it cannot, once its loop is done):
                    // dropping it kills the node hosts, the nodes in this process go with
                    // the runtime.
                    Err(ring) => drop(ring),
                }
            }
            Ok::<_, Error>(out)
        })?;
        let mut out = out;
        check_keeping(SCALING, mode, &mut out)?;
        Ok(out)
    }
}

/// Sets the point's peak RSS and open fds from the processes holding the ring.
/// `m` with the nodes' usage, and a note (also printed) if the host's connection-tracking
/// table was nearly full at its end.
fn with_usage(mut m: Measurement, usage: Usage) -> Measurement {
    m.peak_rss_kib = usage.peak_rss_kib;
    m.open_fds = usage.open_fds;
    if let Some(note) = crate::machine::conntrack_note(crate::machine::conntrack()) {
        eprintln!("warning: {} ({}): {note}", m.point, m.mode);
        m.note = Some(match m.note.take() {
            Some(n) => format!("{n}; {note}"),
            None => note,
        });
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(
        mode: Mode,
        n: usize,
        phase: Phase,
        ops_per_sec: f64,
        setups: (u64, u64),
    ) -> Measurement {
        let mut stats = load::RunStats::default();
        stats.ok = 1000;
        stats.elapsed = Duration::from_secs_f64(1000.0 / ops_per_sec);
        Measurement::from_stats(SCALING, mode, scaling_point(n, phase), n as u32, &stats)
            .with_phase(phase)
            .with_setups(setups.0, setups.1)
    }

    #[test]
    fn cold_warm_and_steady_passes_are_reported_side_by_side() {
        assert_eq!(scaling_point(100, Phase::Cold), "cold N=100");
        assert_eq!(scaling_point(100, Phase::Warm), "warm N=100");
        assert_eq!(scaling_point(100, Phase::Steady), "N=100");
        assert_eq!(cold_warm_table(&[]), None);
        let results = [
            pass(Mode::Secure, 100, Phase::Cold, 5_000.0, (800, 0)),
            pass(Mode::Secure, 100, Phase::Warm, 8_000.0, (20, 0)),
            pass(Mode::Secure, 100, Phase::Steady, 9_500.0, (0, 0)).with_steady(27_000, true),
            pass(Mode::Insecure, 100, Phase::Cold, 9_000.0, (0, 300)),
            pass(Mode::Insecure, 100, Phase::Warm, 9_600.0, (0, 2)),
            pass(Mode::Insecure, 100, Phase::Steady, 10_000.0, (0, 0))
                .with_steady(1_000_000, false),
        ];
        let table = cold_warm_table(&results).unwrap();
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| 100 |")).collect();
        assert_eq!(
            rows,
            [
                "| 100 | 5,000 | 8,000 | 9,500 | 9,000 | 9,600 | 10,000 | 44.4 % | 16.7 % | \
                 5.00 % |",
                "| 100 | 800 | 20.0 | 0 | 27,000 | 300 | 2.00 | 0 | > 1,000,000, capped |",
            ]
        );
        // The goal rows see the steady pass only; the cold and warm passes have their own.
        let rows = crate::report::rows(SCALING, &FindScaling::default().figures(), &results);
        let steady = rows
            .iter()
            .find(|r| r.what.starts_with("find throughput, steady"))
            .unwrap();
        assert_eq!(steady.point, "N=100");
        assert_eq!(steady.met, Some(crate::Verdict::Met));
        for (what, point) in [
            ("find throughput, cold", "cold N=100"),
            ("find throughput, warm", "warm N=100"),
        ] {
            let r = rows.iter().find(|r| r.what.starts_with(what)).unwrap();
            assert_eq!((r.point.as_str(), r.met), (point, None));
        }
        // Goals judge the steady passes and the store passes, never a cold or warm pass.
        assert!(!rows.iter().any(|r| r.goal.is_some()
            && !r.point.starts_with("N=")
            && !r.point.starts_with("store")));
        let w = FindScaling::default();
        assert!(w.plotted("N=100") && !w.plotted("warm N=100"));
    }

    fn rule() -> SteadyRule {
        SteadyRule {
            window: 5_000,
            min_time: Duration::ZERO,
            max_finds: 20_000,
            max_time: Duration::from_secs(60),
            min_finds: 0,
        }
    }

    /// Two windows with the same mean hops.
    const SETTLED: (Option<f64>, Option<f64>) = (Some(1.25), Some(1.25));

    #[test]
    fn steady_means_fewer_than_one_set_up_per_thousand_finds() {
        let r = rule();
        let t = Duration::from_secs(1);
        // 4 set-ups in 5,000 finds: 0.8 per 1,000
        assert_eq!(
            r.judge((5_000, 0), (4, SETTLED), 5_000, (t, t)),
            WarmUp::Steady
        );
        // 5 in 5,000: exactly one per 1,000 is not fewer
        assert_eq!(
            r.judge((5_000, 0), (5, SETTLED), 5_000, (t, t)),
            WarmUp::Continue
        );
        assert_eq!(
            r.judge((5_000, 0), (239 * 5, SETTLED), 5_000, (t, t)),
            WarmUp::Continue
        );
        // a window of fewer than 1,000 finds (failures) is no evidence, even without set-ups
        assert_eq!(
            r.judge((999, 0), (0, SETTLED), 999, (t, t)),
            WarmUp::Continue
        );
        assert_eq!(
            r.judge((1_000, 0), (0, SETTLED), 1_000, (t, t)),
            WarmUp::Steady
        );
        // failed finds: not steady, however few set-ups
        assert_eq!(
            r.judge((5_000, 1), (0, SETTLED), 5_000, (t, t)),
            WarmUp::Continue
        );
        assert_eq!(
            r.judge((0, 5_000), (0, SETTLED), 5_000, (t, t)),
            WarmUp::Continue
        );
        // absurd counts do not overflow into a steady verdict
        assert_eq!(
            r.judge((5_000, 0), (u64::MAX, SETTLED), 5_000, (t, t)),
            WarmUp::Continue
        );
    }

    #[test]
    fn steady_also_means_lookups_no_shorter_than_a_window_before() {
        let r = rule();
        let t = Duration::from_secs(1);
        let judge = |hops| r.judge((5_000, 0), (0, hops), 5_000, (t, t));
        // the first window has nothing to compare with
        assert_eq!(judge((None, Some(2.0))), WarmUp::Continue);
        // 2.08 -> 1.8 hops: the caches still warm up
        assert_eq!(judge((Some(2.08), Some(1.8))), WarmUp::Continue);
        // within 0.05 hops, or 3 % above 1.67 hops
        assert_eq!(judge((Some(1.25), Some(1.21))), WarmUp::Steady);
        assert_eq!(judge((Some(1.25), Some(1.19))), WarmUp::Continue);
        assert_eq!(judge((Some(4.0), Some(3.9))), WarmUp::Steady);
        assert_eq!(judge((Some(4.0), Some(3.8))), WarmUp::Continue);
        // more hops than before is noise, not warming up
        assert_eq!(judge((Some(1.25), Some(1.4))), WarmUp::Steady);
        // a workload without hops is judged on set-ups alone
        assert_eq!(judge((None, None)), WarmUp::Steady);
        // and the cap still ends a warm-up that never settles
        assert_eq!(
            r.judge((5_000, 0), (0, (Some(3.0), Some(2.0))), 20_000, (t, t)),
            WarmUp::Capped
        );
    }

    #[test]
    fn a_warm_up_matched_to_another_runs_its_finds_first() {
        let r = SteadyRule {
            min_finds: 452_000,
            ..rule()
        };
        let t = Duration::from_secs(1);
        let judge = |total, elapsed| r.judge((5_000, 0), (0, SETTLED), total, (elapsed, t));
        // steady windows and the usual cap do not end it before the finds are made
        assert_eq!(judge(86_000, t), WarmUp::Continue);
        assert_eq!(judge(86_000, Duration::from_secs(61)), WarmUp::Continue);
        // then the usual rule
        assert_eq!(judge(452_000, t), WarmUp::Steady);
        // three times the cap still stops a ring that cannot keep up
        assert_eq!(judge(86_000, Duration::from_secs(180)), WarmUp::Capped);
        // a matched count below the ring's own warm-up changes nothing
        let low = SteadyRule {
            min_finds: 1_000,
            ..rule()
        };
        assert_eq!(
            low.judge((5_000, 0), (0, (Some(3.0), Some(2.0))), 20_000, (t, t)),
            WarmUp::Capped
        );
    }

    #[test]
    fn steady_waits_one_finger_period_at_least() {
        let r = SteadyRule {
            min_time: Duration::from_secs(20),
            ..rule()
        };
        let steady = |finding| r.judge((5_000, 0), (0, SETTLED), 5_000, (Duration::ZERO, finding));
        assert_eq!(steady(Duration::from_secs(1)), WarmUp::Continue);
        assert_eq!(steady(Duration::from_secs(20)), WarmUp::Steady);
        // one finger period of the ring: 2 s up to 100 nodes, scaled beyond; none when tiny
        let p = |profile| Params {
            profile,
            seed: 1,
            cores: 2,
            node_hosts: 0,
            ring_nodes: None,
        };
        let quick = p(crate::Profile::Quick);
        assert_eq!(
            SteadyRule::for_profile(&quick, 100).min_time,
            Duration::from_secs(2)
        );
        assert_eq!(
            SteadyRule::for_profile(&quick, 1000).min_time,
            Duration::from_secs(20)
        );
        let tiny = p(crate::Profile::Tiny);
        assert_eq!(
            SteadyRule::for_profile(&tiny, 1000).min_time,
            Duration::ZERO
        );
    }

    #[test]
    fn the_warm_up_is_capped_in_finds_and_in_time() {
        let r = rule();
        let t = Duration::from_secs(1);
        assert_eq!(
            r.judge((5_000, 0), (100, SETTLED), 15_000, (t, t)),
            WarmUp::Continue
        );
        assert_eq!(
            r.judge((5_000, 0), (100, SETTLED), 20_000, (t, t)),
            WarmUp::Capped
        );
        assert_eq!(
            r.judge(
                (5_000, 0),
                (100, SETTLED),
                5_000,
                (Duration::from_secs(60), Duration::from_secs(60))
            ),
            WarmUp::Capped
        );
        // a steady window wins over the cap it reaches at the same time
        assert_eq!(
            r.judge(
                (5_000, 0),
                (0, SETTLED),
                20_000,
                (Duration::from_secs(60), Duration::from_secs(60))
            ),
            WarmUp::Steady
        );
        // every profile's window can be judged and its cap is finite
        for profile in [
            crate::Profile::Full,
            crate::Profile::Quick,
            crate::Profile::Tiny,
        ] {
            let p = Params {
                profile,
                seed: 1,
                cores: 2,
                node_hosts: 0,
                ring_nodes: None,
            };
            let r = SteadyRule::for_profile(&p, 1000);
            assert!(r.window >= MIN_WINDOW && r.max_finds >= r.window, "{r:?}");
            assert!(r.max_time <= Duration::from_secs(600), "{r:?}");
        }
    }

    #[test]
    fn the_note_shows_the_windows_first_and_last() {
        assert_eq!(trajectory(&[], 8), "");
        assert_eq!(trajectory(&[239.0, 50.0, 0.4], 8), "239 → 50.0 → 0.400");
        let many: Vec<f64> = (0..20).map(f64::from).rev().collect();
        assert_eq!(trajectory(&many, 3), "19.0 → 10.0 → 0");
    }

    #[test]
    fn the_nodes_option_picks_one_ring() {
        let mut p = Params {
            profile: crate::Profile::Quick,
            seed: 1,
            cores: 2,
            node_hosts: 0,
            ring_nodes: None,
        };
        assert_eq!(FindScaling::sizes(&p), [1, 10, 100]);
        p.ring_nodes = Some(1000);
        assert_eq!(FindScaling::sizes(&p), [1000]);
    }
}
