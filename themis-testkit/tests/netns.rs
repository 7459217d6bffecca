//! The network-namespace kit itself (root only; skipped with a printed reason otherwise): two
//! namespaces reach each other over TCP; a cut one is a black hole (a connect times out, it is
//! neither refused nor unreachable, both ways); a heal restores it; a forwarded port reaches a
//! listener inside a namespace; nothing is left behind after the drop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use themis_testkit::netns::{Netns, skip_unless_root};

/// A listener inside namespace `i` on its first address, answering every connection with "hi".
fn listen(net: &Netns, i: usize) -> SocketAddr {
    let l = net.run_in(i, || TcpListener::bind((net.addr(i), 0)).unwrap());
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.write_all(b"hi");
        }
    });
    addr
}

/// A connect from namespace `i` to `to` with a 2 s limit: the error kind, or the greeting.
fn connect(net: &Netns, i: usize, to: SocketAddr) -> Result<String, ErrorKind> {
    net.run_in(i, || {
        let mut s =
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|e| e.kind())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).map_err(|e| e.kind())?;
        Ok(got)
    })
}

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_namespaces_connect_a_cut_one_is_a_black_hole_and_a_heal_restores_it() {
    if skip_unless_root() {
        return;
    }
    let net = Netns::new("kittest", &[1, 2]);
    let names: Vec<String> = (0..2).map(|i| net.name(i).to_owned()).collect();
    assert!(namespaces().contains(&names[1]));
    assert_eq!(net.addrs(1).len(), 2);
    let a = listen(&net, 0);
    let b = listen(&net, 1);
    // both ways, and to the second address of namespace 1
    assert_eq!(connect(&net, 0, b), Ok("hi".into()));
    assert_eq!(connect(&net, 1, a), Ok("hi".into()));
    let b2 = net.run_in(1, || TcpListener::bind((net.addrs(1)[1], 0)).unwrap());
    let b2_addr = b2.local_addr().unwrap();
    assert!(net.run_in(0, || {
        TcpStream::connect_timeout(&b2_addr, Duration::from_secs(2)).is_ok()
    }));
    // a closed port refuses (the contrast to a black hole)
    let closed = SocketAddr::new(net.addr(1).into(), 9);
    assert_eq!(connect(&net, 0, closed), Err(ErrorKind::ConnectionRefused));

    net.cut(1);
    assert!(net.is_cut(1));
    assert_eq!(connect(&net, 0, b), Err(ErrorKind::TimedOut));
    assert_eq!(connect(&net, 0, closed), Err(ErrorKind::TimedOut));
    assert_eq!(connect(&net, 1, a), Err(ErrorKind::TimedOut));
    // the namespace itself still works inside
    assert_eq!(connect(&net, 1, b), Ok("hi".into()));

    net.heal(1);
    assert!(!net.is_cut(1));
    assert_eq!(connect(&net, 0, b), Ok("hi".into()));
    assert_eq!(connect(&net, 1, a), Ok("hi".into()));

    drop(net);
    let left = namespaces();
    for n in names {
        assert!(!left.contains(&n), "{n} left behind: {left}");
    }
}

#[test]
fn a_forwarded_port_reaches_a_loopback_listener_inside_a_namespace() {
    if skip_unless_root() {
        return;
    }
    let mut net = Netns::new("kittest", &[1]);
    let l = net.run_in(0, || TcpListener::bind("127.0.0.1:0").unwrap());
    let inside = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.write_all(b"inside");
        }
    });
    // The same port on the test's own loopback is not that listener.
    let local = net.forward(0, inside);
    let mut s = TcpStream::connect_timeout(&local, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "inside");
}

#[test]
fn a_process_runs_inside_its_namespace_with_its_own_pid() {
    if skip_unless_root() {
        return;
    }
    let net = Netns::new("kittest", &[1]);
    let out = net
        .command(0, "ip")
        .args(["-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&net.addr(0).to_string()),
        "{out:?}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = std::env::temp_dir();
        // `sh` prints a ready line with its own pid, then waits
        let p = net
            .spawn_ready(
                0,
                "sh",
                &dir,
                &format!("kittest-{}", std::process::id()),
                &["-c", "echo ready pid=$$; exec sleep 30"],
                &[],
            )
            .await;
        assert_eq!(p.get("pid"), p.pid().to_string());
        let pids = Command::new("ip")
            .args(["netns", "pids", net.name(0)])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&pids.stdout).contains(&p.pid().to_string()));
        drop(p);
        let _ = std::fs::remove_file(dir.join(format!("kittest-{}.stderr", std::process::id())));
    });
}
