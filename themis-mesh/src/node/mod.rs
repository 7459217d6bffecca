//! The mesh node (paper §7): one endpoint shared by the DHT and service calls; register,
//! discover and call on top of the pure policies of `crate::policy`.

mod call;
mod info;
mod introspect;
mod local;
pub(crate) mod lookup;
mod members;
mod succession;
mod wire;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use themis_channel::{
    Endpoint, Handler, HandlerRegistry, Mode, PeerAddr, TcpConfig, TcpTransport, Transport,
    UdpConfig, UdpTransport,
};
use themis_crypto::{IdentityKeypair, NetworkId, NodeId, Succession};
use themis_dht::{Contact, DhtHandler, DhtNode, DriverConfig, ServiceMetadata};

pub use call::{CallContext, CallOptions, HandlerError};
use call::{Verdict, attempt_limit, judge_channel_error, judge_response, over_hop_limit};
pub use info::NodeInfo;
pub use introspect::{Discovery, MeshStatus};
pub use members::{Member, MemberState, Members};
use wire::{CallResponse, decode_request, decode_response, encode_request, encode_response};
pub use wire::{HTTP_ENVELOPE_VERSION, MAX_HOPS, RemoteErrorKind};

/// The service call's payloads and the node-info answer under arbitrary bytes (`fuzz/`).
#[doc(hidden)]
pub(crate) fn fuzz_roundtrip(bytes: &[u8]) -> Result<(bool, bool, bool), String> {
    let (req, rsp) = wire::fuzz_roundtrip(bytes)?;
    Ok((req, rsp, info::fuzz_roundtrip(bytes)?))
}

use crate::policy::{AccessPolicy, CacheLookup, DiscoveryCache, RecentRefusals, Successions};
use crate::{Balancer, BalancerConfig, CacheConfig, Error, ProviderRecord};

/// The handler a provider registers for a service: gets the *authenticated* caller id (secure
/// mode; a claim in insecure mode) and the request body, returns the response body or an error
/// message that goes back to the caller as [`Error::Remote`].
#[async_trait]
pub trait ServiceHandler: Send + Sync + 'static {
    /// Answers one call.
    async fn call(&self, caller: NodeId, request: Bytes) -> Result<Bytes, String>;

    /// Answers one call with its context, telling the kind of a failure (the one the provider
    /// runs). The default runs [`ServiceHandler::call`] and reports its error as
    /// [`HandlerError::Failed`]; a handler that can tell "did not run" (an unreachable
    /// upstream), "timed out", "busy" or "the caller's mistake" overrides it.
    ///
    /// An HTTP envelope ([`CallContext::http`]) is refused with [`HandlerError::Unsupported`]
    /// by this default: only a handler that overrides `serve` takes one.
    async fn serve(&self, context: CallContext, request: Bytes) -> Result<Bytes, HandlerError> {
        if context.http {
            return Err(HandlerError::Unsupported(
                "this service takes no HTTP calls (it has no HTTP upstream): call it with a plain body".into(),
            ));
        }
        self.call(context.caller, request)
            .await
            .map_err(HandlerError::Failed)
    }
}

/// Any `Fn(NodeId, Bytes) -> impl Future<Output = Result<Bytes, String>>` is a handler.
#[async_trait]
impl<F, Fut> ServiceHandler for F
where
    F: Fn(NodeId, Bytes) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Bytes, String>> + Send + 'static,
{
    async fn call(&self, caller: NodeId, request: Bytes) -> Result<Bytes, String> {
        (self)(caller, request).await
    }
}

/// What a provider announces about a service it registers (paper §7: version for canary
/// releases, weight for load balancing, free tags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Version (at most [`MAX_VERSION_LEN`](themis_dht::MAX_VERSION_LEN) bytes).
    pub version: String,
    /// Relative weight, 0..=65535 (canary split among versions, then among providers of a
    /// version; 0 = standby).
    pub weight: u16,
    /// Free tags: at most [`MAX_TAGS`](themis_dht::MAX_TAGS) of at most
    /// [`MAX_TAG_LEN`](themis_dht::MAX_TAG_LEN) bytes, the provider record's limits.
    pub tags: Vec<String>,
    /// The owner's delegation to this node, required for an owned name (`label~fingerprint`,
    /// PROTOCOL.md §6.4 "Owned names") and refused for any other.
    pub delegation: Option<themis_dht::Delegation>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            version: String::new(),
            weight: crate::policy::DEFAULT_WEIGHT.try_into().unwrap_or(u16::MAX),
            tags: Vec::new(),
            delegation: None,
        }
    }
}

impl ServiceSpec {
    /// A spec of `version` with `weight` and no tags.
    pub fn new(version: impl Into<String>, weight: u16) -> Self {
        Self {
            version: version.into(),
            weight,
            tags: Vec::new(),
            delegation: None,
        }
    }
}

/// What [`MeshNode::withdraw`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Withdrawal {
    /// The service was provided by this node.
    pub provided: bool,
    /// Replicas that stored the tombstone (discovery through them drops this provider now).
    pub replicas_withdrawn: u8,
    /// Replicas a tombstone was sent to (0: none was needed or possible, e.g. the records had
    /// expired, or the node was not a ring member).
    pub replicas: u8,
}

