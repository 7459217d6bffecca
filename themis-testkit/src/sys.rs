//! What the operating system says about this process (Linux `/proc`): descriptors, limits,
//! sockets in TIME_WAIT. For tests that check that transports release what they take.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::HashSet;

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// Soft and hard RLIMIT_NOFILE as read from /proc/self/limits.
pub fn nofile_limits() -> (u64, u64) {
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

/// The `(local, remote)` addresses (as in /proc/net/tcp*) of TCP sockets in TIME_WAIT whose
/// local or remote port is one of `ports`; with `ports` empty, all of them.
pub fn time_wait_entries(ports: &HashSet<u16>) -> HashSet<(String, String)> {
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
