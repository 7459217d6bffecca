//! Session key derivation: HKDF-SHA-256 over the X25519 output, salted with the handshake
//! transcript hash (paper §5.1.1 uses the raw `g^ab`; we derive directional keys instead).

use dryoc::classic::crypto_kdf::{crypto_kdf_hkdf_sha256_expand, crypto_kdf_hkdf_sha256_extract};
use zeroize::Zeroize;

use crate::{AeadKey, MacKey, SharedSecret};

/// HKDF `info` of the initiator-to-responder traffic key.
pub const LABEL_I2R: &str = "themis/v1/key/initiator-to-responder";
/// HKDF `info` of the responder-to-initiator traffic key.
pub const LABEL_R2I: &str = "themis/v1/key/responder-to-initiator";
/// HKDF `info` of the key-confirmation MAC key (message 3).
pub const LABEL_CONFIRM: &str = "themis/v1/key/confirm";

/// The three keys a handshake produces.
///
/// `PRK = HKDF-Extract(salt = transcript_hash, IKM = X25519 output)`, then each key is
/// `HKDF-Expand(PRK, info = label, L = 32)` with the labels above.
#[derive(Debug)]
pub struct SessionKeys {
    /// Encrypts frames sent by the initiator.
    pub initiator_to_responder: AeadKey,
    /// Encrypts frames sent by the responder.
    pub responder_to_initiator: AeadKey,
    /// Keys the key-confirmation MAC of message 3.
    pub confirm: MacKey,
}

impl SessionKeys {
    /// Derives the session keys from the shared secret and the transcript hash.
    pub fn derive(shared: &SharedSecret, transcript_hash: &[u8; 32]) -> Self {
        let mut prk = [0u8; 32];
        crypto_kdf_hkdf_sha256_extract(&mut prk, Some(transcript_hash), shared.as_bytes());
        let expand = |label: &str| {
            let mut okm = [0u8; 32];
            if crypto_kdf_hkdf_sha256_expand(&mut okm, label.as_bytes(), &prk).is_err() {
                unreachable!("32 bytes is within HKDF-SHA-256's output range");
            }
            okm
        };
        let keys = Self {
            initiator_to_responder: AeadKey::from_bytes(expand(LABEL_I2R)),
            responder_to_initiator: AeadKey::from_bytes(expand(LABEL_R2I)),
            confirm: MacKey::from_bytes(expand(LABEL_CONFIRM)),
        };
        prk.zeroize();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EphemeralSecret;

    #[test]
    fn keys_are_distinct_and_transcript_bound() {
        let a = EphemeralSecret::from_bytes([1; 32]);
        let b = EphemeralSecret::from_bytes([2; 32]);
        let s = a.diffie_hellman(&b.public()).unwrap();
        let k1 = SessionKeys::derive(&s, &[0; 32]);
        let k2 = SessionKeys::derive(&s, &[1; 32]);
        assert_ne!(
            k1.initiator_to_responder.as_bytes(),
            k1.responder_to_initiator.as_bytes()
        );
        assert_ne!(k1.initiator_to_responder.as_bytes(), k1.confirm.as_bytes());
        assert_ne!(
            k1.initiator_to_responder.as_bytes(),
            k2.initiator_to_responder.as_bytes()
        );
    }
}
