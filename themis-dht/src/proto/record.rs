//! Signed provider records and object ids (paper §6.1 store, strengthened: the paper lets a
//! responsible node invent "ghost objects" (§6.2); here every record is signed by its provider
//! and verified by whoever stores or reads it).

use std::net::SocketAddr;

use themis_crypto::{IdentityKeypair, NetworkId, NodeId, PublicKey, Signature, Transcript};

use super::metrics::Metrics;
use super::owner::{Delegation, NameOwner};
use super::verified::{VerifiedCache, cache_key};
use super::wire::{
    MAX_NAME_LEN, MAX_TAG_LEN, MAX_TAGS, MAX_VERSION_LEN, OBJECT_ID_LABEL, RECORD_SIG_LABEL,
    TOMBSTONE_SIG_LABEL, addr_bytes,
};

/// The object id of replica `r` of `name`: the paper's `h(name ‖ r)`, made unambiguous with the
/// crate's length-prefixed, labelled hash: `BLAKE2b-256(0x13 ‖ "themis/v1/object-id" ‖
/// u32be(len name) ‖ name ‖ 00 00 00 01 ‖ r)`.
pub fn object_id(name: &str, r: u8) -> NodeId {
    NodeId::from_bytes(Transcript::digest(
        OBJECT_ID_LABEL,
        &[name.as_bytes(), &[r]],
    ))
}

/// Why a record or request was refused. Sent on the wire in `refused` responses (as the
/// snake_case variant name) and counted in [`crate::Metrics`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Refusal {
    /// The sender of a store is not the provider the record names.
    NotProvider,
    /// The replica index is above the network's maximum `k`.
    BadReplica,
    /// The provider id is not the hash of the record's public key on this network.
    BadIdentity,
    /// The signature does not verify.
    BadSignature,
    /// The record has expired.
    Expired,
    /// The record's expiry is further in the future than the network's TTL allows.
    TooFarFuture,
    /// A record with the same or a newer sequence number is already stored.
    Stale,
    /// This node is not responsible for the object id (in its view of the ring).
    NotResponsible,
    /// A quota (per object, per provider or in total) is full.
    OverQuota,
    /// The record or message broke the schema or a size limit.
    Malformed,
    /// The record is for another service name than the one asked for.
    WrongName,
    /// The peer sends requests faster than this node accepts.
    RateLimited,
    /// The node is overloaded (queries or output queue full).
    Busy,
    /// The node is leaving the ring.
    Leaving,
    /// The node is not a ring member.
    NotMember,
    /// A leave came from a node that is not a plausible predecessor.
    NotPredecessor,
    /// A record for an owned name without a valid delegation from the name's owner (missing,
    /// from another key, expiring before the record, not for this network, name and provider),
    /// or a record for an unowned name that carries one (PROTOCOL.md §6.4 "Owned names").
    BadDelegation,
}

impl Refusal {
    /// Every variant, in the order of [`crate::Metrics::rejected`].
    pub const ALL: [Refusal; 17] = [
        Refusal::NotProvider,
        Refusal::BadReplica,
        Refusal::BadIdentity,
        Refusal::BadSignature,
        Refusal::Expired,
        Refusal::TooFarFuture,
        Refusal::Stale,
        Refusal::NotResponsible,
        Refusal::OverQuota,
        Refusal::Malformed,
        Refusal::WrongName,
        Refusal::RateLimited,
        Refusal::Busy,
        Refusal::Leaving,
        Refusal::NotMember,
        Refusal::NotPredecessor,
        Refusal::BadDelegation,
    ];

    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotProvider => "not_provider",
            Refusal::BadReplica => "bad_replica",
            Refusal::BadIdentity => "bad_identity",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::TooFarFuture => "too_far_future",
            Refusal::Stale => "stale",
            Refusal::NotResponsible => "not_responsible",
            Refusal::OverQuota => "over_quota",
            Refusal::Malformed => "malformed",
            Refusal::WrongName => "wrong_name",
            Refusal::RateLimited => "rate_limited",
            Refusal::Busy => "busy",
            Refusal::Leaving => "leaving",
            Refusal::NotMember => "not_member",
            Refusal::NotPredecessor => "not_predecessor",
            Refusal::BadDelegation => "bad_delegation",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a provider says about the service it offers (paper §7: versions for canary releases,
/// weights for load balancing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceMetadata {
    /// Service version, at most [`MAX_VERSION_LEN`] bytes.
    pub version: String,
    /// Relative weight for load balancing.
    pub weight: u16,
    /// Free-form tags: at most [`MAX_TAGS`] of at most [`MAX_TAG_LEN`] bytes.
    pub tags: Vec<String>,
}

/// What the caller of `register` supplies; the node fills in identity, expiry, sequence number
/// and signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Service name (1..=[`MAX_NAME_LEN`] bytes).
    pub name: String,
    /// Address clients should connect to; `None` means the node's own address.
    pub addr: Option<SocketAddr>,
    /// Version, weight, tags.
    pub metadata: ServiceMetadata,
    /// The owner's delegation to this node, for an owned name (PROTOCOL.md §6.4 "Owned
    /// names"); `None` for an unowned one.
    pub delegation: Option<Delegation>,
}

