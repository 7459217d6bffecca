//! The endpoint: drives the handshake and channel cores over a [`Transport`].
//!
//! One receive task per endpoint reads frames from the transport (or the transport's own
//! reader tasks hand them over, see `Transport::set_sink`) and routes them by their
//! first bytes: handshake messages to the responder (message 1, 3) or to the initiator waiting
//! under the echoed nonce (message 2); channel frames to their channel by session id (secure)
//! or sender id (insecure); control messages (0x38..=0x3C, see `control.rs`) to whoever
//! waits for them. A command goes first to the application's [`Handler::try_dispatch`] (the
//! fast path: the application queues it with its [`CommandResponder`] and answers later, with no task
//! spawned); if the handler gives it back, [`Handler::handle`] runs on a spawned task.
//! Responses complete the `request` call waiting for their sequence number.
//!
//! Sessions are keyed by the peer's [`NodeId`] and do not depend on a connection: frames are
//! addressed to the peer's listening address and the transport (re)connects as needed. A peer
//! keeps at most two sessions: the newest is used for new requests, the previous one drains
//! (answers commands and delivers responses) until a third replaces it. So when both peers
//! initiate at once, both sessions stay usable and no tie-break is needed.

mod config;
mod control;
mod metrics;

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use themis_crypto::{IdentityKeypair, NetworkId, NodeId, PublicKey};
use themis_handshake::{
    Initiator, MessageKind, OsRandom, RandomSource, Responder, Session, SessionId,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

pub use config::EndpointConfig;
use control::Control;
use metrics::Counters;
pub use metrics::EndpointMetrics;

use crate::{
    Channel, ChannelConfig, Error, FrameHeader, Incoming, Mode, TcpConfig, TcpTransport,
    TokenBucket, Transport, TransportError, UdpConfig, UdpTransport, peek_header,
};

/// A peer as the endpoint knows it: its self-certifying id and the address it listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    /// The node id (`h(PK, net_id)`); a secure request checks the peer's key against it.
    pub id: NodeId,
    /// The address the peer listens on.
    pub addr: SocketAddr,
}

/// The application's side of an endpoint: answers incoming commands.
///
/// `from` is authenticated in secure mode (the session's peer) and a mere claim in insecure
/// mode. At most `max_handlers` commands are being handled at once (running `handle`, or
/// taken by `try_dispatch` and not yet answered); a handler may itself send requests through
/// a clone of the endpoint.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Returns the response to `request`. Runs on a task of its own.
    async fn handle(&self, from: PeerAddr, request: Bytes) -> Bytes;

    /// The fast path, tried first for every command: called on the endpoint's receive task,
    /// so it must not block. Take the command (`Ok`: queue it, typically to the task that owns
    /// the application's state, which answers with [`CommandResponder::respond`]) or give it back
    /// (`Err`: then [`Handler::handle`] runs on a spawned task, as by default). Taking it saves
    /// a task and two channel hops per command.
    // The command moves back by value on purpose: boxing it would cost an allocation per
    // command on the path this method exists to make cheap.
    #[allow(clippy::result_large_err)]
    fn try_dispatch(&self, command: IncomingCommand) -> Result<(), IncomingCommand> {
        Err(command)
    }
}

/// An incoming command handed to [`Handler::try_dispatch`]: the sender, the request, and the
/// [`CommandResponder`] that answers it.
#[derive(Debug)]
pub struct IncomingCommand {
    request: Bytes,
    responder: CommandResponder,
}

impl IncomingCommand {
    /// The sender: authenticated in secure mode, a claim in insecure mode.
    pub fn from(&self) -> PeerAddr {
        self.responder.peer
    }

    /// The request payload.
    pub fn request(&self) -> &Bytes {
        &self.request
    }

    /// `(from, request, responder)`.
    pub fn into_parts(self) -> (PeerAddr, Bytes, CommandResponder) {
        (self.responder.peer, self.request, self.responder)
    }
}

/// Answers one incoming command: seals the response on the channel the command came in on
/// and queues it on the transport, without waiting.
///
/// It holds one of the endpoint's `max_handlers` slots until it answers or is dropped, and
/// graceful shutdown waits (at most `shutdown_timeout`) for it. Dropping it unanswered sends
/// nothing: the caller's request times out (or, over UDP, its retransmission finds no cached
/// answer and is refused as a replay), so answer every command, a refusal if need be.
pub struct CommandResponder {
    inner: Arc<Inner>,
    peer: PeerAddr,
    key: ChanKey,
    generation: u64,
    seq: u64,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for CommandResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandResponder")
            .field("peer", &self.peer)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Drop for CommandResponder {
    fn drop(&mut self) {
        Counters::dec(&self.inner.counters.handlers_running);
    }
}

impl CommandResponder {
    fn new(
        inner: Arc<Inner>,
        (peer, key, generation): (PeerAddr, ChanKey, u64),
        seq: u64,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Counters::inc(&inner.counters.handlers_running);
        Self {
            inner,
            peer,
            key,
            generation,
            seq,
            _permit: permit,
        }
    }

    /// The peer the response goes to.
    pub fn peer(&self) -> PeerAddr {
        self.peer
    }

    /// Seals `response` and queues it for the peer. Never blocks: when the transport cannot
    /// take the frame at once (a TCP connection's queue is full or not open yet), a task sends
    /// it. If the command's channel is gone meanwhile (replaced or dropped), nothing is sent.
    pub fn respond(self, response: Bytes) {
        if let Some(frame) = self.seal(&response) {
            let to = self.peer.addr;
            let len = frame.len() as u64;
            match self.inner.transport.try_send(to, frame) {
                Ok(()) => Counters::add(&self.inner.counters.bytes_out, len),
                Err(frame) => self.inner.send_detached(to, vec![frame]),
            }
        }
    }

    /// Like [`CommandResponder::respond`], waiting for room on the transport instead of spawning.
    async fn respond_async(self, response: Bytes) {
        if let Some(frame) = self.seal(&response) {
            self.inner.send(self.peer.addr, frame).await;
        }
    }

