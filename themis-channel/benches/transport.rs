//! Raw frame round trips over loopback TCP and UDP: the insecure floor the endpoint is compared
//! with. `cargo bench -p themis-channel --bench transport`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::{hint::black_box, sync::Arc, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use themis_channel::{TcpConfig, TcpTransport, Transport, UdpConfig, UdpTransport};
use tokio::runtime::Runtime;

fn frame(len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(len);
    b.put_u8(0x01);
    b.put_u8(0x20);
    b.put_bytes(0x5A, len - 2);
    b.freeze()
}

/// Spawns an echo loop on `t` and returns the client transport's peer address.
fn echo<T: Transport>(rt: &Runtime, t: Arc<T>) {
    rt.spawn(async move {
        while let Ok((from, f)) = t.recv().await {
            if t.send(from, f.freeze()).await.is_err() {
                break;
            }
        }
    });
}

fn bench_pair<T: Transport>(
    c: &mut Criterion,
    name: &str,
    rt: &Runtime,
    a: Arc<T>,
    b: Arc<T>,
    sizes: &[usize],
) {
    echo(rt, b.clone());
    let to = b.local_addr();
    let mut g = c.benchmark_group(format!("{name}_round_trip"));
    g.measurement_time(Duration::from_secs(3)).sample_size(20);
    for &size in sizes {
        let f = frame(size);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("{size}B_sequential"), |bch| {
            bch.iter_custom(|iters| {
                rt.block_on(async {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        a.send(to, f.clone()).await.unwrap();
                        black_box(a.recv().await.unwrap());
                    }
                    start.elapsed()
                })
            });
        });
        g.throughput(Throughput::Elements(64));
        g.bench_function(format!("{size}B_64_in_flight"), |bch| {
            bch.iter_custom(|iters| {
                rt.block_on(async {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        for _ in 0..64 {
                            a.send(to, f.clone()).await.unwrap();
                        }
                        for _ in 0..64 {
                            black_box(a.recv().await.unwrap());
                        }
                    }
                    start.elapsed()
                })
            });
        });
    }
    g.finish();
}

fn transports(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let local = "127.0.0.1:0".parse().unwrap();
    let (a, b) = rt.block_on(async {
        (
            Arc::new(
                TcpTransport::bind(local, TcpConfig::default())
                    .await
                    .unwrap(),
            ),
            Arc::new(
                TcpTransport::bind(local, TcpConfig::default())
                    .await
                    .unwrap(),
            ),
        )
    });
    bench_pair(c, "tcp", &rt, a, b, &[64, 16 * 1024]);
    let (a, b) = rt.block_on(async {
        (
            Arc::new(
                UdpTransport::bind(local, UdpConfig::default())
                    .await
                    .unwrap(),
            ),
            Arc::new(
                UdpTransport::bind(local, UdpConfig::default())
                    .await
                    .unwrap(),
            ),
        )
    });
    bench_pair(c, "udp", &rt, a, b, &[64, 1452]);
}

criterion_group!(benches, transports);
criterion_main!(benches);