impl ServiceSpec {
    /// A spec with default metadata at the node's own address.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            addr: None,
            metadata: ServiceMetadata::default(),
            delegation: None,
        }
    }
}

/// A provider record as stored and returned by the DHT: always signed; records handed to the
/// caller have been verified.
///
/// A record may be a **tombstone** ([`ProviderRecord::is_withdrawn`]): the provider's signed
/// statement that it withdrew the service (deregistration, graceful leave). It has the fields of
/// the record it withdraws, a higher sequence number, the expiry of that record, and a signature
/// under another label (PROTOCOL.md §6.4), so it replaces the record on every replica like a
/// newer record would, and only the provider's key can make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderRecord {
    pub(crate) name: String,
    pub(crate) replica: u8,
    pub(crate) provider: NodeId,
    pub(crate) public_key: PublicKey,
    pub(crate) addr: SocketAddr,
    pub(crate) metadata: ServiceMetadata,
    pub(crate) expires_unix_ms: u64,
    pub(crate) seq: u64,
    pub(crate) signature: Signature,
    /// The provider's key succession statement (PROTOCOL.md §2.9, §6.4 `succ`), as it
    /// travels; not covered by the record's signature (it carries its own two).
    pub(crate) succession: Option<Vec<u8>>,
    /// A tombstone: the provider withdrew this service.
    pub(crate) withdrawn: bool,
    /// The owner's delegation, for an owned name (PROTOCOL.md §6.4 `deleg`); covered by the
    /// record's signature. Boxed: 104 bytes that most records (unowned names) do not carry,
    /// out of the 400 of every record an object table holds.
    pub(crate) delegation: Option<Box<Delegation>>,
}

pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "service name is {} bytes; it must be 1..={MAX_NAME_LEN}",
            name.len()
        ));
    }
    Ok(())
}

pub(crate) fn check_metadata(m: &ServiceMetadata) -> Result<(), String> {
    if m.version.len() > MAX_VERSION_LEN {
        return Err(format!(
            "version is {} bytes; at most {MAX_VERSION_LEN}",
            m.version.len()
        ));
    }
    if m.tags.len() > MAX_TAGS {
        return Err(format!("{} tags; at most {MAX_TAGS}", m.tags.len()));
    }
    if let Some(t) = m.tags.iter().find(|t| t.len() > MAX_TAG_LEN) {
        return Err(format!("tag of {} bytes; at most {MAX_TAG_LEN}", t.len()));
    }
    Ok(())
}

impl ProviderRecord {
    /// Builds and signs a record for replica `replica` of `spec.name` (the provider is
    /// `identity` on `network`).
    pub fn sign(
        identity: &IdentityKeypair,
        network: &NetworkId,
        spec: &ServiceSpec,
        default_addr: SocketAddr,
        replica: u8,
        expires_unix_ms: u64,
        seq: u64,
    ) -> Self {
        Self::sign_kind(
            identity,
            network,
            spec,
            default_addr,
            (replica, expires_unix_ms, seq),
            false,
        )
    }

