//! In-memory network: determinism from a seed, latency, loss, duplication, partitions, scale.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::{collections::HashSet, sync::Arc, time::Duration};

use themis_channel::{Transport, TransportError};
use themis_testkit::channel::{frame, parse};
use themis_testkit::sys::open_fds;
use themis_testkit::{
    FaultyTransport, LinkConfig, MemConfig, MemNetwork, MemTransport, NetModel, TraceEvent,
    paused_runtime, within,
};

fn lossy(seed: u64) -> MemConfig {
    MemConfig {
        seed,
        default_link: LinkConfig {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(20),
            loss: 0.1,
            duplicate: 0.05,
        },
        trace_capacity: 100_000,
        ..MemConfig::default()
    }
}

/// 20 nodes, each sending 50 frames to seeded-random peers and echoing what it receives once;
/// returns the network trace and what every node received, in order.
async fn scenario(cfg: MemConfig) -> (Vec<TraceEvent>, Vec<Vec<(u8, u32)>>) {
    let net = MemNetwork::new(cfg);
    let nodes: Vec<Arc<MemTransport>> = (0..20).map(|_| Arc::new(net.bind())).collect();
    let addrs: Vec<_> = nodes.iter().map(|n| n.local_addr()).collect();
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let node = node.clone();
        let addrs = addrs.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for k in 0..50u32 {
                let to = addrs[(i * 7 + k as usize * 13) % addrs.len()];
                node.send(to, frame(1, k, i)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
                while let Ok(Ok((from, f))) =
                    tokio::time::timeout(Duration::ZERO, node.recv()).await
                {
                    let (tag, n) = parse(&f);
                    got.push((tag, n));
                    if tag == 1 {
                        node.send(from, frame(2, n, 0)).await.unwrap();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            while let Ok(Ok((_, f))) = tokio::time::timeout(Duration::ZERO, node.recv()).await {
                got.push(parse(&f));
            }
            got
        }));
    }
    let mut received = Vec::new();
    for t in tasks {
        received.push(t.await.unwrap());
    }
    (net.trace(), received)
}

#[test]
fn same_seed_same_trace_different_seed_different_trace() {
    let run = |seed| paused_runtime().block_on(scenario(lossy(seed)));
    let (t1, r1) = run(42);
    let (t2, r2) = run(42);
    let (t3, r3) = run(43);
    assert!(t1.len() > 1000, "trace has {} events", t1.len());
    assert_eq!(t1, t2, "same seed, same trace");
    assert_eq!(r1, r2, "same seed, same deliveries to every node");
    assert_ne!(t1, t3, "different seed, different trace");
    assert_ne!(r1, r3);
    // The faults happened: losses, reordering (a later send delivered first) and duplicates.
    assert!(t1.iter().any(|e| !e.delivered));
    let delivered: Vec<_> = t1.iter().filter(|e| e.delivered).collect();
    let distinct: HashSet<_> = delivered
        .iter()
        .map(|e| (e.from, e.to, e.fingerprint))
        .collect();
    assert!(distinct.len() < delivered.len(), "duplicates delivered");
    assert!(
        t1.windows(2)
            .all(|w| w[0].at <= w[1].at || !w[1].delivered || !w[0].delivered)
    );
}

