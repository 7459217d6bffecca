//! Settings of an endpoint: its [`crate::Endpoint`] driver and the sans-I/O core under it.

use std::time::Duration;

use themis_handshake::HandshakeConfig;

use crate::{ChannelConfig, Error, Mode};

/// Largest accepted `max_in_flight` and `max_handlers` (tokio's semaphore limit, kept so that the
/// accepted configurations stay the same).
const MAX_PERMITS: usize = usize::MAX >> 3;

/// Default [`EndpointConfig::pending_per_source`].
pub(crate) const DEFAULT_PENDING_PER_SOURCE: usize = 1024;
/// Default [`EndpointConfig::cookie_threshold`].
pub(crate) const DEFAULT_COOKIE_THRESHOLD: usize = 512;

/// Settings of an [`Endpoint`](crate::Endpoint). Start from `EndpointConfig::default()` (or
/// [`EndpointConfig::insecure`]) and change fields; [`EndpointConfig::validate`] runs when the
/// endpoint is created.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// Secure (the default: handshake, then authenticated encryption) or insecure (plaintext
    /// frames, the benchmark baseline). Both peers must run the same mode.
    pub mode: Mode,
    /// Longest a handshake may take, message 1 to message 2 (default 5 s).
    pub handshake_timeout: Duration,
    /// Longest a request may take, handshake included (default 5 s).
    pub request_timeout: Duration,
    /// Requests awaiting a response per peer before `request` waits (default 256).
    pub max_in_flight_per_peer: usize,
    /// Requests awaiting a response in total before `request` waits (default 4096).
    pub max_in_flight: usize,
    /// Incoming commands being handled at once (default 1024). A command arriving beyond it is
    /// dropped before it is opened (so its retransmission can still be served) and counted.
    pub max_handlers: usize,
    /// Peers with a session (default 10,000). Beyond it the least recently used peer without
    /// requests in flight loses its session; if every peer is busy the new one is refused.
    pub max_sessions: usize,
    /// First retransmission timeout on unreliable transports (default 200 ms); doubles at each
    /// retransmission up to `max_rto`. Reliable transports never retransmit.
    pub initial_rto: Duration,
    /// Largest retransmission timeout (default 2 s).
    pub max_rto: Duration,
    /// Sealed responses kept per session to answer retransmitted commands on unreliable
    /// transports (default 256).
    pub response_cache: usize,
    /// How long a sealed response stays in that cache (default 30 s, six default request
    /// timeouts: a retransmission comes within its sender's request deadline). Older ones are
    /// dropped, also from sessions that have gone idle.
    pub response_cache_ttl: Duration,
    /// Unauthenticated replies (message 2 and control messages) per second, and their burst
    /// (default 1,000/s, burst 200): bounds what spoofed traffic can make us send.
    pub control_rate: (u32, u32),
    /// How long `shutdown` waits for in-flight requests and handlers (default 5 s).
    pub shutdown_timeout: Duration,
    /// Seed for the handshake's ephemeral keys and nonces (feature `testing` only): `None` (the
    /// default) uses the operating system's generator; `Some` makes simulations reproducible
    /// and must never be used in production (anyone knowing the seed knows the session keys).
    #[cfg(feature = "testing")]
    pub rng_seed: Option<u64>,
    /// Handshake limits (pending table, its TTL). `initiator_timeout` is replaced by
    /// `handshake_timeout`.
    pub handshake: HandshakeConfig,
    /// Most responder handshakes pending (between message 1 and message 3) from one source
    /// prefix: a /32 for IPv4, a /64 for IPv6 (default 1,024, a quarter of the default pending
    /// table). A message 1 beyond it is refused before its signature is checked. The global
    /// cap (`handshake.pending_capacity`) stays behind it.
    pub pending_per_source: usize,
    /// From this many pending responder handshakes on (default 512, an eighth of the default
    /// pending table), or while the transport reports its connection slots near their limits,
    /// a message 1 without a cookie is answered with a cookie reply instead of message 2
    /// (PROTOCOL.md §5.2, "Cookies"). 0 asks for a cookie on every message 1.
    pub cookie_threshold: usize,
    /// Channel limits. `max_frame_len` is lowered to the transport's limit.
    pub channel: ChannelConfig,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Secure,
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_in_flight_per_peer: 256,
            max_in_flight: 4096,
            max_handlers: 1024,
            max_sessions: 10_000,
            initial_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(2),
            response_cache: 256,
            response_cache_ttl: Duration::from_secs(30),
            control_rate: (1000, 200),
            shutdown_timeout: Duration::from_secs(5),
            #[cfg(feature = "testing")]
            rng_seed: None,
            handshake: HandshakeConfig::default(),
            pending_per_source: DEFAULT_PENDING_PER_SOURCE,
            cookie_threshold: DEFAULT_COOKIE_THRESHOLD,
            channel: ChannelConfig::default(),
        }
    }
}

impl EndpointConfig {
    /// The defaults in insecure mode.
    pub fn insecure() -> Self {
        Self {
            mode: Mode::Insecure,
            ..Self::default()
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |s: &str| Err(Error::InvalidConfig(format!("endpoint: {s}")));
        if self.handshake_timeout.is_zero() || self.request_timeout.is_zero() {
            return bad("handshake_timeout and request_timeout must be positive");
        }
        if self.max_in_flight_per_peer == 0 || self.max_in_flight == 0 || self.max_handlers == 0 {
            return bad(
                "max_in_flight_per_peer, max_in_flight and max_handlers must be at least 1",
            );
        }
        if self.max_in_flight > MAX_PERMITS || self.max_handlers > MAX_PERMITS {
            return bad("max_in_flight and max_handlers are too large");
        }
        if self.max_in_flight_per_peer > self.channel.max_outstanding {
            return bad("max_in_flight_per_peer must not exceed channel.max_outstanding");
        }
        if self.pending_per_source == 0 {
            return bad("pending_per_source must be at least 1");
        }
        if self.max_sessions == 0 {
            return bad("max_sessions must be at least 1");
        }
        if self.response_cache > 0 && self.response_cache_ttl.is_zero() {
            return bad("response_cache_ttl must be positive when response_cache is not 0");
        }
        if self.initial_rto.is_zero() || self.max_rto < self.initial_rto {
            return bad("need 0 < initial_rto <= max_rto");
        }
        self.channel.validate()
    }
}
