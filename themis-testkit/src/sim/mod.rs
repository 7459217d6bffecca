//! A deterministic discrete-event simulator driving many [`Node`] cores in virtual time.
//!
//! Every message goes through the real codec as bytes; latency, loss, crashes and adversarial
//! nodes come from one seeded PRNG, so the same seed gives the same trace
//! ([`Sim::trace_hash`]). A crashed node stops answering: its peers see timeouts from their own
//! request deadlines.

// Test support: node indices are handles the simulator itself hands out, and a wrong one is a
// bug in the test, so indexing and unwrap are fine here (no network input reaches this code).
#![allow(
    missing_docs,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod build;

pub use build::{build, count_missing, grow, providers_result, random_live, register_many};

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use themis_crypto::{IdentityKeypair, NetworkId, NodeId};
use themis_dht::fuzz::{closer_answer, find_target, forge_owner_answer};
use themis_dht::{
    Config, Contact, Event, Metrics, Node, Output, Peer, QueryId, Reply, RequestFailure,
};

/// `x ∈ (a, b)` clockwise on the ring; the whole ring but `a` when `a == b`.
fn in_open(a: &NodeId, x: &NodeId, b: &NodeId) -> bool {
    if a < b {
        a < x && x < b
    } else {
        x > a || x < b
    }
}

/// `x ∈ (a, b]` clockwise on the ring; the whole ring when `a == b`.
fn in_half_open(a: &NodeId, x: &NodeId, b: &NodeId) -> bool {
    a == b || in_open(a, x, b) || x == b
}

/// Simulation parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub latency_min: Duration,
    pub latency_max: Duration,
    /// Probability of losing a message, in parts per million.
    pub loss_ppm: u32,
    pub node: Config,
    pub network: String,
}

impl SimConfig {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(5),
            loss_ppm: 0,
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

enum Ev {
    Request {
        to: usize,
        from: usize,
        request_id: u64,
        expect: Option<NodeId>,
        bytes: Vec<u8>,
    },
    Response {
        to: usize,
        request_id: u64,
        from_id: NodeId,
        bytes: Vec<u8>,
    },
    Failure {
        to: usize,
        request_id: u64,
        failure: RequestFailure,
    },
    Timer {
        node: usize,
        at: Instant,
    },
}

struct Item {
    t: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        // min-heap on (time, sequence)
        (o.t, o.seq).cmp(&(self.t, self.seq))
    }
}

struct TokenInfo {
    requester: usize,
    request_id: u64,
    forge: bool,
}

/// The simulator.
pub struct Sim {
    cfg: SimConfig,
    base: Instant,
    wall: SystemTime,
    now_ns: u64,
    rng: fastrand::Rng,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    heap: BinaryHeap<Item>,
    seq: u64,
    tokens: HashMap<u64, TokenInfo>,
    next_token: u64,
    trace: u64,
    network: NetworkId,
    /// Messages delivered so far.
    pub delivered: u64,
}

