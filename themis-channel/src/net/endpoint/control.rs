//! The endpoint's control messages (types 0x38..=0x3D): small, unauthenticated, fixed-size.
//!
//! None of them can make a request succeed: they can only make a handshake or a request fail
//! (identity mismatch, mode mismatch, busy), drop a session so that the next request handshakes
//! again (unknown session), or tell a caller which key an address *claims* to hold (identify;
//! the key is trusted only once message 2's signature verifies under it). Each answer is no
//! larger than the frame it answers, so a spoofed source address gains an attacker no
//! amplification, and the endpoint rate-limits them.

use themis_crypto::{NodeId, PublicKey};
use themis_handshake::SessionId;

use crate::wire::{
    BUSY_LEN, IDENTIFY_LEN, IDENTITY_MISMATCH_LEN, MODE_MISMATCH_LEN, TYPE_BUSY, TYPE_IDENTIFY,
    TYPE_IDENTITY, TYPE_IDENTITY_MISMATCH, TYPE_MODE_MISMATCH, TYPE_UNKNOWN_SESSION,
    UNKNOWN_SESSION_LEN, VERSION as V,
};

/// A decoded control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// Asks for the receiver's public key.
    Identify {
        /// Echoed in the answer.
        token: [u8; 16],
    },
    /// The answer to `Identify`.
    Identity {
        /// The request's token.
        token: [u8; 16],
        /// The key the sender claims to hold.
        public: PublicKey,
    },
    /// A message 1 reached a node with another id.
    IdentityMismatch {
        /// `N_A` of the message 1 it answers.
        nonce: [u8; 32],
        /// The key the answering node holds.
        public: PublicKey,
    },
    /// The sender runs in the other mode.
    ModeMismatch {
        /// The nonce of the refused message 1, or the sender id of the refused insecure frame.
        reference: [u8; 32],
        /// The refused frame's sequence number (0 for a message 1).
        seq: u64,
    },
    /// The sender has no session `session_id`.
    UnknownSession {
        /// The session the refused command named.
        session_id: SessionId,
        /// Its sequence number.
        seq: u64,
    },
    /// The sender authenticated our command `seq` on session `session_id` (all zero in
    /// insecure mode) but had no handler slot for it: the request failed, nothing ran.
    Busy {
        /// The session the refused command came on (zero in insecure mode).
        session_id: SessionId,
        /// The refused command's sequence number.
        seq: u64,
    },
}

fn arr<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

impl Control {
    /// Parses a control message; `None` for anything that is not exactly one of them.
    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        let (&[v, ty], _) = b.split_first_chunk::<2>()?;
        if v != V {
            return None;
        }
        let exact = |n: usize| (b.len() == n).then_some(());
        match ty {
            TYPE_IDENTIFY => {
                exact(IDENTIFY_LEN)?;
                Some(Self::Identify { token: arr(b, 2)? })
            }
            TYPE_IDENTITY => {
                exact(IDENTIFY_LEN)?;
                Some(Self::Identity {
                    token: arr(b, 2)?,
                    public: PublicKey::from_bytes(arr(b, 18)?),
                })
            }
            TYPE_IDENTITY_MISMATCH => {
                exact(IDENTITY_MISMATCH_LEN)?;
                Some(Self::IdentityMismatch {
                    nonce: arr(b, 2)?,
                    public: PublicKey::from_bytes(arr(b, 34)?),
                })
            }
            TYPE_MODE_MISMATCH => {
                exact(MODE_MISMATCH_LEN)?;
                Some(Self::ModeMismatch {
                    reference: arr(b, 2)?,
                    seq: u64::from_be_bytes(arr(b, 34)?),
                })
            }
            TYPE_UNKNOWN_SESSION => {
                exact(UNKNOWN_SESSION_LEN)?;
                Some(Self::UnknownSession {
                    session_id: SessionId(arr(b, 2)?),
                    seq: u64::from_be_bytes(arr(b, 10)?),
                })
            }
            TYPE_BUSY => {
                exact(BUSY_LEN)?;
                Some(Self::Busy {
                    session_id: SessionId(arr(b, 2)?),
                    seq: u64::from_be_bytes(arr(b, 10)?),
                })
            }
            _ => None,
        }
    }

    /// The wire bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(IDENTITY_MISMATCH_LEN);
        out.push(V);
        match self {
            Self::Identify { token } => {
                out.push(TYPE_IDENTIFY);
                out.extend_from_slice(token);
                out.extend_from_slice(&[0; 32]);
            }
            Self::Identity { token, public } => {
                out.push(TYPE_IDENTITY);
                out.extend_from_slice(token);
                out.extend_from_slice(public.as_bytes());
            }
            Self::IdentityMismatch { nonce, public } => {
                out.push(TYPE_IDENTITY_MISMATCH);
                out.extend_from_slice(nonce);
                out.extend_from_slice(public.as_bytes());
            }
            Self::ModeMismatch { reference, seq } => {
                out.push(TYPE_MODE_MISMATCH);
                out.extend_from_slice(reference);
                out.extend_from_slice(&seq.to_be_bytes());
            }
            Self::UnknownSession { session_id, seq } => {
                out.push(TYPE_UNKNOWN_SESSION);
                out.extend_from_slice(&session_id.0);
                out.extend_from_slice(&seq.to_be_bytes());
            }
            Self::Busy { session_id, seq } => {
                out.push(TYPE_BUSY);
                out.extend_from_slice(&session_id.0);
                out.extend_from_slice(&seq.to_be_bytes());
            }
        }
        out
    }
}

/// Reads `N_A` (bytes 34..66) of a message 1, to answer it with a control message.
pub(crate) fn msg1_nonce(msg1: &[u8]) -> Option<[u8; 32]> {
    arr(msg1, 2 + 32)
}

/// A mode-mismatch reference for an insecure frame: its sender id.
pub(crate) fn id_ref(id: &NodeId) -> [u8; 32] {
    *id.as_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all() -> Vec<Control> {
        let pk = PublicKey::from_bytes([7; 32]);
        vec![
            Control::Identify { token: [1; 16] },
            Control::Identity {
                token: [2; 16],
                public: pk,
            },
            Control::IdentityMismatch {
                nonce: [3; 32],
                public: pk,
            },
            Control::ModeMismatch {
                reference: [4; 32],
                seq: 9,
            },
            Control::UnknownSession {
                session_id: SessionId([5; 8]),
                seq: u64::MAX,
            },
            Control::Busy {
                session_id: SessionId([6; 8]),
                seq: 3,
            },
        ]
    }

    #[test]
    fn round_trip_and_sizes() {
        for c in all() {
            let b = c.encode();
            assert_eq!(Control::decode(&b), Some(c));
            let want = match c {
                Control::Identify { .. } | Control::Identity { .. } => IDENTIFY_LEN,
                Control::IdentityMismatch { .. } => IDENTITY_MISMATCH_LEN,
                Control::ModeMismatch { .. } => MODE_MISMATCH_LEN,
                Control::UnknownSession { .. } => UNKNOWN_SESSION_LEN,
                Control::Busy { .. } => BUSY_LEN,
            };
            assert_eq!(b.len(), want);
            // Any other length is refused.
            assert_eq!(Control::decode(&b[..b.len() - 1]), None);
            let mut longer = b.clone();
            longer.push(0);
            assert_eq!(Control::decode(&longer), None);
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Some(c) = Control::decode(&b) {
                prop_assert_eq!(c.encode(), b);
            }
        }
    }
}
