//! The endpoint's protocol logic as a sans-I/O state machine ([`EndpointCore`]): sessions by
//! node id, the handshakes it runs and answers, message 3 travelling with commands until the
//! peer answers, the response cache, the control messages, retransmission deadlines and restart
//! detection (PROTOCOL.md §5.2).
//!
//! Driven like quinn-proto's `Endpoint`: every input takes `now` — frames
//! ([`EndpointCore::handle`]), commands ([`EndpointCore::request`],
//! [`EndpointCore::identify`], [`EndpointCore::respond`], ...) and timeouts
//! ([`EndpointCore::handle_timeout`] at [`EndpointCore::poll_timeout`]); the outputs are frames
//! to send ([`EndpointCore::poll_transmit`]) and events ([`EndpointCore::poll_event`]): the
//! outcome of each request and identify call (exactly one per id, unless cancelled), and the
//! incoming commands, each with a token to answer through. Randomness comes in through the
//! handshake's `RandomSource`. No sockets, no clock, no tasks: `crate::Endpoint` is the tokio
//! driver.
//!
//! Every table is bounded: peers by `max_sessions`, our requests by `max_in_flight` (plus as
//! many waiting for a slot, see [`EndpointCore::can_accept_request`]), incoming commands by
//! `max_handlers`, identify calls by [`MAX_IDENTIFIES`], the responder's pending handshakes by
//! its `pending_capacity`, our own handshakes by one per peer.

mod cache;
mod config;
mod control;
mod cookie;
mod handshakes;
mod identify;
mod incoming;
mod metrics;
mod requests;
mod restart;
mod sessions;
mod timers;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use themis_crypto::{IdentityKeypair, NetworkId, NodeId, PublicKey};
use themis_handshake::{HandshakeConfig, RandomSource, Responder};

pub use config::EndpointConfig;
pub(crate) use control::fuzz_control;
pub use metrics::EndpointMetrics;

use self::cookie::{CookieJar, PendingBySource};
use self::handshakes::PendingHandshake;
use self::identify::Identifies;
use self::incoming::PendingCommand;
use self::metrics::Counters;
use self::requests::Requests;
use self::sessions::Sessions;
use self::timers::{TimerKey, Timers};
use crate::wire::{CONTROL_TYPE_RANGE, HANDSHAKE_TYPES};
use crate::{ChannelConfig, Error, Mode, TokenBucket};

/// Most `identify` calls waiting at once.
pub(crate) const MAX_IDENTIFIES: usize = 1024;

/// A peer as the endpoint knows it: its self-certifying id and the address it listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    /// The node id (`h(PK, net_id)`); a secure request checks the peer's key against it.
    pub id: NodeId,
    /// The address the peer listens on.
    pub addr: SocketAddr,
}

/// A request or identify call of one [`EndpointCore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RequestId(pub(crate) u64);

/// An incoming command waiting for its answer ([`EndpointCore::respond`]) or to be given up
/// ([`EndpointCore::abandon`]). Each holds one of the `max_handlers` slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CommandToken(pub(crate) u64);

/// A frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transmit {
    /// The peer's listening address.
    pub(crate) to: SocketAddr,
    /// The whole frame.
    pub(crate) frame: Bytes,
}

/// What the core tells its driver.
#[derive(Debug)]
pub(crate) enum Event {
    /// The outcome of request `id`: its response or why it failed.
    Response {
        /// The request.
        id: RequestId,
        /// Its response, or why there is none.
        result: Result<Bytes, Error>,
    },
    /// The outcome of identify call `id`: `(h(key, net_id), key)` as the node claims it.
    Identity {
        /// The call.
        id: RequestId,
        /// The claimed identity, or why there is none.
        result: Result<(NodeId, PublicKey), Error>,
    },
    /// An authentic, fresh command: answer it with [`EndpointCore::respond`] (or give it up
    /// with [`EndpointCore::abandon`]) using `token`.
    Command {
        /// Where the answer goes.
        token: CommandToken,
        /// The sender: authenticated in secure mode, a claim in insecure mode.
        from: PeerAddr,
        /// The command payload.
        request: Bytes,
    },
}

/// What the transport under the endpoint is like.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransportInfo {
    /// Frames arrive once and in order (TCP): no retransmission, busy answers instead of drops.
    pub(crate) reliable: bool,
    /// The largest frame it carries; the channel's limit is lowered to it.
    pub(crate) max_frame_len: usize,
}

