//! Attacks against the guarantees of paper §5.2.1, each named after what it tries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Duration;

use themis_crypto::{IdentityKeypair, NetworkId};
use themis_handshake::{Error, HandshakeConfig, Initiator, Responder, SeededRandom};
use themis_testkit::handshake::{Pair, assert_matching};

/// §5.2.1 G2 (Bob's side): a replayed message 1 starts a run, but without the key the attacker
/// cannot produce message 3, so Bob never registers a session for it.
#[test]
fn replayed_message1_never_yields_a_registered_session() {
    let p = Pair::fixed();
    let mut genuine = p.run_to_msg3(20);
    genuine
        .responder
        .handle_message3(&genuine.msg3, p.now)
        .unwrap();

    // Eve replays the captured message 1: Bob cannot tell, and answers with a fresh g^b.
    let msg2_for_eve = genuine
        .responder
        .handle_message1(&genuine.msg1, p.now)
        .unwrap();
    assert_ne!(msg2_for_eve, genuine.msg2);
    assert_eq!(genuine.responder.pending_len(), 1);

    // The old message 3 does not confirm the new run.
    assert!(matches!(
        genuine.responder.handle_message3(&genuine.msg3, p.now),
        Err(Error::UnknownSession { .. })
    ));

    // The new session id is computable from public bytes (here through a copy of Alice's state,
    // which derives it from exactly those bytes); the MAC is not.
    let (mut alice_copy, _) = p.initiator(20);
    let (s, _) = alice_copy.handle_message2(&msg2_for_eve, p.now).unwrap();
    for guess in [
        [0u8; 32],
        [0x42; 32],
        *genuine.msg3[10..].first_chunk::<32>().unwrap(),
    ] {
        let mut forged = vec![1u8, 3];
        forged.extend_from_slice(&s.session_id.0);
        forged.extend_from_slice(&guess);
        assert!(matches!(
            genuine.responder.handle_message3(&forged, p.now),
            Err(Error::BadKeyConfirmation)
        ));
    }
    // The replayed run expires without ever producing a session.
    assert_eq!(genuine.responder.pending_len(), 1);
    genuine
        .responder
        .handle_timeout(p.now + p.config.pending_ttl);
    assert_eq!(genuine.responder.pending_len(), 0);
}

/// A replayed message 3 finds no pending entry: the first one consumed it.
#[test]
fn replayed_message3_is_rejected() {
    let p = Pair::fixed();
    let mut run = p.run_to_msg3(22);
    run.responder.handle_message3(&run.msg3, p.now).unwrap();
    assert!(matches!(
        run.responder.handle_message3(&run.msg3, p.now),
        Err(Error::UnknownSession { session_id }) if session_id == run.a_session.session_id
    ));
}

/// §5.2.1 G2 (Alice's side): a message 2 signed by a key whose hash is not B is refused, even
/// when it is a genuine message 2 from Eve for Alice.
#[test]
fn message2_signed_by_another_key_is_an_identity_mismatch() {
    let p = Pair::fixed();
    let eve = Arc::new(IdentityKeypair::from_seed(&[0xee; 32]));
    let eve_id = eve.node_id(&p.net);
    // Alice talks to Eve too; Eve's answer is genuine and signed by Eve.
    let (_, msg1_to_eve) = Initiator::start_with_rng(
        p.a.clone(),
        p.net.clone(),
        eve_id,
        &p.config,
        p.now,
        &mut SeededRandom::from_u64(5),
    )
    .unwrap();
    let mut eve_responder = Responder::new(eve, p.net.clone(), p.config.clone());
    let msg2_from_eve = eve_responder.handle_message1(&msg1_to_eve, p.now).unwrap();

    // Eve delivers it to Alice's handshake with Bob.
    let (mut alice, _) = p.initiator(6);
    match alice.handle_message2(&msg2_from_eve, p.now) {
        Err(Error::IdentityMismatch { expected, actual }) => {
            assert_eq!(expected, p.b_id());
            assert_eq!(actual, eve_id);
        }
        other => panic!("expected an identity mismatch, got {other:?}"),
    }
    // Bob's genuine answer still completes the handshake.
    let mut bob = p.responder(7);
    let (_, msg1) = p.initiator(6);
    let msg2 = bob.handle_message1(&msg1, p.now).unwrap();
    alice.handle_message2(&msg2, p.now).unwrap();
}

