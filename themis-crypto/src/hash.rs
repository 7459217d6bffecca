//! Domain-separated BLAKE2b-256 hashing.

use dryoc::classic::crypto_generichash::{
    GenericHashState, crypto_generichash_final, crypto_generichash_init, crypto_generichash_update,
};

/// Length of every hash this crate produces.
pub const HASH_LEN: usize = 32;

/// An incremental, domain-separated BLAKE2b-256 hash of a sequence of byte strings.
///
/// Encoding (so that no two different sequences hash alike):
/// `u8 len(label) ‖ label ‖ for each part: u32-BE len(part) ‖ part`, hashed with unkeyed
/// BLAKE2b with a 32-byte output. Labels are ASCII and at most 255 bytes.
#[derive(Clone)]
pub struct Transcript {
    state: GenericHashState,
}

impl Transcript {
    /// Starts a hash under `label` (for example `"themis/v1/node-id"`).
    ///
    /// Labels are compile-time constants of the protocol; a label longer than 255 bytes is cut
    /// to 255, which no label defined by PROTOCOL.md is.
    pub fn new(label: &str) -> Self {
        let label = label.as_bytes();
        let label = label.get(..255).unwrap_or(label);
        // BLAKE2b with a 32-byte output and no key is always accepted by dryoc.
        let mut state = match crypto_generichash_init(None, HASH_LEN) {
            Ok(s) => s,
            Err(_) => unreachable!("BLAKE2b-256 without a key is a valid configuration"),
        };
        crypto_generichash_update(&mut state, &[label.len() as u8]);
        crypto_generichash_update(&mut state, label);
        Self { state }
    }

    /// Appends one length-prefixed part.
    ///
    /// Parts longer than `u32::MAX` bytes are not supported (no protocol message is that large).
    pub fn append(&mut self, part: &[u8]) -> &mut Self {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        crypto_generichash_update(&mut self.state, &len.to_be_bytes());
        crypto_generichash_update(&mut self.state, part);
        self
    }

    /// Finishes the hash.
    pub fn finish(self) -> [u8; HASH_LEN] {
        let mut out = [0u8; HASH_LEN];
        if crypto_generichash_final(self.state, &mut out).is_err() {
            unreachable!("output length matches the length given at init");
        }
        out
    }

    /// Hashes `parts` under `label` in one call.
    pub fn digest(label: &str, parts: &[&[u8]]) -> [u8; HASH_LEN] {
        let mut t = Self::new(label);
        for p in parts {
            t.append(p);
        }
        t.finish()
    }
}

impl std::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transcript(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_is_unambiguous() {
        let a = Transcript::digest("l", &[b"ab", b"c"]);
        let b = Transcript::digest("l", &[b"a", b"bc"]);
        let c = Transcript::digest("m", &[b"ab", b"c"]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        let mut t = Transcript::new("l");
        t.append(b"ab").append(b"c");
        assert_eq!(t.finish(), a);
    }

    #[test]
    fn known_answer() {
        // BLAKE2b-256 of 0x01 'l' 00000001 'x', fixed so that the encoding cannot drift.
        let h = Transcript::digest("l", &[b"x"]);
        let mut direct = [0u8; 32];
        dryoc::classic::crypto_generichash::crypto_generichash(
            &mut direct,
            &[1, b'l', 0, 0, 0, 1, b'x'],
            None,
        )
        .unwrap();
        assert_eq!(h, direct);
    }
}
