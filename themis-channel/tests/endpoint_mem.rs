//! 200 endpoints on the seeded in-memory network: same seed, same outcome (and same trace).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use themis_channel::EndpointConfig;
use themis_testkit::channel::endpoint::*;
use themis_testkit::{
    LinkConfig, MemConfig, MemNetwork, Rng, identity, network, paused_runtime, within,
};

/// Runs the simulation; returns each request's outcome and the network's trace.
fn simulate(seed: u64, nodes: usize, requests: usize) -> (Vec<String>, Vec<(u64, usize, bool)>) {
    paused_runtime().block_on(async {
        let net = MemNetwork::new(MemConfig {
            seed,
            default_link: LinkConfig {
                latency: Duration::from_millis(2),
                jitter: Duration::from_millis(3),
                loss: 0.05,
                duplicate: 0.02,
            },
            trace_capacity: 1_000_000,
            ..MemConfig::default()
        });
        let eps: Vec<_> = (0..nodes)
            .map(|i| {
                let mut cfg = EndpointConfig::default();
                cfg.rng_seed = Some(seed * 1000 + i as u64);
                cfg.initial_rto = Duration::from_millis(50);
                cfg.request_timeout = Duration::from_secs(2);
                cfg.handshake_timeout = Duration::from_secs(2);
                mem(
                    net.bind(),
                    10_000 + i as u64,
                    cfg,
                    Arc::new(Echo::default()),
                )
            })
            .collect();
        let mut rng = Rng::with_seed(seed);
        let mut set = tokio::task::JoinSet::new();
        for k in 0..requests {
            let i = rng.usize(..nodes);
            let mut j = rng.usize(..nodes);
            if j == i {
                j = (j + 1) % nodes;
            }
            let (a, peer) = (eps[i].clone(), eps[j].local_peer());
            let delay = Duration::from_millis(rng.u64(..500));
            set.spawn(async move {
                tokio::time::sleep(delay).await;
                let req = format!("{k}:{i}->{j}");
                let r = a.request(&peer, Bytes::from(req.clone())).await;
                let outcome = match r {
                    Ok(resp) => {
                        assert_eq!(&resp[..], &echoed(req.as_bytes())[..]);
                        "ok".to_string()
                    }
                    Err(e) => format!("{e:?}"),
                };
                (k, format!("{req} {outcome}"))
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out.sort();
        let trace = net
            .trace()
            .iter()
            .map(|e| (e.fingerprint, e.len, e.delivered))
            .collect();
        (out.into_iter().map(|(_, s)| s).collect(), trace)
    })
}

#[test]
fn two_hundred_endpoints_same_seed_same_outcome() {
    let (a, ta) = simulate(7, 200, 400);
    let ok = a.iter().filter(|s| s.ends_with(" ok")).count();
    eprintln!(
        "{ok}/{} requests ok, {} frames in the trace",
        a.len(),
        ta.len()
    );
    assert!(
        ok >= 380,
        "only {ok} of 400 requests succeeded on a 5% lossy network"
    );
    let (b, tb) = simulate(7, 200, 400);
    assert_eq!(a, b, "same seed, different outcomes");
    assert_eq!(ta, tb, "same seed, different frame traces");
    let (c, _) = simulate(8, 200, 400);
    assert_ne!(a, c, "the seed picks the pairs");
}

#[tokio::test(start_paused = true)]
async fn sessions_are_rekeyed_by_message_count() {
    within(600, "sessions_are_rekeyed_by_message_count", async {
        let sim = MemNetwork::new(MemConfig::default());
        let mut cfg = EndpointConfig::default();
        cfg.channel.rekey_after_messages = 8;
        cfg.channel.reject_after_messages = 16;
        let (a, b) = mem_pair(&sim, cfg);
        for i in 0..100u8 {
            let r = a
                .request(&b.local_peer(), Bytes::from(vec![i]))
                .await
                .unwrap();
            assert_eq!(&r[..], &echoed(&[i])[..]);
        }
        let m = a.metrics();
        assert!(m.handshakes_initiated_ok >= 10, "rekeyed: {m:?}");
        assert_eq!(m.requests_failed, 0);
        assert_eq!(a.sessions(), 1);
    })
    .await;
}

/// Thousands of mutated frames of every type reach an endpoint: nothing panics, everything is
/// counted, and the endpoint keeps serving.
#[tokio::test(start_paused = true)]
async fn mutated_frames_of_every_type_are_survived() {
    within(600, "mutated_frames_of_every_type_are_survived", async {
        use themis_channel::Transport;
        let sim = MemNetwork::new(MemConfig::default());
        let (client, server) = mem_pair(&sim, EndpointConfig::default());
        client
            .request(&server.local_peer(), Bytes::from_static(b"warm"))
            .await
            .unwrap();
        let base = server.metrics();
        let raw = sim.bind();
        let (_init, msg1) = themis_handshake::Initiator::start(
            identity(9),
            network(),
            server.local_id(),
            &themis_handshake::HandshakeConfig::default(),
            std::time::Instant::now(),
        )
        .unwrap();
        let mut rng = Rng::with_seed(1);
        let mut sent = 0u64;
        let mut genuine = 0u64;
        for _ in 0..3000 {
            let r = rng.u64(..);
            let ty = [
                0x01, 0x02, 0x03, 0x10, 0x11, 0x20, 0x21, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3F, 0x7F,
            ][(r % 14) as usize];
            let len = 2 + rng.usize(..300);
            let mut f: Vec<u8> = if ty == 0x01 && r.is_multiple_of(3) {
                msg1.clone()
            } else {
                (0..len).map(|_| rng.u8(..)).collect()
            };
            f[0] = 0x01;
            f[1] = ty;
            if f.len() > 2 && r.is_multiple_of(5) {
                let i = 2 + rng.usize(..f.len() - 2);
                f[i] ^= 1 << rng.u8(..8);
            }
            let is_genuine = f == msg1;
            if raw.send(server.local_addr(), Bytes::from(f)).await.is_ok() {
                sent += 1;
                genuine += u64::from(is_genuine);
            }
            if sent.is_multiple_of(100) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = server.metrics();
        let counted = refused(&m) - refused(&base);
        eprintln!("{sent} sent ({genuine} genuine message 1), {counted} counted as refused");
        // Every frame is either a genuine message 1 (answered, left pending) or counted.
        assert_eq!(counted + genuine, sent, "{m:?}");
        assert_eq!(m.handshakes_accepted_ok, 1, "no forged handshake completed");
        let r = client
            .request(&server.local_peer(), Bytes::from_static(b"still"))
            .await
            .unwrap();
        assert_eq!(&r[..], b"re:still");
    })
    .await;
}

/// Every counter of a refused (or merely acknowledged control) frame.
fn refused(m: &themis_channel::EndpointMetrics) -> u64 {
    m.frames_rejected_malformed
        + m.frames_rejected_auth
        + m.frames_rejected_replay
        + m.frames_rejected_unknown_session
        + m.frames_rejected_mode
        + m.frames_rejected_other
        + m.handshakes_rejected_invalid
        + m.handshakes_rejected_unknown
        + m.handshakes_rejected_busy
        + m.handshakes_rejected_source
        + m.cookie_echoes_rejected
        + m.commands_dropped_busy
        + m.control_received
        + m.transport.frames_dropped
        + m.transport.rejected_garbage
}

/// Every handshake through a cookie (`cookie_threshold = 0`) on a lossy, duplicating network:
/// lost cookies, echoes and messages 2 are retransmitted like message 1, and requests complete
/// as they do without cookies.
#[tokio::test(start_paused = true)]
async fn handshakes_behind_cookies_survive_a_lossy_network() {
    within(
        600,
        "handshakes_behind_cookies_survive_a_lossy_network",
        async {
            let net = MemNetwork::new(MemConfig {
                seed: 11,
                default_link: LinkConfig {
                    latency: Duration::from_millis(2),
                    jitter: Duration::from_millis(3),
                    loss: 0.05,
                    duplicate: 0.02,
                },
                ..MemConfig::default()
            });
            let nodes = 30;
            let eps: Vec<_> = (0..nodes)
                .map(|i| {
                    let mut cfg = EndpointConfig::default();
                    cfg.rng_seed = Some(77_000 + i as u64);
                    cfg.cookie_threshold = 0;
                    cfg.initial_rto = Duration::from_millis(50);
                    cfg.request_timeout = Duration::from_secs(2);
                    cfg.handshake_timeout = Duration::from_secs(2);
                    mem(
                        net.bind(),
                        20_000 + i as u64,
                        cfg,
                        Arc::new(Echo::default()),
                    )
                })
                .collect();
            let mut rng = Rng::with_seed(11);
            let mut set = tokio::task::JoinSet::new();
            let requests = 200;
            for _ in 0..requests {
                let i = rng.usize(..nodes);
                let j = (i + 1 + rng.usize(..nodes - 1)) % nodes;
                let (a, peer) = (eps[i].clone(), eps[j].local_peer());
                set.spawn(async move { a.request(&peer, Bytes::from_static(b"c")).await.is_ok() });
            }
            let mut ok = 0;
            while let Some(r) = set.join_next().await {
                ok += usize::from(r.unwrap());
            }
            let (mut sent, mut echoed_ok, mut accepted) = (0, 0, 0);
            for e in &eps {
                let m = e.metrics();
                sent += m.cookies_sent;
                echoed_ok += m.cookie_echoes_accepted;
                accepted += m.handshakes_accepted_ok;
            }
            eprintln!(
                "{ok}/{requests} requests ok; {sent} cookies sent, {echoed_ok} echoes accepted, \
             {accepted} handshakes accepted"
            );
            assert!(
                ok * 100 >= requests * 95,
                "only {ok}/{requests} requests succeeded"
            );
            assert!(
                accepted > 0 && echoed_ok >= accepted,
                "a handshake skipped its cookie"
            );
        },
    )
    .await;
}
