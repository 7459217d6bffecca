//! XChaCha20-Poly1305 (IETF) authenticated encryption with associated data.

use std::fmt;

use dryoc::classic::crypto_aead_chacha20poly1305_ietf::{
    crypto_aead_chacha20poly1305_ietf_decrypt_detached_inplace,
    crypto_aead_chacha20poly1305_ietf_encrypt_detached_inplace,
};
use dryoc::classic::crypto_aead_xchacha20poly1305_ietf::{
    crypto_aead_xchacha20poly1305_ietf_decrypt_detached_inplace,
    crypto_aead_xchacha20poly1305_ietf_encrypt_detached_inplace,
};
use dryoc::classic::crypto_core::crypto_core_hchacha20;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;

/// Length of an AEAD key.
pub const AEAD_KEY_LEN: usize = 32;
/// Length of an AEAD nonce.
pub const AEAD_NONCE_LEN: usize = 24;
/// Length of an AEAD tag.
pub const AEAD_TAG_LEN: usize = 16;
/// Length of the nonce prefix a [`PrefixedAeadKey`] is made for (the input of XChaCha20's
/// HChaCha20 step); the rest of the nonce, 8 bytes, is given at each call.
pub const AEAD_NONCE_PREFIX_LEN: usize = 16;
/// Length of the nonce tail given to [`PrefixedAeadKey`] at each call.
pub const AEAD_NONCE_TAIL_LEN: usize = AEAD_NONCE_LEN - AEAD_NONCE_PREFIX_LEN;

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

    /// This key for the nonces that begin with `prefix`. XChaCha20-Poly1305 first derives a
    /// subkey from the key and the nonce's first 16 bytes (HChaCha20), then runs
    /// ChaCha20-Poly1305 (IETF) under that subkey and `00 00 00 00 ‖ the nonce's last 8 bytes`;
    /// a caller whose nonces share their first 16 bytes (the channel's: `type ‖ 15 zero bytes ‖
    /// seq`) makes the subkey once here instead of at every frame. Sealing and opening with the
    /// result under `prefix ‖ tail` give exactly the bytes [`AeadKey::seal_in_place`] and
    /// [`AeadKey::open_in_place`] give under that nonce.
    pub fn for_nonce_prefix(&self, prefix: &[u8; AEAD_NONCE_PREFIX_LEN]) -> PrefixedAeadKey {
        let mut subkey = [0u8; AEAD_KEY_LEN];
        crypto_core_hchacha20(&mut subkey, prefix, &self.0, None);
        PrefixedAeadKey {
            subkey,
            prefix: *prefix,
        }
    }
}

/// An [`AeadKey`] bound to the nonces that begin with one prefix (made by
/// [`AeadKey::for_nonce_prefix`]): XChaCha20-Poly1305 with its HChaCha20 step done once. Wiped
/// on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrefixedAeadKey {
    subkey: [u8; AEAD_KEY_LEN],
    #[zeroize(skip)]
    prefix: [u8; AEAD_NONCE_PREFIX_LEN],
}

impl PrefixedAeadKey {
    /// The nonce prefix this key was made for.
    pub fn prefix(&self) -> &[u8; AEAD_NONCE_PREFIX_LEN] {
        &self.prefix
    }

    /// [`AeadKey::seal_in_place`] under the nonce `prefix ‖ tail`. The same rule holds: the
    /// caller never uses a nonce twice with one key.
    pub fn seal_in_place(
        &self,
        tail: &[u8; AEAD_NONCE_TAIL_LEN],
        ad: &[u8],
        data: &mut [u8],
    ) -> Result<[u8; AEAD_TAG_LEN], Error> {
        // Beyond ChaCha20-IETF's 32-bit block counter (256 GiB) XChaCha20 carries the counter
        // into the nonce's zero word; no frame comes near, but refuse rather than differ.
        if data.len() > MAX_PREFIXED_MESSAGE {
            return Err(Error::MessageTooLarge {
                len: data.len(),
                max: MAX_PREFIXED_MESSAGE,
            });
        }
        let mut tag = [0u8; AEAD_TAG_LEN];
        crypto_aead_chacha20poly1305_ietf_encrypt_detached_inplace(
            data,
            &mut tag,
            Some(ad),
            &ietf_nonce(tail),
            &self.subkey,
        )
        .map_err(|_| Error::MessageTooLarge {
            len: data.len(),
            max: MAX_PREFIXED_MESSAGE,
        })?;
        Ok(tag)
    }