/// The transport a [`MeshNode`] runs the DHT and service calls over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TransportKind {
    /// TCP (the default): one connection per peer pair, frames up to `TcpConfig::max_frame_len`.
    #[default]
    Tcp,
    /// UDP: one datagram per frame, retransmitted by the endpoint. Provider records and call
    /// bodies must fit `UdpConfig::max_frame_len` (default 1,452 bytes, path-MTU safe): raise
    /// it (up to [`UDP_MAX_PAYLOAD`](themis_channel::wire::UDP_MAX_PAYLOAD)) where the network
    /// carries larger datagrams, such as loopback.
    Udp,
}

/// Settings of a [`MeshNode`]. Start from [`MeshConfig::new`] and change fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MeshConfig {
    /// Address to listen on. On an unspecified address (`0.0.0.0`, `::`), set
    /// `driver.advertise` to the address other nodes reach this one at, or the node refuses
    /// to start.
    pub listen: SocketAddr,
    /// TCP (default) or UDP, for the DHT and service calls alike; every node of a network must
    /// use the same.
    pub transport: TransportKind,
    /// Nodes to join through, tried in order; empty: this node starts a new ring.
    pub bootstrap: Vec<Contact>,
    /// Replication factor `k` (records on `k + 1` replicas); `None`: the network default (2).
    pub k: Option<u8>,
    /// Lifetime of this node's provider records (re-stored well before; default 600 s).
    pub record_ttl: Duration,
    /// Secure (default, paper Fig. 2/3) or insecure (plaintext, measurement only) channels.
    pub mode: Mode,
    /// TCP settings (used with [`TransportKind::Tcp`]).
    pub tcp: TcpConfig,
    /// UDP settings (used with [`TransportKind::Udp`]).
    pub udp: UdpConfig,
    /// The DHT driver's and the endpoint's settings.
    pub driver: DriverConfig,
    /// Settings of every per-service balancer.
    pub balancer: BalancerConfig,
    /// The discovery cache's settings.
    pub cache: CacheConfig,
    /// Services this node may provide at once (default 64).
    pub max_services: usize,
    /// Services this node keeps a balancer for (default 1,024; an arbitrary one is dropped
    /// beyond it).
    pub max_balancers: usize,
    /// Seed of the balancers' PRNG: `None` draws one from the operating system.
    pub seed: Option<u64>,
    /// How long a provider lets one of its handlers run before answering the caller with a
    /// handler failure (default 30 s; [`MeshConfig::fast`]: 10 s). Make it at least the longest
    /// request timeout of the callers, plus the time the handler's own calls may need to fail
    /// over (a handler that calls other services, like the paper's AppAuth `handler`).
    pub handler_timeout: Duration,
    /// The key succession statement this node presents (key rotation without a CA,
    /// PROTOCOL.md §2.9 and §7.7): it must name this node's key as the successor, on this
    /// network. Presented while in force; `None` (default): the node never rotated.
    pub succession: Option<Succession>,
    /// A cold discovery asks every replica at once and merges their answers; once the first
    /// has answered, the others get this much longer (default 1 s; [`MeshConfig::fast`]:
    /// 300 ms). Those still unanswered then are left out of the merge.
    pub discovery_wait: Duration,
}

impl MeshConfig {
    /// The defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        let driver = DriverConfig::default();
        Self {
            listen,
            transport: TransportKind::Tcp,
            bootstrap: Vec::new(),
            k: None,
            record_ttl: driver.dht.record_ttl,
            mode: Mode::Secure,
            tcp: TcpConfig::default(),
            udp: UdpConfig::default(),
            driver,
            balancer: BalancerConfig::default(),
            cache: CacheConfig::default(),
            max_services: 64,
            max_balancers: 1024,
            seed: None,
            handler_timeout: Duration::from_secs(30),
            succession: None,
            discovery_wait: Duration::from_secs(1),
        }
    }

    /// Like [`MeshConfig::new`] with [`DriverConfig::fast`] periods and a 2 s discovery cache,
    /// for tests and demos on one machine.
    pub fn fast(listen: SocketAddr) -> Self {
        let mut c = Self::new(listen);
        c.driver = DriverConfig::fast();
        c.record_ttl = c.driver.dht.record_ttl;
        c.cache.ttl = Duration::from_secs(2);
        c.cache.negative_ttl = Duration::from_millis(200);
        c.handler_timeout = Duration::from_secs(10);
        c.discovery_wait = Duration::from_millis(300);
        c
    }
}

type Services = Arc<RwLock<HashMap<String, Arc<dyn ServiceHandler>>>>;

/// The handler of service calls (protocol id `0x02`, PROTOCOL.md §5.4 and §7): the registered
/// service handler after the access check. The endpoint's [`HandlerRegistry`] routes the DHT's
/// commands (protocol id `0x01`) to the DHT.
struct CallHandler {
    services: Services,
    access: Arc<RwLock<AccessPolicy>>,
    /// Asks a refused caller for its key succession statement (PROTOCOL.md §7.7).
    successors: Arc<SuccessorCheck>,
    /// Longest a service handler may run: the caller's request timeout (by then the caller
    /// has given up, and the handler would only hold one of the endpoint's handler slots).
    handler_timeout: Duration,
}

