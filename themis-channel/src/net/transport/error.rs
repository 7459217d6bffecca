use std::{io, net::SocketAddr, time::Duration};

/// Everything a transport can report to its caller.
///
/// Problems caused by a remote peer (garbage, oversize frames, stalls) are never returned to
/// the caller: the offending connection or datagram is dropped and counted in
/// [`TransportStats`](super::TransportStats).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The frame is larger than this transport carries.
    #[error(
        "frame of {len} bytes exceeds this transport's limit of {max} bytes (UDP refuses frames larger than one datagram: use TCP for large messages, or raise max_frame_len)"
    )]
    FrameTooLarge {
        /// Size of the frame.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The frame breaks the framing rules every transport enforces.
    #[error("invalid frame: {reason}")]
    InvalidFrame {
        /// The rule it broke.
        reason: &'static str,
    },
    /// The peer's send queue stayed full for the whole send timeout.
    #[error(
        "send queue to {to} stayed full for {waited:?}: the peer reads too slowly or is stalled; retry later or raise send_timeout / queue_len"
    )]
    Backpressure {
        /// The peer.
        to: SocketAddr,
        /// How long we waited.
        waited: Duration,
    },
    /// The transport has been closed.
    #[error("transport is closed")]
    Closed,
    /// The listening socket could not be created.
    #[error("cannot listen on {addr}: {source} (is the address in use or not local?)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A simulated address is already taken in the in-memory network.
    #[error("address {addr} is already in use in this in-memory network")]
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// A local socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}
