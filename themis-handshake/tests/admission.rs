//! Closed networks (PROTOCOL.md §2.10, §3.6): the handshake admits only peers with a valid
//! admission certificate, and an open network of the same name stays apart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use themis_crypto::{AdmissionCert, AdmissionProblem, IdentityKeypair, NetworkId};
use themis_handshake::{
    Admission, Error, HandshakeConfig, Initiator, MSG1_CLOSED_MIN_LEN, MSG2_CLOSED_LEN, Responder,
    WallClock,
};

/// Unix time (ms) at the test's `now`.
const NOW_MS: u64 = 1_800_000_000_000;
const DAY_MS: u64 = 86_400_000;

struct World {
    now: Instant,
    ak: IdentityKeypair,
    net: NetworkId,
}

impl World {
    fn new() -> Self {
        let ak = IdentityKeypair::from_seed(&[0xa0; 32]);
        let net = NetworkId::new("twiitr").unwrap().closed(ak.public());
        Self {
            now: Instant::now(),
            ak,
            net,
        }
    }

    fn clock(&self) -> WallClock {
        WallClock {
            anchor: self.now,
            anchor_unix_ms: NOW_MS,
        }
    }

    /// A handshake config carrying `cert`.
    fn config(&self, cert: AdmissionCert) -> HandshakeConfig {
        let mut c = HandshakeConfig::default();
        c.admission = Some(Admission {
            certificate: cert,
            clock: self.clock(),
        });
        c
    }

    /// A config with a valid certificate (one day left) for `kp` on the closed network.
    fn certified(&self, kp: &IdentityKeypair) -> HandshakeConfig {
        let c = AdmissionCert::issue(&self.ak, &self.net, kp.node_id(&self.net), NOW_MS + DAY_MS)
            .unwrap();
        self.config(c)
    }
}

fn keys(seed: u8) -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::from_seed(&[seed; 32]))
}

/// Runs message 1 and 2; returns the responder's and the initiator's results.
fn run(
    a: &Arc<IdentityKeypair>,
    a_net: &NetworkId,
    a_cfg: &HandshakeConfig,
    b: &Arc<IdentityKeypair>,
    b_net: &NetworkId,
    b_cfg: HandshakeConfig,
    now: Instant,
) -> Result<(), Error> {
    let mut resp = Responder::new(b.clone(), b_net.clone(), b_cfg);
    let (mut init, msg1) =
        Initiator::start(a.clone(), a_net.clone(), b.node_id(a_net), a_cfg, now)?;
    let msg2 = resp.handle_message1(&msg1, now)?;
    let (_, msg3) = init.handle_message2(&msg2, now)?;
    resp.handle_message3(&msg3, now)?;
    Ok(())
}

#[test]
fn certified_peers_complete_the_handshake() {
    let w = World::new();
    let (a, b) = (keys(1), keys(2));
    let mut resp = Responder::new(b.clone(), w.net.clone(), w.certified(&b));
    let (mut init, msg1) = Initiator::start(
        a.clone(),
        w.net.clone(),
        b.node_id(&w.net),
        &w.certified(&a),
        w.now,
    )
    .unwrap();
    assert_eq!(msg1.len(), MSG1_CLOSED_MIN_LEN + "twiitr".len() - 1);
    let msg2 = resp.handle_message1(&msg1, w.now).unwrap();
    assert_eq!(msg2.len(), MSG2_CLOSED_LEN);
    assert!(msg2.len() <= msg1.len(), "no amplification");
    let (sa, msg3) = init.handle_message2(&msg2, w.now).unwrap();
    let sb = resp.handle_message3(&msg3, w.now).unwrap();
    assert_eq!(sa.peer_id, b.node_id(&w.net));
    assert_eq!(sb.peer_id, a.node_id(&w.net));
    assert_eq!(sa.session_id, sb.session_id);
}