    /// Seals the response on channel `(key, generation)`; `None` if that channel is gone:
    /// sealing it on a successor under the same key would answer a different command that
    /// happens to reuse `seq`.
    fn seal(&self, response: &[u8]) -> Option<Bytes> {
        let me = &self.inner;
        let mut st = me.lock();
        let cache_len = me.cfg.response_cache;
        let reliable = me.reliable;
        let ch = st.chan_gen_mut(self.peer.id, self.key, self.generation)?;
        let mut out = BytesMut::new();
        match ch
            .channel
            .seal_response(self.seq, response, &mut out, now())
        {
            Ok(()) => {
                let f = out.freeze();
                if !reliable && cache_len > 0 {
                    if ch.cache.len() >= cache_len {
                        ch.cache.pop_front();
                    }
                    ch.cache.push_back((self.seq, f.clone()));
                }
                Some(f)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot send the handler's response");
                None
            }
        }
    }
}

/// Any `Fn(PeerAddr, Bytes) -> impl Future<Output = Bytes>` is a handler:
/// `Arc::new(|_from, req| async move { req })`.
#[async_trait]
impl<F, Fut> Handler for F
where
    F: Fn(PeerAddr, Bytes) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Bytes> + Send + 'static,
{
    async fn handle(&self, from: PeerAddr, request: Bytes) -> Bytes {
        (self)(from, request).await
    }
}

/// A THEMIS node's network endpoint: sets up sessions lazily (paper Fig. 2) and carries
/// commands and responses over them (paper Fig. 3). A cheap handle: clones share the endpoint.
///
/// The receive task stops when the last handle is dropped or [`Endpoint::shutdown`] runs.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
    _guard: Arc<DropGuard>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_id", &self.inner.local_id)
            .field("local_addr", &self.inner.transport.local_addr())
            .field("mode", &self.inner.cfg.mode)
            .finish_non_exhaustive()
    }
}

/// Which channel of a peer: by session id (secure) or the peer's only channel (insecure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChanKey {
    Secure(SessionId),
    Insecure(NodeId),
}

type Waiter = oneshot::Sender<Result<Bytes, Error>>;

struct Chan {
    channel: Channel,
    /// Unique per endpoint: tells this channel from a later one under the same [`ChanKey`]
    /// (an insecure channel replaced after its peer restarted keeps the key `Insecure(peer)`).
    /// Whoever holds on to a channel across an `.await` (a handler, a waiting request) finds
    /// it again by key *and* generation, so it never answers or cancels on its successor.
    generation: u64,
    /// Our requests on this channel awaiting their response.
    waiters: HashMap<u64, Waiter>,
    /// Sealed responses, to answer retransmitted commands (unreliable transports only).
    cache: VecDeque<(u64, Bytes)>,
    /// Message 3, sent before each command until the peer answers on this session (covers a
    /// lost message 3 and a command overtaking it).
    msg3: Option<Bytes>,
    /// An authentic frame arrived on this channel.
    confirmed: bool,
}

struct PeerState {
    addr: SocketAddr,
    /// Newest last; at most two.
    chans: Vec<Chan>,
    /// Nonce of our handshake in progress with this peer.
    handshake: Option<[u8; 32]>,
    per_peer: Arc<Semaphore>,
    last_used: u64,
}

struct PendingHandshake {
    peer: PeerAddr,
    initiator: Initiator,
    waiters: Vec<oneshot::Sender<Result<(), Error>>>,
    done: Option<oneshot::Sender<()>>,
}

struct State {
    peers: HashMap<NodeId, PeerState>,
    by_session: HashMap<SessionId, NodeId>,
    handshakes: HashMap<[u8; 32], PendingHandshake>,
    identifies: HashMap<[u8; 16], (SocketAddr, oneshot::Sender<PublicKey>)>,
    responder: Option<Responder>,
    rng: Box<dyn RandomSource>,
    /// Limits unauthenticated replies (control messages and message 2).
    control_rate: TokenBucket,
    tick: u64,
}

/// Most `identify` calls waiting at once.
const MAX_IDENTIFIES: usize = 1024;

struct Inner {
    identity: Arc<IdentityKeypair>,
    network: NetworkId,
    local_id: NodeId,
    cfg: EndpointConfig,
    chan_cfg: ChannelConfig,
    transport: Arc<dyn Transport>,
    reliable: bool,
    handler: Arc<dyn Handler>,
    state: Mutex<State>,
    counters: Counters,
    in_flight: Arc<Semaphore>,
    handlers: Arc<Semaphore>,
    closing: AtomicBool,
    /// The receive task has stopped: frames handed over by the transport's sink are dropped.
    stopped: AtomicBool,
    cancel: CancellationToken,
}

