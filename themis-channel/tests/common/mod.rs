//! Helpers shared by the transport tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use themis_channel::Transport;

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
