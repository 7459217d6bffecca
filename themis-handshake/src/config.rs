//! Limits and timeouts of the handshake.

use std::time::Duration;

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
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        Self {
            pending_capacity: DEFAULT_PENDING_CAPACITY,
            pending_ttl: DEFAULT_PENDING_TTL,
            initiator_timeout: DEFAULT_INITIATOR_TIMEOUT,
        }
    }
}
