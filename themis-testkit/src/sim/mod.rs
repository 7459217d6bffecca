//! A deterministic discrete-event simulator driving many DHT [`Node`] cores in virtual time.
//!
//! The cores are sans-I/O, so the simulator is their driver: it feeds them requests,
//! responses and timeouts from its own event queue, in `(time, scheduling order)` order, and
//! sends what they output through the test kit's [network model](crate::net::NetModel)
//! (latency and jitter, loss, duplication, partitions into any number of groups). Every
//! message goes through the real codec as bytes. A crashed node stops answering: its peers see
//! timeouts from their own request deadlines. Misbehaving nodes ([`Adversary`]) answer with
//! what an attacker would send.
//!
//! Determinism: identities, node seeds, the model and the adversaries all draw from one PRNG
//! seeded by [`SimConfig::seed`], and nothing reads a clock, so the same seed and the same
//! calls give the same run. [`Sim::trace_hash`] fingerprints a run (every message sent, every
//! timer that fired, at its virtual time) to check that.
//!
//! One agenda (messages in flight, one timer per node) and no task per node keep it fast:
//! `tests/ring.rs` of themis-dht builds a ring of 1,000 nodes and runs 10,000 lookups on it in
//! seconds.

// Test support: node indices are handles the simulator itself hands out, and a wrong one is a
// bug in the test, so indexing and unwrap are fine here (no network input reaches this code).
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

mod agenda;
mod build;
mod check;
mod events;
mod scale;
mod split;
mod traffic;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use themis_crypto::{IdentityKeypair, NetworkId, NodeId};
use themis_dht::{Config, Contact, Event, Metrics, Node, NodeState, QueryId};

pub use build::{
    build, count_missing, grow, misplaced_replicas, providers_result, random_live, register_many,
};
pub use scale::{
    PhaseReport, Probe, ScaleReport, ScaleScenario, Sessions, Stats, cpu_time, markdown,
    proc_status_bytes, run_scale,
};
pub use split::{SplitReport, SplitScenario, missing_everywhere, missing_from, run_split};
pub use traffic::{KINDS, Traffic};

use crate::identity::{Rng, random_id};
use crate::net::{LinkConfig, ModelStats, NetModel};
use agenda::Agenda;
use events::TokenInfo;

/// The hasher of the table of tokens: tokens are consecutive numbers, which a multiplication
/// spreads well enough, at a fraction of the default hasher's cost.
#[derive(Default)]
struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Simulation parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of every random choice of the run.
    pub seed: u64,
    /// How every link behaves unless [`Sim::set_link`] says otherwise (default: 1 ms latency
    /// and up to 4 ms of jitter, so 1-5 ms one way; no loss).
    pub link: LinkConfig,
    /// Settings of every node added by [`Sim::add_node`] (default [`Config::fast`]).
    pub node: Config,
    /// The name of the nodes' network.
    pub network: String,
}

impl SimConfig {
    /// The defaults, seeded by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            link: LinkConfig {
                latency: Duration::from_millis(1),
                jitter: Duration::from_millis(4),
                ..LinkConfig::PERFECT
            },
            node: Config::fast(),
            network: "sim".into(),
        }
    }
}

/// Misbehaviour of a simulated node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adversary {
    /// Answers every find with nodes that precede it (no progress).
    RegressFinds,
    /// Answers every find with random nodes.
    RandomFinds,
    /// Answers finds honestly but forges the records it returns (altered address, and a ghost
    /// record naming another provider).
    ForgeRecords,
}

struct SimNode {
    node: Node,
    alive: bool,
    scheduled: Option<Instant>,
    adversary: Option<Adversary>,
    events: Vec<Event>,
    identity: Arc<IdentityKeypair>,
}