    /// [`AeadKey::open_in_place`] under the nonce `prefix ‖ tail`. On failure `data` is left
    /// exactly as it was.
    pub fn open_in_place(
        &self,
        tail: &[u8; AEAD_NONCE_TAIL_LEN],
        ad: &[u8],
        data: &mut [u8],
        tag: &[u8; AEAD_TAG_LEN],
    ) -> Result<(), Error> {
        if data.len() > MAX_PREFIXED_MESSAGE {
            return Err(Error::Decrypt);
        }
        crypto_aead_chacha20poly1305_ietf_decrypt_detached_inplace(
            data,
            tag,
            Some(ad),
            &ietf_nonce(tail),
            &self.subkey,
        )
        .map_err(|_| Error::Decrypt)
    }
}

/// The ChaCha20-Poly1305 (IETF) nonce XChaCha20 uses after its HChaCha20 step.
fn ietf_nonce(tail: &[u8; AEAD_NONCE_TAIL_LEN]) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(tail);
    n
}

impl fmt::Debug for PrefixedAeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrefixedAeadKey(<redacted>)")
    }
}

/// Largest message a [`PrefixedAeadKey`] seals: what ChaCha20-IETF's 32-bit block counter
/// covers, below which its stream and XChaCha20's are the same.
pub(crate) const MAX_PREFIXED_MESSAGE: usize =
    dryoc::constants::CRYPTO_AEAD_CHACHA20POLY1305_IETF_MESSAGEBYTES_MAX;

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

    #[test]
    fn prefixed_key_redacts_and_keeps_its_prefix() {
        let p = AeadKey::from_bytes([9; AEAD_KEY_LEN]).for_nonce_prefix(&[0x10; 16]);
        assert_eq!(format!("{p:?}"), "PrefixedAeadKey(<redacted>)");
        assert_eq!(p.prefix(), &[0x10; 16]);
    }

    proptest::proptest! {
        /// A prefixed key seals and opens exactly as the full key does under `prefix ‖ tail`,
        /// and each opens what the other sealed.
        #[test]
        fn prefixed_key_is_the_full_key(
            key in proptest::array::uniform32(proptest::num::u8::ANY),
            prefix in proptest::array::uniform16(proptest::num::u8::ANY),
            tail in proptest::array::uniform8(proptest::num::u8::ANY),
            ad in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let k = AeadKey::from_bytes(key);
            let p = k.for_nonce_prefix(&prefix);
            let mut nonce = [0u8; AEAD_NONCE_LEN];
            nonce[..16].copy_from_slice(&prefix);
            nonce[16..].copy_from_slice(&tail);
            let (mut a, mut b) = (data.clone(), data.clone());
            let ta = k.seal_in_place(&nonce, &ad, &mut a).unwrap();
            let tb = p.seal_in_place(&tail, &ad, &mut b).unwrap();
            proptest::prop_assert_eq!(&a, &b);
            proptest::prop_assert_eq!(ta, tb);
            p.open_in_place(&tail, &ad, &mut a, &ta).unwrap();
            k.open_in_place(&nonce, &ad, &mut b, &tb).unwrap();
            proptest::prop_assert_eq!(&a, &data);
            proptest::prop_assert_eq!(&b, &data);
            // another tail does not open it
            let mut other = tail;
            other[7] ^= 1;
            let sealed = {
                let mut s = data.clone();
                let t = p.seal_in_place(&tail, &ad, &mut s).unwrap();
                (s, t)
            };
            let mut c = sealed.0.clone();
            proptest::prop_assert!(p.open_in_place(&other, &ad, &mut c, &sealed.1).is_err());
            proptest::prop_assert_eq!(c, sealed.0);
        }
    }
}