/// The time the cores see: tokio's clock, so that tests with a paused clock are deterministic.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Endpoint {
    /// An endpoint on `transport` for `identity` on `network`, answering commands with
    /// `handler`. Must be called inside a tokio runtime: it spawns the receive task there.
    pub fn new(
        transport: Arc<dyn Transport>,
        identity: Arc<IdentityKeypair>,
        network: NetworkId,
        config: EndpointConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let mut chan_cfg = config.channel.clone();
        chan_cfg.max_frame_len = chan_cfg.max_frame_len.min(transport.max_frame_len());
        chan_cfg.validate()?;
        let mut hs_cfg = config.handshake.clone();
        hs_cfg.initiator_timeout = config.handshake_timeout;
        let local_id = identity.node_id(&network);
        #[cfg(feature = "testing")]
        let (rng, responder_rng): (Box<dyn RandomSource>, Box<dyn RandomSource>) =
            match config.rng_seed {
                Some(seed) => (
                    Box::new(themis_handshake::SeededRandom::from_u64(seed)),
                    Box::new(themis_handshake::SeededRandom::from_u64(seed ^ 0x5245_5350)),
                ),
                None => (Box::new(OsRandom), Box::new(OsRandom)),
            };
        #[cfg(not(feature = "testing"))]
        let (rng, responder_rng): (Box<dyn RandomSource>, Box<dyn RandomSource>) =
            (Box::new(OsRandom), Box::new(OsRandom));
        let responder = (config.mode == Mode::Secure)
            .then(|| Responder::with_rng(identity.clone(), network.clone(), hs_cfg, responder_rng));
        let cancel = CancellationToken::new();
        let inner = Arc::new(Inner {
            identity,
            network,
            local_id,
            chan_cfg,
            reliable: transport.is_reliable(),
            transport,
            handler,
            state: Mutex::new(State {
                peers: HashMap::new(),
                by_session: HashMap::new(),
                handshakes: HashMap::new(),
                identifies: HashMap::new(),
                responder,
                rng,
                control_rate: TokenBucket::new(config.control_rate.0, config.control_rate.1),
                tick: 0,
            }),
            counters: Counters::default(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            handlers: Arc::new(Semaphore::new(config.max_handlers)),
            closing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            cancel: cancel.clone(),
            cfg: config,
        });
        let span = tracing::debug_span!("endpoint", id = %local_id.short());
        rt.spawn(recv_loop(inner.clone()).instrument(span));
        // Frames straight from the transport's readers where it can (TCP), saving a task
        // wake-up per frame; the receive task still serves what comes through `recv`. Weak:
        // the transport belongs to `inner`.
        let weak = Arc::downgrade(&inner);
        inner.transport.set_sink(Arc::new(move |from, frame| {
            if let Some(inner) = weak.upgrade()
                && !inner.stopped.load(Ordering::Acquire)
            {
                inner.dispatch(from, frame);
            }
        }));
        Ok(Self {
            inner,
            _guard: Arc::new(cancel.drop_guard()),
        })
    }

    /// An endpoint on a new [`TcpTransport`] bound to `addr`.
    pub async fn bind_tcp(
        addr: SocketAddr,
        tcp: TcpConfig,
        identity: Arc<IdentityKeypair>,
        network: NetworkId,
        config: EndpointConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Self, Error> {
        let t = TcpTransport::bind(addr, tcp).await?;
        Self::new(Arc::new(t), identity, network, config, handler)
    }

    /// An endpoint on a new [`UdpTransport`] bound to `addr`.
    pub async fn bind_udp(
        addr: SocketAddr,
        udp: UdpConfig,
        identity: Arc<IdentityKeypair>,
        network: NetworkId,
        config: EndpointConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Self, Error> {
        let t = UdpTransport::bind(addr, udp).await?;
        Self::new(Arc::new(t), identity, network, config, handler)
    }

    /// This node's id on its network.
    pub fn local_id(&self) -> NodeId {
        self.inner.local_id
    }

    /// The address peers reach this endpoint at.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.transport.local_addr()
    }

    /// This node as peers address it.
    pub fn local_peer(&self) -> PeerAddr {
        PeerAddr {
            id: self.local_id(),
            addr: self.local_addr(),
        }
    }

    /// Peers with a live session (secure) or channel (insecure).
    pub fn sessions(&self) -> usize {
        self.inner
            .lock()
            .peers
            .values()
            .filter(|p| !p.chans.is_empty())
            .count()
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> EndpointMetrics {
        let sessions = self.sessions() as u64;
        Counters::set(&self.inner.counters.sessions, sessions);
        self.inner.counters.snapshot(self.inner.transport.stats())
    }

    /// Sends `payload` to `peer` as a command and returns its response.
    ///
    /// On first contact (or when the session was lost, expired or needs a rekey) this runs the
    /// handshake first; concurrent requests to one peer share it. Waits (backpressure) while
    /// `max_in_flight` requests in total or `max_in_flight_per_peer` to this peer are in
    /// flight. On unreliable transports the same sealed frame is retransmitted with
    /// exponential backoff; the peer's replay window and response cache make sure it is
    /// executed at most once. Fails after `request_timeout` (waiting included).
    ///
    /// Cancel safety: dropping the future abandons the request (a late response is discarded).
    pub async fn request(&self, peer: &PeerAddr, payload: Bytes) -> Result<Bytes, Error> {
        let inner = &self.inner;
        if inner.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        if peer.id == inner.local_id {
            return Err(Error::SelfRequest(peer.id));
        }
        Counters::inc(&inner.counters.requests_sent);
        let span = tracing::debug_span!("request", peer = %peer.id.short(), addr = %peer.addr);
        // The whole request, transport sends included (a TCP send may wait for room in a
        // full queue), is bounded by `request_timeout`.
        let r = tokio::time::timeout(
            inner.cfg.request_timeout,
            inner.request(*peer, payload).instrument(span),
        )
        .await
        .unwrap_or_else(|_| Err(inner.deadline_error(*peer)));
        match &r {
            Ok(_) => Counters::inc(&inner.counters.requests_ok),
            Err(e) => {
                Counters::inc(&inner.counters.requests_failed);
                if matches!(e, Error::RequestTimeout { .. }) {
                    Counters::inc(&inner.counters.requests_timed_out);
                }
                tracing::debug!(error = %e, "request failed");
            }
        }
        r
    }

    /// Asks the node at `addr` for its public key and returns `(h(key, net_id), key)`, for
    /// bootstrapping from a bare address.
    ///
    /// The answer is unauthenticated: it only says which key the node *claims*. Use the id
    /// with [`Endpoint::request`]: its handshake then proves the node holds that key (message
    /// 2's signature), and fails if it does not. Fails after `handshake_timeout`.
    pub async fn identify(&self, addr: SocketAddr) -> Result<(NodeId, PublicKey), Error> {
        let inner = &self.inner;
        let mut token = [0u8; 16];
        themis_crypto::fill_random(&mut token);
        let (tx, mut rx) = oneshot::channel();
        {
            let mut st = inner.lock();
            if st.identifies.len() >= MAX_IDENTIFIES {
                return Err(Error::InvalidConfig(format!(
                    "more than {MAX_IDENTIFIES} identify calls at once; retry later"
                )));
            }
            st.identifies.insert(token, (addr, tx));
        }
        let frame = Bytes::from(Control::Identify { token }.encode());
        let deadline = tokio::time::Instant::now() + inner.cfg.handshake_timeout;
        let timed_out = || Error::HandshakeTimeout {
            peer: NodeId::from_bytes([0; 32]),
            addr,
            after: inner.cfg.handshake_timeout,
        };
        let mut rto = inner.cfg.initial_rto;
        // Bounded by `handshake_timeout`, transport sends included.
        let exchange = async {
            loop {
                inner.send(addr, frame.clone()).await;
                let wait = if inner.reliable {
                    deadline
                } else {
                    deadline.min(tokio::time::Instant::now() + rto)
                };
                match tokio::time::timeout_at(wait, &mut rx).await {
                    Ok(Ok(pk)) => break Ok((pk.node_id(&inner.network), pk)),
                    Ok(Err(_)) => break Err(Error::ShuttingDown),
                    Err(_) if tokio::time::Instant::now() >= deadline => {
                        break Err(timed_out());
                    }
                    Err(_) => {
                        Counters::inc(&inner.counters.retransmissions);
                        rto = (rto * 2).min(inner.cfg.max_rto);
                    }
                }
            }
        };
        let result = tokio::time::timeout_at(deadline, exchange)
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        inner.lock().identifies.remove(&token);
        result
    }

    /// Graceful shutdown: refuses new requests and incoming commands, waits (at most
    /// `shutdown_timeout`) for the requests in flight and the running handlers to finish,
    /// then stops the receive task and closes the transport (whose `close` is bounded too:
    /// TCP waits at most twice its `close_timeout`). Idempotent.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + inner.cfg.shutdown_timeout;
        let c = &inner.counters;
        while (c.in_flight.load(Ordering::Relaxed) > 0
            || c.handlers_running.load(Ordering::Relaxed) > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        inner.cancel.cancel();
        inner.transport.close().await;
    }
}

/// Decrements a gauge when dropped.
struct Gauge<'a>(&'a std::sync::atomic::AtomicU64);
impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        Counters::dec(self.0);
    }
}