/// The handler of node-info commands (protocol id `0x03`, PROTOCOL.md §7.6): answered at once
/// from what the node knows, on the endpoint's fast path.
struct InfoHandler {
    services: Services,
    /// When the node started (its uptime in node-info answers).
    started: Instant,
}

#[async_trait]
impl Handler for InfoHandler {
    async fn handle(&self, _from: PeerAddr, request: Bytes) -> Bytes {
        let services = self.services.read().map(|s| s.len()).unwrap_or(0);
        info::answer(&request, services, self.started)
    }
}

fn refuse(kind: RemoteErrorKind, message: String) -> Bytes {
    encode_response(&CallResponse::Error { kind, message })
}

/// Service calls run user code, so they keep their own task ([`Handler::handle`], the default
/// `try_dispatch`); DHT commands take the DHT's fast path (answered by its driver task).
#[async_trait]
impl Handler for CallHandler {
    async fn handle(&self, from: PeerAddr, request: Bytes) -> Bytes {
        // Beyond the paper: the provider checks the caller the endpoint authenticated.
        serve_call(
            &self.services,
            &self.access,
            self.handler_timeout,
            from.id,
            Some((&self.successors, &from)),
            &request,
        )
        .await
    }
}

/// Serves one service call from `caller` (`request` without its protocol id): the request's
/// parse, the services this node
/// provides, the access policy for `caller`, then the handler, cut off after `timeout`. The one
/// path of a call from the network (`caller` authenticated by the endpoint) and of a call this
/// node makes to itself (`caller` is this node).
async fn serve_call(
    services: &Services,
    access: &RwLock<AccessPolicy>,
    timeout: Duration,
    caller: NodeId,
    remote: Option<(&SuccessorCheck, &PeerAddr)>,
    request: &Bytes,
) -> Bytes {
    let Some(call) = decode_request(request) else {
        return refuse(
            RemoteErrorKind::Malformed,
            format!(
                "service call does not parse (name length 1..={}, UTF-8 name, well-formed options)",
                wire::MAX_NAME
            ),
        );
    };
    let budget = call
        .budget_ms
        .map(|ms| Duration::from_millis(u64::from(ms)));
    if budget == Some(Duration::ZERO) {
        return refuse(
            RemoteErrorKind::Timeout,
            format!("call to '{}' arrived with no time left", call.service),
        );
    }
    if over_hop_limit(call.hops) {
        return refuse(
            RemoteErrorKind::HopLimit,
            format!(
                "call to '{}' nested in {} calls, above the limit of {MAX_HOPS} (a service calling itself through the mesh?)",
                call.service, call.hops
            ),
        );
    }
    let handler = services
        .read()
        .ok()
        .and_then(|s| s.get(&call.service).cloned());
    let Some(handler) = handler else {
        return refuse(
            RemoteErrorKind::UnknownService,
            format!("this node does not provide '{}'", call.service),
        );
    };
    let allowed = |predecessor: Option<&NodeId>| {
        access
            .read()
            .map(|a| a.check_as(&call.service, &caller, predecessor).is_ok())
            .unwrap_or(false)
    };
    let mut ok = allowed(None);
    if !ok && let Some((check, from)) = remote {
        // Key rotation (PROTOCOL.md §7.7): a caller that succeeds an allowed id is allowed
        // during the grace period.
        ok = check
            .predecessor(from)
            .await
            .is_some_and(|p| allowed(Some(&p)));
    }
    if !ok {
        return refuse(
            RemoteErrorKind::AccessDenied,
            format!("caller {caller} may not call '{}'", call.service),
        );
    }
    // The caller's remaining time (issue 12, deadlines) cuts the handler earlier than the
    // provider's own limit.
    let timeout = budget.map_or(timeout, |b| b.min(timeout));
    let context = CallContext::new(caller, call.hops)
        .with_budget(budget)
        .with_http(call.http);
    match tokio::time::timeout(timeout, handler.serve(context, call.body)).await {
        Ok(Ok(body)) => encode_response(&CallResponse::Ok(body)),
        Ok(Err(e)) => encode_response(&e.into_response()),
        Err(_) => refuse(
            RemoteErrorKind::Timeout,
            format!(
                "the handler of '{}' did not answer within {timeout:?}",
                call.service
            ),
        ),
    }
}

/// What the provider side needs to accept the successor of an allowed caller (PROTOCOL.md
/// §2.9, §7.7): the node whose endpoint asks the caller (set once the node exists; weak, since
/// the endpoint's registry holds this check and a strong handle would keep the endpoint alive
/// forever), the network statements must be for, and the successions verified so far.
struct SuccessorCheck {
    node: OnceLock<Weak<Inner>>,
    network: NetworkId,
    table: Mutex<Successions>,
}