/// Bob's key in message 2 but Eve's signature: the signature check catches it.
#[test]
fn message2_with_a_foreign_signature_is_refused() {
    let p = Pair::fixed();
    let run = p.run_to_msg3(23);
    let eve = IdentityKeypair::from_seed(&[0xee; 32]);
    let mut forged = run.msg2.clone();
    let sig = eve.sign(b"anything");
    forged[130..].copy_from_slice(sig.as_bytes());
    let (mut alice, _) = p.initiator(23);
    assert!(matches!(
        alice.handle_message2(&forged, p.now),
        Err(Error::BadSignature)
    ));
}

/// A message 2 from an earlier run between the same two nodes does not answer a new run.
#[test]
fn message2_from_an_earlier_run_is_a_nonce_mismatch() {
    let p = Pair::fixed();
    let old = p.run_to_msg3(24);
    let (mut alice, _) = p.initiator(25);
    assert!(matches!(
        alice.handle_message2(&old.msg2, p.now),
        Err(Error::NonceMismatch)
    ));
}

/// A message 2 for another initiator (same nonce cannot happen; here a different A).
#[test]
fn message2_for_another_node_is_refused() {
    let p = Pair::fixed();
    // Carol starts with the same randomness as Alice, so the nonce matches; the id does not.
    let carol = Pair::new([0xc3; 32], [0xb2; 32], "twiitr");
    let run = carol.run_to_msg3(26);
    let (mut alice, _) = p.initiator(26);
    assert!(matches!(
        alice.handle_message2(&run.msg2, p.now),
        Err(Error::NotIntendedRecipient { ours, addressed_to })
            if ours == p.a_id() && addressed_to == carol.a_id()
    ));
}

/// paper §5.1.1: Bob checks that he is the intended recipient.
#[test]
fn message1_addressed_to_another_node_is_refused() {
    let p = Pair::fixed();
    let carol = Arc::new(IdentityKeypair::from_seed(&[0xc3; 32]));
    let mut carol_responder = Responder::new(carol.clone(), p.net.clone(), p.config.clone());
    let run = p.run_to_msg3(27);
    match carol_responder.handle_message1(&run.msg1, p.now) {
        Err(Error::NotIntendedRecipient { ours, addressed_to }) => {
            assert_eq!(ours, carol.node_id(&p.net));
            assert_eq!(addressed_to, p.b_id());
        }
        other => panic!("expected not-intended-recipient, got {other:?}"),
    }
    assert_eq!(carol_responder.pending_len(), 0);
}

/// Alice's message 1 reflected back to Alice is refused.
#[test]
fn message1_reflected_to_its_sender_is_refused() {
    let p = Pair::fixed();
    let mut alice_responder = Responder::new(p.a.clone(), p.net.clone(), p.config.clone());
    let (_, msg1) = p.initiator(28);
    assert!(alice_responder.handle_message1(&msg1, p.now).is_err());
    assert_eq!(alice_responder.pending_len(), 0);
    // And Alice cannot be made to start a handshake with herself.
    assert!(matches!(
        Initiator::start(p.a.clone(), p.net.clone(), p.a_id(), &p.config, p.now),
        Err(Error::SelfHandshake(_))
    ));
}

#[test]
fn network_mismatch_is_its_own_error() {
    let p = Pair::fixed();
    let other = NetworkId::new("other-net").unwrap();
    // Bob runs on another network; Alice addresses Bob's id on hers.
    let mut bob = Responder::new(p.b.clone(), other.clone(), p.config.clone());
    let (_, msg1) = p.initiator(29);
    match bob.handle_message1(&msg1, p.now) {
        Err(e @ Error::NetworkMismatch { .. }) => {
            let Error::NetworkMismatch {
                ref ours,
                ref theirs,
            } = e
            else {
                unreachable!()
            };
            assert_eq!(ours, &other);
            assert_eq!(theirs, &p.net);
            let text = e.to_string();
            assert!(
                text.contains("other-net") && text.contains("twiitr"),
                "{text}"
            );
        }
        other => panic!("expected network mismatch, got {other:?}"),
    }
}

fn small_table(capacity: usize) -> Pair {
    let mut p = Pair::fixed();
    let mut c = HandshakeConfig::default();
    c.pending_capacity = capacity;
    c.pending_ttl = Duration::from_secs(10);
    p.config = c;
    p
}