    /// Builds and signs the tombstone of replica `replica` of `spec.name`: the provider's
    /// statement that it withdrew the service. `seq` must be higher than that of every record
    /// it withdraws and `expires_unix_ms` no earlier than theirs (PROTOCOL.md §6.10: it is kept
    /// until the records it withdraws would have expired).
    pub fn sign_withdrawal(
        identity: &IdentityKeypair,
        network: &NetworkId,
        spec: &ServiceSpec,
        default_addr: SocketAddr,
        replica: u8,
        expires_unix_ms: u64,
        seq: u64,
    ) -> Self {
        Self::sign_kind(
            identity,
            network,
            spec,
            default_addr,
            (replica, expires_unix_ms, seq),
            true,
        )
    }

    fn sign_kind(
        identity: &IdentityKeypair,
        network: &NetworkId,
        spec: &ServiceSpec,
        default_addr: SocketAddr,
        (replica, expires_unix_ms, seq): (u8, u64, u64),
        withdrawn: bool,
    ) -> Self {
        let mut rec = Self {
            name: spec.name.clone(),
            replica,
            provider: identity.node_id(network),
            public_key: identity.public(),
            addr: spec.addr.unwrap_or(default_addr),
            metadata: spec.metadata.clone(),
            expires_unix_ms,
            seq,
            signature: Signature::from_bytes([0; 64]),
            succession: None,
            withdrawn,
            delegation: spec.delegation.map(Box::new),
        };
        rec.signature = identity.sign(&rec.signed_digest(network));
        rec
    }

    /// The 32-byte digest the provider signs with Ed25519 (see PROTOCOL.md, DHT §Provider record):
    /// the same parts for a record and a tombstone, under two labels.
    pub(crate) fn signed_digest(&self, network: &NetworkId) -> [u8; 32] {
        self.signed_transcript(network).finish()
    }

    /// The transcript [`ProviderRecord::signed_digest`] finishes: every signed field appended.
    fn signed_transcript(&self, network: &NetworkId) -> Transcript {
        let oid = self.object_id();
        let label = if self.withdrawn {
            TOMBSTONE_SIG_LABEL
        } else {
            RECORD_SIG_LABEL
        };
        let mut t = Transcript::new(label);
        t.append(network.as_bytes())
            .append(self.name.as_bytes())
            .append(&[self.replica])
            .append(oid.as_bytes())
            .append(self.provider.as_bytes())
            .append(self.public_key.as_bytes())
            .append(&addr_bytes(&self.addr))
            .append(self.metadata.version.as_bytes())
            .append(&self.metadata.weight.to_be_bytes())
            .append(&[self.metadata.tags.len() as u8]);
        for tag in &self.metadata.tags {
            t.append(tag.as_bytes());
        }
        t.append(&self.expires_unix_ms.to_be_bytes())
            .append(&self.seq.to_be_bytes());
        // Owned names only: the delegation is one more part, so the provider's signature
        // covers it (nobody on the path can swap it for another of the same owner) and the
        // digest of a record without one is unchanged.
        if let Some(d) = &self.delegation {
            t.append(&d.encode());
        }
        t
    }

    /// Checks what does not depend on time: replica index, self-certifying identity, signature.
    /// Cheap checks come first; the signature last.
    pub(crate) fn verify_static(&self, network: &NetworkId, max_k: u8) -> Result<(), Refusal> {
        if self.replica > max_k {
            return Err(Refusal::BadReplica);
        }
        // paper §5: identities are self-certifying: provider = h(PK, net_id)
        if !self.provider.is_derived_from(&self.public_key, network) {
            return Err(Refusal::BadIdentity);
        }
        self.check_delegation_static()?;
        if let Some(d) = &self.delegation {
            d.check_signature(network, &self.name, &self.provider)
                .map_err(|_| Refusal::BadDelegation)?;
        }
        self.public_key
            .verify(&self.signed_digest(network), &self.signature)
            .map_err(|_| Refusal::BadSignature)
    }

    /// The owned-name checks that need no signature (PROTOCOL.md §6.4 "Owned names", checks
    /// 1-4): an owned name's record carries a delegation from the key its fingerprint names,
    /// lasting at least as long as the record; an unowned name's carries none; a look-alike of
    /// an owned name (upper-case fingerprint) is refused.
    fn check_delegation_static(&self) -> Result<(), Refusal> {
        match (NameOwner::of(&self.name), self.delegation.as_deref()) {
            (NameOwner::Unowned, None) => Ok(()),
            (NameOwner::Owned(_), Some(d)) => d
                .check_static(&self.name, self.expires_unix_ms)
                .map_err(|_| Refusal::BadDelegation),
            _ => Err(Refusal::BadDelegation),
        }
    }

