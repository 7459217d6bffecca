//! The endpoint's control messages (types 0x38..=0x3D): small, unauthenticated, fixed-size.
//!
//! None of them can make a request succeed: they can only make a handshake or a request fail
//! (identity mismatch, mode mismatch, busy), drop a session so that the next request handshakes
//! again (unknown session), or tell a caller which key an address *claims* to hold (identify;
//! the key is trusted only once message 2's signature verifies under it). Each answer is no
//! larger than the frame it answers, so a spoofed source address gains an attacker no
//! amplification, and the endpoint rate-limits them (PROTOCOL.md §5.2, "Control messages").

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use themis_crypto::{NodeId, PublicKey};
use themis_handshake::SessionId;

use super::EndpointCore;
use super::sessions::ChanKey;
use crate::{Error, Mode};

use crate::wire::{
    BUSY_LEN, COOKIE_LEN, COOKIE_SIZE, IDENTIFY_LEN, IDENTITY_MISMATCH_LEN, MODE_MISMATCH_LEN,
    TYPE_BUSY, TYPE_COOKIE, TYPE_COOKIE_ECHO, TYPE_IDENTIFY, TYPE_IDENTITY, TYPE_IDENTITY_MISMATCH,
    TYPE_MODE_MISMATCH, TYPE_UNKNOWN_SESSION, UNKNOWN_SESSION_LEN, VERSION as V,
};

/// A decoded control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Control {
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
    /// A responder under load wants message 1 `nonce` again behind `cookie`.
    Cookie {
        /// `N_A` of the message 1 it answers.
        nonce: [u8; 32],
        /// `MAC(secret, H("themis/v1/cookie"; address, N_A))`.
        cookie: [u8; COOKIE_SIZE],
    },
}

/// A control message under arbitrary bytes, for fuzzing (`fuzz/`): what decodes must encode to
/// a message of the same length that decodes to the same value. `Err` names the failed check.
pub(crate) fn fuzz_control(b: &[u8]) -> Result<bool, String> {
    if let Some((cookie, msg1)) = super::cookie::parse_echo(b) {
        if super::cookie::encode_echo(&cookie, msg1) != b {
            return Err("cookie echo does not round-trip".to_owned());
        }
        return Ok(true);
    }
    let Some(c) = Control::decode(b) else {
        return Ok(false);
    };
    let again = c.encode();
    if again.len() != b.len() || Control::decode(&again) != Some(c) {
        return Err(format!("control message {c:?} does not round-trip"));
    }
    Ok(true)
}

fn arr<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

impl Control {
    /// Parses a control message; `None` for anything that is not exactly one of them.
    pub(super) fn decode(b: &[u8]) -> Option<Self> {
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
            TYPE_COOKIE => {
                exact(COOKIE_LEN)?;
                Some(Self::Cookie {
                    nonce: arr(b, 2)?,
                    cookie: arr(b, 34)?,
                })
            }
            _ => None,
        }
    }

    /// The wire bytes.
    pub(super) fn encode(&self) -> Vec<u8> {
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
            Self::Cookie { nonce, cookie } => {
                out.push(TYPE_COOKIE);
                out.extend_from_slice(nonce);
                out.extend_from_slice(cookie);
            }
        }
        out
    }
}

/// Reads `N_A` (bytes 34..66) of a message 1, to answer it with a control message.
pub(super) fn msg1_nonce(msg1: &[u8]) -> Option<[u8; 32]> {
    arr(msg1, 2 + 32)
}

/// A mode-mismatch reference for an insecure frame: its sender id.
pub(super) fn id_ref(id: &NodeId) -> [u8; 32] {
    *id.as_bytes()
}

impl EndpointCore {
    /// Sends an unauthenticated reply, within the control rate limit.
    pub(super) fn reply_control(&mut self, now: Instant, to: SocketAddr, msg: Control) {
        if self.control_rate.allow(now) {
            self.counters.control_sent += 1;
            self.transmit(to, Bytes::from(msg.encode()));
        } else {
            self.counters.control_rate_limited += 1;
        }
    }