/// Removes a request's waiter and cancels its sequence number if the request ends without its
/// response (timeout, error, or the future dropped).
struct WaiterGuard<'a> {
    inner: &'a Inner,
    peer: NodeId,
    key: ChanKey,
    generation: u64,
    seq: u64,
    armed: bool,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.inner.lock();
            if let Some(c) = st.chan_gen_mut(self.peer, self.key, self.generation) {
                c.waiters.remove(&self.seq);
                c.channel.cancel(self.seq);
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than losing the endpoint; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn send(&self, to: SocketAddr, frame: Bytes) {
        let len = frame.len() as u64;
        match self.transport.send(to, frame).await {
            Ok(()) => Counters::add(&self.counters.bytes_out, len),
            Err(e) => tracing::debug!(%to, error = %e, "send failed"),
        }
    }

    /// Sends replies from the receive task without blocking it.
    fn send_detached(self: &Arc<Self>, to: SocketAddr, frames: Vec<Bytes>) {
        if frames.is_empty() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            for f in frames {
                me.send(to, f).await;
            }
        });
    }

    fn deadline_error(&self, peer: PeerAddr) -> Error {
        Error::RequestTimeout {
            peer: peer.id,
            addr: peer.addr,
            after: self.cfg.request_timeout,
        }
    }

    async fn request(self: &Arc<Self>, peer: PeerAddr, payload: Bytes) -> Result<Bytes, Error> {
        let deadline = tokio::time::Instant::now() + self.cfg.request_timeout;
        // Backpressure: wait for room, bounded by the request deadline.
        let _total = tokio::time::timeout_at(deadline, self.in_flight.clone().acquire_owned())
            .await
            .map_err(|_| self.deadline_error(peer))?
            .map_err(|_| Error::ShuttingDown)?;
        let per_peer = {
            let mut st = self.lock();
            st.peer_entry(self, peer)?.per_peer.clone()
        };
        let _peer_permit = tokio::time::timeout_at(deadline, per_peer.acquire_owned())
            .await
            .map_err(|_| self.deadline_error(peer))?
            .map_err(|_| Error::ShuttingDown)?;
        Counters::inc(&self.counters.in_flight);
        let _gauge = Gauge(&self.counters.in_flight);

        let hs_deadline = deadline.min(tokio::time::Instant::now() + self.cfg.handshake_timeout);
        self.ensure_channel(peer, hs_deadline).await?;

        let (key, generation, seq, frame, msg3, mut rx) = {
            let mut st = self.lock();
            let t = st.next_tick();
            let p = st
                .peers
                .get_mut(&peer.id)
                .ok_or(Error::SessionLost { peer: peer.id })?;
            p.last_used = t;
            p.addr = peer.addr;
            let c = p
                .chans
                .last_mut()
                .ok_or(Error::SessionLost { peer: peer.id })?;
            let mut out = BytesMut::new();
            let seq = c.channel.seal_command(&payload, &mut out, now())?;
            let (tx, rx) = oneshot::channel();
            c.waiters.insert(seq, tx);
            (c.key(), c.generation, seq, out.freeze(), c.msg3.clone(), rx)
        };
        let mut guard = WaiterGuard {
            inner: self,
            peer: peer.id,
            key,
            generation,
            seq,
            armed: true,
        };
        tracing::trace!(seq, "command sent");
        let mut msg3 = msg3;
        let mut rto = self.cfg.initial_rto;
        loop {
            if let Some(m3) = msg3.take() {
                self.send(peer.addr, m3).await;
            }
            self.send(peer.addr, frame.clone()).await;
            let wait = if self.reliable {
                deadline
            } else {
                deadline.min(tokio::time::Instant::now() + rto)
            };
            match tokio::time::timeout_at(wait, &mut rx).await {
                Ok(Ok(r)) => {
                    guard.armed = false;
                    return r;
                }
                Ok(Err(_)) => {
                    guard.armed = false;
                    return Err(Error::SessionLost { peer: peer.id });
                }
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(self.deadline_error(peer));
                }
                Err(_) => {
                    // Retransmit the very same sealed frame (same seq, same nonce): the peer's
                    // replay window refuses a second execution and its response cache answers.
                    Counters::inc(&self.counters.retransmissions);
                    rto = (rto * 2).min(self.cfg.max_rto);
                    msg3 = self
                        .lock()
                        .chan_gen_mut(peer.id, key, generation)
                        .and_then(|c| c.msg3.clone());
                }
            }
        }
    }

    /// Makes sure `peer` has a usable channel, running (or joining) a handshake if needed.
    async fn ensure_channel(
        self: &Arc<Self>,
        peer: PeerAddr,
        deadline: tokio::time::Instant,
    ) -> Result<(), Error> {
        loop {
            let rx = {
                let mut st = self.lock();
                let st = &mut *st;
                let t = now();
                let p = st.peer_entry(self, peer)?;
                if self.cfg.mode == Mode::Insecure {
                    if p.chans.is_empty() {
                        let ch =
                            Channel::insecure(self.local_id, peer.id, self.chan_cfg.clone(), t)?;
                        p.chans.push(Chan::new(ch, None));
                    }
                    return Ok(());
                }
                let usable = p.chans.last().is_some_and(|c| !c.channel.is_expired(t));
                let rekey = p.chans.last().is_some_and(|c| c.channel.needs_rekey(t));
                if usable && !(rekey && p.handshake.is_none()) {
                    return Ok(());
                }
                let nonce = match p.handshake {
                    Some(n) => n,
                    None => st.start_handshake(self, peer, t)?,
                };
                if usable {
                    // Rekey in the background; keep using the current session meanwhile.
                    return Ok(());
                }
                let (tx, rx) = oneshot::channel();
                match st.handshakes.get_mut(&nonce) {
                    Some(h) => h.waiters.push(tx),
                    None => continue,
                }
                rx
            };
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(e),
                Ok(Err(_)) => return Err(Error::ShuttingDown),
                Err(_) => {
                    return Err(Error::HandshakeTimeout {
                        peer: peer.id,
                        addr: peer.addr,
                        after: self.cfg.handshake_timeout,
                    });
                }
            }
        }
    }

    /// Sends message 1 (again, on unreliable transports) until the handshake finishes or its
    /// deadline passes, then fails whoever still waits.
    async fn drive_handshake(
        self: Arc<Self>,
        peer: PeerAddr,
        nonce: [u8; 32],
        msg1: Bytes,
        mut done: oneshot::Receiver<()>,
    ) {
        let deadline = tokio::time::Instant::now() + self.cfg.handshake_timeout;
        let mut rto = self.cfg.initial_rto;
        loop {
            self.send(peer.addr, msg1.clone()).await;
            let wait = if self.reliable {
                deadline
            } else {
                deadline.min(tokio::time::Instant::now() + rto)
            };
            tokio::select! {
                _ = &mut done => return,
                _ = tokio::time::sleep_until(wait) => {}
                _ = self.cancel.cancelled() => break,
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            Counters::inc(&self.counters.retransmissions);
            rto = (rto * 2).min(self.cfg.max_rto);
        }
        let mut st = self.lock();
        if let Some(h) = st.handshakes.remove(&nonce) {
            Counters::inc(&self.counters.handshakes_failed_timeout);
            tracing::debug!(peer = %peer.id.short(), "handshake timed out");
            st.clear_handshake(h.peer.id, nonce);
            for w in h.waiters {
                let _ = w.send(Err(Error::HandshakeTimeout {
                    peer: peer.id,
                    addr: peer.addr,
                    after: self.cfg.handshake_timeout,
                }));
            }
        }
    }

    fn reject(&self, e: &Error) {
        let c = &self.counters;
        let counter = match e {
            Error::AuthenticationFailed => &c.frames_rejected_auth,
            Error::DuplicateCommand { .. }
            | Error::CommandTooOld { .. }
            | Error::DuplicateResponse { .. } => &c.frames_rejected_replay,
            Error::UnknownSession { .. } | Error::WrongSender { .. } => {
                &c.frames_rejected_unknown_session
            }
            Error::WrongMode { .. } => &c.frames_rejected_mode,
            Error::FrameTooShort { .. }
            | Error::FrameTooLarge { .. }
            | Error::UnsupportedVersion { .. }
            | Error::UnknownFrameType { .. } => &c.frames_rejected_malformed,
            _ => &c.frames_rejected_other,
        };
        Counters::inc(counter);
    }

    /// Routes one incoming frame. Never blocks; replies go out on detached tasks.
    fn dispatch(self: &Arc<Self>, from: SocketAddr, frame: BytesMut) {
        Counters::add(&self.counters.bytes_in, frame.len() as u64);
        let ty = frame.get(1).copied().unwrap_or(0);
        match ty {
            0x01..=0x03 => self.on_handshake(from, &frame),
            0x10 | 0x11 | 0x20 | 0x21 => self.on_channel(from, frame),
            0x38..=0x3F => self.on_control(from, &frame),
            _ => Counters::inc(&self.counters.frames_rejected_malformed),
        }
    }

    fn on_handshake(self: &Arc<Self>, from: SocketAddr, frame: &[u8]) {
        let c = &self.counters;
        let t = now();
        let kind = match themis_handshake::peek(frame) {
            Ok(k) => k,
            Err(_) => return Counters::inc(&c.handshakes_rejected_invalid),
        };
        let mut st = self.lock();
        let st = &mut *st;
        match kind {
            MessageKind::Message1 => {
                let Some(responder) = st.responder.as_mut() else {
                    // Insecure endpoint: tell the secure peer.
                    Counters::inc(&c.frames_rejected_mode);
                    if let Some(nonce) = control::msg1_nonce(frame) {
                        self.reply_control(
                            st,
                            from,
                            Control::ModeMismatch {
                                reference: nonce,
                                seq: 0,
                            },
                        );
                    }
                    return;
                };
                if self.closing.load(Ordering::Acquire) {
                    return;
                }
                match responder.handle_message1(frame, t) {
                    Ok(msg2) => {
                        // No amplification: message 2 (194 bytes) is never longer than the
                        // message 1 it answers (at least 196 bytes).
                        debug_assert!(msg2.len() <= frame.len());
                        self.send_detached(from, vec![Bytes::from(msg2)]);
                    }
                    Err(themis_handshake::Error::NotIntendedRecipient { .. }) => {
                        // paper §5.1.1: B checks he is the intended recipient. We also tell
                        // the initiator which key lives here, so it reports an identity
                        // mismatch at once instead of timing out.
                        Counters::inc(&c.handshakes_rejected_invalid);
                        if let Some(nonce) = control::msg1_nonce(frame) {
                            let public = self.identity.public();
                            self.reply_control(
                                st,
                                from,
                                Control::IdentityMismatch { nonce, public },
                            );
                        }
                    }
                    Err(themis_handshake::Error::PendingTableFull { .. }) => {
                        Counters::inc(&c.handshakes_rejected_busy);
                    }
                    Err(e) => {
                        tracing::debug!(%from, error = %e, "message 1 refused");
                        Counters::inc(&c.handshakes_rejected_invalid);
                    }
                }
            }
            MessageKind::Message2 { nonce } => {
                let Some(h) = st.handshakes.get_mut(&nonce) else {
                    return Counters::inc(&c.handshakes_rejected_unknown);
                };
                match h.initiator.handle_message2(frame, t) {
                    Ok((session, msg3)) => {
                        let Some(h) = st.handshakes.remove(&nonce) else {
                            return;
                        };
                        Counters::inc(&c.handshakes_initiated_ok);
                        let peer = h.peer;
                        let msg3 = Bytes::from(msg3);
                        // Message 3 also travels in front of every command until the peer
                        // answers on the session: a command must never reach the responder
                        // before the message 3 that creates its session there (over TCP the
                        // detached send below could be overtaken; over UDP it may be lost).
                        let keep = Some(msg3.clone());
                        st.clear_handshake(peer.id, nonce);
                        let r = st.install(self, peer, session, keep);
                        self.send_detached(peer.addr, vec![msg3]);
                        if let Some(d) = h.done {
                            let _ = d.send(());
                        }
                        for w in h.waiters {
                            let _ = w.send(r.as_ref().map(|_| ()).map_err(|e| e.clone_lite(peer)));
                        }
                    }
                    Err(themis_handshake::Error::IdentityMismatch { expected, actual }) => {
                        self.fail_handshake(st, nonce, |peer| Error::IdentityMismatch {
                            addr: peer.addr,
                            expected,
                            found: actual,
                        });
                        Counters::inc(&c.handshakes_failed_identity);
                    }
                    Err(e) => {
                        // A bad message 2 leaves the initiator waiting for the genuine one.
                        tracing::debug!(%from, error = %e, "message 2 refused");
                        Counters::inc(&c.handshakes_rejected_invalid);
                    }
                }
            }
            MessageKind::Message3 { .. } => {
                let Some(responder) = st.responder.as_mut() else {
                    return Counters::inc(&c.frames_rejected_mode);
                };
                match responder.handle_message3(frame, t) {
                    Ok(session) => {
                        Counters::inc(&c.handshakes_accepted_ok);
                        let peer = PeerAddr {
                            id: session.peer_id,
                            addr: from,
                        };
                        if let Err(e) = st.install(self, peer, session, None) {
                            tracing::debug!(error = %e, "accepted session not kept");
                        }
                    }
                    Err(themis_handshake::Error::UnknownSession { .. }) => {
                        // Usually a piggybacked or retransmitted message 3 of a finished
                        // handshake.
                        Counters::inc(&c.handshakes_rejected_unknown);
                    }
                    Err(_) => Counters::inc(&c.handshakes_rejected_invalid),
                }
            }
            _ => Counters::inc(&c.handshakes_rejected_invalid),
        }
    }

    fn fail_handshake(&self, st: &mut State, nonce: [u8; 32], err: impl Fn(PeerAddr) -> Error) {
        if let Some(h) = st.handshakes.remove(&nonce) {
            st.clear_handshake(h.peer.id, nonce);
            if let Some(d) = h.done {
                let _ = d.send(());
            }
            for w in h.waiters {
                let _ = w.send(Err(err(h.peer)));
            }
        }
    }

    fn reply_control(self: &Arc<Self>, st: &mut State, to: SocketAddr, msg: Control) {
        if st.control_rate.allow(now()) {
            Counters::inc(&self.counters.control_sent);
            self.send_detached(to, vec![Bytes::from(msg.encode())]);
        } else {
            Counters::inc(&self.counters.control_rate_limited);
        }
    }

    fn on_channel(self: &Arc<Self>, from: SocketAddr, frame: BytesMut) {
        // Delivered once the state lock is released: the handler may answer at once.
        if let Some(cmd) = self.open_channel_frame(from, frame) {
            self.deliver(cmd);
        }
    }

    /// Opens a channel frame under the state lock; returns a command to hand to the handler.
    fn open_channel_frame(
        self: &Arc<Self>,
        from: SocketAddr,
        frame: BytesMut,
    ) -> Option<IncomingCommand> {
        let c = &self.counters;
        let header = match peek_header(&frame) {
            Ok(h) => h,
            Err(e) => {
                self.reject(&e);
                return None;
            }
        };
        let t = now();
        let mut st = self.lock();
        let st = &mut *st;
        let (peer_id, key, command) = match (header, self.cfg.mode) {
            (
                FrameHeader::Secure {
                    session_id,
                    command,
                    seq,
                },
                Mode::Secure,
            ) => match st.by_session.get(&session_id) {
                Some(id) => (*id, ChanKey::Secure(session_id), command),
                None => {
                    Counters::inc(&c.frames_rejected_unknown_session);
                    if command {
                        // Tell the peer so it re-handshakes (e.g. we restarted).
                        self.reply_control(st, from, Control::UnknownSession { session_id, seq });
                    }
                    return None;
                }
            },
            (
                FrameHeader::Insecure {
                    sender, command, ..
                },
                Mode::Insecure,
            ) => {
                if sender == self.local_id {
                    {
                        Counters::inc(&c.frames_rejected_unknown_session);
                        return None;
                    }
                }
                if st.peers.get(&sender).is_none_or(|p| p.chans.is_empty()) {
                    if !command || self.closing.load(Ordering::Acquire) {
                        {
                            Counters::inc(&c.frames_rejected_unknown_session);
                            return None;
                        }
                    }
                    let peer = PeerAddr {
                        id: sender,
                        addr: from,
                    };
                    let ch = match st.peer_entry(self, peer).and_then(|_| {
                        Channel::insecure(self.local_id, sender, self.chan_cfg.clone(), t)
                    }) {
                        Ok(ch) => ch,
                        Err(_) => {
                            Counters::inc(&c.frames_rejected_other);
                            return None;
                        }
                    };
                    if let Some(p) = st.peers.get_mut(&sender) {
                        p.chans.push(Chan::new(ch, None));
                    }
                }
                (sender, ChanKey::Insecure(sender), command)
            }
            (
                FrameHeader::Insecure {
                    sender,
                    seq,
                    command,
                },
                Mode::Secure,
            ) => {
                Counters::inc(&c.frames_rejected_mode);
                if command {
                    self.reply_control(
                        st,
                        from,
                        Control::ModeMismatch {
                            reference: control::id_ref(&sender),
                            seq,
                        },
                    );
                }
                return None;
            }
            (FrameHeader::Secure { .. }, _) => {
                Counters::inc(&c.frames_rejected_mode);
                return None;
            }
        };
        // Backpressure on incoming commands: take a handler slot before opening, so a dropped
        // command leaves the channel untouched and its retransmission can still be served.
        // A reliable transport never retransmits: there the command is opened (authenticated)
        // anyway and refused with a busy control message, so that the caller fails fast
        // instead of waiting for its request timeout.
        let reliable = self.reliable;
        let mut busy = false;
        let permit = if command {
            if self.closing.load(Ordering::Acquire) {
                return None;
            }
            match self.handlers.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) if reliable => {
                    busy = true;
                    None
                }
                Err(_) => {
                    Counters::inc(&c.commands_dropped_busy);
                    return None;
                }
            }
        } else {
            None
        };
        let Some(p) = st.peers.get_mut(&peer_id) else {
            {
                Counters::inc(&c.frames_rejected_unknown_session);
                return None;
            }
        };
        // Answers go to the address the session is registered at, never to a frame's source
        // address: a replayed or raced copy with a spoofed source cannot redirect (and, with
        // a response larger than its command, amplify) traffic towards a third party.
        // Insecure mode authenticates nothing, so the frame's source is as good as any claim:
        // follow it (a restarted insecure peer may come back on another port).
        if matches!(key, ChanKey::Insecure(_)) {
            p.addr = from;
        }
        let peer_addr = p.addr;
        let Some(ch) = p.chans.iter_mut().find(|ch| ch.key() == key) else {
            {
                Counters::inc(&c.frames_rejected_unknown_session);
                return None;
            }
        };
        let seq = header.seq();
        let mut result = ch.channel.open(frame.clone(), t);
        if let (Err(Error::DuplicateCommand { .. }), ChanKey::Insecure(_), true) =
            (&result, key, reliable)
        {
            // Insecure mode over a reliable transport: a repeated sequence number means the
            // peer restarted (it has no session id to tell us). Start a fresh channel.
            if let Ok(fresh) = Channel::insecure(self.local_id, peer_id, self.chan_cfg.clone(), t) {
                let old = std::mem::replace(ch, Chan::new(fresh, None));
                old.fail_all(peer_id);
                result = ch.channel.open(frame, t);
            }
        }
        match result {
            Ok(Incoming::Command { seq, payload }) => {
                ch.confirmed = true;
                ch.msg3 = None;
                if let Some(permit) = permit {
                    Counters::inc(&c.commands_received);
                    let peer = PeerAddr {
                        id: peer_id,
                        addr: peer_addr,
                    };
                    let to = (peer, key, ch.generation);
                    return Some(IncomingCommand {
                        request: payload.freeze(),
                        responder: CommandResponder::new(self.clone(), to, seq, permit),
                    });
                } else if busy {
                    Counters::inc(&c.commands_dropped_busy);
                    let session_id = match key {
                        ChanKey::Secure(sid) => sid,
                        ChanKey::Insecure(_) => SessionId([0; 8]),
                    };
                    // To the session's address, like a response (never the frame's source).
                    let msg = Control::Busy { session_id, seq };
                    self.reply_control(st, peer_addr, msg);
                }
            }
            Ok(Incoming::Response { seq, payload }) => {
                ch.confirmed = true;
                ch.msg3 = None;
                if let Some(w) = ch.waiters.remove(&seq) {
                    let _ = w.send(Ok(payload.freeze()));
                }
            }
            Err(Error::DuplicateCommand { .. }) => {
                Counters::inc(&c.frames_rejected_replay);
                // A retransmission: resend the response sealed the first time, never seal a
                // second one (the channel refuses to anyway).
                if let Some((_, f)) = ch.cache.iter().find(|(s, _)| *s == seq) {
                    Counters::inc(&c.responses_resent);
                    self.send_detached(peer_addr, vec![f.clone()]);
                }
            }
            Err(e) => {
                tracing::trace!(%from, error = %e, "frame refused");
                self.reject(&e);
            }
        }
        None
    }

    /// Hands a command to the handler's fast path, or runs [`Handler::handle`] for it on a
    /// task of its own and sends the response sealed on the command's channel.
    fn deliver(self: &Arc<Self>, cmd: IncomingCommand) {
        let Err(cmd) = self.handler.try_dispatch(cmd) else {
            return;
        };
        let (from, request, responder) = cmd.into_parts();
        let handler = self.handler.clone();
        let span = tracing::debug_span!("handle", peer = %from.id.short(), seq = responder.seq);
        tokio::spawn(
            async move {
                let response = handler.handle(from, request).await;
                responder.respond_async(response).await;
            }
            .instrument(span),
        );
    }

    fn on_control(self: &Arc<Self>, from: SocketAddr, frame: &[u8]) {
        let c = &self.counters;
        let Some(msg) = Control::decode(frame) else {
            return Counters::inc(&c.frames_rejected_malformed);
        };
        let mut st = self.lock();
        let st = &mut *st;
        match msg {
            Control::Identify { token } => {
                let public = self.identity.public();
                self.reply_control(st, from, Control::Identity { token, public });
            }
            Control::Identity { token, public } => {
                if st.identifies.get(&token).is_some_and(|(a, _)| *a == from) {
                    if let Some((_, tx)) = st.identifies.remove(&token) {
                        let _ = tx.send(public);
                    }
                } else {
                    return Counters::inc(&c.frames_rejected_other);
                }
            }
            Control::IdentityMismatch { nonce, public } => {
                let Some(h) = st.handshakes.get(&nonce) else {
                    return Counters::inc(&c.frames_rejected_other);
                };
                if h.peer.addr != from {
                    return Counters::inc(&c.frames_rejected_other);
                }
                let found = public.node_id(&self.network);
                if found == h.peer.id {
                    // It claims to be who we asked for, yet refused: not a mismatch.
                    return Counters::inc(&c.frames_rejected_other);
                }
                Counters::inc(&c.handshakes_failed_identity);
                self.fail_handshake(st, nonce, |peer| Error::IdentityMismatch {
                    addr: peer.addr,
                    expected: peer.id,
                    found,
                });
            }
            Control::ModeMismatch { reference, seq } => match self.cfg.mode {
                Mode::Secure => {
                    if st
                        .handshakes
                        .get(&reference)
                        .is_none_or(|h| h.peer.addr != from)
                    {
                        return Counters::inc(&c.frames_rejected_other);
                    }
                    Counters::inc(&c.handshakes_failed_mode);
                    self.fail_handshake(st, reference, |peer| Error::ModeMismatch {
                        addr: peer.addr,
                        ours: Mode::Secure,
                    });
                }
                Mode::Insecure => {
                    if reference != *self.local_id.as_bytes() {
                        return Counters::inc(&c.frames_rejected_other);
                    }
                    let waiter = st
                        .peers
                        .values_mut()
                        .filter(|p| p.addr == from)
                        .flat_map(|p| p.chans.iter_mut())
                        .find_map(|ch| ch.waiters.remove(&seq));
                    match waiter {
                        Some(w) => {
                            let _ = w.send(Err(Error::ModeMismatch {
                                addr: from,
                                ours: Mode::Insecure,
                            }));
                        }
                        None => return Counters::inc(&c.frames_rejected_other),
                    }
                }
            },
            Control::Busy { session_id, seq } => {
                // Believed only from the address of the session's peer, for a request of ours
                // still waiting: at worst a forgery fails that one request early.
                let peer_id = match self.cfg.mode {
                    Mode::Secure => st.by_session.get(&session_id).copied(),
                    Mode::Insecure if session_id.0 == [0; 8] => st
                        .peers
                        .iter()
                        .find(|(_, p)| {
                            p.addr == from && p.chans.iter().any(|ch| ch.waiters.contains_key(&seq))
                        })
                        .map(|(id, _)| *id),
                    Mode::Insecure => None,
                };
                let key = match self.cfg.mode {
                    Mode::Secure => ChanKey::Secure(session_id),
                    Mode::Insecure => match peer_id {
                        Some(id) => ChanKey::Insecure(id),
                        None => return Counters::inc(&c.frames_rejected_other),
                    },
                };
                let Some((peer_id, p)) = peer_id.and_then(|id| Some((id, st.peers.get_mut(&id)?)))
                else {
                    return Counters::inc(&c.frames_rejected_other);
                };
                if p.addr != from {
                    return Counters::inc(&c.frames_rejected_other);
                }
                let Some(ch) = p.chans.iter_mut().find(|ch| ch.key() == key) else {
                    return Counters::inc(&c.frames_rejected_other);
                };
                let Some(w) = ch.waiters.remove(&seq) else {
                    return Counters::inc(&c.frames_rejected_other);
                };
                ch.channel.cancel(seq);
                Counters::inc(&c.requests_refused_busy);
                let _ = w.send(Err(Error::PeerBusy {
                    peer: peer_id,
                    addr: from,
                }));
            }
            Control::UnknownSession { session_id, .. } => {
                let Some(&peer_id) = st.by_session.get(&session_id) else {
                    return Counters::inc(&c.frames_rejected_other);
                };
                let Some(p) = st.peers.get_mut(&peer_id) else {
                    return Counters::inc(&c.frames_rejected_other);
                };
                // Only the session's own peer address is believed, and only for a session the
                // peer has answered on (an unconfirmed one may simply miss message 3, which we
                // re-send with each retransmission).
                let confirmed = p
                    .chans
                    .iter()
                    .any(|ch| ch.key() == ChanKey::Secure(session_id) && ch.confirmed);
                if p.addr != from || !confirmed {
                    return Counters::inc(&c.frames_rejected_other);
                }
                if let Some(i) = p
                    .chans
                    .iter()
                    .position(|ch| ch.key() == ChanKey::Secure(session_id))
                {
                    let ch = p.chans.remove(i);
                    ch.fail_all(peer_id);
                }
                st.by_session.remove(&session_id);
                Counters::inc(&c.sessions_dropped);
                tracing::debug!(peer = %peer_id.short(), "peer lost our session");
            }
        }
        Counters::inc(&c.control_received);
    }
}