impl SuccessorCheck {
    /// The old id `from` succeeds: from the table, else (at most once per
    /// [`ASK_AGAIN_AFTER`](crate::policy::Successions)) asked over the session with `from`.
    async fn predecessor(&self, from: &PeerAddr) -> Option<NodeId> {
        let now_ms = succession::unix_now_ms();
        {
            let mut t = self.table.lock().ok()?;
            if let Some(p) = t.predecessor(&from.id, now_ms) {
                return Some(p);
            }
            if !t.should_ask(&from.id, now()) {
                return None;
            }
        }
        let node = self.node.get()?.upgrade()?;
        let endpoint = node.dht.endpoint();
        match succession::fetch(endpoint, &self.network, &self.table, from).await {
            Ok(Some(s)) => Some(s.old_id()),
            // No statement, or one that is refused: the caller is refused as it is (the
            // denial names its id).
            Ok(None) | Err(_) => None,
        }
    }
}

struct Inner {
    dht: DhtNode,
    successions: Arc<SuccessorCheck>,
    config: MeshConfig,
    services: Services,
    access: Arc<RwLock<AccessPolicy>>,
    cache: Mutex<DiscoveryCache>,
    balancers: Mutex<HashMap<String, Balancer>>,
    /// Providers whose address refused a connection lately: calls avoid them.
    refusals: Mutex<RecentRefusals>,
    /// Services whose providers are being discovered again behind the calls (see
    /// [`MeshNode::refresh_behind`]); at most one discovery each, and only services with a
    /// balancer, so at most `max_balancers`.
    refreshing: Mutex<HashSet<String>>,
    seed: u64,
    /// When the node started (its uptime in node-info answers).
    started: Instant,
}

/// A mesh node: a DHT member that registers, discovers and calls services over one endpoint.
/// A cheap handle: clones share the node.
#[derive(Clone)]
pub struct MeshNode {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MeshNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshNode")
            .field("id", &self.inner.dht.id())
            .finish_non_exhaustive()
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn lock_err() -> Error {
    Error::Stopped
}

impl MeshNode {
    /// Starts a node on `network` with `identity`: binds the endpoint (TCP or UDP, see
    /// [`MeshConfig::transport`]), starts the DHT and joins through `config.bootstrap` (if
    /// any). Must be called inside a tokio runtime. The join fails after
    /// `config.driver.command_timeout` at the latest.
    pub async fn start(
        network: NetworkId,
        identity: Arc<IdentityKeypair>,
        config: MeshConfig,
    ) -> Result<Self, Error> {
        let transport: Arc<dyn Transport> = match config.transport {
            TransportKind::Tcp => Arc::new(
                TcpTransport::bind(config.listen, config.tcp.clone())
                    .await
                    .map_err(themis_channel::Error::from)?,
            ),
            TransportKind::Udp => Arc::new(
                UdpTransport::bind(config.listen, config.udp.clone())
                    .await
                    .map_err(themis_channel::Error::from)?,
            ),
        };
        Self::on_transport(network, identity, transport, config).await
    }

    /// Starts a node like [`MeshNode::start`], on `transport` instead of a socket it binds:
    /// any [`Transport`] (an in-memory network such as the test kit's `MemNetwork` runs
    /// mesh logic without sockets, as [`DhtNode::on_transport`] does for the DHT).
    /// `config.listen`, `config.transport`, `config.tcp` and `config.udp` are not used.
    pub async fn on_transport(
        network: NetworkId,
        identity: Arc<IdentityKeypair>,
        transport: Arc<dyn Transport>,
        mut config: MeshConfig,
    ) -> Result<Self, Error> {
        config.driver.dht.record_ttl = config.record_ttl;
        // The statement also travels in this node's provider records (PROTOCOL.md §6.4 `succ`).
        config.driver.dht.succession = config.succession.as_ref().map(Succession::encode);
        // owners re-store before the responsible nodes drop the records (paper §6.1): a
        // re-store period that a shorter TTL left too long becomes t/3
        if config.driver.dht.restore_period >= config.record_ttl {
            config.driver.dht.restore_period = config.record_ttl / 3;
        }
        config.driver.endpoint.mode = config.mode;
        let (dht_handler, inbox) = DhtHandler::channel(&config.driver);
        if let Some(s) = &config.succession {
            // Only a statement of this node's key, for this network (PROTOCOL.md §2.9).
            let own = identity.node_id(&network);
            let refused = |e| Error::Succession {
                peer: own,
                source: Box::new(e),
            };
            Succession::decode(&s.encode(), &network).map_err(refused)?;
            s.check_successor_key(&identity.public()).map_err(refused)?;
        }
        let services: Services = Arc::default();
        let access = Arc::new(RwLock::new(AccessPolicy::new()));
        let successions = Arc::new(SuccessorCheck {
            node: OnceLock::new(),
            network: network.clone(),
            table: Mutex::new(Successions::default()),
        });
        let calls = CallHandler {
            services: services.clone(),
            access: access.clone(),
            successors: successions.clone(),
            handler_timeout: config.handler_timeout,
        };
        let started = now();
        let node_info = InfoHandler {
            services: services.clone(),
            started,
        };
        let registry = HandlerRegistry::new()
            .with(DhtHandler::PROTOCOL_ID, Arc::new(dht_handler))?
            .with(wire::TAG_SERVICE_CALL, Arc::new(calls))?
            .with(info::PROTOCOL_NODE_INFO, Arc::new(node_info))?
            .with(
                succession::PROTOCOL_SUCCESSION,
                Arc::new(succession::SuccessionHandler {
                    statement: config.succession.clone(),
                }),
            )?;
        let endpoint = Endpoint::new(
            transport,
            identity.clone(),
            network.clone(),
            config.driver.endpoint.clone(),
            Arc::new(registry),
        )?;
        let dht = DhtNode::start(endpoint, inbox, identity, network, config.driver.clone())?;
        let seed = config.seed.unwrap_or_else(|| {
            let mut b = [0u8; 8];
            themis_crypto::fill_random(&mut b);
            u64::from_le_bytes(b)
        });
        let cache = DiscoveryCache::new(config.cache.clone())?;
        let node = Self {
            inner: Arc::new(Inner {
                dht,
                successions,
                config,
                services,
                access,
                cache: Mutex::new(cache),
                balancers: Mutex::new(HashMap::new()),
                refusals: Mutex::new(RecentRefusals::default()),
                refreshing: Mutex::new(HashSet::new()),
                seed,
                started,
            }),
        };
        let _ = node.inner.successions.node.set(Arc::downgrade(&node.inner));
        if !node.inner.config.bootstrap.is_empty() {
            let b = node.inner.config.bootstrap.clone();
            if let Err(e) = node.inner.dht.join(b).await {
                node.inner.dht.shutdown().await;
                return Err(Error::Join(Box::new(e)));
            }
        }
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.dht.id()
    }

