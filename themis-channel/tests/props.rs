//! Property tests: codec round trips, delivery in any order within the window, and "any
//! mutated frame is rejected without panic and without changing state".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::time::Instant;

use bytes::BytesMut;
use proptest::prelude::*;
use themis_channel::wire::TAG_LEN;
use themis_channel::{Channel, ChannelConfig, Error, FrameHeader, Incoming, Mode, peek_header};
use themis_crypto::NodeId;
use themis_handshake::SessionId;
use themis_testkit::Rng;
use themis_testkit::channel::{pair, secure_pair};

fn header_strategy() -> impl Strategy<Value = FrameHeader> {
    prop_oneof![
        (any::<bool>(), any::<[u8; 8]>(), any::<u64>()).prop_map(|(command, sid, seq)| {
            FrameHeader::Secure {
                command,
                session_id: SessionId(sid),
                seq,
            }
        }),
        (any::<bool>(), any::<[u8; 32]>(), any::<u64>()).prop_map(|(command, id, seq)| {
            FrameHeader::Insecure {
                command,
                sender: NodeId::from_bytes(id),
                seq,
            }
        }),
    ]
}

/// A frame mutation.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize),
    Truncate(usize),
    Extend(Vec<u8>),
}

fn mutate(frame: &BytesMut, m: &Mutation) -> BytesMut {
    let mut f = frame.clone();
    match m {
        Mutation::Flip(bit) => {
            let bit = bit % (f.len() * 8);
            f[bit / 8] ^= 1 << (bit % 8);
        }
        Mutation::Truncate(n) => f.truncate(n % f.len()),
        Mutation::Extend(extra) => f.extend_from_slice(extra),
    }
    f
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Flip),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
    ]
}

/// Feeds `bad` to `rx`, expects a rejection, then checks that nothing changed: the number of
/// delivered frames and outstanding requests are the same. (Each test then opens the genuine
/// frame, which must still be accepted after all the rejections.)
fn assert_rejected_unchanged(rx: &mut Channel, bad: BytesMut) {
    let now = Instant::now();
    let before = rx.stats();
    let outstanding = rx.outstanding();
    let r = rx.open(bad, now);
    assert!(r.is_err(), "mutated frame accepted: {r:?}");
    let after = rx.stats();
    assert_eq!(after.opened_commands, before.opened_commands);
    assert_eq!(after.opened_responses, before.opened_responses);
    assert_eq!(rx.outstanding(), outstanding);
}

#[test]
fn every_bit_flip_truncation_and_extension_of_one_secure_command_is_rejected() {
    let now = Instant::now();
    let (mut a, mut b) = secure_pair(100, now, ChannelConfig::default());
    let mut frame = BytesMut::new();
    a.seal_command(b"sixteen byte cmd", &mut frame, now)
        .unwrap();
    assert_eq!(frame.len(), 18 + 16 + TAG_LEN);
    for bit in 0..frame.len() * 8 {
        assert_rejected_unchanged(&mut b, mutate(&frame, &Mutation::Flip(bit)));
    }
    for len in 0..frame.len() {
        assert_rejected_unchanged(&mut b, mutate(&frame, &Mutation::Truncate(len)));
    }
    for extra in 1..=64 {
        for fill in [0u8, 0xff] {
            let m = Mutation::Extend(vec![fill; extra]);
            assert_rejected_unchanged(&mut b, mutate(&frame, &m));
        }
    }
    assert_eq!(b.stats().opened_commands, 0);
    let stats = b.stats();
    assert_eq!(
        stats.rejected_auth
            + stats.rejected_malformed
            + stats.rejected_wrong_mode
            + stats.rejected_wrong_route,
        (frame.len() * 8 + frame.len() + 128) as u64
    );
    assert_eq!(b.open(frame, now).unwrap().payload(), b"sixteen byte cmd");
}

