//! Endpoint request/response latency and throughput over loopback (TCP and UDP, sequential
//! and 64 in flight), secure and insecure side by side; handshake latency over loopback.
//! Client and server run in one multi-thread tokio runtime (2 workers), so a round trip
//! crosses threads.
//!
//! `cargo bench -p themis-channel --bench endpoint`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use themis_channel::{Endpoint, EndpointConfig, Handler, PeerAddr, TcpConfig, UdpConfig};
use themis_crypto::{IdentityKeypair, NetworkId};

struct Echo;

#[async_trait]
impl Handler for Echo {
    async fn handle(&self, _from: PeerAddr, request: Bytes) -> Bytes {
        request
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Tcp,
    Udp,
}

async fn endpoint(kind: Kind, secure: bool, seed: u8) -> Endpoint {
    let cfg = if secure {
        EndpointConfig::default()
    } else {
        EndpointConfig::insecure()
    };
    let id = Arc::new(IdentityKeypair::from_seed(&[seed; 32]));
    let net = NetworkId::new("bench").unwrap();
    let addr = "127.0.0.1:0".parse().unwrap();
    match kind {
        Kind::Tcp => Endpoint::bind_tcp(addr, TcpConfig::default(), id, net, cfg, Arc::new(Echo))
            .await
            .unwrap(),
        Kind::Udp => Endpoint::bind_udp(addr, UdpConfig::default(), id, net, cfg, Arc::new(Echo))
            .await
            .unwrap(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn rpc(c: &mut Criterion) {
    let rt = runtime();
    let payload = Bytes::from(vec![0x5a; 64]);
    for (kname, kind) in [("tcp", Kind::Tcp), ("udp", Kind::Udp)] {
        let mut seq = c.benchmark_group(format!("rpc_sequential_64B/{kname}"));
        seq.measurement_time(Duration::from_secs(3));
        seq.throughput(Throughput::Elements(1));
        let mut pip = Vec::new();
        for (mname, secure) in [("secure", true), ("insecure", false)] {
            let (client, server) = rt.block_on(async {
                (
                    endpoint(kind, secure, 1).await,
                    endpoint(kind, secure, 2).await,
                )
            });
            let peer = server.local_peer();
            rt.block_on(client.request(&peer, payload.clone())).unwrap();
            seq.bench_function(mname, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            client.request(&peer, payload.clone()).await.unwrap();
                        }
                        start.elapsed()
                    })
                })
            });
            pip.push((mname, client, peer, server));
        }
        seq.finish();
        let mut g = c.benchmark_group(format!("rpc_64_in_flight_64B/{kname}"));
        g.measurement_time(Duration::from_secs(3));
        g.throughput(Throughput::Elements(64));
        for (mname, client, peer, _server) in &pip {
            g.bench_function(*mname, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        let mut set = tokio::task::JoinSet::new();
                        for _ in 0..64 {
                            let (client, peer, payload) = (client.clone(), *peer, payload.clone());
                            set.spawn(async move {
                                for _ in 0..iters {
                                    client.request(&peer, payload.clone()).await.unwrap();
                                }
                            });
                        }
                        while let Some(r) = set.join_next().await {
                            r.unwrap();
                        }
                        start.elapsed()
                    })
                })
            });
        }
        g.finish();
        for (_, client, _, server) in pip {
            rt.block_on(async {
                client.shutdown().await;
                server.shutdown().await;
            });
        }
    }
}

fn handshake(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("handshake_plus_first_request");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(20);
    for (kname, kind) in [("tcp", Kind::Tcp), ("udp", Kind::Udp)] {
        let server = rt.block_on(endpoint(kind, true, 2));
        let peer = server.local_peer();
        let mut seed = 10u8;
        g.bench_function(kname, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    seed = seed.wrapping_add(1).max(10);
                    rt.block_on(async {
                        let client = endpoint(kind, true, seed).await;
                        let start = Instant::now();
                        client
                            .request(&peer, Bytes::from_static(b"x"))
                            .await
                            .unwrap();
                        total += start.elapsed();
                        client.shutdown().await;
                    });
                }
                total
            })
        });
        rt.block_on(server.shutdown());
    }
    g.finish();
}

criterion_group!(benches, rpc, handshake);
criterion_main!(benches);
