//! An in-memory network: the [network model](super::model) behind the
//! [`Transport`] trait, in tokio's time.
//!
//! One [`MemNetwork`] holds any number of [`MemTransport`]s at synthetic addresses
//! (`10.x.y.z:7000` by default). There is no thread and no task per transport: every frame in
//! flight sits in one priority queue ordered by `(delivery time, send order)`, drained by a
//! single driver task per network, so thousands of transports cost a map entry and a bounded
//! channel each.
//!
//! Determinism. Every random choice (loss, duplication, jitter) is the model's, drawn from its
//! one seeded PRNG in the order `send` is called, and deliveries happen in `(time, send order)` order. So for a
//! given seed the deliveries are a function of the sequence of `send` calls and their times.
//! That sequence is itself reproducible when the whole simulation runs on a current-thread
//! tokio runtime with the clock paused (`#[tokio::test(start_paused = true)]`): no real time,
//! no thread interleaving. Not deterministic: a multi-threaded runtime, the real clock, or
//! code that uses `tokio::select!` without `biased;` (tokio seeds its branch choice randomly).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use themis_channel::wire::DEFAULT_MAX_FRAME_LEN;
use themis_channel::{Transport, TransportError, TransportStats, check_outgoing_frame};
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};

use super::Counters;
use super::model::{Fate, LinkConfig, ModelStats, NetModel};
use super::queue::TimedQueue;

/// Settings of a [`MemNetwork`].
#[derive(Debug, Clone)]
pub struct MemConfig {
    /// Seed of the network model's PRNG.
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
    model: NetModel,
    nodes: HashMap<SocketAddr, Node>,
    /// Frames in flight, at their arrival time since `NetInner::start`.
    queue: TimedQueue<InFlight>,
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
    from: SocketAddr,
    to: SocketAddr,
    frame: Bytes,
}

impl NetState {
    fn record(&mut self, cap: usize, at: Duration, f: &InFlight, delivered: bool) {
        if self.trace.len() < cap {
            self.trace.push(TraceEvent {
                at,
                from: f.from,
                to: f.to,
                len: f.frame.len(),
                fingerprint: fnv1a(&f.frame),
                delivered,
            });
        }
    }

    /// Hands an arrived frame to its addressee's queue; whether it got there.
    fn deliver(&mut self, at: Duration, f: &InFlight) -> bool {
        if !self.model.arrives(at, f.from, f.to) {
            return false;
        }
        let Some(node) = self.nodes.get(&f.to) else {
            return false;
        };
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
}

impl MemNetwork {
    /// A new, empty network. Needs no runtime until the first transport is bound.
    pub fn new(cfg: MemConfig) -> Self {
        let state = NetState {
            model: NetModel::new(cfg.seed, cfg.default_link),
            nodes: HashMap::new(),
            queue: TimedQueue::default(),
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
        self.lock().model.set_link(from, to, link);
    }

    /// Sets the behaviour of every link without an override.
    pub fn set_default_link(&self, link: LinkConfig) {
        self.lock().model.set_default_link(link);
    }

    /// Splits the network into `groups` (see [`NetModel::partition`]): frames pass only
    /// between addresses of the same group; addresses not named form one more group together.
    /// Frames already in flight across the cut are dropped on arrival. Replaces any earlier
    /// partition.
    pub fn partition(&self, groups: &[&[SocketAddr]]) {
        self.lock().model.partition(groups);
    }

    /// Ends the current partition at `at` (tokio's clock: virtual time under a paused clock).
    pub fn heal_at(&self, at: Instant) {
        let at = at.saturating_duration_since(self.inner.start);
        self.lock().model.heal_at(at);
    }

    /// Removes any partition now.
    pub fn heal(&self) {
        self.lock().model.heal();
    }

    /// The network model's counters: frames offered, lost, partitioned away, duplicated.
    pub fn model_stats(&self) -> ModelStats {
        self.lock().model.stats()
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
            let now = Instant::now().saturating_duration_since(net.start);
            while let Some((at, f)) = st.queue.pop_until(now) {
                let delivered = st.deliver(at, &f);
                st.record(cap, at, &f, delivered);
            }
            if st.nodes.is_empty() && st.queue.is_empty() {
                st.driver_running = false;
                return;
            }
            st.queue.next_at()
        };
        match next {
            Some(at) => {
                tokio::select! {
                    biased;
                    () = net.wake.notified() => {}
                    () = tokio::time::sleep_until(net.start + at) => {}
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
        let now = Instant::now().saturating_duration_since(self.net.start);
        let cap = self.net.cfg.trace_capacity;
        {
            let mut st = self.net.lock();
            if !st.nodes.contains_key(&self.addr) {
                return Err(TransportError::Closed);
            }
            Counters::inc(&self.stats.frames_sent);
            Counters::add(&self.stats.bytes_sent, frame.len() as u64);
            let fate = st.model.send(now, self.addr, to);
            let f = InFlight {
                from: self.addr,
                to,
                frame,
            };
            if matches!(fate, Fate::Partitioned | Fate::Lost)
                || st.queue.len() >= self.net.cfg.max_in_flight
            {
                Counters::inc(&self.stats.frames_dropped);
                st.record(cap, now, &f, false);
                return Ok(());
            }
            for delay in fate.delays() {
                let copy = InFlight {
                    frame: f.frame.clone(),
                    ..f
                };
                st.queue.push(now + delay, copy);
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
