//! The result of a finished handshake.

use std::fmt;
use std::time::Instant;

use themis_crypto::{AeadKey, NetworkId, NodeId, PublicKey};

/// Which side of the handshake this node played.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sent message 1 (the paper's A).
    Initiator,
    /// Answered with message 2 (the paper's B).
    Responder,
}

/// Length of a [`SessionId`].
pub const SESSION_ID_LEN: usize = 8;

/// The compact session index carried in every channel frame instead of the sender's 32-byte
/// identity: the first 8 bytes of `BLAKE2b-256("themis/v1/session-id", transcript hash)`.
/// Both sides compute the same value; it is public, and unique per handshake with overwhelming
/// probability.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; SESSION_ID_LEN]);

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// An established session: what both parties store with the other's identifier (paper §5.1.1:
/// "both store `K_AB` with the other party's identifier"), with the single `K_AB` replaced by
/// two directional keys.
///
/// The keys are wiped when the session is dropped. They leave a session only by
/// [`Session::into_keys`] (to the channel that uses them); with the `testing` feature (tests
/// and known-answer vectors only) the key fields are public, to read and to build sessions from
/// known keys.
pub struct Session {
    /// Which side this node played.
    pub role: Role,
    /// The network both sides proved membership of.
    pub network: NetworkId,
    /// This node's id.
    pub local_id: NodeId,
    /// The authenticated peer id (`h(peer_public, network)`, checked).
    pub peer_id: NodeId,
    /// The peer's long-term public key.
    pub peer_public: PublicKey,
    /// Compact index of this session, carried in channel frames.
    pub session_id: SessionId,
    /// Hash of the whole handshake transcript.
    pub transcript_hash: [u8; 32],
    /// Key for frames this node sends.
    #[cfg(feature = "testing")]
    pub send_key: AeadKey,
    /// Key for frames this node sends.
    #[cfg(not(feature = "testing"))]
    pub(crate) send_key: AeadKey,
    /// Key for frames this node receives.
    #[cfg(feature = "testing")]
    pub recv_key: AeadKey,
    /// Key for frames this node receives.
    #[cfg(not(feature = "testing"))]
    pub(crate) recv_key: AeadKey,
    /// When the handshake finished (the `now` passed with the last message).
    pub established_at: Instant,
}

impl Session {
    /// The session's keys, `(send, recv)`, for the channel that uses them; the rest of the
    /// session (ids, role, time) is read from its fields first.
    pub fn into_keys(self) -> (AeadKey, AeadKey) {
        (self.send_key, self.recv_key)
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("network", &self.network)
            .field("local_id", &self.local_id)
            .field("peer_id", &self.peer_id)
            .field("session_id", &self.session_id)
            .field("keys", &"<redacted>")
            .finish()
    }
}
