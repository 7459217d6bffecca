//! Endpoints for tests: bound to loopback TCP or UDP or to the in-memory network, with the
//! seeded identity of a seed, and handlers that echo, count or dawdle.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use themis_channel::{Endpoint, EndpointConfig, Handler, PeerAddr, TcpConfig, UdpConfig};

use super::localhost;
use crate::identity::{identity, network};
use crate::net::{MemNetwork, MemTransport};

/// Answers `x` with `"re:" ‖ x`, counting executions.
#[derive(Debug, Default)]
pub struct Echo {
    /// Requests handled.
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
#[derive(Debug)]
pub struct Slow(pub Duration);

#[async_trait]
impl Handler for Slow {
    async fn handle(&self, from: PeerAddr, request: Bytes) -> Bytes {
        tokio::time::sleep(self.0).await;
        Echo::default().handle(from, request).await
    }
}

/// What [`Echo`] answers to `req`.
pub fn echoed(req: &[u8]) -> Vec<u8> {
    [b"re:".as_slice(), req].concat()
}

/// An endpoint of node `seed` on loopback TCP (any port).
pub async fn tcp(seed: u64, cfg: EndpointConfig, handler: Arc<dyn Handler>) -> Endpoint {
    tcp_at(localhost(), seed, cfg, handler).await
}

/// An endpoint of node `seed` on TCP at `addr`.
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
        network(),
        cfg,
        handler,
    )
    .await
    .unwrap()
}

/// An endpoint of node `seed` on loopback UDP (any port).
pub async fn udp(seed: u64, cfg: EndpointConfig, handler: Arc<dyn Handler>) -> Endpoint {
    Endpoint::bind_udp(
        localhost(),
        UdpConfig::default(),
        identity(seed),
        network(),
        cfg,
        handler,
    )
    .await
    .unwrap()
}

/// An endpoint of node `seed` on an in-memory transport.
pub fn mem(t: MemTransport, seed: u64, cfg: EndpointConfig, handler: Arc<dyn Handler>) -> Endpoint {
    Endpoint::new(Arc::new(t), identity(seed), network(), cfg, handler).unwrap()
}

/// Two echoing endpoints on `net` with the same settings: A (node 1) and B (node 2).
pub fn mem_pair(net: &MemNetwork, cfg: EndpointConfig) -> (Endpoint, Endpoint) {
    let b = mem(net.bind(), 2, cfg.clone(), Arc::new(Echo::default()));
    let a = mem(net.bind(), 1, cfg, Arc::new(Echo::default()));
    (a, b)
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
#[derive(Debug, Default)]
pub struct Counting {
    /// How often each request was executed.
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
