//! Limits and timeouts of the handshake.

use std::time::{Duration, Instant, SystemTime};

use themis_crypto::AdmissionCert;

/// Default capacity of the responder's pending-handshake table.
pub const DEFAULT_PENDING_CAPACITY: usize = 4096;
/// Default lifetime of a pending responder handshake.
pub const DEFAULT_PENDING_TTL: Duration = Duration::from_secs(10);
/// Default time an initiator waits for message 2.
pub const DEFAULT_INITIATOR_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits and timeouts of both roles.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeConfig {
    /// Most responder handshakes waiting for message 3 at once (default 4096). When the table is
    /// full of live entries a new message 1 is refused ([`crate::Error::PendingTableFull`]);
    /// live entries are never evicted.
    pub pending_capacity: usize,
    /// How long a responder keeps a handshake waiting for message 3 (default 10 s).
    pub pending_ttl: Duration,
    /// How long an initiator waits for message 2 (default 5 s).
    pub initiator_timeout: Duration,
    /// This node's admission certificate and wall clock, required on a closed network
    /// (PROTOCOL.md §2.10; `None` by default: open networks need none).
    pub admission: Option<Admission>,
}

/// What a node of a closed network needs in the handshake: its own certificate, sent in
/// message 1 or 2, and the wall clock against which the peer's certificate's expiry is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// This node's certificate (for its node id on the closed network).
    pub certificate: AdmissionCert,
    /// Maps the handshake's `now` to Unix time.
    pub clock: WallClock,
}

/// Unix time derived from the caller's monotonic `now`, so that the handshake stays sans-I/O:
/// at `anchor` the Unix time was `anchor_unix_ms`. An `Instant` before the anchor maps to the
/// anchor's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// A monotonic instant ...
    pub anchor: Instant,
    /// ... and the Unix time (milliseconds) at that instant.
    pub anchor_unix_ms: u64,
}

impl WallClock {
    /// Anchored at the system clock now.
    pub fn system() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self {
            anchor: Instant::now(),
            anchor_unix_ms: unix_ms,
        }
    }

    /// The Unix time (milliseconds) at `now`.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.anchor).as_millis();
        self.anchor_unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        Self {
            pending_capacity: DEFAULT_PENDING_CAPACITY,
            pending_ttl: DEFAULT_PENDING_TTL,
            initiator_timeout: DEFAULT_INITIATOR_TIMEOUT,
            admission: None,
        }
    }
}
