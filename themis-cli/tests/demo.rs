#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! `themis demo` runs to completion (a small configuration, to keep the debug build fast), its
//! report says what the README promises, and bad flags fail with a clear message. Every run of
//! the binary is bounded: a hang kills the child and fails the test with its output.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Far above the ~10 s the small demo takes in a debug build, even on a loaded machine.
const LIMIT: Duration = Duration::from_secs(120);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn themis(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_themis"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the themis binary starts");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    let Some(status) = status else {
        panic!(
            "themis {args:?} did not finish within {LIMIT:?} and was killed\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    };
    Run {
        code: status.code(),
        stdout,
        stderr,
    }
}

#[test]
fn demo_runs_and_every_claim_holds() {
    let r = themis(&["demo", "--nodes", "12", "--logins", "200", "--quiet"]);
    let all = format!("stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, Some(0), "{all}");
    for line in [
        "network 'twiitr', 12 nodes",
        "ring size 12",
        "check    1.0      95",
        "check    1.1      5",
        "handler  1.0      100",
        "is not on the allow-list of 'check'",
        "found 'check' under replica 0",
        "logins     200/200 answered",
        "(within +-",
        "found under sibling replica",
        "failover: 'check' now served by",
        "the client finds 'check' under replica 0 again",
        "claims hold: ",
    ] {
        assert!(r.stdout.contains(line), "missing {line:?} in\n{all}");
    }
    // Both replica tables list k + 1 = 3 replicas, each checked against the ring.
    let rows = r.stdout.lines().filter(|l| l.ends_with(" match")).count();
    assert_eq!(rows, 6, "{all}");
    assert!(!r.stdout.contains("MISMATCH"), "{all}");
    assert!(r.stderr.is_empty(), "--quiet prints no progress: {all}");
}

#[test]
fn insecure_demo_runs_too() {
    let r = themis(&[
        "demo",
        "--nodes",
        "6",
        "--logins",
        "50",
        "--seed",
        "7",
        "--insecure",
    ]);
    let all = format!("stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, Some(0), "{all}");
    assert!(r.stdout.contains("INSECURE plaintext"), "{all}");
    assert!(r.stdout.contains("claims hold: "), "{all}");
    assert!(
        r.stderr.contains("joined 6/6 nodes"),
        "progress lines: {all}"
    );
}

#[test]
fn bad_flags_fail_with_a_clear_message() {
    let r = themis(&["demo", "--nodes", "2"]);
    assert_ne!(r.code, Some(0));
    assert!(
        r.stderr.contains("--nodes") && r.stderr.contains("5..=256"),
        "{}",
        r.stderr
    );
    let r = themis(&["demo", "--logins", "0"]);
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("--logins"), "{}", r.stderr);
    let r = themis(&["demo", "--help"]);
    assert_eq!(r.code, Some(0));
    assert!(r.stdout.contains("--insecure"), "{}", r.stdout);
}
