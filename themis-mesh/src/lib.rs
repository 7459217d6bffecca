//! The THEMIS service mesh (paper §7).
//!
//! This crate holds, under `policy`, the pure decision logic a mesh node uses around discovery
//! and calls, and under `node` the [`MeshNode`] built on it: register / discover / call over
//! the DHT and one secure endpoint shared by DHT messages and service calls. For operators,
//! [`MeshNode::locate`] shows where a name's records live: its `k + 1` replica object ids, the
//! node responsible for each, and the replica a fresh lookup found them under.
//!
//! | piece | what it decides |
//! |---|---|
//! | [`Balancer`] (public) | which provider serves the next attempt of a call: canary split by version weight, then [`Policy::P2cEwma`] (default) or the paper's [`Policy::Random`]; failover, a retry budget, outlier ejection |
//! | discovery cache (inside [`MeshNode`], [`CacheConfig`]) | whether a fresh discovery result (or a recent "no provider") is cached |
//! | replica search (inside [`MeshNode::discover`]) | which of a name's `k + 1` replicas to ask next (falling back to siblings of dead ones), and the provider list merged from their answers |
//! | access policy (inside [`MeshNode::restrict`]) | whether a caller may call a service (beyond the paper) |
//!
//! For operators (the `themis` node agent's API), [`MeshNode::status`],
//! [`MeshNode::metrics`], [`MeshNode::discover_detailed`] (with the replica object ids) and
//! [`MeshNode::call_traced`] (which also names the provider that answered) tell what a node
//! sees and does.
//!
//! # Embedding a node
//!
//! A [`MeshNode`] is a member of the ring that provides and calls services: start one per
//! process ([`MeshNode::start`] binds TCP; [`MeshConfig::bootstrap`] names a node to join
//! through), [`register`](MeshNode::register) a handler, [`call`](MeshNode::call) a service by
//! name. `examples/provide_and_call.rs` is the same as a program
//! (`cargo run -p themis-mesh --example provide_and_call`).
//!
//! ```
//! use std::sync::Arc;
//! use themis_mesh::{Bytes, IdentityKeypair, MeshConfig, MeshNode, NetworkId, NodeId, ServiceSpec};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let net = NetworkId::new("docs")?;
//! let config = MeshConfig::fast("127.0.0.1:0".parse()?);
//! let node = MeshNode::start(net, Arc::new(IdentityKeypair::generate()), config).await?;
//!
//! // Provide `hello`: the handler gets the caller's authenticated id and the request body.
//! let handler = |caller: NodeId, body: Bytes| async move {
//!     Ok::<_, String>(Bytes::from([&b"hello "[..], &body].concat()))
//! };
//! node.register("hello", ServiceSpec::new("1.0", 100), handler).await?;
//!
//! // Call it by name: discovery in the DHT, the balancer's choice of a provider, the call.
//! let answer = node.call("hello", Bytes::from_static(b"world")).await?;
//! assert_eq!(&answer[..], b"hello world");
//! node.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Traffic policies
//!
//! Nothing here performs I/O or reads the clock: every method takes `now`, and randomness comes
//! from a PRNG the caller seeds, so that a run is reproducible from its seed.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//! use themis_crypto::NodeId;
//! use themis_mesh::{Balancer, BalancerConfig, Provider};
//!
//! let now = Instant::now();
//! let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
//! let stable = Provider::new(NodeId::from_bytes([1; 32]), addr, "1.0", 95);
//! let canary = Provider::new(NodeId::from_bytes([2; 32]), addr, "1.1", 5);
//!
//! let mut balancer = Balancer::new("check", BalancerConfig::default(), 42, now)?;
//! balancer.set_providers([stable, canary], now);
//!
//! let mut call = balancer.begin_call(now);
//! let first = balancer.pick(&mut call, now)?;
//! // ... the request to `first.addr` fails: report it and fail over to another provider.
//! balancer.on_failure(&first.id, now);
//! let second = balancer.pick(&mut call, now)?;
//! assert_ne!(second.id, first.id);
//! balancer.on_success(&second.id, Duration::from_millis(3), now);
//! # Ok::<(), themis_mesh::Error>(())
//! ```
#![forbid(unsafe_code)]

mod error;
mod node;
mod policy;

pub use error::Error;
pub use node::lookup::{ReplicaPlacement, ServiceLocation};
pub use node::{
    CallContext, CallOptions, Discovery, HTTP_ENVELOPE_VERSION, HandlerError, MAX_HOPS, Member,
    MemberState, Members, MeshConfig, MeshNode, MeshStatus, NodeInfo, RemoteErrorKind,
    ServiceHandler, ServiceSpec, TransportKind, Withdrawal,
};
pub use policy::{
    Balancer, BalancerConfig, CacheConfig, Call, EjectionConfig, Pick, Policy, Provider,
    ProviderRecord, ProviderStatus, RetryBudgetConfig,
};

// The layers below, for users who want one dependency (as rust-libp2p's facade re-exports its
// protocol crates): their errors inside [`Error`], their settings inside [`MeshConfig`], the
// types of [`MeshNode::dht`] and [`MeshNode::status`].
pub use themis_channel as channel;
pub use themis_crypto as crypto;
pub use themis_dht as dht;

// The types every program of the mesh names, so that one `use` serves.
pub use bytes::Bytes;
pub use themis_channel::Mode;
pub use themis_crypto::{IdentityKeypair, NetworkId, NodeId};
pub use themis_dht::{Contact, DriverConfig, object_id};

/// Fuzzing access to the service call's decoders (`fuzz/`). Not part of the API.
#[doc(hidden)]
pub mod fuzz {
    /// Decodes arbitrary bytes as a call request, a call response and a node-info answer;
    /// what decodes must re-encode to bytes that decode to the same value. Returns whether
    /// each decoded; `Err` names the failed check (a bug).
    pub fn call_payloads(bytes: &[u8]) -> Result<(bool, bool, bool), String> {
        crate::node::fuzz_roundtrip(bytes)
    }
}

/// The pure policies [`MeshNode`] uses inside and does not expose (discovery cache, replica
/// search, access policy, retry budget, record merge), for this crate's tests and benches.
/// Not part of the API.
#[doc(hidden)]
pub mod internals {
    pub use crate::policy::{
        AccessPolicy, CacheLookup, DEFAULT_WEIGHT, DiscoveryCache, RecentRefusals, ReplicaSearch,
        RetryBudget, SearchConfig, Successions, merge_records,
    };
}
