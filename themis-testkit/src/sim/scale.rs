//! Internet scale in the simulator (issue 15, item 6): a ring of N nodes grown by joins, a set
//! of registrations, then three phases, each measured: a stable window (no churn), churn with
//! session times like those measured in deployed DHTs (departed nodes replaced by joins, so N
//! stays near its target), and a partition into two groups that is healed at the end. After
//! each phase the ring is probed: finds of random targets (hops and latency in virtual time)
//! and a provider lookup of every live registration (those whose provider is still a member).
//!
//! The figures per phase: hop count (mean, p50, p99, max) against ½·log₂N + 1, find latency,
//! registrations missing, maintenance traffic per node per simulated minute (every message the
//! ring sends while nobody looks anything up: stabilize, notify, predecessor checks, finger
//! sweeps, re-stores, joins and leaves of the churn, unification probes), the wall-clock time
//! per simulated minute and the events handled, and the process's memory (`VmRSS`, `VmHWM`).
//!
//! Run by `themis-dht/examples/sim_scale.rs` at 1,000 to 100,000 nodes, and by a test here at
//! a few hundred, so that the experiment cannot rot.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use themis_crypto::NodeId;
use themis_dht::{Config, Event, NodeState, QueryId, ServiceSpec, object_id};

use super::traffic::{KINDS, Traffic};
use super::{Sim, SimConfig};

/// Session times of ring members: a Weibull distribution, capped.
///
/// Stutzbach and Rejaie ("Understanding Churn in Peer-to-Peer Networks", IMC 2006) measured
/// session lengths in Kad, Gnutella and BitTorrent: heavy tailed, fit by Weibull distributions
/// with shape 0.34-0.59 (or log-normals), medians of minutes to tens of minutes, and a tail of
/// many hours. [`Sessions::deployed`] takes shape 0.5 and a median of the caller's choice.
#[derive(Clone, Copy, Debug)]
pub struct Sessions {
    /// Median session.
    pub median: Duration,
    /// Weibull shape `k` (below 1: a falling hazard, the heavy tail).
    pub shape: f64,
    /// Longest session (the tail is cut here).
    pub cap: Duration,
}

impl Sessions {
    /// Weibull shape 0.5 with median `median`, capped at 24 h.
    pub fn deployed(median: Duration) -> Self {
        Self {
            median,
            shape: 0.5,
            cap: Duration::from_secs(24 * 3600),
        }
    }

    /// The Weibull scale λ of the median: median = λ·(ln 2)^(1/k).
    fn scale_secs(&self) -> f64 {
        self.median.as_secs_f64() / std::f64::consts::LN_2.powf(1.0 / self.shape)
    }

    /// A session length (inverse transform: λ·(−ln U)^(1/k)), capped.
    pub fn draw(&self, rng: &mut crate::Rng) -> Duration {
        let u = 1.0 - rng.f64(); // (0, 1]
        let s = self.scale_secs() * (-u.ln()).powf(1.0 / self.shape);
        Duration::from_secs_f64(s.min(self.cap.as_secs_f64()))
    }

    /// What is left of the session of a member seen at a random moment of a ring in steady
    /// state (the residual life of a renewal process): a session drawn in proportion to its
    /// length (by rejection), and a uniform point in it. Starting the churn from fresh sessions
    /// instead would make every member leave early at once (the hazard is highest at zero).
    pub fn draw_residual(&self, rng: &mut crate::Rng) -> Duration {
        let cap = self.cap.as_secs_f64().max(1e-3);
        loop {
            let s = self.draw(rng);
            if rng.f64() * cap < s.as_secs_f64() {
                return s.mul_f64(rng.f64());
            }
        }
    }

    /// Mean session (of the capped distribution), by integrating its survival function.
    pub fn mean(&self) -> Duration {
        let (lambda, cap) = (self.scale_secs(), self.cap.as_secs_f64());
        let steps = 200_000;
        let dt = cap / f64::from(steps);
        let survival = |t: f64| (-(t / lambda).powf(self.shape)).exp();
        let sum: f64 = (0..steps)
            .map(|i| survival((f64::from(i) + 0.5) * dt) * dt)
            .sum();
        Duration::from_secs_f64(sum)
    }
}

/// A scale run.
#[derive(Clone, Debug)]
pub struct ScaleScenario {
    /// Seed of the run.
    pub seed: u64,
    /// Target ring size N.
    pub nodes: usize,
    /// The nodes' settings (default: [`Config::default`], the periods of a real network).
    pub node: Config,
    /// Session times during churn.
    pub sessions: Sessions,
    /// Share of departures that are crashes (the rest leave gracefully). Default 0.5.
    pub crash_share: f64,
    /// The ring grows by this share of its size per second of virtual time (after a first
    /// node); joins of one step arrive together. Default 0.2.
    pub growth_per_sec: f64,
    /// Bootstraps each joining node is given: distinct random members, tried in turn (as
    /// `themis node` takes several `--bootstrap` contacts). Default 3. With one, a joiner
    /// whose bootstrap departs before answering ends its join alone (`JoinFailed`) and, its
    /// only contact gone for good, never finds the ring.
    pub bootstraps: usize,
    /// Length of the stable window (no churn).
    pub stable: Duration,
    /// Length of the churn phase.
    pub churn: Duration,
    /// Length of the partition (churn goes on in it); zero skips the phase.
    pub partition: Duration,
    /// Longest wait after the heal until the ring is one correct ring again.
    pub max_heal: Duration,
    /// Registrations made before the phases.
    pub registrations: usize,
    /// Their replication `k`.
    pub k: u8,
    /// Finds per probe.
    pub lookups: usize,
    /// Progress lines on stderr.
    pub verbose: bool,
}

