//! TCP transport: pipelining, connection reuse, caps, reaping, abuse, shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::{collections::HashSet, sync::Arc, time::Duration};

use themis_channel::{TcpConfig, TcpTransport, Transport, TransportError};
use themis_testkit::channel::*;
use themis_testkit::sys::*;
use themis_testkit::{eventually, within};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

async fn tcp(cfg: TcpConfig) -> Arc<TcpTransport> {
    Arc::new(TcpTransport::bind(localhost(), cfg).await.unwrap())
}

/// 10,000 frames each way, both directions at once, over one connection, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_frames_pipelined_both_ways_over_one_connection() {
    within(
        180,
        "ten_thousand_frames_pipelined_both_ways_over_one_connection",
        async {
            let a = tcp(TcpConfig::default()).await;
            let b = tcp(TcpConfig::default()).await;
            // Open the connection first so the two bulk senders do not race to dial.
            a.send(b.local_addr(), frame(0, u32::MAX, 0)).await.unwrap();
            assert_eq!(recv_within(&*b, 5).await.0, a.local_addr());

            const N: u32 = 10_000;
            let pump = |from: Arc<TcpTransport>, to: Arc<TcpTransport>, tag: u8| {
                tokio::spawn(async move {
                    for i in 0..N {
                        from.send(to.local_addr(), frame(tag, i, (i % 300) as usize))
                            .await
                            .unwrap();
                    }
                })
            };
            let drain = |at: Arc<TcpTransport>, from: Arc<TcpTransport>, tag: u8| {
                tokio::spawn(async move {
                    for i in 0..N {
                        let (src, f) = recv_within(&*at, 20).await;
                        assert_eq!(src, from.local_addr());
                        assert_eq!(parse(&f), (tag, i), "frames arrive in order");
                        assert_eq!(f.len(), 7 + (i % 300) as usize);
                    }
                })
            };
            let (s1, s2) = (pump(a.clone(), b.clone(), 1), pump(b.clone(), a.clone(), 2));
            let (d1, d2) = (
                drain(b.clone(), a.clone(), 1),
                drain(a.clone(), b.clone(), 2),
            );
            for t in [s1, s2, d1, d2] {
                t.await.unwrap();
            }
            let (sa, sb) = (a.stats(), b.stats());
            println!("a: {sa:?}\nb: {sb:?}");
            assert_eq!(
                sa.connections_opened + sb.connections_opened,
                2,
                "one connection, two ends"
            );
            assert_eq!((sa.connections_dialed, sb.connections_accepted), (1, 1));
            assert_eq!(sb.connections_dialed, 0, "b reused a's connection");
            assert_eq!(sa.frames_sent, u64::from(N) + 1);
            assert_eq!(sb.frames_received, u64::from(N) + 1);
            assert_eq!(sa.frames_received, u64::from(N));
            assert_eq!((a.connected_peers(), b.connected_peers()), (1, 1));
        },
    )
    .await;
}

/// The acceptor answers over the connection the dialer opened, and both count one connection.
#[tokio::test]
async fn connection_reused_in_both_directions() {
    within(180, "connection_reused_in_both_directions", async {
        let a = tcp(TcpConfig::default()).await;
        let b = tcp(TcpConfig::default()).await;
        for round in 0..5 {
            a.send(b.local_addr(), frame(1, round, 10)).await.unwrap();
            let (from, f) = recv_within(&*b, 5).await;
            assert_eq!(parse(&f), (1, round));
            b.send(from, frame(2, round, 10)).await.unwrap();
            let (from, f) = recv_within(&*a, 5).await;
            assert_eq!(from, b.local_addr());
            assert_eq!(parse(&f), (2, round));
        }
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!((sa.connections_dialed, sa.connections_accepted), (1, 0));
        assert_eq!((sb.connections_dialed, sb.connections_accepted), (0, 1));
        assert_eq!((sa.connections_open, sb.connections_open), (1, 1));
    })
    .await;
}

