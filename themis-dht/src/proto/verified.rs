//! A bounded cache of provider-record signatures already verified by this node (issue 6).
//!
//! Every reader verifies every record it receives and the responsible node verifies every store
//! and handed-over record (strengthening paper §6.2); the same signed record is then verified
//! again and again, and the Ed25519 verification (≈ 42 µs) dominates a local find. The cache
//! remembers that a signature verified, keyed by a hash of exactly what was signed and the
//! signature: the record's signed transcript (the labelled BLAKE2b-256 of every field of the
//! record, its public key among them, and the network id, whose digest is what the provider
//! signs: see `ProviderRecord::signed_digest`) continued with the signature, so a record
//! altered in any byte, under another key or with another signature, has another key and
//! misses. One hash serves both: a hit costs the transcript once (it cost the digest and then
//! a second hash over key, digest and signature before). A hit skips only the signature check: the caller still runs the expiry,
//! replica-range, identity, sequence and quota checks every time.
//!
//! Eviction is least-recently-used (`hashlink`'s `LruCache`, as the mesh's discovery cache):
//! deterministic, no clock reads and no randomness. Size 0 disables the cache.

use hashlink::LruCache;
use themis_crypto::{Signature, Transcript};

/// The key of a signed record: its signed transcript (every signed field appended, not finished)
/// continued with the signature. Local only, never on the wire.
pub(crate) fn cache_key(mut signed: Transcript, sig: &Signature) -> [u8; 32] {
    signed.append(sig.as_bytes());
    signed.finish()
}

/// Least-recently-used set of verified signature keys, at most `cap` entries (`None`: off).
#[derive(Debug)]
pub(crate) struct VerifiedCache(Option<LruCache<[u8; 32], ()>>);

impl VerifiedCache {
    pub(crate) fn new(cap: usize) -> Self {
        Self((cap > 0).then(|| LruCache::new(cap)))
    }

    pub(crate) fn enabled(&self) -> bool {
        self.0.is_some()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, LruCache::len)
    }

    /// Whether `key` is known to have verified; a hit makes it the most recently used.
    pub(crate) fn hit(&mut self, key: &[u8; 32]) -> bool {
        self.0.as_mut().is_some_and(|c| c.get(key).is_some())
    }

    /// Remembers that `key` verified (as the most recently used), evicting the least recently
    /// used entry when full.
    pub(crate) fn insert(&mut self, key: [u8; 32]) {
        if let Some(c) = self.0.as_mut() {
            c.insert(key, ());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u8) -> [u8; 32] {
        [i; 32]
    }

    #[test]
    fn size_one_evicts_and_zero_disables() {
        let mut c = VerifiedCache::new(1);
        c.insert(k(1));
        assert!(c.hit(&k(1)));
        c.insert(k(2));
        assert!(!c.hit(&k(1)), "the older entry is evicted");
        assert!(c.hit(&k(2)));
        assert_eq!(c.len(), 1);
        let mut z = VerifiedCache::new(0);
        z.insert(k(1));
        assert!(!z.hit(&k(1)));
        assert_eq!(z.len(), 0);
    }

    #[test]
    fn least_recently_used_goes_first() {
        let mut c = VerifiedCache::new(2);
        c.insert(k(1));
        c.insert(k(2));
        assert!(c.hit(&k(1))); // 2 is now the least recently used
        c.insert(k(3));
        assert!(c.hit(&k(1)));
        assert!(!c.hit(&k(2)));
        assert!(c.hit(&k(3)));
        c.insert(k(3)); // re-inserting is a use, not a second entry
        assert_eq!(c.len(), 2);
        c.insert(k(4)); // evicts 1, the least recently used
        assert!(c.hit(&k(3)));
        assert!(!c.hit(&k(1)));
    }

    #[test]
    fn every_part_signed_and_the_signature_are_in_the_key() {
        let signed = |content: &[u8]| {
            let mut t = Transcript::new("themis/v1/record");
            t.append(content);
            t
        };
        let (content, sig) = ([3u8; 96], Signature::from_bytes([2; 64]));
        let base = cache_key(signed(&content), &sig);
        for i in 0..content.len() {
            let mut c = content;
            c[i] ^= 1;
            assert_ne!(cache_key(signed(&c), &sig), base);
        }
        for i in 0..64 {
            let mut s = *sig.as_bytes();
            s[i] ^= 0x80;
            assert_ne!(cache_key(signed(&content), &Signature::from_bytes(s)), base);
        }
        // the content's length is in the key: the same bytes, one fewer, give another key
        assert_ne!(cache_key(signed(&content[..95]), &sig), base);
    }
}