/// The simulator: nodes, the network model between them, and virtual time.
pub struct Sim {
    cfg: SimConfig,
    base: Instant,
    wall: SystemTime,
    /// Virtual time since `base`.
    now: Duration,
    rng: Rng,
    model: NetModel,
    nodes: Vec<SimNode>,
    queue: Agenda,
    tokens: HashMap<u64, TokenInfo, BuildHasherDefault<TokenHasher>>,
    next_token: u64,
    trace: u64,
    network: NetworkId,
    /// Messages delivered so far.
    pub delivered: u64,
    /// Events handled so far.
    handled: u64,
    /// Messages sent so far, by kind.
    traffic: Traffic,
    /// Joins that ended in `Event::JoinFailed` so far.
    joins_failed: u64,
    /// When on, every query that finished: (node, query, virtual time).
    completions: Option<Vec<(usize, QueryId, Duration)>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("nodes", &self.nodes.len())
            .field("now", &self.now)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// An empty simulation at virtual time zero.
    pub fn new(cfg: SimConfig) -> Self {
        let network = NetworkId::new(&cfg.network).unwrap_or_else(|_| {
            NetworkId::new("sim").unwrap_or_else(|_| unreachable!("valid constant"))
        });
        let mut rng = Rng::with_seed(cfg.seed);
        let model = NetModel::new(rng.u64(..), cfg.link);
        Self {
            rng,
            model,
            cfg,
            base: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            now: Duration::ZERO,
            nodes: Vec::new(),
            queue: Agenda::default(),
            tokens: HashMap::default(),
            next_token: 1,
            trace: events::TRACE_SEED,
            network,
            delivered: 0,
            handled: 0,
            traffic: Traffic::default(),
            joins_failed: 0,
            completions: None,
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.base + self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now
    }

    /// Events (messages, timers) handled so far.
    pub fn events_handled(&self) -> u64 {
        self.handled
    }

    /// Joins (and re-joins of orphaned nodes) that ended in [`Event::JoinFailed`] so far.
    pub fn joins_failed(&self) -> u64 {
        self.joins_failed
    }

    /// Messages the nodes sent so far, by kind.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Turns on (or off, dropping what was logged) the log of finished queries: from now on
    /// every [`Event::Found`] and [`Event::Providers`] is logged with the virtual time it came
    /// out, for latencies ([`Sim::take_completions`]).
    pub fn log_completions(&mut self, on: bool) {
        self.completions = on.then(Vec::new);
    }

    /// The queries that finished since the last call, as (node, query, virtual time since the
    /// start).
    pub fn take_completions(&mut self) -> Vec<(usize, QueryId, Duration)> {
        self.completions
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The nodes' network.
    pub fn network(&self) -> &NetworkId {
        &self.network
    }

    /// Nodes added so far (alive, crashed or left).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A fingerprint of the run so far: equal for equal runs.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// The simulation's PRNG, for a test's own choices (reproducible too).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// A random position on the ring, from the simulation's PRNG.
    pub fn random_id(&mut self) -> NodeId {
        random_id(&mut self.rng)
    }

    /// Node `i`'s address (distinct for the first 2^24 nodes).
    pub fn addr(i: usize) -> SocketAddr {
        let [_, b, c, d] = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
        SocketAddr::from(([10, b, c, d], 7000))
    }

    /// The node at `addr`, if any: the inverse of [`Sim::addr`], computed rather than looked
    /// up in a table (which cost a SipHash of the address per message).
    fn node_at(&self, addr: SocketAddr) -> Option<usize> {
        let SocketAddr::V4(a) = addr else {
            return None;
        };
        let [ten, b, c, d] = a.ip().octets();
        let i = u32::from_be_bytes([0, b, c, d]) as usize;
        (ten == 10 && a.port() == 7000 && i < self.nodes.len()).then_some(i)
    }

    /// Adds a node (alone on its own ring until it joins). Returns its index.
    pub fn add_node(&mut self) -> usize {
        self.add_node_with(self.cfg.node.clone())
    }

    /// Adds a node with its own settings. Returns its index.
    pub fn add_node_with(&mut self, config: Config) -> usize {
        let i = self.nodes.len();
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        let identity = Arc::new(IdentityKeypair::from_seed(&seed));
        let addr = Self::addr(i);
        let wall = self.wall + self.now;
        let node_seed = self.rng.u64(..);
        let node = Node::new(
            config,
            identity.clone(),
            self.network.clone(),
            addr,
            self.now(),
            wall,
            node_seed,
        );
        self.nodes.push(SimNode {
            node,
            alive: true,
            scheduled: None,
            adversary: None,
            events: Vec::new(),
            identity,
        });
        self.drain(i);
        i
    }

    /// Node `i`'s core.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i].node
    }

    /// Node `i`'s identity.
    pub fn identity(&self, i: usize) -> Arc<IdentityKeypair> {
        self.nodes[i].identity.clone()
    }

    /// Whether node `i` neither crashed nor left.
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive && self.nodes[i].node.state() != NodeState::Left
    }