    /// How others bootstrap from this node (`NODE_ID_HEX@IP:PORT`).
    pub fn contact(&self) -> Contact {
        self.inner.dht.contact()
    }

    /// The DHT node underneath (status, metrics, find).
    pub fn dht(&self) -> &DhtNode {
        &self.inner.dht
    }

    /// Provides `service`: installs `handler`, then stores the `k + 1` signed provider records
    /// (paper §7); the DHT re-stores them until [`MeshNode::deregister`] or shutdown. Returns how
    /// many replicas were stored now (failed ones are retried by the DHT). Fails after
    /// `config.driver.command_timeout` at the latest.
    pub async fn register(
        &self,
        service: &str,
        spec: ServiceSpec,
        handler: impl ServiceHandler,
    ) -> Result<u8, Error> {
        {
            let mut s = self.inner.services.write().map_err(|_| lock_err())?;
            if !s.contains_key(service) && s.len() >= self.inner.config.max_services {
                return Err(Error::LimitExceeded {
                    what: "the table of provided services",
                    limit: self.inner.config.max_services,
                });
            }
            s.insert(service.to_owned(), Arc::new(handler));
        }
        let dspec = themis_dht::ServiceSpec {
            name: service.to_owned(),
            addr: None,
            metadata: ServiceMetadata {
                version: spec.version,
                weight: spec.weight,
                tags: spec.tags,
            },
            delegation: spec.delegation,
        };
        match self.inner.dht.register(dspec, self.inner.config.k).await {
            Ok(r) => Ok(r.stored),
            Err(e) => {
                if let Ok(mut s) = self.inner.services.write() {
                    s.remove(service);
                }
                Err(e.into())
            }
        }
    }

    /// Stops providing `service`: removes its handler (calls now get
    /// [`RemoteErrorKind::UnknownService`]), stops re-storing its records and withdraws them
    /// (a signed tombstone on each replica, so discovery drops this provider at once; see
    /// [`MeshNode::withdraw`]). Returns whether it was provided. Bounded by
    /// `config.driver.command_timeout`.
    pub async fn deregister(&self, service: &str) -> Result<bool, Error> {
        Ok(self.withdraw(service).await?.provided)
    }

    /// [`MeshNode::deregister`], telling how many replicas took the tombstone.
    pub async fn withdraw(&self, service: &str) -> Result<Withdrawal, Error> {
        let had = self
            .inner
            .services
            .write()
            .map_err(|_| lock_err())?
            .remove(service)
            .is_some();
        let u = self.inner.dht.unregister(service).await?;
        // this node's own discoveries drop it at once too
        if let Ok(mut c) = self.inner.cache.lock() {
            c.invalidate(service);
        }
        Ok(Withdrawal {
            provided: had || u.registered,
            replicas_withdrawn: u.tombstones_stored,
            replicas: u.tombstones_stored.saturating_add(u.tombstones_failed),
        })
    }

    /// Restricts who may call `service` on this node to `callers` (beyond the paper; checked
    /// against the id the endpoint authenticated).
    pub fn restrict(
        &self,
        service: &str,
        callers: impl IntoIterator<Item = NodeId>,
    ) -> Result<(), Error> {
        self.inner
            .access
            .write()
            .map_err(|_| lock_err())?
            .restrict(service, callers)
    }

