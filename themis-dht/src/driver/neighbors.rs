//! Asking another ring member for its neighbours: the `get_neighbors` request of Zave's
//! stabilization (PROTOCOL.md §6.5), sent on the operator's behalf instead of the core's. The
//! building block of a ring walk (`themis members`) and of a check that the ring is consistent
//! around a node (`themis check`). Nothing here touches the core: the request goes straight to
//! the endpoint, the answer is decoded with the core's codec and its limits.

use themis_channel::PeerAddr;

use super::DhtNode;
use crate::proto::wire::{Request, Response};
use crate::{Error, Peer};

/// Largest `neighbors` answer decoded: a predecessor and [`crate::MAX_PEERS`] successors take
/// under 3 KiB; anything near this bound is refused as malformed.
const MAX_ANSWER: usize = 16 * 1024;

/// A ring member's own view of its neighbours, as it answers `get_neighbors`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Neighbors {
    /// The node that answered (authenticated by the secure channel).
    pub peer: Peer,
    /// Its predecessor, if it knows one.
    pub predecessor: Option<Peer>,
    /// Its successor list, nearest first (empty: a ring of one, or a node re-joining).
    pub successors: Vec<Peer>,
}

impl DhtNode {
    /// Asks `peer` for its predecessor and successor list (one `get_neighbors` request over
    /// the endpoint, within the endpoint's request timeout). A node that is not a ring member
    /// answers with a refusal: [`Error::Refused`]. Asking this node itself answers from its
    /// own status, without the network.
    pub async fn neighbors_of(&self, peer: Peer) -> Result<Neighbors, Error> {
        if peer.id == self.id() {
            let st = self.status().await?;
            return Ok(Neighbors {
                peer: self.peer(),
                predecessor: st.predecessor,
                successors: st.successors,
            });
        }
        let to = PeerAddr {
            id: peer.id,
            addr: peer.addr,
        };
        let bytes = self
            .endpoint()
            .request(&to, super::task::command(Request::GetNeighbors.encode()))
            .await?;
        match Response::decode(&bytes, MAX_ANSWER)? {
            Response::Neighbors {
                predecessor,
                successors,
            } => Ok(Neighbors {
                peer,
                predecessor: predecessor.map(Peer::from),
                successors: successors.into_iter().map(Peer::from).collect(),
            }),
            Response::Refused { reason } => Err(Error::Refused {
                peer: peer.id,
                reason,
            }),
            _ => Err(Error::Malformed(format!(
                "node {} answered get_neighbors with another message",
                peer.id
            ))),
        }
    }
}