fn fnv(h: u64, bytes: &[u8]) -> u64 {
    let mut h = h;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        let network = NetworkId::new(&cfg.network).unwrap_or_else(|_| {
            NetworkId::new("sim").unwrap_or_else(|_| unreachable!("valid constant"))
        });
        Self {
            rng: fastrand::Rng::with_seed(cfg.seed),
            cfg,
            base: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            now_ns: 0,
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            heap: BinaryHeap::new(),
            seq: 0,
            tokens: HashMap::new(),
            next_token: 1,
            trace: 0xcbf2_9ce4_8422_2325,
            network,
            delivered: 0,
        }
    }

    pub fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.now_ns)
    }

    pub fn network(&self) -> &NetworkId {
        &self.network
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    pub fn rng_u64(&mut self) -> u64 {
        self.rng.u64(..)
    }

    pub fn random_id(&mut self) -> NodeId {
        let mut b = [0u8; 32];
        self.rng.fill(&mut b);
        NodeId::from_bytes(b)
    }

    fn addr_of(i: usize) -> SocketAddr {
        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7000))
    }

    /// Adds a node (alone on its own ring until it joins). Returns its index.
    pub fn add_node(&mut self) -> usize {
        self.add_node_with(self.cfg.node.clone())
    }

    pub fn add_node_with(&mut self, config: Config) -> usize {
        let i = self.nodes.len();
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        let identity = Arc::new(IdentityKeypair::from_seed(&seed));
        let addr = Self::addr_of(i);
        let now = self.now();
        let wall = self.wall + Duration::from_nanos(self.now_ns);
        let node_seed = self.rng.u64(..);
        let node = Node::new(
            config,
            identity.clone(),
            self.network.clone(),
            addr,
            now,
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
        self.by_addr.insert(addr, i);
        self.drain(i);
        i
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i].node
    }

    pub fn identity(&self, i: usize) -> Arc<IdentityKeypair> {
        self.nodes[i].identity.clone()
    }

    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive && self.nodes[i].node.state_name() != "left"
    }

    /// Runs `f` on node `i` at the current time, then processes its outputs.
    pub fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant) -> R) -> R {
        let now = self.now();
        let r = f(&mut self.nodes[i].node, now);
        self.drain(i);
        r
    }

    pub fn join(&mut self, i: usize, bootstrap: usize) {
        let c = Contact::from(self.nodes[bootstrap].node.peer());
        self.with_node(i, |n, now| n.join(now, vec![c])).unwrap();
    }

    /// Joins through a bare address (the node id is learnt from the reply).
    pub fn join_by_addr(&mut self, i: usize, bootstrap: usize) {
        let c = Contact::from(Self::addr_of(bootstrap));
        self.with_node(i, |n, now| n.join(now, vec![c])).unwrap();
    }

    pub fn crash(&mut self, i: usize) {
        self.nodes[i].alive = false;
    }

    pub fn leave(&mut self, i: usize) {
        self.with_node(i, |n, now| n.leave(now)).unwrap();
    }

    pub fn set_adversary(&mut self, i: usize, a: Adversary) {
        self.nodes[i].adversary = Some(a);
    }

    pub fn find(&mut self, i: usize, target: NodeId) -> QueryId {
        self.with_node(i, |n, now| n.find(now, target)).unwrap()
    }

    pub fn take_events(&mut self, i: usize) -> Vec<Event> {
        std::mem::take(&mut self.nodes[i].events)
    }

    pub fn events(&self, i: usize) -> &[Event] {
        &self.nodes[i].events
    }

    /// Indices of live ring members.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].alive && self.nodes[*i].node.is_member())
            .collect()
    }

    /// The true successor of `t` among live members.
    pub fn true_successor(&self, t: &NodeId) -> Option<NodeId> {
        let mut ids: Vec<NodeId> = self
            .live()
            .iter()
            .map(|i| self.nodes[*i].node.id())
            .collect();
        ids.sort();
        ids.iter().find(|x| *x >= t).or(ids.first()).copied()
    }

    pub fn metrics_total(&self) -> Metrics {
        let mut m = Metrics::default();
        for n in &self.nodes {
            m.add(&n.node.metrics());
        }
        m
    }

    fn push(&mut self, delay: Duration, ev: Ev) {
        self.seq += 1;
        let t = self.now_ns + u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.heap.push(Item {
            t,
            seq: self.seq,
            ev,
        });
    }

    fn latency(&mut self) -> Duration {
        let min = self.cfg.latency_min.as_micros() as u64;
        let max = self.cfg.latency_max.as_micros() as u64;
        Duration::from_micros(self.rng.u64(min..=max.max(min)))
    }

    fn lost(&mut self) -> bool {
        self.cfg.loss_ppm > 0 && self.rng.u32(..1_000_000) < self.cfg.loss_ppm
    }

    fn trace_mix(&mut self, kind: u8, node: usize, bytes: &[u8]) {
        let mut h = fnv(self.trace, &self.now_ns.to_be_bytes());
        h = fnv(h, &[kind]);
        h = fnv(h, &(node as u64).to_be_bytes());
        self.trace = fnv(h, bytes);
    }

    fn drain(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].node.poll_output() {
            match out {
                Output::Send {
                    request_id,
                    to,
                    expect,
                    bytes,
                } => {
                    self.trace_mix(1, i, &bytes);
                    let lat = self.latency();
                    match self.by_addr.get(&to).copied() {
                        None => self.push(
                            lat,
                            Ev::Failure {
                                to: i,
                                request_id,
                                failure: RequestFailure::Unreachable,
                            },
                        ),
                        Some(j) => {
                            if !self.lost() {
                                self.push(
                                    lat,
                                    Ev::Request {
                                        to: j,
                                        from: i,
                                        request_id,
                                        expect,
                                        bytes,
                                    },
                                );
                            }
                        }
                    }
                }
                Output::Respond { token, mut bytes } => {
                    self.trace_mix(2, i, &bytes);
                    let Some(info) = self.tokens.remove(&token) else {
                        continue;
                    };
                    if info.forge {
                        bytes = self.forge(i, &bytes);
                    }
                    if self.lost() {
                        continue;
                    }
                    let lat = self.latency();
                    let from_id = self.nodes[i].node.id();
                    self.push(
                        lat,
                        Ev::Response {
                            to: info.requester,
                            request_id: info.request_id,
                            from_id,
                            bytes,
                        },
                    );
                }
                Output::Event(e) => {
                    if !matches!(
                        e,
                        Event::SuccessorChanged { .. } | Event::PredecessorChanged { .. }
                    ) {
                        self.nodes[i].events.push(e);
                    }
                }
            }
        }
        let t = self.nodes[i].node.poll_timeout();
        if t != self.nodes[i].scheduled {
            self.nodes[i].scheduled = t;
            if let Some(at) = t {
                let now = self.now();
                let delay = at.saturating_duration_since(now);
                self.push(delay, Ev::Timer { node: i, at });
            }
        }
    }

    /// An adversary's answer to a find, replacing the honest one.
    fn adversarial_find(&mut self, j: usize, target: &NodeId) -> Vec<u8> {
        let me = self.nodes[j].node.id();
        let live = self.live();
        let mut peers = Vec::new();
        let adv = self.nodes[j].adversary;
        for _ in 0..16 {
            if peers.len() >= 3 || live.is_empty() {
                break;
            }
            let k = live[self.rng.usize(..live.len())];
            let p = self.nodes[k].node.peer();
            let regress = !in_half_open(&me, &p.id, target);
            if adv == Some(Adversary::RandomFinds) || regress {
                peers.push(p);
            }
        }
        closer_answer(peers)
    }

    fn forge(&mut self, j: usize, bytes: &[u8]) -> Vec<u8> {
        forge_owner_answer(
            bytes,
            &self.nodes[j].identity,
            &self.network,
            Self::addr_of(j),
        )
    }

    fn step(&mut self, item: Item) {
        self.now_ns = item.t;
        let now = self.now();
        match item.ev {
            Ev::Timer { node, at } => {
                let n = &mut self.nodes[node];
                if n.scheduled != Some(at) || !n.alive {
                    return;
                }
                n.scheduled = None;
                n.node.handle_timeout(now);
                self.trace_mix(3, node, &[]);
                self.drain(node);
            }
            Ev::Request {
                to,
                from,
                request_id,
                expect,
                bytes,
            } => {
                if !self.nodes[to].alive {
                    return; // crashed: the requester times out
                }
                self.delivered += 1;
                if expect.is_some_and(|e| e != self.nodes[to].node.id()) {
                    let lat = self.latency();
                    self.push(
                        lat,
                        Ev::Failure {
                            to: from,
                            request_id,
                            failure: RequestFailure::Refused,
                        },
                    );
                    return;
                }
                let from_peer: Peer = self.nodes[from].node.peer();
                let adv = self.nodes[to].adversary;
                let target = find_target(&bytes);
                if let (Some(Adversary::RegressFinds | Adversary::RandomFinds), Some(target)) =
                    (adv, &target)
                {
                    let resp = self.adversarial_find(to, target);
                    let lat = self.latency();
                    let from_id = self.nodes[to].node.id();
                    self.push(
                        lat,
                        Ev::Response {
                            to: from,
                            request_id,
                            from_id,
                            bytes: resp,
                        },
                    );
                    return;
                }
                let forge = adv == Some(Adversary::ForgeRecords) && target.is_some();
                let token = self.next_token;
                self.next_token += 1;
                self.tokens.insert(
                    token,
                    TokenInfo {
                        requester: from,
                        request_id,
                        forge,
                    },
                );
                self.nodes[to]
                    .node
                    .handle_request(now, from_peer, token, &bytes);
                self.drain(to);
            }
            Ev::Response {
                to,
                request_id,
                from_id,
                bytes,
            } => {
                if !self.nodes[to].alive {
                    return;
                }
                self.delivered += 1;
                self.nodes[to].node.handle_response(
                    now,
                    request_id,
                    Ok(Reply {
                        from: from_id,
                        bytes: &bytes,
                    }),
                );
                self.drain(to);
            }
            Ev::Failure {
                to,
                request_id,
                failure,
            } => {
                if !self.nodes[to].alive {
                    return;
                }
                self.nodes[to]
                    .node
                    .handle_response(now, request_id, Err(failure));
                self.drain(to);
            }
        }
    }

    /// Processes every event up to `now + d`.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now_ns + u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        while self.heap.peek().is_some_and(|i| i.t <= end) {
            if let Some(item) = self.heap.pop() {
                self.step(item);
            }
        }
        self.now_ns = end;
    }

    /// Runs until `pred` holds (checked after every event) or `max` elapses; returns whether it held.
    pub fn run_until(&mut self, max: Duration, mut pred: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now_ns + u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        while !pred(self) {
            match self.heap.peek() {
                Some(i) if i.t <= end => {
                    if let Some(item) = self.heap.pop() {
                        self.step(item);
                    }
                }
                _ => {
                    self.now_ns = end;
                    return pred(self);
                }
            }
        }
        true
    }

    /// Checks Zave's invariants on the live members: every successor and predecessor is right
    /// (hence at least one ring, at most one ring, an ordered ring), and every successor list is
    /// ordered and starts with the true successor.
    pub fn check_ring(&self) -> Result<(), String> {
        let live = self.live();
        let mut ids: Vec<(NodeId, usize)> = live
            .iter()
            .map(|i| (self.nodes[*i].node.id(), *i))
            .collect();
        ids.sort();
        let n = ids.len();
        if n == 0 {
            return Err("no live node".into());
        }
        for (k, (id, i)) in ids.iter().enumerate() {
            let node = &self.nodes[*i].node;
            let next = ids[(k + 1) % n].0;
            let prev = ids[(k + n - 1) % n].0;
            if n == 1 {
                if let Some(s) = node.successors().first() {
                    return Err(format!(
                        "lone node {} has successor {}",
                        id.short(),
                        s.id.short()
                    ));
                }
                continue;
            }
            match node.successors().first() {
                Some(s) if s.id == next => {}
                other => {
                    return Err(format!(
                        "node {} has successor {:?}, expected {}",
                        id.short(),
                        other.map(|p| p.id.short()),
                        next.short()
                    ));
                }
            }
            match node.predecessor() {
                Some(p) if p.id == prev => {}
                other => {
                    return Err(format!(
                        "node {} has predecessor {:?}, expected {}",
                        id.short(),
                        other.map(|p| p.id.short()),
                        prev.short()
                    ));
                }
            }
            // ordered successor list (Zave's OrderedSuccessorLists)
            let mut last = *id;
            for (x, s) in node.successors().iter().enumerate() {
                if x > 0 && !in_open(&last, &s.id, id) {
                    return Err(format!(
                        "node {} has an unordered successor list",
                        id.short()
                    ));
                }
                last = s.id;
            }
        }
        Ok(())
    }
}
