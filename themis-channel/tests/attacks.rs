//! Attack tests, named after the guarantees of paper §5.2.2: G3 (confidentiality and integrity of
//! cmd and resp) and G4 (message authentication: an attacker can drop messages, but not replay,
//! reorder beyond what is accepted, or reflect them), plus the limits that keep a channel bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use themis_channel::{Channel, ChannelConfig, Error, Incoming, Mode};
use themis_testkit::channel::{insecure_pair, pair, secure_pair, session_pair, session_pair_epoch};

fn cmd(ch: &mut Channel, payload: &[u8], now: Instant) -> (u64, BytesMut) {
    let mut out = BytesMut::new();
    let seq = ch.seal_command(payload, &mut out, now).unwrap();
    (seq, out)
}

fn rsp(ch: &mut Channel, seq: u64, payload: &[u8], now: Instant) -> BytesMut {
    let mut out = BytesMut::new();
    ch.seal_response(seq, payload, &mut out, now).unwrap();
    out
}

#[test]
fn g4_replayed_command_is_rejected_as_duplicate() {
    for secure in [true, false] {
        let now = Instant::now();
        let (mut a, mut b) = pair(secure, 1, now, ChannelConfig::default());
        let (seq, f) = cmd(&mut a, b"store x", now);
        let got = b.open(f.clone(), now).unwrap();
        assert_eq!(got.seq(), seq);
        let err = b.open(f, now).unwrap_err();
        assert!(
            matches!(err, Error::DuplicateCommand { seq: s } if s == seq),
            "{err}"
        );
        assert_eq!(b.stats().rejected_duplicate, 1);
        assert_eq!(b.stats().opened_commands, 1);
    }
}

#[test]
fn g4_replayed_response_is_delivered_at_most_once() {
    for secure in [true, false] {
        let now = Instant::now();
        let (mut a, mut b) = pair(secure, 2, now, ChannelConfig::default());
        let (seq, f) = cmd(&mut a, b"find", now);
        b.open(f, now).unwrap();
        let r = rsp(&mut b, seq, b"value", now);
        assert_eq!(
            a.open(r.clone(), now).unwrap(),
            Incoming::Response {
                seq,
                payload: BytesMut::from(&b"value"[..])
            }
        );
        assert!(matches!(
            a.open(r, now),
            Err(Error::DuplicateResponse { seq: s }) if s == seq
        ));
    }
}

#[test]
fn g4_command_reordered_beyond_the_window_is_too_old() {
    for secure in [true, false] {
        let now = Instant::now();
        let mut config = ChannelConfig::default();
        config.replay_window = 1024;
        config.max_outstanding = 2000;
        let (mut a, mut b) = pair(secure, 3, now, config);
        let frames: Vec<_> = (0..1100).map(|_| cmd(&mut a, b"x", now).1).collect();
        // Deliver the newest first: it moves the window to 1100.
        b.open(frames[1099].clone(), now).unwrap();
        // 1100 - 1024 = 76 is the oldest still inside; 1..=76 are too old.
        for (i, f) in frames.iter().enumerate().take(1099) {
            let seq = i as u64 + 1;
            let r = b.open(f.clone(), now);
            if seq <= 76 {
                assert!(
                    matches!(r, Err(Error::CommandTooOld { seq: s, newest: 1100, window: 1024 }) if s == seq),
                    "seq {seq}: {r:?}"
                );
            } else {
                assert_eq!(r.unwrap().seq(), seq);
            }
        }
        assert_eq!(b.stats().rejected_too_old, 76);
    }
}

#[test]
fn g4_reflected_command_is_rejected() {
    let now = Instant::now();
    let (mut a, _b) = secure_pair(4, now, ChannelConfig::default());
    let (_, f) = cmd(&mut a, b"leave", now);
    // Same session id, but A opens with the B->A key and her own id as receiver.
    assert!(matches!(a.open(f, now), Err(Error::AuthenticationFailed)));
    assert_eq!(a.outstanding(), 1);

    let (mut a, _b) = insecure_pair(4, now, ChannelConfig::default());
    let (_, f) = cmd(&mut a, b"leave", now);
    assert!(matches!(a.open(f, now), Err(Error::WrongSender { .. })));
}

