//! The tokio driver: one DHT node over a secure [`Endpoint`].
//!
//! The core ([`Node`]) stays pure. One driver task owns it and is the only place it is touched:
//! - commands from [`DhtNode`] handles (`find`, `register`, ...) become core commands, and the
//!   matching [`Event`](crate::Event) completes the caller's future;
//! - incoming commands reach the endpoint's [`DhtHandler`] (registered under the DHT's protocol
//!   id, [`DhtHandler::PROTOCOL_ID`]), which passes them (with the peer id the endpoint
//!   authenticated) to the task; the core's `Respond` output answers them;
//! - the core's `Send` outputs become [`Endpoint::request`] futures that the driver task polls
//!   itself, no task per request (at most
//!   `max_outbound` at once), whose answers or failures go back to the core;
//! - the core's timer ([`Node::poll_timeout`]) drives [`Node::handle_timeout`].
//!
//! `now` is tokio's clock (`tokio::time::Instant::now().into_std()`), so a test with a paused
//! clock runs the whole stack in virtual time.

mod config;
mod contact;
mod handler;
mod neighbors;
mod task;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use themis_channel::{
    Endpoint, EndpointMetrics, HandlerRegistry, TcpConfig, TcpTransport, Transport, UdpConfig,
    UdpTransport,
};
use themis_crypto::{IdentityKeypair, NetworkId, NodeId};
use tokio::sync::{mpsc, oneshot};

pub use config::DriverConfig;
pub use handler::{DhtHandler, DhtInbox};
pub use neighbors::Neighbors;
use task::{Command, Driver, now};

use crate::{Contact, Error, Found, Metrics, Node, NodeState, Peer, Providers, ServiceSpec};

/// A running DHT node: a cheap handle (clones share the node) to the task that drives the
/// sans-I/O core over an [`Endpoint`].
///
/// Every method is cancel safe in the sense that dropping its future abandons only the wait:
/// a started query still runs to its end in the core, and its result is discarded.
///
/// Every async method finishes or fails within `DriverConfig::command_timeout` (then with
/// [`Error::TimedOut`]); the core's own timeouts (`Config::request_timeout` per request) end
/// almost every operation well before.
///
/// Dropping the last handle stops the node at once, like a crash (nothing is handed over);
/// call [`DhtNode::leave`] then [`DhtNode::shutdown`] to go gracefully.
#[derive(Clone, Debug)]
pub struct DhtNode {
    commands: mpsc::Sender<Command>,
    endpoint: Endpoint,
    peer: Peer,
    command_timeout: std::time::Duration,
}

/// A finished registration: how many of the k+1 replicas were stored. Failed replicas are
/// retried by the core (after `Config::retry_delay`), and all of them are re-stored every
/// `Config::restore_period` until [`DhtNode::unregister`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Registered {
    /// The service name.
    pub name: String,
    /// Replicas accepted by their responsible node.
    pub stored: u8,
    /// Replicas that failed for now.
    pub failed: u8,
}

/// The end of [`DhtNode::unregister`]: whether the name was registered, and how many of its
/// k+1 replicas took the tombstone that withdraws it (PROTOCOL.md §6.4, §6.10). A replica that
/// did not keeps the record until its expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unregistered {
    /// The service name.
    pub name: String,
    /// It was registered (re-stores have stopped).
    pub registered: bool,
    /// Replicas that stored the tombstone.
    pub tombstones_stored: u8,
    /// Replicas that did not (0 when no tombstone was sent: not a member, or the records had
    /// expired already).
    pub tombstones_failed: u8,
}

/// The end of a graceful leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaveReport {
    /// Records handed to the successor.
    pub records_handed_over: usize,
    /// Records that could not be handed over.
    pub records_lost: usize,
}