    /// A control message from `from`: believed only where PROTOCOL.md §5.2 says, counted in
    /// `control_received` when acted upon, in `frames_rejected_other` (or `_malformed`) if not.
    pub(super) fn on_control(&mut self, now: Instant, from: SocketAddr, frame: &[u8]) {
        if frame.get(1) == Some(&TYPE_COOKIE_ECHO) {
            return self.on_cookie_echo(now, from, frame);
        }
        let Some(msg) = Control::decode(frame) else {
            self.counters.frames_rejected_malformed += 1;
            return;
        };
        let acted = match msg {
            Control::Identify { token } => {
                let public = self.identity.public();
                self.reply_control(now, from, Control::Identity { token, public });
                true
            }
            Control::Identity { token, public } => self.on_identity(from, token, public),
            Control::IdentityMismatch { nonce, public } => {
                self.on_identity_mismatch(from, nonce, public)
            }
            Control::ModeMismatch { reference, seq } => self.on_mode_mismatch(from, reference, seq),
            Control::Busy { session_id, seq } => self.on_busy(from, session_id, seq),
            Control::UnknownSession { session_id, seq } => {
                self.on_unknown_session(from, session_id, seq)
            }
            Control::Cookie { nonce, cookie } => self.on_cookie(from, nonce, cookie),
        };
        if acted {
            self.counters.control_received += 1;
        } else {
            self.counters.frames_rejected_other += 1;
        }
    }

    /// IDENTITY_MISMATCH: our handshake `nonce` reached a node holding `public`, not the id we
    /// asked for. Believed from the address message 1 went to only.
    fn on_identity_mismatch(
        &mut self,
        from: SocketAddr,
        nonce: [u8; 32],
        public: PublicKey,
    ) -> bool {
        let Some(h) = self.handshakes.get(&nonce) else {
            return false;
        };
        let found = public.node_id(&self.network);
        // A node claiming to be who we asked for, yet refusing: not a mismatch.
        if h.peer.addr != from || found == h.peer.id {
            return false;
        }
        self.counters.handshakes_failed_identity += 1;
        self.fail_handshake(nonce, |peer| Error::IdentityMismatch {
            addr: peer.addr,
            expected: peer.id,
            found,
        });
        true
    }

    /// MODE_MISMATCH: the peer runs in the other mode. Secure: fails our handshake `reference`
    /// to that address. Insecure: `reference` is our id; fails our request `seq` to a peer at
    /// that address.
    fn on_mode_mismatch(&mut self, from: SocketAddr, reference: [u8; 32], seq: u64) -> bool {
        match self.cfg.mode {
            Mode::Secure => {
                if self
                    .handshakes
                    .get(&reference)
                    .is_none_or(|h| h.peer.addr != from)
                {
                    return false;
                }
                self.counters.handshakes_failed_mode += 1;
                self.fail_handshake(reference, |peer| Error::ModeMismatch {
                    addr: peer.addr,
                    ours: Mode::Secure,
                });
                true
            }
            Mode::Insecure => {
                if reference != *self.local_id.as_bytes() {
                    return false;
                }
                let waiter = self
                    .sessions
                    .peers
                    .values_mut()
                    .filter(|p| p.addr == from)
                    .flat_map(|p| p.chans.iter_mut())
                    .find_map(|ch| ch.waiters.get(&seq).copied());
                let Some(id) = waiter else {
                    return false;
                };
                self.finish(
                    id,
                    Err(Error::ModeMismatch {
                        addr: from,
                        ours: Mode::Insecure,
                    }),
                );
                true
            }
        }
    }

    /// BUSY: the peer authenticated our command `seq` on `session_id` (zero in insecure mode)
    /// but had no handler slot. Believed only from the address of the session's peer, for a
    /// request of ours still waiting: at worst a forgery fails that one request early.
    fn on_busy(&mut self, from: SocketAddr, session_id: SessionId, seq: u64) -> bool {
        let peer_id = match self.cfg.mode {
            Mode::Secure => self.sessions.by_session.get(&session_id).copied(),
            Mode::Insecure if session_id.0 == [0; 8] => self
                .sessions
                .peers
                .iter()
                .find(|(_, p)| {
                    p.addr == from && p.chans.iter().any(|ch| ch.waiters.contains_key(&seq))
                })
                .map(|(id, _)| *id),
            Mode::Insecure => None,
        };
        let Some(peer_id) = peer_id else {
            return false;
        };
        let key = match self.cfg.mode {
            Mode::Secure => ChanKey::Secure(session_id),
            Mode::Insecure => ChanKey::Insecure(peer_id),
        };
        let Some(p) = self.sessions.peers.get_mut(&peer_id) else {
            return false;
        };
        // secure: the session's own address; insecure: where we send, or where it sent from
        let peer_at = self.cfg.mode == Mode::Insecure && p.addr == from;
        let Some(id) = p
            .chan_mut(key)
            .filter(|ch| ch.addr == from || peer_at)
            .and_then(|ch| ch.waiters.get(&seq).copied())
        else {
            return false;
        };
        self.counters.requests_refused_busy += 1;
        self.finish(
            id,
            Err(Error::PeerBusy {
                peer: peer_id,
                addr: from,
            }),
        );
        true
    }
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
            Control::Cookie {
                nonce: [8; 32],
                cookie: [9; 32],
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
                Control::Cookie { .. } => COOKIE_LEN,
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
