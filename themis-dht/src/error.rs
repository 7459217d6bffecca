//! The crate's error type.

use themis_crypto::NodeId;

use crate::proto::node::{NodeState, QueryError};
use crate::proto::owner::DelegationProblem;
use crate::proto::record::Refusal;

/// Everything that can go wrong when using the DHT core.
///
/// Errors about peers' messages never reach the caller as `Err`: the core answers the peer
/// (a `refused` response), counts the event in [`crate::Metrics`] and carries on. These variants
/// are about the local caller's own requests and about decoding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message was larger than the configured maximum; it was not decoded.
    #[error(
        "DHT message of {len} bytes exceeds the {max}-byte limit (Config::max_message_size); the peer is misbehaving or runs with a larger limit"
    )]
    MessageTooLarge {
        /// Length of the message.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A message did not decode as the expected CBOR schema or broke a protocol limit.
    #[error("malformed DHT message: {0}")]
    Malformed(String),
    /// A service name or record field given to `register` broke a limit.
    #[error("invalid provider record: {0}")]
    InvalidRecord(String),
    /// The replication factor asked for is above the network's maximum.
    #[error(
        "replication factor k = {k} is above this network's maximum {max} (Config::max_k); use a smaller k"
    )]
    ReplicationTooHigh {
        /// The factor asked for.
        k: u8,
        /// The network maximum.
        max: u8,
    },
    /// Too many queries are in progress.
    #[error(
        "{limit} DHT queries are already in progress (Config::max_queries); wait for some to finish"
    )]
    TooManyQueries {
        /// The configured limit.
        limit: usize,
    },
    /// Too many names are registered by this node.
    #[error(
        "this node already registers {limit} names (Config::max_registrations); unregister one first"
    )]
    TooManyRegistrations {
        /// The configured limit.
        limit: usize,
    },
    /// The node is not (or no longer) a member of a ring.
    #[error("the node is {state}: {what} is not possible now")]
    InvalidState {
        /// The node's state.
        state: NodeState,
        /// What was attempted.
        what: &'static str,
    },
    /// A name cannot be provided with the delegation given (owned names, PROTOCOL.md §6.4).
    #[error("cannot provide '{name}': {problem}")]
    Delegation {
        /// The service name.
        name: String,
        /// What is wrong with the delegation.
        problem: DelegationProblem,
    },
    /// A provider record failed verification.
    #[error("provider record rejected: {0}")]
    Record(Refusal),

    /// A query (find, provider lookup) ended without an answer.
    #[error("DHT {what} failed: {}", describe_query_error(*.reason))]
    Query {
        /// What was attempted.
        what: &'static str,
        /// Why it failed.
        reason: QueryError,
    },
    /// No bootstrap node answered the join.
    #[error(
        "joining the DHT failed: none of the {tried} bootstrap contacts answered (check the addresses, that those nodes run, and that they use the same network id and security mode)"
    )]
    JoinFailed {
        /// Bootstrap contacts given.
        tried: usize,
    },
    /// A bootstrap contact string did not parse.
    #[error(
        "invalid DHT contact {input:?}: expected NODE_ID_HEX@IP:PORT or IP:PORT (e.g. 127.0.0.1:7000)"
    )]
    BadContact {
        /// The text given.
        input: String,
    },
    /// The identity given to the driver is not the endpoint's.
    #[error(
        "the DHT identity is node {identity} but the endpoint runs as node {endpoint}: start both with the same key and network id"
    )]
    IdentityMismatch {
        /// Node id of the identity given to the driver.
        identity: NodeId,
        /// The endpoint's node id.
        endpoint: NodeId,
    },
    /// An operation of a [`DhtNode`](crate::DhtNode) did not finish within
    /// `DriverConfig::command_timeout`. The core's work goes on in the background and its
    /// result is discarded.
    #[error(
        "DHT {what} did not finish within {after:?} (DriverConfig::command_timeout); the ring may be partitioned, overloaded or still repairing: retry, or raise the timeout"
    )]
    TimedOut {
        /// What was attempted.
        what: &'static str,
        /// The configured limit.
        after: std::time::Duration,
    },
    /// The node would advertise an address no other host can dial.
    #[error(
        "this node listens on {bound}, which other nodes cannot dial: set the address they reach it at (DriverConfig::advertise)"
    )]
    UnspecifiedAddress {
        /// The endpoint's bound address.
        bound: std::net::SocketAddr,
    },
    /// Another node refused a request this node sent on the caller's behalf (such as
    /// [`DhtNode::neighbors_of`](crate::DhtNode::neighbors_of)).
    #[error("node {peer} refused the request: {reason}")]
    Refused {
        /// The node that refused.
        peer: NodeId,
        /// Its reason.
        reason: Refusal,
    },
    /// The node was shut down (or its driver task ended); nothing more can be done with it.
    #[error("the DHT node is shut down; start a new node")]
    Stopped,
    /// The endpoint could not be created.
    #[error("DHT endpoint: {0}")]
    Endpoint(#[from] themis_channel::Error),
}

fn describe_query_error(reason: QueryError) -> &'static str {
    match reason {
        QueryError::Exhausted => {
            "no peer made progress (every candidate failed, timed out or gave a useless answer); the ring may be partitioned or still stabilizing, retry later"
        }
        QueryError::NotMember => {
            "this node is not a ring member (it left, or its join has not finished)"
        }
    }
}