#[test]
fn g4_reflected_response_is_rejected() {
    let now = Instant::now();
    let (mut a, mut b) = secure_pair(5, now, ChannelConfig::default());
    let (seq, f) = cmd(&mut b, b"update", now);
    a.open(f, now).unwrap();
    // A answers B's command 1 while her own command 1 is outstanding: reflecting A's response
    // back to A must not complete A's request.
    let (aseq, _) = cmd(&mut a, b"mine", now);
    assert_eq!(aseq, seq);
    let r = rsp(&mut a, seq, b"ack", now);
    assert!(matches!(a.open(r, now), Err(Error::AuthenticationFailed)));
    assert_eq!(a.outstanding(), 1);
}

#[test]
fn g4_response_with_the_wrong_sequence_number_is_rejected() {
    let now = Instant::now();
    // B answers command 3 of the session; A only ever sent command 1.
    let (mut a, mut b) = secure_pair(6, now, ChannelConfig::default());
    let (mut a_clone, _) = secure_pair(6, now, ChannelConfig::default());
    let (seq, _) = cmd(&mut a, b"find", now);
    assert_eq!(seq, 1);
    for _ in 0..3 {
        let (_, f) = cmd(&mut a_clone, b"other", now);
        b.open(f, now).unwrap();
    }
    let r = rsp(&mut b, 3, b"value", now);
    assert!(matches!(
        a.open(r, now),
        Err(Error::UnsolicitedResponse { seq: 3 })
    ));
    assert_eq!(a.outstanding(), 1);

    // Rewriting S_B in the header of a genuine response breaks its authentication (G3).
    let mut r = rsp(&mut b, 1, b"value", now);
    let genuine = r.clone();
    r[17] = 2;
    assert!(matches!(a.open(r, now), Err(Error::AuthenticationFailed)));
    assert_eq!(a.open(genuine, now).unwrap().seq(), 1);
}

#[test]
fn g4_response_for_no_outstanding_request_is_rejected() {
    for secure in [true, false] {
        let now = Instant::now();
        let (mut a, mut b) = pair(secure, 7, now, ChannelConfig::default());
        let (seq, f) = cmd(&mut a, b"find", now);
        b.open(f, now).unwrap();
        assert!(a.cancel(seq));
        assert!(!a.cancel(seq));
        let r = rsp(&mut b, seq, b"late", now);
        assert!(matches!(
            a.open(r, now),
            Err(Error::DuplicateResponse { .. })
        ));
        assert_eq!(a.stats().rejected_duplicate_response, 1);
    }
}

#[test]
fn g4_frame_under_a_replaced_session_is_rejected() {
    let now = Instant::now();
    let config = ChannelConfig::default();
    let (old_a, _) = session_pair_epoch(8, 0, now);
    let (new_a, new_b) = session_pair_epoch(8, 1, now);
    assert_ne!(old_a.session_id, new_a.session_id);
    let old_sid = old_a.session_id;
    let new_sid = new_a.session_id;
    let mut old_a = Channel::secure(old_a, config.clone()).unwrap();
    let mut new_b = Channel::secure(new_b, config.clone()).unwrap();
    let mut new_a = Channel::secure(new_a, config).unwrap();

    let (_, f) = cmd(&mut old_a, b"stale", now);
    let r = new_b.open(f.clone(), now);
    assert!(
        matches!(r, Err(Error::UnknownSession { expected, found }) if expected == new_sid && found == old_sid)
    );
    // The old frame relabelled with the new session id: the old keys do not open under the new.
    let mut relabelled = f;
    relabelled[2..10].copy_from_slice(&new_sid.0);
    assert!(matches!(
        new_b.open(relabelled, now),
        Err(Error::AuthenticationFailed)
    ));
    // The new session still works from seq 1.
    let (seq, f) = cmd(&mut new_a, b"fresh", now);
    assert_eq!(new_b.open(f, now).unwrap().seq(), seq);
}

#[test]
fn wrong_mode_frames_are_rejected_both_ways() {
    let now = Instant::now();
    let (mut sa, mut sb) = secure_pair(9, now, ChannelConfig::default());
    let (mut ia, mut ib) = insecure_pair(9, now, ChannelConfig::default());
    let (_, secure_frame) = cmd(&mut sa, b"x", now);
    let (_, insecure_frame) = cmd(&mut ia, b"x", now);
    assert!(matches!(
        ib.open(secure_frame.clone(), now),
        Err(Error::WrongMode {
            expected: Mode::Insecure,
            found: Mode::Secure
        })
    ));
    assert!(matches!(
        sb.open(insecure_frame.clone(), now),
        Err(Error::WrongMode {
            expected: Mode::Secure,
            found: Mode::Insecure
        })
    ));
    assert_eq!(ib.stats().rejected_wrong_mode, 1);
    // Neither rejection consumed anything.
    assert_eq!(sb.open(secure_frame, now).unwrap().seq(), 1);
    assert_eq!(ib.open(insecure_frame, now).unwrap().seq(), 1);
}

