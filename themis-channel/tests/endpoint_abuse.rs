//! Bad input and abuse: each case is bounded, closes or drops the offender, is counted, and
//! the endpoint keeps serving everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use themis_channel::{Endpoint, EndpointConfig, TcpConfig};
use themis_crypto::IdentityKeypair;
use themis_handshake::{HandshakeConfig, Initiator};
use themis_testkit::channel::endpoint::*;
use themis_testkit::channel::localhost;
use themis_testkit::{eventually_ok, identity, network, within};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

/// A fresh TCP client still gets answers from `server`.
async fn still_serves(server: &Endpoint, seed: u64) {
    let client = tcp(seed, EndpointConfig::default(), Arc::new(Echo::default())).await;
    let r = client
        .request(&server.local_peer(), Bytes::from_static(b"alive?"))
        .await
        .unwrap();
    assert_eq!(&r[..], b"re:alive?");
}

/// Waits until the peer closes the connection (read returns 0 or an error).
async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

fn hello() -> Vec<u8> {
    // Length-prefixed TCP hello announcing 127.0.0.1:9 (PROTOCOL.md, Transport).
    vec![0, 0, 0, 9, 0x01, 0x30, 4, 127, 0, 0, 1, 0, 9]
}

#[tokio::test]
async fn tcp_garbage_gigabyte_prefix_and_stalled_half_frame() {
    within(
        180,
        "tcp_garbage_gigabyte_prefix_and_stalled_half_frame",
        async {
            let tcp_cfg = TcpConfig {
                frame_timeout: Duration::from_millis(300),
                hello_timeout: Duration::from_millis(300),
                ..TcpConfig::default()
            };
            let server = Endpoint::bind_tcp(
                localhost(),
                tcp_cfg,
                identity(2),
                network(),
                EndpointConfig::default(),
                Arc::new(Echo::default()),
            )
            .await
            .unwrap();
            let addr = server.local_addr();

            // Garbage bytes instead of a hello.
            let mut g = TcpStream::connect(addr).await.unwrap();
            g.write_all(b"GET / HTTP/1.1\r\n\r\n garbage garbage")
                .await
                .unwrap();
            assert!(closed_by_peer(&mut g).await, "garbage connection closed");

            // A valid hello, then a length prefix claiming 2 GiB.
            let mut big = TcpStream::connect(addr).await.unwrap();
            big.write_all(&hello()).await.unwrap();
            big.write_all(&[0x7F, 0xFF, 0xFF, 0xFF, 1, 0x10])
                .await
                .unwrap();
            assert!(closed_by_peer(&mut big).await, "oversize claim closed");

            // A valid hello, then half a frame, then silence.
            let mut half = TcpStream::connect(addr).await.unwrap();
            half.write_all(&hello()).await.unwrap();
            half.write_all(&[0, 0, 0, 100, 1, 0x10, 1, 2, 3])
                .await
                .unwrap();
            assert!(closed_by_peer(&mut half).await, "stalled connection closed");

            let t = server.metrics().transport;
            assert!(t.rejected_hello + t.rejected_garbage >= 1, "{t:?}");
            assert!(t.rejected_oversize >= 1, "{t:?}");
            assert!(t.rejected_stalled >= 1, "{t:?}");
            still_serves(&server, 7).await;
        },
    )
    .await;
}

#[tokio::test]
async fn udp_garbage_is_counted_and_dropped() {
    within(180, "udp_garbage_is_counted_and_dropped", async {
        let server = udp(2, EndpointConfig::default(), Arc::new(Echo::default())).await;
        let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let junk: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xFF; 40],
            vec![0x01],
            vec![0x01, 0x99, 1, 2, 3],
            vec![0x01, 0x10, 1, 2],
            vec![0x01, 0x01, 0, 0, 0],
            vec![0x01, 0x02, 9],
            vec![0x01, 0x38, 1],
            vec![0x01, 0x3C, 0, 0],
        ];
        for j in &junk {
            raw.send_to(j, server.local_addr()).await.unwrap();
        }
        let m = eventually_metrics(&server, |m| {
            m.frames_rejected_malformed
                + m.handshakes_rejected_invalid
                + m.transport.rejected_garbage
                + m.frames_rejected_other
                >= 7
        })
        .await;
        assert!(m.frames_rejected_malformed >= 3, "{m:?}");
        // Served over UDP by a UDP client.
        let client = udp(8, EndpointConfig::default(), Arc::new(Echo::default())).await;
        let r = client
            .request(&server.local_peer(), Bytes::from_static(b"ok"))
            .await
            .unwrap();
        assert_eq!(&r[..], b"re:ok");
    })
    .await;
}

/// Waits (5 s at most) until the endpoint's counters satisfy `cond`; returns them.
async fn eventually_metrics(
    ep: &Endpoint,
    cond: impl Fn(&themis_channel::EndpointMetrics) -> bool,
) -> themis_channel::EndpointMetrics {
    eventually_ok(5, "the endpoint's counters", || async {
        let m = ep.metrics();
        if cond(&m) {
            Ok(())
        } else {
            Err(format!("{m:?}"))
        }
    })
    .await;
    ep.metrics()
}