/// A node's view of the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// This node's id.
    pub id: NodeId,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Member, joining, leaving or left.
    pub state: NodeState,
    /// The predecessor, if known.
    pub predecessor: Option<Peer>,
    /// The successor list (empty when alone).
    pub successors: Vec<Peer>,
    /// Distinct nodes in the finger table.
    pub fingers: usize,
    /// Provider records this node stores for others.
    pub stored_records: usize,
}

/// A snapshot of a node's counters: the core's, the endpoint's and the driver's.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeMetrics {
    /// The DHT core's counters.
    pub dht: Metrics,
    /// The endpoint's (and its transport's) counters.
    pub endpoint: EndpointMetrics,
    /// DHT requests handed to the endpoint.
    pub requests_sent: u64,
    /// DHT requests that failed on the network (timeout, unreachable, refused).
    pub requests_failed: u64,
    /// DHT requests dropped unsent: they waited for room longer than the core waits for them.
    pub requests_dropped_stale: u64,
    /// Gauge: DHT requests on the network now.
    pub requests_in_flight: u64,
    /// Gauge: DHT requests waiting for room (`DriverConfig::max_outbound`).
    pub requests_queued: u64,
    /// Incoming DHT requests passed to the core.
    pub incoming_requests: u64,
    /// Incoming DHT requests refused because `max_unanswered` were waiting for the core.
    pub incoming_refused_busy: u64,
    /// Gauge: incoming DHT requests waiting for the core's answer.
    pub incoming_unanswered: u64,
}

impl DhtNode {
    /// Starts a node on a new TCP endpoint bound to `addr` (the default transport of the DHT:
    /// see PROTOCOL.md). The node forms a ring of its own until [`DhtNode::join`].
    pub async fn bind_tcp(
        addr: SocketAddr,
        tcp: TcpConfig,
        identity: Arc<IdentityKeypair>,
        network: NetworkId,
        config: DriverConfig,
    ) -> Result<Self, Error> {
        let t = TcpTransport::bind(addr, tcp)
            .await
            .map_err(themis_channel::Error::from)?;
        Self::on_transport(Arc::new(t), identity, network, config)
    }

    /// Starts a node on a new UDP endpoint bound to `addr`. DHT messages carrying records
    /// need more than a path-MTU datagram: raise `udp.max_frame_len` (up to
    /// [`themis_channel::wire::UDP_MAX_PAYLOAD`]) on networks that carry large datagrams.
    pub async fn bind_udp(
        addr: SocketAddr,
        udp: UdpConfig,
        identity: Arc<IdentityKeypair>,
        network: NetworkId,
        config: DriverConfig,
    ) -> Result<Self, Error> {
        let t = UdpTransport::bind(addr, udp)
            .await
            .map_err(themis_channel::Error::from)?;
        Self::on_transport(Arc::new(t), identity, network, config)
    }

    /// Starts a node on a new endpoint over `transport` (`config.endpoint` settings). Must be
    /// called inside a tokio runtime.
    pub fn on_transport(
        transport: Arc<dyn Transport>,
        identity: Arc<IdentityKeypair>,
        network: NetworkId,
        config: DriverConfig,
    ) -> Result<Self, Error> {
        let (handler, inbox) = DhtHandler::channel(&config);
        let handler = HandlerRegistry::new().with(DhtHandler::PROTOCOL_ID, Arc::new(handler))?;
        let endpoint = Endpoint::new(
            transport,
            identity.clone(),
            network.clone(),
            config.endpoint.clone(),
            Arc::new(handler),
        )?;
        Self::start(endpoint, inbox, identity, network, config)
    }

