//! Helpers shared by the endpoint tests.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use themis_channel::{
    Endpoint, EndpointConfig, Handler, MemTransport, PeerAddr, TcpConfig, UdpConfig,
};
use themis_crypto::{IdentityKeypair, NetworkId, Transcript};

pub fn net() -> NetworkId {
    NetworkId::new("endpoint-test").unwrap()
}

/// A deterministic identity.
pub fn identity(seed: u64) -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::from_seed(&Transcript::digest(
        "themis-channel/endpoint-test",
        &[&seed.to_be_bytes()],
    )))
}

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Answers `x` with `"re:" ‖ x`, counting executions.
#[derive(Default)]
pub struct Echo {
    pub executed: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl Handler for Echo {
    async fn handle(&self, _from: PeerAddr, request: Bytes) -> Bytes {
        self.executed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut b = BytesMut::with_capacity(3 + request.len());
        b.put_slice(b"re:");
        b.put_slice(&request);
        b.freeze()
    }
}

/// Sleeps `delay` then echoes.
pub struct Slow(pub Duration);

#[async_trait]
impl Handler for Slow {
    async fn handle(&self, from: PeerAddr, request: Bytes) -> Bytes {
        tokio::time::sleep(self.0).await;
        Echo::default().handle(from, request).await
    }
}

pub fn echoed(req: &[u8]) -> Vec<u8> {
    [b"re:".as_slice(), req].concat()
}

pub async fn tcp(seed: u64, cfg: EndpointConfig, handler: Arc<dyn Handler>) -> Endpoint {
    tcp_at(localhost(), seed, cfg, handler).await
}

pub async fn tcp_at(
    addr: SocketAddr,
    seed: u64,
    cfg: EndpointConfig,
    handler: Arc<dyn Handler>,
) -> Endpoint {
    Endpoint::bind_tcp(
        addr,
        TcpConfig::default(),
        identity(seed),
        net(),
        cfg,
        handler,
    )
    .await
    .unwrap()
}

pub async fn udp(seed: u64, cfg: EndpointConfig, handler: Arc<dyn Handler>) -> Endpoint {
    Endpoint::bind_udp(
        localhost(),
        UdpConfig::default(),
        identity(seed),
        net(),
        cfg,
        handler,
    )
    .await
    .unwrap()
}

pub fn mem(t: MemTransport, seed: u64, cfg: EndpointConfig, handler: Arc<dyn Handler>) -> Endpoint {
    Endpoint::new(Arc::new(t), identity(seed), net(), cfg, handler).unwrap()
}

/// Short timeouts for tests that wait for a failure.
pub fn quick() -> EndpointConfig {
    let mut c = EndpointConfig::default();
    c.handshake_timeout = Duration::from_millis(500);
    c.request_timeout = Duration::from_millis(800);
    c.initial_rto = Duration::from_millis(50);
    c.max_rto = Duration::from_millis(200);
    c
}

/// Echoes and records how often each request was executed.
#[derive(Default)]
pub struct Counting {
    pub seen: std::sync::Mutex<std::collections::HashMap<Vec<u8>, u32>>,
}

#[async_trait]
impl Handler for Counting {
    async fn handle(&self, from: PeerAddr, request: Bytes) -> Bytes {
        *self
            .seen
            .lock()
            .unwrap()
            .entry(request.to_vec())
            .or_default() += 1;
        Echo::default().handle(from, request).await
    }
}

/// Descriptors open in this process (Linux).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Runs `fut`, failing the test with the step's name if it takes longer than `secs` (tokio's
/// clock: virtual time under a paused clock). A hang in the code under test becomes a failure
/// with a message, never a stuck CI.
pub async fn within<T>(secs: u64, step: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("step '{step}' did not finish within {secs} s"),
    }
}
