//! Transports: how frames travel between endpoints.
//!
//! A [`Transport`] moves whole frames (every frame starts with `version = 0x01, type`, see
//! PROTOCOL.md) between peers identified by their *listening* socket address. It hides
//! connections: TCP connects lazily, reuses one connection per peer pair in both directions and
//! reaps idle or least-recently-used ones; UDP maps one frame to one datagram. (The seeded
//! in-memory network of the tests lives in the `themis-testkit` crate.)
//!
//! Layering: this module is I/O (tokio). The protocol cores in `proto` never see it; the
//! endpoint reads frames from a transport, feeds them to the cores with `now`, and writes what
//! the cores produce back to the transport.

mod error;
mod frame;
mod stats;
mod tcp;
mod udp;

use std::net::SocketAddr;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

pub use error::TransportError;
pub use frame::check_outgoing_frame;
pub use stats::TransportStats;
pub(crate) use tcp::fuzz_stream;
pub use tcp::{TcpConfig, TcpTransport};
pub use udp::{UdpConfig, UdpTransport};

/// Receives frames straight from a transport's reader tasks: see [`Transport::set_sink`].
pub type FrameSink = std::sync::Arc<dyn Fn(SocketAddr, BytesMut) + Send + Sync>;

/// Told the listening address of a peer that is gone (it refused a connection, or ended one
/// without a goodbye), and the frames for it that were dropped unsent: see
/// [`Transport::set_refused_sink`].
pub type RefusedSink = std::sync::Arc<dyn Fn(SocketAddr, Vec<Bytes>) + Send + Sync>;

