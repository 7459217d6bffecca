//! Real processes of a binary under test (the `themis` command): spawned with their stdout's
//! `ready key=value ...` line parsed, their stderr kept in a file, killed when dropped; runs
//! to completion with bounded waits; free local ports. A hang is a failure with a message,
//! never a stuck CI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::wait::within;

/// A running process, killed on drop; with the fields of its `ready` line.
pub struct Proc {
    child: Child,
    ready: HashMap<String, String>,
    stderr: PathBuf,
}

impl Proc {
    /// Sends `signal` (e.g. "-TERM") and waits (at most 20 s) for a clean exit: status 0 and
    /// no panic on stderr.
    pub async fn stop(mut self, signal: &str) {
        self.signal(signal);
        let status = within(20, "a process stopping on a signal", self.child.wait())
            .await
            .unwrap();
        let err = self.stderr_text();
        assert!(status.success(), "{status}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    /// Sends `signal` without waiting.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits (at most `secs`) for the process to exit, and returns its status.
    pub async fn wait(&mut self, secs: u64) -> std::process::ExitStatus {
        within(secs, "a process exiting", self.child.wait())
            .await
            .unwrap()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// A field of the `ready` line ("" if absent).
    pub fn get(&self, k: &str) -> &str {
        self.ready.get(k).map(String::as_str).unwrap_or("")
    }

    /// The `api=http://HOST:PORT` field without the scheme.
    pub fn api(&self) -> String {
        self.get("api").trim_start_matches("http://").to_owned()
    }

    /// The address of the `contact=ID@HOST:PORT` field.
    pub fn listen(&self) -> String {
        self.get("contact").split_once('@').unwrap().1.to_owned()
    }

    /// What the process wrote on stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// Spawns `bin ARGS` with `envs` (and `RUST_LOG`, `NO_COLOR` and `THEMIS_*` of the test's own
/// environment removed, so that a developer's shell does not change the test) and waits (at
/// most 30 s) for its `ready` line on stdout; its stderr goes to `DIR/NAME.stderr`.
pub async fn spawn_ready(
    bin: &str,
    dir: &Path,
    name: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Proc {
    let stderr = dir.join(format!("{name}.stderr"));
    let mut cmd = command(bin, args, envs);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    let line = match line {
        Ok(Ok(Some(l))) => l,
        other => panic!(
            "{name} did not print its ready line ({other:?}); stderr: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        ),
    };
    assert!(line.starts_with("ready "), "{line}");
    let ready = line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Proc {
        child,
        ready,
        stderr,
    }
}

/// `bin node --net NET --fast --api 127.0.0.1:0 --listen 127.0.0.1:0 EXTRA…` (a `themis node`
/// with the fast test profile, on ports the OS picks), spawned and ready as [`spawn_ready`]
/// does.
pub async fn spawn_fast_node(bin: &str, dir: &Path, name: &str, net: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "node",
        "--net",
        net,
        "--fast",
        "--api",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    spawn_ready(bin, dir, name, &args, &[]).await
}

fn command(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && (k.starts_with("THEMIS_") || k == "RUST_LOG" || k == "NO_COLOR")
        {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().copied());
    cmd
}

/// Runs `bin ARGS` with `envs` to completion (at most 40 s).
pub async fn run(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let child = command(bin, args, envs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    within(40, &format!("{bin} {args:?}"), child.wait_with_output())
        .await
        .unwrap()
}

/// The bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts the exit code `code` and a stderr that contains every one of `needles`.
pub fn assert_fails(out: &Output, code: i32, needles: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

/// A free local port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free local port for both UDP and TCP (a DNS server's).
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// The first of `n` consecutive free ports, below the ephemeral range (so that no outgoing
/// connection takes one of them meanwhile).
pub fn free_ports_outside_ephemeral_range(n: u16) -> u16 {
    let seed = u64::from(std::process::id())
        ^ u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        );
    for attempt in 0..200u64 {
        let base = 20_000
            + u16::try_from(
                (seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(attempt * 7919))
                    % 10_000,
            )
            .unwrap();
        let all_free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {n} consecutive free ports in 20000..30000");
}

/// Runs `bin ARGS` until it succeeds: at most `tries` times, 250 ms apart, while `transient`
/// says its stderr tells of a failure that may pass (a fresh ring still settling); panics with
/// the stderr of a failure that will not, or of the last try.
pub async fn run_until_ok(
    bin: &str,
    args: &[&str],
    tries: usize,
    transient: impl Fn(&str) -> bool,
) -> Output {
    let mut last = String::new();
    for _ in 0..tries {
        let out = run(bin, args, &[]).await;
        if out.status.success() {
            return out;
        }
        last = text(&out.stderr);
        if !transient(&last) {
            panic!("{bin} {args:?} failed: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{bin} {args:?} kept failing: {last}");
}
