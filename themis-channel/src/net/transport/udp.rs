//! UDP: one socket per transport, one frame per datagram, no connection state.
//!
//! Frames larger than `max_frame_len` are refused with [`TransportError::FrameTooLarge`], never
//! split: splitting would need reassembly buffers that any sender could fill (state and memory
//! held on behalf of unauthenticated peers), and large messages have TCP. The default limit is
//! [`UdpConfig::DEFAULT_MAX_FRAME_LEN`] (1,452 bytes: a 1,500-byte Ethernet MTU minus a 40-byte
//! IPv6 and an 8-byte UDP header), which crosses any ordinary path without IP fragmentation;
//! raise it up to [`UDP_MAX_PAYLOAD`](crate::wire::UDP_MAX_PAYLOAD) on loopback or known networks.

use std::{io, net::SocketAddr, sync::Arc};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::{net::UdpSocket, sync::mpsc};
use tokio_util::sync::CancellationToken;

use super::{
    Transport, TransportError, TransportStats,
    frame::{Malformed, check_incoming, check_outgoing_frame},
    stats::Counters,
};
use crate::wire::UDP_MAX_PAYLOAD;

/// Settings of a [`UdpTransport`].
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// Largest frame sent or accepted (default [`UdpConfig::DEFAULT_MAX_FRAME_LEN`], at most
    /// [`UDP_MAX_PAYLOAD`](crate::wire::UDP_MAX_PAYLOAD)). Larger datagrams received are dropped and counted as oversize.
    pub max_frame_len: usize,
    /// Datagrams received and not yet taken by `recv` (default 1024); beyond it new ones are
    /// dropped and counted in `frames_dropped`, as a network would drop them.
    pub recv_queue_len: usize,
}

impl UdpConfig {
    /// Path-MTU-safe default: 1,500 − 40 (IPv6) − 8 (UDP).
    pub const DEFAULT_MAX_FRAME_LEN: usize = 1_500 - 40 - 8;
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            max_frame_len: Self::DEFAULT_MAX_FRAME_LEN,
            recv_queue_len: 1024,
        }
    }
}

/// Frames over UDP datagrams.
#[derive(Debug)]
pub struct UdpTransport {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    max_frame_len: usize,
    stats: Arc<Counters>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<(SocketAddr, BytesMut)>>,
    shutdown: CancellationToken,
}

impl UdpTransport {
    /// Binds one socket on `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, cfg: UdpConfig) -> Result<Self, TransportError> {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| TransportError::Bind { addr, source })?;
        let local = socket.local_addr().map_err(|source| TransportError::Io {
            context: "reading the bound address",
            source,
        })?;
        let socket = Arc::new(socket);
        let stats = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel(cfg.recv_queue_len.max(1));
        let shutdown = CancellationToken::new();
        let max_frame_len = cfg.max_frame_len.min(UDP_MAX_PAYLOAD);
        tokio::spawn(recv_loop(
            socket.clone(),
            stats.clone(),
            tx,
            max_frame_len,
            shutdown.clone(),
        ));
        Ok(Self {
            socket,
            local,
            max_frame_len,
            stats,
            incoming: tokio::sync::Mutex::new(rx),
            shutdown,
        })
    }
}

impl Drop for UdpTransport {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn recv_loop(
    socket: Arc<UdpSocket>,
    stats: Arc<Counters>,
    tx: mpsc::Sender<(SocketAddr, BytesMut)>,
    max: usize,
    shutdown: CancellationToken,
) {
    // One byte more than the largest datagram, so a truncated read cannot pass for a full one.
    let mut buf = vec![0u8; UDP_MAX_PAYLOAD + 1];
    loop {
        let got = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let (n, from) = match got {
            Ok(x) => x,
            // An ICMP port-unreachable from an earlier send surfaces here on Linux; it says
            // nothing about this socket.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "UDP receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(datagram) = buf.get(..n) else {
            continue;
        };
        if n > max {
            Counters::inc(&stats.rejected_oversize);
            continue;
        }
        match check_incoming(datagram) {
            Ok(()) => {}
            Err(Malformed::Garbage | Malformed::Reserved) => {
                Counters::inc(&stats.rejected_garbage);
                continue;
            }
        }
        match tx.try_send((from, BytesMut::from(datagram))) {
            Ok(()) => {
                Counters::inc(&stats.frames_received);
                Counters::add(&stats.bytes_received, n as u64);
            }
            Err(mpsc::error::TrySendError::Full(_)) => Counters::inc(&stats.frames_dropped),
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

#[async_trait]
impl Transport for UdpTransport {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn is_reliable(&self) -> bool {
        false
    }

    fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    fn try_send(&self, to: SocketAddr, frame: Bytes) -> Result<(), Bytes> {
        if self.shutdown.is_cancelled() || check_outgoing_frame(&frame, self.max_frame_len).is_err()
        {
            return Err(frame);
        }
        match self.socket.try_send_to(&frame, to) {
            Ok(_) => {
                Counters::inc(&self.stats.frames_sent);
                Counters::add(&self.stats.bytes_sent, frame.len() as u64);
                Ok(())
            }
            // Full buffer, or an error `send` reports properly.
            Err(_) => Err(frame),
        }
    }

    async fn send(&self, to: SocketAddr, frame: Bytes) -> Result<(), TransportError> {
        if self.shutdown.is_cancelled() {
            return Err(TransportError::Closed);
        }
        check_outgoing_frame(&frame, self.max_frame_len)?;
        match self.socket.send_to(&frame, to).await {
            Ok(_) => {
                Counters::inc(&self.stats.frames_sent);
                Counters::add(&self.stats.bytes_sent, frame.len() as u64);
                Ok(())
            }
            // The kernel's buffer is full or the peer's port is closed: to a datagram
            // transport that is loss, which the endpoint handles by retransmitting.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::WouldBlock
                ) =>
            {
                Counters::inc(&self.stats.frames_dropped);
                Ok(())
            }
            Err(source) => {
                Counters::inc(&self.stats.send_errors);
                Err(TransportError::Io {
                    context: "sending a UDP datagram",
                    source,
                })
            }
        }
    }

    async fn recv(&self) -> Result<(SocketAddr, BytesMut), TransportError> {
        self.incoming
            .lock()
            .await
            .recv()
            .await
            .ok_or(TransportError::Closed)
    }

    fn stats(&self) -> TransportStats {
        self.stats.snapshot()
    }

    async fn close(&self) {
        self.shutdown.cancel();
    }
}