    /// [`ProviderRecord::verify_static`] with the signature check skipped when `cache` knows the
    /// exact signed triple `(public key, signed digest, signature)` verified before (issue 6).
    /// The replica range and the delegation's form are checked every time; the self-certifying
    /// identity on a miss only (the digest binds it: a hit is a record whose identity was
    /// checked). A signature that verifies is remembered, one that fails never is.
    pub(crate) fn verify_cached(
        &self,
        network: &NetworkId,
        max_k: u8,
        cache: &mut VerifiedCache,
        metrics: &mut Metrics,
    ) -> Result<(), Refusal> {
        if !cache.enabled() {
            return self.verify_static(network, max_k);
        }
        if self.replica > max_k {
            return Err(Refusal::BadReplica);
        }
        // The signed digest covers the network, the provider id and the public key, so a hit
        // also stands for the self-certifying identity, checked before the entry was made. It
        // covers the delegation's bytes too (and the name and provider they are checked
        // against), so a hit also stands for the owner's signature.
        let signed = self.signed_transcript(network);
        let key = cache_key(signed.clone(), &self.signature);
        if cache.hit(&key) {
            self.check_delegation_static()?;
            metrics.verify_cache_hits += 1;
            return Ok(());
        }
        metrics.verify_cache_misses += 1;
        // In PROTOCOL.md's order (§6.4, §6.7): identity, then the delegation, then signatures.
        // paper §5: identities are self-certifying: provider = h(PK, net_id)
        if !self.provider.is_derived_from(&self.public_key, network) {
            return Err(Refusal::BadIdentity);
        }
        self.check_delegation_static()?;
        if let Some(d) = &self.delegation {
            d.check_signature(network, &self.name, &self.provider)
                .map_err(|_| Refusal::BadDelegation)?;
        }
        self.public_key
            .verify(&signed.finish(), &self.signature)
            .map_err(|_| Refusal::BadSignature)?;
        cache.insert(key);
        Ok(())
    }

    /// Remembers in `cache` that this record's signature is good, without verifying it: only
    /// for records this node has just signed itself.
    pub(crate) fn remember_signed(&self, network: &NetworkId, cache: &mut VerifiedCache) {
        // A cache entry also stands for the self-certifying identity and the owner's signature
        // on the delegation (see `verify_cached`): this node made the record's signature, not
        // the delegation's.
        let delegation_ok = self.delegation.as_ref().is_none_or(|d| {
            d.check_signature(network, &self.name, &self.provider)
                .is_ok()
        });
        let identity_ok = self.provider.is_derived_from(&self.public_key, network);
        if cache.enabled() && delegation_ok && identity_ok {
            cache.insert(cache_key(self.signed_transcript(network), &self.signature));
        }
    }

    /// Expiry window: not past, and not further ahead than `max_ahead_ms`.
    pub(crate) fn check_time(&self, now_unix_ms: u64, max_ahead_ms: u64) -> Result<(), Refusal> {
        if self.expires_unix_ms <= now_unix_ms {
            return Err(Refusal::Expired);
        }
        if self.expires_unix_ms > now_unix_ms.saturating_add(max_ahead_ms) {
            return Err(Refusal::TooFarFuture);
        }
        Ok(())
    }

