//! Seeded identities and randomness: every test input derives from a `u64` seed, so a failure
//! reproduces from the seed it prints.

use std::sync::Arc;

use themis_crypto::{IdentityKeypair, NetworkId, NodeId, Transcript};

/// The one seeded PRNG of the test kit (wyrand, from `fastrand`): for picking nodes, targets
/// and faults. Not for cryptography.
pub use fastrand::Rng;

/// Deterministic 32 bytes from a seed and a purpose.
pub fn bytes32(seed: u64, what: &str) -> [u8; 32] {
    Transcript::digest("themis-testkit", &[&seed.to_be_bytes(), what.as_bytes()])
}

/// The identity keypair seeded by `(seed, what)`.
pub fn keypair(seed: u64, what: &str) -> IdentityKeypair {
    IdentityKeypair::from_seed(&bytes32(seed, what))
}

/// Node `seed`'s identity, shared: the same seed gives the same node id on the same network.
pub fn identity(seed: u64) -> Arc<IdentityKeypair> {
    Arc::new(keypair(seed, "identity"))
}

/// A uniformly random position on the ring (a lookup target, a node id).
pub fn random_id(rng: &mut Rng) -> NodeId {
    let mut b = [0u8; 32];
    rng.fill(&mut b);
    NodeId::from_bytes(b)
}

/// The network every test node belongs to, unless a test needs two.
pub fn network() -> NetworkId {
    NetworkId::new("themis-test").unwrap_or_else(|_| unreachable!("a valid constant name"))
}
