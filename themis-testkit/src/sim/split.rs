//! Partitions and their healing: a ring split into groups for a while, with joins, leaves,
//! crashes and registrations on every side, then healed; measured until it is one correct ring
//! again and every live registration is found from every node (issue 11, PROTOCOL.md §6.14).

use std::time::Duration;

use themis_dht::{Event, NodeState, ServiceSpec};

use super::{Sim, SimConfig, build};

/// A split-and-heal run.
#[derive(Clone, Debug)]
pub struct SplitScenario {
    /// Seed of the run.
    pub seed: u64,
    /// Nodes in the ring before the split.
    pub nodes: usize,
    /// Groups the nodes are split into (at random, sizes within one).
    pub groups: usize,
    /// How long the partition lasts.
    pub split: Duration,
    /// Churn rounds during the split, evenly spread: in each, every group gets one join and
    /// one leave (odd rounds) or crash (even rounds), and one new registration every other
    /// round.
    pub churn_rounds: usize,
    /// Registrations made before the split.
    pub registrations: usize,
    /// Replication `k` of every registration.
    pub k: u8,
    /// Longest wait after the heal for one ring, then for complete discovery.
    pub max_wait: Duration,
    /// Ring unification on (`false`: `Config::unify_table_len = 0`, the control case).
    pub unify: bool,
}

impl SplitScenario {
    /// `nodes` nodes split into `groups` for `split`, 20 churn rounds, `nodes / 8`
    /// registrations made before (at least 8), k = 2, 10 minutes of waiting at most.
    pub fn new(seed: u64, nodes: usize, groups: usize, split: Duration) -> Self {
        Self {
            seed,
            nodes,
            groups,
            split,
            churn_rounds: 20,
            registrations: (nodes / 8).max(8),
            k: 2,
            max_wait: Duration::from_secs(600),
            unify: true,
        }
    }
}

/// What a split-and-heal run measured.
#[derive(Clone, Debug)]
pub struct SplitReport {
    /// Virtual time from the heal until Zave's invariants held on every live member
    /// (`None`: not within `max_wait`).
    pub to_one_ring: Option<Duration>,
    /// Virtual time from the heal until every live registration was found from every live
    /// member (`None`: not within `max_wait`).
    pub to_discovery: Option<Duration>,
    /// Live members at the heal.
    pub live: usize,
    /// Registrations whose provider is alive at the heal (made before and during the split).
    pub live_registrations: usize,
    /// Of them, made during the split.
    pub made_during_split: usize,
    /// (registration, node) pairs not found at the last discovery check.
    pub last_missing: usize,
    /// The last ring check's complaint, if the ring never converged.
    pub ring_error: Option<String>,
    /// Stabilize period of the nodes (to state bounds in periods).
    pub stabilize_period: Duration,
    /// Probes, foreign answers and merge steps, network-wide.
    pub probes: u64,
    /// Probe answers that started a merge.
    pub foreign: u64,
    /// Successors adopted from another ring.
    pub merges: u64,
}

/// Live members of group `g`.
fn group_live(sim: &Sim, group: &[usize]) -> Vec<usize> {
    group
        .iter()
        .copied()
        .filter(|i| sim.is_alive(*i) && sim.node(*i).state() == NodeState::Member)
        .collect()
}

