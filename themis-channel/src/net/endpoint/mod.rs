//! The endpoint: the tokio driver of the sans-I/O endpoint core (`crate::proto::endpoint`) over
//! a [`Transport`].
//!
//! One task owns the core (`driver.rs`, in the shape of the DHT's driver task): it reads frames
//! from the transport, takes requests and answers from the handles, runs the core's timers,
//! and carries out what the core asks for: frames to send (in order per destination, see
//! `outbox.rs`), outcomes to hand to the waiting callers, commands to hand to the
//! application's [`Handler`]. No protocol state lives here.
//!
//! A command goes first to the application's [`Handler::try_dispatch`] (the fast path: the
//! application queues it with its [`CommandResponder`] and answers later, with no task
//! spawned); if the handler gives it back, [`Handler::handle`] runs on a spawned task.

mod driver;
mod outbox;
mod registry;

use std::net::SocketAddr;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use themis_crypto::{IdentityKeypair, NetworkId, NodeId, PublicKey};
use themis_handshake::{OsRandom, RandomSource};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

pub use crate::proto::endpoint::{EndpointConfig, EndpointMetrics, PeerAddr};
pub use registry::HandlerRegistry;

use self::driver::{Command, Ctl, Driver};
use crate::proto::endpoint::{CommandToken, EndpointCore, TransportInfo};
use crate::{Error, Mode, TcpConfig, TcpTransport, Transport, UdpConfig, UdpTransport};

/// Requests (and identify calls) queued for the driver task before `request` waits for room.
const COMMAND_QUEUE: usize = 1024;

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

    /// The fast path, tried first for every command: called on the endpoint's task, so it must
    /// not block. Take the command (`Ok`: queue it, typically to the task that owns the
    /// application's state, which answers with [`CommandResponder::respond`]) or give it back
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
    pub(crate) request: Bytes,
    pub(crate) responder: CommandResponder,
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

/// Answers one incoming command: the endpoint seals the response on the channel the command
/// came in on and queues it on the transport; `respond` itself never waits.
///
/// It holds one of the endpoint's `max_handlers` slots until it answers or is dropped, and
/// graceful shutdown waits (at most `shutdown_timeout`) for it. Dropping it unanswered sends
/// nothing: the caller's request times out (or, over UDP, its retransmission finds no cached
/// answer and is refused as a replay), so answer every command, a refusal if need be.
pub struct CommandResponder {
    peer: PeerAddr,
    token: CommandToken,
    /// To the driver task. Unbounded, yet bounded by construction: each responder sends one
    /// message, and at most `max_handlers` exist.
    ctl: mpsc::UnboundedSender<Ctl>,
    answered: bool,
}

impl std::fmt::Debug for CommandResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandResponder")
            .field("peer", &self.peer)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Drop for CommandResponder {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.ctl.send(Ctl::Abandon(self.token));
        }
    }
}

impl CommandResponder {
    /// The peer the response goes to.
    pub fn peer(&self) -> PeerAddr {
        self.peer
    }

    /// Seals `response` and queues it for the peer, without waiting. If the command's channel
    /// is gone meanwhile (replaced or dropped), nothing is sent.
    pub fn respond(mut self, response: Bytes) {
        self.answered = true;
        let _ = self.ctl.send(Ctl::Respond(self.token, response));
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
/// The driver task stops when the last handle is dropped or [`Endpoint::shutdown`] runs.
#[derive(Clone)]
pub struct Endpoint {
    shared: Arc<Shared>,
    _guard: Arc<DropGuard>,
}

/// What the handles share with the driver task.
pub(crate) struct Shared {
    local_id: NodeId,
    mode: Mode,
    config: EndpointConfig,
    transport: Arc<dyn Transport>,
    commands: mpsc::Sender<Command>,
    ctl: mpsc::UnboundedSender<Ctl>,
    /// The core's counters as of the driver's last step (published before any frame or
    /// outcome of that step leaves the task).
    snapshot: Mutex<EndpointMetrics>,
    closing: AtomicBool,
    next_ticket: AtomicU64,
    cancel: CancellationToken,
}

impl Shared {
    pub(crate) fn publish(&self, metrics: EndpointMetrics) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = metrics;
    }

    fn snapshot(&self) -> EndpointMetrics {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_id", &self.shared.local_id)
            .field("local_addr", &self.shared.transport.local_addr())
            .field("mode", &self.shared.mode)
            .finish_non_exhaustive()
    }
}

/// The handshake's randomness: the operating system's, or (feature `testing`) a seeded stream.
fn random_sources(config: &EndpointConfig) -> (Box<dyn RandomSource>, Box<dyn RandomSource>) {
    #[cfg(feature = "testing")]
    if let Some(seed) = config.rng_seed {
        return (
            Box::new(themis_handshake::SeededRandom::from_u64(seed)),
            Box::new(themis_handshake::SeededRandom::from_u64(seed ^ 0x5245_5350)),
        );
    }
    let _ = config;
    (Box::new(OsRandom), Box::new(OsRandom))
}

/// Forgets a request in the driver if its caller stops waiting before the outcome.
struct CancelOnDrop<'a> {
    ctl: &'a mpsc::UnboundedSender<Ctl>,
    ticket: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.ctl.send(Ctl::Cancel(self.ticket));
        }
    }
}