#[test]
fn every_bit_flip_truncation_and_extension_of_one_secure_response_is_rejected() {
    let now = Instant::now();
    let (mut a, mut b) = secure_pair(101, now, ChannelConfig::default());
    let mut f = BytesMut::new();
    let seq = a.seal_command(b"q", &mut f, now).unwrap();
    b.open(f, now).unwrap();
    let mut frame = BytesMut::new();
    b.seal_response(seq, b"answer", &mut frame, now).unwrap();
    for bit in 0..frame.len() * 8 {
        assert_rejected_unchanged(&mut a, mutate(&frame, &Mutation::Flip(bit)));
    }
    for len in 0..frame.len() {
        assert_rejected_unchanged(&mut a, mutate(&frame, &Mutation::Truncate(len)));
    }
    for extra in 1..=64 {
        let m = Mutation::Extend(vec![0x5a; extra]);
        assert_rejected_unchanged(&mut a, mutate(&frame, &m));
    }
    assert_eq!(a.outstanding(), 1);
    assert_eq!(
        a.open(frame, now).unwrap(),
        Incoming::Response {
            seq,
            payload: BytesMut::from(&b"answer"[..])
        }
    );
    assert_eq!(a.outstanding(), 0);
}

/// Insecure frames carry no integrity: only the header fields that route a frame are checked.
/// Every flip of the version, type and sender bytes and every truncation below the header is
/// rejected; flips of the sequence number or payload are not detectable (documented).
#[test]
fn insecure_header_flips_and_truncations_are_rejected() {
    let now = Instant::now();
    let (mut a, mut b) = pair(false, 102, now, ChannelConfig::default());
    let mut frame = BytesMut::new();
    a.seal_command(b"plain", &mut frame, now).unwrap();
    for bit in 0..34 * 8 {
        assert_rejected_unchanged(&mut b, mutate(&frame, &Mutation::Flip(bit)));
    }
    for len in 0..42 {
        assert_rejected_unchanged(&mut b, mutate(&frame, &Mutation::Truncate(len)));
    }
    assert_eq!(b.open(frame, now).unwrap().payload(), b"plain");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn header_codec_round_trip(h in header_strategy(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut b = BytesMut::new();
        h.encode(&mut b);
        prop_assert_eq!(b.len(), h.len());
        b.extend_from_slice(&payload);
        if h.kind().mode() == Mode::Secure {
            b.extend_from_slice(&[0; TAG_LEN]);
        }
        prop_assert_eq!(peek_header(&b).unwrap(), h);
    }

    #[test]
    fn seal_open_round_trip(secure in any::<bool>(), seed in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let now = Instant::now();
        let (mut a, mut b) = pair(secure, seed, now, ChannelConfig::default());
        let mut f = BytesMut::new();
        let seq = a.seal_command(&payload, &mut f, now).unwrap();
        prop_assert_eq!(f.len(), payload.len() + a.frame_overhead());
        let h = peek_header(&f).unwrap();
        prop_assert_eq!(h.seq(), seq);
        prop_assert!(h.kind().is_command());
        let got = b.open(f, now).unwrap();
        prop_assert_eq!(got, Incoming::Command { seq, payload: BytesMut::from(&payload[..]) });
    }

    /// Any set of commands, each delivered one or more times in any order within the window:
    /// each is accepted exactly once, duplicates are reported as such, and the responses,
    /// again in any order and repeated, each complete exactly one request.
    #[test]
    fn any_delivery_order_within_the_window_accepts_each_frame_once(
        secure in any::<bool>(),
        seed in any::<u64>(),
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..200),
        dup_mask in any::<u64>(),
        order_seed in any::<u64>(),
    ) {
        let now = Instant::now();
        let mut config = ChannelConfig::default();
        config.replay_window = 1024;
        config.max_outstanding = 256;
        let (mut a, mut b) = pair(secure, seed, now, config);
        let mut frames = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            let mut f = BytesMut::new();
            let seq = a.seal_command(p, &mut f, now).unwrap();
            prop_assert_eq!(seq, i as u64 + 1);
            frames.push((seq, f.clone()));
            if dup_mask >> (i % 64) & 1 == 1 {
                frames.push((seq, f));
            }
        }
        shuffle(&mut frames, order_seed);
        let mut seen = HashSet::new();
        let mut responses = Vec::new();
        for (seq, f) in frames {
            match b.open(f, now) {
                Ok(Incoming::Command { seq: s, payload }) => {
                    prop_assert_eq!(s, seq);
                    prop_assert!(seen.insert(seq));
                    prop_assert_eq!(&payload[..], &payloads[seq as usize - 1][..]);
                    let mut r = BytesMut::new();
                    b.seal_response(seq, &payload, &mut r, now).unwrap();
                    responses.push((seq, r.clone()));
                    if order_seed >> (seq % 64) & 1 == 1 {
                        responses.push((seq, r));
                    }
                }
                Err(Error::DuplicateCommand { seq: s }) => {
                    prop_assert_eq!(s, seq);
                    prop_assert!(seen.contains(&seq));
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        prop_assert_eq!(seen.len(), payloads.len());
        shuffle(&mut responses, order_seed.rotate_left(17));
        let mut answered = HashSet::new();
        for (seq, r) in responses {
            match a.open(r, now) {
                Ok(Incoming::Response { seq: s, payload }) => {
                    prop_assert_eq!(s, seq);
                    prop_assert!(answered.insert(seq));
                    prop_assert_eq!(&payload[..], &payloads[seq as usize - 1][..]);
                }
                Err(Error::DuplicateResponse { seq: s }) => {
                    prop_assert_eq!(s, seq);
                    prop_assert!(answered.contains(&seq));
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        prop_assert_eq!(answered.len(), payloads.len());
        prop_assert_eq!(a.outstanding(), 0);
    }

    /// Random secure frames (command or response, random payload) under a random mutation.
    #[test]
    fn any_mutated_secure_frame_is_rejected_without_changing_state(
        seed in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..512),
        response in any::<bool>(),
        m in mutation_strategy(),
    ) {
        let now = Instant::now();
        let (mut a, mut b) = secure_pair(seed, now, ChannelConfig::default());
        let mut f = BytesMut::new();
        let seq = a.seal_command(&payload, &mut f, now).unwrap();
        let (rx, frame) = if response {
            b.open(f, now).unwrap();
            let mut r = BytesMut::new();
            b.seal_response(seq, &payload, &mut r, now).unwrap();
            (&mut a, r)
        } else {
            (&mut b, f)
        };
        assert_rejected_unchanged(rx, mutate(&frame, &m));
        let got = rx.open(frame, now).unwrap();
        prop_assert_eq!(got.seq(), seq);
        prop_assert_eq!(got.payload(), &payload[..]);
    }

    /// Arbitrary bytes never panic the parser or the channel, and are never accepted by a
    /// secure channel.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), secure in any::<bool>()) {
        let now = Instant::now();
        let _ = peek_header(&bytes);
        let (_, mut b) = pair(secure, 7, now, ChannelConfig::default());
        let r = b.open(BytesMut::from(&bytes[..]), now);
        if secure {
            prop_assert!(r.is_err());
        }
    }
}

/// Deterministic shuffle from a seed.
fn shuffle<T>(v: &mut [T], seed: u64) {
    Rng::with_seed(seed).shuffle(v);
}

/// One step of the model-based test below.
#[derive(Clone, Debug)]
enum Op {
    /// Side `0` (A) or `1` (B) sends a command.
    Send(usize),
    /// Deliver (or re-deliver) the frame with this index among those sent so far.
    Deliver(usize),
    /// Side answers the received command with this index among those it received.
    Respond(usize, usize),
    /// Side cancels its outstanding command with this index.
    Cancel(usize, usize),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..2).prop_map(Op::Send),
        any::<usize>().prop_map(Op::Deliver),
        (0usize..2, any::<usize>()).prop_map(|(s, i)| Op::Respond(s, i)),
        (0usize..2, any::<usize>()).prop_map(|(s, i)| Op::Cancel(s, i)),
    ]
}

/// What the model knows about one side.
#[derive(Default)]
struct Side {
    outstanding: Vec<u64>,
    answered_or_cancelled: HashSet<u64>,
    received: Vec<u64>,
    responded: HashSet<u64>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any interleaving of sends, (re)deliveries in any order, responses and cancellations on
    /// both sides agrees with a simple model: commands delivered once, duplicates reported,
    /// responses only for outstanding requests and at most once, the outstanding bound held.
    #[test]
    fn channel_pair_agrees_with_model(secure in any::<bool>(), seed in any::<u64>(), ops in proptest::collection::vec(op_strategy(), 1..300)) {
        let now = Instant::now();
        let mut config = ChannelConfig::default();
        config.max_outstanding = 8;
        let (a, b) = pair(secure, seed, now, config);
        let mut ch = [a, b];
        let mut model = [Side::default(), Side::default()];
        // (sender, is_command, seq, frame)
        let mut sent: Vec<(usize, bool, u64, BytesMut)> = Vec::new();
        let mut delivered: HashSet<usize> = HashSet::new();
        for op in ops {
            match op {
                Op::Send(s) => {
                    let mut f = BytesMut::new();
                    let r = ch[s].seal_command(&[s as u8], &mut f, now);
                    if model[s].outstanding.len() == 8 {
                        prop_assert!(matches!(r, Err(Error::TooManyOutstanding { limit: 8 })), "{:?}", r);
                        prop_assert!(f.is_empty());
                    } else {
                        let seq = r.unwrap();
                        model[s].outstanding.push(seq);
                        sent.push((s, true, seq, f));
                    }
                }
                Op::Deliver(i) if !sent.is_empty() => {
                    let i = i % sent.len();
                    let (s, is_cmd, seq, f) = sent[i].clone();
                    let rx = 1 - s;
                    let r = ch[rx].open(f, now);
                    let first = delivered.insert(i);
                    if is_cmd {
                        if first {
                            prop_assert_eq!(r.unwrap(), Incoming::Command { seq, payload: BytesMut::from(&[s as u8][..]) });
                            model[rx].received.push(seq);
                        } else {
                            prop_assert!(matches!(r, Err(Error::DuplicateCommand { seq: d }) if d == seq), "{:?}", r);
                        }
                    } else if let Some(pos) = model[rx].outstanding.iter().position(|&o| o == seq) {
                        prop_assert_eq!(r.unwrap().seq(), seq);
                        model[rx].outstanding.remove(pos);
                        model[rx].answered_or_cancelled.insert(seq);
                    } else {
                        prop_assert!(model[rx].answered_or_cancelled.contains(&seq));
                        prop_assert!(matches!(r, Err(Error::DuplicateResponse { seq: d }) if d == seq), "{:?}", r);
                    }
                }
                Op::Respond(s, i) if !model[s].received.is_empty() => {
                    let seq = model[s].received[i % model[s].received.len()];
                    let mut f = BytesMut::new();
                    let r = ch[s].seal_response(seq, b"r", &mut f, now);
                    if model[s].responded.insert(seq) {
                        r.unwrap();
                        sent.push((s, false, seq, f));
                    } else {
                        prop_assert!(matches!(r, Err(Error::CannotRespond { .. })), "{:?}", r);
                        prop_assert!(f.is_empty());
                    }
                }
                Op::Cancel(s, i) if !model[s].outstanding.is_empty() => {
                    let pos = i % model[s].outstanding.len();
                    let seq = model[s].outstanding.remove(pos);
                    model[s].answered_or_cancelled.insert(seq);
                    prop_assert!(ch[s].cancel(seq));
                }
                _ => {}
            }
            for s in 0..2 {
                prop_assert_eq!(ch[s].outstanding(), model[s].outstanding.len());
            }
        }
    }
}
