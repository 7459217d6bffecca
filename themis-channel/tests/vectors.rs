//! Known-answer frames (tests/vectors/frames.txt, generated independently with libsodium by
//! tests/vectors/gen_frames.py from the PROTOCOL.md layout), compared byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::time::Instant;

use bytes::BytesMut;
use themis_channel::{Channel, ChannelConfig, Incoming};
use themis_crypto::{AeadKey, IdentityKeypair, NetworkId, NodeId};
use themis_handshake::{Role, Session, SessionId};

const FRAMES: &str = include_str!("vectors/frames.txt");

fn arr<const N: usize>(hex_str: &str) -> [u8; N] {
    hex::decode(hex_str).unwrap().try_into().unwrap()
}

fn session(role: Role, fields: &HashMap<&str, &str>, now: Instant) -> Session {
    let net = NetworkId::new("vectors").unwrap();
    // The channel does not use the peer's public key; any will do.
    let peer_public = IdentityKeypair::from_seed(&[0; 32]).public();
    let (a, b) = (
        NodeId::from_bytes(arr(fields["id_a"])),
        NodeId::from_bytes(arr(fields["id_b"])),
    );
    let (ab, ba) = (
        AeadKey::from_bytes(arr(fields["key_a_to_b"])),
        AeadKey::from_bytes(arr(fields["key_b_to_a"])),
    );
    let (local_id, peer_id, send_key, recv_key) = match role {
        Role::Initiator => (a, b, ab, ba),
        Role::Responder => (b, a, ba, ab),
    };
    Session {
        role,
        network: net,
        local_id,
        peer_id,
        peer_public,
        session_id: SessionId(arr(fields["session_id"])),
        transcript_hash: [0; 32],
        send_key,
        recv_key,
        established_at: now,
    }
}

#[test]
fn known_answer_frames() {
    let now = Instant::now();
    let mut fields = HashMap::new();
    let mut vectors = Vec::new();
    for line in FRAMES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (k, v) = line.split_once(" = ").unwrap();
        if k == "vector" {
            vectors.push(v);
        } else {
            fields.insert(k, v);
        }
    }
    assert_eq!(vectors.len(), 7);
    let config = ChannelConfig::default();
    let sa = session(Role::Initiator, &fields, now);
    let sb = session(Role::Responder, &fields, now);
    let mut ia = Channel::insecure(sa.local_id, sa.peer_id, config.clone(), now).unwrap();
    let mut ib = Channel::insecure(sb.local_id, sb.peer_id, config.clone(), now).unwrap();
    let mut a = Channel::secure(sa, config.clone()).unwrap();
    let mut b = Channel::secure(sb, config).unwrap();

    for v in vectors {
        let parts: Vec<&str> = v.split(' ').collect();
        let [mode, sender, kind, seq, payload, frame] = parts[..] else {
            panic!("bad vector line {v}")
        };
        let seq: u64 = seq.parse().unwrap();
        let payload = if payload == "-" {
            Vec::new()
        } else {
            hex::decode(payload).unwrap()
        };
        let expected = hex::decode(frame).unwrap();
        let (tx, rx) = match (mode, sender) {
            ("secure", "a") => (&mut a, &mut b),
            ("secure", "b") => (&mut b, &mut a),
            ("insecure", "a") => (&mut ia, &mut ib),
            ("insecure", "b") => (&mut ib, &mut ia),
            _ => panic!("bad vector {v}"),
        };
        let mut out = BytesMut::new();
        let got = if kind == "cmd" {
            assert_eq!(tx.seal_command(&payload, &mut out, now).unwrap(), seq);
            Incoming::Command {
                seq,
                payload: BytesMut::from(&payload[..]),
            }
        } else {
            tx.seal_response(seq, &payload, &mut out, now).unwrap();
            Incoming::Response {
                seq,
                payload: BytesMut::from(&payload[..]),
            }
        };
        assert_eq!(hex::encode(&out), hex::encode(&expected), "sealing {v}");
        assert_eq!(rx.open(BytesMut::from(&expected[..]), now).unwrap(), got);
    }
}

#[test]
fn debug_output_never_shows_keys() {
    let now = Instant::now();
    let mut fields = HashMap::new();
    for line in FRAMES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (k, v) = line.split_once(" = ").unwrap();
        fields.insert(k, v);
    }
    let a = Channel::secure(
        session(Role::Initiator, &fields, now),
        ChannelConfig::default(),
    )
    .unwrap();
    let shown = format!("{a:?} {a:#?}");
    assert!(shown.contains("<redacted>"));
    for key in ["key_a_to_b", "key_b_to_a"] {
        let hex_key = fields[key];
        assert!(!shown.contains(&hex_key[..16]), "{shown}");
        // Also not as a decimal byte list.
        assert!(!shown.contains("32, 33, 34, 35"), "{shown}");
    }
}
