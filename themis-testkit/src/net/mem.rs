//! An in-memory network: seeded latency, jitter, loss, duplication and partitions.
//!
//! One [`MemNetwork`] holds any number of [`MemTransport`]s at synthetic addresses
//! (`10.x.y.z:7000` by default). There is no thread and no task per transport: every frame in
//! flight sits in one priority queue ordered by `(delivery time, send order)`, drained by a
//! single driver task per network, so thousands of transports cost a map entry and a bounded
//! channel each.
//!
//! Determinism. Every random choice (loss, duplication, jitter) is drawn from one seeded PRNG,
//! in the order `send` is called, and deliveries happen in `(time, send order)` order. So for a
//! given seed the deliveries are a function of the sequence of `send` calls and their times.
//! That sequence is itself reproducible when the whole simulation runs on a current-thread
//! tokio runtime with the clock paused (`#[tokio::test(start_paused = true)]`): no real time,
//! no thread interleaving. Not deterministic: a multi-threaded runtime, the real clock, or
//! code that uses `tokio::select!` without `biased;` (tokio seeds its branch choice randomly).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use themis_channel::{
    DEFAULT_TRANSPORT_MAX_FRAME_LEN as DEFAULT_MAX_FRAME_LEN, Transport, TransportError,
    TransportStats, check_outgoing_frame,
};
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};

use super::{Counters, rng::SimRng};

/// Behaviour of one direction of a simulated link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per frame; frames overtake each other
    /// when it exceeds their spacing, so this is also the reordering knob.
    pub jitter: Duration,
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice (each copy with its own jitter).
    pub duplicate: f64,
}

impl Default for LinkConfig {
    /// A perfect link: no delay, no loss.
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

/// Settings of a [`MemNetwork`].
#[derive(Debug, Clone)]
pub struct MemConfig {
    /// Seed of the network's PRNG.
    pub seed: u64,
    /// Link behaviour where no [`MemNetwork::set_link`] override applies.
    pub default_link: LinkConfig,
    /// Largest frame (default [`DEFAULT_MAX_FRAME_LEN`]).
    pub max_frame_len: usize,
    /// Frames waiting in each transport's receive queue before new ones are dropped (1024).
    pub recv_queue_len: usize,
    /// Most frames in flight in the whole network before new sends are dropped (1,000,000).
    pub max_in_flight: usize,
    /// Most trace events kept (0, the default, records none); later events are not recorded.
    pub trace_capacity: usize,
}

impl Default for MemConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            default_link: LinkConfig::default(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            recv_queue_len: 1024,
            max_in_flight: 1_000_000,
            trace_capacity: 0,
        }
    }
}

/// One frame's fate, as recorded by the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceEvent {
    /// Time since the network was created (virtual time under a paused clock).
    pub at: Duration,
    /// Sender.
    pub from: SocketAddr,
    /// Addressee.
    pub to: SocketAddr,
    /// Frame length.
    pub len: usize,
    /// FNV-1a hash of the frame, to tell frames apart in a trace.
    pub fingerprint: u64,
    /// `true` if handed to the receiver's queue, `false` if lost, partitioned away, refused
    /// by a full queue or addressed to nobody.
    pub delivered: bool,
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A simulated network; cheap to clone (a handle).
#[derive(Debug, Clone)]
pub struct MemNetwork {
    inner: Arc<NetInner>,
}

#[derive(Debug)]
struct NetInner {
    cfg: MemConfig,
    state: Mutex<NetState>,
    wake: Notify,
    start: Instant,
}

#[derive(Debug)]
struct NetState {
    rng: SimRng,
    default_link: LinkConfig,
    nodes: HashMap<SocketAddr, Node>,
    links: HashMap<(SocketAddr, SocketAddr), LinkConfig>,
    /// Partition side of each named address; unnamed addresses are on side 0.
    sides: HashMap<SocketAddr, u32>,
    queue: BinaryHeap<Reverse<InFlight>>,
    next_seq: u64,
    next_host: u32,
    trace: Vec<TraceEvent>,
    driver_running: bool,
}

#[derive(Debug)]
struct Node {
    tx: mpsc::Sender<(SocketAddr, BytesMut)>,
    stats: Arc<Counters>,
}

