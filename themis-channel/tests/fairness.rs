//! Fairness under floods from one host (issue 13 item 1; PROTOCOL.md §5.1 "Source prefix",
//! §5.2 "Per-source limits and cookies"), on real sockets: the attacker sends from 127.0.0.2,
//! the honest peers from 127.0.0.1 (Linux routes all of 127/8 to the loopback interface).
//!
//! Each test also runs the attack against the limits as they were before (global caps only)
//! and prints both figures; only the defended run is asserted on, and the undefended run is
//! checked to be an effective attack (so the harness cannot silently stop flooding).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use themis_channel::{
    EndpointConfig, EndpointMetrics, TcpConfig, TcpTransport, Transport, TransportStats,
};
use themis_handshake::{HandshakeConfig, Initiator};
use themis_testkit::channel::endpoint::*;
use themis_testkit::{eventually, identity, network, within};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const ATTACKER: [u8; 4] = [127, 0, 0, 2];

fn honest_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Whether this host routes 127.0.0.2 locally (Linux does; some systems only have 127.0.0.1).
async fn second_loopback_works() -> bool {
    TcpTransport::bind(SocketAddr::from((ATTACKER, 0)), TcpConfig::default())
        .await
        .is_ok()
}

/// This process's resident set, KiB (Linux `/proc/self/status`; `None` elsewhere).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct FloodFigures {
    /// The test process's resident set before the flood and once the flood holds its share of
    /// the pending table (attacker, victim and harness together: an upper bound on what the
    /// victim's tables grew by).
    rss_kib: (Option<u64>, Option<u64>),
    honest_ok: usize,
    honest: usize,
    slowest_ok: Duration,
    flood_sent: u64,
    victim: EndpointMetrics,
    recovery: Duration,
}

