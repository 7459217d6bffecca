//! Fixtures of the pure mesh policies (balancer, discovery cache): providers with made-up
//! ids and addresses.

use std::net::SocketAddr;

use themis_crypto::NodeId;
use themis_mesh::Provider;

/// The made-up id of provider `i` (distinct for distinct `i`).
pub fn id(i: u16) -> NodeId {
    let mut b = [0u8; 32];
    b[..2].copy_from_slice(&i.to_be_bytes());
    b[31] = 1;
    NodeId::from_bytes(b)
}

/// Provider `i` at `10.0.x.y:7000` with `version` and `weight`.
pub fn provider(i: u16, version: &str, weight: u32) -> Provider {
    let addr = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 7000));
    Provider::new(id(i), addr, version, weight)
}
