//! The endpoint over loopback TCP: requests, handshake sharing, identity and mode checks,
//! restarts, timeouts, graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use themis_channel::{EndpointConfig, Error, PeerAddr};
use themis_testkit::channel::endpoint::*;
use themis_testkit::channel::localhost;
use themis_testkit::{eventually, identity, network, within};

#[tokio::test]
async fn secure_request_gets_its_response() {
    within(180, "secure_request_gets_its_response", async {
        let b = tcp(2, EndpointConfig::default(), Arc::new(Echo::default())).await;
        let a = tcp(1, EndpointConfig::default(), Arc::new(Echo::default())).await;
        let r = a
            .request(&b.local_peer(), Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(&r[..], b"re:hello");
        // And the other way round, over the same session.
        let r = b
            .request(&a.local_peer(), Bytes::from_static(b"back"))
            .await
            .unwrap();
        assert_eq!(&r[..], b"re:back");
        let (ma, mb) = (a.metrics(), b.metrics());
        assert_eq!(ma.handshakes_initiated_ok, 1);
        assert_eq!(mb.handshakes_accepted_ok, 1);
        assert_eq!(mb.handshakes_initiated_ok, 0, "B reused A's session");
        assert_eq!((ma.requests_ok, mb.requests_ok), (1, 1));
        assert_eq!((a.sessions(), b.sessions()), (1, 1));
        assert!(ma.bytes_out > 0 && ma.bytes_in > 0);
    })
    .await;
}

#[tokio::test]
async fn concurrent_first_requests_share_one_handshake() {
    within(
        180,
        "concurrent_first_requests_share_one_handshake",
        async {
            let b = tcp(2, EndpointConfig::default(), Arc::new(Echo::default())).await;
            let a = tcp(1, EndpointConfig::default(), Arc::new(Echo::default())).await;
            let mut set = tokio::task::JoinSet::new();
            for i in 0..20u32 {
                let (a, peer) = (a.clone(), b.local_peer());
                set.spawn(async move {
                    let req = i.to_be_bytes();
                    let r = a
                        .request(&peer, Bytes::copy_from_slice(&req))
                        .await
                        .unwrap();
                    assert_eq!(&r[..], &echoed(&req)[..]);
                });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap();
            }
            assert_eq!(a.metrics().handshakes_initiated_ok, 1);
            assert_eq!(b.metrics().handshakes_accepted_ok, 1);
        },
    )
    .await;
}

#[tokio::test]
async fn insecure_mode_same_api() {
    within(180, "insecure_mode_same_api", async {
        let b = tcp(2, EndpointConfig::insecure(), Arc::new(Echo::default())).await;
        let a = tcp(1, EndpointConfig::insecure(), Arc::new(Echo::default())).await;
        for i in 0..10u8 {
            let r = a
                .request(&b.local_peer(), Bytes::from(vec![i]))
                .await
                .unwrap();
            assert_eq!(&r[..], &echoed(&[i])[..]);
        }
        assert_eq!(a.metrics().handshakes_initiated_ok, 0);
        assert_eq!(a.metrics().requests_ok, 10);
    })
    .await;
}

#[tokio::test]
async fn wrong_key_at_address_is_an_identity_mismatch() {
    within(180, "wrong_key_at_address_is_an_identity_mismatch", async {
        let b = tcp(2, EndpointConfig::default(), Arc::new(Echo::default())).await;
        let a = tcp(1, quick(), Arc::new(Echo::default())).await;
        let expected = identity(3).node_id(&network());
        let peer = PeerAddr {
            id: expected,
            addr: b.local_addr(),
        };
        match a.request(&peer, Bytes::from_static(b"x")).await {
            Err(Error::IdentityMismatch {
                expected: e, found, ..
            }) => {
                assert_eq!(e, expected);
                assert_eq!(found, b.local_id());
            }
            other => panic!("expected an identity mismatch, got {other:?}"),
        }
        assert_eq!(a.sessions(), 0, "no session created");
        assert_eq!(b.sessions(), 0);
        assert_eq!(a.metrics().handshakes_failed_identity, 1);
        assert_eq!(b.metrics().handshakes_rejected_invalid, 1);
    })
    .await;
}

#[tokio::test]
async fn mode_mismatch_is_reported_both_ways() {
    within(180, "mode_mismatch_is_reported_both_ways", async {
        let secure = tcp(2, quick(), Arc::new(Echo::default())).await;
        let mut icfg = quick();
        icfg.mode = themis_channel::Mode::Insecure;
        let insecure = tcp(1, icfg, Arc::new(Echo::default())).await;
        let e = secure
            .request(&insecure.local_peer(), Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::ModeMismatch { .. }), "{e:?}");
        let e = insecure
            .request(&secure.local_peer(), Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::ModeMismatch { .. }), "{e:?}");
        assert!(e.to_string().contains("other mode"));
        assert_eq!(secure.metrics().handshakes_failed_mode, 1);
        assert!(secure.metrics().frames_rejected_mode >= 1);
        assert!(insecure.metrics().frames_rejected_mode >= 1);
        assert_eq!(secure.sessions(), 0);
    })
    .await;
}