impl Endpoint {
    /// An endpoint on `transport` for `identity` on `network`, answering commands with
    /// `handler`. Must be called inside a tokio runtime: it spawns the driver task there.
    pub fn new(
        transport: Arc<dyn Transport>,
        identity: Arc<IdentityKeypair>,
        network: NetworkId,
        config: EndpointConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let info = TransportInfo {
            reliable: transport.is_reliable(),
            max_frame_len: transport.max_frame_len(),
        };
        let rngs = random_sources(&config);
        let core = EndpointCore::new(identity, network, config.clone(), info, rngs)?;
        let local_id = core.local_id();
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            local_id,
            mode: config.mode,
            snapshot: Mutex::new(core.metrics()),
            config,
            transport,
            commands,
            ctl,
            closing: AtomicBool::new(false),
            next_ticket: AtomicU64::new(1),
            cancel: cancel.clone(),
        });
        let driver = Driver::new(core, shared.clone(), handler, commands_rx, ctl_rx);
        let span = tracing::debug_span!("endpoint", id = %local_id.short());
        rt.spawn(driver.run().instrument(span));
        Ok(Self {
            shared,
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
        self.shared.local_id
    }

    /// The address peers reach this endpoint at.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.transport.local_addr()
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
        self.shared.snapshot().sessions as usize
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> EndpointMetrics {
        let mut m = self.shared.snapshot();
        m.transport = self.shared.transport.stats();
        m
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
        let s = &self.shared;
        if s.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        if peer.id == s.local_id {
            return Err(Error::SelfRequest(peer.id));
        }
        let timeout = Error::RequestTimeout {
            peer: peer.id,
            addr: peer.addr,
            after: s.config.request_timeout,
        };
        let (tx, rx) = oneshot::channel();
        let ticket = s.next_ticket.fetch_add(1, Ordering::Relaxed);
        let command = Command::Request {
            peer: *peer,
            payload,
            reply: tx,
            ticket,
        };
        self.submit(command, s.config.request_timeout, rx, ticket, timeout)
            .await
    }

    /// Asks the node at `addr` for its public key and returns `(h(key, net_id), key)`, for
    /// bootstrapping from a bare address.
    ///
    /// The answer is unauthenticated: it only says which key the node *claims*. Use the id
    /// with [`Endpoint::request`]: its handshake then proves the node holds that key (message
    /// 2's signature), and fails if it does not. Fails after `handshake_timeout`.
    pub async fn identify(&self, addr: SocketAddr) -> Result<(NodeId, PublicKey), Error> {
        let s = &self.shared;
        let timeout = Error::HandshakeTimeout {
            peer: NodeId::from_bytes([0; 32]),
            addr,
            after: s.config.handshake_timeout,
        };
        let (tx, rx) = oneshot::channel();
        let ticket = s.next_ticket.fetch_add(1, Ordering::Relaxed);
        let command = Command::Identify {
            addr,
            reply: tx,
            ticket,
        };
        self.submit(command, s.config.handshake_timeout, rx, ticket, timeout)
            .await
    }

    /// Hands `command` to the driver (waiting at most `limit` for room) and waits for its
    /// outcome; cancels it if the caller stops waiting.
    async fn submit<T>(
        &self,
        command: Command,
        limit: Duration,
        rx: oneshot::Receiver<Result<T, Error>>,
        ticket: u64,
        timeout: Error,
    ) -> Result<T, Error> {
        let s = &self.shared;
        match tokio::time::timeout(limit, s.commands.send(command)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Error::ShuttingDown),
            // The driver's queue stayed full (extreme backpressure): the caller's time is up.
            Err(_) => return Err(timeout),
        }
        let mut guard = CancelOnDrop {
            ctl: &s.ctl,
            ticket,
            armed: true,
        };
        let r = rx.await;
        guard.armed = false;
        // The driver stopped without an outcome: the endpoint is gone.
        r.unwrap_or(Err(Error::ShuttingDown))
    }

    /// Graceful shutdown: refuses new requests and incoming commands, waits (at most
    /// `shutdown_timeout`) for the requests in flight and the running handlers to finish,
    /// then stops the driver task and closes the transport (whose `close` is bounded too:
    /// TCP waits at most twice its `close_timeout`). Idempotent.
    pub async fn shutdown(&self) {
        let s = &self.shared;
        s.closing.store(true, Ordering::Release);
        let _ = s.ctl.send(Ctl::Close);
        let deadline = tokio::time::Instant::now() + s.config.shutdown_timeout;
        while tokio::time::Instant::now() < deadline && !s.cancel.is_cancelled() {
            let m = s.snapshot();
            if m.in_flight == 0 && m.handlers_running == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        s.cancel.cancel();
        s.transport.close().await;
    }
}

impl CommandResponder {
    pub(crate) fn new(
        peer: PeerAddr,
        token: CommandToken,
        ctl: mpsc::UnboundedSender<Ctl>,
    ) -> Self {
        Self {
            peer,
            token,
            ctl,
            answered: false,
        }
    }
}