    /// Verified, merged provider records of `service` (paper §7), from the discovery cache or
    /// the DHT (which falls back to the next replica when one fails). Fails after
    /// `config.driver.command_timeout` at the latest.
    pub async fn discover(&self, service: &str) -> Result<Vec<ProviderRecord>, Error> {
        Ok(self.discover_inner(service).await?.0)
    }

    /// Returns the records and whether they came fresh from the DHT.
    async fn discover_inner(&self, service: &str) -> Result<(Vec<ProviderRecord>, bool), Error> {
        let replicas = u32::from(self.lookup_k()) + 1;
        let not_found = || Error::NotFound {
            service: service.to_owned(),
            replicas,
        };
        {
            let mut c = self.inner.cache.lock().map_err(|_| lock_err())?;
            match c.get(service, now()) {
                CacheLookup::Providers(r) => return Ok((r.to_vec(), false)),
                CacheLookup::NoProvider => return Err(not_found()),
                CacheLookup::Miss => {}
            }
        }
        let found = self.search_replicas(service).await?;
        self.absorb(service, &found)?;
        if found.records.is_empty() {
            return Err(not_found());
        }
        Ok((found.records, true))
    }

    /// Takes a fresh discovery into the cache, and drops the providers it found withdrawn
    /// from the service's balancer at once. With no live provider left and a withdrawal seen
    /// (a definite answer), the balancer goes: it must not keep calling withdrawn providers
    /// as it keeps providers through a failed discovery (stale while error, for a ring that is
    /// repairing).
    pub(crate) fn absorb(&self, service: &str, found: &lookup::Searched) -> Result<(), Error> {
        let t = now();
        self.inner
            .cache
            .lock()
            .map_err(|_| lock_err())?
            .insert(service, found.records.clone(), t);
        if found.withdrawn.is_empty() {
            return Ok(());
        }
        let mut b = self.inner.balancers.lock().map_err(|_| lock_err())?;
        if found.records.is_empty() {
            b.remove(service);
        } else if let Some(bal) = b.get_mut(service) {
            bal.set_providers(found.records.iter().map(|r| r.provider.clone()), t);
        }
        Ok(())
    }

    /// Discovers `service` again on a task of its own if the cache holds nothing fresh for it
    /// and no such discovery runs yet; its result reaches the balancer when it comes. Stale
    /// while revalidate, as Envoy and Linkerd keep routing on the endpoints they have while
    /// discovery updates them: a call whose service has a balancer never waits for a lookup.
    /// A discovery that fails leaves the balancer's providers as they are (stale while error),
    /// and the next call tries again.
    fn refresh_behind(&self, service: &str) {
        let fresh = self.inner.cache.lock().is_ok_and(|mut c| {
            matches!(
                c.get(service, now()),
                CacheLookup::Providers(_) | CacheLookup::NoProvider
            )
        });
        if fresh {
            return;
        }
        let Ok(mut running) = self.inner.refreshing.lock() else {
            return;
        };
        if !running.insert(service.to_owned()) {
            return;
        }
        drop(running);
        let (node, service) = (self.clone(), service.to_owned());
        tokio::spawn(async move {
            // discovery ends by `config.driver.command_timeout`
            let _ = node.refresh(&service).await;
            if let Ok(mut running) = node.inner.refreshing.lock() {
                running.remove(&service);
            }
        });
    }

    /// Refreshes the balancer of `service` from discovery (creating it if needed).
    async fn refresh(&self, service: &str) -> Result<(), Error> {
        let (records, fresh) = self.discover_inner(service).await?;
        let mut b = self.inner.balancers.lock().map_err(|_| lock_err())?;
        let t = now();
        if !b.contains_key(service) {
            if b.len() >= self.inner.config.max_balancers
                && let Some(k) = b.keys().next().cloned()
            {
                b.remove(&k);
            }
            let seed = self.inner.seed ^ u64::from(crc(service));
            let bal = Balancer::new(service, self.inner.config.balancer.clone(), seed, t)?;
            b.insert(service.to_owned(), bal);
        } else if !fresh {
            return Ok(());
        }
        if let Some(bal) = b.get_mut(service) {
            bal.set_providers(records.into_iter().map(|r| r.provider), t);
        }
        Ok(())
    }

    /// Calls `service` with `request` (paper §7): picks a provider with the service's
    /// [`Balancer`] (canary split, P2C-EWMA), sends the call over the endpoint, fails over to
    /// another provider within the retry budget, and records latency and failures.
    ///
    /// The call is not idempotent: it is failed over only when it surely did not run (see
    /// [`MeshNode::call_with`], which also takes the idempotent flag and the hop count). A
    /// refusal by the provider's access policy is returned at once as [`Error::AccessDenied`];
    /// a handler's error as [`Error::Remote`]; a caller error of the provider's application as
    /// [`Error::Rejected`].
    ///
    /// Deadline: a discovery when the service has no provider yet (at most
    /// `config.driver.command_timeout`; once it has, discovery runs behind the calls), then at
    /// most `config.balancer.max_attempts` attempts
    /// of at most `config.driver.endpoint.request_timeout` each. On the provider, a handler
    /// that runs longer than the provider's `config.handler_timeout` is answered for as an
    /// [`Error::Remote`] handler error.
    pub async fn call(&self, service: &str, request: Bytes) -> Result<Bytes, Error> {
        self.call_traced(service, request)
            .await
            .map(|(body, _)| body)
    }

