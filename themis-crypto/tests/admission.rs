//! Property tests of admission certificates (PROTOCOL.md §2.10): the codec, the checks, and the
//! separation of open and closed networks' node ids.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use themis_crypto::{ADMISSION_CERT_LEN, AdmissionCert, IdentityKeypair, NetworkId, NodeId};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every 136-byte string decodes, and encodes back to itself; no other length decodes.
    #[test]
    fn codec_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        match AdmissionCert::decode(&bytes) {
            Ok(c) => {
                prop_assert_eq!(bytes.len(), ADMISSION_CERT_LEN);
                prop_assert_eq!(c.encode().to_vec(), bytes);
            }
            Err(_) => prop_assert_ne!(bytes.len(), ADMISSION_CERT_LEN),
        }
    }

    /// An issued certificate verifies before its end, and any flipped bit makes it fail.
    #[test]
    fn any_flipped_bit_is_refused(
        ak in any::<[u8; 32]>(),
        node in any::<[u8; 32]>(),
        not_after in 1u64..u64::MAX,
        bit in 0usize..ADMISSION_CERT_LEN * 8,
    ) {
        let ak = IdentityKeypair::from_seed(&ak);
        let net = NetworkId::new("n").unwrap().closed(ak.public());
        let id = IdentityKeypair::from_seed(&node).node_id(&net);
        let cert = AdmissionCert::issue(&ak, &net, id, not_after).unwrap();
        prop_assert!(cert.verify(&net, &id, not_after - 1).is_ok());
        prop_assert!(cert.verify(&net, &id, not_after).is_err());
        let mut b = cert.encode();
        b[bit / 8] ^= 1 << (bit % 8);
        let flipped = AdmissionCert::decode(&b).unwrap();
        // Flipping a bit of not_after may extend or shorten it; check at time 0.
        prop_assert!(flipped.verify(&net, &id, 0).is_err());
    }

    /// The open network and closed networks of the same name (under different keys) give every
    /// key different node ids.
    #[test]
    fn open_and_closed_ids_differ(seed in any::<[u8; 32]>(), k1 in any::<[u8; 32]>(), k2 in any::<[u8; 32]>()) {
        prop_assume!(k1 != k2);
        let kp = IdentityKeypair::from_seed(&seed);
        let open = NetworkId::new("twiitr").unwrap();
        let c1 = open.clone().closed(IdentityKeypair::from_seed(&k1).public());
        let c2 = open.clone().closed(IdentityKeypair::from_seed(&k2).public());
        let ids: [NodeId; 3] = [kp.node_id(&open), kp.node_id(&c1), kp.node_id(&c2)];
        prop_assert_ne!(ids[0], ids[1]);
        prop_assert_ne!(ids[0], ids[2]);
        prop_assert_ne!(ids[1], ids[2]);
        prop_assert!(!ids[1].is_derived_from(&kp.public(), &open));
        prop_assert!(ids[1].is_derived_from(&kp.public(), &c1));
    }
}
