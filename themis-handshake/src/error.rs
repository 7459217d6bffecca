//! The one error type of this crate.

use themis_crypto::{AdmissionProblem, NetworkId, NodeId};

use crate::SessionId;

/// Everything that can make a handshake step fail.
///
/// A failed step never changes the state it was given: a waiting [`crate::Initiator`] keeps
/// waiting for the genuine message 2, and a pending responder entry keeps waiting for the genuine
/// message 3. The caller may log the error and drop the datagram.
///
/// Cryptographic failures ([`Error::BadSignature`], [`Error::BadKeyConfirmation`],
/// [`Error::NonContributory`]) are deliberately terse: they say *that* a check failed, never
/// which bytes were wrong, so that a log line or an error sent back never helps an attacker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a well-formed handshake message (wrong length, bad length field, ...).
    #[error(
        "malformed handshake {message}: {reason} (the peer runs an incompatible implementation, or the datagram was damaged)"
    )]
    Malformed {
        /// Which message was being parsed ("message 1", ...).
        message: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The first byte names a protocol version this build does not speak.
    #[error(
        "unsupported protocol version {found} (this build speaks version 1; upgrade the older node)"
    )]
    UnsupportedVersion {
        /// The version byte received.
        found: u8,
    },
    /// The type byte is not the message expected at this point.
    #[error("unexpected message type 0x{found:02x}, expected 0x{expected:02x} ({expected_name})")]
    WrongMessageType {
        /// The type byte expected.
        expected: u8,
        /// Human name of the expected message.
        expected_name: &'static str,
        /// The type byte received.
        found: u8,
    },
    /// The message names another node as its recipient (paper §5.1.1: "Bob checks that he was
    /// the intended recipient"; Alice checks "that the message was meant for her").
    #[error(
        "handshake message addressed to node {addressed_to}, but this node is {ours}; dropped (misrouted, or replayed from another session)"
    )]
    NotIntendedRecipient {
        /// This node's id.
        ours: NodeId,
        /// The id the message names as its recipient.
        addressed_to: NodeId,
    },
    /// A message 1 signed with this node's own key arrived: it was reflected back to us, or
    /// someone holds a copy of our key.
    #[error("refused a handshake message 1 signed with this node's own key (reflected message)")]
    Reflected,
    /// The caller asked to open a handshake with this node itself.
    #[error("refusing to open a handshake with this node's own id {0}")]
    SelfHandshake(NodeId),
    /// The peer belongs to a different THEMIS network: another name, or the same name open
    /// on one side and closed on the other, or closed under another admission key
    /// (PROTOCOL.md §2.10).
    #[error(
        "peer is on network {}, this node is on network {}; check both nodes' network id and admission key settings (a node joins a closed network only with --admission-key and a certificate)", theirs.describe(), ours.describe()
    )]
    NetworkMismatch {
        /// Our network.
        ours: NetworkId,
        /// The network named in message 1.
        theirs: NetworkId,
    },
    /// The responder's public key does not hash to the node id the initiator meant to reach
    /// (paper §5.1.1: "Alice verifies that the hash of PK_B corresponds to the identity she was
    /// intending to communicate with").
    #[error(
        "identity mismatch: expected node {expected}, but the peer's key hashes to {actual} (wrong address, or an impostor)"
    )]
    IdentityMismatch {
        /// The node id the initiator asked for.
        expected: NodeId,
        /// `h(PK_B, net_id)` of the key in message 2.
        actual: NodeId,
    },
    /// A handshake signature did not verify.
    #[error("handshake signature verification failed")]
    BadSignature,
    /// Message 2 does not echo the nonce of our message 1: stale, replayed, or for another
    /// handshake.
    #[error("message 2 does not answer our message 1 (nonce mismatch): stale or replayed")]
    NonceMismatch,
    /// Message 3 names a session for which no handshake is pending here (never started, already
    /// finished, or expired).
    #[error("no pending handshake for session {session_id} (unknown, already finished or expired)")]
    UnknownSession {
        /// The session id carried by message 3.
        session_id: SessionId,
    },
    /// The key confirmation of message 3 did not verify.
    #[error("handshake key confirmation failed")]
    BadKeyConfirmation,
    /// The responder's table of pending handshakes is full of live entries.
    #[error(
        "refused a new handshake: {capacity} handshakes are already pending (flood, or raise `pending_capacity`)"
    )]
    PendingTableFull {
        /// The configured capacity.
        capacity: usize,
    },
    /// A new pending handshake drew the session id of one already pending (probability about
    /// 2^-64 per pair; the initiator simply retries).
    #[error("session id {0} is already pending; message 1 refused, the initiator should retry")]
    SessionIdInUse(SessionId),
    /// The initiator's deadline passed before a valid message 2 arrived.
    #[error(
        "handshake with node {peer} timed out (no valid answer before the deadline; is the peer reachable?)"
    )]
    TimedOut {
        /// The node we tried to reach.
        peer: NodeId,
    },
    /// The initiator already finished; a second message 2 is ignored.
    #[error("this handshake already finished; duplicate message 2 ignored")]
    AlreadyFinished,
    /// The peer's admission certificate was refused (closed network, PROTOCOL.md §2.10). Only
    /// reported once the peer's handshake signature verified: the peer really sent it.
    #[error(
        "node {peer} is not admitted to this closed network: its admission certificate {problem}"
    )]
    AdmissionRefused {
        /// The peer's node id.
        peer: NodeId,
        /// Which check failed.
        problem: AdmissionProblem,
    },
    /// This node is on a closed network but has no admission certificate configured
    /// ([`crate::HandshakeConfig::admission`]).
    #[error(
        "this node is on the closed network {} but has no admission certificate; configure one (`themis node --admission-cert`)", .0.describe()
    )]
    NoAdmissionCertificate(NetworkId),
    /// The peer's ephemeral key is of low order: the exchange would not be contributory.
    #[error("key exchange rejected: the peer's ephemeral key is of low order")]
    NonContributory,
}
