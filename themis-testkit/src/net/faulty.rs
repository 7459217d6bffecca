//! A wrapper that injects seeded loss, duplication and reordering on the sending side of any
//! transport, to exercise the endpoint's retransmission and the channel's replay window over
//! real sockets.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use themis_channel::{Transport, TransportError, TransportStats};

use super::rng::SimRng;

/// What a [`FaultyTransport`] does to outgoing frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    /// Seed of the fault PRNG.
    pub seed: u64,
    /// Probability that a frame is silently dropped.
    pub loss: f64,
    /// Probability that a frame is sent twice.
    pub duplicate: f64,
    /// Probability that a frame is held back by `reorder_delay`, letting later frames
    /// overtake it.
    pub reorder: f64,
    /// How long a reordered frame is held back.
    pub reorder_delay: Duration,
}

impl Default for FaultConfig {
    /// No faults.
    fn default() -> Self {
        Self {
            seed: 0,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(10),
        }
    }
}

/// Wraps a transport and injects faults on send. `recv` is passed through.
///
/// The choices are a function of the seed and the order of `send` calls; with real sockets
/// underneath, the resulting timing is not deterministic. Its statistics are the inner
/// transport's, with the frames it dropped added to `frames_dropped`.
#[derive(Debug)]
pub struct FaultyTransport<T> {
    inner: Arc<T>,
    cfg: FaultConfig,
    rng: Mutex<SimRng>,
    dropped: AtomicU64,
}

impl<T: Transport> FaultyTransport<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, cfg: FaultConfig) -> Self {
        Self {
            inner: Arc::new(inner),
            rng: Mutex::new(SimRng::new(cfg.seed)),
            cfg,
            dropped: AtomicU64::new(0),
        }
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

#[async_trait]
impl<T: Transport> Transport for FaultyTransport<T> {
    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    fn is_reliable(&self) -> bool {
        self.inner.is_reliable()
            && self.cfg.loss <= 0.0
            && self.cfg.duplicate <= 0.0
            && self.cfg.reorder <= 0.0
    }

    fn max_frame_len(&self) -> usize {
        self.inner.max_frame_len()
    }

    async fn send(&self, to: SocketAddr, frame: Bytes) -> Result<(), TransportError> {
        if frame.len() > self.inner.max_frame_len() {
            return Err(TransportError::FrameTooLarge {
                len: frame.len(),
                max: self.inner.max_frame_len(),
            });
        }
        let (lost, dup, held) = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            (
                rng.chance(self.cfg.loss),
                rng.chance(self.cfg.duplicate),
                rng.chance(self.cfg.reorder),
            )
        };
        if lost {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let copies = if dup { 2 } else { 1 };
        if held {
            let inner = self.inner.clone();
            let delay = self.cfg.reorder_delay;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                for _ in 0..copies {
                    let _ = inner.send(to, frame.clone()).await;
                }
            });
            return Ok(());
        }
        for _ in 0..copies {
            self.inner.send(to, frame.clone()).await?;
        }
        Ok(())
    }

    async fn recv(&self) -> Result<(SocketAddr, BytesMut), TransportError> {
        self.inner.recv().await
    }

    fn stats(&self) -> TransportStats {
        let mut s = self.inner.stats();
        s.frames_dropped += self.dropped.load(Ordering::Relaxed);
        s
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
