//! XChaCha20-Poly1305 (IETF) authenticated encryption with associated data.

use std::fmt;

use dryoc::classic::crypto_aead_xchacha20poly1305_ietf::{
    crypto_aead_xchacha20poly1305_ietf_decrypt_detached_inplace,
    crypto_aead_xchacha20poly1305_ietf_encrypt_detached_inplace,
};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;

/// Length of an AEAD key.
pub const AEAD_KEY_LEN: usize = 32;
/// Length of an AEAD nonce.
pub const AEAD_NONCE_LEN: usize = 24;
/// Length of an AEAD tag.
pub const AEAD_TAG_LEN: usize = 16;

/// A 256-bit XChaCha20-Poly1305 key for one direction of one session. Wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AeadKey([u8; AEAD_KEY_LEN]);

impl AeadKey {
    /// Wraps 32 key bytes (normally from [`crate::SessionKeys::derive`]).
    pub fn from_bytes(bytes: [u8; AEAD_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = [0u8; AEAD_KEY_LEN];
        crate::random::fill(&mut k);
        Self(k)
    }

    /// The key bytes (for tests and known-answer vectors).
    pub fn as_bytes(&self) -> &[u8; AEAD_KEY_LEN] {
        &self.0
    }

    /// Encrypts `data` in place and returns the tag that authenticates it together with `ad`.
    ///
    /// The caller guarantees that `nonce` is never used twice with this key (the channel derives
    /// it from the frame type and sequence number, both unique per direction key).
    pub fn seal_in_place(
        &self,
        nonce: &[u8; AEAD_NONCE_LEN],
        ad: &[u8],
        data: &mut [u8],
    ) -> Result<[u8; AEAD_TAG_LEN], Error> {
        let mut tag = [0u8; AEAD_TAG_LEN];
        crypto_aead_xchacha20poly1305_ietf_encrypt_detached_inplace(
            data,
            &mut tag,
            Some(ad),
            nonce,
            &self.0,
        )
        .map_err(|_| Error::MessageTooLarge {
            len: data.len(),
            max: MAX_AEAD_MESSAGE,
        })?;
        Ok(tag)
    }

    /// Checks `tag` over `ad` and `data`, then decrypts `data` in place. On failure `data` is
    /// left exactly as it was.
    pub fn open_in_place(
        &self,
        nonce: &[u8; AEAD_NONCE_LEN],
        ad: &[u8],
        data: &mut [u8],
        tag: &[u8; AEAD_TAG_LEN],
    ) -> Result<(), Error> {
        crypto_aead_xchacha20poly1305_ietf_decrypt_detached_inplace(
            data,
            tag,
            Some(ad),
            nonce,
            &self.0,
        )
        .map_err(|_| Error::Decrypt)
    }
}

/// Largest message one AEAD call accepts (far above any frame limit): libsodium's
/// `crypto_aead_xchacha20poly1305_ietf_MESSAGEBYTES_MAX`, which also fits 32-bit targets (the
/// former `(1 << 32) * 64` did not compile there).
pub(crate) const MAX_AEAD_MESSAGE: usize =
    dryoc::constants::CRYPTO_AEAD_XCHACHA20POLY1305_IETF_MESSAGEBYTES_MAX;

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let k = AeadKey::generate();
        let n = [3u8; AEAD_NONCE_LEN];
        let mut data = b"attack at dawn".to_vec();
        let tag = k.seal_in_place(&n, b"hdr", &mut data).unwrap();
        assert_ne!(&data, b"attack at dawn");
        let sealed = data.clone();

        let mut bad = sealed.clone();
        assert!(k.open_in_place(&n, b"hdX", &mut bad, &tag).is_err());
        assert_eq!(bad, sealed, "failed open leaves the buffer untouched");
        let mut other_nonce = [3u8; AEAD_NONCE_LEN];
        other_nonce[23] = 4;
        assert!(
            k.open_in_place(&other_nonce, b"hdr", &mut bad, &tag)
                .is_err()
        );

        k.open_in_place(&n, b"hdr", &mut data, &tag).unwrap();
        assert_eq!(&data, b"attack at dawn");
    }
}
