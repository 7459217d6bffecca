use std::net::SocketAddr;
use std::time::Duration;

use themis_crypto::NodeId;

/// Everything that can go wrong in `themis-mesh`.
///
/// Every message names the service and says what an operator (or the calling code) can do next.
/// The errors of the layers below ([`themis_channel::Error`], [`themis_dht::Error`]) are kept
/// as they are, typed (boxed: they are large, and rare), so that a caller can tell a timeout
/// from a refusal without reading the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Discovery searched every replica of a name and found no live provider record.
    #[error(
        "no provider found for '{service}' after searching its {replicas} replicas; check that a provider registered this name on this network and keeps re-storing it"
    )]
    NotFound {
        /// The service name.
        service: String,
        /// How many replicas (`k + 1`) were searched.
        replicas: u32,
    },
    /// A balancer has no provider at all for its service.
    #[error("no provider of '{service}' is known to this caller; run discovery for it first")]
    NoProviders {
        /// The service name.
        service: String,
    },
    /// Every provider in scope is ejected and panic mode is disabled.
    #[error(
        "all {count} providers of '{service}' are ejected after repeated failures; the first returns in {retry_in:?} (panic mode is disabled, so ejected providers are not used)"
    )]
    AllEjected {
        /// The service name.
        service: String,
        /// Number of providers in scope (all ejected).
        count: usize,
        /// Time until the first of them returns from its cooldown.
        retry_in: Duration,
    },
    /// The caller pinned a version that no known provider announces.
    #[error(
        "no provider of '{service}' announces version '{version}' (versions available: {available}); unpin the version or deploy it"
    )]
    VersionUnavailable {
        /// The service name.
        service: String,
        /// The pinned version.
        version: String,
        /// The versions that are available, comma separated (at most a few shown).
        available: String,
    },
    /// A retry was refused because retries already use up the retry budget.
    #[error(
        "retry budget of '{service}' exhausted: retries are capped at {percent}% of recent calls plus {min_per_sec} per second, so this call fails fast instead of adding load to a struggling service"
    )]
    RetryBudgetExhausted {
        /// The service name.
        service: String,
        /// The configured retry ratio, in percent of calls.
        percent: u32,
        /// The configured floor of retries per second.
        min_per_sec: u32,
    },
    /// A call already made the maximum number of attempts.
    #[error(
        "call to '{service}' gave up after {attempts} attempts (the per-call maximum); the errors of the attempts tell why each provider failed"
    )]
    AttemptsExhausted {
        /// The service name.
        service: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The provider's access policy does not list the caller.
    #[error(
        "caller {caller} is not allowed to call '{service}'; the provider's operator must add this node id to the service's allow-list"
    )]
    AccessDenied {
        /// The caller's node id.
        caller: NodeId,
        /// The service name.
        service: String,
    },
    /// A bounded table is full.
    #[error(
        "{what} is full (limit {limit}); raise the limit in the configuration or remove entries"
    )]
    LimitExceeded {
        /// Which table.
        what: &'static str,
        /// Its limit.
        limit: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid {what} configuration: {reason}")]
    InvalidConfig {
        /// Which configuration.
        what: &'static str,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// The secure endpoint could not be set up: its listener could not be bound (the message
    /// names the address), or its configuration was refused.
    #[error(transparent)]
    Channel(Box<themis_channel::Error>),
    /// A DHT operation (register, discovery, status) failed; the DHT's message names the
    /// operation and what to do.
    #[error(transparent)]
    Dht(Box<themis_dht::Error>),
    /// No bootstrap contact let this node join the ring (paper §6.1 join).
    #[error("cannot join the ring: {0}")]
    Join(#[source] Box<themis_dht::Error>),
    /// The request of one attempt of a call failed on the network (timeout, unreachable,
    /// handshake failure, busy provider).
    #[error("calling '{service}' on {provider} at {addr}: {source}")]
    Call {
        /// The service name.
        service: String,
        /// The provider the attempt went to.
        provider: NodeId,
        /// Its address.
        addr: SocketAddr,
        /// What the endpoint reported.
        #[source]
        source: Box<themis_channel::Error>,
    },
    /// A provider answered a call with an error.
    #[error("provider {provider} of '{service}' answered: {kind}: {message}")]
    Remote {
        /// The service name.
        service: String,
        /// The provider that answered.
        provider: NodeId,
        /// Why it refused.
        kind: crate::RemoteErrorKind,
        /// Its message (at most 512 bytes).
        message: String,
    },
    /// The provider's application refused the request (a caller error, such as an HTTP 4xx
    /// of a sidecar's upstream): the provider is healthy and the call is not retried. `code`
    /// and `body` are the application's.
    #[error("provider {provider} of '{service}' refused the request with code {code}")]
    Rejected {
        /// The service name.
        service: String,
        /// The provider that answered.
        provider: NodeId,
        /// The application's code (a sidecar's: the upstream's HTTP status).
        code: u16,
        /// The application's answer.
        body: bytes::Bytes,
    },
    /// The provider's application failed and answered (an HTTP 5xx of a sidecar's upstream, to
    /// an HTTP call): a provider failure, returned when the call was not (or could no more be)
    /// failed over. `code` and `body` are the application's.
    #[error("provider {provider} of '{service}' failed with code {code}")]
    Failed {
        /// The service name.
        service: String,
        /// The provider that answered.
        provider: NodeId,
        /// The application's code (a sidecar's: the upstream's HTTP status).
        code: u16,
        /// The application's answer (an HTTP response envelope).
        body: bytes::Bytes,
    },
    /// The call's deadline ([`CallOptions::timeout`](crate::CallOptions::timeout)) passed
    /// before a provider answered.
    #[error(
        "call to '{service}' did not complete within its deadline of {after:?} (providers slow or failing; the last attempt was abandoned, and may or may not have run)"
    )]
    DeadlineExceeded {
        /// The service name.
        service: String,
        /// The deadline.
        after: Duration,
    },
    /// The call is nested in more calls than the mesh allows: a service probably calls itself
    /// through the mesh, directly or through others.
    #[error(
        "call to '{service}' refused: it is nested in {hops} calls, above the limit of {limit} (a service whose upstream calls itself through the mesh? check its upstream URL)"
    )]
    HopLimit {
        /// The service name.
        service: String,
        /// Calls the refused call was nested in.
        hops: u8,
        /// The limit.
        limit: u8,
    },
    /// Another node answered a request with bytes that are not an answer to it (a node of an
    /// older themis that does not know the request, or a misbehaving one).
    #[error(
        "node {peer} does not answer {request} requests (an older themis version, or a misbehaving node)"
    )]
    UnexpectedAnswer {
        /// The node that answered.
        peer: NodeId,
        /// The request.
        request: &'static str,
    },
    /// The node is stopped.
    #[error("the mesh node is stopped; start a new one")]
    Stopped,
    /// A key succession statement (PROTOCOL.md §2.9) was refused: one a peer presented, or the
    /// one this node was configured to present (`peer` is then this node).
    #[error("the key succession statement of node {peer} is refused: {source}")]
    Succession {
        /// The node the statement came from.
        peer: NodeId,
        /// What is wrong with it.
        #[source]
        source: Box<themis_crypto::Error>,
    },
    /// A node that answered in the place of an old id presented no statement naming it as the
    /// old id's successor (PROTOCOL.md §7.7).
    #[error(
        "node {peer} is not a successor of {old}: it presents no key succession statement for it (a wrong id, or its grace period ended)"
    )]
    NotASuccessor {
        /// The node that answered.
        peer: NodeId,
        /// The id that was dialed.
        old: NodeId,
    },
}

impl From<themis_channel::Error> for Error {
    fn from(e: themis_channel::Error) -> Self {
        Self::Channel(Box::new(e))
    }
}

impl From<themis_dht::Error> for Error {
    fn from(e: themis_dht::Error) -> Self {
        Self::Dht(Box::new(e))
    }
}
