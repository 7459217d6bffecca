//! Where a handshake gets its randomness: the ephemeral secrets and the initiator's nonce.
//!
//! The state machines never read a global RNG by themselves: they draw from a [`RandomSource`]
//! the caller hands in. [`OsRandom`] is the production source; `SeededRandom` (feature
//! `testing`) makes a whole simulation reproducible from one seed.

#[cfg(feature = "testing")]
pub use seeded::SeededRandom;

/// A source of random bytes for the handshake.
pub trait RandomSource: Send {
    /// Fills `buf` entirely.
    fn fill(&mut self, buf: &mut [u8]);
}

/// The operating system's random source (`themis_crypto::fill_random`). Use this in production.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        themis_crypto::fill_random(buf);
    }
}

/// `SeededRandom`: compiled only with the `testing` feature.
#[cfg(feature = "testing")]
mod seeded {
    use std::fmt;

    use themis_crypto::Transcript;
    use zeroize::Zeroize;

    use super::RandomSource;

    /// A deterministic stream: block `i` is `BLAKE2b-256("themis/v1/seeded-random"; seed, i)`.
    ///
    /// For simulations and tests only (feature `testing`): anyone who knows the seed knows every
    /// ephemeral secret drawn from it, so a real node must use [`OsRandom`](super::OsRandom).
    pub struct SeededRandom {
        seed: [u8; 32],
        counter: u64,
        block: [u8; 32],
        used: usize,
    }

    impl SeededRandom {
        /// A stream determined by `seed`.
        pub fn new(seed: [u8; 32]) -> Self {
            Self {
                seed,
                counter: 0,
                block: [0; 32],
                used: 32,
            }
        }

        /// A stream determined by a 64-bit seed (for example a simulation's seed plus a node index).
        pub fn from_u64(seed: u64) -> Self {
            let mut s = [0u8; 32];
            for (d, b) in s.iter_mut().zip(seed.to_be_bytes()) {
                *d = b;
            }
            Self::new(s)
        }
    }

    impl RandomSource for SeededRandom {
        fn fill(&mut self, buf: &mut [u8]) {
            for out in buf {
                if self.used >= self.block.len() {
                    self.block = Transcript::digest(
                        "themis/v1/seeded-random",
                        &[&self.seed, &self.counter.to_be_bytes()],
                    );
                    self.counter = self.counter.wrapping_add(1);
                    self.used = 0;
                }
                *out = self.block.get(self.used).copied().unwrap_or(0);
                self.used += 1;
            }
        }
    }

    impl Drop for SeededRandom {
        fn drop(&mut self) {
            self.seed.zeroize();
            self.block.zeroize();
        }
    }

    impl fmt::Debug for SeededRandom {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("SeededRandom(<redacted>)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_deterministic_and_split_invariant() {
        let mut a = SeededRandom::from_u64(7);
        let mut b = SeededRandom::from_u64(7);
        let mut c = SeededRandom::from_u64(8);
        let mut x = [0u8; 100];
        a.fill(&mut x);
        let mut y = [0u8; 100];
        let (y1, y2) = y.split_at_mut(33);
        b.fill(y1);
        b.fill(y2);
        assert_eq!(x, y);
        let mut z = [0u8; 100];
        c.fill(&mut z);
        assert_ne!(x, z);
    }
}