impl ScaleScenario {
    /// N nodes with the default settings: sessions with a median of 10 minutes, half the
    /// departures crashes, 1 minute stable, 5 minutes of churn, 2 minutes of partition, N/10
    /// registrations (at least 20) with k = 2, 2,000 finds per probe.
    pub fn new(seed: u64, nodes: usize) -> Self {
        Self {
            seed,
            nodes,
            node: Config::default(),
            sessions: Sessions::deployed(Duration::from_secs(600)),
            crash_share: 0.5,
            growth_per_sec: 0.2,
            bootstraps: 3,
            stable: Duration::from_secs(60),
            churn: Duration::from_secs(300),
            partition: Duration::from_secs(120),
            max_heal: Duration::from_secs(600),
            registrations: (nodes / 10).max(20),
            k: 2,
            lookups: 2000,
            verbose: false,
        }
    }

    /// The bound on the mean hop count: ½·log₂N + 1 (Chord's expected path is ½·log₂N).
    pub fn hop_bound(&self) -> f64 {
        0.5 * (self.nodes.max(1) as f64).log2() + 1.0
    }
}

/// Summary of a sample: mean, median, 99th percentile, maximum.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// Values summarised.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Stats {
    /// The summary of `v` (sorted here).
    pub fn of(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        Self {
            count: v.len(),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: q(0.5),
            p99: q(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// What a probe of the ring found.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    /// Finds started.
    pub finds: usize,
    /// Finds that failed or did not finish within the probe.
    pub failed: usize,
    /// Finds that returned another node than the true successor when the probe started
    /// (under churn a few are out of date rather than wrong).
    pub wrong: usize,
    /// Hops of the finds that succeeded.
    pub hops: Stats,
    /// Their latency in virtual time, in milliseconds.
    pub latency_ms: Stats,
    /// Registrations whose provider is a live member (when the probe starts, and still at
    /// its end).
    pub live_registrations: usize,
    /// Of them, not found (with their provider among the records) by a lookup from a random
    /// member that stayed alive until its answer.
    pub missing: usize,
    /// Lookups left out of both counts: the provider departed during the probe (churn goes
    /// on), or the member that asked departed before the answer.
    pub departed_meanwhile: usize,
}

/// One measured phase.
#[derive(Clone, Debug)]
pub struct PhaseReport {
    /// `stable`, `churn`, `partition`, `heal` (from the heal to one ring, probed then) or
    /// `settled` (from then until every successor list is complete, probed then).
    pub name: &'static str,
    /// Virtual time of the phase (without its probe).
    pub sim: Duration,
    /// Wall-clock time it took.
    pub wall: Duration,
    /// CPU time it took (the process's, see [`cpu_time`]).
    pub cpu: Duration,
    /// Simulator events handled in it.
    pub events: u64,
    /// Messages sent in it (no probe lookups in it: all of it is maintenance and churn).
    pub traffic: Traffic,
    /// Live members, averaged over the phase's steps.
    pub members: f64,
    /// Departures (crashes and leaves) and joins in it.
    pub departures: usize,
    /// Joins in it.
    pub joins: usize,
    /// Joins (and re-joins of orphaned nodes) that ended in `JoinFailed` in it.
    pub joins_failed: u64,
    /// The probe after it (none after the partition).
    pub probe: Option<Probe>,
}

impl PhaseReport {
    /// Messages per live member per simulated minute.
    pub fn messages_per_node_minute(&self) -> f64 {
        self.per_node_minute(self.traffic.messages())
    }

    /// Bytes per live member per simulated minute.
    pub fn bytes_per_node_minute(&self) -> f64 {
        self.per_node_minute(self.traffic.bytes())
    }

    /// Messages of kind `k` ([`KINDS`]) per live member per simulated minute.
    pub fn kind_per_node_minute(&self, k: usize) -> f64 {
        self.per_node_minute(self.traffic.of(k).0)
    }

    fn per_node_minute(&self, x: u64) -> f64 {
        let minutes = self.sim.as_secs_f64() / 60.0;
        if minutes <= 0.0 || self.members <= 0.0 {
            return 0.0;
        }
        x as f64 / self.members / minutes
    }

    /// Wall-clock time per simulated minute.
    pub fn wall_per_sim_minute(&self) -> Duration {
        let minutes = self.sim.as_secs_f64() / 60.0;
        if minutes <= 0.0 {
            return Duration::ZERO;
        }
        self.wall.div_f64(minutes)
    }

    /// CPU time per simulated minute.
    pub fn cpu_per_sim_minute(&self) -> Duration {
        let minutes = self.sim.as_secs_f64() / 60.0;
        if minutes <= 0.0 {
            return Duration::ZERO;
        }
        self.cpu.div_f64(minutes)
    }

    /// CPU time per event handled, in microseconds.
    pub fn cpu_us_per_event(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.events.max(1) as f64
    }
}

/// What a scale run measured.
#[derive(Clone, Debug)]
pub struct ScaleReport {
    /// The scenario's N.
    pub nodes: usize,
    /// ½·log₂N + 1, the bound on the mean hop count.
    pub hop_bound: f64,
    /// Virtual and wall-clock time of growing and settling the ring.
    pub build_sim: Duration,
    /// Wall-clock time of the build.
    pub build_wall: Duration,
    /// CPU time of the build.
    pub build_cpu: Duration,
    /// Nodes that were not ring members after the build (joins that never finished).
    pub build_stuck: usize,
    /// Resident memory before the first node and after the build, in bytes (`None` off Linux).
    pub rss_before: Option<u64>,
    /// Resident memory after the build.
    pub rss_built: Option<u64>,
    /// Peak resident memory of the process at the end (`VmHWM`).
    pub peak_rss: Option<u64>,
    /// Registrations made, and replicas stored at once (of `registrations · (k+1)`).
    pub registrations: usize,
    /// Replicas stored at once.
    pub replicas_stored: u64,
    /// The phases, in order.
    pub phases: Vec<PhaseReport>,
    /// Virtual time from the heal until Zave's invariants held on every live member.
    pub to_one_ring: Option<Duration>,
    /// The last complaint of the ring check, if it never held.
    pub ring_error: Option<String>,
    /// Virtual time from the heal until every successor list was complete (`None`: not within
    /// `max_heal`).
    pub to_full_lists: Option<Duration>,
    /// Virtual time from the heal until every live registration was found again (`None`:
    /// not within `max_heal`).
    pub to_discovery: Option<Duration>,
    /// Mean session and expected departures per member per minute of the churn.
    pub mean_session: Duration,
    /// Nodes added in all (live or not): the simulator's table.
    pub nodes_added: usize,
    /// Fingerprint of the run (equal for equal seeds).
    pub trace_hash: u64,
}

impl ScaleReport {
    /// Memory per node of the built ring, in bytes.
    pub fn bytes_per_node(&self) -> Option<u64> {
        Some(self.rss_built?.saturating_sub(self.rss_before?) / self.nodes.max(1) as u64)
    }

    /// Every probe's hop figures and missing registrations, worst first: (largest mean hops,
    /// most registrations missing).
    pub fn worst(&self) -> (f64, usize) {
        let probes = self.phases.iter().filter_map(|p| p.probe.as_ref());
        probes.fold((0.0, 0), |(h, m), p| (h.max(p.hops.mean), m.max(p.missing)))
    }
}

/// CPU time (user and system) this process used so far, from `/proc/self/stat` (Linux,
/// 100 Hz ticks; zero elsewhere): unlike wall-clock time, not stretched by other processes.
pub fn cpu_time() -> Duration {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // fields 14 and 15 of stat(5), counted after the command name's closing parenthesis
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// `key` of `/proc/self/status` (`VmRSS`, `VmHWM`) in bytes.
pub fn proc_status_bytes(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The run's bookkeeping around the simulator: who is present (added and not departed), when
/// each present node departs, and which side of the partition it is on.
struct World {
    sim: Sim,
    sc: ScaleScenario,
    /// Present nodes, in no order, and each node's place in it (`usize::MAX`: not present).
    present: Vec<usize>,
    place: Vec<usize>,
    /// Departures due, by virtual time since the start.
    departures: BinaryHeap<Reverse<(Duration, usize)>>,
    churning: bool,
    /// Side A of the partition, when split (joiners go to the other side, B).
    side_a: Option<Vec<bool>>,
    departed: usize,
    joined: usize,
    /// Sum of members over steps, and steps, for the phase's average.
    member_sum: f64,
    member_steps: u64,
    started: Instant,
}

/// The counters at the start of a phase, which its report is measured from.
struct PhaseStart {
    sim: Duration,
    wall: Instant,
    cpu: Duration,
    events: u64,
    traffic: Traffic,
    departed: usize,
    joined: usize,
    joins_failed: u64,
}

impl World {
    /// The counters now, to measure a phase from.
    fn phase_start(&self) -> PhaseStart {
        PhaseStart {
            sim: self.sim.elapsed(),
            wall: Instant::now(),
            cpu: cpu_time(),
            events: self.sim.events_handled(),
            traffic: self.sim.traffic().clone(),
            departed: self.departed,
            joined: self.joined,
            joins_failed: self.sim.joins_failed(),
        }
    }

    /// The report of phase `name`, from `start` until now, with `members` live on average.
    fn phase_report(&self, name: &'static str, start: &PhaseStart, members: f64) -> PhaseReport {
        PhaseReport {
            name,
            sim: self.sim.elapsed() - start.sim,
            wall: start.wall.elapsed(),
            cpu: cpu_time().saturating_sub(start.cpu),
            events: self.sim.events_handled() - start.events,
            traffic: self.sim.traffic().since(&start.traffic),
            members,
            departures: self.departed - start.departed,
            joins: self.joined - start.joined,
            joins_failed: self.sim.joins_failed() - start.joins_failed,
            probe: None,
        }
    }

    fn log(&self, what: &str) {
        if self.sc.verbose {
            eprintln!(
                "[{:>7.1}s wall, {:>7.1}s sim] N={} {what}",
                self.started.elapsed().as_secs_f64(),
                self.sim.elapsed().as_secs_f64(),
                self.sc.nodes
            );
        }
    }

    fn add_present(&mut self, i: usize) {
        if self.place.len() <= i {
            self.place.resize(i + 1, usize::MAX);
        }
        self.place[i] = self.present.len();
        self.present.push(i);
    }

    fn remove_present(&mut self, i: usize) {
        let at = self.place[i];
        if at == usize::MAX {
            return;
        }
        self.present.swap_remove(at);
        if let Some(&moved) = self.present.get(at) {
            self.place[moved] = at;
        }
        self.place[i] = usize::MAX;
    }

    fn on_side_b(&self, i: usize) -> bool {
        self.side_a
            .as_ref()
            .is_none_or(|a| !a.get(i).copied().unwrap_or(false))
    }

    /// A random present full member (on side B while split), if one is found in 64 draws.
    fn random_member(&mut self) -> Option<usize> {
        for _ in 0..64 {
            let i = self.present[self.sim.rng().usize(..self.present.len())];
            if self.sim.is_alive(i)
                && self.sim.node(i).state() == NodeState::Member
                && self.on_side_b(i)
            {
                return Some(i);
            }
        }
        None
    }

    /// A new node joining through up to [`ScaleScenario::bootstraps`] distinct random members;
    /// with a session if churn is on.
    fn join_one(&mut self) {
        let mut through = Vec::with_capacity(self.sc.bootstraps);
        for _ in 0..self.sc.bootstraps.max(1) * 4 {
            if through.len() >= self.sc.bootstraps.max(1) {
                break;
            }
            match self.random_member() {
                Some(b) if !through.contains(&b) => through.push(b),
                Some(_) => {}
                None => break,
            }
        }
        if through.is_empty() {
            return;
        }
        let i = self.sim.add_node();
        self.sim.join_through(i, &through);
        self.add_present(i);
        self.joined += 1;
        if self.churning {
            let s = self.sc.sessions.draw(self.sim.rng());
            self.departures
                .push(Reverse((self.sim.elapsed().saturating_add(s), i)));
        }
    }

    /// Node `i` departs (a crash or a graceful leave) and a new node takes its place.
    fn depart(&mut self, i: usize) {
        if self.place.get(i).is_none_or(|p| *p == usize::MAX) {
            return;
        }
        self.remove_present(i);
        let crash = self.sim.rng().f64() < self.sc.crash_share;
        if !crash && self.sim.is_alive(i) && self.sim.node(i).state() == NodeState::Member {
            self.sim.leave(i);
        } else {
            self.sim.crash(i);
        }
        self.departed += 1;
        self.join_one();
    }

    /// Runs `d` of virtual time in steps of `step`, with the departures due in each.
    fn advance(&mut self, d: Duration, step: Duration) {
        let end = self.sim.elapsed().saturating_add(d);
        while self.sim.elapsed() < end {
            let left = end.saturating_sub(self.sim.elapsed());
            self.sim.run_for(step.min(left));
            if self.churning {
                let now = self.sim.elapsed();
                while let Some(Reverse((at, i))) = self.departures.peek().copied() {
                    if at > now {
                        break;
                    }
                    self.departures.pop();
                    self.depart(i);
                }
            }
            self.member_sum += self.present.len() as f64;
            self.member_steps += 1;
        }
    }

    /// Grows the ring to N: one node, then joins by `growth_per_sec` of the size per second,
    /// in steps of 50 ms; then settles until the ring is correct and one finger sweep more.
    fn grow(&mut self) {
        let first = self.sim.add_node();
        self.add_present(first);
        let step = Duration::from_millis(50);
        let mut last_log = 0;
        while self.present.len() < self.sc.nodes {
            let per_step = self.present.len() as f64 * self.sc.growth_per_sec * step.as_secs_f64();
            let joins = (per_step.ceil() as usize).clamp(1, self.sc.nodes - self.present.len());
            for _ in 0..joins {
                self.join_one();
            }
            self.sim.run_for(step);
            if self.present.len() >= last_log * 2 && self.present.len() >= 1000 {
                last_log = self.present.len();
                self.log(&format!("grown to {}", self.present.len()));
            }
        }
        let period = self.sc.node.stabilize_period;
        let max = self.sc.max_heal;
        let t0 = self.sim.elapsed();
        while self.sim.check_ring().is_err() && self.sim.elapsed() - t0 < max {
            self.sim.run_for(period);
        }
        self.sim.run_for(self.sc.node.finger_period);
        for i in 0..self.sim.len() {
            self.sim.take_events(i);
        }
    }

    /// Where the replicas of `name` (provider `p`) are now: for each replica, its owner on the
    /// live ring, whether that owner holds the provider's record, and which live nodes do (for
    /// the progress line of a probe that did not find it).
    fn where_replicas_are(&self, p: usize, name: &str) -> String {
        let provider = self.sim.node(p).id();
        let live = self.sim.live();
        let mut ring: Vec<(NodeId, usize)> =
            live.iter().map(|i| (self.sim.node(*i).id(), *i)).collect();
        ring.sort();
        let registered = self
            .sim
            .node(p)
            .registered_names()
            .iter()
            .any(|n| n == name);
        let mut parts = vec![format!(
            "{name} of node #{p} (still registered: {registered}):"
        )];
        for r in 0..=self.sc.k {
            let oid = object_id(name, r);
            let at = ring.partition_point(|(id, _)| *id < oid);
            let owner = ring.get(at).or(ring.first()).map_or(usize::MAX, |x| x.1);
            let holders: Vec<usize> = live
                .iter()
                .copied()
                .filter(|i| {
                    self.sim
                        .node(*i)
                        .stored(&oid)
                        .iter()
                        .any(|rec| rec.provider() == provider)
                })
                .collect();
            parts.push(format!(
                "replica {r} owner #{owner} holds it: {}, held by {holders:?}",
                holders.contains(&owner)
            ));
        }
        parts.join(" ")
    }

    /// Runs a phase of length `d` and measures it.
    fn phase(&mut self, name: &'static str, d: Duration) -> PhaseReport {
        let start = self.phase_start();
        self.member_sum = 0.0;
        self.member_steps = 0;
        self.advance(d, Duration::from_millis(100));
        let members = self.member_sum / self.member_steps.max(1) as f64;
        let report = self.phase_report(name, &start, members);
        self.log(&format!(
            "{name}: {:.0} msgs/node/min, {:.1?} wall and {:.1?} CPU per sim minute, {:.2} µs CPU per event, {} departures",
            report.messages_per_node_minute(),
            report.wall_per_sim_minute(),
            report.cpu_per_sim_minute(),
            report.cpu_us_per_event(),
            report.departures
        ));
        report
    }

    /// Finds of random targets from random members, and a provider lookup of every live
    /// registration; the churn (if on) goes on meanwhile.
    fn probe(&mut self, regs: &[(usize, String)]) -> Probe {
        let mut ring: Vec<NodeId> = self
            .sim
            .live()
            .into_iter()
            .map(|i| self.sim.node(i).id())
            .collect();
        ring.sort();
        self.sim.log_completions(true);
        let mut finds: HashMap<(usize, QueryId), (Duration, NodeId)> = HashMap::new();
        let mut started = 0;
        for c in 0..self.sc.lookups {
            let Some(from) = self.random_member() else {
                continue;
            };
            let target = self.sim.random_id();
            if let Ok(q) = self.sim.with_node(from, |n, now| n.find(now, target)) {
                finds.insert((from, q), (self.sim.elapsed(), target));
                started += 1;
            }
            if c % 100 == 99 {
                self.advance(Duration::from_millis(100), Duration::from_millis(100));
            }
        }
        let live_regs: Vec<&(usize, String)> = regs
            .iter()
            .filter(|(p, _)| self.sim.is_alive(*p) && self.sim.node(*p).is_member())
            .collect();
        let mut lookups: HashMap<(usize, QueryId), (usize, &str)> = HashMap::new();
        let mut not_started = 0;
        for (c, (p, name)) in live_regs.iter().enumerate() {
            let k = self.sc.k;
            let asked = self.random_member().and_then(|from| {
                self.sim
                    .with_node(from, |n, now| n.lookup_providers(now, name, Some(k)))
                    .ok()
                    .map(|q| (from, q))
            });
            match asked {
                Some(key) => {
                    lookups.insert(key, (*p, name.as_str()));
                }
                None => not_started += 1,
            }
            if c % 100 == 99 {
                self.advance(Duration::from_millis(100), Duration::from_millis(100));
            }
        }
        // a lookup ends within its request budget; 30 s covers a few stalls and timeouts
        let mut done: HashMap<(usize, QueryId), Duration> = HashMap::new();
        let wait_end = self.sim.elapsed() + Duration::from_secs(30);
        loop {
            done.extend(
                self.sim
                    .take_completions()
                    .into_iter()
                    .map(|(i, q, at)| ((i, q), at)),
            );
            let all = finds
                .keys()
                .chain(lookups.keys())
                .all(|k| done.contains_key(k));
            if all || self.sim.elapsed() >= wait_end {
                break;
            }
            self.advance(Duration::from_millis(500), Duration::from_millis(100));
        }

        self.sim.log_completions(false);
        let (mut hops, mut latency, mut wrong, mut failed) = (Vec::new(), Vec::new(), 0, 0);
        let mut missing = not_started;
        let mut departed_meanwhile = 0;
        let mut lost = Vec::new();
        let mut lost_regs = Vec::new();
        let mut nodes: Vec<usize> = finds.keys().chain(lookups.keys()).map(|k| k.0).collect();
        nodes.sort_unstable();
        nodes.dedup();
        for i in nodes {
            for e in self.sim.take_events(i) {
                match e {
                    Event::Found { query, result } => {
                        let Some((start, target)) = finds.remove(&(i, query)) else {
                            continue;
                        };
                        match result {
                            Ok(f) => {
                                hops.push(f64::from(f.hops));
                                if let Some(at) = done.get(&(i, query)) {
                                    latency.push((*at - start).as_secs_f64() * 1e3);
                                }
                                let truth = ring.partition_point(|x| *x < target);
                                if ring.get(truth).or(ring.first()) != Some(&f.successor.id) {
                                    wrong += 1;
                                }
                            }
                            Err(_) => failed += 1,
                        }
                    }
                    Event::Providers { query, result } => {
                        let Some((p, name)) = lookups.remove(&(i, query)) else {
                            continue;
                        };
                        if !self.sim.is_alive(p) || !self.sim.node(p).is_member() {
                            departed_meanwhile += 1;
                            continue;
                        }
                        let provider = self.sim.node(p).id();
                        let found = result
                            .as_ref()
                            .is_ok_and(|r| r.records.iter().any(|rec| rec.provider() == provider));
                        if !found {
                            missing += 1;
                            lost.push(match result {
                                Ok(r) => format!(
                                    "{name}: {} records, {} withdrawn, last replica {}",
                                    r.records.len(),
                                    r.withdrawn.len(),
                                    r.replica
                                ),
                                Err(e) => format!("{name}: {e:?}"),
                            });
                            lost_regs.push((p, name));
                        }
                    }
                    _ => {}
                }
            }
        }
        failed += finds.len();
        for ((asker, _), (p, name)) in lookups {
            if !self.sim.is_alive(asker) || !self.sim.is_alive(p) || !self.sim.node(p).is_member() {
                departed_meanwhile += 1;
            } else {
                missing += 1;
                lost.push(format!("{name}: no answer"));
                lost_regs.push((p, name));
            }
        }
        let probe = Probe {
            finds: started,
            failed,
            wrong,
            hops: Stats::of(hops),
            latency_ms: Stats::of(latency),
            live_registrations: live_regs.len() - departed_meanwhile,
            missing,
            departed_meanwhile,
        };
        if !lost.is_empty() {
            lost.truncate(5);
            self.log(&format!("registrations not found: {}", lost.join("; ")));
            for (p, name) in lost_regs.into_iter().take(5) {
                let line = self.where_replicas_are(p, name);
                self.log(&line);
            }
        }
        self.log(&format!(
            "probe: hops mean {:.2} p99 {} max {}, latency p50 {:.0} ms, {} of {} registrations missing, {} finds failed, {} wrong",
            probe.hops.mean,
            probe.hops.p99,
            probe.hops.max,
            probe.latency_ms.p50,
            probe.missing,
            probe.live_registrations,
            probe.failed,
            probe.wrong
        ));
        probe
    }
}

/// Runs `sc` and reports what it measured.
pub fn run_scale(sc: &ScaleScenario) -> ScaleReport {
    let mut cfg = SimConfig::new(sc.seed);
    cfg.node = sc.node.clone();
    let rss_before = proc_status_bytes("VmRSS:");
    let mut w = World {
        sim: Sim::new(cfg),
        sc: sc.clone(),
        present: Vec::new(),
        place: Vec::new(),
        departures: BinaryHeap::new(),
        churning: false,
        side_a: None,
        departed: 0,
        joined: 0,
        member_sum: 0.0,
        member_steps: 0,
        started: Instant::now(),
    };
    let (w0, c0) = (Instant::now(), cpu_time());
    w.grow();
    let build_cpu = cpu_time().saturating_sub(c0);
    let build_sim = w.sim.elapsed();
    let build_wall = w0.elapsed();
    let build_stuck = w.present.len() - w.sim.live().len();
    let rss_built = proc_status_bytes("VmRSS:");
    w.log(&format!(
        "built in {build_wall:.1?}: {} members, {build_stuck} stuck, RSS {} MB",
        w.sim.live().len(),
        rss_built.unwrap_or(0) >> 20
    ));

    // registrations from random members
    let mut regs = Vec::new();
    for r in 0..sc.registrations {
        let Some(p) = w.random_member() else { continue };
        let name = format!("svc-{r}");
        let spec = ServiceSpec::new(name.clone());
        if w.sim
            .with_node(p, |n, now| n.register(now, spec, Some(sc.k)))
            .is_ok()
        {
            regs.push((p, name));
        }
        if r % 100 == 99 {
            w.sim.run_for(Duration::from_millis(100));
        }
    }
    w.sim.run_for(Duration::from_secs(10));
    let mut replicas_stored = 0;
    for (p, _) in &regs {
        for e in w.sim.take_events(*p) {
            if let Event::Registered { stored, .. } = e {
                replicas_stored += u64::from(stored);
            }
        }
    }

    let mut phases = Vec::new();
    let mut stable = w.phase("stable", sc.stable);
    stable.probe = Some(w.probe(&regs));
    phases.push(stable);

    // churn: every present node gets what is left of its session
    w.churning = true;
    for at in 0..w.present.len() {
        let i = w.present[at];
        let s = sc.sessions.draw_residual(w.sim.rng());
        w.departures
            .push(Reverse((w.sim.elapsed().saturating_add(s), i)));
    }
    let mut churn = w.phase("churn", sc.churn);
    churn.probe = Some(w.probe(&regs));
    phases.push(churn);

    let (mut to_one_ring, mut ring_error, mut to_discovery) = (None, None, None);
    let mut to_full_lists = None;
    if !sc.partition.is_zero() {
        // two random halves of the present nodes; joiners go to side B (unnamed)
        let mut shuffled = w.present.clone();
        w.sim.rng().shuffle(&mut shuffled);
        let a: Vec<usize> = shuffled[..shuffled.len() / 2].to_vec();
        let mut side_a = vec![false; w.sim.len()];
        for i in &a {
            side_a[*i] = true;
        }
        w.side_a = Some(side_a);
        w.sim.partition(&[&a]);
        phases.push(w.phase("partition", sc.partition));
        // heal, stop the churn, and wait for one ring
        w.sim.heal();
        w.side_a = None;
        w.churning = false;
        let healed = w.sim.elapsed();
        let heal_start = w.phase_start();
        let step = sc.node.stabilize_period;
        // a progress line every 30 simulated seconds: at 100,000 nodes the wait is long
        let mut report_at = healed + Duration::from_secs(30);
        loop {
            match w.sim.check_ring() {
                Ok(()) => {
                    to_one_ring = Some(w.sim.elapsed() - healed);
                    ring_error = None;
                    break;
                }
                Err(e) => ring_error = Some(e),
            }
            if w.sim.elapsed() - healed > sc.max_heal {
                break;
            }
            if w.sim.elapsed() >= report_at {
                report_at += Duration::from_secs(30);
                let why: String = ring_error
                    .as_ref()
                    .map(|e| format!("{e:?}").chars().take(600).collect())
                    .unwrap_or_default();
                w.log(&format!(
                    "heal: not one ring {:.0} s after the heal: {why}",
                    (w.sim.elapsed() - healed).as_secs_f64()
                ));
            }
            w.sim.run_for(step);
        }
        // churn stopped at the heal: no departures or joins in this phase or the next
        let mut heal = w.phase_report("heal", &heal_start, w.present.len() as f64);
        w.log(&format!(
            "one ring after the heal: {to_one_ring:?} {ring_error:?}"
        ));
        heal.probe = Some(w.probe(&regs));
        phases.push(heal);
        // then until every successor list is complete, and every live registration is found
        let settle_start = w.phase_start();
        while w.sim.check_successor_lists().is_err() && w.sim.elapsed() - healed <= sc.max_heal {
            if w.sim.elapsed() >= report_at {
                report_at += Duration::from_secs(30);
                w.log(&format!(
                    "heal: successor lists not complete {:.0} s after the heal",
                    (w.sim.elapsed() - healed).as_secs_f64()
                ));
            }
            w.sim.run_for(step);
        }
        to_full_lists = w
            .sim
            .check_successor_lists()
            .is_ok()
            .then(|| w.sim.elapsed() - healed);
        let mut settled = w.phase_report("settled", &settle_start, w.present.len() as f64);
        loop {
            let at = w.sim.elapsed() - healed;
            let probe = w.probe(&regs);
            let missing = probe.missing;
            settled.probe = Some(probe);
            if missing == 0 {
                to_discovery = Some(at);
                break;
            }
            if w.sim.elapsed() - healed > sc.max_heal {
                break;
            }
            w.sim.run_for(sc.node.stabilize_period * 10);
        }
        phases.push(settled);
    }
    ScaleReport {
        nodes: sc.nodes,
        hop_bound: sc.hop_bound(),
        build_sim,
        build_wall,
        build_cpu,
        build_stuck,
        rss_before,
        rss_built,
        peak_rss: proc_status_bytes("VmHWM:"),
        registrations: regs.len(),
        replicas_stored,
        phases,
        to_one_ring,
        ring_error,
        to_full_lists,
        to_discovery,
        mean_session: sc.sessions.mean(),
        nodes_added: w.sim.len(),
        trace_hash: w.sim.trace_hash(),
    }
}

/// The report as markdown: one table row per phase, then the traffic by kind per phase.
pub fn markdown(r: &ScaleReport) -> String {
    use std::fmt::Write;
    let mb = |b: Option<u64>| b.map_or("?".to_owned(), |b| format!("{:.0}", b as f64 / 1e6));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### N = {}\n\nbuild: {:.0} s simulated in {:.1} s wall ({:.1} s CPU), {} not members after it; RSS {} MB \
         after the build ({} bytes per node), peak {} MB; {} registrations, {} of {} replicas stored \
         at once; mean session {:.0} min; {} nodes added in all; trace {:016x}\n",
        r.nodes,
        r.build_sim.as_secs_f64(),
        r.build_wall.as_secs_f64(),
        r.build_cpu.as_secs_f64(),
        r.build_stuck,
        mb(r.rss_built),
        r.bytes_per_node().map_or("?".into(), |b| b.to_string()),
        mb(r.peak_rss),
        r.registrations,
        r.replicas_stored,
        r.registrations * (usize::from(3u8)),
        r.mean_session.as_secs_f64() / 60.0,
        r.nodes_added,
        r.trace_hash,
    );
    let _ = writeln!(
        s,
        "| phase | sim | members | departures / joins (failed) | msgs/node/min | bytes/node/min | wall / CPU per sim min | events (CPU µs each) | hops mean / p50 / p99 / max (bound {:.2} on the mean) | latency p50 / p99 / max | finds failed / wrong | registrations missing |",
        r.hop_bound
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for p in &r.phases {
        let (hops, lat, finds, missing) = match &p.probe {
            Some(q) => (
                format!(
                    "{:.2} / {:.0} / {:.0} / {:.0}",
                    q.hops.mean, q.hops.p50, q.hops.p99, q.hops.max
                ),
                format!(
                    "{:.0} / {:.0} / {:.0} ms",
                    q.latency_ms.p50, q.latency_ms.p99, q.latency_ms.max
                ),
                format!("{} / {} of {}", q.failed, q.wrong, q.finds),
                if q.departed_meanwhile == 0 {
                    format!("{} of {}", q.missing, q.live_registrations)
                } else {
                    format!(
                        "{} of {} ({} left out: provider or asker departed meanwhile)",
                        q.missing, q.live_registrations, q.departed_meanwhile
                    )
                },
            ),
            None => ("—".into(), "—".into(), "—".into(), "—".into()),
        };
        // a phase can be empty: the successor lists completed during the heal's probe
        let per_event = if p.events == 0 {
            "—".to_owned()
        } else {
            format!("{:.1}", p.cpu_us_per_event())
        };
        let _ = writeln!(
            s,
            "| {} | {:.0} s | {:.0} | {} / {} ({}) | {:.0} | {:.0} | {:.1} / {:.1} s | {} ({per_event}) | {hops} | {lat} | {finds} | {missing} |",
            p.name,
            p.sim.as_secs_f64(),
            p.members,
            p.departures,
            p.joins,
            p.joins_failed,
            p.messages_per_node_minute(),
            p.bytes_per_node_minute(),
            p.wall_per_sim_minute().as_secs_f64(),
            p.cpu_per_sim_minute().as_secs_f64(),
            p.events,
        );
    }
    let _ = writeln!(
        s,
        "\none ring {:?} after the heal{}; every successor list complete {:?} after it; every live registration found again {:?} after it\n",
        r.to_one_ring,
        r.ring_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (last error: {e})")),
        r.to_full_lists,
        r.to_discovery
    );
    let _ = write!(s, "| messages per node per minute, by kind |");
    for p in &r.phases {
        let _ = write!(s, " {} |", p.name);
    }
    let _ = write!(s, "\n|---|");
    for _ in &r.phases {
        let _ = write!(s, "---|");
    }
    let _ = writeln!(s);
    for (k, kind) in KINDS.iter().enumerate() {
        if r.phases.iter().all(|p| p.traffic.of(k).0 == 0) {
            continue;
        }
        let _ = write!(s, "| {kind} |");
        for p in &r.phases {
            let _ = write!(s, " {:.1} |", p.kind_per_node_minute(k));
        }
        let _ = writeln!(s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The experiment at a few hundred nodes, short phases: the mean hop count within the
    /// bound, no live registration lost, one correct ring after the heal.
    #[test]
    fn small_ring_through_churn_and_a_partition() {
        let mut sc = ScaleScenario::new(5, 300);
        sc.node = Config::fast();
        // sessions short enough for a few dozen departures in 40 s
        sc.sessions = Sessions::deployed(Duration::from_secs(120));
        sc.stable = Duration::from_secs(10);
        sc.churn = Duration::from_secs(40);
        sc.partition = Duration::from_secs(20);
        sc.max_heal = Duration::from_secs(120);
        sc.registrations = 40;
        sc.lookups = 300;
        let r = run_scale(&sc);
        let md = markdown(&r);
        eprintln!("{md}");
        assert_eq!(r.build_stuck, 0, "every node joined");
        let churn = &r.phases[1];
        assert!(churn.departures >= 10, "churn happened: {md}");
        assert_eq!(churn.departures, churn.joins, "every departure replaced");
        let failed: u64 = r.phases.iter().map(|p| p.joins_failed).sum();
        assert_eq!(
            failed, 0,
            "every joiner reached the ring through a bootstrap: {md}"
        );
        for p in &r.phases {
            if let Some(q) = &p.probe {
                assert!(
                    q.hops.mean <= r.hop_bound,
                    "{}: mean hops {} above {}",
                    p.name,
                    q.hops.mean,
                    r.hop_bound
                );
                assert_eq!(q.failed, 0, "{}: finds failed", p.name);
            }
        }
        let stable = r.phases[0].probe.as_ref().unwrap();
        assert_eq!(stable.wrong, 0, "a stable ring answers every find right");
        assert_eq!(stable.missing, 0, "every registration found");
        assert_eq!(r.phases[1].probe.as_ref().unwrap().missing, 0, "{md}");
        assert!(r.to_one_ring.is_some(), "one ring after the heal: {md}");
        assert!(
            r.to_discovery.is_some(),
            "every live registration found again: {md}"
        );
        assert!(r.to_full_lists.is_some(), "complete successor lists: {md}");
        let settled = r.phases[4].probe.as_ref().unwrap();
        assert_eq!(
            settled.wrong, 0,
            "the healed ring answers every find right: {md}"
        );
        assert!(r.phases[0].messages_per_node_minute() > 0.0);
    }

    /// The same seed gives the same run (trace and figures), another seed another.
    #[test]
    fn same_seed_same_run() {
        let run = |seed| {
            let mut sc = ScaleScenario::new(seed, 40);
            sc.node = Config::fast();
            sc.sessions = Sessions::deployed(Duration::from_secs(30));
            sc.stable = Duration::from_secs(2);
            sc.churn = Duration::from_secs(10);
            sc.partition = Duration::from_secs(5);
            sc.lookups = 50;
            let r = run_scale(&sc);
            let probes: Vec<(usize, usize, u64, u64)> = r
                .phases
                .iter()
                .filter_map(|p| p.probe.as_ref())
                .map(|p| {
                    (
                        p.wrong,
                        p.missing,
                        p.hops.mean.to_bits(),
                        p.latency_ms.p99.to_bits(),
                    )
                })
                .collect();
            let traffic: Vec<Traffic> = r.phases.iter().map(|p| p.traffic.clone()).collect();
            (r.trace_hash, probes, traffic, r.to_one_ring, r.nodes_added)
        };
        let a = run(9);
        assert!(a.4 > 40, "churn replaced some nodes");
        assert_eq!(a, run(9));
        assert_ne!(a.0, run(10).0);
    }

    #[test]
    fn sessions_have_the_median_asked_for() {
        let s = Sessions::deployed(Duration::from_secs(600));
        let mut rng = crate::Rng::with_seed(1);
        let mut v: Vec<f64> = (0..20_001)
            .map(|_| s.draw(&mut rng).as_secs_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        let median = v[10_000];
        assert!((540.0..660.0).contains(&median), "{median}");
        // shape 0.5: the mean is twice the scale, λ = 600 / (ln 2)² ≈ 1249 s
        let mean = s.mean().as_secs_f64();
        assert!((2400.0..2600.0).contains(&mean), "{mean}");
    }
}
