//! Ephemeral X25519 key agreement (the paper's `g^a`, `g^b`, `K = g^ab`).

use std::fmt;

use dryoc::classic::crypto_core::{crypto_scalarmult, crypto_scalarmult_base};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;

/// Length of an X25519 public value or secret.
pub const DH_LEN: usize = 32;

/// An ephemeral X25519 public value (`g^a`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EphemeralPublic([u8; DH_LEN]);

impl EphemeralPublic {
    /// Wraps 32 bytes received from a peer. Low-order points are caught by
    /// [`EphemeralSecret::diffie_hellman`].
    pub const fn from_bytes(bytes: [u8; DH_LEN]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; DH_LEN] {
        &self.0
    }
}

impl fmt::Debug for EphemeralPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EphemeralPublic({})", hex::encode(self.0))
    }
}

/// An ephemeral X25519 secret (`a`). Wiped on drop; used for one handshake only.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct EphemeralSecret {
    secret: [u8; DH_LEN],
    #[zeroize(skip)]
    public: EphemeralPublic,
}

impl EphemeralSecret {
    /// A fresh secret from the operating system's random source.
    pub fn generate() -> Self {
        let mut bytes = [0u8; DH_LEN];
        crate::random::fill(&mut bytes);
        let s = Self::from_bytes(bytes);
        bytes.zeroize();
        s
    }

    /// A secret from fixed bytes (RFC 7748 clamping is applied by the scalar multiplication).
    /// Only for known-answer tests; production code uses [`EphemeralSecret::generate`].
    pub fn from_bytes(secret: [u8; DH_LEN]) -> Self {
        let mut public = [0u8; DH_LEN];
        crypto_scalarmult_base(&mut public, &secret);
        Self {
            secret,
            public: EphemeralPublic(public),
        }
    }

    /// The public value to send.
    pub fn public(&self) -> EphemeralPublic {
        self.public
    }

    /// X25519 with the peer's public value, refusing the all-zero output that a low-order peer
    /// value produces (the exchange would not be contributory).
    ///
    /// libsodium semantics (checked against Wycheproof): the top bit of the peer value is
    /// ignored, values >= p are reduced, points on the twist are computed like any other; only
    /// an all-zero result is an error.
    pub fn diffie_hellman(&self, peer: &EphemeralPublic) -> Result<SharedSecret, Error> {
        let mut out = [0u8; DH_LEN];
        match crypto_scalarmult(&mut out, &self.secret, &peer.0) {
            Ok(()) => Ok(SharedSecret(out)),
            Err(_) => {
                out.zeroize();
                Err(Error::NonContributory)
            }
        }
    }
}

impl fmt::Debug for EphemeralSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EphemeralSecret")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The raw X25519 output. Never used as a key directly: it feeds the KDF
/// ([`crate::SessionKeys::derive`]). Wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SharedSecret([u8; DH_LEN]);

impl SharedSecret {
    /// The 32 bytes, for the KDF.
    pub fn as_bytes(&self) -> &[u8; DH_LEN] {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree() {
        let a = EphemeralSecret::generate();
        let b = EphemeralSecret::generate();
        let ab = a.diffie_hellman(&b.public()).unwrap();
        let ba = b.diffie_hellman(&a.public()).unwrap();
        assert_eq!(ab.as_bytes(), ba.as_bytes());
    }

    #[test]
    fn low_order_point_is_rejected() {
        let a = EphemeralSecret::generate();
        for bad in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            assert!(matches!(
                a.diffie_hellman(&EphemeralPublic::from_bytes(bad)),
                Err(Error::NonContributory)
            ));
        }
    }
}