/// Both sides dial at once: every frame still arrives, and the pair settles on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dial_settles_on_one_connection_without_loss() {
    within(
        180,
        "simultaneous_dial_settles_on_one_connection_without_loss",
        async {
            for _ in 0..10 {
                let a = tcp(TcpConfig::default()).await;
                let b = tcp(TcpConfig::default()).await;
                let (x, y) = (a.clone(), b.clone());
                let s1 = tokio::spawn(async move {
                    for i in 0..100 {
                        x.send(y.local_addr(), frame(1, i, 0)).await.unwrap();
                    }
                });
                let (x, y) = (b.clone(), a.clone());
                let s2 = tokio::spawn(async move {
                    for i in 0..100 {
                        x.send(y.local_addr(), frame(2, i, 0)).await.unwrap();
                    }
                });
                s1.await.unwrap();
                s2.await.unwrap();
                let mut got_a = HashSet::new();
                let mut got_b = HashSet::new();
                for _ in 0..100 {
                    got_b.insert(parse(&recv_within(&*b, 5).await.1));
                    got_a.insert(parse(&recv_within(&*a, 5).await.1));
                }
                assert_eq!(got_a.len(), 100);
                assert_eq!(got_b.len(), 100);
                eventually(5, "one connection left", || {
                    a.stats().connections_open == 1 && b.stats().connections_open == 1
                })
                .await;
                assert_eq!((a.connected_peers(), b.connected_peers()), (1, 1));
                let retired = a.stats().connections_retired + b.stats().connections_retired;
                let opened = a.stats().connections_dialed + b.stats().connections_dialed;
                // Each extra connection is retired by at least one side (by both when each sees the
                // other's hello while its own dial is still in its table).
                assert!(
                    (opened - 1..=2 * (opened - 1)).contains(&retired),
                    "{retired} retirements for {opened} dials"
                );
            }
        },
    )
    .await;
}

