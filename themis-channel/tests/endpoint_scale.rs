//! Scale: two runtimes with 10,000 pipelined requests over TCP, 1,000 endpoints over UDP in
//! one process, and two real OS processes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use themis_channel::{Endpoint, EndpointConfig, PeerAddr};
use themis_testkit::channel::endpoint::*;
use themis_testkit::sys::open_fds;
use themis_testkit::{identity, network, within};

#[test]
fn ten_thousand_requests_64_in_flight_across_runtimes() {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let echo = Arc::new(Counting::default());
    let server = server_rt.block_on(tcp(2, EndpointConfig::default(), echo.clone()));
    let peer = server.local_peer();
    client_rt.block_on(within(180, "10,000 requests", async move {
        let client = tcp(1, EndpointConfig::default(), Arc::new(Echo::default())).await;
        let mut set = tokio::task::JoinSet::new();
        // 64 workers, each with one request in flight at a time: 64 in flight.
        for w in 0..64u32 {
            let client = client.clone();
            set.spawn(async move {
                let mut n = 0;
                let mut k = w;
                while k < 10_000 {
                    let req = k.to_be_bytes();
                    let resp = match client.request(&peer, Bytes::copy_from_slice(&req)).await {
                        Ok(r) => r,
                        Err(e) => panic!("request {k}: {e}\nclient {:?}", client.metrics()),
                    };
                    assert_eq!(&resp[..], &echoed(&req)[..], "response {k} matched");
                    n += 1;
                    k += 64;
                }
                n
            });
        }
        let mut total = 0;
        while let Some(n) = set.join_next().await {
            total += n.unwrap();
        }
        assert_eq!(total, 10_000);
        let m = client.metrics();
        assert_eq!(m.requests_ok, 10_000);
        assert_eq!(m.handshakes_initiated_ok, 1);
        assert_eq!(m.in_flight, 0);
    }));
    let seen = echo.seen.lock().unwrap();
    assert_eq!(seen.len(), 10_000);
    assert!(seen.values().all(|&n| n == 1));
    drop(seen);
    drop(server_rt);
}

#[test]
fn thousand_endpoints_over_udp_loopback() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(within(180, "1,000 endpoints", async {
        let before = open_fds();
        // The test is about descriptors and sessions, not latency: 2,000 handshakes and
        // requests at once over UDP, on a machine that CI may load with other tests, can take
        // longer than the default 5 s (one run failed so under a load of 12).
        let mut cfg = EndpointConfig::default();
        cfg.handshake_timeout = Duration::from_secs(60);
        cfg.request_timeout = Duration::from_secs(60);
        let mut eps = Vec::new();
        for i in 0..1000u64 {
            eps.push(udp(100 + i, cfg.clone(), Arc::new(Echo::default())).await);
        }
        let during = open_fds();
        let mut set = tokio::task::JoinSet::new();
        let mut s = 99u64;
        for k in 0..2000usize {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let i = (s >> 33) as usize % 1000;
            let j = (i + 1 + (s >> 13) as usize % 999) % 1000;
            let (a, peer) = (eps[i].clone(), eps[j].local_peer());
            set.spawn(async move {
                let req = format!("{k}");
                let r = a.request(&peer, Bytes::from(req.clone())).await.unwrap();
                assert_eq!(&r[..], &echoed(req.as_bytes())[..]);
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        let sessions: usize = eps.iter().map(Endpoint::sessions).sum();
        eprintln!(
            "1,000 UDP endpoints: {} descriptors for endpoints ({} open in total, limit from ulimit -n), {sessions} session ends",
            during - before,
            during
        );
        assert!(during - before <= 1000 + 16, "one descriptor per UDP endpoint");
        for e in &eps {
            e.shutdown().await;
        }
    }));
}

/// Child side of [`two_os_processes`]: serves echo requests, prints its port, exits when
/// stdin closes. Runs only when the parent sets the environment variable.
#[test]
#[ignore = "child process of two_os_processes"]
fn child_echo_server() {
    if std::env::var_os("THEMIS_ENDPOINT_CHILD").is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ep = tcp(42, EndpointConfig::default(), Arc::new(Echo::default())).await;
        println!("PORT {}", ep.local_addr().port());
        std::io::stdout().flush().unwrap();
        // Wait for the parent to close our stdin.
        tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        })
        .await
        .unwrap();
        ep.shutdown().await;
    });
}

#[test]
fn two_os_processes() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_echo_server",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("THEMIS_ENDPOINT_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = loop {
        let line = lines
            .next()
            .expect("child exited before printing its port")
            .unwrap();
        // libtest may print "test child_echo_server ... " before our line.
        if let Some((_, p)) = line.split_once("PORT ") {
            break p.trim().parse().unwrap();
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(within(180, "two processes", async {
        let a = tcp(1, EndpointConfig::default(), Arc::new(Echo::default())).await;
        let peer = PeerAddr {
            id: identity(42).node_id(&network()),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        };
        for i in 0..100u32 {
            let req = i.to_be_bytes();
            let r = a
                .request(&peer, Bytes::copy_from_slice(&req))
                .await
                .unwrap();
            assert_eq!(&r[..], &echoed(&req)[..]);
        }
        assert_eq!(a.metrics().handshakes_initiated_ok, 1);
        a.shutdown().await;
    }));
    drop(child.stdin.take());
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    assert!(status, "child did not exit cleanly");
}

fn wait_timeout(child: &mut std::process::Child, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.success();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
