//! Property tests of identities, node ids and network ids, and the redaction of secrets in
//! `Debug` output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use themis_crypto::{
    AeadKey, EphemeralSecret, IdentityKeypair, MAX_NETWORK_ID_LEN, MacKey, NetworkId, NodeId,
    PublicKey, SessionKeys,
};

/// Unicode `White_Space` (the property `str::trim` uses), written out from the Unicode
/// Character Database's PropList.txt rather than taken from the standard library.
const WHITE_SPACE: &[char] = &[
    '\u{0009}', '\u{000A}', '\u{000B}', '\u{000C}', '\u{000D}', '\u{0020}', '\u{0085}', '\u{00A0}',
    '\u{1680}', '\u{2000}', '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}', '\u{2005}', '\u{2006}',
    '\u{2007}', '\u{2008}', '\u{2009}', '\u{200A}', '\u{2028}', '\u{2029}', '\u{202F}', '\u{205F}',
    '\u{3000}',
];

/// The documented NetworkId rule, written independently: 1..=64 bytes of UTF-8, no character of
/// general category Cc (U+0000–U+001F, U+007F–U+009F), first and last characters not white space.
fn rule_accepts(s: &str) -> bool {
    let control = |c: char| matches!(c as u32, 0x00..=0x1f | 0x7f..=0x9f);
    !s.is_empty()
        && s.len() <= 64
        && !s.chars().any(control)
        && !WHITE_SPACE.contains(&s.chars().next().unwrap())
        && !WHITE_SPACE.contains(&s.chars().last().unwrap())
}

/// Strings biased towards the edges of the rule: controls, white space, multi-byte characters
/// and lengths around 64 bytes.
fn network_name() -> impl Strategy<Value = String> {
    let interesting = prop_oneof![
        4 => proptest::char::range('a', 'z'),
        1 => proptest::sample::select(WHITE_SPACE.to_vec()),
        1 => proptest::sample::select(vec!['\0', '\u{7f}', '\u{9f}', '\u{1b}', '\u{80}']),
        1 => proptest::sample::select(vec!['é', '€', '𝄞', '\u{200B}', '\u{FEFF}', '-', '/']),
        1 => any::<char>(),
    ];
    proptest::collection::vec(interesting, 0..70).prop_map(|v| v.into_iter().collect())
}