impl Chan {
    fn new(channel: Channel, msg3: Option<Bytes>) -> Self {
        static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);
        Self {
            channel,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            waiters: HashMap::new(),
            cache: VecDeque::new(),
            msg3,
            confirmed: false,
        }
    }

    fn key(&self) -> ChanKey {
        match self.channel.session_id() {
            Some(sid) => ChanKey::Secure(sid),
            None => ChanKey::Insecure(*self.channel.peer_id()),
        }
    }

    /// Fails every request waiting on this channel with [`Error::SessionLost`].
    fn fail_all(self, peer: NodeId) {
        for (_, w) in self.waiters {
            let _ = w.send(Err(Error::SessionLost { peer }));
        }
    }
}

impl Error {
    /// A copy of an install error for each handshake waiter (errors are not `Clone`).
    fn clone_lite(&self, peer: PeerAddr) -> Error {
        match self {
            Error::TooManySessions { peer, limit } => Error::TooManySessions {
                peer: *peer,
                limit: *limit,
            },
            _ => Error::SessionLost { peer: peer.id },
        }
    }
}

impl State {
    fn clear_handshake(&mut self, peer: NodeId, nonce: [u8; 32]) {
        if let Some(p) = self.peers.get_mut(&peer)
            && p.handshake == Some(nonce)
        {
            p.handshake = None;
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn chan_mut(&mut self, peer: NodeId, key: ChanKey) -> Option<&mut Chan> {
        self.peers
            .get_mut(&peer)?
            .chans
            .iter_mut()
            .find(|c| c.key() == key)
    }

    /// The very channel `(key, generation)`, not a successor that took over its key.
    fn chan_gen_mut(&mut self, peer: NodeId, key: ChanKey, generation: u64) -> Option<&mut Chan> {
        self.chan_mut(peer, key)
            .filter(|c| c.generation == generation)
    }

    /// The peer's entry, created if missing (evicting the least recently used idle peer when
    /// `max_sessions` are taken).
    fn peer_entry(&mut self, inner: &Inner, peer: PeerAddr) -> Result<&mut PeerState, Error> {
        let t = self.next_tick();
        if !self.peers.contains_key(&peer.id) {
            if self.peers.len() >= inner.cfg.max_sessions {
                let victim = self
                    .peers
                    .iter()
                    .filter(|(_, p)| {
                        p.handshake.is_none() && p.chans.iter().all(|c| c.waiters.is_empty())
                    })
                    .min_by_key(|(_, p)| p.last_used)
                    .map(|(id, _)| *id);
                let Some(victim) = victim else {
                    return Err(Error::TooManySessions {
                        peer: peer.id,
                        limit: inner.cfg.max_sessions,
                    });
                };
                if let Some(v) = self.peers.remove(&victim) {
                    for ch in v.chans {
                        if let ChanKey::Secure(sid) = ch.key() {
                            self.by_session.remove(&sid);
                        }
                    }
                    Counters::inc(&inner.counters.sessions_dropped);
                }
            }
            self.peers.insert(
                peer.id,
                PeerState {
                    addr: peer.addr,
                    chans: Vec::new(),
                    handshake: None,
                    per_peer: Arc::new(Semaphore::new(inner.cfg.max_in_flight_per_peer)),
                    last_used: t,
                },
            );
        }
        let p = self
            .peers
            .get_mut(&peer.id)
            .ok_or(Error::SessionLost { peer: peer.id })?;
        p.last_used = t;
        Ok(p)
    }

    /// Starts a handshake with `peer` and spawns its driver; returns its nonce.
    fn start_handshake(
        &mut self,
        inner: &Arc<Inner>,
        peer: PeerAddr,
        t: Instant,
    ) -> Result<[u8; 32], Error> {
        let mut hs_cfg = inner.cfg.handshake.clone();
        hs_cfg.initiator_timeout = inner.cfg.handshake_timeout;
        // paper §5.1.1 message 1: A → B: g^a, N_A, PK_A, B, net_id, Sig_A.
        let (initiator, msg1) = Initiator::start_with_rng(
            inner.identity.clone(),
            inner.network.clone(),
            peer.id,
            &hs_cfg,
            t,
            &mut *self.rng,
        )
        .map_err(|source| Error::Handshake {
            peer: peer.id,
            source,
        })?;
        let nonce = *initiator.nonce();
        let (done_tx, done_rx) = oneshot::channel();
        self.handshakes.insert(
            nonce,
            PendingHandshake {
                peer,
                initiator,
                waiters: Vec::new(),
                done: Some(done_tx),
            },
        );
        if let Some(p) = self.peers.get_mut(&peer.id) {
            p.handshake = Some(nonce);
        }
        let me = inner.clone();
        let span = tracing::debug_span!("handshake", peer = %peer.id.short(), addr = %peer.addr);
        tokio::spawn(
            me.drive_handshake(peer, nonce, Bytes::from(msg1), done_rx)
                .instrument(span),
        );
        Ok(nonce)
    }

    /// Installs a new session as the peer's current one; the previous one is kept to drain.
    fn install(
        &mut self,
        inner: &Inner,
        peer: PeerAddr,
        session: Session,
        msg3: Option<Bytes>,
    ) -> Result<(), Error> {
        let sid = session.session_id;
        let channel = Channel::secure(session, inner.chan_cfg.clone())?;
        let p = self.peer_entry(inner, peer)?;
        p.addr = peer.addr;
        p.chans.push(Chan::new(channel, msg3));
        let old = if p.chans.len() > 2 {
            Some(p.chans.remove(0))
        } else {
            None
        };
        self.by_session.insert(sid, peer.id);
        if let Some(old) = old {
            if let ChanKey::Secure(s) = old.key() {
                self.by_session.remove(&s);
            }
            old.fail_all(peer.id);
        }
        tracing::debug!(peer = %peer.id.short(), session = %sid, "session established");
        Ok(())
    }
}

async fn recv_loop(inner: Arc<Inner>) {
    // Made once, not per frame: each `cancelled()` registers with the token's waiter list.
    let cancelled = inner.cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let r = tokio::select! {
            () = &mut cancelled => break,
            r = inner.transport.recv() => r,
        };
        match r {
            Ok((from, frame)) => inner.dispatch(from, frame),
            Err(TransportError::Closed) => break,
            Err(e) => tracing::debug!(error = %e, "receive failed"),
        }
    }
    inner.stopped.store(true, Ordering::Release);
    // Fail whatever still waits.
    let mut st = inner.lock();
    st.handshakes.clear();
    st.identifies.clear();
    for p in st.peers.values_mut() {
        for ch in &mut p.chans {
            ch.waiters.clear();
        }
    }
}
