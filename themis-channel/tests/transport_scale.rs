//! 1,000 TCP transports in one process, within the descriptor limit, with LRU churn.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use themis_channel::{TcpConfig, TcpTransport, Transport};
use themis_testkit::channel::*;
use themis_testkit::sys::*;
use themis_testkit::{Rng, eventually, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_tcp_transports_with_a_small_connection_cap() {
    within(
        180,
        "thousand_tcp_transports_with_a_small_connection_cap",
        async {
            const N: usize = 1000;
            const PER_NODE: usize = 10;
            const CAP: usize = 8;
            let (soft, hard) = nofile_limits();
            println!("RLIMIT_NOFILE soft {soft} hard {hard}");
            // Budget: N listeners + at most CAP table entries and CAP handshaking sockets per node,
            // two descriptors per in-process connection counted once per end.
            assert!(
                soft as usize >= N * (1 + 2 * CAP) + 100,
                "raise the soft RLIMIT_NOFILE (ulimit -n) to at least {}",
                N * (1 + 2 * CAP) + 100
            );

            let cfg = TcpConfig {
                max_connections: CAP,
                max_handshaking: CAP,
                // Generous: this machine is shared (2 cores, load often above 5), and a close that
                // times out resets the connection and may lose frames in flight.
                close_timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(20),
                ..TcpConfig::default()
            };
            let before = open_fds();
            // TIME_WAIT sockets left by earlier runs or other processes are not ours.
            let stale = time_wait_entries(&HashSet::new());
            let mut nodes = Vec::with_capacity(N);
            for _ in 0..N {
                nodes.push(Arc::new(
                    TcpTransport::bind(localhost(), cfg.clone()).await.unwrap(),
                ));
            }
            let addrs: Arc<Vec<_>> = Arc::new(nodes.iter().map(|n| n.local_addr()).collect());

            let peak = Arc::new(AtomicUsize::new(0));
            let done = Arc::new(AtomicBool::new(false));
            let sampler = {
                let (peak, done) = (peak.clone(), done.clone());
                tokio::spawn(async move {
                    while !done.load(Ordering::Relaxed) {
                        peak.fetch_max(open_fds(), Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            };

            let received = Arc::new(AtomicU64::new(0));
            let mut receivers = Vec::new();
            for n in &nodes {
                let (n, received) = (n.clone(), received.clone());
                receivers.push(tokio::spawn(async move {
                    while let Ok((_, f)) = n.recv().await {
                        let _ = parse(&f);
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            let mut senders = Vec::new();
            for (i, n) in nodes.iter().enumerate() {
                let (n, addrs) = (n.clone(), addrs.clone());
                senders.push(tokio::spawn(async move {
                    let mut rng = Rng::with_seed(i as u64 + 1);
                    for k in 0..PER_NODE {
                        let mut to = rng.usize(..N);
                        if to == i {
                            to = (to + 1) % N;
                        }
                        n.send(addrs[to], frame(0, (i * PER_NODE + k) as u32, 64))
                            .await
                            .unwrap();
                    }
                }));
            }
            for s in senders {
                s.await.unwrap();
            }
            let total = (N * PER_NODE) as u64;
            let t0 = tokio::time::Instant::now();
            while received.load(Ordering::Relaxed) < total && t0.elapsed() < Duration::from_secs(40)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            println!("delivery took {:?}", t0.elapsed());
            println!(
                "DEBUG sent {} received-by-readers {} open {} peers {}",
                nodes.iter().map(|n| n.stats().frames_sent).sum::<u64>(),
                nodes.iter().map(|n| n.stats().frames_received).sum::<u64>(),
                nodes
                    .iter()
                    .map(|n| n.stats().connections_open)
                    .sum::<u64>(),
                nodes.iter().map(|n| n.connected_peers()).sum::<usize>(),
            );
            done.store(true, Ordering::Relaxed);
            sampler.await.unwrap();

            let sum = |f: fn(&themis_channel::TransportStats) -> u64| -> u64 {
                nodes.iter().map(|n| f(&n.stats())).sum()
            };
            let max_table = nodes.iter().map(|n| n.connected_peers()).max().unwrap();
            let ports: HashSet<u16> = addrs.iter().map(|a| a.port()).collect();
            let time_wait = time_wait_entries(&ports).difference(&stale).count();
            println!(
                "{N} TCP transports, cap {CAP}: fds {before} before, peak {} (soft limit {soft}); \
         {} frames received of {total}; dialed {}, reaped lru {}, retired {}, connect failures {}, \
         refused {}, frames dropped {}; largest table {max_table}; TIME_WAIT on our ports {}",
                peak.load(Ordering::Relaxed),
                received.load(Ordering::Relaxed),
                sum(|s| s.connections_dialed),
                sum(|s| s.connections_reaped_lru),
                sum(|s| s.connections_retired),
                sum(|s| s.connect_failed),
                sum(|s| s.connections_refused),
                sum(|s| s.frames_dropped),
                time_wait,
            );
            assert_eq!(
                received.load(Ordering::Relaxed),
                total,
                "every frame delivered"
            );
            assert!(max_table <= CAP);
            assert!(peak.load(Ordering::Relaxed) < soft as usize);
            assert_eq!(sum(|s| s.frames_dropped), 0);
            assert!(
                sum(|s| s.connections_reaped_lru) > 0,
                "the cap was exercised"
            );
            assert_eq!(time_wait, 0, "no TIME_WAIT pile-up");

            let closing: Vec<_> = nodes
                .iter()
                .map(|n| {
                    let n = n.clone();
                    tokio::spawn(async move { n.close().await })
                })
                .collect();
            for c in closing {
                c.await.unwrap();
            }
            for r in receivers {
                r.await.unwrap();
            }
            eventually(10, "descriptors released", || open_fds() <= before + 20).await;
        },
    )
    .await;
}