/// Above the cap the least recently used connection is closed; sending to it again reconnects.
#[tokio::test]
async fn lru_cap_reaps_and_reconnects() {
    within(180, "lru_cap_reaps_and_reconnects", async {
        // TIME_WAIT entries already there (other tests, other processes) whose ports the OS
        // may hand to this test's sockets again: only new ones count.
        let stale = time_wait_entries(&HashSet::new());
        let a = tcp(TcpConfig {
            max_connections: 2,
            ..TcpConfig::default()
        })
        .await;
        let peers = [
            tcp(TcpConfig::default()).await,
            tcp(TcpConfig::default()).await,
            tcp(TcpConfig::default()).await,
        ];
        for (i, p) in peers.iter().enumerate() {
            a.send(p.local_addr(), frame(0, i as u32, 0)).await.unwrap();
            assert_eq!(parse(&recv_within(&**p, 5).await.1), (0, i as u32));
            // A step of the clock, not a wait: the last-use times the LRU compares have
            // millisecond resolution.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(a.connected_peers(), 2);
        assert_eq!(a.stats().connections_reaped_lru, 1);
        // The first peer was the least recently used one: it sees its connection go away.
        eventually(5, "peer 0 sees the reaped connection close", || {
            peers[0].stats().connections_open == 0 && peers[0].connected_peers() == 0
        })
        .await;
        // Reconnect on demand.
        a.send(peers[0].local_addr(), frame(0, 9, 0)).await.unwrap();
        assert_eq!(parse(&recv_within(&*peers[0], 5).await.1), (0, 9));
        assert_eq!(a.stats().connections_dialed, 4);
        assert_eq!(a.stats().connections_reaped_lru, 2);
        assert_eq!(a.connected_peers(), 2);
        eventually(5, "a's sockets settle at the cap", || {
            a.stats().connections_open == 2
        })
        .await;
        let ports: HashSet<u16> = peers
            .iter()
            .map(|p| p.local_addr().port())
            .chain([a.local_addr().port()])
            .collect();
        assert_eq!(
            time_wait_entries(&ports).difference(&stale).count(),
            0,
            "reaping leaves no TIME_WAIT"
        );
    })
    .await;
}

/// Idle connections are closed on both sides and reopened on the next send.
#[tokio::test]
async fn idle_connections_are_reaped() {
    within(180, "idle_connections_are_reaped", async {
        // TIME_WAIT entries already there (other tests, other processes) whose ports the OS
        // may hand to this test's sockets again: only new ones count.
        let stale = time_wait_entries(&HashSet::new());
        let cfg = TcpConfig {
            idle_timeout: Some(Duration::from_millis(200)),
            ..TcpConfig::default()
        };
        let a = tcp(cfg.clone()).await;
        let b = tcp(cfg).await;
        a.send(b.local_addr(), frame(0, 1, 0)).await.unwrap();
        recv_within(&*b, 5).await;
        assert_eq!(a.connected_peers(), 1);
        eventually(5, "idle reaping", || {
            a.stats().connections_open == 0 && b.stats().connections_open == 0
        })
        .await;
        assert_eq!((a.connected_peers(), b.connected_peers()), (0, 0));
        assert!(a.stats().connections_reaped_idle + b.stats().connections_reaped_idle >= 1);
        a.send(b.local_addr(), frame(0, 2, 0)).await.unwrap();
        assert_eq!(parse(&recv_within(&*b, 5).await.1), (0, 2));
        let ports = HashSet::from([a.local_addr().port(), b.local_addr().port()]);
        assert_eq!(
            time_wait_entries(&ports).difference(&stale).count(),
            0,
            "idle reaping leaves no TIME_WAIT"
        );
    })
    .await;
}

/// A peer that went away and came back on the same address is reached again.
#[tokio::test]
async fn reconnects_after_the_peer_restarts() {
    within(180, "reconnects_after_the_peer_restarts", async {
        let a = tcp(TcpConfig {
            connect_timeout: Duration::from_millis(300),
            ..TcpConfig::default()
        })
        .await;
        let b = tcp(TcpConfig::default()).await;
        let addr = b.local_addr();
        a.send(addr, frame(0, 1, 0)).await.unwrap();
        recv_within(&*b, 5).await;
        b.close().await;
        drop(b);
        eventually(5, "a notices the closed connection", || {
            a.connected_peers() == 0
        })
        .await;
        // Nobody listens: the frame is queued, the dial is retried until the connect timeout, then
        // the frame is counted as dropped.
        a.send(addr, frame(0, 2, 0)).await.unwrap();
        eventually(5, "failed dial counted", || a.stats().connect_failed == 1).await;
        assert_eq!(a.stats().frames_dropped, 1);
        let b2 = TcpTransport::bind(addr, TcpConfig::default())
            .await
            .unwrap();
        a.send(addr, frame(0, 3, 0)).await.unwrap();
        assert_eq!(parse(&recv_within(&b2, 5).await.1), (0, 3));
    })
    .await;
}

/// Graceful shutdown sends everything queued before closing.
#[tokio::test]
async fn close_flushes_queued_frames() {
    within(180, "close_flushes_queued_frames", async {
        // TIME_WAIT entries already there (other tests, other processes) whose ports the OS
        // may hand to this test's sockets again: only new ones count.
        let stale = time_wait_entries(&HashSet::new());
        let a = tcp(TcpConfig::default()).await;
        let b = tcp(TcpConfig::default()).await;
        for i in 0..500 {
            a.send(b.local_addr(), frame(0, i, 1000)).await.unwrap();
        }
        a.close().await;
        assert_eq!(a.stats().connections_open, 0);
        for i in 0..500 {
            assert_eq!(parse(&recv_within(&*b, 5).await.1), (0, i));
        }
        assert!(matches!(
            a.send(b.local_addr(), frame(0, 0, 0)).await,
            Err(TransportError::Closed)
        ));
        assert!(matches!(a.recv().await, Err(TransportError::Closed)));
        eventually(5, "b sees the close", || b.stats().connections_open == 0).await;
        let ports = HashSet::from([a.local_addr().port(), b.local_addr().port()]);
        assert_eq!(
            time_wait_entries(&ports).difference(&stale).count(),
            0,
            "graceful close leaves no TIME_WAIT"
        );
    })
    .await;
}

/// A receiver that does not read pushes back on the sender: bounded queues, then an error.
#[tokio::test]
async fn backpressure_bounds_the_queues() {
    within(180, "backpressure_bounds_the_queues", async {
        let a = tcp(TcpConfig {
            queue_len: 4,
            send_timeout: Duration::from_millis(200),
            ..TcpConfig::default()
        })
        .await;
        let b = tcp(TcpConfig {
            recv_queue_len: 4,
            ..TcpConfig::default()
        })
        .await;
        let mut sent = 0u32;
        let err = loop {
            match a.send(b.local_addr(), frame(0, sent, 64 * 1024)).await {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(
                sent < 10_000,
                "no backpressure after {sent} frames of 64 KiB"
            );
        };
        assert!(matches!(err, TransportError::Backpressure { .. }), "{err}");
        println!("backpressure after {sent} frames of 64 KiB");
        // b still gets everything that was accepted, in order.
        for i in 0..sent {
            assert_eq!(parse(&recv_within(&*b, 5).await.1), (0, i));
        }
    })
    .await;
}

/// Oversize frames are refused locally with a clear error.
#[tokio::test]
async fn oversize_and_invalid_frames_refused_on_send() {
    within(180, "oversize_and_invalid_frames_refused_on_send", async {
        let a = tcp(TcpConfig {
            max_frame_len: 100,
            ..TcpConfig::default()
        })
        .await;
        let to = "127.0.0.1:9".parse().unwrap();
        let err = a.send(to, frame(0, 0, 94)).await.unwrap_err();
        assert!(matches!(
            err,
            TransportError::FrameTooLarge { len: 101, max: 100 }
        ));
        assert!(err.to_string().contains("101 bytes"));
        for bad in [&[][..], &[1], &[2, 0x20], &[1, 0x30]] {
            assert!(matches!(
                a.send(to, bytes::Bytes::copy_from_slice(bad)).await,
                Err(TransportError::InvalidFrame { .. })
            ));
        }
    })
    .await;
}

/// Hello frame as the dialer writes it (length prefix included).
fn hello_bytes(port: u16) -> Vec<u8> {
    let mut v = vec![0, 0, 0, 9, 0x01, 0x30, 4, 127, 0, 0, 1];
    v.extend_from_slice(&port.to_be_bytes());
    v
}

/// Waits until the server closes `s` (EOF or reset), skipping what it sent before (a welcome).
async fn closed_by_server(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("the server should close the connection");
        match r {
            Ok(0) | Err(_) => return,
            Ok(_) => assert_eq!(&buf[..6], &[0, 0, 0, 2, 0x01, 0x31], "only a welcome"),
        }
    }
}

/// Bad input from one peer closes that connection, is counted, and leaves other peers served.
#[tokio::test]
async fn abuse_closes_the_offender_and_keeps_serving_others() {
    within(
        180,
        "abuse_closes_the_offender_and_keeps_serving_others",
        async {
            let b = tcp(TcpConfig {
                frame_timeout: Duration::from_millis(300),
                hello_timeout: Duration::from_millis(300),
                max_frame_len: 1 << 20,
                ..TcpConfig::default()
            })
            .await;
            let good = tcp(TcpConfig::default()).await;
            let mut round = 0;
            let mut check_good = async || {
                round += 1;
                good.send(b.local_addr(), frame(7, round, 100))
                    .await
                    .unwrap();
                assert_eq!(parse(&recv_within(&*b, 5).await.1), (7, round));
                b.send(good.local_addr(), frame(8, round, 100))
                    .await
                    .unwrap();
                assert_eq!(parse(&recv_within(&*good, 5).await.1), (8, round));
            };
            check_good().await;
            let base = b.stats();

            // 1. Garbage instead of a hello (an HTTP request): its first 4 bytes, read as a length,
            //    claim ~1.2 GB, so it is refused as oversize before anything is allocated.
            let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            closed_by_server(&mut s).await;
            check_good().await;
            assert_eq!(b.stats().rejected_oversize, base.rejected_oversize + 1);
            assert_eq!(b.stats().rejected_hello, base.rejected_hello + 1);

            // 2. A well-framed hello with garbage inside.
            let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
            s.write_all(&[0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0x00])
                .await
                .unwrap();
            closed_by_server(&mut s).await;
            assert_eq!(b.stats().rejected_hello, base.rejected_hello + 2);

            // 3. A valid hello, then a frame with a wrong version byte.
            let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
            s.write_all(&hello_bytes(40001)).await.unwrap();
            s.write_all(&[0, 0, 0, 3, 0x02, 0x10, 0x00]).await.unwrap();
            closed_by_server(&mut s).await;
            check_good().await;
            assert_eq!(b.stats().rejected_garbage, base.rejected_garbage + 1);

            // 4. A length prefix claiming 4 GiB - 1.
            let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
            s.write_all(&hello_bytes(40002)).await.unwrap();
            s.write_all(&[0xff, 0xff, 0xff, 0xff, 0x01, 0x10])
                .await
                .unwrap();
            closed_by_server(&mut s).await;
            check_good().await;
            assert_eq!(b.stats().rejected_oversize, base.rejected_oversize + 2);

            // 5. Half a frame, then silence.
            let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
            s.write_all(&hello_bytes(40003)).await.unwrap();
            s.write_all(&[0, 0, 0x10, 0, 0x01, 0x10, 1, 2, 3])
                .await
                .unwrap();
            closed_by_server(&mut s).await;
            check_good().await;
            assert_eq!(b.stats().rejected_stalled, base.rejected_stalled + 1);

            // 6. Connect and say nothing: no hello within the hello timeout.
            let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
            closed_by_server(&mut s).await;
            assert_eq!(b.stats().rejected_hello, base.rejected_hello + 3);

            // 7. A hello claiming another host's address.
            let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
            let mut spoof = hello_bytes(40004);
            spoof[7] = 10;
            s.write_all(&spoof).await.unwrap();
            closed_by_server(&mut s).await;
            assert_eq!(b.stats().rejected_hello, base.rejected_hello + 4);

            check_good().await;
            eventually(5, "only the good connection left", || {
                b.stats().connections_open == 1
            })
            .await;
            assert_eq!(b.connected_peers(), 1);
            println!("b after abuse: {:?}", b.stats());
        },
    )
    .await;
}

/// Reads `s` until the server ends it and returns how: a reset must come first, never an end of
/// stream (a FIN). Nothing at all may arrive before it (no welcome for a refused hello).
async fn how_the_server_ends(s: &mut TcpStream) -> std::io::ErrorKind {
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the server should end the connection");
    match r {
        Ok(0) => panic!("the server sent FIN (end of stream) instead of resetting the connection"),
        Ok(n) => panic!(
            "the server sent {n} bytes to a connection it refuses: {:?}",
            &buf[..n]
        ),
        Err(e) => e.kind(),
    }
}

/// PROTOCOL.md §5.1: a connection whose hello is refused, or that sends none in time, is reset
/// (RST) and the acceptor never sends FIN: the dialer's read sees ECONNRESET, not end of stream.
#[tokio::test]
async fn a_refused_or_missing_hello_is_reset_without_fin() {
    within(
        60,
        "a_refused_or_missing_hello_is_reset_without_fin",
        async {
            let b = tcp(TcpConfig {
                hello_timeout: Duration::from_millis(300),
                frame_timeout: Duration::from_millis(300),
                ..TcpConfig::default()
            })
            .await;
            let base = b.stats();
            let mut spoof = hello_bytes(40004);
            spoof[7] = 10;
            let cases: [(&str, Vec<u8>); 4] = [
                (
                    "a well-framed hello with garbage inside",
                    vec![0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0],
                ),
                ("a hello claiming another host's address", spoof),
                (
                    "a length prefix beyond the frame limit",
                    b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                ),
                ("no hello within the hello timeout", Vec::new()),
            ];
            for (i, (what, bytes)) in cases.iter().enumerate() {
                let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
                if !bytes.is_empty() {
                    s.write_all(bytes).await.unwrap();
                }
                let kind = how_the_server_ends(&mut s).await;
                assert_eq!(kind, std::io::ErrorKind::ConnectionReset, "{what}");
                assert_eq!(
                    b.stats().rejected_hello,
                    base.rejected_hello + i as u64 + 1,
                    "{what}"
                );
            }
        },
    )
    .await;
}

/// Too many sockets at once: refused at accept, counted, and the transport keeps serving.
#[tokio::test]
async fn connection_limit_refuses_excess_sockets() {
    within(180, "connection_limit_refuses_excess_sockets", async {
        let b = tcp(TcpConfig {
            max_connections: 2,
            max_handshaking: 2,
            hello_timeout: Duration::from_secs(30),
            ..TcpConfig::default()
        })
        .await;
        let mut silent = Vec::new();
        for _ in 0..4 {
            silent.push(TcpStream::connect(b.local_addr()).await.unwrap());
        }
        eventually(5, "four sockets held", || b.stats().connections_open == 4).await;
        let mut extra = TcpStream::connect(b.local_addr()).await.unwrap();
        closed_by_server(&mut extra).await;
        assert_eq!(b.stats().connections_refused, 1);
        drop(silent);
        eventually(5, "silent sockets released", || {
            b.stats().connections_open == 0
        })
        .await;
        let a = tcp(TcpConfig::default()).await;
        a.send(b.local_addr(), frame(0, 1, 0)).await.unwrap();
        assert_eq!(parse(&recv_within(&*b, 5).await.1), (0, 1));
    })
    .await;
}

/// With a sink set, frames from other transports go to it, in order per connection, and not
/// to `recv`; frames to itself still come out of `recv`; `try_send` queues on an open
/// connection only.
#[tokio::test]
async fn a_sink_takes_frames_from_the_readers_and_try_send_needs_an_open_connection() {
    within(60, "sink", async {
        let a = tcp(TcpConfig::default()).await;
        let b = tcp(TcpConfig::default()).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        assert!(b.set_sink(Arc::new(move |from, f| {
            tx.send((from, f)).unwrap();
        })));
        assert!(!b.set_sink(Arc::new(|_, _| {})), "one sink only");
        // No connection yet: try_send gives the frame back.
        let f0 = frame(1, 0, 3);
        assert_eq!(a.try_send(b.local_addr(), f0.clone()), Err(f0.clone()));
        a.send(b.local_addr(), f0).await.unwrap();
        for i in 1..100u32 {
            let f = frame(1, i, 3);
            if let Err(f) = a.try_send(b.local_addr(), f) {
                a.send(b.local_addr(), f).await.unwrap();
            }
        }
        for i in 0..100u32 {
            let (from, f) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(from, a.local_addr());
            assert_eq!(parse(&f), (1, i), "in order");
        }
        // To itself: through `recv`.
        b.send(b.local_addr(), frame(2, 0, 0)).await.unwrap();
        let (from, f) = recv_within(&*b, 5).await;
        assert_eq!((from, parse(&f)), (b.local_addr(), (2, 0)));
        assert!(rx.try_recv().is_err());
        assert!(a.stats().frames_sent >= 100);
    })
    .await;
}

/// Reads one length-delimited frame from a raw socket.
async fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    body
}