#[tokio::test]
async fn identify_then_authenticated_request() {
    within(180, "identify_then_authenticated_request", async {
        let b = tcp(2, EndpointConfig::default(), Arc::new(Echo::default())).await;
        let a = tcp(1, EndpointConfig::default(), Arc::new(Echo::default())).await;
        let (id, pk) = a.identify(b.local_addr()).await.unwrap();
        assert_eq!(id, b.local_id());
        assert_eq!(pk, identity(2).public());
        let peer = PeerAddr {
            id,
            addr: b.local_addr(),
        };
        assert_eq!(
            &a.request(&peer, Bytes::from_static(b"q")).await.unwrap()[..],
            b"re:q"
        );
    })
    .await;
}

#[tokio::test]
async fn unreachable_peer_times_out() {
    within(180, "unreachable_peer_times_out", async {
        let a = tcp(1, quick(), Arc::new(Echo::default())).await;
        // A bound but silent socket.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        drop(silent);
        let peer = PeerAddr {
            id: identity(2).node_id(&network()),
            addr: listener.local_addr().unwrap(),
        };
        let e = a
            .request(&peer, Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::HandshakeTimeout { .. }), "{e:?}");
        assert_eq!(a.metrics().requests_failed, 1);
        assert_eq!(a.metrics().in_flight, 0);
    })
    .await;
}

