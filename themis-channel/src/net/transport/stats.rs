//! Counters every transport keeps. A field a transport has no use for stays zero.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// A snapshot of a transport's counters (monotonic unless marked as a gauge).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct TransportStats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $( pub(crate) $name: AtomicU64, )*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> TransportStats {
                TransportStats {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }
    };
}

counters! {
    /// Gauge: sockets of peer connections currently open (TCP), including ones being set up
    /// or closed.
    connections_open,
    /// Connections established, both dialed and accepted (TCP).
    connections_opened,
    /// Connections we dialed successfully (TCP).
    connections_dialed,
    /// Connections we accepted and that sent a valid hello (TCP).
    connections_accepted,
    /// Dial attempts that failed or timed out (TCP).
    connect_failed,
    /// Incoming connections refused at accept because the socket limit was reached (TCP).
    connections_refused,
    /// Incoming connections refused at accept because their source prefix (/32, /64) held
    /// `max_connections_per_source` sockets, or `max_handshaking_per_source` waiting for a
    /// hello (TCP).
    connections_refused_source,
    /// Gauge: accepted sockets still waiting for their hello (TCP).
    connections_handshaking,
    /// Connections closed to stay under the connection cap, least recently used first (TCP).
    connections_reaped_lru,
    /// Connections closed after the idle timeout (TCP).
    connections_reaped_idle,
    /// Duplicate connections retired by the simultaneous-connect tie-break (TCP).
    connections_retired,
    /// Connections the peer ended without a goodbye: an end of stream or a reset where the
    /// protocol has neither (its process ended, or it aborted the connection). What was
    /// waiting on them fails at once, not at its timeout (TCP).
    connections_lost,
    /// Connections closed for any reason (TCP).
    connections_closed,
    /// Frames handed to the network.
    frames_sent,
    /// Frames delivered to the endpoint.
    frames_received,
    /// Frame bytes handed to the network (without the TCP length prefix).
    bytes_sent,
    /// Frame bytes delivered to the endpoint.
    bytes_received,
    /// Frames lost locally: queued on a connection that failed or was aborted, dropped because
    /// the receive queue was full (UDP, memory), or dropped by simulated loss or partitions
    /// (memory, faulty).
    frames_dropped,
    /// Local send failures reported by the operating system.
    send_errors,
    /// Incoming frames (or length prefixes) larger than `max_frame_len`; TCP closes the
    /// connection.
    rejected_oversize,
    /// Incoming frames shorter than 2 bytes, with a wrong version byte, or with a reserved
    /// type; TCP closes the connection.
    rejected_garbage,
    /// TCP connections closed because a frame was not completed within the frame timeout
    /// (a peer that sends half a frame and stalls).
    rejected_stalled,
    /// TCP connections closed because the hello was missing, late or malformed.
    rejected_hello,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}
