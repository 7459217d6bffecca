//! Owned service names and delegations (issue 13 item 2, beyond the paper; PROTOCOL.md §6.4
//! "Owned names").
//!
//! A name of the form `<label>~<fingerprint>` is **owned**: the fingerprint is 32 lowercase
//! base32 characters of the first 20 bytes of `H("themis/v1/owner-fingerprint"; owner PK)`, so
//! the name itself names its owner's key (self-certifying, like node ids: no registry, no
//! first-come claim that could itself be hijacked). Only providers holding a **delegation**
//! signed by that key (network, name, provider id, not-after time) may store records for it;
//! storing nodes and readers refuse the others (`bad_delegation`). Every other name is unowned
//! and behaves as before.

use themis_crypto::{
    IdentityKeypair, NetworkId, NodeId, PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, Signature,
    Transcript,
};

/// Label of the owner fingerprint hash.
pub const OWNER_FINGERPRINT_LABEL: &str = "themis/v1/owner-fingerprint";
/// Label of the digest an owner signs to delegate a name to a provider.
pub const DELEGATION_SIG_LABEL: &str = "themis/v1/delegation";
/// The character between an owned name's label and its owner's fingerprint.
pub const OWNER_SEPARATOR: char = '~';
/// Bytes of the owner fingerprint (the first bytes of the hash).
pub const FINGERPRINT_LEN: usize = 20;
/// Characters of the fingerprint in a name: base32 (RFC 4648 alphabet, lower case, no padding)
/// of [`FINGERPRINT_LEN`] bytes.
pub const FINGERPRINT_TEXT_LEN: usize = 32;
/// Bytes of an encoded delegation: owner public key (32) ‖ u64be not-after (8) ‖ signature (64).
pub const DELEGATION_LEN: usize = PUBLIC_KEY_LEN + 8 + SIGNATURE_LEN;
/// Longest label an owned name can have: the name limit minus `~` and the fingerprint.
pub const MAX_OWNED_LABEL_LEN: usize = super::wire::MAX_NAME_LEN - 1 - FINGERPRINT_TEXT_LEN;

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The fingerprint of an owner key: the first [`FINGERPRINT_LEN`] bytes of
/// `H("themis/v1/owner-fingerprint"; owner public key)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwnerFingerprint([u8; FINGERPRINT_LEN]);

impl OwnerFingerprint {
    /// The fingerprint of `owner`.
    pub fn of(owner: &PublicKey) -> Self {
        let h = Transcript::digest(OWNER_FINGERPRINT_LABEL, &[owner.as_bytes()]);
        let mut fp = [0; FINGERPRINT_LEN];
        fp.copy_from_slice(&h[..FINGERPRINT_LEN]);
        Self(fp)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; FINGERPRINT_LEN] {
        &self.0
    }

    /// Parses the name form: exactly [`FINGERPRINT_TEXT_LEN`] characters of the lowercase
    /// base32 alphabet.
    fn from_text(s: &str) -> Option<Self> {
        if s.len() != FINGERPRINT_TEXT_LEN {
            return None;
        }
        let mut out = [0u8; FINGERPRINT_LEN];
        let (mut acc, mut bits, mut n) = (0u64, 0u32, 0usize);
        for c in s.bytes() {
            let v = BASE32.iter().position(|b| *b == c)? as u64;
            acc = (acc << 5) | v;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                *out.get_mut(n)? = (acc >> bits) as u8;
                n += 1;
                acc &= (1 << bits) - 1;
            }
        }
        // 32 characters are exactly 160 bits = 20 bytes: nothing is left over
        (n == FINGERPRINT_LEN && bits == 0).then_some(Self(out))
    }
}

impl std::fmt::Display for OwnerFingerprint {
    /// Lowercase base32 (RFC 4648 alphabet, no padding): 32 characters.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        let (mut acc, mut bits) = (0u64, 0u32);
        for b in self.0 {
            acc = (acc << 8) | u64::from(b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                if let Some(c) = BASE32.get(((acc >> bits) & 31) as usize) {
                    f.write_char(char::from(*c))?;
                }
            }
            acc &= (1 << bits) - 1;
        }
        Ok(())
    }
}

/// Who may provide a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameOwner {
    /// Anyone (the name is not of the owned form): the behaviour of the paper.
    Unowned,
    /// Only the providers the holder of the key with this fingerprint delegates it to.
    Owned(OwnerFingerprint),
    /// The name ends in `~` and 32 base32 characters of which some are upper case: a look-alike
    /// of an owned name, which nobody may provide (otherwise a case-insensitive reader, such as
    /// the DNS front end, could be led to an impostor).
    LookAlike,
}