type Reports = Arc<std::sync::Mutex<Vec<(std::net::SocketAddr, Vec<bytes::Bytes>)>>>;

/// A transport whose refused sink records what it is told.
async fn reporting() -> (Arc<TcpTransport>, Reports) {
    let a = tcp(TcpConfig::default()).await;
    let reports: Reports = Arc::default();
    let r = reports.clone();
    assert!(a.set_refused_sink(Arc::new(move |addr, dropped| {
        r.lock().unwrap().push((addr, dropped));
    })));
    (a, reports)
}

/// A raw peer that takes `a`'s connection and its first frame: the hello, our welcome, one
/// frame. Returns the socket (to end it as a crashed process would) and the listener.
async fn raw_peer_with_one_frame(
    a: &TcpTransport,
) -> (TcpStream, tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind(localhost()).await.unwrap();
    let p = listener.local_addr().unwrap();
    a.send(p, frame(0, 1, 0)).await.unwrap();
    let (mut s, _) = listener.accept().await.unwrap();
    let hello = read_frame(&mut s).await;
    assert_eq!(&hello[..2], &[0x01, 0x30]);
    s.write_all(&[0, 0, 0, 2, 0x01, 0x31]).await.unwrap();
    assert_eq!(parse(&read_frame(&mut s).await), (0, 1));
    (s, listener, p)
}