    /// Runs `f` on node `i` at the current time, then processes its outputs.
    pub fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant) -> R) -> R {
        let now = self.now();
        let r = f(&mut self.nodes[i].node, now);
        self.drain(i);
        r
    }

    /// Node `i` joins through node `bootstrap`, known by id and address.
    pub fn join(&mut self, i: usize, bootstrap: usize) {
        self.join_through(i, &[bootstrap]);
    }

    /// Node `i` joins through several bootstraps, tried in this order (as `themis node` takes
    /// several `--bootstrap` contacts).
    pub fn join_through(&mut self, i: usize, bootstraps: &[usize]) {
        let list = bootstraps
            .iter()
            .map(|b| Contact::from(self.nodes[*b].node.peer()))
            .collect();
        self.with_node(i, |n, now| n.join(now, list)).unwrap();
    }

    /// Joins through a bare address (the node id is learnt from the reply).
    pub fn join_by_addr(&mut self, i: usize, bootstrap: usize) {
        let c = Contact::from(Self::addr(bootstrap));
        self.with_node(i, |n, now| n.join(now, vec![c])).unwrap();
    }

    /// Node `i` stops at once, without a word: it answers nothing from now on.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].alive = false;
    }

    /// Node `i` leaves gracefully (hands its records over, tells its neighbours).
    pub fn leave(&mut self, i: usize) {
        self.with_node(i, |n, now| n.leave(now)).unwrap();
    }

    /// Node `i` misbehaves from now on.
    pub fn set_adversary(&mut self, i: usize, a: Adversary) {
        self.nodes[i].adversary = Some(a);
    }

    /// Node `i` looks `target` up; the result comes as an [`Event::Found`].
    pub fn find(&mut self, i: usize, target: NodeId) -> QueryId {
        self.with_node(i, |n, now| n.find(now, target)).unwrap()
    }

    /// Node `i`'s events so far, taken out.
    pub fn take_events(&mut self, i: usize) -> Vec<Event> {
        std::mem::take(&mut self.nodes[i].events)
    }

    /// Node `i`'s events so far (ring changes left out).
    pub fn events(&self, i: usize) -> &[Event] {
        &self.nodes[i].events
    }

    /// Indices of live ring members.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].alive && self.nodes[*i].node.is_member())
            .collect()
    }

    /// Every node's metrics, summed.
    pub fn metrics_total(&self) -> Metrics {
        let mut m = Metrics::default();
        for n in &self.nodes {
            m.add(&n.node.metrics());
        }
        m
    }

    /// Sets the behaviour of the link from node `from` to node `to` (one direction).
    pub fn set_link(&mut self, from: usize, to: usize, link: LinkConfig) {
        self.model.set_link(Self::addr(from), Self::addr(to), link);
    }

    /// Splits the nodes into `groups` from now on: messages pass only within a group (nodes
    /// named in no group form one more group together), and messages in flight across the cut
    /// are lost on arrival. Replaces any earlier partition; lasts until [`Sim::heal`] or the
    /// time given to [`Sim::heal_at`].
    pub fn partition(&mut self, groups: &[&[usize]]) {
        let addrs: Vec<Vec<SocketAddr>> = groups
            .iter()
            .map(|g| g.iter().map(|i| Self::addr(*i)).collect())
            .collect();
        let groups: Vec<&[SocketAddr]> = addrs.iter().map(Vec::as_slice).collect();
        self.model.partition(&groups);
    }

    /// Splits every node, at random (from the simulation's PRNG), into `k` groups whose sizes
    /// differ by at most one, as [`Sim::partition`] does; returns the groups.
    pub fn split(&mut self, k: usize) -> Vec<Vec<usize>> {
        let mut all: Vec<usize> = (0..self.nodes.len()).collect();
        self.rng.shuffle(&mut all);
        let k = k.max(1);
        let mut groups = vec![Vec::new(); k];
        for (n, i) in all.into_iter().enumerate() {
            groups[n % k].push(i);
        }
        let refs: Vec<&[usize]> = groups.iter().map(Vec::as_slice).collect();
        self.partition(&refs);
        groups
    }

    /// Ends the current partition at virtual time `at`.
    pub fn heal_at(&mut self, at: Instant) {
        self.model.heal_at(at.saturating_duration_since(self.base));
    }

    /// Ends any partition now.
    pub fn heal(&mut self) {
        self.model.heal();
    }

    /// The network model's counters (messages offered, lost, partitioned away, duplicated).
    pub fn model_stats(&self) -> ModelStats {
        self.model.stats()
    }

    /// Processes every event up to `now + d`.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now.saturating_add(d);
        while let Some((at, ev)) = self.queue.pop_until(end) {
            self.step(at, ev);
        }
        self.now = end;
    }

    /// Runs until `pred` holds (checked after every event) or `max` elapses; returns whether
    /// it held.
    pub fn run_until(&mut self, max: Duration, mut pred: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now.saturating_add(max);
        while !pred(self) {
            match self.queue.pop_until(end) {
                Some((at, ev)) => self.step(at, ev),
                None => {
                    self.now = end;
                    return pred(self);
                }
            }
        }
        true
    }
}
