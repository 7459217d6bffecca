//! HMAC-SHA-512-256 (libsodium `crypto_auth`), the key-confirmation MAC of message 3.

use std::fmt;

use dryoc::classic::crypto_auth::{crypto_auth, crypto_auth_verify};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;

/// Length of a MAC key.
pub const MAC_KEY_LEN: usize = 32;
/// Length of a MAC tag.
pub const MAC_LEN: usize = 32;

/// A MAC key. Wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MacKey([u8; MAC_KEY_LEN]);

impl MacKey {
    /// Wraps 32 key bytes.
    pub fn from_bytes(bytes: [u8; MAC_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The key bytes (for tests and known-answer vectors).
    pub fn as_bytes(&self) -> &[u8; MAC_KEY_LEN] {
        &self.0
    }

    /// HMAC-SHA-512 truncated to 256 bits.
    pub fn compute(&self, message: &[u8]) -> [u8; MAC_LEN] {
        let mut tag = [0u8; MAC_LEN];
        crypto_auth(&mut tag, message, &self.0);
        tag
    }

    /// Verifies `tag` in constant time.
    pub fn verify(&self, message: &[u8], tag: &[u8; MAC_LEN]) -> Result<(), Error> {
        crypto_auth_verify(tag, message, &self.0).map_err(|_| Error::BadMac)
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_detects_change() {
        let k = MacKey::from_bytes([9; 32]);
        let t = k.compute(b"nonce");
        k.verify(b"nonce", &t).unwrap();
        assert!(k.verify(b"noncf", &t).is_err());
        assert!(MacKey::from_bytes([8; 32]).verify(b"nonce", &t).is_err());
    }
}
