//! Frames on their way to the transport, in order per destination.
//!
//! A frame goes out at once with [`Transport::try_send`] when the transport can take it without
//! waiting. Otherwise (a TCP connection still opening or with a full queue, a transport
//! without `try_send`) it is sent by a future the driver task polls, and every later frame to
//! that destination queues behind it: the core relies on frames to one peer leaving in the
//! order it produced them (message 3 before the command it precedes).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;

use crate::Transport;
use crate::proto::endpoint::Transmit;

/// Frames queued behind a send in progress, per destination; beyond it the oldest is dropped
/// (the core's retransmissions and timeouts treat it as lost, as on any lossy network).
const MAX_QUEUED_PER_DESTINATION: usize = 1024;

/// Destinations with a send in progress; a frame for yet another one is dropped.
const MAX_BUSY_DESTINATIONS: usize = 4096;

/// A finished send: the destination and the bytes it sent.
pub(super) type Sent = (SocketAddr, u64);

pub(super) struct Outbox {
    transport: Arc<dyn Transport>,
    /// Destinations with a send in progress, and the frames waiting behind it.
    busy: HashMap<SocketAddr, VecDeque<Bytes>>,
    sending: FuturesUnordered<BoxFuture<'static, Sent>>,
    bytes_out: u64,
}

impl Outbox {
    pub(super) fn new(transport: Arc<dyn Transport>) -> Self {
        Self {
            transport,
            busy: HashMap::new(),
            sending: FuturesUnordered::new(),
            bytes_out: 0,
        }
    }

    /// Frame bytes the transport has taken.
    pub(super) fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// No send in progress.
    pub(super) fn is_idle(&self) -> bool {
        self.sending.is_empty()
    }

    /// The next send to finish (pending while none is in progress).
    pub(super) async fn next(&mut self) -> Option<Sent> {
        self.sending.next().await
    }

    /// Sends `t`, after whatever is still queued for its destination.
    pub(super) fn send(&mut self, t: Transmit) {
        if let Some(queue) = self.busy.get_mut(&t.to) {
            if queue.len() >= MAX_QUEUED_PER_DESTINATION {
                queue.pop_front();
                tracing::debug!(to = %t.to, "send queue full: oldest frame dropped");
            }
            queue.push_back(t.frame);
            return;
        }
        let len = t.frame.len() as u64;
        match self.transport.try_send(t.to, t.frame) {
            Ok(()) => self.bytes_out += len,
            Err(_) if self.busy.len() >= MAX_BUSY_DESTINATIONS => {
                tracing::debug!(to = %t.to, "too many destinations waiting: frame dropped");
            }
            Err(frame) => {
                self.busy.insert(t.to, VecDeque::new());
                self.start(t.to, vec![frame]);
            }
        }
    }

    /// A send finished: counts it, and sends what queued behind it meanwhile.
    pub(super) fn done(&mut self, (to, bytes): Sent) {
        self.bytes_out += bytes;
        match self.busy.get_mut(&to) {
            Some(queue) if !queue.is_empty() => {
                let frames = queue.drain(..).collect();
                self.start(to, frames);
            }
            _ => {
                self.busy.remove(&to);
            }
        }
    }

    fn start(&mut self, to: SocketAddr, frames: Vec<Bytes>) {
        let transport = self.transport.clone();
        self.sending.push(Box::pin(async move {
            let mut sent = 0;
            for frame in frames {
                let len = frame.len() as u64;
                match transport.send(to, frame).await {
                    Ok(()) => sent += len,
                    Err(e) => tracing::debug!(%to, error = %e, "send failed"),
                }
            }
            (to, sent)
        }));
    }
}
