//! Known-answer transcripts: fixed identity seeds, ephemeral secrets and nonce give exactly the
//! checked-in messages, session id, transcript hash and traffic keys.
//!
//! Vector files (`tests/vectors/*.txt`): one `name = hex` pair per line, `#` starts a comment
//! line, blank lines are ignored. Inputs: `seed_a`, `seed_b` (Ed25519 seeds of initiator and
//! responder), `network` (UTF-8 bytes of the network id), `eph_a`, `eph_b` (X25519 secrets),
//! `nonce_a`. Outputs: `msg1`, `msg2`, `msg3`, `session_id`, `transcript_hash`, `key_i2r`,
//! `key_r2i`.
//!
//! Each vector is checked three ways: the file, an independent re-derivation written straight
//! from PROTOCOL.md with the primitives of themis-crypto (below), and the state machines.
//! `cargo test -p themis-handshake --test kat -- --ignored regenerate` rewrites the files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use themis_crypto::{
    AdmissionCert, EphemeralSecret, IdentityKeypair, NetworkId, SessionKeys, Transcript,
};
use themis_handshake::test_hooks::ScriptedRandom;
use themis_handshake::{Admission, HandshakeConfig, Initiator, Responder, WallClock};

const VECTORS: &[(&str, &str)] = &[
    ("twiitr.txt", include_str!("vectors/twiitr.txt")),
    (
        "unicode-network.txt",
        include_str!("vectors/unicode-network.txt"),
    ),
    // A closed network (PROTOCOL.md §2.10), computed outside the crate by
    // vectors/gen_closed.py; extra inputs `admission_seed`, `not_after_a`, `not_after_b`,
    // `now_ms` (u64 big-endian), extra outputs `cert_a`, `cert_b`.
    (
        "closed-twiitr.txt",
        include_str!("vectors/closed-twiitr.txt"),
    ),
];

const OUTPUTS: &[&str] = &[
    "msg1",
    "msg2",
    "msg3",
    "session_id",
    "transcript_hash",
    "key_i2r",
    "key_r2i",
];

fn parse(text: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').expect("name = hex");
        out.insert(k.trim().to_owned(), hex::decode(v.trim()).expect("hex"));
    }
    out
}

fn arr(v: &BTreeMap<String, Vec<u8>>, k: &str) -> [u8; 32] {
    v[k].as_slice().try_into().unwrap()
}

fn u64_of(v: &BTreeMap<String, Vec<u8>>, k: &str) -> u64 {
    u64::from_be_bytes(v[k].as_slice().try_into().unwrap())
}

/// The admission key of a closed-network vector.
fn admission_key(v: &BTreeMap<String, Vec<u8>>) -> Option<IdentityKeypair> {
    v.get("admission_seed")
        .map(|s| IdentityKeypair::from_seed(&s.as_slice().try_into().unwrap()))
}