/// Many initiators, one responder.
fn initiators(p: &Pair, n: u8) -> Vec<(Initiator, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let kp = Arc::new(IdentityKeypair::from_seed(&[i + 1; 32]));
            Initiator::start_with_rng(
                kp,
                p.net.clone(),
                p.b_id(),
                &p.config,
                p.now,
                &mut SeededRandom::from_u64(u64::from(i)),
            )
            .unwrap()
        })
        .collect()
}

/// When full of live entries the table refuses new handshakes and never evicts a live one.
#[test]
fn pending_table_full_refuses_and_keeps_live_entries() {
    let p = small_table(3);
    let mut bob = p.responder(30);
    let mut inits = initiators(&p, 5);
    let mut msg2s = Vec::new();
    for (_, m1) in &inits[..3] {
        msg2s.push(bob.handle_message1(m1, p.now).unwrap());
    }
    let later = p.now + Duration::from_secs(1);
    assert!(matches!(
        bob.handle_message1(&inits[3].1, later),
        Err(Error::PendingTableFull { capacity: 3 })
    ));
    assert_eq!(bob.pending_len(), 3);
    // The live handshakes still complete.
    let (s, m3) = inits[0].0.handle_message2(&msg2s[0], later).unwrap();
    let t = bob.handle_message3(&m3, later).unwrap();
    assert_matching(&s, &t);
    // That freed a slot.
    bob.handle_message1(&inits[3].1, later).unwrap();
    assert!(matches!(
        bob.handle_message1(&inits[4].1, later),
        Err(Error::PendingTableFull { .. })
    ));
}

/// Expired entries are purged first when the table is full.
#[test]
fn full_table_purges_expired_entries_first() {
    let p = small_table(2);
    let mut bob = p.responder(31);
    let inits = initiators(&p, 3);
    bob.handle_message1(&inits[0].1, p.now).unwrap();
    bob.handle_message1(&inits[1].1, p.now + Duration::from_secs(5))
        .unwrap();
    // At t = 10 s the first entry has expired, the second has not.
    bob.handle_message1(&inits[2].1, p.now + Duration::from_secs(10))
        .unwrap();
    assert_eq!(bob.pending_len(), 2);
    assert_eq!(bob.poll_timeout(), Some(p.now + Duration::from_secs(15)));
}

/// Pending handshakes expire by the `now` the caller passes in.
#[test]
fn pending_entries_expire_by_now() {
    let p = Pair::fixed();
    let mut run = p.run_to_msg3(32);
    let ttl = p.config.pending_ttl;
    assert_eq!(run.responder.poll_timeout(), Some(p.now + ttl));
    run.responder
        .handle_timeout(p.now + ttl - Duration::from_millis(1));
    assert_eq!(run.responder.pending_len(), 1);
    // Message 3 at the very expiry instant is too late, even before handle_timeout ran.
    assert!(matches!(
        run.responder.handle_message3(&run.msg3, p.now + ttl),
        Err(Error::UnknownSession { .. })
    ));
    assert_eq!(run.responder.pending_len(), 0);

    let mut run = p.run_to_msg3(33);
    run.responder.handle_timeout(p.now + ttl);
    assert_eq!(run.responder.pending_len(), 0);
    assert_eq!(run.responder.poll_timeout(), None);
    assert!(run.responder.handle_message3(&run.msg3, p.now).is_err());
}

/// The initiator gives up at its deadline, and a finished initiator ignores a duplicate.
#[test]
fn initiator_deadline_and_duplicates() {
    let p = Pair::fixed();
    let run = p.run_to_msg3(34);
    let (mut alice, _) = p.initiator(34);
    assert_eq!(alice.deadline(), p.now + p.config.initiator_timeout);
    assert_eq!(alice.expected_peer(), p.b_id());
    assert!(!alice.is_timed_out(p.now));
    assert!(matches!(
        alice.handle_message2(&run.msg2, alice.deadline()),
        Err(Error::TimedOut { peer }) if peer == p.b_id()
    ));
    let (mut alice, _) = p.initiator(34);
    alice.handle_message2(&run.msg2, p.now).unwrap();
    assert!(matches!(
        alice.handle_message2(&run.msg2, p.now),
        Err(Error::AlreadyFinished)
    ));
}