    /// The object id this record is stored under: `object_id(name, replica)`.
    pub fn object_id(&self) -> NodeId {
        object_id(&self.name, self.replica)
    }
    /// Service name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Replica index `r` (0..=k).
    pub fn replica(&self) -> u8 {
        self.replica
    }
    /// The provider's node id.
    pub fn provider(&self) -> NodeId {
        self.provider
    }
    /// The provider's public key (its id is derived from it).
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }
    /// Where to reach the service.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Version, weight, tags.
    pub fn metadata(&self) -> &ServiceMetadata {
        &self.metadata
    }
    /// Expiry, milliseconds since the Unix epoch.
    pub fn expires_unix_ms(&self) -> u64 {
        self.expires_unix_ms
    }
    /// Sequence number: a newer record from the same provider replaces an older one.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// The provider's signature.
    pub fn signature(&self) -> Signature {
        self.signature
    }
    /// `true` for a tombstone: the provider withdrew the service (readers drop the provider;
    /// this record's address and metadata are those of the record it withdraws).
    pub fn is_withdrawn(&self) -> bool {
        self.withdrawn
    }

    /// The owner's delegation this record carries (owned names only, PROTOCOL.md §6.4).
    pub fn delegation(&self) -> Option<&Delegation> {
        self.delegation.as_deref()
    }

    /// The provider's key succession statement (key rotation, PROTOCOL.md §2.9), if the
    /// record carries one that verifies on `network` and names this record's key as the
    /// successor: discovery maps the provider's old id to this one with it. Whether it is
    /// still in force is [`Succession::check_in_force`](themis_crypto::Succession::check_in_force).
    pub fn succession(&self, network: &NetworkId) -> Option<themis_crypto::Succession> {
        let s = themis_crypto::Succession::decode(self.succession.as_deref()?, network).ok()?;
        (s.new_key() == self.public_key).then_some(s)
    }

    /// The record with `statement` (an encoded key succession statement) attached; it is not
    /// part of the signed digest, so the signature stays valid.
    pub(crate) fn with_succession(mut self, statement: Option<Vec<u8>>) -> Self {
        self.succession = statement;
        self
    }

    /// A copy with one field altered and the signature kept: for adversary tests.
    #[doc(hidden)]
    pub fn forged_addr(&self, addr: SocketAddr) -> Self {
        let mut r = self.clone();
        r.addr = addr;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetworkId {
        NetworkId::new("test").unwrap()
    }

    fn rec(kp: &IdentityKeypair) -> ProviderRecord {
        ProviderRecord::sign(
            kp,
            &net(),
            &ServiceSpec::new("check"),
            "10.0.0.1:7000".parse().unwrap(),
            1,
            1_000_000,
            7,
        )
    }

    #[test]
    fn object_ids_differ_per_replica_and_name() {
        assert_ne!(object_id("check", 0), object_id("check", 1));
        assert_ne!(object_id("check", 0), object_id("checK", 0));
        // documented derivation
        let expect = Transcript::digest("themis/v1/object-id", &[b"check", &[2u8]]);
        assert_eq!(object_id("check", 2).as_bytes(), &expect);
    }

    #[test]
    fn signed_record_verifies_and_tampering_is_caught() {
        let kp = IdentityKeypair::from_seed(&[1; 32]);
        let r = rec(&kp);
        r.verify_static(&net(), 8).unwrap();
        assert_eq!(
            r.verify_static(&NetworkId::new("other").unwrap(), 8),
            Err(Refusal::BadIdentity)
        );
        let f = r.forged_addr("10.0.0.2:7000".parse().unwrap());
        assert_eq!(f.verify_static(&net(), 8), Err(Refusal::BadSignature));
        let mut g = r.clone();
        g.name = "other".into();
        assert_eq!(g.verify_static(&net(), 8), Err(Refusal::BadSignature));
        let mut h = r.clone();
        h.seq += 1;
        assert_eq!(h.verify_static(&net(), 8), Err(Refusal::BadSignature));
        // a record's signature does not make a tombstone, nor the reverse
        let mut t = r.clone();
        t.withdrawn = true;
        assert_eq!(t.verify_static(&net(), 8), Err(Refusal::BadSignature));
        let tomb = ProviderRecord::sign_withdrawal(
            &kp,
            &net(),
            &ServiceSpec::new("check"),
            "10.0.0.1:7000".parse().unwrap(),
            1,
            1_000_000,
            8,
        );
        tomb.verify_static(&net(), 8).unwrap();
        let mut u = tomb.clone();
        u.withdrawn = false;
        assert_eq!(u.verify_static(&net(), 8), Err(Refusal::BadSignature));
        assert_eq!(r.verify_static(&net(), 0), Err(Refusal::BadReplica));
        let other = IdentityKeypair::from_seed(&[2; 32]);
        let mut i = r.clone();
        i.provider = other.node_id(&net());
        assert_eq!(i.verify_static(&net(), 8), Err(Refusal::BadIdentity));
    }

    #[test]
    fn a_cached_verification_still_refuses_a_borrowed_identity() {
        // Signed by `kp`, under another node's id: the signature is good, the identity is not.
        let kp = IdentityKeypair::from_seed(&[1; 32]);
        let mut r = rec(&kp);
        r.provider = IdentityKeypair::from_seed(&[2; 32]).node_id(&net());
        r.signature = kp.sign(&r.signed_digest(&net()));
        let mut cache = VerifiedCache::new(16);
        let mut m = Metrics::default();
        for _ in 0..2 {
            assert_eq!(
                r.verify_cached(&net(), 8, &mut cache, &mut m),
                Err(Refusal::BadIdentity)
            );
        }
        r.remember_signed(&net(), &mut cache);
        assert_eq!(
            r.verify_cached(&net(), 8, &mut cache, &mut m),
            Err(Refusal::BadIdentity),
            "a record whose identity fails is never cached"
        );
        // Under a borrowed identity and with a look-alike name: the identity is refused first,
        // as PROTOCOL.md orders the checks.
        let mut both = r.clone();
        both.name = "svc~ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".into();
        both.signature = kp.sign(&both.signed_digest(&net()));
        assert_eq!(both.verify_static(&net(), 8), Err(Refusal::BadIdentity));
        let mut lookalike = rec(&kp);
        lookalike.name.clone_from(&both.name);
        lookalike.signature = kp.sign(&lookalike.signed_digest(&net()));
        assert_eq!(
            lookalike.verify_cached(&net(), 8, &mut cache, &mut m),
            Err(Refusal::BadDelegation),
            "the name is a look-alike"
        );
        assert_eq!(
            both.verify_cached(&net(), 8, &mut cache, &mut m),
            Err(Refusal::BadIdentity)
        );
        // A good record is cached once verified, and its hits are counted.
        let good = rec(&kp);
        good.verify_cached(&net(), 8, &mut cache, &mut m).unwrap();
        good.verify_cached(&net(), 8, &mut cache, &mut m).unwrap();
        assert_eq!(m.verify_cache_hits, 1);
    }

    #[test]
    fn a_succession_statement_travels_outside_the_signature_and_is_checked_by_readers() {
        use crate::proto::wire::WireRecord;
        let (old, new) = (
            IdentityKeypair::from_seed(&[1; 32]),
            IdentityKeypair::from_seed(&[2; 32]),
        );
        let s = themis_crypto::Succession::sign(&old, &new, &net(), 1, 2).unwrap();
        let plain = rec(&new);
        let with = plain.clone().with_succession(Some(s.encode()));
        // The signature still verifies: the statement is not part of the signed digest.
        with.verify_static(&net(), 8).unwrap();
        assert_eq!(with.succession(&net()), Some(s.clone()));
        assert_eq!(plain.succession(&net()), None);
        // CBOR: absent, the record encodes as before; present, it round-trips.
        let cbor = |r: &ProviderRecord| {
            let mut out = Vec::new();
            ciborium::into_writer(&WireRecord::from(r), &mut out).unwrap();
            out
        };
        let (a, b) = (cbor(&plain), cbor(&with));
        assert!(!a.windows(4).any(|w| w == b"succ"));
        // one more map entry: the key "succ" (1 + 4 bytes), then bytes(n) (58 n ‖ statement)
        assert_eq!(b.len(), a.len() + 5 + 2 + s.encode().len());
        let back: WireRecord = ciborium::from_reader(&b[..]).unwrap();
        assert_eq!(ProviderRecord::try_from(back).unwrap(), with);
        // A statement of another key, or of another network, is no statement of this record.
        let stranger = rec(&old).with_succession(Some(s.encode()));
        assert_eq!(stranger.succession(&net()), None);
        assert_eq!(with.succession(&NetworkId::new("other").unwrap()), None);
    }

    #[test]
    fn time_window() {
        let kp = IdentityKeypair::from_seed(&[1; 32]);
        let r = rec(&kp);
        assert_eq!(r.check_time(1_000_000, 10), Err(Refusal::Expired));
        assert_eq!(r.check_time(0, 10), Err(Refusal::TooFarFuture));
        assert_eq!(r.check_time(999_990, 10), Ok(()));
    }
}