/// The endpoint's protocol state: see the module documentation.
pub(crate) struct EndpointCore {
    identity: Arc<IdentityKeypair>,
    network: NetworkId,
    local_id: NodeId,
    cfg: EndpointConfig,
    chan_cfg: ChannelConfig,
    hs_cfg: HandshakeConfig,
    reliable: bool,
    /// Draws our handshakes' ephemeral secrets and nonces, and identify tokens.
    rng: Box<dyn RandomSource>,
    /// Answers handshakes (secure mode only).
    responder: Option<Responder>,
    sessions: Sessions,
    /// Our handshakes in progress, by nonce `N_A`.
    handshakes: HashMap<[u8; 32], PendingHandshake>,
    requests: Requests,
    identifies: Identifies,
    /// Incoming commands handed out and not answered yet.
    commands: HashMap<CommandToken, PendingCommand>,
    /// Limits unauthenticated replies (control messages).
    control_rate: TokenBucket,
    /// The secrets of the cookies we hand out under load.
    cookies: CookieJar,
    /// The responder's pending handshakes by source prefix (`pending_per_source`).
    pending_src: PendingBySource,
    /// The transport said its connection slots are near their limits (set by the driver
    /// before each frame): message 1 needs a cookie.
    transport_loaded: bool,
    timers: Timers,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
    next_id: u64,
    next_token: u64,
    closing: bool,
}

impl std::fmt::Debug for EndpointCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointCore")
            .field("local_id", &self.local_id)
            .field("mode", &self.cfg.mode)
            .field("peers", &self.sessions.peers.len())
            .field("requests", &self.requests.map.len())
            .finish_non_exhaustive()
    }
}

impl EndpointCore {
    /// A core for `identity` on `network` over a transport like `transport`. `rng` draws our
    /// handshakes' secrets and nonces and the identify tokens; `responder_rng` the responder's
    /// secrets (both `OsRandom` in production).
    pub(crate) fn new(
        identity: Arc<IdentityKeypair>,
        network: NetworkId,
        config: EndpointConfig,
        transport: TransportInfo,
        (rng, responder_rng): (Box<dyn RandomSource>, Box<dyn RandomSource>),
    ) -> Result<Self, Error> {
        config.validate()?;
        let mut chan_cfg = config.channel.clone();
        chan_cfg.max_frame_len = chan_cfg.max_frame_len.min(transport.max_frame_len);
        chan_cfg.validate()?;
        let mut hs_cfg = config.handshake.clone();
        hs_cfg.initiator_timeout = config.handshake_timeout;
        let local_id = identity.node_id(&network);
        let responder = (config.mode == Mode::Secure).then(|| {
            Responder::with_rng(
                identity.clone(),
                network.clone(),
                hs_cfg.clone(),
                responder_rng,
            )
        });
        Ok(Self {
            identity,
            network,
            local_id,
            chan_cfg,
            hs_cfg,
            reliable: transport.reliable,
            rng,
            responder,
            sessions: Sessions::new(config.max_sessions),
            handshakes: HashMap::new(),
            requests: Requests::default(),
            identifies: Identifies::default(),
            commands: HashMap::new(),
            control_rate: TokenBucket::new(config.control_rate.0, config.control_rate.1),
            cookies: CookieJar::new(),
            pending_src: PendingBySource::new(config.pending_per_source),
            transport_loaded: false,
            timers: Timers::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            next_id: 1,
            next_token: 1,
            closing: false,
            cfg: config,
        })
    }

    /// This node's id on its network.
    pub(crate) fn local_id(&self) -> NodeId {
        self.local_id
    }

    /// Routes one frame from the peer listening at `from` (paper Fig. 2 and 3; PROTOCOL.md
    /// §5.2, "Frame routing").
    pub(crate) fn handle(&mut self, now: Instant, from: SocketAddr, frame: BytesMut) {
        self.counters.bytes_in += frame.len() as u64;
        let ty = frame.get(1).copied().unwrap_or(0);
        if HANDSHAKE_TYPES.contains(&ty) {
            self.on_handshake(now, from, &frame);
        } else if crate::FrameKind::from_type_byte(ty).is_some() {
            self.on_channel(now, from, frame);
        } else if CONTROL_TYPE_RANGE.contains(&ty) {
            self.on_control(now, from, &frame);
        } else {
            self.counters.frames_rejected_malformed += 1;
        }
        self.pump(now);
    }