    /// Like [`MeshNode::call`], and also returns the provider that answered.
    pub async fn call_traced(
        &self,
        service: &str,
        request: Bytes,
    ) -> Result<(Bytes, NodeId), Error> {
        self.call_with(service, request, CallOptions::default())
            .await
    }

    /// Calls `service` like [`MeshNode::call`] with `options`, and returns the provider that
    /// answered.
    ///
    /// Failover (issue 12): an attempt whose call surely did not run (the provider refused the
    /// connection, was busy, does not serve the service, could not reach its application, or
    /// the command never left) goes to another provider; one that may have run (a timeout, a
    /// handler failure, a connection lost after the command went out) goes to another only if
    /// the call is [idempotent](CallOptions::idempotent), and otherwise ends with its error,
    /// so a non-idempotent call never runs twice. A provider that refused a connection is
    /// avoided by the next calls until it answers again (at most 10 s). Provider-side failures
    /// count against the provider (P2C-EWMA, outlier ejection); a caller error
    /// ([`Error::Rejected`]), an access refusal and the hop limit are answers of a healthy
    /// provider.
    pub async fn call_with(
        &self,
        service: &str,
        request: Bytes,
        options: CallOptions,
    ) -> Result<(Bytes, NodeId), Error> {
        if over_hop_limit(options.hops) {
            return Err(Error::HopLimit {
                service: service.to_owned(),
                hops: options.hops,
                limit: MAX_HOPS,
            });
        }
        let deadline = options.timeout.map(|t| now() + t);
        let expired = || Error::DeadlineExceeded {
            service: service.to_owned(),
            after: options.timeout.unwrap_or_default(),
        };
        // Validated once, encoded per attempt (the time left changes).
        let encode = |budget_ms| {
            encode_request(service, options.hops, budget_ms, options.http, &request).ok_or(
                Error::InvalidConfig {
                    what: "service name",
                    reason: wire::NAME_RULE,
                },
            )
        };
        let mut payload = encode(None)?;
        let known = self
            .inner
            .balancers
            .lock()
            .map_err(|_| lock_err())?
            .get(service)
            .is_some_and(|b| !b.is_empty());
        if known {
            // The call goes to the providers the balancer has; a discovery that is due runs
            // behind it. Waiting for it here put a lookup in the path of every call after the
            // cache's TTL or a failed attempt, and a lookup that met a silent DHT node (a black
            // hole) used up the caller's whole deadline before any provider was tried.
            self.refresh_behind(service);
        } else {
            match deadline {
                None => self.refresh(service).await?,
                Some(d) => tokio::time::timeout_at(d.into(), self.refresh(service))
                    .await
                    .map_err(|_| expired())??,
            }
        }
        let mut call = {
            let mut b = self.inner.balancers.lock().map_err(|_| lock_err())?;
            let bal = b.get_mut(service).ok_or_else(|| Error::NoProviders {
                service: service.to_owned(),
            })?;
            let mut call = bal.begin_call(now());
            if let Ok(r) = self.inner.refusals.lock()
                && !r.is_empty()
            {
                let t = now();
                for id in r.refusing(bal.provider_ids(), t) {
                    call.avoid(id);
                }
            }
            call
        };
        let mut last: Option<Error> = None;
        loop {
            let (pick, another) = {
                let mut b = self.inner.balancers.lock().map_err(|_| lock_err())?;
                let Some(bal) = b.get_mut(service) else {
                    return Err(Error::NoProviders {
                        service: service.to_owned(),
                    });
                };
                let t = now();
                let pick = match bal.pick(&mut call, t) {
                    Ok(p) => p,
                    Err(e) => return Err(last.unwrap_or(e)),
                };
                // Whether a timed-out attempt could still be sent to another provider.
                let another = call.attempts() < bal.config().max_attempts
                    && bal.retries_available(t) > 0
                    && bal.provider_ids().any(|id| !call.tried().contains(id));
                (pick, another)
            };
            let peer = PeerAddr {
                id: pick.id,
                addr: pick.addr,
            };
            let started = now();
            let left = deadline.map(|d| d.saturating_duration_since(started));
            // An idempotent call that may still fail over gives the attempt half the time
            // left (a silent provider must not use up the whole deadline); the provider is
            // sent the attempt's time as its budget.
            let limit = left.map(|l| attempt_limit(l, options.idempotent, another));
            if let Some(limit) = limit {
                if limit.is_zero() {
                    self.cancel_pick(service, &pick.id)?;
                    return Err(expired());
                }
                let ms = u32::try_from(limit.as_millis()).unwrap_or(u32::MAX).max(1);
                payload = encode(Some(ms))?;
            }
            let remote = |kind, message| Error::Remote {
                service: service.to_owned(),
                provider: pick.id,
                kind,
                message,
            };
            let sent = match limit {
                None => Ok(self.send_call(&peer, payload.clone()).await),
                Some(limit) => tokio::time::timeout(limit, self.send_call(&peer, payload.clone()))
                    .await
                    .map_err(|_| ()),
            };
            let Ok(sent) = sent else {
                // No answer in the time given: a failure sample for the provider. At the
                // deadline nothing is left for another attempt; before it (an idempotent call
                // cut at half its time left) the call fails over.
                self.report(service, &pick.id, None)?;
                if limit == left {
                    return Err(expired());
                }
                if let Ok(mut c) = self.inner.cache.lock() {
                    c.invalidate(service);
                }
                last = Some(expired());
                continue;
            };
            let (verdict, outcome) = match sent {
                Ok(bytes) => {
                    if let Ok(mut r) = self.inner.refusals.lock() {
                        r.answered(&pick.id);
                    }
                    match decode_response(&bytes) {
                        Some(answer) => {
                            let verdict = judge_response(&answer);
                            let outcome = match answer {
                                CallResponse::Ok(body) => Ok(body),
                                CallResponse::Rejected { code, body } => Err(Error::Rejected {
                                    service: service.to_owned(),
                                    provider: pick.id,
                                    code,
                                    body,
                                }),
                                CallResponse::Failed { code, body } => Err(Error::Failed {
                                    service: service.to_owned(),
                                    provider: pick.id,
                                    code,
                                    body,
                                }),
                                CallResponse::Error {
                                    kind: RemoteErrorKind::AccessDenied,
                                    ..
                                } => Err(Error::AccessDenied {
                                    caller: self.id(),
                                    service: service.to_owned(),
                                }),
                                CallResponse::Error { kind, message } => Err(remote(kind, message)),
                            };
                            (verdict, outcome)
                        }
                        None => (
                            Verdict::FailoverIfIdempotent,
                            Err(remote(
                                RemoteErrorKind::Malformed,
                                "the response does not parse".into(),
                            )),
                        ),
                    }
                }
                Err(source) => {
                    if matches!(source, themis_channel::Error::PeerUnreachable { .. })
                        && let Ok(mut r) = self.inner.refusals.lock()
                    {
                        r.refused(pick.id, now());
                    }
                    (
                        judge_channel_error(&source),
                        Err(Error::Call {
                            service: service.to_owned(),
                            provider: pick.id,
                            addr: pick.addr,
                            source: Box::new(source),
                        }),
                    )
                }
            };
            if verdict == Verdict::Answer {
                self.report(service, &pick.id, Some(now() - started))?;
                return outcome.map(|body| (body, pick.id));
            }
            self.report(service, &pick.id, None)?;
            // Stale provider list: discover afresh next time.
            if let Ok(mut c) = self.inner.cache.lock() {
                c.invalidate(service);
            }
            let e = match outcome {
                Ok(body) => return Ok((body, pick.id)),
                Err(e) => e,
            };
            if verdict == Verdict::FailoverIfIdempotent && !options.idempotent {
                // It may have run: running it again could repeat its effect.
                return Err(e);
            }
            last = Some(e);
        }
    }

