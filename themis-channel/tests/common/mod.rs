//! Test support: build both ends of a session without a handshake.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::time::Instant;

use themis_channel::{Channel, ChannelConfig};
use themis_crypto::{EphemeralSecret, IdentityKeypair, NetworkId, SessionKeys, Transcript};
use themis_handshake::{Role, Session, SessionId};

/// Deterministic 32 bytes from a seed and a purpose.
pub fn bytes32(seed: u64, what: &str) -> [u8; 32] {
    Transcript::digest(
        "themis-channel/test",
        &[&seed.to_be_bytes(), what.as_bytes()],
    )
}

/// The two ends (initiator A, responder B) of one session, as a finished handshake would
/// leave them: the same `SessionKeys::derive` output with roles swapped.
pub fn session_pair(seed: u64, now: Instant) -> (Session, Session) {
    session_pair_epoch(seed, 0, now)
}

/// Like [`session_pair`], for handshake number `epoch` between the same two identities
/// (a rekey gives new keys and a new session id).
pub fn session_pair_epoch(seed: u64, epoch: u64, now: Instant) -> (Session, Session) {
    let net = NetworkId::new("channel-test").unwrap();
    let a = IdentityKeypair::from_seed(&bytes32(seed, "identity a"));
    let b = IdentityKeypair::from_seed(&bytes32(seed, "identity b"));
    let ea = EphemeralSecret::from_bytes(bytes32(seed, &format!("ephemeral a {epoch}")));
    let eb = EphemeralSecret::from_bytes(bytes32(seed, &format!("ephemeral b {epoch}")));
    let shared_a = ea.diffie_hellman(&eb.public()).unwrap();
    let shared_b = eb.diffie_hellman(&ea.public()).unwrap();
    let th = Transcript::digest(
        "themis-channel/test/transcript",
        &[ea.public().as_bytes(), eb.public().as_bytes()],
    );
    let mut sid = [0u8; 8];
    sid.copy_from_slice(&Transcript::digest("themis/v1/session-id", &[&th])[..8]);
    let ka = SessionKeys::derive(&shared_a, &th);
    let kb = SessionKeys::derive(&shared_b, &th);
    let sa = Session {
        role: Role::Initiator,
        network: net.clone(),
        local_id: a.node_id(&net),
        peer_id: b.node_id(&net),
        peer_public: b.public(),
        session_id: SessionId(sid),
        transcript_hash: th,
        send_key: ka.initiator_to_responder,
        recv_key: ka.responder_to_initiator,
        established_at: now,
    };
    let sb = Session {
        role: Role::Responder,
        network: net.clone(),
        local_id: b.node_id(&net),
        peer_id: a.node_id(&net),
        peer_public: a.public(),
        session_id: SessionId(sid),
        transcript_hash: th,
        send_key: kb.responder_to_initiator,
        recv_key: kb.initiator_to_responder,
        established_at: now,
    };
    (sa, sb)
}

/// Two secure channels A and B over one session.
pub fn secure_pair(seed: u64, now: Instant, config: ChannelConfig) -> (Channel, Channel) {
    let (sa, sb) = session_pair(seed, now);
    (
        Channel::secure(sa, config.clone()).unwrap(),
        Channel::secure(sb, config).unwrap(),
    )
}

/// Two insecure channels A and B between the same identities as `session_pair(seed)`.
pub fn insecure_pair(seed: u64, now: Instant, config: ChannelConfig) -> (Channel, Channel) {
    let (sa, sb) = session_pair(seed, now);
    (
        Channel::insecure(sa.local_id, sa.peer_id, config.clone(), now).unwrap(),
        Channel::insecure(sb.local_id, sb.peer_id, config, now).unwrap(),
    )
}

/// A channel pair of either mode.
pub fn pair(secure: bool, seed: u64, now: Instant, config: ChannelConfig) -> (Channel, Channel) {
    if secure {
        secure_pair(seed, now, config)
    } else {
        insecure_pair(seed, now, config)
    }
}
