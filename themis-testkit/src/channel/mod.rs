//! Test support: both ends of a session without a handshake (channel tests) and frame helpers
//! (transport tests).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::time::Instant;
use std::{collections::HashSet, net::SocketAddr, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use themis_channel::Transport;

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

/// A frame of the insecure-command type carrying `tag` and `n` and `pad` filler bytes.
pub(crate) fn frame(tag: u8, n: u32, pad: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(7 + pad);
    b.put_u8(0x01);
    b.put_u8(0x20);
    b.put_u8(tag);
    b.put_u32(n);
    b.put_bytes(0xAB, pad);
    b.freeze()
}

/// `(tag, n)` of a frame built by [`frame`].
pub(crate) fn parse(f: &[u8]) -> (u8, u32) {
    assert_eq!(&f[..2], &[0x01, 0x20]);
    (f[2], u32::from_be_bytes(f[3..7].try_into().unwrap()))
}

pub(crate) fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Receives one frame or panics after `secs` seconds.
pub(crate) async fn recv_within<T: Transport + ?Sized>(t: &T, secs: u64) -> (SocketAddr, BytesMut) {
    tokio::time::timeout(Duration::from_secs(secs), t.recv())
        .await
        .expect("timed out waiting for a frame")
        .expect("transport closed")
}

/// Waits (polling) until `cond` holds, panicking with `what` after `secs` seconds.
pub(crate) async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Number of open file descriptors of this process.
pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Soft and hard RLIMIT_NOFILE as read from /proc/self/limits.
pub(crate) fn nofile_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

/// TCP sockets in TIME_WAIT whose local or remote port is one of `ports` (IPv4 and IPv6).
pub(crate) fn time_wait_count(ports: &HashSet<u16>) -> usize {
    time_wait_entries(ports).len()
}

/// The `(local, remote)` addresses (as in /proc/net/tcp*) of TCP sockets in TIME_WAIT whose
/// local or remote port is one of `ports`; with `ports` empty, all of them.
pub(crate) fn time_wait_entries(ports: &HashSet<u16>) -> HashSet<(String, String)> {
    let mut n = HashSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 || cols[3] != "06" {
                continue;
            }
            let port = |c: &str| u16::from_str_radix(c.rsplit(':').next().unwrap(), 16).unwrap();
            if ports.is_empty() || ports.contains(&port(cols[1])) || ports.contains(&port(cols[2]))
            {
                n.insert((cols[1].to_string(), cols[2].to_string()));
            }
        }
    }
    n
}

/// Runs `fut`, failing the test with the step's name if it takes longer than `secs` (tokio's
/// clock: virtual time under a paused clock). A hang in the code under test becomes a failure
/// with a message, never a stuck CI.
pub async fn within<T>(secs: u64, step: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("step '{step}' did not finish within {secs} s"),
    }
}
