//! Property tests of the key succession statement (PROTOCOL.md §2.9): the codec round trip, and
//! every mutation, cut or extension of a valid statement is refused without panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use themis_crypto::{
    IdentityKeypair, MAX_GRACE_MS, MAX_SUCCESSION_LEN, MIN_SUCCESSION_LEN, NetworkId, Succession,
};

fn statement(
    old: [u8; 32],
    new: [u8; 32],
    net: &str,
    issued: u64,
    grace: u64,
) -> (Succession, NetworkId) {
    let net = NetworkId::new(net).unwrap();
    let s = Succession::sign(
        &IdentityKeypair::from_seed(&old),
        &IdentityKeypair::from_seed(&new),
        &net,
        issued,
        issued + grace,
    )
    .unwrap();
    (s, net)
}

fn inputs() -> impl Strategy<Value = ([u8; 32], [u8; 32], String, u64, u64)> {
    (
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        "[a-z0-9][a-z0-9 -]{0,62}[a-z0-9]",
        0u64..=u64::MAX / 2,
        1u64..=MAX_GRACE_MS,
    )
        .prop_filter("two different keys", |(o, n, ..)| o != n)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip((old, new, net, issued, grace) in inputs()) {
        let (s, net) = statement(old, new, &net, issued, grace);
        let b = s.encode();
        prop_assert!((MIN_SUCCESSION_LEN..=MAX_SUCCESSION_LEN).contains(&b.len()));
        prop_assert_eq!(b.len(), 210 + net.as_bytes().len());
        let d = Succession::decode(&b, &net).unwrap();
        prop_assert_eq!(&d, &s);
        prop_assert_eq!(d.encode(), b);
        prop_assert_eq!(d.old_id(), IdentityKeypair::from_seed(&old).node_id(&net));
        prop_assert_eq!(d.new_id(), IdentityKeypair::from_seed(&new).node_id(&net));
        prop_assert!(d.check_in_force(issued, 0).is_ok());
        prop_assert!(d.check_in_force(issued + grace, 0).is_err());
    }

    #[test]
    fn any_mutation_is_refused(
        (old, new, net, issued, grace) in inputs(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let (s, net) = statement(old, new, &net, issued, grace);
        let mut b = s.encode();
        let i = at.index(b.len());
        b[i] ^= flip;
        prop_assert!(Succession::decode(&b, &net).is_err(), "byte {} ^ {:#x} accepted", i, flip);
    }

    #[test]
    fn cut_or_extended_is_refused(
        (old, new, net, issued, grace) in inputs(),
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 1..8),
    ) {
        let (s, net) = statement(old, new, &net, issued, grace);
        let b = s.encode();
        prop_assert!(Succession::decode(&b[..cut.index(b.len())], &net).is_err());
        let mut longer = b.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(Succession::decode(&longer, &net).is_err());
    }

    #[test]
    fn any_bytes_decode_without_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Succession::decode(&b, &NetworkId::new("twiitr").unwrap());
    }
}
