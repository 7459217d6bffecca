//! The types of the node's interface: what the driver feeds in ([`Reply`], [`RequestFailure`],
//! [`Contact`]) and what comes out ([`Output`], [`Event`] and their results), and the node's
//! lifecycle state ([`NodeState`]).

use std::net::SocketAddr;

use themis_crypto::NodeId;

use crate::proto::record::ProviderRecord;
use crate::proto::wire::Peer;

/// Identifies a query started with a command; carried by the matching [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub(super) u64);

impl QueryId {
    /// The raw number (unique per node).
    pub fn raw(self) -> u64 {
        self.0
    }
}

/// Where a node stands in its lifecycle (paper §6.1 join and leave).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeState {
    /// A member of a ring (possibly a ring of its own).
    Member,
    /// Joining a ring through its bootstraps (or re-joining after losing every neighbour).
    Joining,
    /// Handing its records to its successor before it leaves.
    Leaving,
    /// Gone: it answers every request with a refusal.
    Left,
}

impl NodeState {
    /// `"member"`, `"joining"`, `"leaving"` or `"left"`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Member => "member",
            NodeState::Joining => "joining",
            NodeState::Leaving => "leaving",
            NodeState::Left => "left",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node to contact: an address, and the node id if known. Bootstrapping from a bare address
/// is possible: the id is then learnt from the authenticated reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contact {
    /// Listening address.
    pub addr: SocketAddr,
    /// Expected node id, if known.
    pub id: Option<NodeId>,
}

impl From<Peer> for Contact {
    fn from(p: Peer) -> Self {
        Self {
            addr: p.addr,
            id: Some(p.id),
        }
    }
}

impl From<SocketAddr> for Contact {
    fn from(addr: SocketAddr) -> Self {
        Self { addr, id: None }
    }
}

/// Why a request this node sent got no answer (reported by the driver).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestFailure {
    /// No answer in time.
    Timeout,
    /// No connection could be made.
    Unreachable,
    /// The endpoint refused the request (e.g. the peer's id did not match `expect`).
    Refused,
}

/// An authenticated answer to a request: the driver passes the node id the secure channel
/// authenticated and the response bytes.
#[derive(Clone, Copy, Debug)]
pub struct Reply<'a> {
    /// The responder's authenticated node id.
    pub from: NodeId,
    /// The response message.
    pub bytes: &'a [u8],
}

/// Something the driver must do, or report.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send a request to `to` and report its answer with `handle_response(request_id, ..)`.
    /// If `expect` is `Some`, the driver must check the authenticated id of the peer at `to`
    /// equals it and report [`RequestFailure::Refused`] otherwise.
    Send {
        /// Correlates the answer.
        request_id: u64,
        /// Listening address of the peer.
        to: SocketAddr,
        /// Node id the peer must authenticate as, if known.
        expect: Option<NodeId>,
        /// The request message.
        bytes: Vec<u8>,
    },
    /// Ask whoever listens at `to` for its node id, without a handshake (the endpoint's
    /// `identify`), and report it with [`Node::handle_identified`](crate::Node::handle_identified)`(request_id, ..)`. Used to
    /// tell whether a peer seen at a new address still runs at its old one (PROTOCOL.md
    /// §6.15).
    Identify {
        /// Correlates the answer.
        request_id: u64,
        /// The address to ask.
        to: SocketAddr,
    },
    /// Answer the request that came in with `token`.
    Respond {
        /// The driver's token from `handle_request`.
        token: u64,
        /// The response message.
        bytes: Vec<u8>,
    },
    /// Something happened.
    Event(Event),
}

/// The answer of a node find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The successor of the target (the node responsible for it).
    pub successor: Peer,
    /// Number of nodes queried in sequence along the path (0: answered from the local table).
    pub hops: u32,
}

/// Verified provider records of a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Providers {
    /// The name looked up.
    pub name: String,
    /// Verified, unexpired records (possibly empty); never a tombstone.
    pub records: Vec<ProviderRecord>,
    /// Verified, unexpired tombstones found with them: these providers withdrew the name
    /// (readers merging several replicas drop a provider whose tombstone is newest).
    pub withdrawn: Vec<ProviderRecord>,
    /// Hops of the lookup that produced the records.
    pub hops: u32,
    /// The replica index (`r`) they came from.
    pub replica: u8,
}

/// What [`crate::Node::unregister`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unregister {
    /// The name was not registered.
    NotRegistered,
    /// Re-stores stopped; no tombstone is stored (not a member, records already expired, or
    /// too many queries): the records expire at their TTL.
    Removed,
    /// Re-stores stopped and tombstones are being stored: [`Event::Withdrawn`] follows.
    Withdrawing(QueryId),
}

/// Why a query failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryError {
    /// No peer made progress: every candidate failed, timed out or was rejected.
    Exhausted,
    /// The node left or never joined.
    NotMember,
}

/// Events reported through [`Output::Event`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A `find` finished.
    Found {
        /// The query.
        query: QueryId,
        /// Its result.
        result: Result<Found, QueryError>,
    },
    /// A `register` finished: how many of the k+1 replicas were stored.
    Registered {
        /// The query.
        query: QueryId,
        /// The name.
        name: String,
        /// Replicas accepted.
        stored: u8,
        /// Replicas that failed (they are retried after `Config::retry_delay`).
        failed: u8,
    },
    /// An `unregister` finished storing its tombstones: how many of the k+1 replicas took one.
    Withdrawn {
        /// The query.
        query: QueryId,
        /// The name.
        name: String,
        /// Replicas that stored the tombstone.
        stored: u8,
        /// Replicas that did not (their record expires at its TTL).
        failed: u8,
    },
    /// A `lookup_providers` finished.
    Providers {
        /// The query.
        query: QueryId,
        /// Its result.
        result: Result<Providers, QueryError>,
    },
    /// The node joined a ring.
    Joined {
        /// Its first successor.
        successor: Peer,
    },
    /// No bootstrap answered the join.
    JoinFailed,
    /// A graceful leave finished; the driver may shut the node down.
    Left {
        /// Records handed to the successor.
        records_handed_over: usize,
        /// Records that could not be handed over.
        records_lost: usize,
    },
    /// The first successor changed.
    SuccessorChanged {
        /// The new successor (`None`: alone on the ring).
        successor: Option<Peer>,
    },
    /// The predecessor changed.
    PredecessorChanged {
        /// The new predecessor (`None`: unknown).
        predecessor: Option<Peer>,
    },
}