/// Runs `sc` and reports what it measured.
pub fn run_split(sc: &SplitScenario) -> SplitReport {
    let mut cfg = SimConfig::new(sc.seed);
    if !sc.unify {
        cfg.node.unify_table_len = 0;
    }
    let stabilize_period = cfg.node.stabilize_period;
    let mut sim = build(
        cfg,
        sc.nodes,
        Duration::from_millis(20),
        Duration::from_secs(15),
    );
    let mut regs: Vec<(usize, String)> = Vec::new();
    for i in 0..sc.registrations {
        let live = sim.live();
        let p = live[sim.rng().usize(..live.len())];
        register(&mut sim, p, format!("before-{i}"), sc.k, &mut regs);
    }
    sim.run_for(Duration::from_secs(5));

    let mut groups = sim.split(sc.groups);
    let rounds = sc.churn_rounds.max(1);
    let gap = sc.split / u32::try_from(rounds + 1).unwrap_or(u32::MAX);
    for round in 0..rounds {
        sim.run_for(gap);
        for g in 0..groups.len() {
            let live = group_live(&sim, &groups[g]);
            if live.len() < 4 {
                continue;
            }
            // a join through a member of this side
            let b = live[sim.rng().usize(..live.len())];
            let i = sim.add_node();
            groups[g].push(i);
            let refs: Vec<&[usize]> = groups.iter().map(Vec::as_slice).collect();
            sim.partition(&refs);
            sim.join(i, b);
            // a leave or a crash of a member that provides nothing
            let providers: Vec<usize> = regs.iter().map(|(p, _)| *p).collect();
            let victims: Vec<usize> = live
                .iter()
                .copied()
                .filter(|v| !providers.contains(v) && *v != b)
                .collect();
            if !victims.is_empty() {
                let v = victims[sim.rng().usize(..victims.len())];
                if round % 2 == 1 {
                    sim.leave(v);
                } else {
                    sim.crash(v);
                }
            }
            // a registration on this side
            if round % 2 == 0 {
                let p = live[sim.rng().usize(..live.len())];
                if sim.is_alive(p) {
                    register(&mut sim, p, format!("during-{round}-{g}"), sc.k, &mut regs);
                }
            }
        }
    }
    sim.run_for(gap);
    let before = sim.metrics_total();
    if std::env::var_os("THEMIS_SPLIT_DEBUG").is_some() {
        eprintln!(
            "at the heal: ring check {:?}; merges so far {}",
            sim.check_ring(),
            before.unify_merges
        );
    }
    sim.heal();
    let healed = sim.now();
    let live_regs: Vec<(usize, String)> = regs
        .iter()
        .filter(|(p, _)| sim.is_alive(*p) && sim.node(*p).is_member())
        .cloned()
        .collect();
    let made_during_split = live_regs
        .iter()
        .filter(|(_, n)| n.starts_with("during"))
        .count();
    let live = sim.live().len();

    let step = stabilize_period / 2;
    let mut to_one_ring = None;
    let mut ring_error = None;
    while sim.now() - healed <= sc.max_wait {
        match sim.check_ring() {
            Ok(()) => {
                to_one_ring = Some(sim.now() - healed);
                break;
            }
            Err(e) => ring_error = Some(e),
        }
        sim.run_for(step);
    }
    if to_one_ring.is_some() {
        ring_error = None;
    }
    let mut to_discovery = None;
    let mut last_missing = usize::MAX;
    if to_one_ring.is_some() {
        while sim.now() - healed <= sc.max_wait {
            let started = sim.now();
            last_missing = missing_everywhere(&mut sim, &live_regs, sc.k);
            if last_missing == 0 {
                // the lookups of this check began at `started`: discovery was complete then
                to_discovery = Some(started - healed);
                break;
            }
            sim.run_for(stabilize_period * 4);
        }
    }
    let m = sim.metrics_total();
    SplitReport {
        to_one_ring,
        to_discovery,
        live,
        live_registrations: live_regs.len(),
        made_during_split,
        last_missing,
        ring_error,
        stabilize_period,
        probes: m.unify_probes,
        foreign: m.unify_foreign,
        merges: m.unify_merges,
    }
}

fn register(sim: &mut Sim, p: usize, name: String, k: u8, regs: &mut Vec<(usize, String)>) {
    let spec = ServiceSpec::new(name.clone());
    if sim
        .with_node(p, |n, now| n.register(now, spec, Some(k)))
        .is_ok()
    {
        regs.push((p, name));
    }
}

/// Looks up every registration in `regs` from every live member; returns how many
/// (registration, node) pairs did not find the provider. The lookups of one registration go
/// out together, a few milliseconds of virtual time apart from the next's.
pub fn missing_everywhere(sim: &mut Sim, regs: &[(usize, String)], k: u8) -> usize {
    let live = sim.live();
    missing_from(sim, &live, regs, k)
}

/// As [`missing_everywhere`], from the nodes `from` only (live members among them).
pub fn missing_from(sim: &mut Sim, from: &[usize], regs: &[(usize, String)], k: u8) -> usize {
    let live: Vec<usize> = from
        .iter()
        .copied()
        .filter(|i| sim.is_alive(*i) && sim.node(*i).is_member())
        .collect();
    for i in &live {
        sim.take_events(*i);
    }
    let mut pending = Vec::with_capacity(live.len() * regs.len());
    let mut failed = 0;
    for (p, name) in regs {
        let provider = sim.node(*p).id();
        for i in &live {
            match sim.with_node(*i, |n, now| n.lookup_providers(now, name, Some(k))) {
                Ok(q) => pending.push((*i, q, provider)),
                Err(_) => failed += 1,
            }
        }
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_secs(5));
    let missing = pending
        .into_iter()
        .filter(|(i, q, provider)| {
            !sim.events(*i).iter().any(|e| match e {
                Event::Providers { query, result } if query == q => result
                    .as_ref()
                    .is_ok_and(|r| r.records.iter().any(|rec| rec.provider() == *provider)),
                _ => false,
            })
        })
        .count();
    for i in &live {
        sim.take_events(*i);
    }
    missing + failed
}