impl NameOwner {
    /// Reads the owner from a service name (PROTOCOL.md §6.4 "Owned names"): a name is owned
    /// when it is `label ~ fingerprint` with a non-empty label and a fingerprint of exactly 32
    /// lowercase base32 characters; the last `~` separates them.
    pub fn of(name: &str) -> Self {
        let Some((label, fp)) = name.rsplit_once(OWNER_SEPARATOR) else {
            return Self::Unowned;
        };
        if label.is_empty() || fp.len() != FINGERPRINT_TEXT_LEN {
            return Self::Unowned;
        }
        if let Some(f) = OwnerFingerprint::from_text(fp) {
            return Self::Owned(f);
        }
        match OwnerFingerprint::from_text(&fp.to_ascii_lowercase()) {
            Some(_) => Self::LookAlike,
            None => Self::Unowned,
        }
    }
}

/// The owned form of `label` for `owner`: `label ~ fingerprint`. `None` when `label` is empty
/// or longer than [`MAX_OWNED_LABEL_LEN`] bytes.
pub fn owned_name(label: &str, owner: &PublicKey) -> Option<String> {
    if label.is_empty() || label.len() > MAX_OWNED_LABEL_LEN {
        return None;
    }
    Some(format!(
        "{label}{OWNER_SEPARATOR}{}",
        OwnerFingerprint::of(owner)
    ))
}

/// Why a delegation does not let a provider store records for a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DelegationProblem {
    /// The name is not owned: its records carry no delegation.
    #[error(
        "the name is not owned (no `~` and 32-character owner fingerprint at its end); it needs no delegation"
    )]
    NotOwned,
    /// The name looks owned but its fingerprint has upper-case letters.
    #[error(
        "the name ends in an owner fingerprint with upper-case letters; fingerprints are lower case, and such look-alike names cannot be provided"
    )]
    LookAlike,
    /// The name is owned and no delegation was given.
    #[error("the name is owned: a provider needs a delegation from its owner (`themis delegate`)")]
    Missing,
    /// The delegation is signed by a key whose fingerprint is not the name's.
    #[error("the delegation is signed by owner {found}, but the name belongs to owner {expected}")]
    WrongOwner {
        /// The name's fingerprint.
        expected: OwnerFingerprint,
        /// The fingerprint of the delegation's key.
        found: OwnerFingerprint,
    },
    /// The delegation ends before the record or at the given time.
    #[error("the delegation has expired (or ends before the record would)")]
    Expired,
    /// The owner's signature does not verify for this network, name and provider.
    #[error("the delegation was not signed for this network, name and provider id")]
    BadSignature,
}

/// An owner's signed statement that `provider` may provide `name` on a network until
/// `not_after` (PROTOCOL.md §6.4). It carries the owner's public key; the name's fingerprint
/// says which key that must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delegation {
    owner: PublicKey,
    not_after_unix_ms: u64,
    signature: Signature,
}

/// The digest an owner signs: `H("themis/v1/delegation"; net_id, name, provider id,
/// u64be not_after)`.
fn delegation_digest(
    network: &NetworkId,
    name: &str,
    provider: &NodeId,
    not_after_unix_ms: u64,
) -> [u8; 32] {
    Transcript::digest(
        DELEGATION_SIG_LABEL,
        &[
            network.as_bytes(),
            name.as_bytes(),
            provider.as_bytes(),
            &not_after_unix_ms.to_be_bytes(),
        ],
    )
}

impl Delegation {
    /// The owner `owner` delegates `name` to `provider` on `network` until `not_after_unix_ms`
    /// (milliseconds since the Unix epoch). Refused when `name` is not owned by `owner`.
    pub fn sign(
        owner: &IdentityKeypair,
        network: &NetworkId,
        name: &str,
        provider: &NodeId,
        not_after_unix_ms: u64,
    ) -> Result<Self, DelegationProblem> {
        let expected = match NameOwner::of(name) {
            NameOwner::Owned(f) => f,
            NameOwner::Unowned => return Err(DelegationProblem::NotOwned),
            NameOwner::LookAlike => return Err(DelegationProblem::LookAlike),
        };
        let found = OwnerFingerprint::of(&owner.public());
        if found != expected {
            return Err(DelegationProblem::WrongOwner { expected, found });
        }
        let d = delegation_digest(network, name, provider, not_after_unix_ms);
        Ok(Self {
            owner: owner.public(),
            not_after_unix_ms,
            signature: owner.sign(&d),
        })
    }