fn net(s: &str) -> NetworkId {
    NetworkId::new(s).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn network_id_follows_exactly_the_documented_rule(name in network_name()) {
        let got = NetworkId::new(&name);
        prop_assert_eq!(got.is_ok(), rule_accepts(&name), "{:?}", name);
        match got {
            Ok(id) => {
                prop_assert_eq!(id.as_str(), name.as_str());
                prop_assert!(id.as_bytes().len() <= MAX_NETWORK_ID_LEN);
                // The wire form parses back to the same id.
                prop_assert_eq!(NetworkId::from_bytes(id.as_bytes()).unwrap(), id);
            }
            Err(e) => {
                // The operator sees the rule.
                prop_assert!(e.to_string().contains("1-64 bytes"));
                prop_assert!(NetworkId::from_bytes(name.as_bytes()).is_err());
            }
        }
    }

    #[test]
    fn network_id_from_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let accepted = NetworkId::from_bytes(&bytes).is_ok();
        let expected = std::str::from_utf8(&bytes).is_ok_and(rule_accepts);
        prop_assert_eq!(accepted, expected);
    }

    #[test]
    fn different_network_gives_different_id(seed in any::<[u8; 32]>(), a in "[a-z0-9]{1,20}", b in "[a-z0-9]{1,20}") {
        prop_assume!(a != b);
        let kp = IdentityKeypair::from_seed(&seed);
        let (na, nb) = (net(&a), net(&b));
        prop_assert_ne!(kp.node_id(&na), kp.node_id(&nb));
        prop_assert!(!kp.node_id(&na).is_derived_from(&kp.public(), &nb));
        prop_assert!(kp.node_id(&na).is_derived_from(&kp.public(), &na));
    }

    /// A key that does not hash to the claimed id is never accepted, whether the claimed id is
    /// another key's id, a random id, or the right id with one bit flipped.
    #[test]
    fn foreign_key_is_never_accepted(
        s1 in any::<[u8; 32]>(),
        s2 in any::<[u8; 32]>(),
        random in any::<[u8; 32]>(),
        bit in 0usize..256,
    ) {
        prop_assume!(s1 != s2);
        let n = net("twiitr");
        let (k1, k2) = (IdentityKeypair::from_seed(&s1), IdentityKeypair::from_seed(&s2));
        let id1 = k1.node_id(&n);
        prop_assert!(!id1.is_derived_from(&k2.public(), &n));
        let r = NodeId::from_bytes(random);
        prop_assert_eq!(r.is_derived_from(&k1.public(), &n), r == id1);
        let mut flipped = *id1.as_bytes();
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(!NodeId::from_bytes(flipped).is_derived_from(&k1.public(), &n));
        // Any 32 bytes as a public key: arbitrary bytes are fine here, never a panic.
        let pk = PublicKey::from_bytes(random);
        prop_assert_eq!(id1.is_derived_from(&pk, &n), pk == k1.public());
    }

    #[test]
    fn node_id_hex_round_trip(bytes in any::<[u8; 32]>()) {
        let id = NodeId::from_bytes(bytes);
        let s = id.to_string();
        prop_assert_eq!(s.len(), 64);
        prop_assert!(s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert_eq!(s.parse::<NodeId>().unwrap(), id);
        prop_assert_eq!(s.to_uppercase().parse::<NodeId>().unwrap(), id);
        prop_assert_eq!(id.short().to_string(), &s[..8]);
        // One digit short or long is refused.
        prop_assert!(s[..63].parse::<NodeId>().is_err());
        let long = format!("{s}0");
        prop_assert!(long.parse::<NodeId>().is_err());
    }

    #[test]
    fn public_key_hex_round_trip(bytes in any::<[u8; 32]>()) {
        let pk = PublicKey::from_bytes(bytes);
        let s = pk.to_string();
        prop_assert_eq!(s.len(), 64);
        prop_assert_eq!(s.parse::<PublicKey>().unwrap(), pk);
        prop_assert!(s[..62].parse::<PublicKey>().is_err());
    }

    #[test]
    fn hex_parsers_never_panic(s in "\\PC{0,80}") {
        let _ = s.parse::<NodeId>();
        let _ = s.parse::<PublicKey>();
    }

    #[test]
    fn node_id_cbor_round_trip(bytes in any::<[u8; 32]>()) {
        let id = NodeId::from_bytes(bytes);
        let mut buf = Vec::new();
        ciborium::into_writer(&id, &mut buf).unwrap();
        // CBOR is not human readable: a 32-byte byte string (major type 2, length 32).
        prop_assert_eq!(buf.len(), 2 + 32);
        prop_assert_eq!(&buf[..2], &[0x58, 0x20]);
        prop_assert_eq!(&buf[2..], &bytes[..]);
        let back: NodeId = ciborium::from_reader(&buf[..]).unwrap();
        prop_assert_eq!(back, id);
    }

    #[test]
    fn node_id_cbor_rejects_wrong_lengths(len in 0usize..64) {
        prop_assume!(len != 32);
        let mut buf = Vec::new();
        ciborium::into_writer(&ciborium::Value::Bytes(vec![7; len]), &mut buf).unwrap();
        prop_assert!(ciborium::from_reader::<NodeId, _>(&buf[..]).is_err());
    }

    #[test]
    fn node_id_order_is_big_endian_byte_order(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
        prop_assert_eq!(NodeId::from_bytes(a).cmp(&NodeId::from_bytes(b)), a.cmp(&b));
    }

    /// No `Debug` output of a secret-holding type contains its secret bytes, in lower- or
    /// upper-case hex or as a decimal byte list.
    #[test]
    fn debug_never_shows_secrets(seed in any::<[u8; 32]>(), key in any::<[u8; 32]>()) {
        let kp = IdentityKeypair::from_seed(&seed);
        let eph = EphemeralSecret::from_bytes(key);
        let peer = EphemeralSecret::from_bytes(seed);
        let shared = eph.diffie_hellman(&peer.public()).unwrap();
        let keys = SessionKeys::derive(&shared, &[0; 32]);
        let secrets: Vec<(String, [u8; 32])> = vec![
            (format!("{kp:?}"), seed),
            (format!("{kp:#?}"), seed),
            (format!("{:?}", AeadKey::from_bytes(key)), key),
            (format!("{:?}", MacKey::from_bytes(key)), key),
            (format!("{eph:?}"), key),
            (format!("{shared:?}"), *shared.as_bytes()),
            (format!("{keys:?}"), *keys.initiator_to_responder.as_bytes()),
            (format!("{keys:?}"), *keys.responder_to_initiator.as_bytes()),
            (format!("{keys:?}"), *keys.confirm.as_bytes()),
        ];
        for (shown, secret) in secrets {
            let lower = hex::encode(secret);
            // Any 8 consecutive bytes of the secret would be a leak.
            for w in 0..=(64 - 16) {
                let part = &lower[w..w + 16];
                prop_assert!(!shown.contains(part), "{shown}");
                prop_assert!(!shown.contains(&part.to_uppercase()), "{shown}");
            }
            let decimal = format!("{:?}", &secret[..8]);
            let decimal = decimal.trim_end_matches(']');
            prop_assert!(!shown.contains(decimal), "{shown}");
            prop_assert!(shown.contains("redacted"), "{shown}");
        }
    }
}

#[test]
fn debug_keeps_public_parts_visible() {
    let kp = IdentityKeypair::from_seed(&[1; 32]);
    assert!(format!("{kp:?}").contains(&kp.public().to_string()));
    let eph = EphemeralSecret::from_bytes([2; 32]);
    assert!(format!("{eph:?}").contains(&hex::encode(eph.public().as_bytes())));
}