#[test]
fn frame_claiming_a_huge_size_is_rejected_before_any_work() {
    let now = Instant::now();
    let (mut a, mut b) = secure_pair(10, now, ChannelConfig::default());
    // One byte over the default 16 MiB limit (a transport would already refuse the length
    // prefix; the channel checks again before parsing).
    let (_, genuine) = cmd(&mut a, b"x", now);
    let mut huge = BytesMut::zeroed(16 * 1024 * 1024 + 1);
    huge[..genuine.len()].copy_from_slice(&genuine);
    assert!(matches!(
        b.open(huge, now),
        Err(Error::FrameTooLarge {
            len: 16_777_217,
            max: 16_777_216
        })
    ));
    assert_eq!(b.stats().rejected_malformed, 1);
    assert_eq!(b.open(genuine, now).unwrap().seq(), 1);

    // Sealing a payload that does not fit is refused before `out` grows.
    let mut config = ChannelConfig::default();
    config.max_frame_len = 1024;
    let (mut a, _) = secure_pair(10, now, config);
    assert_eq!(a.max_payload_len(), 1024 - 34);
    let mut out = BytesMut::new();
    let err = a.seal_command(&[0; 991], &mut out, now).unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { len: 991, max: 990 }));
    assert_eq!(out.capacity(), 0);
    assert_eq!(a.outstanding(), 0);
    a.seal_command(&[0; 990], &mut out, now).unwrap();
    assert_eq!(out.len(), 1024);
}

#[test]
fn g3_frame_opens_only_at_its_intended_receiver() {
    // paper §5.1.2: "checks that the identity inside is his". A node holding the same keys but
    // with another identity (a bug or a confused endpoint) cannot open the frame.
    let now = Instant::now();
    let (sa, sb) = session_pair(11, now);
    let (_, mut sb2) = session_pair(11, now);
    let other = session_pair(12, now).0.local_id;
    sb2.local_id = other;
    let mut a = Channel::secure(sa, ChannelConfig::default()).unwrap();
    let mut b = Channel::secure(sb, ChannelConfig::default()).unwrap();
    let mut b2 = Channel::secure(sb2, ChannelConfig::default()).unwrap();
    let (_, f) = cmd(&mut a, b"secret command", now);
    assert!(matches!(
        b2.open(f.clone(), now),
        Err(Error::AuthenticationFailed)
    ));
    // G3 confidentiality: the plaintext does not appear on the wire.
    assert!(!f.windows(14).any(|w| w == b"secret command"));
    assert_eq!(b.open(f, now).unwrap().payload(), b"secret command");
}

#[test]
fn responses_are_sealed_at_most_once_and_only_for_received_commands() {
    let now = Instant::now();
    let (mut a, mut b) = secure_pair(13, now, ChannelConfig::default());
    let mut out = BytesMut::new();
    assert!(matches!(
        b.seal_response(1, b"r", &mut out, now),
        Err(Error::CannotRespond { seq: 1, .. })
    ));
    assert!(matches!(
        b.seal_response(0, b"r", &mut out, now),
        Err(Error::CannotRespond { seq: 0, .. })
    ));
    let (seq, f) = cmd(&mut a, b"c", now);
    b.open(f, now).unwrap();
    b.seal_response(seq, b"r", &mut out, now).unwrap();
    let len = out.len();
    // A second response would reuse the nonce (type 0x11, seq): refused.
    assert!(matches!(
        b.seal_response(seq, b"other", &mut out, now),
        Err(Error::CannotRespond { .. })
    ));
    assert_eq!(out.len(), len, "nothing appended on error");
}

#[test]
fn outstanding_requests_are_bounded() {
    let now = Instant::now();
    let mut config = ChannelConfig::default();
    config.max_outstanding = 3;
    let (mut a, _) = secure_pair(14, now, config);
    let seqs: Vec<u64> = (0..3).map(|_| cmd(&mut a, b"c", now).0).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let mut out = BytesMut::new();
    assert!(matches!(
        a.seal_command(b"c", &mut out, now),
        Err(Error::TooManyOutstanding { limit: 3 })
    ));
    assert!(out.is_empty());
    a.cancel(2);
    assert_eq!(a.seal_command(b"c", &mut out, now).unwrap(), 4);
}