#[derive(Debug)]
struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    frame: Bytes,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl NetState {
    fn same_side(&self, a: SocketAddr, b: SocketAddr) -> bool {
        self.sides.get(&a).copied().unwrap_or(0) == self.sides.get(&b).copied().unwrap_or(0)
    }

    fn record(&mut self, cap: usize, ev: TraceEvent) {
        if self.trace.len() < cap {
            self.trace.push(ev);
        }
    }
}

impl MemNetwork {
    /// A new, empty network. Needs no runtime until the first transport is bound.
    pub fn new(cfg: MemConfig) -> Self {
        let state = NetState {
            rng: SimRng::new(cfg.seed),
            default_link: cfg.default_link,
            nodes: HashMap::new(),
            links: HashMap::new(),
            sides: HashMap::new(),
            queue: BinaryHeap::new(),
            next_seq: 0,
            next_host: 1,
            trace: Vec::new(),
            driver_running: false,
        };
        Self {
            inner: Arc::new(NetInner {
                cfg,
                state: Mutex::new(state),
                wake: Notify::new(),
                start: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.inner.lock()
    }

    /// A transport at the next free synthetic address `10.x.y.z:7000`. Must be called inside a
    /// tokio runtime.
    pub fn bind(&self) -> MemTransport {
        let addr = {
            let mut st = self.lock();
            loop {
                let n = st.next_host;
                st.next_host = st.next_host.wrapping_add(1);
                let [_, b, c, d] = n.to_be_bytes();
                let addr = SocketAddr::from((Ipv4Addr::new(10, b, c, d), 7000));
                if !st.nodes.contains_key(&addr) && d != 0 {
                    break addr;
                }
            }
        };
        match self.bind_addr(addr) {
            Ok(t) => t,
            // The address was free a moment ago and addresses are only taken under the lock
            // by `bind_addr`; a race with another `bind_addr` of this exact address is the
            // only way here, so try the next one.
            Err(_) => self.bind(),
        }
    }

    /// A transport at `addr`. Must be called inside a tokio runtime.
    pub fn bind_addr(&self, addr: SocketAddr) -> Result<MemTransport, TransportError> {
        let (tx, rx) = mpsc::channel(self.inner.cfg.recv_queue_len.max(1));
        let stats = Arc::new(Counters::default());
        let start_driver = {
            let mut st = self.lock();
            if st.nodes.contains_key(&addr) {
                return Err(TransportError::AddrInUse { addr });
            }
            st.nodes.insert(
                addr,
                Node {
                    tx,
                    stats: stats.clone(),
                },
            );
            !std::mem::replace(&mut st.driver_running, true)
        };
        if start_driver {
            tokio::spawn(drive(self.inner.clone()));
        }
        Ok(MemTransport {
            net: self.inner.clone(),
            addr,
            stats,
            incoming: tokio::sync::Mutex::new(rx),
        })
    }

    /// Sets the behaviour of the link from `from` to `to` (one direction).
    pub fn set_link(&self, from: SocketAddr, to: SocketAddr, link: LinkConfig) {
        self.lock().links.insert((from, to), link);
    }

    /// Sets the behaviour of every link without an override.
    pub fn set_default_link(&self, link: LinkConfig) {
        self.lock().default_link = link;
    }

    /// Splits the network: frames pass only between addresses on the same side. Addresses not
    /// named form one more side together. Frames already in flight across the cut are dropped
    /// at delivery time. Replaces any earlier partition.
    pub fn partition(&self, sides: &[&[SocketAddr]]) {
        let mut st = self.lock();
        st.sides.clear();
        for (i, side) in sides.iter().enumerate() {
            let tag = u32::try_from(i + 1).unwrap_or(u32::MAX);
            for addr in *side {
                st.sides.insert(*addr, tag);
            }
        }
    }

    /// Removes any partition.
    pub fn heal(&self) {
        self.lock().sides.clear();
    }

    /// The recorded trace so far (see [`MemConfig::trace_capacity`]).
    pub fn trace(&self) -> Vec<TraceEvent> {
        self.lock().trace.clone()
    }

    /// Frames currently in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().queue.len()
    }

    /// Number of bound transports.
    pub fn len(&self) -> usize {
        self.lock().nodes.len()
    }

    /// Whether no transport is bound.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl NetInner {
    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The single driver of a network: delivers due frames in `(time, send order)` order, then
/// sleeps until the next one is due or a new one is sent. Exits when the network has neither
/// transports nor frames in flight (a later `bind` starts a new one).
async fn drive(net: Arc<NetInner>) {
    let cap = net.cfg.trace_capacity;
    loop {
        let next = {
            let mut st = net.lock();
            let now = Instant::now();
            while st.queue.peek().is_some_and(|Reverse(f)| f.at <= now) {
                let Some(Reverse(f)) = st.queue.pop() else {
                    break;
                };
                let delivered = st.same_side(f.from, f.to)
                    && match st.nodes.get(&f.to) {
                        Some(node) => {
                            let len = f.frame.len() as u64;
                            match node.tx.try_send((f.from, BytesMut::from(f.frame.clone()))) {
                                Ok(()) => {
                                    Counters::inc(&node.stats.frames_received);
                                    Counters::add(&node.stats.bytes_received, len);
                                    true
                                }
                                Err(_) => {
                                    Counters::inc(&node.stats.frames_dropped);
                                    false
                                }
                            }
                        }
                        None => false,
                    };
                let ev = TraceEvent {
                    at: f.at.saturating_duration_since(net.start),
                    from: f.from,
                    to: f.to,
                    len: f.frame.len(),
                    fingerprint: fnv1a(&f.frame),
                    delivered,
                };
                st.record(cap, ev);
            }
            if st.nodes.is_empty() && st.queue.is_empty() {
                st.driver_running = false;
                return;
            }
            st.queue.peek().map(|Reverse(f)| f.at)
        };
        match next {
            Some(at) => {
                tokio::select! {
                    biased;
                    () = net.wake.notified() => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => net.wake.notified().await,
        }
    }
}

/// One endpoint's attachment to a [`MemNetwork`].
#[derive(Debug)]
pub struct MemTransport {
    net: Arc<NetInner>,
    addr: SocketAddr,
    stats: Arc<Counters>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<(SocketAddr, BytesMut)>>,
}

impl MemTransport {
    fn detach(&self) {
        let removed = self.net.lock().nodes.remove(&self.addr);
        if removed.is_some() {
            self.net.wake.notify_one();
        }
    }
}

impl Drop for MemTransport {
    fn drop(&mut self) {
        self.detach();
    }
}

#[async_trait]
impl Transport for MemTransport {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn is_reliable(&self) -> bool {
        false
    }

    fn max_frame_len(&self) -> usize {
        self.net.cfg.max_frame_len
    }

    async fn send(&self, to: SocketAddr, frame: Bytes) -> Result<(), TransportError> {
        check_outgoing_frame(&frame, self.net.cfg.max_frame_len)?;
        let now = Instant::now();
        let cap = self.net.cfg.trace_capacity;
        {
            let mut st = self.net.lock();
            if !st.nodes.contains_key(&self.addr) {
                return Err(TransportError::Closed);
            }
            Counters::inc(&self.stats.frames_sent);
            Counters::add(&self.stats.bytes_sent, frame.len() as u64);
            let link = st
                .links
                .get(&(self.addr, to))
                .copied()
                .unwrap_or(st.default_link);
            let lost = !st.same_side(self.addr, to)
                || st.rng.chance(link.loss)
                || st.queue.len() >= self.net.cfg.max_in_flight;
            if lost {
                Counters::inc(&self.stats.frames_dropped);
                let ev = TraceEvent {
                    at: now.saturating_duration_since(self.net.start),
                    from: self.addr,
                    to,
                    len: frame.len(),
                    fingerprint: fnv1a(&frame),
                    delivered: false,
                };
                st.record(cap, ev);
                return Ok(());
            }
            let copies = if st.rng.chance(link.duplicate) { 2 } else { 1 };
            let jitter_ns = u64::try_from(link.jitter.as_nanos()).unwrap_or(u64::MAX);
            for _ in 0..copies {
                let extra = Duration::from_nanos(st.rng.up_to(jitter_ns));
                let seq = st.next_seq;
                st.next_seq = st.next_seq.wrapping_add(1);
                st.queue.push(Reverse(InFlight {
                    at: now + link.latency + extra,
                    seq,
                    from: self.addr,
                    to,
                    frame: frame.clone(),
                }));
            }
        }
        self.net.wake.notify_one();
        Ok(())
    }

    async fn recv(&self) -> Result<(SocketAddr, BytesMut), TransportError> {
        self.incoming
            .lock()
            .await
            .recv()
            .await
            .ok_or(TransportError::Closed)
    }

    fn stats(&self) -> TransportStats {
        self.stats.snapshot()
    }

    async fn close(&self) {
        self.detach();
    }
}