    /// Abandons a pick without an outcome.
    fn cancel_pick(&self, service: &str, id: &NodeId) -> Result<(), Error> {
        let mut b = self.inner.balancers.lock().map_err(|_| lock_err())?;
        if let Some(bal) = b.get_mut(service) {
            bal.on_cancel(id);
        }
        Ok(())
    }

    fn report(&self, service: &str, id: &NodeId, latency: Option<Duration>) -> Result<(), Error> {
        let mut b = self.inner.balancers.lock().map_err(|_| lock_err())?;
        if let Some(bal) = b.get_mut(service) {
            match latency {
                Some(l) => bal.on_success(id, l, now()),
                None => bal.on_failure(id, now()),
            }
        }
        Ok(())
    }

    /// Stops the node gracefully: stops re-storing every provided service, leaves the ring
    /// (handing stored records to the successor, paper §6.1) and shuts the endpoint down.
    ///
    /// Deadline: the leave and the shutdown take at most `config.driver.command_timeout`
    /// each (a leave whose successors do not answer gives up, and the node stops anyway); the
    /// endpoint's own shutdown waits at most `config.driver.endpoint.shutdown_timeout` for
    /// work in flight, plus the transport's close.
    pub async fn shutdown(&self) {
        let names: Vec<String> = self
            .inner
            .services
            .write()
            .map(|mut s| s.drain().map(|(k, _)| k).collect())
            .unwrap_or_default();
        for n in names {
            let _ = self.inner.dht.unregister(&n).await;
        }
        let _ = self.inner.dht.leave().await;
        self.inner.dht.shutdown().await;
    }

    /// Stops the node at once, like a crash (no leave, nothing handed over).
    ///
    /// For tests and demos only (the CLI demo kills nodes with it); not part of the supported
    /// API. Bounded like [`MeshNode::shutdown`]'s last step.
    #[doc(hidden)]
    pub async fn crash(&self) {
        self.inner.dht.shutdown().await;
    }
}

/// A small stable hash of a name (to derive each balancer's seed).
fn crc(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}