#[tokio::test(start_paused = true)]
async fn latency_is_applied_in_virtual_time() {
    within(600, "latency_is_applied_in_virtual_time", async {
        let net = MemNetwork::new(MemConfig::default());
        let (a, b) = (net.bind(), net.bind());
        net.set_link(
            a.local_addr(),
            b.local_addr(),
            LinkConfig {
                latency: Duration::from_millis(250),
                ..LinkConfig::default()
            },
        );
        let t0 = tokio::time::Instant::now();
        a.send(b.local_addr(), frame(0, 1, 0)).await.unwrap();
        let (from, f) = b.recv().await.unwrap();
        assert_eq!((from, parse(&f)), (a.local_addr(), (0, 1)));
        assert_eq!(t0.elapsed(), Duration::from_millis(250));
        // The reverse direction keeps the default (no delay).
        let t1 = tokio::time::Instant::now();
        b.send(a.local_addr(), frame(0, 2, 0)).await.unwrap();
        a.recv().await.unwrap();
        assert_eq!(t1.elapsed(), Duration::ZERO);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn loss_rate_matches_configuration() {
    within(600, "loss_rate_matches_configuration", async {
        let net = MemNetwork::new(MemConfig {
            seed: 9,
            default_link: LinkConfig {
                loss: 0.25,
                ..LinkConfig::default()
            },
            recv_queue_len: 10_000,
            ..MemConfig::default()
        });
        let (a, b) = (net.bind(), net.bind());
        for i in 0..4000 {
            a.send(b.local_addr(), frame(0, i, 0)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        let got = b.stats().frames_received;
        let lost = a.stats().frames_dropped;
        assert_eq!(got + lost, 4000);
        assert!((800..1200).contains(&lost), "lost {lost} of 4000 at 25%");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn partition_and_heal() {
    within(600, "partition_and_heal", async {
        let net = MemNetwork::new(MemConfig {
            trace_capacity: 1000,
            ..MemConfig::default()
        });
        let nodes: Vec<MemTransport> = (0..4).map(|_| net.bind()).collect();
        let addr: Vec<_> = nodes.iter().map(|n| n.local_addr()).collect();
        net.partition(&[&addr[..2], &addr[2..]]);
        // Within a side: delivered.
        nodes[0].send(addr[1], frame(0, 1, 0)).await.unwrap();
        assert_eq!(parse(&nodes[1].recv().await.unwrap().1), (0, 1));
        nodes[3].send(addr[2], frame(0, 2, 0)).await.unwrap();
        assert_eq!(parse(&nodes[2].recv().await.unwrap().1), (0, 2));
        // Across: dropped.
        nodes[0].send(addr[2], frame(0, 3, 0)).await.unwrap();
        nodes[3].send(addr[1], frame(0, 4, 0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(10), nodes[2].recv())
                .await
                .is_err()
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(10), nodes[1].recv())
                .await
                .is_err()
        );
        assert_eq!(nodes[0].stats().frames_dropped, 1);
        // A frame in flight when the partition starts is dropped on arrival.
        net.heal();
        net.set_link(
            addr[0],
            addr[3],
            LinkConfig {
                latency: Duration::from_millis(50),
                ..LinkConfig::default()
            },
        );
        nodes[0].send(addr[3], frame(0, 5, 0)).await.unwrap();
        net.partition(&[&addr[..1]]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(10), nodes[3].recv())
                .await
                .is_err()
        );
        // Healed: everything flows again.
        net.heal();
        nodes[0].send(addr[3], frame(0, 6, 0)).await.unwrap();
        assert_eq!(parse(&nodes[3].recv().await.unwrap().1), (0, 6));
        let undelivered = net.trace().iter().filter(|e| !e.delivered).count();
        assert_eq!(undelivered, 3);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn addresses_closing_and_limits() {
    within(600, "addresses_closing_and_limits", async {
        let net = MemNetwork::new(MemConfig {
            max_frame_len: 64,
            ..MemConfig::default()
        });
        let a = net.bind();
        assert!(matches!(
            net.bind_addr(a.local_addr()),
            Err(TransportError::AddrInUse { .. })
        ));
        let b = net.bind();
        assert_ne!(a.local_addr(), b.local_addr());
        assert!(matches!(
            a.send(b.local_addr(), frame(0, 0, 58)).await,
            Err(TransportError::FrameTooLarge { len: 65, max: 64 })
        ));
        a.send(b.local_addr(), frame(0, 1, 0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await; // delivered into b's queue
        b.close().await;
        // Frames already queued are still readable, then recv reports the close.
        assert_eq!(parse(&b.recv().await.unwrap().1), (0, 1));
        assert!(matches!(b.recv().await, Err(TransportError::Closed)));
        assert!(matches!(
            b.send(a.local_addr(), frame(0, 1, 0)).await,
            Err(TransportError::Closed)
        ));
        // Sending to an address nobody holds is silent loss.
        a.send(b.local_addr(), frame(0, 2, 0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        // The address can be taken again.
        let b2 = net.bind_addr(b.local_addr()).unwrap();
        a.send(b2.local_addr(), frame(0, 3, 0)).await.unwrap();
        assert_eq!(parse(&b2.recv().await.unwrap().1), (0, 3));
        drop((a, b2));
        assert!(net.is_empty());
    })
    .await;
}

/// The fault wrapper is deterministic too when run over the memory network in virtual time.
#[test]
fn faulty_wrapper_deterministic_over_memory() {
    let run = |seed| {
        paused_runtime().block_on(async move {
            let net = MemNetwork::new(MemConfig::default());
            let link = LinkConfig {
                loss: 0.2,
                duplicate: 0.1,
                jitter: Duration::from_millis(3),
                ..LinkConfig::PERFECT
            };
            let a = FaultyTransport::new(net.bind(), NetModel::new(seed, link));
            let b = net.bind();
            for i in 0..200 {
                a.send(b.local_addr(), frame(0, i, 0)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            let mut got = Vec::new();
            while let Ok(Ok((_, f))) = tokio::time::timeout(Duration::ZERO, b.recv()).await {
                got.push(parse(&f).1);
            }
            got
        })
    };
    let (x, y, z) = (run(1), run(1), run(2));
    assert_eq!(x, y);
    assert_ne!(x, z);
    assert!(x.len() < 200 + 40 && x.windows(2).any(|w| w[0] > w[1]));
}

/// Thousands of transports in one process: cheap, and all traffic arrives.
#[tokio::test(start_paused = true)]
async fn five_thousand_transports() {
    within(600, "five_thousand_transports", async {
        const N: usize = 5000;
        let net = MemNetwork::new(MemConfig {
            seed: 1,
            default_link: LinkConfig {
                latency: Duration::from_millis(10),
                jitter: Duration::from_millis(10),
                ..LinkConfig::default()
            },
            ..MemConfig::default()
        });
        let fds = open_fds();
        let nodes: Vec<MemTransport> = (0..N).map(|_| net.bind()).collect();
        // Other tests run in parallel and open a few descriptors for their runtimes.
        assert!(open_fds() < fds + 100, "no descriptor per transport");
        for (i, n) in nodes.iter().enumerate() {
            for k in 1..=4 {
                n.send(
                    nodes[(i * 31 + k * 977) % N].local_addr(),
                    frame(0, i as u32, 16),
                )
                .await
                .unwrap();
            }
        }
        assert_eq!(net.in_flight(), 4 * N);
        tokio::time::sleep(Duration::from_millis(25)).await;
        let got: u64 = nodes.iter().map(|n| n.stats().frames_received).sum();
        assert_eq!(got, 4 * N as u64);
        assert_eq!(net.in_flight(), 0);
    })
    .await;
}

mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Without loss or duplication, any sequence of sends over any jitter is delivered
        /// exactly once, and a rerun with the same seed gives the same trace.
        #[test]
        fn lossless_links_deliver_everything_exactly_once(
            seed in any::<u64>(),
            jitter_ms in 0u64..50,
            sends in proptest::collection::vec((0usize..5, 0usize..5, 0usize..100), 0..60),
        ) {
            let run = || {
                paused_runtime().block_on(async {
                    let net = MemNetwork::new(MemConfig {
                        seed,
                        default_link: LinkConfig {
                            latency: Duration::from_millis(1),
                            jitter: Duration::from_millis(jitter_ms),
                            ..LinkConfig::default()
                        },
                        trace_capacity: 1000,
                        ..MemConfig::default()
                    });
                    let nodes: Vec<MemTransport> = (0..5).map(|_| net.bind()).collect();
                    for (i, (from, to, pad)) in sends.iter().enumerate() {
                        nodes[*from]
                            .send(nodes[*to].local_addr(), frame(*from as u8, i as u32, *pad))
                            .await
                            .unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(60)).await;
                    let mut got = Vec::new();
                    for n in &nodes {
                        while let Ok(Ok((from, f))) =
                            tokio::time::timeout(Duration::ZERO, n.recv()).await
                        {
                            got.push((from, n.local_addr(), parse(&f).1));
                        }
                    }
                    (net.trace(), got, nodes.iter().map(|n| n.local_addr()).collect::<Vec<_>>())
                })
            };
            let (trace, mut got, addrs) = run();
            got.sort_by_key(|g| g.2);
            let want: Vec<_> = sends
                .iter()
                .enumerate()
                .map(|(i, (f, t, _))| (addrs[*f], addrs[*t], i as u32))
                .collect();
            prop_assert_eq!(got, want);
            prop_assert!(trace.iter().all(|e| e.delivered));
            prop_assert_eq!(trace, run().0);
        }
    }
}
