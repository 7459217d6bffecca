//! The handshake layer: two identities, one honest run driven to any message, and the
//! mutations an attacker tries on its messages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Instant;

use themis_crypto::{IdentityKeypair, NetworkId, NodeId};
use themis_handshake::{HandshakeConfig, Initiator, Responder, SeededRandom, Session};

/// Two nodes on one network.
#[derive(Debug)]
pub struct Pair {
    /// Their network.
    pub net: NetworkId,
    /// Alice, the initiator.
    pub a: Arc<IdentityKeypair>,
    /// Bob, the responder.
    pub b: Arc<IdentityKeypair>,
    /// Both sides' settings.
    pub config: HandshakeConfig,
    /// The time of every step.
    pub now: Instant,
}

impl Pair {
    /// Alice and Bob from their key seeds, on network `net`.
    pub fn new(seed_a: [u8; 32], seed_b: [u8; 32], net: &str) -> Self {
        Self {
            net: NetworkId::new(net).unwrap(),
            a: Arc::new(IdentityKeypair::from_seed(&seed_a)),
            b: Arc::new(IdentityKeypair::from_seed(&seed_b)),
            config: HandshakeConfig::default(),
            now: Instant::now(),
        }
    }

    /// The pair of the known-answer vectors: seeds `a1…` and `b2…` on `twiitr`.
    pub fn fixed() -> Self {
        Self::new([0xa1; 32], [0xb2; 32], "twiitr")
    }

    /// Alice's node id.
    pub fn a_id(&self) -> NodeId {
        self.a.node_id(&self.net)
    }

    /// Bob's node id.
    pub fn b_id(&self) -> NodeId {
        self.b.node_id(&self.net)
    }

    /// Bob's responder, its randomness seeded by `rng_seed`.
    pub fn responder(&self, rng_seed: u64) -> Responder {
        Responder::with_rng(
            self.b.clone(),
            self.net.clone(),
            self.config.clone(),
            Box::new(SeededRandom::from_u64(rng_seed)),
        )
    }

    /// Alice's initiator towards Bob and its message 1, its randomness seeded by `rng_seed`.
    pub fn initiator(&self, rng_seed: u64) -> (Initiator, Vec<u8>) {
        Initiator::start_with_rng(
            self.a.clone(),
            self.net.clone(),
            self.b_id(),
            &self.config,
            self.now,
            &mut SeededRandom::from_u64(rng_seed),
        )
        .unwrap()
    }

    /// Runs messages 1 and 2 and returns everything needed to finish or attack the run.
    pub fn run_to_msg3(&self, rng_seed: u64) -> Run {
        let mut responder = self.responder(rng_seed.wrapping_add(1_000_000));
        let (mut initiator, msg1) = self.initiator(rng_seed);
        let msg2 = responder.handle_message1(&msg1, self.now).unwrap();
        let (a_session, msg3) = initiator.handle_message2(&msg2, self.now).unwrap();
        Run {
            responder,
            msg1,
            msg2,
            msg3,
            a_session,
        }
    }
}

/// A run stopped before message 3 reaches Bob.
pub struct Run {
    /// Bob, waiting for message 3.
    pub responder: Responder,
    /// Message 1.
    pub msg1: Vec<u8>,
    /// Message 2.
    pub msg2: Vec<u8>,
    /// Message 3, not yet delivered.
    pub msg3: Vec<u8>,
    /// Alice's session.
    pub a_session: Session,
}

/// Asserts that two sessions are the two ends of one handshake.
pub fn assert_matching(a: &Session, b: &Session) {
    assert_eq!(a.session_id, b.session_id);
    assert_eq!(a.transcript_hash, b.transcript_hash);
    assert_eq!(a.send_key.as_bytes(), b.recv_key.as_bytes());
    assert_eq!(a.recv_key.as_bytes(), b.send_key.as_bytes());
    assert_ne!(a.send_key.as_bytes(), a.recv_key.as_bytes());
    assert_eq!(a.peer_id, b.local_id);
    assert_eq!(b.peer_id, a.local_id);
    assert_eq!(a.network, b.network);
}

/// Every single-bit flip, truncation, one-byte extension of `msg`.
pub fn mutations(msg: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..msg.len() * 8 {
        let mut m = msg.to_vec();
        m[i / 8] ^= 1 << (i % 8);
        out.push((format!("flip bit {i}"), m));
    }
    for len in 0..msg.len() {
        out.push((format!("truncate to {len}"), msg[..len].to_vec()));
    }
    for extra in [0u8, 1, 0xff] {
        let mut m = msg.to_vec();
        m.push(extra);
        out.push((format!("append {extra:#04x}"), m));
    }
    out
}

/// Every swap of two distinct fields given as (offset, length) ranges of equal length.
pub fn field_swaps(msg: &[u8], fields: &[(usize, usize)]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, &(oa, la)) in fields.iter().enumerate() {
        for &(ob, lb) in &fields[i + 1..] {
            if la != lb {
                continue;
            }
            let mut m = msg.to_vec();
            let fa = msg[oa..oa + la].to_vec();
            let fb = msg[ob..ob + lb].to_vec();
            if fa == fb {
                continue;
            }
            m[oa..oa + la].copy_from_slice(&fb);
            m[ob..ob + lb].copy_from_slice(&fa);
            out.push((format!("swap {oa}+{la} with {ob}+{lb}"), m));
        }
    }
    out
}

/// The 32-byte fields (and the two signature halves) of message 1 with a network id of
/// `net_len` bytes.
pub fn msg1_fields(net_len: usize) -> Vec<(usize, usize)> {
    let sig = 131 + net_len;
    vec![
        (2, 32),
        (34, 32),
        (66, 32),
        (98, 32),
        (sig, 32),
        (sig + 32, 32),
    ]
}

/// The 32-byte fields of message 2 (and the signature halves).
pub fn msg2_fields() -> Vec<(usize, usize)> {
    vec![(2, 32), (34, 32), (66, 32), (98, 32), (130, 32), (162, 32)]
}

/// Fields of message 3: the session id against each 8-byte quarter of the MAC, and the MAC
/// halves.
pub fn msg3_fields() -> Vec<(usize, usize)> {
    vec![
        (2, 8),
        (10, 8),
        (18, 8),
        (26, 8),
        (34, 8),
        (10, 16),
        (26, 16),
    ]
}