/// PROTOCOL.md §5.1, "A peer gone": a peer whose process ends (its socket closes with a FIN, no
/// goodbye) is reported to the refused sink at once, with nothing dropped (the frame it read
/// was written), and counted.
#[tokio::test]
async fn a_peer_that_ends_without_a_goodbye_is_reported_gone() {
    within(
        60,
        "a_peer_that_ends_without_a_goodbye_is_reported_gone",
        async {
            let (a, reports) = reporting().await;
            let (s, listener, p) = raw_peer_with_one_frame(&a).await;
            drop((s, listener));
            eventually(10, "the sink is told", || {
                !reports.lock().unwrap().is_empty()
            })
            .await;
            assert_eq!(reports.lock().unwrap().clone(), vec![(p, Vec::new())]);
            assert_eq!(a.stats().connections_lost, 1);
            assert_eq!(a.connected_peers(), 0);
        },
    )
    .await;
}

/// A frame sent after the peer's end of stream reached our socket, before our reader has run
/// (this test's runtime has one thread, and the send does not yield), is never written: it is
/// reported to the refused sink as dropped unsent, so the endpoint knows its command did not
/// reach the peer (a non-idempotent call may fail over).
#[tokio::test]
async fn a_frame_sent_after_the_peer_ended_is_reported_unsent() {
    within(
        60,
        "a_frame_sent_after_the_peer_ended_is_reported_unsent",
        async {
            let (a, reports) = reporting().await;
            let (s, listener, p) = raw_peer_with_one_frame(&a).await;
            // The peer's process ends: FIN on the connection, nothing listens any more. Loopback
            // delivers the FIN before `drop` returns.
            drop((s, listener));
            a.send(p, frame(0, 2, 0)).await.unwrap();
            eventually(10, "the frame is reported unsent", || {
                reports
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(to, dropped)| *to == p && dropped.iter().any(|f| parse(f) == (0, 2)))
            })
            .await;
            assert_eq!(a.stats().frames_sent, 1, "frame 2 never left");
        },
    )
    .await;
}