#[test]
fn open_peer_of_the_same_name_is_refused_as_another_network() {
    let w = World::new();
    let (a, b) = (keys(1), keys(2));
    let open = w.net.open();
    // An uncertified node of the open network "twiitr" reaching a closed node (whose id on the
    // open network it computes from the key, as after `identify`).
    let mut resp = Responder::new(b.clone(), w.net.clone(), w.certified(&b));
    let (_, msg1) = Initiator::start(
        a.clone(),
        open.clone(),
        b.node_id(&open),
        &HandshakeConfig::default(),
        w.now,
    )
    .unwrap();
    let err = resp.handle_message1(&msg1, w.now).unwrap_err();
    assert!(
        matches!(&err, Error::NetworkMismatch { ours, theirs } if *ours == w.net && *theirs == open),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("'twiitr' (open)") && text.contains("'twiitr' (closed, admission key"),
        "{text}"
    );
    assert_eq!(resp.pending_len(), 0);

    // And the other way: a certified node reaching an open node of the same name.
    let mut open_resp = Responder::new(b.clone(), open.clone(), HandshakeConfig::default());
    let (_, msg1) = Initiator::start(
        a.clone(),
        w.net.clone(),
        b.node_id(&open),
        &w.certified(&a),
        w.now,
    )
    .unwrap();
    let err = open_resp.handle_message1(&msg1, w.now).unwrap_err();
    assert!(
        matches!(&err, Error::NetworkMismatch { ours, theirs } if *ours == open && *theirs == w.net),
        "{err}"
    );
}

#[test]
fn another_closed_name_is_reported_with_its_admission_key() {
    let w = World::new();
    let other = World {
        now: w.now,
        ak: IdentityKeypair::from_seed(&[0xa0; 32]),
        net: NetworkId::new("elsewhere").unwrap().closed(w.ak.public()),
    };
    refused_as_another_network(&w, &other);
}

/// An initiator certified on `other` meets a responder certified on `w`: the handshake fails
/// with a network mismatch that names `other`'s network.
fn refused_as_another_network(w: &World, other: &World) {
    let (a, b) = (keys(1), keys(2));
    let err = run(
        &a,
        &other.net,
        &other.certified(&a),
        &b,
        &w.net,
        w.certified(&b),
        w.now,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::NetworkMismatch { theirs, .. } if *theirs == other.net),
        "{err}"
    );
}

#[test]
fn same_name_closed_under_another_key_is_another_network() {
    let w = World::new();
    let other = World {
        now: w.now,
        ak: IdentityKeypair::from_seed(&[0xb0; 32]),
        net: w
            .net
            .open()
            .closed(IdentityKeypair::from_seed(&[0xb0; 32]).public()),
    };
    let a = keys(1);
    assert_ne!(a.node_id(&w.net), a.node_id(&other.net));
    refused_as_another_network(&w, &other);
}

#[test]
fn certificate_checks_refuse_the_initiator() {
    let w = World::new();
    let (a, b, c) = (keys(1), keys(2), keys(3));
    let a_id = a.node_id(&w.net);
    let cases: Vec<(&str, AdmissionCert)> = vec![
        (
            "for another node",
            AdmissionCert::issue(&w.ak, &w.net, c.node_id(&w.net), NOW_MS + DAY_MS).unwrap(),
        ),
        (
            "expired",
            AdmissionCert::issue(&w.ak, &w.net, a_id, NOW_MS).unwrap(),
        ),
        ("forged", {
            // Signed by another key, with this network's admission key written in.
            let rogue = IdentityKeypair::from_seed(&[0xc0; 32]);
            let rogue_net = w.net.open().closed(rogue.public());
            let mut bytes = AdmissionCert::issue(&rogue, &rogue_net, a_id, NOW_MS + DAY_MS)
                .unwrap()
                .encode();
            bytes[..32].copy_from_slice(w.ak.public().as_bytes());
            AdmissionCert::decode(&bytes).unwrap()
        }),
    ];
    for (what, cert) in cases {
        let err = run(
            &a,
            &w.net,
            &w.config(cert),
            &b,
            &w.net,
            w.certified(&b),
            w.now,
        )
        .unwrap_err();
        let ok = match (what, &err) {
            (
                "for another node",
                Error::AdmissionRefused {
                    peer,
                    problem: AdmissionProblem::WrongSubject { .. },
                },
            ) => *peer == a_id,
            (
                "expired",
                Error::AdmissionRefused {
                    problem: AdmissionProblem::Expired { .. },
                    ..
                },
            ) => true,
            (
                "forged",
                Error::AdmissionRefused {
                    problem: AdmissionProblem::BadSignature,
                    ..
                },
            ) => true,
            _ => false,
        };
        assert!(ok, "{what}: {err}");
        assert!(err.to_string().contains("not admitted"), "{err}");
    }
}

