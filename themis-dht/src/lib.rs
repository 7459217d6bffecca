//! The THEMIS distributed hash table (paper §6): a Chord ring over the 256-bit node-id space,
//! made correct as Pamela Zave showed Chord needs (successor lists, the corrected
//! stabilize/rectify), with an iterative, progress-checked `find` (the eclipse defence of §6.2)
//! and a `store` of provider records signed by their providers (no "ghost objects").
//!
//! The node is a sans-I/O state machine in the style of `quinn-proto`: the caller feeds it
//! requests, responses and timeouts, each with `now`, and loops [`Node::poll_output`] until it
//! is empty after every input. The same code runs in the deterministic simulator (in the
//! `themis-testkit` crate, used by the tests) and over the secure endpoint ([`DhtNode`], below).
//!
//! A driver's contract:
//! - [`Output::Send`]: send `bytes` as a secure-channel command to `to`; if `expect` is set the
//!   peer must authenticate as that id. Report the answer with [`Node::handle_response`]
//!   (`Ok(Reply { from: authenticated id, bytes })`) or its failure; the core also times
//!   requests out itself (`Config::request_timeout`), so a late report is harmless.
//! - An incoming command: [`Node::handle_request`] with the authenticated id and listening
//!   address of the sender and a token of the driver's choosing; the answer comes out as
//!   [`Output::Respond`] with that token, possibly later (a join runs a lookup first).
//! - [`Output::Identify`]: ask whoever listens at `to` for its node id, without a handshake
//!   (the endpoint's `identify`), and report it with [`Node::handle_identified`].
//! - Call [`Node::handle_timeout`] at [`Node::poll_timeout`].
//! - [`Output::Event`]: results of commands ([`Node::find`], [`Node::register`],
//!   [`Node::lookup_providers`], [`Node::join`], [`Node::leave`]) and ring changes.
//!
//! ```
//! use std::{sync::Arc, time::{Instant, SystemTime}};
//! use themis_crypto::{IdentityKeypair, NetworkId};
//! use themis_dht::{Config, Event, Node, Output, ServiceSpec};
//!
//! let net = NetworkId::new("twiitr")?;
//! let now = Instant::now();
//! let id = Arc::new(IdentityKeypair::from_seed(&[7; 32]));
//! // The first node of a network forms a ring of its own.
//! let mut node = Node::new(Config::default(), id, net, "127.0.0.1:7000".parse()?, now,
//!                          SystemTime::now(), 42);
//! // Alone, it is responsible for every object: registering is local.
//! let q = node.register(now, ServiceSpec::new("check"), None)?;
//! let mut done = false;
//! while let Some(out) = node.poll_output() {
//!     match out {
//!         Output::Event(Event::Registered { query, stored, .. }) if query == q => {
//!             assert_eq!(stored, 3); // k = 2: three replicas
//!             done = true;
//!         }
//!         Output::Send { .. } | Output::Identify { .. } | Output::Respond { .. }
//!         | Output::Event(_) => {}
//!     }
//! }
//! assert!(done);
//! assert!(node.poll_timeout().is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The driver
//!
//! [`DhtNode`] runs one node over a secure [`themis_channel::Endpoint`] with tokio: a task owns
//! the core and follows the contract above; each DHT message is one command or response payload
//! of the endpoint (PROTOCOL.md). Its methods mirror the core's commands and wait for their
//! results.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use themis_channel::TcpConfig;
//! use themis_crypto::{IdentityKeypair, NetworkId};
//! use themis_dht::{DhtNode, DriverConfig, ServiceSpec};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let net = NetworkId::new("twiitr")?;
//! let any = "127.0.0.1:0".parse()?;
//! let start = |net: NetworkId| {
//!     let id = Arc::new(IdentityKeypair::generate());
//!     DhtNode::bind_tcp(any, TcpConfig::default(), id, net, DriverConfig::fast())
//! };
//! let (a, b) = (start(net.clone()).await?, start(net).await?);
//! // `b` joins through `a`, named `NODE_ID_HEX@IP:PORT` (a bare `IP:PORT` works too).
//! b.join([a.contact().to_string().parse()?]).await?;
//! tokio::time::sleep(Duration::from_secs(1)).await; // a stabilization round
//! b.register(ServiceSpec::new("check"), None).await?;
//! let found = a.lookup_providers("check", None).await?;
//! assert_eq!(found.records[0].provider(), b.id());
//! b.leave().await?;
//! b.shutdown().await;
//! a.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod adversary;
mod driver;
mod error;
mod proto;

pub use driver::{
    DhtHandler, DhtInbox, DhtNode, DriverConfig, LeaveReport, Neighbors, NodeMetrics, Registered,
    Status, Unregistered,
};
pub use error::Error;
pub use proto::config::Config;
pub use proto::metrics::{HOP_BUCKETS, Metrics};
pub use proto::node::{
    Contact, Event, Found, Node, NodeState, Output, Providers, QueryError, QueryId, Reply,
    RequestFailure, Unregister,
};
pub use proto::owner::{
    DELEGATION_LEN, DELEGATION_SIG_LABEL, Delegation, DelegationProblem, FINGERPRINT_LEN,
    FINGERPRINT_TEXT_LEN, MAX_OWNED_LABEL_LEN, NameOwner, OWNER_FINGERPRINT_LABEL, OWNER_SEPARATOR,
    OwnerFingerprint, check_provider, owned_name,
};
pub use proto::record::{ProviderRecord, Refusal, ServiceMetadata, ServiceSpec, object_id};
pub use proto::ring::ID_BITS;
pub use proto::wire::{
    MAX_NAME_LEN, MAX_PEERS, MAX_RECORDS, MAX_TAG_LEN, MAX_TAGS, MAX_VERSION_LEN, OBJECT_ID_LABEL,
    Peer, RECORD_SIG_LABEL, TOMBSTONE_SIG_LABEL,
};

/// Test and fuzzing access to internals; not part of the API.
#[doc(hidden)]
pub mod fuzz {
    pub use crate::adversary::{closer_answer, find_target, forge_owner_answer};
    pub use crate::proto::wire::{
        bench_decode_request, bench_find, bench_store, check_store, fuzz_decode, fuzz_roundtrip,
    };
}