    /// The owner's public key.
    pub fn owner(&self) -> PublicKey {
        self.owner
    }

    /// When the delegation ends, milliseconds since the Unix epoch.
    pub fn not_after_unix_ms(&self) -> u64 {
        self.not_after_unix_ms
    }

    /// `owner public key (32) ‖ u64be not_after (8) ‖ signature (64)`.
    pub fn encode(&self) -> [u8; DELEGATION_LEN] {
        let mut out = [0; DELEGATION_LEN];
        out[..32].copy_from_slice(self.owner.as_bytes());
        out[32..40].copy_from_slice(&self.not_after_unix_ms.to_be_bytes());
        out[40..].copy_from_slice(self.signature.as_bytes());
        out
    }

    /// Parses [`Delegation::encode`]'s bytes; `None` unless exactly [`DELEGATION_LEN`] bytes
    /// (signatures are checked by [`Delegation::check`]).
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; DELEGATION_LEN] = b.try_into().ok()?;
        let (pk, rest) = b.split_at(PUBLIC_KEY_LEN);
        let (t, sig) = rest.split_at(8);
        Some(Self {
            owner: PublicKey::from_bytes(pk.try_into().ok()?),
            not_after_unix_ms: u64::from_be_bytes(t.try_into().ok()?),
            signature: Signature::from_bytes(sig.try_into().ok()?),
        })
    }

    /// The cheap checks, in order: the name is owned (or a look-alike), the key's fingerprint
    /// is the name's, and the delegation lasts until `until_unix_ms` at least.
    pub(crate) fn check_static(
        &self,
        name: &str,
        until_unix_ms: u64,
    ) -> Result<(), DelegationProblem> {
        let expected = match NameOwner::of(name) {
            NameOwner::Owned(f) => f,
            NameOwner::Unowned => return Err(DelegationProblem::NotOwned),
            NameOwner::LookAlike => return Err(DelegationProblem::LookAlike),
        };
        let found = OwnerFingerprint::of(&self.owner);
        if found != expected {
            return Err(DelegationProblem::WrongOwner { expected, found });
        }
        if self.not_after_unix_ms < until_unix_ms {
            return Err(DelegationProblem::Expired);
        }
        Ok(())
    }

    /// The owner's signature over the delegation digest.
    pub(crate) fn check_signature(
        &self,
        network: &NetworkId,
        name: &str,
        provider: &NodeId,
    ) -> Result<(), DelegationProblem> {
        let d = delegation_digest(network, name, provider, self.not_after_unix_ms);
        self.owner
            .verify(&d, &self.signature)
            .map_err(|_| DelegationProblem::BadSignature)
    }

    /// Every check, in order (PROTOCOL.md §6.4): the name is owned by this delegation's key,
    /// the delegation lasts until `until_unix_ms`, and its signature verifies for `network`,
    /// `name` and `provider`.
    pub fn check(
        &self,
        network: &NetworkId,
        name: &str,
        provider: &NodeId,
        until_unix_ms: u64,
    ) -> Result<(), DelegationProblem> {
        self.check_static(name, until_unix_ms)?;
        self.check_signature(network, name, provider)
    }
}

