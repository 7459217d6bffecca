//! The channel layer: both ends of a session without a handshake (channel tests), frames for
//! transport tests, and endpoints with test handlers ([`endpoint`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod endpoint;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use themis_channel::{Channel, ChannelConfig, Transport};
use themis_crypto::{EphemeralSecret, SessionKeys, Transcript};
use themis_handshake::{Role, Session, SessionId};

use crate::identity::{bytes32, keypair, network};

/// The two ends (initiator A, responder B) of one session, as a finished handshake would
/// leave them: the same `SessionKeys::derive` output with roles swapped.
pub fn session_pair(seed: u64, now: Instant) -> (Session, Session) {
    session_pair_epoch(seed, 0, now)
}

/// Like [`session_pair`], for handshake number `epoch` between the same two identities
/// (a rekey gives new keys and a new session id).
pub fn session_pair_epoch(seed: u64, epoch: u64, now: Instant) -> (Session, Session) {
    let net = network();
    let (a, b) = (keypair(seed, "identity a"), keypair(seed, "identity b"));
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

/// A frame of the insecure-command type carrying `tag` and `n` and `pad` filler bytes.
pub fn frame(tag: u8, n: u32, pad: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(7 + pad);
    b.put_u8(0x01);
    b.put_u8(0x20);
    b.put_u8(tag);
    b.put_u32(n);
    b.put_bytes(0xAB, pad);
    b.freeze()
}

/// `(tag, n)` of a frame built by [`frame`].
pub fn parse(f: &[u8]) -> (u8, u32) {
    assert_eq!(&f[..2], &[0x01, 0x20]);
    (f[2], u32::from_be_bytes(f[3..7].try_into().unwrap()))
}

/// Any free port on the IPv4 loopback: `127.0.0.1:0`.
pub fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Receives one frame or panics after `secs` seconds.
pub async fn recv_within<T: Transport + ?Sized>(t: &T, secs: u64) -> (SocketAddr, BytesMut) {
    tokio::time::timeout(Duration::from_secs(secs), t.recv())
        .await
        .expect("timed out waiting for a frame")
        .expect("transport closed")
}