    /// Whether the transport's connection slots are near their limits (PROTOCOL.md §5.2,
    /// "Cookies"): while they are, a message 1 is answered with a cookie.
    pub(crate) fn set_transport_loaded(&mut self, loaded: bool) {
        self.transport_loaded = loaded;
    }

    /// The next frame to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`EndpointCore::handle_timeout`] should run next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let responder = self.responder.as_ref().and_then(Responder::poll_timeout);
        match (self.timers.next(), responder) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs every timer due at `now`: retransmissions, deadlines, expired responder handshakes.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some(r) = self.responder.as_mut() {
            r.handle_timeout(now);
        }
        self.pending_src.purge(now);
        while let Some(key) = self.timers.pop_due(now) {
            match key {
                TimerKey::Request(id) => self.on_request_timer(now, id),
                TimerKey::Handshake(nonce) => self.on_handshake_timer(now, nonce),
                TimerKey::Identify(id) => self.on_identify_timer(now, id),
                TimerKey::CacheSweep => self.sweep_response_caches(now),
            }
        }
        self.pump(now);
    }

    /// Refuses new requests, incoming commands and messages 1 from now on (graceful shutdown);
    /// what is in flight goes on.
    pub(crate) fn close(&mut self) {
        self.closing = true;
    }

    /// Ends everything at once (the driver stops): every request and identify call still
    /// waiting fails (a request whose command was sent with [`Error::SessionLost`], any other
    /// with [`Error::ShuttingDown`]); the commands handed out are forgotten.
    pub(crate) fn abort(&mut self) {
        self.closing = true;
        let ids: Vec<RequestId> = self.requests.map.keys().copied().collect();
        for id in ids {
            let err = match self.requests.map.get(&id) {
                Some(r) if r.is_sent() => Error::SessionLost { peer: r.peer.id },
                _ => Error::ShuttingDown,
            };
            self.finish(id, Err(err));
        }
        self.requests.queued.clear();
        for p in self.sessions.peers.values_mut() {
            p.queued.clear();
        }
        let calls: Vec<RequestId> = self.identifies.ids().collect();
        for id in calls {
            self.finish_identify(id, Err(Error::ShuttingDown));
        }
        for (nonce, _) in std::mem::take(&mut self.handshakes) {
            self.timers.clear(TimerKey::Handshake(nonce));
        }
        self.commands.clear();
    }

    /// A snapshot of the counters and gauges (the transport's and `bytes_out`, which the
    /// driver counts as frames leave, are the driver's to fill in).
    pub(crate) fn metrics(&self) -> EndpointMetrics {
        let mut m = self.counters.snapshot();
        m.handlers_running = self.commands.len() as u64;
        m.sessions = self.sessions.live() as u64;
        m.pending_handshakes = self
            .responder
            .as_ref()
            .map_or(0, |r| r.pending_len() as u64);
        m.pending_sources = self.pending_src.sources() as u64;
        m
    }

    fn next_request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        id
    }

    /// The retransmission schedule of a new exchange.
    fn backoff(&self) -> timers::Backoff {
        timers::Backoff::new(self.cfg.initial_rto, self.cfg.max_rto, self.reliable)
    }

    fn transmit(&mut self, to: SocketAddr, frame: Bytes) {
        self.transmits.push_back(Transmit { to, frame });
    }

    /// Counts a refused channel frame under its reason.
    fn reject(&mut self, e: &Error) {
        let c = &mut self.counters;
        let counter = match e {
            Error::AuthenticationFailed => &mut c.frames_rejected_auth,
            Error::DuplicateCommand { .. }
            | Error::CommandTooOld { .. }
            | Error::DuplicateResponse { .. } => &mut c.frames_rejected_replay,
            Error::UnknownSession { .. } | Error::WrongSender { .. } => {
                &mut c.frames_rejected_unknown_session
            }
            Error::WrongMode { .. } => &mut c.frames_rejected_mode,
            Error::FrameTooShort { .. }
            | Error::FrameTooLarge { .. }
            | Error::UnsupportedVersion { .. }
            | Error::UnknownFrameType { .. } => &mut c.frames_rejected_malformed,
            _ => &mut c.frames_rejected_other,
        };
        *counter += 1;
    }
}

impl Error {
    /// A copy of an install error for each request waiting on the handshake (errors are not
    /// `Clone`).
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