/// PROTOCOL.md "Handshake", re-derived by hand from the primitives.
fn reference(v: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    let a = IdentityKeypair::from_seed(&arr(v, "seed_a"));
    let b = IdentityKeypair::from_seed(&arr(v, "seed_b"));
    let net = &v["network"];
    let ak = admission_key(v);
    // §2.10: on a closed network the admission key is a third part of the node id.
    let node_id = |pk: &[u8]| match &ak {
        None => Transcript::digest("themis/v1/node-id", &[pk, net]),
        Some(ak) => Transcript::digest("themis/v1/node-id", &[pk, net, ak.public().as_bytes()]),
    };
    let a_id = node_id(a.public().as_bytes());
    let b_id = node_id(b.public().as_bytes());
    // §2.10: cert = AK ‖ subject ‖ u64be not_after ‖ Sign(AK, H("themis/v1/admission-cert";
    // net_id, AK, subject, u64be not_after)).
    let cert = |subject: &[u8; 32], not_after: &[u8]| {
        ak.as_ref().map(|ak| {
            let d = Transcript::digest(
                "themis/v1/admission-cert",
                &[net, ak.public().as_bytes(), subject, not_after],
            );
            [
                ak.public().as_bytes(),
                &subject[..],
                not_after,
                ak.sign(&d).as_bytes(),
            ]
            .concat()
        })
    };
    let cert_a = cert(&a_id, v.get("not_after_a").map_or(&[][..], |x| x));
    let cert_b = cert(&b_id, v.get("not_after_b").map_or(&[][..], |x| x));
    let ea = EphemeralSecret::from_bytes(arr(v, "eph_a"));
    let eb = EphemeralSecret::from_bytes(arr(v, "eph_b"));
    let nonce = arr(v, "nonce_a");

    let mut msg1 = vec![0x01, 0x01];
    msg1.extend_from_slice(ea.public().as_bytes());
    msg1.extend_from_slice(&nonce);
    msg1.extend_from_slice(a.public().as_bytes());
    msg1.extend_from_slice(&b_id);
    msg1.push(net.len() as u8);
    msg1.extend_from_slice(net);
    msg1.extend_from_slice(cert_a.as_deref().unwrap_or_default());
    let th1 = Transcript::digest("themis/v1/hs/1/initiator", &[&msg1]);
    let sig1 = a.sign(&th1);
    msg1.extend_from_slice(sig1.as_bytes());

    let mut msg2 = vec![0x01, 0x02];
    msg2.extend_from_slice(eb.public().as_bytes());
    msg2.extend_from_slice(b.public().as_bytes());
    msg2.extend_from_slice(&nonce);
    msg2.extend_from_slice(&a_id);
    msg2.extend_from_slice(cert_b.as_deref().unwrap_or_default());
    let th2 = Transcript::digest("themis/v1/hs/2/responder", &[&th1, sig1.as_bytes(), &msg2]);
    let sig2 = b.sign(&th2);
    msg2.extend_from_slice(sig2.as_bytes());

    let th = Transcript::digest("themis/v1/hs/final", &[&th2, sig2.as_bytes()]);
    let shared = ea.diffie_hellman(&eb.public()).unwrap();
    let keys = SessionKeys::derive(&shared, &th);
    let sid = &Transcript::digest("themis/v1/session-id", &[&th])[..8];
    let mut msg3 = vec![0x01, 0x03];
    msg3.extend_from_slice(sid);
    let mac_input = Transcript::digest("themis/v1/hs/3/confirm", &[&msg3, &th, &nonce]);
    msg3.extend_from_slice(&keys.confirm.compute(&mac_input));

    let mut out = BTreeMap::from([
        ("msg1".into(), msg1),
        ("msg2".into(), msg2),
        ("msg3".into(), msg3),
        ("session_id".into(), sid.to_vec()),
        ("transcript_hash".into(), th.to_vec()),
        (
            "key_i2r".into(),
            keys.initiator_to_responder.as_bytes().to_vec(),
        ),
        (
            "key_r2i".into(),
            keys.responder_to_initiator.as_bytes().to_vec(),
        ),
    ]);
    if let (Some(ca), Some(cb)) = (cert_a, cert_b) {
        out.insert("cert_a".into(), ca);
        out.insert("cert_b".into(), cb);
    }
    out
}