/// A message-oriented transport between endpoints.
///
/// Peers are named by their listening [`SocketAddr`] in both directions: [`Transport::send`]
/// takes the address the peer listens on, and [`Transport::recv`] reports the sender's
/// listening address (for TCP it is announced by the connecting side, see PROTOCOL.md), so a
/// reply to the `from` of a received frame reaches its sender.
///
/// The transport checks only what it must to frame and route: a frame is at least
/// [`MIN_FRAME_LEN`](crate::wire::MIN_FRAME_LEN) bytes, starts with
/// [`VERSION`](crate::wire::VERSION), and its type is not in the transport-reserved range
/// [`TRANSPORT_TYPE_RANGE`](crate::wire::TRANSPORT_TYPE_RANGE). Everything else is the
/// endpoint's job.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// The address peers use to reach this transport.
    fn local_addr(&self) -> SocketAddr;

    /// Whether frames can be lost or reordered while the network is healthy.
    ///
    /// `true` (TCP): frames sent to a reachable peer arrive once and in order on one
    /// connection, including across refused dials (retried) and graceful closes (reaping,
    /// tie-break); they are lost only when a connection breaks (peer crash, reset, a timeout)
    /// or the peer stays unreachable for the connect timeout, and frames sent around a
    /// reconnection may arrive out of order. The endpoint still needs timeouts, but no fast
    /// retransmission. `false` (UDP, memory): any frame may be lost, duplicated or
    /// reordered; the endpoint retransmits requests and relies on the channel's replay window.
    fn is_reliable(&self) -> bool;

    /// The largest frame [`Transport::send`] accepts and [`Transport::recv`] can return.
    fn max_frame_len(&self) -> usize;

    /// Queues `frame` for the peer listening on `to`.
    ///
    /// Returns once the frame is handed to the operating system (UDP) or to the bounded
    /// per-connection queue (TCP), waiting at most the configured send timeout when that queue
    /// is full (backpressure). `Ok` does not mean delivered: a peer that is down, unreachable or
    /// partitioned away is found out by the endpoint's timeouts, as with any datagram.
    ///
    /// Cancel safety: if the future is dropped, the frame may or may not have been queued.
    async fn send(&self, to: SocketAddr, frame: Bytes) -> Result<(), TransportError>;

    /// Queues `frame` for `to` at once if that needs no waiting (TCP: an open connection with
    /// room in its queue; UDP: room in the socket's buffer), otherwise gives it back and the
    /// caller uses [`Transport::send`]. For replies sent from a context that must not wait.
    /// Counted like `send`. The default takes nothing.
    fn try_send(&self, to: SocketAddr, frame: Bytes) -> Result<(), Bytes> {
        let _ = to;
        Err(frame)
    }

    /// Waits for the next frame from any peer: `(sender's listening address, frame)`.
    ///
    /// Cancel safe: a dropped `recv` future loses no frame. Several tasks may call it; each
    /// frame goes to one of them. Returns [`TransportError::Closed`] once the transport is
    /// closed and its queue is drained.
    async fn recv(&self) -> Result<(SocketAddr, BytesMut), TransportError>;

    /// Asks the transport to hand the frames it receives from now on to `sink`, called on its
    /// own reader tasks (TCP: one per connection, frames of a connection in order), instead
    /// of queueing them for [`Transport::recv`]: one task hop less per frame. Returns whether
    /// it will; frames it does not hand over (TCP: frames to itself) still come out of
    /// `recv`. `sink` must not block. At most one sink: a second call returns `false`. The
    /// default hands nothing over.
    fn set_sink(&self, sink: FrameSink) -> bool {
        let _ = sink;
        false
    }

    /// Asks the transport to call `sink` with a peer's address when the peer is gone: the
    /// operating system refuses a connection to it (TCP: `ECONNREFUSED` at connect, nothing
    /// listens there), or the peer ended a connection without the transport's goodbye (TCP: an
    /// end of stream or a reset, PROTOCOL.md §5.1: its process ended). With it come the frames
    /// queued for that peer and dropped unwritten (none of them reached it); frames written
    /// before may have. The endpoint fails what waits for that peer at once instead of at its
    /// timeouts. Called on the transport's own tasks; `sink` must not block. At most one sink: a second call returns `false`. The default reports nothing
    /// (a transport that cannot tell, such as UDP, leaves it to the endpoint's timeouts).
    fn set_refused_sink(&self, sink: RefusedSink) -> bool {
        let _ = sink;
        false
    }

    /// Whether the transport's connection slots are near their limits (TCP: half the sockets
    /// reserved for connections waiting for a hello are taken, or nearly every socket is):
    /// the endpoint then asks for a cookie before answering a message 1 (PROTOCOL.md §5.2,
    /// "Cookies"). The default is never.
    fn under_load(&self) -> bool {
        false
    }

    /// A snapshot of this transport's counters.
    fn stats(&self) -> TransportStats;

    /// Graceful shutdown: stops accepting, sends what is queued (bounded by the configured
    /// close timeout), closes every connection and releases the sockets. Idempotent.
    async fn close(&self);
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    fn local_addr(&self) -> SocketAddr {
        (**self).local_addr()
    }
    fn is_reliable(&self) -> bool {
        (**self).is_reliable()
    }
    fn max_frame_len(&self) -> usize {
        (**self).max_frame_len()
    }
    async fn send(&self, to: SocketAddr, frame: Bytes) -> Result<(), TransportError> {
        (**self).send(to, frame).await
    }
    fn try_send(&self, to: SocketAddr, frame: Bytes) -> Result<(), Bytes> {
        (**self).try_send(to, frame)
    }
    async fn recv(&self) -> Result<(SocketAddr, BytesMut), TransportError> {
        (**self).recv().await
    }
    fn set_sink(&self, sink: FrameSink) -> bool {
        (**self).set_sink(sink)
    }
    fn set_refused_sink(&self, sink: RefusedSink) -> bool {
        (**self).set_refused_sink(sink)
    }
    fn under_load(&self) -> bool {
        (**self).under_load()
    }
    fn stats(&self) -> TransportStats {
        (**self).stats()
    }
    async fn close(&self) {
        (**self).close().await;
    }
}