#[tokio::test]
async fn handshake_flood_from_fresh_identities_is_bounded() {
    within(
        180,
        "handshake_flood_from_fresh_identities_is_bounded",
        async {
            let mut cfg = EndpointConfig::default();
            cfg.handshake.pending_capacity = 32;
            let server = udp(2, cfg, Arc::new(Echo::default())).await;
            // An established peer before the flood.
            let friend = udp(3, EndpointConfig::default(), Arc::new(Echo::default())).await;
            friend
                .request(&server.local_peer(), Bytes::from_static(b"hi"))
                .await
                .unwrap();

            let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let now = std::time::Instant::now();
            for i in 0..300 {
                if i % 20 == 0 {
                    // Pace a little so the kernel's socket buffer does not drop most of the flood.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let attacker = Arc::new(IdentityKeypair::generate());
                let (_init, msg1) = Initiator::start(
                    attacker,
                    network(),
                    server.local_id(),
                    &HandshakeConfig::default(),
                    now,
                )
                .unwrap();
                raw.send_to(&msg1, server.local_addr()).await.unwrap();
            }
            let m = eventually_metrics(&server, |m| m.handshakes_rejected_busy >= 150).await;
            assert_eq!(m.handshakes_accepted_ok, 1, "no flood handshake completed");
            // The established session keeps working during the flood.
            let r = friend
                .request(&server.local_peer(), Bytes::from_static(b"still"))
                .await
                .unwrap();
            assert_eq!(&r[..], b"re:still");
            // Answers (message 2) never exceed what they answer: count bytes on our raw socket.
            let mut buf = [0u8; 2048];
            let mut got = 0;
            while let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(50), raw.recv_from(&mut buf)).await
            {
                assert_eq!(n, themis_handshake::MSG2_LEN);
                assert!(n <= themis_handshake::MSG1_MIN_LEN);
                got += 1;
            }
            assert!(got <= 32, "at most pending_capacity answers, got {got}");
        },
    )
    .await;
}

#[tokio::test]
async fn commands_for_unknown_sessions_are_answered_small_and_rate_limited() {
    within(
        180,
        "commands_for_unknown_sessions_are_answered_small_and_rate_limited",
        async {
            let mut cfg = EndpointConfig::default();
            cfg.control_rate = (10, 20);
            let server = udp(2, cfg, Arc::new(Echo::default())).await;
            let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            for i in 0..200u64 {
                let mut f = vec![0x01, 0x10];
                f.extend_from_slice(&i.to_be_bytes()); // session id
                f.extend_from_slice(&1u64.to_be_bytes()); // seq
                f.extend_from_slice(&[0u8; 16]); // tag
                raw.send_to(&f, server.local_addr()).await.unwrap();
            }
            let m = eventually_metrics(&server, |m| m.frames_rejected_unknown_session >= 200).await;
            assert!(m.control_sent <= 25, "rate limit: {m:?}");
            assert!(m.control_rate_limited >= 175, "{m:?}");
            let mut buf = [0u8; 2048];
            let (n, _) = tokio::time::timeout(Duration::from_secs(2), raw.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..2], &[0x01, 0x3C]);
            assert!(
                n <= 2 + 8 + 8 + 16,
                "unknown-session answer ({n} bytes) smaller than the frame"
            );
            // Insecure frames at a secure endpoint: refused, counted, answered with a mode mismatch.
            let mut f = vec![0x01, 0x20];
            f.extend_from_slice(&[9u8; 32]);
            f.extend_from_slice(&1u64.to_be_bytes());
            raw.send_to(&f, server.local_addr()).await.unwrap();
            eventually_metrics(&server, |m| m.frames_rejected_mode >= 1).await;
        },
    )
    .await;
}

#[tokio::test]
async fn forged_control_messages_cannot_fake_success_or_drop_a_session() {
    within(
        180,
        "forged_control_messages_cannot_fake_success_or_drop_a_session",
        async {
            let server = udp(2, EndpointConfig::default(), Arc::new(Echo::default())).await;
            let client = udp(1, EndpointConfig::default(), Arc::new(Echo::default())).await;
            client
                .request(&server.local_peer(), Bytes::from_static(b"a"))
                .await
                .unwrap();
            // An attacker at another address claims the client's session is unknown.
            let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            for sid in 0..50u64 {
                let mut f = vec![0x01, 0x3C];
                f.extend_from_slice(&sid.to_be_bytes());
                f.extend_from_slice(&1u64.to_be_bytes());
                raw.send_to(&f, client.local_addr()).await.unwrap();
            }
            eventually_metrics(&client, |m| m.frames_rejected_other >= 50).await;
            assert_eq!(client.metrics().sessions_dropped, 0);
            let r = client
                .request(&server.local_peer(), Bytes::from_static(b"b"))
                .await
                .unwrap();
            assert_eq!(&r[..], b"re:b");
            assert_eq!(client.metrics().handshakes_initiated_ok, 1);
        },
    )
    .await;
}