/// The same transcript produced by the state machines.
fn implementation(v: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    let mut net = NetworkId::from_bytes(&v["network"]).unwrap();
    let a = Arc::new(IdentityKeypair::from_seed(&arr(v, "seed_a")));
    let b = Arc::new(IdentityKeypair::from_seed(&arr(v, "seed_b")));
    let now = Instant::now();
    let mut config = HandshakeConfig::default();
    let mut b_config = config.clone();
    let mut certs = BTreeMap::new();
    if let Some(ak) = admission_key(v) {
        net = net.clone().closed(ak.public());
        let clock = WallClock {
            anchor: now,
            anchor_unix_ms: u64_of(v, "now_ms"),
        };
        for (side, kp, cfg, not_after) in [
            ("cert_a", &a, &mut config, "not_after_a"),
            ("cert_b", &b, &mut b_config, "not_after_b"),
        ] {
            let c =
                AdmissionCert::issue(&ak, &net, kp.node_id(&net), u64_of(v, not_after)).unwrap();
            certs.insert(side.to_owned(), c.encode().to_vec());
            cfg.admission = Some(Admission {
                certificate: c,
                clock,
            });
        }
    }
    let mut a_rng = ScriptedRandom::new([arr(v, "eph_a"), arr(v, "nonce_a")].concat());
    let (mut init, msg1) =
        Initiator::start_with_rng(a, net.clone(), b.node_id(&net), &config, now, &mut a_rng)
            .unwrap();
    let mut resp = Responder::with_rng(
        b,
        net,
        b_config,
        Box::new(ScriptedRandom::new(arr(v, "eph_b").to_vec())),
    );
    let msg2 = resp.handle_message1(&msg1, now).unwrap();
    let (sa, msg3) = init.handle_message2(&msg2, now).unwrap();
    let sb = resp.handle_message3(&msg3, now).unwrap();
    assert_eq!(sb.send_key.as_bytes(), sa.recv_key.as_bytes());
    assert_eq!(sb.session_id, sa.session_id);
    let mut out = BTreeMap::from([
        ("msg1".into(), msg1),
        ("msg2".into(), msg2),
        ("msg3".into(), msg3),
        ("session_id".into(), sa.session_id.0.to_vec()),
        ("transcript_hash".into(), sa.transcript_hash.to_vec()),
        ("key_i2r".into(), sa.send_key.as_bytes().to_vec()),
        ("key_r2i".into(), sa.recv_key.as_bytes().to_vec()),
    ]);
    out.extend(certs);
    out
}

#[test]
fn known_answer_transcripts() {
    for (name, text) in VECTORS {
        let v = parse(text);
        let by_hand = reference(&v);
        let by_machine = implementation(&v);
        let closed = v.contains_key("admission_seed");
        let extra: &[&str] = if closed { &["cert_a", "cert_b"] } else { &[] };
        for k in OUTPUTS.iter().chain(extra) {
            let want = v.get(*k).unwrap_or_else(|| panic!("{name}: missing {k}"));
            assert_eq!(
                hex::encode(&by_hand[*k]),
                hex::encode(want),
                "{name}: {k} (reference derivation)"
            );
            assert_eq!(
                hex::encode(&by_machine[*k]),
                hex::encode(want),
                "{name}: {k} (state machines)"
            );
        }
    }
}

/// Rewrites the vector files from the reference derivation (run by hand, see the module docs).
#[test]
#[ignore = "rewrites tests/vectors; run by hand after a deliberate format change"]
fn regenerate() {
    let inputs: [(&str, &str, u8); 2] = [
        ("twiitr.txt", "twiitr", 0x10),
        ("unicode-network.txt", "réseau/€-prod", 0x20),
    ];
    for (file, net, base) in inputs {
        let mut v = BTreeMap::new();
        v.insert("seed_a".to_owned(), vec![base + 1; 32]);
        v.insert("seed_b".to_owned(), vec![base + 2; 32]);
        v.insert("network".to_owned(), net.as_bytes().to_vec());
        v.insert("eph_a".to_owned(), vec![base + 3; 32]);
        v.insert("nonce_a".to_owned(), vec![base + 4; 32]);
        v.insert("eph_b".to_owned(), vec![base + 5; 32]);
        let out = reference(&v);
        let mut text = format!(
            "# THEMIS handshake known-answer transcript (network {net:?}).\n\
             # Format: `name = hex`; see themis-handshake/tests/kat.rs and PROTOCOL.md.\n\
             # inputs\n"
        );
        for k in ["seed_a", "seed_b", "network", "eph_a", "nonce_a", "eph_b"] {
            text += &format!("{k} = {}\n", hex::encode(&v[k]));
        }
        text += "# outputs\n";
        for k in OUTPUTS {
            text += &format!("{k} = {}\n", hex::encode(&out[*k]));
        }
        let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::write(path, text).unwrap();
    }
}