/// Floods `victim` from 127.0.0.2 with one valid message 1, replayed as fast as the connection
/// takes it (each copy is a new pending handshake), echoing every cookie the victim hands out.
/// Once the victim holds `attacker_holds` pending handshakes, `honest` fresh peers from
/// 127.0.0.1 each send one request (a handshake each). Then the flood stops and we measure how
/// long until the victim's pending table is back under `settled` entries.
async fn flood(
    victim_cfg: EndpointConfig,
    attacker_holds: u64,
    honest: usize,
    settled: u64,
) -> FloodFigures {
    let victim = tcp_at(honest_addr(), 1, victim_cfg, Arc::new(Echo::default())).await;
    let target = victim.local_peer();
    let attacker = Arc::new(
        TcpTransport::bind(SocketAddr::from((ATTACKER, 0)), TcpConfig::default())
            .await
            .unwrap(),
    );
    let (_, msg1) = Initiator::start(
        identity(999),
        network(),
        target.id,
        &HandshakeConfig::default(),
        Instant::now(),
    )
    .unwrap();
    let msg1 = Bytes::from(msg1);
    let rss_before = rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (attacker, stop, sent, msg1) =
            (attacker.clone(), stop.clone(), sent.clone(), msg1.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if attacker.send(target.addr, msg1.clone()).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    // Cookies come back: echo each with the message 1 it answers (the same one every time).
    let echoer = {
        let (attacker, stop, sent, msg1) =
            (attacker.clone(), stop.clone(), sent.clone(), msg1.clone());
        tokio::spawn(async move {
            while let Ok((from, frame)) = attacker.recv().await {
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                if frame.get(1) == Some(&0x3E) && frame.len() == 66 {
                    let mut echo = vec![0x01, 0x3F];
                    echo.extend_from_slice(&frame[34..66]);
                    echo.extend_from_slice(&msg1);
                    if attacker.send(from, Bytes::from(echo)).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    eventually(
        60,
        "the flood fills what it may of the pending table",
        || victim.metrics().pending_handshakes >= attacker_holds,
    )
    .await;
    let rss_flooded = rss_kib();

    // Honest peers, all at once, while the flood goes on.
    let mut peers = Vec::new();
    for i in 0..honest {
        peers.push(
            tcp_at(
                honest_addr(),
                100 + i as u64,
                EndpointConfig::default(),
                Arc::new(Echo::default()),
            )
            .await,
        );
    }
    let mut calls = Vec::new();
    for p in &peers {
        let p = p.clone();
        calls.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = p.request(&target, Bytes::from_static(b"hi")).await;
            (
                r.map(|b| b[..] == b"re:hi"[..]).unwrap_or(false),
                t.elapsed(),
            )
        }));
    }
    let (mut honest_ok, mut slowest_ok) = (0, Duration::ZERO);
    for c in calls {
        let (ok, took) = c.await.unwrap();
        if ok {
            honest_ok += 1;
            slowest_ok = slowest_ok.max(took);
        }
    }
    let victim_metrics = victim.metrics();

    stop.store(true, Ordering::Relaxed);
    flooder.await.unwrap();
    let stopped = Instant::now();
    eventually(60, "the pending table drains after the flood", || {
        victim.metrics().pending_handshakes < settled
    })
    .await;
    let recovery = stopped.elapsed();
    echoer.abort();
    for p in &peers {
        p.shutdown().await;
    }
    victim.shutdown().await;
    FloodFigures {
        rss_kib: (rss_before, rss_flooded),
        honest_ok,
        honest,
        slowest_ok,
        flood_sent: sent.load(Ordering::Relaxed),
        victim: victim_metrics,
        recovery,
    }
}

fn print_flood(what: &str, f: &FloodFigures) {
    let m = &f.victim;
    println!(
        "{what}: honest handshakes completed {}/{} (slowest {:?}); attacker frames sent {}; \
         victim pending {} from {} sources, rejected per source {}, table full {}, cookies sent \
         {}, echoes accepted {} / rejected {}; pending table under its threshold {:?} after the \
         flood stopped; test process RSS {:?} KiB before the flood, {:?} KiB with the flood's \
         pending handshakes held",
        f.honest_ok,
        f.honest,
        f.slowest_ok,
        f.flood_sent,
        m.pending_handshakes,
        m.pending_sources,
        m.handshakes_rejected_source,
        m.handshakes_rejected_busy,
        m.cookies_sent,
        m.cookie_echoes_accepted,
        m.cookie_echoes_rejected,
        f.recovery,
        f.rss_kib.0,
        f.rss_kib.1,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_valid_messages_1_from_one_host_leaves_other_hosts_handshaking() {
    if !second_loopback_works().await {
        println!("skipped: 127.0.0.2 is not a local address here");
        return;
    }
    within(240, "flood", async {
        let honest = 100;
        // Defended (the defaults): the attacker holds its 1,024 pending handshakes, every
        // message 1 beyond needs a cookie, and honest peers pay one round trip more.
        let cfg = EndpointConfig::default();
        let f = flood(cfg.clone(), cfg.pending_per_source as u64, honest, 512).await;
        print_flood("per-source caps and cookies", &f);
        assert!(
            f.honest_ok * 100 >= honest * 99,
            "only {}/{honest} honest handshakes completed under the flood",
            f.honest_ok
        );
        let m = &f.victim;
        assert!(
            m.handshakes_rejected_source > 0,
            "the flood was not capped: {m:?}"
        );
        assert!(
            m.cookies_sent > 0 && m.cookie_echoes_accepted > 0,
            "no cookies: {m:?}"
        );
        assert!(m.pending_handshakes <= cfg.pending_per_source as u64 + honest as u64);
        assert_eq!(
            m.handshakes_rejected_busy, 0,
            "the global table never filled"
        );

        // Undefended (global limits only, as before): the same flood fills the whole table.
        let mut before = EndpointConfig::default();
        before.pending_per_source = usize::MAX;
        before.cookie_threshold = usize::MAX;
        let honest = 20;
        let f = flood(
            before.clone(),
            before.handshake.pending_capacity as u64,
            honest,
            1,
        )
        .await;
        print_flood("global limits only (before)", &f);
        assert!(
            f.honest_ok * 2 <= honest,
            "the flood harness no longer floods: {}/{honest} completed without defences",
            f.honest_ok
        );
    })
    .await;
}

/// A connection from the attacker's address announcing `port` as its listening port; with
/// `hello` false, one that never sends its hello.
async fn attacker_conn(victim: SocketAddr, port: u16, hello: bool) -> Option<TcpStream> {
    let s = TcpSocket::new_v4().ok()?;
    s.bind(SocketAddr::from((ATTACKER, 0))).ok()?;
    let mut c = tokio::time::timeout(Duration::from_secs(2), s.connect(victim))
        .await
        .ok()?
        .ok()?;
    if hello {
        let p = port.to_be_bytes();
        let h = [0, 0, 0, 9, 0x01, 0x30, 4, 127, 0, 0, 2, p[0], p[1]];
        c.write_all(&h).await.ok()?;
    }
    Some(c)
}

/// Whether the connection is still open (not reset or closed by the victim).
fn alive(s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// One host (127.0.0.2) keeps 260 hello'd connections and 70 pre-hello sockets open at
/// `victim`, renewing them every 4 s; then 32 honest transports from 127.0.0.1 each send one
/// frame. Returns how many honest senders the victim heard from, and its counters.
async fn lockout(cfg: TcpConfig) -> (usize, TransportStats) {
    let victim = Arc::new(TcpTransport::bind(honest_addr(), cfg).await.unwrap());
    let heard = Arc::new(Mutex::new(HashSet::new()));
    let reader = {
        let (victim, heard) = (victim.clone(), heard.clone());
        tokio::spawn(async move {
            while let Ok((from, _)) = victim.recv().await {
                heard.lock().unwrap().insert(from);
            }
        })
    };
    let to = victim.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let attack = {
        let (stop, ready) = (stop.clone(), ready.clone());
        tokio::spawn(async move {
            let (mut hello, mut pre) = (Vec::new(), Vec::new());
            let mut port = 20_000u16;
            while !stop.load(Ordering::Relaxed) {
                hello.retain(alive);
                while hello.len() < 260 {
                    port = port.wrapping_add(1).max(1);
                    match attacker_conn(to, port, true).await {
                        Some(c) => hello.push(c),
                        None => break,
                    }
                }
                pre.clear();
                for _ in 0..70 {
                    if let Some(c) = attacker_conn(to, 0, false).await {
                        pre.push(c);
                    }
                }
                // Give the victim time to read the hellos (and refuse what it refuses).
                tokio::time::sleep(Duration::from_millis(200)).await;
                ready.store(true, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(3800)).await;
            }
        })
    };
    eventually(60, "the attacker's sockets are in place", || {
        ready.load(Ordering::Relaxed)
    })
    .await;

    let mut honest = Vec::new();
    for _ in 0..32 {
        let t = TcpTransport::bind(honest_addr(), TcpConfig::default())
            .await
            .unwrap();
        t.send(to, Bytes::from_static(&[0x01, 0x10, 0xAA]))
            .await
            .unwrap();
        honest.push(t);
    }
    let wanted: HashSet<SocketAddr> = honest.iter().map(|t| t.local_addr()).collect();
    // Each dial retries for its connect_timeout (5 s); wait a little longer than that.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < deadline
        && heard.lock().unwrap().intersection(&wanted).count() < wanted.len()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got_in = heard.lock().unwrap().intersection(&wanted).count();
    let stats = victim.stats();
    stop.store(true, Ordering::Relaxed);
    attack.abort();
    for t in &honest {
        t.close().await;
    }
    victim.close().await;
    reader.abort();
    (got_in, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_holding_hundreds_of_sockets_does_not_lock_others_out() {
    if !second_loopback_works().await {
        println!("skipped: 127.0.0.2 is not a local address here");
        return;
    }
    within(120, "lockout", async {
        let (got_in, s) = lockout(TcpConfig::default()).await;
        println!(
            "per-source caps: {got_in}/32 honest connections got in; victim refused {} at the \
             global limit, {} at the per-source limits; sockets open {}",
            s.connections_refused, s.connections_refused_source, s.connections_open
        );
        assert_eq!(got_in, 32, "honest connections locked out: {s:?}");
        assert!(
            s.connections_refused_source > 0,
            "the attacker was never capped: {s:?}"
        );

        let before = TcpConfig {
            max_connections_per_source: usize::MAX,
            max_handshaking_per_source: usize::MAX,
            ..TcpConfig::default()
        };
        let (got_in, s) = lockout(before).await;
        println!(
            "global limits only (before): {got_in}/32 honest connections got in; victim refused \
             {} at the global limit",
            s.connections_refused
        );
        assert!(
            s.connections_refused > 0,
            "the lockout harness no longer fills the socket limit"
        );
    })
    .await;
}

/// Over UDP, where source addresses can be spoofed, a flood that never echoes its cookies (as a
/// spoofing flooder cannot: the replies go to the spoofed address) leaves at most
/// `cookie_threshold` pending handshakes behind, and honest peers still complete theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_flood_that_cannot_echo_cookies_stops_at_the_threshold() {
    if !second_loopback_works().await {
        println!("skipped: 127.0.0.2 is not a local address here");
        return;
    }
    within(120, "udp flood", async {
        let cfg = EndpointConfig::default();
        let victim = udp(1, cfg.clone(), Arc::new(Echo::default())).await;
        let target = victim.local_peer();
        let raw = tokio::net::UdpSocket::bind(SocketAddr::from((ATTACKER, 0)))
            .await
            .unwrap();
        // Fresh identities and nonces: 2,000 distinct valid messages 1.
        let mut flood = Vec::new();
        for i in 0..2000u64 {
            let (_, m) = Initiator::start(
                identity(10_000 + i % 50),
                network(),
                target.id,
                &HandshakeConfig::default(),
                Instant::now(),
            )
            .unwrap();
            flood.push(m);
        }
        for (i, m) in flood.iter().enumerate() {
            if i % 20 == 0 {
                // Pace a little so the kernel's socket buffer does not drop most of the flood.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            raw.send_to(m, target.addr).await.unwrap();
        }
        eventually(30, "the flood is processed", || {
            let m = victim.metrics();
            m.cookies_sent + m.pending_handshakes >= 1000
        })
        .await;
        let mut peers = Vec::new();
        for i in 0..20 {
            peers.push(
                udp(
                    200 + i,
                    EndpointConfig::default(),
                    Arc::new(Echo::default()),
                )
                .await,
            );
        }
        let mut ok = 0;
        for p in &peers {
            if p.request(&target, Bytes::from_static(b"hi")).await.is_ok() {
                ok += 1;
            }
        }
        let m = victim.metrics();
        println!(
            "udp flood without echoes: honest {ok}/20; victim pending {}, cookies sent {}, \
             echoes accepted {}",
            m.pending_handshakes, m.cookies_sent, m.cookie_echoes_accepted
        );
        assert_eq!(ok, 20, "{m:?}");
        // The flood's state stopped at the threshold; the rest got stateless cookies.
        assert!(
            m.pending_handshakes <= cfg.cookie_threshold as u64 + 20,
            "{m:?}"
        );
        assert!(m.cookies_sent >= 400, "{m:?}");
        assert_eq!(
            m.cookie_echoes_accepted, 20,
            "only the honest peers echoed: {m:?}"
        );
    })
    .await;
}
