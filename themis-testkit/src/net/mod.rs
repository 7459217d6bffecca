//! Networks for tests: one seeded network model ([`NetModel`]: latency, jitter, loss,
//! duplication, partitions), behind the in-memory transport ([`MemNetwork`]), the DHT simulator
//! ([`crate::sim::Sim`]) and a fault-injecting wrapper for real transports
//! ([`FaultyTransport`]).

mod faulty;
mod mem;
mod model;
pub(crate) mod queue;

use std::sync::atomic::{AtomicU64, Ordering};

use themis_channel::TransportStats;

pub use faulty::FaultyTransport;
pub use mem::{MemConfig, MemNetwork, MemTransport, TraceEvent};
pub use model::{Fate, LinkConfig, ModelStats, NetModel};

/// The counters an in-memory transport keeps (the fields of [`TransportStats`] it uses).
#[derive(Debug, Default)]
struct Counters {
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    frames_dropped: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn inc(counter: &AtomicU64) {
        Self::add(counter, 1);
    }

    fn snapshot(&self) -> TransportStats {
        let mut s = TransportStats::default();
        s.frames_sent = self.frames_sent.load(Ordering::Relaxed);
        s.frames_received = self.frames_received.load(Ordering::Relaxed);
        s.bytes_sent = self.bytes_sent.load(Ordering::Relaxed);
        s.bytes_received = self.bytes_received.load(Ordering::Relaxed);
        s.frames_dropped = self.frames_dropped.load(Ordering::Relaxed);
        s
    }
}
