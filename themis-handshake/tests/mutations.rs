//! Every damaged message is rejected with an error, never a panic, and never damages the state
//! the genuine message still needs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use themis_testkit::handshake::{
    Pair, assert_matching, field_swaps, msg1_fields, msg2_fields, msg3_fields, mutations,
};

/// All damaged forms of message 1 for one fixed transcript.
fn damaged_msg1(p: &Pair, msg1: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut all = mutations(msg1);
    all.extend(field_swaps(msg1, &msg1_fields(p.net.as_bytes().len())));
    all
}

fn check_msg1_rejections(p: &Pair, rng: u64, damaged: &[(String, Vec<u8>)]) {
    let run = p.run_to_msg3(rng);
    let mut responder = p.responder(rng ^ 0x5555);
    for (what, m) in damaged {
        assert!(
            responder.handle_message1(m, p.now).is_err(),
            "message 1 with {what} was accepted"
        );
        assert_eq!(responder.pending_len(), 0, "{what} left state behind");
    }
    // The genuine message 1 still works.
    responder.handle_message1(&run.msg1, p.now).unwrap();
    assert_eq!(responder.pending_len(), 1);
}

fn check_msg2_rejections(p: &Pair, rng: u64, damaged: &[(String, Vec<u8>)]) {
    let run = p.run_to_msg3(rng);
    // A fresh initiator with the same randomness waits for the same message 2.
    let (mut initiator, msg1) = p.initiator(rng);
    assert_eq!(msg1, run.msg1);
    for (what, m) in damaged {
        assert!(
            initiator.handle_message2(m, p.now).is_err(),
            "message 2 with {what} was accepted"
        );
    }
    let (session, msg3) = initiator.handle_message2(&run.msg2, p.now).unwrap();
    assert_eq!(msg3, run.msg3);
    assert_eq!(session.session_id, run.a_session.session_id);
}

fn check_msg3_rejections(p: &Pair, rng: u64, damaged: &[(String, Vec<u8>)]) {
    let mut run = p.run_to_msg3(rng);
    for (what, m) in damaged {
        assert!(
            run.responder.handle_message3(m, p.now).is_err(),
            "message 3 with {what} was accepted"
        );
        assert_eq!(
            run.responder.pending_len(),
            1,
            "{what} removed the pending entry"
        );
    }
    let b = run.responder.handle_message3(&run.msg3, p.now).unwrap();
    assert_matching(&run.a_session, &b);
}

#[test]
fn every_damaged_message1_is_rejected() {
    let p = Pair::fixed();
    let run = p.run_to_msg3(7);
    let damaged = damaged_msg1(&p, &run.msg1);
    assert!(damaged.len() > 195 * 8);
    check_msg1_rejections(&p, 7, &damaged);
}

#[test]
fn every_damaged_message2_is_rejected_and_the_initiator_keeps_waiting() {
    let p = Pair::fixed();
    let run = p.run_to_msg3(8);
    let mut damaged = mutations(&run.msg2);
    damaged.extend(field_swaps(&run.msg2, &msg2_fields()));
    // Other messages in its place.
    damaged.push(("message 1 instead".into(), run.msg1.clone()));
    damaged.push(("message 3 instead".into(), run.msg3.clone()));
    check_msg2_rejections(&p, 8, &damaged);
}

#[test]
fn every_damaged_message3_is_rejected_and_the_pending_entry_survives() {
    let p = Pair::fixed();
    let run = p.run_to_msg3(9);
    let mut damaged = mutations(&run.msg3);
    damaged.extend(field_swaps(&run.msg3, &msg3_fields()));
    damaged.push(("message 2 instead".into(), run.msg2.clone()));
    check_msg3_rejections(&p, 9, &damaged);
}

#[derive(Debug, Clone)]
enum Damage {
    Flip(usize),
    Truncate(usize),
    Extend(u8),
    Swap(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => any::<usize>().prop_map(Damage::Flip),
        2 => any::<usize>().prop_map(Damage::Truncate),
        1 => any::<u8>().prop_map(Damage::Extend),
        1 => any::<usize>().prop_map(Damage::Swap),
    ]
}

fn apply(d: &Damage, msg: &[u8], fields: &[(usize, usize)]) -> Option<Vec<u8>> {
    let mut m = msg.to_vec();
    match *d {
        Damage::Flip(i) => {
            let i = i % (m.len() * 8);
            m[i / 8] ^= 1 << (i % 8);
        }
        Damage::Truncate(n) => m.truncate(n % m.len()),
        Damage::Extend(b) => m.push(b),
        Damage::Swap(a) => {
            let swaps = field_swaps(msg, fields);
            if swaps.is_empty() {
                return None;
            }
            return Some(swaps[a % swaps.len()].1.clone());
        }
    }
    Some(m)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_damage_is_rejected_without_state_damage(
        seed_a in any::<[u8; 32]>(),
        seed_b in any::<[u8; 32]>(),
        rng in any::<u64>(),
        net in "[a-z0-9.-]{1,64}",
        d1 in damage(),
        d2 in damage(),
        d3 in damage(),
    ) {
        prop_assume!(seed_a != seed_b);
        let p = Pair::new(seed_a, seed_b, &net);
        let run = p.run_to_msg3(rng);
        if let Some(m) = apply(&d1, &run.msg1, &msg1_fields(net.len())) {
            check_msg1_rejections(&p, rng, &[(format!("{d1:?}"), m)]);
        }
        if let Some(m) = apply(&d2, &run.msg2, &msg2_fields()) {
            check_msg2_rejections(&p, rng, &[(format!("{d2:?}"), m)]);
        }
        if let Some(m) = apply(&d3, &run.msg3, &msg3_fields()) {
            check_msg3_rejections(&p, rng, &[(format!("{d3:?}"), m)]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        header in prop_oneof![Just(None), (0u8..5).prop_map(Some)],
        tail in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        // Half of the inputs carry a valid version and a handshake type, to get past the header.
        let mut bytes = header.map(|t| vec![1u8, t]).unwrap_or_default();
        bytes.extend_from_slice(&tail);
        let p = Pair::fixed();
        let mut run = p.run_to_msg3(11);
        let (mut initiator, _) = p.initiator(11);
        let _ = themis_handshake::peek(&bytes);
        prop_assert!(run.responder.handle_message1(&bytes, p.now).is_err());
        prop_assert!(initiator.handle_message2(&bytes, p.now).is_err());
        prop_assert!(run.responder.handle_message3(&bytes, p.now).is_err());
        prop_assert_eq!(run.responder.pending_len(), 1);
    }
}
