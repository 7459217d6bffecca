//! Arithmetic on the 256-bit identifier ring (paper §6.1: "m-bit addresses ... organized on a
//! ring topology in a clockwise order"). Ids are big-endian unsigned integers modulo 2^256.

use themis_crypto::{NODE_ID_LEN, NodeId};

/// Number of bits of the identifier space (the paper's `m`), hence of finger-table entries.
pub const ID_BITS: usize = NODE_ID_LEN * 8;

fn halves(x: &NodeId) -> (u128, u128) {
    let b = x.as_bytes();
    let mut hi = [0u8; 16];
    let mut lo = [0u8; 16];
    hi.copy_from_slice(b.get(..16).unwrap_or(&[0; 16]));
    lo.copy_from_slice(b.get(16..).unwrap_or(&[0; 16]));
    (u128::from_be_bytes(hi), u128::from_be_bytes(lo))
}

/// `b - a mod 2^256` as (high, low) 128-bit halves.
fn distance_halves(a: &NodeId, b: &NodeId) -> (u128, u128) {
    let (ah, al) = halves(a);
    let (bh, bl) = halves(b);
    let (lo, borrow) = bl.overflowing_sub(al);
    let hi = bh.wrapping_sub(ah).wrapping_sub(u128::from(borrow));
    (hi, lo)
}

/// `b - a mod 2^256`: how far clockwise `b` lies from `a`.
pub(crate) fn distance(a: &NodeId, b: &NodeId) -> [u8; NODE_ID_LEN] {
    let (hi, lo) = distance_halves(a, b);
    let mut out = [0u8; NODE_ID_LEN];
    for (d, s) in out
        .iter_mut()
        .zip(hi.to_be_bytes().iter().chain(lo.to_be_bytes().iter()))
    {
        *d = *s;
    }
    out
}

/// `n + 2^bit mod 2^256`: the start of finger `bit + 1` of node `n` (paper §6.1: entry `i`
/// holds the first node `≥ n + 2^(i−1)`).
pub(crate) fn finger_start(n: &NodeId, bit: usize) -> NodeId {
    let mut out = *n.as_bytes();
    let byte = NODE_ID_LEN - 1 - bit / 8;
    let mut carry = 1u16 << (bit % 8);
    for i in (0..=byte.min(NODE_ID_LEN - 1)).rev() {
        if carry == 0 {
            break;
        }
        if let Some(o) = out.get_mut(i) {
            let s = u16::from(*o) + carry;
            *o = s as u8;
            carry = s >> 8;
        }
    }
    NodeId::from_bytes(out)
}

/// `x ∈ (a, b)` clockwise. When `a == b` the interval is the whole ring except `a`.
pub(crate) fn in_open(a: &NodeId, x: &NodeId, b: &NodeId) -> bool {
    if a == b {
        return x != a;
    }
    let dx = distance_halves(a, x);
    let db = distance_halves(a, b);
    dx != (0, 0) && dx < db
}

/// `x ∈ (a, b]` clockwise. When `a == b` the interval is the whole ring.
pub(crate) fn in_half_open(a: &NodeId, x: &NodeId, b: &NodeId) -> bool {
    if a == b {
        return true;
    }
    in_open(a, x, b) || x == b
}

