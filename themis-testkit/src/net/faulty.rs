//! A wrapper that puts the [network model](super::model) on the sending side of any transport
//! (seeded loss, duplication, delay and reordering, partitions), to exercise the endpoint's
//! retransmission and the channel's replay window over real sockets.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use themis_channel::{Transport, TransportError, TransportStats, check_outgoing_frame};
use tokio::time::Instant;

use super::model::{Fate, ModelStats, NetModel};

/// Wraps a transport and passes every frame it sends through a [`NetModel`]: a frame the model
/// drops is not sent, one it delays is sent by a task after the delay, a duplicated one is
/// sent twice. `recv` is passed through.
///
/// The model's choices are a function of its seed and the order of `send` calls; with real
/// sockets underneath, the resulting timing is not deterministic. Its statistics are the inner
/// transport's, with the frames the model dropped added to `frames_dropped`.
#[derive(Debug)]
pub struct FaultyTransport<T> {
    inner: Arc<T>,
    model: Mutex<NetModel>,
    /// Time zero of the model.
    start: Instant,
}

impl<T: Transport> FaultyTransport<T> {
    /// Wraps `inner`; the model decides the fate of each frame sent (its links are keyed by
    /// this transport's address and the destination).
    pub fn new(inner: T, model: NetModel) -> Self {
        Self {
            inner: Arc::new(inner),
            model: Mutex::new(model),
            start: Instant::now(),
        }
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    fn fate(&self, to: SocketAddr) -> Fate {
        let now = Instant::now().saturating_duration_since(self.start);
        let mut model = self.model.lock().unwrap_or_else(|e| e.into_inner());
        model.send(now, self.inner.local_addr(), to)
    }

    /// The model's counters: frames offered, lost, partitioned away, duplicated.
    pub fn model_stats(&self) -> ModelStats {
        self.model.lock().unwrap_or_else(|e| e.into_inner()).stats()
    }

    fn dropped(&self) -> u64 {
        let stats = self.model_stats();
        stats.lost + stats.partitioned
    }
}

#[async_trait]
impl<T: Transport> Transport for FaultyTransport<T> {
    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// Never: the model may lose, duplicate or reorder frames.
    fn is_reliable(&self) -> bool {
        false
    }

    fn max_frame_len(&self) -> usize {
        self.inner.max_frame_len()
    }

    async fn send(&self, to: SocketAddr, frame: Bytes) -> Result<(), TransportError> {
        check_outgoing_frame(&frame, self.inner.max_frame_len())?;
        for delay in self.fate(to).delays() {
            if delay.is_zero() {
                self.inner.send(to, frame.clone()).await?;
            } else {
                let (inner, frame) = (self.inner.clone(), frame.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = inner.send(to, frame).await;
                });
            }
        }
        Ok(())
    }

    async fn recv(&self) -> Result<(SocketAddr, BytesMut), TransportError> {
        self.inner.recv().await
    }

    fn stats(&self) -> TransportStats {
        let mut s = self.inner.stats();
        s.frames_dropped += self.dropped();
        s
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
