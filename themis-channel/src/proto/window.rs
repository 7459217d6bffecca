//! Sliding anti-replay window over sequence numbers (WireGuard / RFC 6479 style bitmap).

/// Outcome of checking a sequence number against the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Never seen and within (or ahead of) the window: may be accepted.
    Fresh,
    /// Already marked.
    Duplicate,
    /// Too far behind the newest marked number to be told apart from a replay (or zero).
    TooOld,
}

/// Remembers which sequence numbers in `(newest - size, newest]` have been marked; everything
/// at or below `newest - size` counts as too old. Sequence number 0 is never valid.
///
/// Memory: `size / 64 + 1` words, fixed at construction. `check` never mutates, so a caller can
/// verify a frame's tag between `check` and `mark` (verify-then-update).
#[derive(Clone, Debug)]
pub(crate) struct ReplayWindow {
    /// Newest sequence number marked (0: none yet).
    newest: u64,
    /// Window size in sequence numbers, a multiple of 64.
    size: u64,
    /// Ring of `size / 64 + 1` words; bit `s % 64` of word `(s / 64) % words` stands for `s`.
    bits: Box<[u64]>,
}

impl ReplayWindow {
    /// A window of `size` positions (rounded up to a multiple of 64; at least 64).
    pub(crate) fn new(size: u64) -> Self {
        let size = size.max(64).div_ceil(64) * 64;
        let words = usize::try_from(size / 64 + 1).unwrap_or(usize::MAX);
        Self {
            newest: 0,
            size,
            bits: vec![0u64; words].into_boxed_slice(),
        }
    }

    /// Window size in sequence numbers.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Newest sequence number marked so far (0 if none).
    pub(crate) fn newest(&self) -> u64 {
        self.newest
    }

    fn slot(&self, seq: u64) -> (usize, u64) {
        let words = self.bits.len() as u64;
        // `words` > 0, and the remainder is < words, which came from a usize.
        let word = ((seq / 64) % words) as usize;
        (word, 1u64 << (seq % 64))
    }

    /// Classifies `seq` without changing anything.
    pub(crate) fn check(&self, seq: u64) -> Check {
        if seq == 0 {
            return Check::TooOld;
        }
        if seq > self.newest {
            return Check::Fresh;
        }
        if self.newest - seq >= self.size {
            return Check::TooOld;
        }
        let (word, bit) = self.slot(seq);
        match self.bits.get(word) {
            Some(w) if w & bit != 0 => Check::Duplicate,
            Some(_) => Check::Fresh,
            None => Check::TooOld,
        }
    }

    /// Marks `seq` as seen. Only call after [`ReplayWindow::check`] returned [`Check::Fresh`].
    pub(crate) fn mark(&mut self, seq: u64) {
        if seq > self.newest {
            let words = self.bits.len() as u64;
            let cur = self.newest / 64;
            let new = seq / 64;
            if new - cur >= words {
                self.bits.fill(0);
            } else {
                // Clear the words of the blocks the window slides onto.
                for block in cur + 1..=new {
                    let (word, _) = self.slot(block * 64);
                    if let Some(w) = self.bits.get_mut(word) {
                        *w = 0;
                    }
                }
            }
            self.newest = seq;
        }
        let (word, bit) = self.slot(seq);
        if let Some(w) = self.bits.get_mut(word) {
            *w |= bit;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn basic_sequence() {
        let mut w = ReplayWindow::new(1024);
        assert_eq!(w.check(0), Check::TooOld);
        assert_eq!(w.check(1), Check::Fresh);
        w.mark(1);
        assert_eq!(w.check(1), Check::Duplicate);
        w.mark(3000);
        assert_eq!(w.check(3000 - 1023), Check::Fresh);
        assert_eq!(w.check(3000 - 1024), Check::TooOld);
        assert_eq!(w.check(1), Check::TooOld);
        assert_eq!(w.check(2999), Check::Fresh);
        assert_eq!(w.check(u64::MAX), Check::Fresh);
        w.mark(u64::MAX);
        assert_eq!(w.check(u64::MAX), Check::Duplicate);
        assert_eq!(w.check(u64::MAX - 1), Check::Fresh);
    }

    #[test]
    fn size_is_rounded_up() {
        assert_eq!(ReplayWindow::new(1).size(), 64);
        assert_eq!(ReplayWindow::new(1000).size(), 1024);
        assert_eq!(ReplayWindow::new(1024).size(), 1024);
    }

    /// The obvious model: a set of everything ever accepted.
    fn model_check(seen: &HashSet<u64>, newest: u64, size: u64, seq: u64) -> Check {
        if seq == 0 || (seq <= newest && newest - seq >= size) {
            Check::TooOld
        } else if seen.contains(&seq) {
            Check::Duplicate
        } else {
            Check::Fresh
        }
    }

    proptest! {
        /// Against the model, for any sequence of offered numbers (clustered so that
        /// duplicates, in-window reordering and window slides all happen).
        #[test]
        fn matches_model(size in 64u64..300, offers in proptest::collection::vec((0u64..4, 0u64..600), 1..400)) {
            let mut w = ReplayWindow::new(size);
            let size = w.size();
            let mut seen = HashSet::new();
            let mut base = 0u64;
            for (jump, off) in offers {
                base += jump * 97;
                let seq = base.saturating_sub(off / 2) + off % 7;
                let expect = model_check(&seen, w.newest(), size, seq);
                prop_assert_eq!(w.check(seq), expect, "seq {} newest {}", seq, w.newest());
                if expect == Check::Fresh {
                    w.mark(seq);
                    seen.insert(seq);
                }
            }
        }
    }
}
