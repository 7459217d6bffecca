//! The one error type of this crate.

use std::time::Duration;

use themis_crypto::NodeId;
use themis_handshake::SessionId;

use crate::{TransportError, proto::Mode};

/// Everything that can go wrong when sealing or opening a channel frame.
///
/// Every way an incoming frame can be rejected has its own variant, so an endpoint can react to
/// each (answer a [`Error::DuplicateCommand`] from a response cache, start a handshake on
/// [`Error::UnknownSession`], count the rest). A rejected frame never changes the channel's
/// protocol state (sequence numbers, replay window, outstanding requests).
///
/// [`Error::AuthenticationFailed`] is deliberately terse: it says *that* a frame did not
/// authenticate, never *why* (wrong key, tampered byte, reflected frame), so nothing about keys or
/// plaintexts leaks through a log line or an error sent back to a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A [`crate::ChannelConfig`] value is outside its allowed range.
    #[error("invalid channel configuration: {0}")]
    InvalidConfig(String),

    /// The frame is shorter than its header (plus tag) requires.
    #[error(
        "malformed frame: {len} bytes is shorter than the {min}-byte minimum for its type; dropped"
    )]
    FrameTooShort {
        /// Length received.
        len: usize,
        /// Minimum for the frame type.
        min: usize,
    },
    /// The frame exceeds the configured maximum frame size.
    #[error(
        "frame of {len} bytes exceeds the {max}-byte frame limit; dropped (raise ChannelConfig::max_frame_len on both sides if such frames are legitimate)"
    )]
    FrameTooLarge {
        /// Length received (or claimed).
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A payload to be sealed does not fit in one frame.
    #[error(
        "payload of {len} bytes does not fit in one frame (at most {max} bytes with the configured frame limit); split it or raise ChannelConfig::max_frame_len on both sides"
    )]
    PayloadTooLarge {
        /// Payload length offered.
        len: usize,
        /// Largest payload that fits.
        max: usize,
    },
    /// The first byte is not a protocol version this build speaks.
    #[error("frame has protocol version {found:#04x}; this build speaks only version 0x01")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// The type byte is not a channel frame type.
    #[error(
        "frame type {found:#04x} is not a channel frame (channel types are 0x10, 0x11, 0x20, 0x21); route handshake and control frames elsewhere"
    )]
    UnknownFrameType {
        /// The type byte found.
        found: u8,
    },
    /// A frame of the other mode arrived: a secure frame on an insecure channel or the reverse.
    #[error(
        "{found:?} frame arrived on a channel in {expected:?} mode; both peers must run the same mode (`EndpointConfig::mode`)"
    )]
    WrongMode {
        /// The channel's mode.
        expected: Mode,
        /// The frame's mode.
        found: Mode,
    },
    /// A secure frame names another session than this channel's: usually a frame of a replaced
    /// session, or of a session the peer lost.
    #[error(
        "frame for session {found}, but this channel is session {expected}; dropped (a stale frame of a replaced session, or the peer needs a new handshake)"
    )]
    UnknownSession {
        /// This channel's session id.
        expected: SessionId,
        /// The session id in the frame.
        found: SessionId,
    },
    /// An insecure frame names another sender than this channel's peer (or this node itself:
    /// a reflected frame).
    #[error("insecure frame claims sender {found}, but this channel's peer is {expected}; dropped")]
    WrongSender {
        /// The channel's peer.
        expected: NodeId,
        /// The sender named in the frame.
        found: NodeId,
    },
    /// The frame did not authenticate under this session's receive key.
    #[error("frame authentication failed")]
    AuthenticationFailed,
    /// An authentic command whose sequence number was already accepted (a replay, or a
    /// retransmission over a lossy transport: answer it from a response cache, never re-execute).
    #[error("command {seq} was already accepted (replay or retransmission); not delivered again")]
    DuplicateCommand {
        /// The repeated sequence number.
        seq: u64,
    },
    /// An authentic command older than the replay window: it can no longer be told apart from a
    /// replay, so it is refused.
    #[error(
        "command {seq} is older than the replay window (newest accepted is {newest}, window {window}); dropped"
    )]
    CommandTooOld {
        /// The sequence number received.
        seq: u64,
        /// The newest sequence number accepted so far.
        newest: u64,
        /// The window size.
        window: u64,
    },
    /// An authentic response whose sequence number matches no command this side ever sent
    /// (the paper's "S_B equals the number she sent" check failing).
    #[error("response {seq} answers no command this side sent; dropped")]
    UnsolicitedResponse {
        /// The sequence number in the response.
        seq: u64,
    },
    /// An authentic response to a command that is no longer outstanding: it was answered already
    /// or cancelled (harmless after a retransmission; delivered at most once).
    #[error("response {seq} arrived for a request already answered or cancelled; dropped")]
    DuplicateResponse {
        /// The sequence number in the response.
        seq: u64,
    },
    /// A command cannot be sent: the configured number of requests is already outstanding.
    #[error(
        "{limit} requests are already outstanding on this channel; wait for responses or cancel timed-out ones (ChannelConfig::max_outstanding)"
    )]
    TooManyOutstanding {
        /// The configured limit.
        limit: usize,
    },
    /// A response cannot be sealed for this sequence number.
    #[error("cannot send a response to command {seq}: {reason}")]
    CannotRespond {
        /// The sequence number asked for.
        seq: u64,
        /// Why not.
        reason: &'static str,
    },
    /// The session has sealed as many frames as it may; a new handshake must replace it.
    #[error(
        "session has sent {sent} frames, its hard limit is {limit}; sealing refused until a new handshake replaces the session"
    )]
    SessionExhausted {
        /// Frames sealed so far.
        sent: u64,
        /// The configured hard limit.
        limit: u64,
    },
    /// The session is older than its hard age limit; a new handshake must replace it.
    #[error(
        "session is {age:?} old, past its hard limit of {limit:?}; frames refused until a new handshake replaces the session"
    )]
    SessionExpired {
        /// Age of the session.
        age: Duration,
        /// The configured hard limit.
        limit: Duration,
    },

    /// The transport failed (a local socket problem, a closed transport, backpressure or an
    /// oversize frame); see the inner error.
    #[error(transparent)]
    Transport(#[from] TransportError),

    /// The node at the address holds another key than the node id we asked for (paper §5.1.1:
    /// "Alice verifies that the hash of PK_B corresponds to the identity she was intending to
    /// communicate with"). No session was created.
    #[error(
        "identity mismatch at {addr}: expected node {expected}, but the node there is {found} (stale address book entry, or an impostor); no session created"
    )]
    IdentityMismatch {
        /// The address contacted.
        addr: std::net::SocketAddr,
        /// The node id asked for.
        expected: NodeId,
        /// The node id of the key the peer presented (unauthenticated when it came in a control
        /// message; authenticated when it came in a signed message 2).
        found: NodeId,
    },
    /// Closed network (PROTOCOL.md §2.10): the peer's message 2 verified, but the admission
    /// certificate in it does not admit it.
    #[error(
        "node {peer} at {addr} is not admitted to this closed network: {reason}; no session created (renew its certificate with `themis admission issue`, or check both nodes' --admission-key)"
    )]
    NotAdmitted {
        /// The node.
        peer: NodeId,
        /// Its address.
        addr: std::net::SocketAddr,
        /// Which check of its certificate failed.
        reason: String,
    },
    /// The peer runs in the other mode (secure vs insecure).
    #[error(
        "peer {addr} refuses our {ours:?} frames: it runs in the other mode; set the same `mode` on both nodes"
    )]
    ModeMismatch {
        /// The peer's address.
        addr: std::net::SocketAddr,
        /// Our mode.
        ours: Mode,
    },
    /// No valid answer to message 1 before the handshake timeout.
    #[error(
        "handshake with {peer} at {addr} timed out after {after:?} (peer down, unreachable, or overloaded)"
    )]
    HandshakeTimeout {
        /// The node.
        peer: NodeId,
        /// Its address.
        addr: std::net::SocketAddr,
        /// The timeout.
        after: Duration,
    },
    /// The handshake could not be started or was refused.
    #[error("handshake with {peer} failed: {source}")]
    Handshake {
        /// The node.
        peer: NodeId,
        /// Why.
        #[source]
        source: themis_handshake::Error,
    },
    /// No response before the request timeout (the request may or may not have been executed).
    #[error(
        "request to {peer} at {addr} timed out after {after:?} (it may or may not have been executed; peer down, overloaded, or the network lossy)"
    )]
    RequestTimeout {
        /// The node.
        peer: NodeId,
        /// Its address.
        addr: std::net::SocketAddr,
        /// The timeout.
        after: Duration,
    },
    /// The peer no longer knows the session the request used (it restarted, or evicted us).
    /// The session is dropped; the next request performs a new handshake.
    #[error(
        "peer {peer} lost our session (restarted or evicted it); retry: the next request performs a new handshake"
    )]
    SessionLost {
        /// The node.
        peer: NodeId,
    },
    /// Nothing listens at the peer's address (the operating system refused the connection:
    /// the peer is down or restarting). The request was never sent: it did not run.
    #[error(
        "peer {peer} at {addr} refused the connection (nothing listens there: the node is down or restarting); the request was not sent"
    )]
    PeerUnreachable {
        /// The node.
        peer: NodeId,
        /// Its address.
        addr: std::net::SocketAddr,
    },
    /// The request's command was sent, then the peer went away: its address now refuses
    /// connections, so no answer can come. The request may or may not have run.
    #[error(
        "peer {peer} at {addr} went away after the request was sent (its address now refuses connections); the request may or may not have been executed"
    )]
    ConnectionLost {
        /// The node.
        peer: NodeId,
        /// Its address.
        addr: std::net::SocketAddr,
    },
    /// The peer authenticated the request but every one of its handler slots was taken, so it
    /// refused it without running it (reliable transports; over UDP the request is dropped and
    /// retransmitted instead).
    #[error(
        "peer {peer} at {addr} is running its maximum of concurrent handlers and refused the request unexecuted; retry later, spread the load, or raise the peer's max_handlers"
    )]
    PeerBusy {
        /// The node.
        peer: NodeId,
        /// Its address.
        addr: std::net::SocketAddr,
    },
    /// Every session slot is held by a peer with requests in flight.
    #[error(
        "cannot open a session with {peer}: all {limit} session slots are busy; retry later or raise max_sessions"
    )]
    TooManySessions {
        /// The node.
        peer: NodeId,
        /// The configured limit.
        limit: usize,
    },
    /// Too many requests (or identify calls) are already waiting at this endpoint.
    #[error("{limit} {what} are already waiting at this endpoint; retry later")]
    Overloaded {
        /// What is waiting ("requests", "identify calls").
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A request to this node itself.
    #[error("refusing to send a request to this node itself ({0})")]
    SelfRequest(NodeId),
    /// The endpoint is shutting down or shut down.
    #[error("endpoint is shutting down; no new requests are accepted")]
    ShuttingDown,
    /// The endpoint was created outside a tokio runtime.
    #[error("an Endpoint must be created inside a tokio runtime (it spawns its receive task)")]
    NoRuntime,
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