/// Whether `provider` may provide `name` on `network` at `now_unix_ms` with `delegation`
/// (PROTOCOL.md §6.4): an unowned name takes no delegation; an owned one needs one from its
/// owner, for this network, name and provider, that has not expired; a look-alike takes none.
/// What a node checks before it signs records, so that it refuses at once, with the reason.
pub fn check_provider(
    network: &NetworkId,
    name: &str,
    provider: &NodeId,
    delegation: Option<&Delegation>,
    now_unix_ms: u64,
) -> Result<(), DelegationProblem> {
    match (NameOwner::of(name), delegation) {
        (NameOwner::Unowned, None) => Ok(()),
        (NameOwner::Unowned, Some(_)) => Err(DelegationProblem::NotOwned),
        (NameOwner::LookAlike, _) => Err(DelegationProblem::LookAlike),
        (NameOwner::Owned(_), None) => Err(DelegationProblem::Missing),
        (NameOwner::Owned(_), Some(d)) => {
            d.check(network, name, provider, now_unix_ms.saturating_add(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetworkId {
        NetworkId::new("test").unwrap()
    }

    #[test]
    fn names_are_owned_only_in_the_exact_form() {
        let owner = IdentityKeypair::from_seed(&[7; 32]);
        let name = owned_name("pay", &owner.public()).unwrap();
        let fp = OwnerFingerprint::of(&owner.public());
        assert_eq!(name, format!("pay~{fp}"));
        assert_eq!(fp.to_string().len(), FINGERPRINT_TEXT_LEN);
        assert_eq!(NameOwner::of(&name), NameOwner::Owned(fp));
        // the text form parses back to the bytes
        assert_eq!(OwnerFingerprint::from_text(&fp.to_string()), Some(fp));
        // the last `~` separates: a label may hold `~`
        let nested = format!("a~b~{fp}");
        assert_eq!(NameOwner::of(&nested), NameOwner::Owned(fp));
        for unowned in [
            "pay",
            "pay~",
            "~",
            "a~b",
            &format!("~{fp}"),                        // empty label
            &format!("pay~{fp}x"),                    // 33 characters
            &format!("pay~{}", &fp.to_string()[1..]), // 31
            &format!("pay-{fp}"),
            "pay~0000000000000000000000000000000a", // 0, 1, 8, 9 are not base32
        ] {
            assert_eq!(NameOwner::of(unowned), NameOwner::Unowned, "{unowned}");
        }
        let upper = format!("pay~{}", fp.to_string().to_ascii_uppercase());
        assert_eq!(NameOwner::of(&upper), NameOwner::LookAlike);
        assert!(owned_name("", &owner.public()).is_none());
        assert!(owned_name(&"x".repeat(MAX_OWNED_LABEL_LEN + 1), &owner.public()).is_none());
        let longest = owned_name(&"x".repeat(MAX_OWNED_LABEL_LEN), &owner.public()).unwrap();
        assert_eq!(longest.len(), super::super::wire::MAX_NAME_LEN);
    }

    #[test]
    fn a_delegation_binds_network_name_provider_and_time() {
        let owner = IdentityKeypair::from_seed(&[7; 32]);
        let other = IdentityKeypair::from_seed(&[8; 32]);
        let name = owned_name("pay", &owner.public()).unwrap();
        let p = IdentityKeypair::from_seed(&[1; 32]).node_id(&net());
        let q = IdentityKeypair::from_seed(&[2; 32]).node_id(&net());
        let d = Delegation::sign(&owner, &net(), &name, &p, 5_000).unwrap();
        assert_eq!(Delegation::decode(&d.encode()), Some(d));
        assert_eq!(Delegation::decode(&d.encode()[1..]), None);
        d.check(&net(), &name, &p, 5_000).unwrap();
        assert_eq!(
            d.check(&net(), &name, &p, 5_001),
            Err(DelegationProblem::Expired)
        );
        assert_eq!(
            d.check(&net(), &name, &q, 1),
            Err(DelegationProblem::BadSignature)
        );
        let other_net = NetworkId::new("other").unwrap();
        assert_eq!(
            d.check(&other_net, &name, &p, 1),
            Err(DelegationProblem::BadSignature)
        );
        let sibling = owned_name("shop", &owner.public()).unwrap();
        assert_eq!(
            d.check(&net(), &sibling, &p, 1),
            Err(DelegationProblem::BadSignature)
        );
        assert_eq!(
            d.check(&net(), "pay", &p, 1),
            Err(DelegationProblem::NotOwned)
        );
        // another key cannot delegate the name, nor pass its delegation off as the owner's
        assert!(matches!(
            Delegation::sign(&other, &net(), &name, &p, 5_000),
            Err(DelegationProblem::WrongOwner { .. })
        ));
        let theirs = owned_name("pay", &other.public()).unwrap();
        let forged = Delegation::sign(&other, &net(), &theirs, &p, 5_000).unwrap();
        assert!(matches!(
            forged.check(&net(), &name, &p, 1),
            Err(DelegationProblem::WrongOwner { .. })
        ));
        // a later not-after with the old signature does not verify
        let mut bytes = d.encode();
        bytes[39] ^= 1;
        let moved = Delegation::decode(&bytes).unwrap();
        assert_eq!(
            moved.check(&net(), &name, &p, 1),
            Err(DelegationProblem::BadSignature)
        );
    }
}
