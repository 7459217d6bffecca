//! Honest runs always agree (paper §5.2.1, Guarantee 2: both hold the same key).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use themis_crypto::NetworkId;
use themis_handshake::{MessageKind, Role, peek};
use themis_testkit::handshake::{Pair, assert_matching};

#[test]
fn honest_run_establishes_matching_sessions() {
    let p = Pair::fixed();
    let mut run = p.run_to_msg3(1);
    assert_eq!(run.responder.pending_len(), 1);
    let b = run.responder.handle_message3(&run.msg3, p.now).unwrap();
    assert_eq!(run.responder.pending_len(), 0);
    assert_eq!(run.responder.poll_timeout(), None);
    assert_matching(&run.a_session, &b);
    assert_eq!(run.a_session.role, Role::Initiator);
    assert_eq!(b.role, Role::Responder);
    assert_eq!(run.a_session.peer_id, p.b_id());
    assert_eq!(b.peer_id, p.a_id());
    assert_eq!(run.a_session.peer_public, p.b.public());
    assert_eq!(b.peer_public, p.a.public());
    assert_eq!(b.established_at, p.now);
}

#[test]
fn peek_routes_each_message() {
    let p = Pair::fixed();
    let run = p.run_to_msg3(2);
    assert_eq!(peek(&run.msg1).unwrap(), MessageKind::Message1);
    let (init, _) = p.initiator(2);
    assert_eq!(
        peek(&run.msg2).unwrap(),
        MessageKind::Message2 {
            nonce: *init.nonce()
        }
    );
    assert_eq!(
        peek(&run.msg3).unwrap(),
        MessageKind::Message3 {
            session_id: run.a_session.session_id
        }
    );
}

#[test]
fn os_randomness_gives_fresh_sessions() {
    use themis_handshake::{Initiator, Responder};
    let p = Pair::fixed();
    let mut r = Responder::new(p.b.clone(), p.net.clone(), p.config.clone());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (mut i, m1) =
            Initiator::start(p.a.clone(), p.net.clone(), p.b_id(), &p.config, p.now).unwrap();
        let m2 = r.handle_message1(&m1, p.now).unwrap();
        let (s, m3) = i.handle_message2(&m2, p.now).unwrap();
        let t = r.handle_message3(&m3, p.now).unwrap();
        assert_matching(&s, &t);
        ids.push(s.session_id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
}

#[test]
fn debug_output_hides_keys() {
    let p = Pair::fixed();
    let run = p.run_to_msg3(3);
    let shown = format!("{:?} {:?}", run.a_session, run.responder);
    assert!(shown.contains("redacted"));
    assert!(!shown.contains(&hex::encode(run.a_session.send_key.as_bytes())));
}

fn network_ids() -> impl Strategy<Value = NetworkId> {
    "[a-zA-Z0-9./é€-]{1,21}".prop_filter_map("valid network id", |s| NetworkId::new(&s).ok())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_honest_runs_agree(
        seed_a in any::<[u8; 32]>(),
        seed_b in any::<[u8; 32]>(),
        rng in any::<u64>(),
        net in network_ids(),
    ) {
        prop_assume!(seed_a != seed_b);
        let p = Pair::new(seed_a, seed_b, net.as_str());
        let mut run = p.run_to_msg3(rng);
        let b = run.responder.handle_message3(&run.msg3, p.now).unwrap();
        assert_matching(&run.a_session, &b);
        prop_assert_eq!(run.a_session.peer_id, p.b_id());
        prop_assert_eq!(b.peer_id, p.a_id());
        prop_assert_eq!(run.msg1.len(), 195 + net.as_bytes().len());
    }
}