#[test]
fn certificate_checks_refuse_the_responder_and_the_initiator_keeps_waiting() {
    let w = World::new();
    let (a, b) = (keys(1), keys(2));
    // B's certificate ends one second after `now`: valid when B answers, expired when A checks
    // it two seconds later.
    let b_cert = AdmissionCert::issue(&w.ak, &w.net, b.node_id(&w.net), NOW_MS + 1000).unwrap();
    let mut resp = Responder::new(b.clone(), w.net.clone(), w.config(b_cert));
    let (mut init, msg1) = Initiator::start(
        a.clone(),
        w.net.clone(),
        b.node_id(&w.net),
        &w.certified(&a),
        w.now,
    )
    .unwrap();
    let msg2 = resp.handle_message1(&msg1, w.now).unwrap();
    let later = w.now + Duration::from_secs(2);
    let err = init.handle_message2(&msg2, later).unwrap_err();
    assert!(
        matches!(&err, Error::AdmissionRefused { peer, problem: AdmissionProblem::Expired { .. } } if *peer == b.node_id(&w.net)),
        "{err}"
    );
    // Still waiting: the genuine answer in time is accepted.
    init.handle_message2(&msg2, w.now).unwrap();
}

#[test]
fn message2_without_certificate_is_refused_on_a_closed_network() {
    let w = World::new();
    let (a, b) = (keys(1), keys(2));
    let (mut init, _) = Initiator::start(
        a.clone(),
        w.net.clone(),
        b.node_id(&w.net),
        &w.certified(&a),
        w.now,
    )
    .unwrap();
    // An open-network message 2 (194 bytes) from B's key on the open network.
    let open = w.net.open();
    let mut open_resp = Responder::new(b.clone(), open.clone(), HandshakeConfig::default());
    let (_, open_msg1) = Initiator::start(
        a.clone(),
        open.clone(),
        b.node_id(&open),
        &HandshakeConfig::default(),
        w.now,
    )
    .unwrap();
    let open_msg2 = open_resp.handle_message1(&open_msg1, w.now).unwrap();
    assert!(matches!(
        init.handle_message2(&open_msg2, w.now),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn a_closed_node_without_certificate_cannot_handshake() {
    let w = World::new();
    let (a, b) = (keys(1), keys(2));
    let err = Initiator::start(
        a.clone(),
        w.net.clone(),
        b.node_id(&w.net),
        &HandshakeConfig::default(),
        w.now,
    )
    .unwrap_err();
    assert!(matches!(err, Error::NoAdmissionCertificate(_)), "{err}");
    // A responder without one refuses (it cannot answer with a certificate).
    let err = run(
        &a,
        &w.net,
        &w.certified(&a),
        &b,
        &w.net,
        HandshakeConfig::default(),
        w.now,
    )
    .unwrap_err();
    assert!(matches!(err, Error::NoAdmissionCertificate(_)), "{err}");
}

#[test]
fn open_networks_are_unchanged() {
    let w = World::new();
    let (a, b) = (keys(1), keys(2));
    let open = w.net.open();
    let cfg = HandshakeConfig::default();
    run(&a, &open, &cfg, &b, &open, cfg.clone(), w.now).unwrap();
    // A certificate configured on an open network is not sent.
    let (_, msg1) =
        Initiator::start(a, open.clone(), b.node_id(&open), &w.certified(&b), w.now).unwrap();
    assert_eq!(msg1.len(), 195 + 6);
}

/// Every single-bit flip, truncation and extension of a closed network's message 1 and 2
/// (certificate bytes included) is refused, leaving no state behind; the genuine messages still
/// complete the handshake.
#[test]
fn every_damaged_closed_message_is_rejected() {
    use themis_testkit::handshake::mutations;
    let w = World::new();
    let (a, b) = (keys(1), keys(2));
    let (a_cfg, b_cfg) = (w.certified(&a), w.certified(&b));
    let mut resp = Responder::new(b.clone(), w.net.clone(), b_cfg);
    let (mut init, msg1) =
        Initiator::start(a.clone(), w.net.clone(), b.node_id(&w.net), &a_cfg, w.now).unwrap();
    let damaged1 = mutations(&msg1);
    assert!(damaged1.len() > msg1.len() * 8);
    for (what, m) in &damaged1 {
        assert!(
            resp.handle_message1(m, w.now).is_err(),
            "message 1 with {what} was accepted"
        );
        assert_eq!(resp.pending_len(), 0, "{what} left state behind");
    }
    let msg2 = resp.handle_message1(&msg1, w.now).unwrap();
    for (what, m) in &mutations(&msg2) {
        assert!(
            init.handle_message2(m, w.now).is_err(),
            "message 2 with {what} was accepted"
        );
    }
    let (_, msg3) = init.handle_message2(&msg2, w.now).unwrap();
    resp.handle_message3(&msg3, w.now).unwrap();
}