#[tokio::test]
async fn handler_that_never_answers_times_out_and_others_are_served() {
    within(
        180,
        "handler_that_never_answers_times_out_and_others_are_served",
        async {
            let b = tcp(
                2,
                EndpointConfig::default(),
                Arc::new(Slow(Duration::from_secs(3600))),
            )
            .await;
            let c = tcp(3, EndpointConfig::default(), Arc::new(Echo::default())).await;
            let a = tcp(1, quick(), Arc::new(Echo::default())).await;
            let e = a
                .request(&b.local_peer(), Bytes::from_static(b"x"))
                .await
                .unwrap_err();
            assert!(matches!(e, Error::RequestTimeout { .. }), "{e:?}");
            assert_eq!(a.metrics().requests_timed_out, 1);
            assert_eq!(a.metrics().in_flight, 0);
            let r = a
                .request(&c.local_peer(), Bytes::from_static(b"y"))
                .await
                .unwrap();
            assert_eq!(&r[..], b"re:y");
        },
    )
    .await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    within(180, "shutdown_finishes_in_flight_requests", async {
        let b = tcp(
            2,
            EndpointConfig::default(),
            Arc::new(Slow(Duration::from_millis(300))),
        )
        .await;
        let a = tcp(1, EndpointConfig::default(), Arc::new(Echo::default())).await;
        // Warm up the session so the request is in flight when shutdown starts.
        a.request(&b.local_peer(), Bytes::from_static(b"w"))
            .await
            .unwrap();
        let (a2, peer) = (a.clone(), b.local_peer());
        let pending =
            tokio::spawn(async move { a2.request(&peer, Bytes::from_static(b"p")).await });
        eventually(5, "the request runs in B's handler", || {
            b.metrics().handlers_running == 1
        })
        .await;
        let (a3, b3) = (a.clone(), b.clone());
        let shut = tokio::spawn(async move {
            tokio::join!(a3.shutdown(), b3.shutdown());
        });
        let r = pending.await.unwrap().unwrap();
        assert_eq!(&r[..], b"re:p");
        shut.await.unwrap();
        let e = a
            .request(&b.local_peer(), Bytes::from_static(b"late"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::ShuttingDown), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn restarted_peer_is_reached_again_and_a_new_key_is_refused() {
    within(
        180,
        "restarted_peer_is_reached_again_and_a_new_key_is_refused",
        async {
            let b = tcp(2, EndpointConfig::default(), Arc::new(Echo::default())).await;
            let addr = b.local_addr();
            let a = tcp(1, quick(), Arc::new(Echo::default())).await;
            let peer = b.local_peer();
            a.request(&peer, Bytes::from_static(b"1")).await.unwrap();
            b.shutdown().await;
            drop(b);
            // Same key, same address: a new handshake replaces the lost session. The first request
            // may fail with SessionLost (the restarted node told us it lost the session).
            let b2 = tcp_at(
                addr,
                2,
                EndpointConfig::default(),
                Arc::new(Echo::default()),
            )
            .await;
            let mut ok = false;
            for _ in 0..5 {
                match a.request(&peer, Bytes::from_static(b"2")).await {
                    Ok(r) => {
                        assert_eq!(&r[..], b"re:2");
                        ok = true;
                        break;
                    }
                    Err(Error::SessionLost { .. } | Error::RequestTimeout { .. }) => {}
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            assert!(ok, "restarted peer never reached");
            assert_eq!(a.metrics().handshakes_initiated_ok, 2);
            assert_eq!(b2.metrics().handshakes_accepted_ok, 1);
            b2.shutdown().await;
            drop(b2);
            // A different key on the same address.
            let _b3 = tcp_at(
                addr,
                3,
                EndpointConfig::default(),
                Arc::new(Echo::default()),
            )
            .await;
            let mut mismatch = false;
            for _ in 0..5 {
                match a.request(&peer, Bytes::from_static(b"3")).await {
                    Err(Error::IdentityMismatch { found, .. }) => {
                        assert_eq!(found, identity(3).node_id(&network()));
                        mismatch = true;
                        break;
                    }
                    Err(Error::SessionLost { .. } | Error::RequestTimeout { .. }) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(mismatch);
        },
    )
    .await;
}

#[tokio::test]
async fn session_outlives_a_reaped_connection() {
    within(180, "session_outlives_a_reaped_connection", async {
        let tcp_cfg = themis_channel::TcpConfig {
            idle_timeout: Some(Duration::from_millis(100)),
            ..themis_channel::TcpConfig::default()
        };
        let mk = |seed| {
            themis_channel::Endpoint::bind_tcp(
                localhost(),
                tcp_cfg.clone(),
                identity(seed),
                network(),
                EndpointConfig::default(),
                Arc::new(Echo::default()),
            )
        };
        let b = mk(2).await.unwrap();
        let a = mk(1).await.unwrap();
        a.request(&b.local_peer(), Bytes::from_static(b"1"))
            .await
            .unwrap();
        eventually(5, "the idle connection is reaped", || {
            let reaped =
                |ep: &themis_channel::Endpoint| ep.metrics().transport.connections_reaped_idle;
            reaped(&a) + reaped(&b) >= 1
        })
        .await;
        let t = a.metrics().transport;
        assert!(
            t.connections_reaped_idle + b.metrics().transport.connections_reaped_idle >= 1,
            "{t:?}"
        );
        let r = a
            .request(&b.local_peer(), Bytes::from_static(b"2"))
            .await
            .unwrap();
        assert_eq!(&r[..], b"re:2");
        assert_eq!(a.metrics().handshakes_initiated_ok, 1, "no new handshake");
        assert!(a.metrics().transport.connections_opened >= 2, "reconnected");
    })
    .await;
}

/// Tracks the most handlers running at once.
#[derive(Default)]
struct Gate {
    now: std::sync::atomic::AtomicUsize,
    max: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl themis_channel::Handler for Gate {
    async fn handle(&self, _from: PeerAddr, request: Bytes) -> Bytes {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(n, SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.now.fetch_sub(1, SeqCst);
        request
    }
}

#[tokio::test]
async fn in_flight_per_peer_is_bounded_by_backpressure() {
    within(
        180,
        "in_flight_per_peer_is_bounded_by_backpressure",
        async {
            let gate = Arc::new(Gate::default());
            let b = tcp(2, EndpointConfig::default(), gate.clone()).await;
            let mut cfg = EndpointConfig::default();
            cfg.max_in_flight_per_peer = 3;
            let a = tcp(1, cfg, Arc::new(Echo::default())).await;
            let mut set = tokio::task::JoinSet::new();
            for i in 0..30u8 {
                let (a, peer) = (a.clone(), b.local_peer());
                set.spawn(async move { a.request(&peer, Bytes::from(vec![i])).await.unwrap() });
            }
            let mut n = 0;
            while let Some(r) = set.join_next().await {
                r.unwrap();
                n += 1;
            }
            assert_eq!(n, 30);
            let max = gate.max.load(std::sync::atomic::Ordering::SeqCst);
            assert!(
                (1..=3).contains(&max),
                "at most 3 in flight to the peer, saw {max}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_closure_is_a_handler_and_sees_the_authenticated_peer() {
    within(
        180,
        "a_closure_is_a_handler_and_sees_the_authenticated_peer",
        async {
            let b = tcp(
                2,
                EndpointConfig::default(),
                Arc::new(|from: PeerAddr, req: Bytes| async move {
                    Bytes::from([from.id.as_bytes().as_slice(), &req[..]].concat())
                }),
            )
            .await;
            let a = tcp(1, EndpointConfig::default(), Arc::new(Echo::default())).await;
            let r = a
                .request(&b.local_peer(), Bytes::from_static(b"!"))
                .await
                .unwrap();
            assert_eq!(&r[..32], a.local_id().as_bytes());
            assert_eq!(&r[32..], b"!");
        },
    )
    .await;
}

#[tokio::test]
async fn insecure_peer_restarting_at_seq_one_gets_a_fresh_channel() {
    within(
        180,
        "insecure_peer_restarting_at_seq_one_gets_a_fresh_channel",
        async {
            let b = tcp(2, EndpointConfig::insecure(), Arc::new(Echo::default())).await;
            let a1 = tcp(1, EndpointConfig::insecure(), Arc::new(Echo::default())).await;
            for i in 0..3u8 {
                a1.request(&b.local_peer(), Bytes::from(vec![i]))
                    .await
                    .unwrap();
            }
            a1.shutdown().await;
            drop(a1);
            // Same key, new process (new port): its sequence numbers start at 1 again.
            let a2 = tcp(1, EndpointConfig::insecure(), Arc::new(Echo::default())).await;
            for i in 0..3u8 {
                let r = a2
                    .request(&b.local_peer(), Bytes::from(vec![i]))
                    .await
                    .unwrap();
                assert_eq!(&r[..], &echoed(&[i])[..]);
            }
            assert_eq!(b.sessions(), 1);
        },
    )
    .await;
}

#[tokio::test]
async fn both_peers_initiating_at_once_keep_working() {
    within(180, "both_peers_initiating_at_once_keep_working", async {
        let a = tcp(1, EndpointConfig::default(), Arc::new(Echo::default())).await;
        let b = tcp(2, EndpointConfig::default(), Arc::new(Echo::default())).await;
        let (pa, pb) = (a.local_peer(), b.local_peer());
        for round in 0..5u8 {
            let (ra, rb) = tokio::join!(
                a.request(&pb, Bytes::from(vec![round, 1])),
                b.request(&pa, Bytes::from(vec![round, 2]))
            );
            assert_eq!(&ra.unwrap()[..], &echoed(&[round, 1])[..]);
            assert_eq!(&rb.unwrap()[..], &echoed(&[round, 2])[..]);
        }
        let (ma, mb) = (a.metrics(), b.metrics());
        // Each side may have initiated once; never more, and no request failed.
        assert!(ma.handshakes_initiated_ok <= 1 && mb.handshakes_initiated_ok <= 1);
        assert_eq!(ma.requests_failed + mb.requests_failed, 0);
        assert_eq!((a.sessions(), b.sessions()), (1, 1));
    })
    .await;
}

#[tokio::test]
async fn a_busy_peer_refuses_at_once_over_tcp() {
    for insecure in [false, true] {
        let base = || {
            if insecure {
                EndpointConfig::insecure()
            } else {
                EndpointConfig::default()
            }
        };
        let mut cfg_b = base();
        cfg_b.max_handlers = 1;
        let b = tcp(2, cfg_b, Arc::new(Slow(Duration::from_secs(3600)))).await;
        let mut cfg_a = base();
        // Far beyond the bound below: only a busy answer can end the second request in time.
        cfg_a.request_timeout = Duration::from_secs(60);
        let a = tcp(1, cfg_a, Arc::new(Echo::default())).await;
        let (a2, peer) = (a.clone(), b.local_peer());
        let first = tokio::spawn(async move { a2.request(&peer, Bytes::from_static(b"x")).await });
        eventually(10, "the first request occupies B's only handler", || {
            b.metrics().handlers_running >= 1
        })
        .await;
        let e = tokio::time::timeout(
            Duration::from_secs(10),
            a.request(&b.local_peer(), Bytes::from_static(b"y")),
        )
        .await
        .expect("a busy answer, not a wait for the request timeout")
        .unwrap_err();
        assert!(
            matches!(e, Error::PeerBusy { peer, .. } if peer == b.local_id()),
            "{e:?}"
        );
        assert_eq!(a.metrics().requests_refused_busy, 1);
        assert_eq!(
            a.metrics().in_flight,
            1,
            "only the first request is still waiting"
        );
        assert_eq!(b.metrics().commands_dropped_busy, 1);
        assert_eq!(b.metrics().commands_received, 1);
        first.abort();
    }
}

/// A port with nothing listening: bound, then closed.
fn closed_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn patient() -> EndpointConfig {
    let mut c = EndpointConfig::default();
    c.request_timeout = Duration::from_secs(120);
    c.handshake_timeout = Duration::from_secs(120);
    c
}

#[tokio::test]
async fn a_refused_connection_fails_the_request_at_once_unsent() {
    // Timeouts of 120 s: the request can only end within the 60 s below because the
    // transport reported the refusal.
    within(
        60,
        "a_refused_connection_fails_the_request_at_once_unsent",
        async {
            let a = tcp(1, patient(), Arc::new(Echo::default())).await;
            let peer = PeerAddr {
                id: identity(9).node_id(&network()),
                addr: closed_port(),
            };
            for _ in 0..3 {
                match a.request(&peer, Bytes::from_static(b"x")).await {
                    Err(Error::PeerUnreachable { addr, .. }) => assert_eq!(addr, peer.addr),
                    other => panic!("expected PeerUnreachable, got {other:?}"),
                }
            }
            assert_eq!(a.metrics().requests_timed_out, 0);
        },
    )
    .await;
}

#[tokio::test]
async fn a_peer_gone_away_fails_the_next_request_at_once() {
    within(
        60,
        "a_peer_gone_away_fails_the_next_request_at_once",
        async {
            let b = tcp(2, patient(), Arc::new(Echo::default())).await;
            let a = tcp(1, patient(), Arc::new(Echo::default())).await;
            let peer = b.local_peer();
            a.request(&peer, Bytes::from_static(b"1")).await.unwrap();
            b.shutdown().await;
            drop(b);
            // The session is still held: the command is sealed on it and queued for a new
            // connection, which is refused. The command never left: PeerUnreachable, not
            // ConnectionLost. Then the session is gone, and the next request is refused unsent.
            match a.request(&peer, Bytes::from_static(b"2")).await {
                Err(Error::PeerUnreachable { .. }) => {}
                other => panic!("expected PeerUnreachable, got {other:?}"),
            }
            match a.request(&peer, Bytes::from_static(b"3")).await {
                Err(Error::PeerUnreachable { .. }) => {}
                other => panic!("expected PeerUnreachable, got {other:?}"),
            }
            assert_eq!(a.sessions(), 0);
        },
    )
    .await;
}

/// Echoes, except `stall`, which it never answers.
#[derive(Debug, Default)]
struct StallOnCue;

#[async_trait::async_trait]
impl themis_channel::Handler for StallOnCue {
    async fn handle(&self, from: PeerAddr, request: Bytes) -> Bytes {
        if &request[..] == b"stall" {
            std::future::pending::<()>().await;
        }
        Echo::default().handle(from, request).await
    }
}

/// A peer whose process ends while our command waits on it (its runtime is dropped: the system
/// closes its sockets, with no goodbye): the request fails at once with `ConnectionLost` (the
/// command was written, the peer may have run it), not at the 120 s timeout; then the session
/// is gone and the next request is refused unsent.
#[test]
fn a_peer_whose_process_ends_fails_the_waiting_request_at_once() {
    let rt_b = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let b = rt_b.block_on(tcp(2, patient(), Arc::new(StallOnCue)));
    let peer = b.local_peer();
    let rt_a = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt_a.block_on(within(
        60,
        "a_peer_whose_process_ends_fails_the_waiting_request_at_once",
        async move {
            let a = tcp(1, patient(), Arc::new(Echo::default())).await;
            a.request(&peer, Bytes::from_static(b"1")).await.unwrap();
            let waiting = tokio::spawn({
                let (a, peer) = (a.clone(), peer);
                async move { a.request(&peer, Bytes::from_static(b"stall")).await }
            });
            eventually(10, "the command reached the peer", || {
                b.metrics().commands_received == 2
            })
            .await;
            // Every task of the peer's runtime is dropped with its sockets: as a process ends.
            rt_b.shutdown_background();
            match waiting.await.unwrap() {
                Err(Error::ConnectionLost { addr, .. }) => assert_eq!(addr, peer.addr),
                other => panic!("expected ConnectionLost, got {other:?}"),
            }
            assert_eq!(a.metrics().transport.connections_lost, 1);
            match a.request(&peer, Bytes::from_static(b"3")).await {
                Err(Error::PeerUnreachable { .. }) => {}
                other => panic!("expected PeerUnreachable, got {other:?}"),
            }
            assert_eq!(a.metrics().requests_timed_out, 0);
            drop(b);
        },
    ));
}
