//! The endpoint over UDP, with injected loss, duplication and reordering: every request
//! completes or times out, none is executed twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use themis_channel::{Endpoint, EndpointConfig, Error, UdpConfig, UdpTransport};
use themis_testkit::channel::endpoint::*;
use themis_testkit::channel::localhost;
use themis_testkit::{FaultyTransport, LinkConfig, NetModel, identity, network, within};

async fn faulty(
    seed: u64,
    cfg: EndpointConfig,
    handler: Arc<Counting>,
    fault_seed: u64,
) -> Endpoint {
    let t = UdpTransport::bind(localhost(), UdpConfig::default())
        .await
        .unwrap();
    let link = LinkConfig {
        loss: 0.2,
        duplicate: 0.1,
        jitter: Duration::from_millis(15),
        ..LinkConfig::PERFECT
    };
    let t = FaultyTransport::new(t, NetModel::new(fault_seed, link));
    Endpoint::new(Arc::new(t), identity(seed), network(), cfg, handler).unwrap()
}

fn run(mode_secure: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(within(180, "lossy udp run", async {
        let mut cfg = EndpointConfig::default();
        if !mode_secure {
            cfg = EndpointConfig::insecure();
        }
        cfg.initial_rto = Duration::from_millis(30);
        cfg.max_rto = Duration::from_millis(200);
        cfg.request_timeout = Duration::from_secs(3);
        cfg.handshake_timeout = Duration::from_secs(3);
        let hb = Arc::new(Counting::default());
        let b = faulty(2, cfg.clone(), hb.clone(), 11).await;
        let a = faulty(1, cfg, Arc::new(Counting::default()), 12).await;
        let peer = b.local_peer();
        let mut set = tokio::task::JoinSet::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(16));
        for i in 0..300u32 {
            let (a, sem) = (a.clone(), sem.clone());
            set.spawn(async move {
                let _p = sem.acquire_owned().await.unwrap();
                let req = i.to_be_bytes().to_vec();
                (req.clone(), a.request(&peer, Bytes::from(req)).await)
            });
        }
        let (mut ok, mut timed_out) = (0, 0);
        while let Some(r) = set.join_next().await {
            let (req, r) = r.unwrap();
            match r {
                Ok(resp) => {
                    assert_eq!(&resp[..], &echoed(&req)[..], "response matched to its request");
                    ok += 1;
                }
                Err(Error::RequestTimeout { .. } | Error::HandshakeTimeout { .. }) => {
                    timed_out += 1;
                }
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        let seen = hb.seen.lock().unwrap();
        assert!(seen.values().all(|&n| n == 1), "a request was executed twice");
        let ma = a.metrics();
        let mb = b.metrics();
        eprintln!(
            "secure={mode_secure}: {ok} ok, {timed_out} timed out, {} retransmissions, {} responses resent, {} replays refused",
            ma.retransmissions, mb.responses_resent, mb.frames_rejected_replay
        );
        assert_eq!(ok + timed_out, 300);
        assert!(ok >= 250, "only {ok} of 300 completed over a 20% lossy link");
        assert!(ma.retransmissions > 0);
        assert!(mb.frames_rejected_replay > 0, "duplicates reached the replay window");
        assert_eq!(ma.in_flight, 0);
    }));
}

#[test]
fn lossy_udp_secure_no_request_executed_twice() {
    run(true);
}

#[test]
fn lossy_udp_insecure_no_request_executed_twice() {
    run(false);
}

#[tokio::test]
async fn udp_plain_requests_and_identify() {
    within(180, "udp_plain_requests_and_identify", async {
        let b = udp(2, EndpointConfig::default(), Arc::new(Echo::default())).await;
        let a = udp(1, EndpointConfig::default(), Arc::new(Echo::default())).await;
        let (id, _) = a.identify(b.local_addr()).await.unwrap();
        assert_eq!(id, b.local_id());
        for i in 0..50u8 {
            let r = a
                .request(&b.local_peer(), Bytes::from(vec![i]))
                .await
                .unwrap();
            assert_eq!(&r[..], &echoed(&[i])[..]);
        }
        assert_eq!(a.metrics().handshakes_initiated_ok, 1);
    })
    .await;
}

#[tokio::test]
async fn udp_request_larger_than_a_datagram_is_refused_locally() {
    within(
        180,
        "udp_request_larger_than_a_datagram_is_refused_locally",
        async {
            let b = udp(2, EndpointConfig::default(), Arc::new(Echo::default())).await;
            let a = udp(1, EndpointConfig::default(), Arc::new(Echo::default())).await;
            let e = a
                .request(&b.local_peer(), Bytes::from(vec![0u8; 4000]))
                .await
                .unwrap_err();
            assert!(matches!(e, Error::PayloadTooLarge { .. }), "{e:?}");
        },
    )
    .await;
}