/// The fingers of `n` that are `s` when `s` is its successor: finger `bit` starts at
/// `n + 2^bit`, which lies in `(n, s]` exactly when `2^bit ≤ s - n`, so these are the bits
/// below the returned one (every bit when `s == n`, a ring of one). The same answer as testing
/// `in_half_open(n, finger_start(n, bit), s)` bit by bit, without 250 tests of 256-bit sums
/// per finger sweep.
pub(crate) fn fingers_covered(n: &NodeId, s: &NodeId) -> usize {
    if n == s {
        return ID_BITS;
    }
    match distance_halves(n, s) {
        (0, lo) => 128 - lo.leading_zeros() as usize,
        (hi, _) => 256 - hi.leading_zeros() as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(v: u8) -> NodeId {
        let mut b = [0u8; 32];
        b[31] = v;
        NodeId::from_bytes(b)
    }

    fn big(bytes: [u8; 32]) -> u128 {
        // low 128 bits, enough to compare small examples
        u128::from_be_bytes(bytes[16..].try_into().unwrap())
    }

    #[test]
    fn distance_wraps() {
        assert_eq!(big(distance(&id(10), &id(12))), 2);
        let d = distance(&id(12), &id(10));
        assert_eq!(d[0], 0xff);
        assert_eq!(d[31], 0xfe);
    }

    #[test]
    fn intervals() {
        assert!(in_open(&id(1), &id(2), &id(3)));
        assert!(!in_open(&id(1), &id(3), &id(3)));
        assert!(in_half_open(&id(1), &id(3), &id(3)));
        assert!(in_open(&id(200), &id(2), &id(3)));
        assert!(!in_open(&id(200), &id(100), &id(3)));
        assert!(in_open(&id(5), &id(6), &id(5)));
        assert!(!in_open(&id(5), &id(5), &id(5)));
        assert!(in_half_open(&id(5), &id(5), &id(5)));
    }

    #[test]
    fn finger_starts() {
        assert_eq!(finger_start(&id(1), 0), id(2));
        assert_eq!(finger_start(&id(1), 3), id(9));
        assert_eq!(finger_start(&id(255), 0).as_bytes()[30], 1);
        let top = finger_start(&id(0), 255);
        assert_eq!(top.as_bytes()[0], 0x80);
        // wraps around
        let w = finger_start(&NodeId::from_bytes([0xff; 32]), 0);
        assert_eq!(w, id(0));
    }

    fn covered_bit_by_bit(n: &NodeId, s: &NodeId) -> usize {
        (0..ID_BITS)
            .find(|b| !in_half_open(n, &finger_start(n, *b), s))
            .unwrap_or(ID_BITS)
    }

    #[test]
    fn fingers_covered_at_the_edges() {
        for (n, s) in [
            (1, 2),
            (1, 3),
            (1, 1),
            (200, 3),
            (3, 200),
            (0, 255),
            (255, 0),
        ] {
            assert_eq!(
                fingers_covered(&id(n), &id(s)),
                covered_bit_by_bit(&id(n), &id(s)),
                "{n} {s}"
            );
        }
        let top = NodeId::from_bytes([0xff; 32]);
        assert_eq!(fingers_covered(&id(0), &top), 256);
        assert_eq!(fingers_covered(&top, &id(0)), 1);
    }

    proptest! {
        #[test]
        fn fingers_covered_matches_the_bitwise_test(n in any::<[u8; 32]>(), s in any::<[u8; 32]>(), shift in 0usize..32) {
            // successors at every scale: s = n + (random >> 8·shift)
            let n = NodeId::from_bytes(n);
            let mut d = [0u8; 32];
            d[shift..].copy_from_slice(&s[..32 - shift]);
            let (hi, lo) = halves(&NodeId::from_bytes(d));
            let (nh, nl) = halves(&n);
            let (l, c) = nl.overflowing_add(lo);
            let h = nh.wrapping_add(hi).wrapping_add(u128::from(c));
            let mut b = [0u8; 32];
            b[..16].copy_from_slice(&h.to_be_bytes());
            b[16..].copy_from_slice(&l.to_be_bytes());
            let s = NodeId::from_bytes(b);
            prop_assert_eq!(fingers_covered(&n, &s), covered_bit_by_bit(&n, &s));
        }

        #[test]
        fn open_interval_matches_distance(a in any::<[u8; 32]>(), x in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let (a, x, b) = (NodeId::from_bytes(a), NodeId::from_bytes(x), NodeId::from_bytes(b));
            // exactly one of: x == a, x in (a, b], x in (b, a) when a != b
            if a != b && x != a {
                prop_assert!(in_half_open(&a, &x, &b) != in_open(&b, &x, &a));
            }
            // distance(a, x) + distance(x, a) == 0 mod 2^256
            let d1 = distance(&a, &x);
            let d2 = distance(&x, &a);
            let mut carry = 0u16;
            let mut zero = true;
            for i in (0..32).rev() {
                let s = u16::from(d1[i]) + u16::from(d2[i]) + carry;
                zero &= s as u8 == 0;
                carry = s >> 8;
            }
            prop_assert!(zero);
        }
    }
}
