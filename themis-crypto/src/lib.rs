//! Cryptographic foundations of THEMIS: self-certifying identities, ephemeral key agreement,
//! the session key derivation, the channel AEAD and the key-confirmation MAC, all on `dryoc`
//! (pure-Rust, libsodium-compatible).
//!
//! | purpose | primitive |
//! |---|---|
//! | identity key pair, signatures | Ed25519 (RFC 8032) |
//! | node id `h(PK, net_id)`, transcript hash | BLAKE2b-256, length-prefixed and labelled |
//! | ephemeral key agreement | X25519 (RFC 7748), all-zero output rejected |
//! | session keys | HKDF-SHA-256 (RFC 5869) |
//! | channel encryption | XChaCha20-Poly1305 (IETF) |
//! | key confirmation | HMAC-SHA-512-256 |
//! | key rotation without a CA | [`Succession`]: the old key names its successor, both sign |
//!
//! PROTOCOL.md at the repository root gives every encoding byte by byte.
//!
//! ```
//! use themis_crypto::{IdentityKeypair, NetworkId};
//!
//! let net = NetworkId::new("twiitr")?;
//! let alice = IdentityKeypair::generate();
//! let id = alice.node_id(&net);
//! // Anyone holding Alice's public key can check that it is really hers:
//! assert!(id.is_derived_from(&alice.public(), &net));
//! // ... and that it belongs to this network only.
//! assert!(!id.is_derived_from(&alice.public(), &NetworkId::new("other")?));
//!
//! let sig = alice.sign(b"hello");
//! alice.public().verify(b"hello", &sig)?;
//! # Ok::<(), themis_crypto::Error>(())
//! ```
#![forbid(unsafe_code)]

mod admission;
mod aead;
mod atomic_file;
mod dh;
mod error;
mod hash;
mod identity;
mod kdf;
mod keyfile;
mod mac;
mod network;
mod random;
mod succession;

pub use admission::{
    ADMISSION_CERT_FILE_HEADER, ADMISSION_CERT_LABEL, ADMISSION_CERT_LEN, AdmissionCert,
};
pub use aead::{
    AEAD_KEY_LEN, AEAD_NONCE_LEN, AEAD_NONCE_PREFIX_LEN, AEAD_NONCE_TAIL_LEN, AEAD_TAG_LEN,
    AeadKey, PrefixedAeadKey,
};
pub use dh::{DH_LEN, EphemeralPublic, EphemeralSecret, SharedSecret};
pub use error::{AdmissionProblem, Error, KeyFileProblem, SuccessionProblem};
pub use hash::{HASH_LEN, Transcript};
pub use identity::{
    IdentityKeypair, NODE_ID_LABEL, NODE_ID_LEN, NodeId, PUBLIC_KEY_LEN, PublicKey, SEED_LEN,
    SIGNATURE_LEN, ShortId, Signature,
};
pub use kdf::{LABEL_CONFIRM, LABEL_I2R, LABEL_R2I, SessionKeys};
pub use keyfile::{KEY_FILE_MAGIC, KEY_FILE_VERSION};
pub use mac::{MAC_KEY_LEN, MAC_LEN, MacKey};
pub use network::{MAX_NETWORK_ID_LEN, NetworkId};
pub use random::fill as fill_random;
pub use succession::{
    MAX_GRACE_MS, MAX_SUCCESSION_LEN, MIN_SUCCESSION_LEN, SUCCESSION_FILE_HEADER,
    SUCCESSION_FORMAT, SUCCESSION_LABEL, Succession,
};
