//! The operating system's random source.

/// Fills `buf` with random bytes from the operating system.
pub fn fill(buf: &mut [u8]) {
    dryoc::rng::copy_randombytes(buf);
}
