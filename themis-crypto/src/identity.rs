//! Long-term Ed25519 identities and self-certifying node ids (paper §5.1.1).

use std::fmt;
use std::str::FromStr;

use dryoc::classic::crypto_sign::{
    crypto_sign_detached, crypto_sign_seed_keypair, crypto_sign_verify_detached,
};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::hash::Transcript;
use crate::{Error, NetworkId};

/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of a node id.
pub const NODE_ID_LEN: usize = 32;
/// Length of the secret seed an identity is derived from.
pub const SEED_LEN: usize = 32;

/// Domain-separation label of node id derivation.
pub const NODE_ID_LABEL: &str = "themis/v1/node-id";

fn parse_hex<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], Error> {
    let mut out = [0u8; N];
    match hex::decode_to_slice(s.trim(), &mut out) {
        Ok(()) => Ok(out),
        Err(_) => Err(Error::InvalidHex {
            what,
            expected_len: 2 * N,
            got: s.chars().take(2 * N + 8).collect(),
        }),
    }
}

/// An Ed25519 public key: the long-term public half of an identity (`PK_A`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// Wraps 32 bytes. No check is made here: a malformed key simply never verifies a signature.
    pub const fn from_bytes(bytes: [u8; PUBLIC_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The 32 key bytes.
    pub const fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// The paper's `h(PK, net_id)`: this key's node id on `network`.
    pub fn node_id(&self, network: &NetworkId) -> NodeId {
        NodeId::derive(self, network)
    }

    /// Verifies an Ed25519 signature (RFC 8032, as libsodium: canonical `S`, no small-order `R`
    /// or key).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), Error> {
        crypto_sign_verify_detached(&signature.0, message, &self.0).map_err(|_| Error::BadSignature)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.0))
    }
}

impl FromStr for PublicKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        parse_hex("public key", s).map(Self)
    }
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; SIGNATURE_LEN]);

impl Signature {
    /// Wraps 64 bytes.
    pub const fn from_bytes(bytes: [u8; SIGNATURE_LEN]) -> Self {
        Self(bytes)
    }

    /// The 64 signature bytes.
    pub const fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

/// A self-certifying node identifier: `BLAKE2b-256(label, PK, net_id)` (paper: `A = h(PK_A, net_id)`).
///
/// Exact encoding (see PROTOCOL.md §2.3): BLAKE2b-256 over
/// `0x11 ‖ "themis/v1/node-id" ‖ 00 00 00 20 ‖ PK (32) ‖ u32-BE len(net_id) ‖ net_id`.
///
/// Ordering is big-endian numeric order of the 32 bytes, which is the order of the ring.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId([u8; NODE_ID_LEN]);

impl NodeId {
    /// The id as two big-endian 128-bit halves: their order is the order of the bytes.
    #[inline]
    fn halves(&self) -> (u128, u128) {
        let mut hi = [0u8; 16];
        let mut lo = [0u8; 16];
        hi.copy_from_slice(&self.0[..16]);
        lo.copy_from_slice(&self.0[16..]);
        (u128::from_be_bytes(hi), u128::from_be_bytes(lo))
    }
}

// The derived order compares the byte arrays with a call to `memcmp`; node ids are compared in
// every table of the ring (sorted routing tables, per-peer maps, lookups), and the call was the
// hottest spot of the DHT simulator (15% of its CPU at 10,000 nodes). Two 128-bit comparisons
// give the same order inline.
impl Ord for NodeId {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.halves().cmp(&other.halves())
    }
}

impl PartialOrd for NodeId {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl NodeId {
    /// Derives the node id of `key` on `network`.
    ///
    /// On a closed network (PROTOCOL.md §2.10) the admission public key is a third part:
    /// `H("themis/v1/node-id"; PK, net_id, AK)`, so the same key has unrelated ids on the open
    /// network and on every closed network of the same name.
    pub fn derive(key: &PublicKey, network: &NetworkId) -> Self {
        Self(match network.admission_key() {
            None => Transcript::digest(NODE_ID_LABEL, &[key.as_bytes(), network.as_bytes()]),
            Some(ak) => Transcript::digest(
                NODE_ID_LABEL,
                &[key.as_bytes(), network.as_bytes(), ak.as_bytes()],
            ),
        })
    }

