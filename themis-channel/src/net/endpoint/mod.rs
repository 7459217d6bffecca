//! The endpoint: the tokio driver of the sans-I/O endpoint core (`crate::proto::endpoint`) over
//! a [`Transport`].
//!
//! The core sits behind a lock held only while one of its methods runs (`driver.rs`), as
//! quinn holds `quinn_proto::Connection`: a request seals its command on the caller's task, a
//! frame is opened on the transport's reader task (through its sink) or on the receive task,
//! an answer is sealed on the responder's task, timeouts run on a timer task; the frames,
//! outcomes and commands a call produces are carried out once the lock is released. No
//! protocol rule lives here.
//!
//! Why not one task owning the core, in the shape of the DHT's driver? That was built and
//! measured first: it adds a task hop to every request (caller to task) and every answer
//! (handler to task). On the endpoint bench (`cargo bench -p themis-channel --bench endpoint`,
//! medians of three alternating runs on a shared 2-core machine), against the previous endpoint
//! and this one: UDP sequential 21.6 / 27.0 / 17.8 µs (insecure) and 21.9 / 40.1 / 18.4 µs
//! (secure); 64 in flight, TCP secure 151K / 118K / 166K requests/s, UDP secure 85K / 61K / 80K
//! requests/s. The lock keeps the previous endpoint's figures; the task lost 20-30 %.
//!
//! A command goes first to the application's [`Handler::try_dispatch`] (the fast path: the
//! application queues it with its [`CommandResponder`] and answers later, with no task
//! spawned); if the handler gives it back, [`Handler::handle`] runs on a spawned task.

mod driver;
mod registry;

use std::net::SocketAddr;
use std::sync::{Arc, atomic::Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use themis_crypto::{IdentityKeypair, NetworkId, NodeId, PublicKey};
use themis_handshake::{OsRandom, RandomSource};
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

pub use crate::proto::endpoint::{EndpointConfig, EndpointMetrics, PeerAddr};
pub use registry::HandlerRegistry;

use self::driver::{Reply, Shared, now};
use crate::proto::endpoint::{CommandToken, EndpointCore, RequestId, TransportInfo};
use crate::{Error, TcpConfig, TcpTransport, Transport, UdpConfig, UdpTransport};

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

    /// The fast path, tried first for every command: called where the command was opened (the
    /// transport's reader task or the endpoint's receive task), so it must not block. Take the command (`Ok`: queue it, typically to the task that owns the
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

/// Answers one incoming command: seals the response on the channel the command came in on and
/// queues it on the transport, without waiting (a task sends it when the transport cannot take
/// it at once).
///
/// It holds one of the endpoint's `max_handlers` slots until it answers or is dropped, and
/// graceful shutdown waits (at most `shutdown_timeout`) for it. Dropping it unanswered sends
/// nothing: the caller's request times out (or, over UDP, its retransmission finds no cached
/// answer and is refused as a replay), so answer every command, a refusal if need be.
pub struct CommandResponder {
    shared: Arc<Shared>,
    peer: PeerAddr,
    token: CommandToken,
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
            let token = self.token;
            self.shared.with_core(|st| st.core.abandon(token));
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
        let token = self.token;
        self.shared
            .with_core(|st| st.core.respond(now(), token, &response));
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
/// The receive and timer tasks stop when the last handle is dropped or [`Endpoint::shutdown`]
/// runs.
#[derive(Clone)]
pub struct Endpoint {
    shared: Arc<Shared>,
    _guard: Arc<DropGuard>,
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

/// Forgets a request in the core if its caller stops waiting before the outcome.
struct CancelOnDrop<'a> {
    shared: &'a Arc<Shared>,
    id: RequestId,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let id = self.id;
            self.shared.with_core(|st| {
                st.waiters.remove(&id);
                st.core.cancel(now(), id);
            });
        }
    }
}

impl Endpoint {
    /// An endpoint on `transport` for `identity` on `network`, answering commands with
    /// `handler`. Must be called inside a tokio runtime: it spawns its tasks there.
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
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared::new(
            core,
            config,
            transport,
            handler,
            cancel.clone(),
        ));
        let span = tracing::debug_span!("endpoint", id = %shared.local_id.short());
        rt.spawn(driver::recv_loop(shared.clone()).instrument(span.clone()));
        rt.spawn(driver::timer_loop(shared.clone()).instrument(span));
        // Frames straight from the transport's readers where it can (TCP), saving a task
        // wake-up per frame; the receive task still serves what comes through `recv`.
        driver::install_sink(&shared);
        driver::install_refused_sink(&shared);
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
        self.shared.metrics().sessions as usize
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> EndpointMetrics {
        self.shared.metrics()
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
        let (mut payload, mut tx) = (Some(payload), Some(tx));
        let peer = *peer;
        let start = |st: &mut driver::State| {
            let (payload, tx) = (payload.take()?, tx.take()?);
            let id = st.core.request(now(), peer, payload);
            st.waiters.insert(id, Reply::Request(tx));
            Some(id)
        };
        self.submit(start, s.config.request_timeout, rx, timeout)
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
        let mut tx = Some(tx);
        let start = |st: &mut driver::State| {
            let tx = tx.take()?;
            let id = st.core.identify(now(), addr);
            st.waiters.insert(id, Reply::Identify(tx));
            Some(id)
        };
        self.submit(start, s.config.handshake_timeout, rx, timeout)
            .await
    }

    /// Starts a call with `start` once the core takes more requests (backpressure: it holds
    /// `max_in_flight` and as many waiting), waiting at most `limit` for that; then waits for
    /// its outcome, and cancels it if the caller stops waiting.
    async fn submit<T>(
        &self,
        mut start: impl FnMut(&mut driver::State) -> Option<RequestId>,
        limit: Duration,
        rx: oneshot::Receiver<Result<T, Error>>,
        timeout: Error,
    ) -> Result<T, Error> {
        let s = &self.shared;
        let deadline = tokio::time::Instant::now() + limit;
        let id = loop {
            let room = s.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let started = s.with_core(|st| {
                if st.core.can_accept_request() {
                    start(st)
                } else {
                    None
                }
            });
            if let Some(id) = started {
                break id;
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(timeout);
            }
        };
        let mut guard = CancelOnDrop {
            shared: s,
            id,
            armed: true,
        };
        let r = rx.await;
        guard.armed = false;
        // The endpoint stopped without an outcome for it.
        r.unwrap_or(Err(Error::ShuttingDown))
    }

    /// Graceful shutdown: refuses new requests and incoming commands, waits (at most
    /// `shutdown_timeout`) for the requests in flight and the running handlers to finish,
    /// then stops the receive task and closes the transport (whose `close` is bounded too:
    /// TCP waits at most twice its `close_timeout`). Idempotent.
    pub async fn shutdown(&self) {
        let s = &self.shared;
        s.closing.store(true, Ordering::Release);
        s.with_core(|st| st.core.close());
        let deadline = tokio::time::Instant::now() + s.config.shutdown_timeout;
        while tokio::time::Instant::now() < deadline {
            let m = s.metrics();
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
    pub(crate) fn new(shared: Arc<Shared>, peer: PeerAddr, token: CommandToken) -> Self {
        Self {
            shared,
            peer,
            token,
            answered: false,
        }
    }
}