    /// Starts a node on an endpoint created with the [`DhtHandler`] paired with `inbox`,
    /// registered in the endpoint's [`HandlerRegistry`] under [`DhtHandler::PROTOCOL_ID`].
    /// `identity` and `network` must be the endpoint's (the core signs records with the key).
    /// Must be called inside a tokio runtime.
    pub fn start(
        endpoint: Endpoint,
        inbox: DhtInbox,
        identity: Arc<IdentityKeypair>,
        network: NetworkId,
        config: DriverConfig,
    ) -> Result<Self, Error> {
        let config = config.sanitized();
        let id = identity.node_id(&network);
        if id != endpoint.local_id() {
            return Err(Error::IdentityMismatch {
                identity: id,
                endpoint: endpoint.local_id(),
            });
        }
        let seed = config.rng_seed.unwrap_or_else(|| {
            let mut b = [0u8; 8];
            themis_crypto::fill_random(&mut b);
            u64::from_le_bytes(b)
        });
        let addr = advertised(endpoint.local_addr(), config.advertise)?;
        let node = Node::new(
            config.dht.clone(),
            identity,
            network,
            addr,
            now(),
            SystemTime::now(),
            seed,
        );
        let (tx, rx) = mpsc::channel(config.command_queue);
        let command_timeout = config.command_timeout;
        let driver = Driver::new(node, endpoint.clone(), config, rx, inbox.rx);
        let span = tracing::debug_span!("dht", id = %id.short());
        tokio::spawn(tracing::Instrument::instrument(driver.run(), span));
        Ok(Self {
            commands: tx,
            endpoint,
            peer: Peer { id, addr },
            command_timeout,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.peer.id
    }

    /// This node's id and listening address.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// How others bootstrap from this node (`Display` gives `NODE_ID_HEX@IP:PORT`).
    pub fn contact(&self) -> Contact {
        self.peer.into()
    }

    /// The endpoint the node runs on (to send other requests over the same sessions).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends a command to the driver task and waits for its result, both within
    /// `command_timeout`: a result that never comes (a bug, an overloaded driver) becomes an
    /// error instead of a wait without end.
    async fn call<T>(
        &self,
        what: &'static str,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        let exchange = async {
            self.commands
                .send(make(tx))
                .await
                .map_err(|_| Error::Stopped)?;
            rx.await.map_err(|_| Error::Stopped)
        };
        tokio::time::timeout(self.command_timeout, exchange)
            .await
            .map_err(|_| Error::TimedOut {
                what,
                after: self.command_timeout,
            })?
    }

    /// Joins a ring through `bootstraps`, tried in order (paper §6.1 join); returns the first
    /// successor. Contacts without an id (a bare address) are asked for their key first, and
    /// the handshake proves they hold it. A node that joins drops its own one-node ring.
    pub async fn join(&self, bootstraps: impl IntoIterator<Item = Contact>) -> Result<Peer, Error> {
        let list: Vec<Contact> = bootstraps.into_iter().collect();
        self.call("join", |tx| Command::Join(list, tx)).await?
    }

    /// Finds the node responsible for `target` (its successor, paper §6.1 find), with the
    /// number of hops the iterative lookup took.
    pub async fn find(&self, target: NodeId) -> Result<Found, Error> {
        self.call("find", |tx| Command::Find(target, tx)).await?
    }

    /// Registers this node as a provider of `spec.name` on k+1 replicas (`None`: the network's
    /// default k), and keeps re-storing the signed records until [`DhtNode::unregister`].
    pub async fn register(&self, spec: ServiceSpec, k: Option<u8>) -> Result<Registered, Error> {
        self.call("register", |tx| Command::Register(spec, k, tx))
            .await?
    }

    /// Stops re-storing `name` and withdraws it: a signed tombstone goes to each of its k+1
    /// replicas, so that readers drop this provider at once (PROTOCOL.md §6.10). Returns when
    /// the tombstones are stored (or failed).
    pub async fn unregister(&self, name: &str) -> Result<Unregistered, Error> {
        let name = name.to_owned();
        self.call("unregister", |tx| Command::Unregister(name, tx))
            .await?
    }

    /// The names this node provides (registered and not withdrawn), sorted.
    pub async fn registered_names(&self) -> Result<Vec<String>, Error> {
        self.call("registrations", Command::Registrations).await
    }

    /// The verified provider records of `name`, from the first of replicas `0..=k` that has any
    /// (paper §7).
    pub async fn lookup_providers(&self, name: &str, k: Option<u8>) -> Result<Providers, Error> {
        let name = name.to_owned();
        self.call("provider lookup", |tx| Command::Lookup(name, k, tx))
            .await?
    }

    /// The verified provider records of replica `r` of `name` only (no fallback to the other
    /// replicas: for a caller that plans its own search over them, like the mesh's discovery).
    pub async fn lookup_replica(&self, name: &str, r: u8) -> Result<Providers, Error> {
        let name = name.to_owned();
        self.call("provider lookup", |tx| Command::LookupReplica(name, r, tx))
            .await?
    }

    /// Leaves the ring gracefully (paper §6.1 leave): first withdraws every name this node
    /// still provides ([`DhtNode::unregister`], one at a time; a failure is only logged: the
    /// records then expire at their TTL), then hands the stored records and the predecessor
    /// to the successor and tells the predecessor. The node keeps answering (refusing, as no
    /// longer a member) until [`DhtNode::shutdown`].
    pub async fn leave(&self) -> Result<LeaveReport, Error> {
        for name in self.registered_names().await? {
            if let Err(e) = self.unregister(&name).await {
                tracing::warn!(service = %name, error = %e, "withdrawing before the leave failed; its records expire at their TTL");
            }
        }
        self.call("leave", Command::Leave).await?
    }

    /// The node's view of the ring.
    pub async fn status(&self) -> Result<Status, Error> {
        self.call("status", Command::Status).await
    }

    /// A snapshot of the core's, the endpoint's and the driver's counters.
    pub async fn metrics(&self) -> Result<NodeMetrics, Error> {
        self.call("metrics", Command::Metrics).await
    }

    /// Stops the node: the driver task ends (queries in progress fail with
    /// [`Error::Stopped`]), then the endpoint shuts down gracefully (at most its
    /// `shutdown_timeout` plus the transport's close). Idempotent. Does not leave the ring:
    /// call [`DhtNode::leave`] first for that. Returns after `command_timeout` at the latest.
    pub async fn shutdown(&self) {
        let _ = self.call("shutdown", Command::Shutdown).await;
    }
}

/// The address this node gives others: `advertise` (its port 0 meaning the bound port) or the
/// bound address; never an unspecified one (`0.0.0.0:p` would make every peer dial itself).
fn advertised(bound: SocketAddr, advertise: Option<SocketAddr>) -> Result<SocketAddr, Error> {
    let mut addr = advertise.unwrap_or(bound);
    if addr.port() == 0 {
        addr.set_port(bound.port());
    }
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return Err(Error::UnspecifiedAddress { bound });
    }
    Ok(addr)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_advertised_address_is_dialable() {
        assert_eq!(
            advertised(a("127.0.0.1:7000"), None).unwrap(),
            a("127.0.0.1:7000")
        );
        assert_eq!(
            advertised(a("0.0.0.0:7000"), Some(a("10.1.2.3:0"))).unwrap(),
            a("10.1.2.3:7000")
        );
        assert_eq!(
            advertised(a("0.0.0.0:7000"), Some(a("192.0.2.7:9000"))).unwrap(),
            a("192.0.2.7:9000")
        );
        assert_eq!(
            advertised(a("[::]:7000"), Some(a("[2001:db8::1]:0"))).unwrap(),
            a("[2001:db8::1]:7000")
        );
        for (bound, adv) in [
            ("0.0.0.0:7000", None),
            ("[::]:7000", None),
            ("127.0.0.1:7000", Some("0.0.0.0:7000")),
        ] {
            let err = advertised(a(bound), adv.map(a)).unwrap_err();
            assert!(
                matches!(err, Error::UnspecifiedAddress { .. }),
                "{bound} {adv:?}: {err}"
            );
            assert!(err.to_string().contains("DriverConfig::advertise"), "{err}");
        }
    }
}