#[test]
fn rekey_soft_then_hard_message_limit() {
    let now = Instant::now();
    let mut config = ChannelConfig::default();
    config.rekey_after_messages = 3;
    config.reject_after_messages = 5;
    let (mut a, mut b) = secure_pair(15, now, config);
    for i in 0..5u64 {
        assert_eq!(a.needs_rekey(now), i >= 3, "after {i} frames");
        assert!(!a.is_expired(now));
        let (_, f) = cmd(&mut a, b"c", now);
        b.open(f, now).unwrap();
    }
    assert!(a.is_expired(now));
    let mut out = BytesMut::new();
    assert!(matches!(
        a.seal_command(b"c", &mut out, now),
        Err(Error::SessionExhausted { sent: 5, limit: 5 })
    ));
    assert!(out.is_empty());
    // Responses count too.
    assert!(matches!(
        a.seal_response(1, b"r", &mut out, now),
        Err(Error::SessionExhausted { .. })
    ));
}

#[test]
fn rekey_soft_then_hard_age_limit() {
    let t0 = Instant::now();
    let mut config = ChannelConfig::default();
    config.rekey_after = Duration::from_secs(60);
    config.reject_after = Duration::from_secs(90);
    let (mut a, mut b) = secure_pair(16, t0, config.clone());
    let (_, f) = cmd(&mut a, b"c", t0);
    assert!(!a.needs_rekey(t0 + Duration::from_secs(59)));
    assert!(a.needs_rekey(t0 + Duration::from_secs(60)));
    assert!(!a.is_expired(t0 + Duration::from_secs(89)));
    let late = t0 + Duration::from_secs(90);
    assert!(a.is_expired(late));
    let mut out = BytesMut::new();
    assert!(matches!(
        a.seal_command(b"c", &mut out, late),
        Err(Error::SessionExpired { .. })
    ));
    assert!(matches!(
        b.open(f.clone(), late),
        Err(Error::SessionExpired { .. })
    ));
    assert_eq!(b.open(f, t0).unwrap().seq(), 1);

    // Insecure mode has no key to age.
    let (a, _) = insecure_pair(16, t0, config);
    assert!(!a.needs_rekey(late));
    assert!(!a.is_expired(late));
}

#[test]
fn config_is_validated() {
    let (sa, _) = session_pair(17, Instant::now());
    let (id, peer) = (sa.local_id, sa.peer_id);
    let now = Instant::now();
    let cases: Vec<fn(&mut ChannelConfig)> = vec![
        |c| c.max_frame_len = 57,
        |c| c.max_frame_len = (1 << 30) + 1,
        |c| c.replay_window = 63,
        |c| c.replay_window = (1 << 24) + 1,
        |c| c.max_outstanding = 0,
        |c| c.rekey_after_messages = c.reject_after_messages + 1,
        |c| c.reject_after_messages = u64::MAX,
        |c| c.rekey_after = c.reject_after + Duration::from_secs(1),
    ];
    for f in cases {
        let mut c = ChannelConfig::default();
        f(&mut c);
        assert!(matches!(
            Channel::insecure(id, peer, c, now),
            Err(Error::InvalidConfig(_))
        ));
    }
    assert!(Channel::secure(sa, ChannelConfig::default()).is_ok());
}

#[test]
fn both_sides_send_commands_over_one_session() {
    let now = Instant::now();
    let (mut a, mut b) = secure_pair(18, now, ChannelConfig::default());
    // Equal sequence numbers in both directions; commands and responses interleaved.
    let (sa, fa) = cmd(&mut a, b"from a", now);
    let (sb, fb) = cmd(&mut b, b"from b", now);
    assert_eq!(sa, sb);
    assert_eq!(b.open(fa, now).unwrap().payload(), b"from a");
    assert_eq!(a.open(fb, now).unwrap().payload(), b"from b");
    let ra = rsp(&mut a, sb, b"a answers", now);
    let rb = rsp(&mut b, sa, b"b answers", now);
    assert_eq!(b.open(ra, now).unwrap().payload(), b"a answers");
    assert_eq!(a.open(rb, now).unwrap().payload(), b"b answers");
    assert_eq!((a.outstanding(), b.outstanding()), (0, 0));
}
