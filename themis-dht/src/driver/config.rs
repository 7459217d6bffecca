//! Settings of a [`DhtNode`](super::DhtNode).

use std::net::SocketAddr;
use std::time::Duration;

use themis_channel::EndpointConfig;

use crate::Config;

/// Settings of a [`DhtNode`](super::DhtNode): the core's [`Config`], the endpoint's settings
/// (used when the node creates its endpoint) and the driver's own bounds.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DriverConfig {
    /// The DHT core's settings.
    pub dht: Config,
    /// The endpoint's settings, used by [`DhtNode::bind_tcp`](super::DhtNode::bind_tcp),
    /// [`DhtNode::bind_udp`](super::DhtNode::bind_udp) and
    /// [`DhtNode::on_transport`](super::DhtNode::on_transport). Its `request_timeout` bounds how
    /// long one DHT request may take on the network; keep it at least `dht.request_timeout`.
    pub endpoint: EndpointConfig,
    /// Commands from the handles (find, register, ...) queued for the driver task before the
    /// callers wait (default 256).
    pub command_queue: usize,
    /// Incoming DHT requests queued for the driver task before the endpoint's handlers wait
    /// (default 1,024).
    pub inbox_len: usize,
    /// Incoming requests the core may hold unanswered at once (a join is answered after a
    /// lookup); beyond it new ones are refused as busy (default 4,096).
    pub max_unanswered: usize,
    /// Outgoing requests on the network at once; further ones wait in a queue, and those the
    /// core has already given up on are dropped from it (default 1,024).
    pub max_outbound: usize,
    /// Longest any [`DhtNode`](super::DhtNode) operation waits for its result (join, find,
    /// register, unregister, lookup_providers, leave, status, metrics, and the acknowledgement
    /// of shutdown), queueing for the driver included; beyond it the operation fails with
    /// [`Error::TimedOut`](crate::Error::TimedOut) (shutdown just returns). The core's own
    /// timeouts normally end every operation well before (default 60 s; 20 s in
    /// [`DriverConfig::fast`]).
    pub command_timeout: Duration,
    /// Seed of the core's timer jitter: `None` (the default) draws one from the operating
    /// system; `Some` makes a run reproducible.
    pub rng_seed: Option<u64>,
    /// The address other nodes reach this node at: it goes into this node's provider records
    /// and into the ring answers it gives (successor lists, finds). `None` (the default): the
    /// endpoint's bound address. Set it when the node listens on an unspecified address
    /// (`0.0.0.0`, `::`), which no other host can dial, or behind port forwarding. A port of 0
    /// means the bound port. [`DhtNode::start`](super::DhtNode::start) refuses to run with an
    /// unspecified address to advertise
    /// ([`Error::UnspecifiedAddress`](crate::Error::UnspecifiedAddress)).
    pub advertise: Option<SocketAddr>,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            dht: Config::default(),
            endpoint: EndpointConfig::default(),
            command_queue: 256,
            inbox_len: 1024,
            max_unanswered: 4096,
            max_outbound: 1024,
            command_timeout: Duration::from_secs(60),
            rng_seed: None,
            advertise: None,
        }
    }
}

impl DriverConfig {
    /// The defaults with the core's [`Config::fast`] periods (for tests and demos on one
    /// machine), the endpoint's timeouts shortened to match (1 s) and a 20 s `command_timeout`. Unlike the simulator's
    /// shared virtual clock, real nodes read the wall clock each at its own start, a few
    /// milliseconds apart: the tolerated clock skew is 1 s rather than zero.
    pub fn fast() -> Self {
        let mut dht = Config::fast();
        dht.max_clock_skew = Duration::from_secs(1);
        let mut endpoint = EndpointConfig::default();
        endpoint.request_timeout = Duration::from_secs(1);
        endpoint.handshake_timeout = Duration::from_secs(1);
        endpoint.shutdown_timeout = Duration::from_secs(1);
        Self {
            dht,
            endpoint,
            command_timeout: Duration::from_secs(20),
            ..Self::default()
        }
    }

    pub(crate) fn sanitized(mut self) -> Self {
        self.command_queue = self.command_queue.max(1);
        self.inbox_len = self.inbox_len.max(1);
        self.max_unanswered = self.max_unanswered.max(1);
        self.max_outbound = self.max_outbound.max(1);
        if self.command_timeout.is_zero() {
            self.command_timeout = Self::default().command_timeout;
        }
        self
    }
}
