//! Test support for every THEMIS crate (`publish = false`), in the spirit of rustls' test
//! crate and quinn's `Pair`, generalised to N nodes. Every crate's integration tests, benches
//! and examples use it as a dev-dependency.
//!
//! - [`net`]: the seeded in-memory network ([`MemNetwork`], a [`themis_channel::Transport`] in
//!   tokio's virtual time) and a fault-injecting wrapper for real transports
//!   ([`FaultyTransport`]).
//! - [`sim`]: the deterministic DHT simulator: many sans-I/O DHT cores driven by its own
//!   virtual-time event queue, fast enough for rings of thousands of nodes.
//! - [`wait`]: `within` (a step must finish in time) and `eventually` (a condition must come
//!   to hold), both failing the test with the step's name.
//! - Seeds: [`identity`], [`network`], [`bytes32`], and [`Rng`], the one seeded PRNG.
//! - [`sys`]: descriptors, limits and TIME_WAIT sockets of this process (Linux).
//! - [`netns`]: network namespaces on a bridge for real-process partition and black-hole
//!   tests (Linux, root; [`netns::skip_unless_root`] otherwise).
//! - [`process`]: real processes of a binary under test (the `themis` command): spawned until
//!   their `ready` line, run to completion, killed on drop; free local ports.
//! - Per layer: [`handshake`] (two identities and an honest run), [`channel`] (both ends of a
//!   session, frame helpers, endpoint helpers), [`dht`] (rings of `DhtNode`s), [`mesh`] (rings of
//!   `MeshNode`s, policy fixtures).
#![forbid(unsafe_code)]

pub mod channel;
pub mod dht;
pub mod handshake;
mod identity;
pub mod mesh;
pub mod net;
pub mod netns;
pub mod process;
pub mod ring;
pub mod sim;
pub mod sys;
pub mod wait;

pub use identity::{Rng, bytes32, identity, keypair, network, random_id};
pub use net::{
    FaultyTransport, LinkConfig, MemConfig, MemNetwork, MemTransport, NetModel, TraceEvent,
};
pub use wait::{eventually, eventually_ok, paused_runtime, within};