    /// Wraps 32 bytes (for example an object id in the DHT's identifier space).
    pub const fn from_bytes(bytes: [u8; NODE_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The 32 id bytes.
    pub const fn as_bytes(&self) -> &[u8; NODE_ID_LEN] {
        &self.0
    }

    /// `true` if `key` on `network` hashes to this id: the paper's check `h(PK_B, net_id) = B`.
    pub fn is_derived_from(&self, key: &PublicKey, network: &NetworkId) -> bool {
        use subtle::ConstantTimeEq;
        Self::derive(key, network).0.ct_eq(&self.0).into()
    }

    /// The first 8 hex digits, for logs.
    pub fn short(&self) -> ShortId {
        ShortId(*self)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        parse_hex("node id", s).map(Self)
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 bytes or 64 hex digits")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<NodeId, E> {
                <[u8; NODE_ID_LEN]>::try_from(v)
                    .map(NodeId)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NodeId, E> {
                v.parse().map_err(E::custom)
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_bytes(V)
        }
    }
}

/// The short display form of a [`NodeId`] (first 8 hex digits).
#[derive(Clone, Copy)]
pub struct ShortId(NodeId);

impl fmt::Display for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.as_bytes();
        write!(f, "{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3])
    }
}

impl fmt::Debug for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A long-term Ed25519 identity key pair. The secret half is wiped from memory on drop and never
/// shown by `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct IdentityKeypair {
    seed: [u8; SEED_LEN],
    /// libsodium's 64-byte secret key (seed ‖ public key).
    secret: [u8; 64],
    #[zeroize(skip)]
    public: PublicKey,
}

impl IdentityKeypair {
    /// Generates a fresh key pair from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = [0u8; SEED_LEN];
        crate::random::fill(&mut seed);
        let kp = Self::from_seed(&seed);
        seed.zeroize();
        kp
    }

    /// Derives the key pair from a 32-byte secret seed (RFC 8032 private key).
    pub fn from_seed(seed: &[u8; SEED_LEN]) -> Self {
        let (public, secret) = crypto_sign_seed_keypair(seed);
        Self {
            seed: *seed,
            secret,
            public: PublicKey(public),
        }
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// This identity's node id on `network`.
    pub fn node_id(&self, network: &NetworkId) -> NodeId {
        self.public.node_id(network)
    }

    /// Signs `message` (deterministic Ed25519, RFC 8032).
    pub fn sign(&self, message: &[u8]) -> Signature {
        let mut sig = [0u8; SIGNATURE_LEN];
        if crypto_sign_detached(&mut sig, message, &self.secret).is_err() {
            unreachable!("dryoc's detached signing cannot fail with fixed-size keys");
        }
        Signature(sig)
    }

    /// The secret seed, for the key file writer only.
    pub(crate) fn seed(&self) -> &[u8; SEED_LEN] {
        &self.seed
    }
}

impl fmt::Debug for IdentityKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeypair")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> NetworkId {
        NetworkId::new(s).unwrap()
    }

    #[test]
    fn sign_and_verify() {
        let kp = IdentityKeypair::generate();
        let sig = kp.sign(b"hello");
        kp.public().verify(b"hello", &sig).unwrap();
        assert!(kp.public().verify(b"hellO", &sig).is_err());
    }

    #[test]
    fn node_id_encoding_is_as_documented() {
        let kp = IdentityKeypair::from_seed(&[7; 32]);
        let n = net("twiitr");
        let mut input = vec![NODE_ID_LABEL.len() as u8];
        input.extend_from_slice(NODE_ID_LABEL.as_bytes());
        input.extend_from_slice(&32u32.to_be_bytes());
        input.extend_from_slice(kp.public().as_bytes());
        input.extend_from_slice(&6u32.to_be_bytes());
        input.extend_from_slice(b"twiitr");
        let mut want = [0u8; 32];
        dryoc::classic::crypto_generichash::crypto_generichash(&mut want, &input, None).unwrap();
        assert_eq!(kp.node_id(&n).as_bytes(), &want);
        assert!(kp.node_id(&n).is_derived_from(&kp.public(), &n));
        assert!(!kp.node_id(&n).is_derived_from(&kp.public(), &net("other")));
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let id = IdentityKeypair::generate().node_id(&net("n"));
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        assert_eq!(id.short().to_string(), id.to_string()[..8]);
        let err = "abc".parse::<NodeId>().unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        let pk = IdentityKeypair::generate().public();
        assert_eq!(pk.to_string().parse::<PublicKey>().unwrap(), pk);
    }

    #[test]
    fn debug_hides_secret() {
        let kp = IdentityKeypair::from_seed(&[0xab; 32]);
        let shown = format!("{kp:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains("abababab"));
    }

    proptest::proptest! {
        /// The order of ids is the order of their bytes (big-endian numbers, the ring's order).
        #[test]
        fn id_order_is_byte_order(a in proptest::prelude::any::<[u8; 32]>(),
                                  b in proptest::prelude::any::<[u8; 32]>(),
                                  common in 0usize..=32) {
            // ids sharing a prefix of any length, to reach every byte of the comparison
            let mut b = b;
            b[..common].copy_from_slice(&a[..common]);
            let (x, y) = (NodeId::from_bytes(a), NodeId::from_bytes(b));
            proptest::prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            proptest::prop_assert_eq!(x.partial_cmp(&y), Some(a.cmp(&b)));
        }
    }
}
