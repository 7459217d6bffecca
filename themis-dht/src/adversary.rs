//! What misbehaving nodes send: the wire-level half of the test kit's simulated adversaries
//! (`themis_testkit::sim::Adversary`), which need the DHT's private message types. Reached
//! through the hidden [`crate::fuzz`] module; not part of the API.

use std::net::SocketAddr;

use themis_crypto::{IdentityKeypair, NetworkId, NodeId};

use crate::Peer;
use crate::proto::record::{ProviderRecord, ServiceSpec};
use crate::proto::wire::{Request, Response, WirePeer, WireRecord};

/// The target of `request` if it is a find, `None` for any other request or bytes that do not
/// decode.
pub fn find_target(request: &[u8]) -> Option<NodeId> {
    match Request::decode(request, usize::MAX) {
        Ok(Request::Find { target, .. }) => Some(target),
        _ => None,
    }
}

/// A find answer naming `peers` as the closest preceding nodes (an adversary's answer that
/// makes no progress or points anywhere).
pub fn closer_answer(peers: impl IntoIterator<Item = Peer>) -> Vec<u8> {
    Response::Closer {
        peers: peers.into_iter().map(WirePeer::from).collect(),
    }
    .encode()
}

/// `answer` with its provider records forged, if it is an owner's answer (other answers come
/// back unchanged): each record with its address altered to `ghost_addr` and the provider's
/// signature kept, followed by a "ghost" record signed by `forger` but naming the real provider
/// (paper §6.2: a responsible node must not be able to invent or alter records).
pub fn forge_owner_answer(
    answer: &[u8],
    forger: &IdentityKeypair,
    network: &NetworkId,
    ghost_addr: SocketAddr,
) -> Vec<u8> {
    let Ok(Response::Owner { records }) = Response::decode(answer, usize::MAX) else {
        return answer.to_vec();
    };
    let mut out: Vec<WireRecord> = Vec::new();
    for w in records {
        if let Ok(rec) = ProviderRecord::try_from(w) {
            out.push(WireRecord::from(&rec.forged_addr(ghost_addr)));
            let mut ghost = ProviderRecord::sign(
                forger,
                network,
                &ServiceSpec::new(rec.name()),
                ghost_addr,
                rec.replica(),
                rec.expires_unix_ms(),
                rec.seq() + 1,
            );
            ghost.provider = rec.provider();
            out.push(WireRecord::from(&ghost));
        }
    }
    Response::Owner { records: out }.encode()
}
