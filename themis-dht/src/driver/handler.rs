//! The endpoint's side of the driver: incoming DHT commands go to the driver task, which owns
//! the core. On the fast path ([`Handler::try_dispatch`]) the command travels with the
//! endpoint's [`CommandResponder`] and the driver answers it directly; when the driver's inbox
//! is full, the endpoint runs [`Handler::handle`] on a task, which waits for room and then for
//! the core's answer.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use themis_channel::{CommandResponder, Handler, IncomingCommand, PeerAddr};
use tokio::sync::{mpsc, oneshot};

use crate::proto::record::Refusal;
use crate::proto::wire::Response;

/// An incoming command on its way to the driver task.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// The sender as the endpoint authenticated it (secure mode) or as it claims (insecure).
    pub(crate) from: PeerAddr,
    pub(crate) bytes: Bytes,
    pub(crate) reply: Answer,
}

/// Where the core's answer to an incoming command goes.
#[derive(Debug)]
pub(crate) enum Answer {
    /// To a handler task waiting for it.
    Wait(oneshot::Sender<Bytes>),
    /// Straight to the endpoint, which seals and sends it. Dropped unanswered (the driver
    /// stopped, or gave up on it), it answers `busy` so the caller does not wait for its
    /// timeout -- as the handler task of [`Answer::Wait`] does.
    Direct(DirectReply),
}

/// A [`CommandResponder`] that answers `busy` when dropped unanswered.
#[derive(Debug)]
pub(crate) struct DirectReply(Option<CommandResponder>);

impl Drop for DirectReply {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.respond(refused(Refusal::Busy));
        }
    }
}

impl Answer {
    pub(crate) fn send(self, bytes: Bytes) {
        match self {
            Answer::Wait(tx) => {
                let _ = tx.send(bytes);
            }
            Answer::Direct(mut d) => {
                if let Some(r) = d.0.take() {
                    r.respond(bytes);
                }
            }
        }
    }

    /// Nobody waits for the answer any more.
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Answer::Wait(tx) => tx.is_closed(),
            Answer::Direct(_) => false,
        }
    }
}

/// The [`Handler`] of the DHT protocol: hands every incoming DHT command to the node's driver
/// task and returns the core's answer.
///
/// Every DHT command on the wire starts with the DHT's protocol id,
/// [`DhtHandler::PROTOCOL_ID`] (PROTOCOL.md §5.4); register the handler under it in the
/// endpoint's [`HandlerRegistry`](themis_channel::HandlerRegistry), which strips it, next to
/// the handlers of the other protocols the endpoint serves. Made with [`DhtHandler::channel`]
/// together with the [`DhtInbox`] that [`DhtNode::start`](super::DhtNode::start) takes;
/// [`DhtNode::bind_tcp`](super::DhtNode::bind_tcp) and its siblings do all of it for you.
#[derive(Debug, Clone)]
pub struct DhtHandler {
    tx: mpsc::Sender<Incoming>,
    wait: Duration,
}

/// The receiving end of a [`DhtHandler`], consumed by [`DhtNode::start`](super::DhtNode::start).
#[derive(Debug)]
pub struct DhtInbox {
    pub(crate) rx: mpsc::Receiver<Incoming>,
}

impl DhtHandler {
    /// The DHT's protocol id on a shared endpoint: the first byte of every DHT command
    /// (PROTOCOL.md §5.4). The driver prefixes its requests with it.
    pub const PROTOCOL_ID: u8 = 0x01;

    /// A handler and its inbox, with the bounds of `config` (`inbox_len`; the handler waits for
    /// an answer at most 8 × `dht.request_timeout`, the longest a joining node waits).
    pub fn channel(config: &super::DriverConfig) -> (Self, DhtInbox) {
        let (tx, rx) = mpsc::channel(config.inbox_len.max(1));
        let wait = config.dht.request_timeout.saturating_mul(8);
        (Self { tx, wait }, DhtInbox { rx })
    }
}

fn refused(reason: Refusal) -> Bytes {
    Bytes::from(Response::Refused { reason }.encode())
}

#[async_trait]
impl Handler for DhtHandler {
    async fn handle(&self, from: PeerAddr, request: Bytes) -> Bytes {
        let (reply, rx) = oneshot::channel();
        let msg = Incoming {
            from,
            bytes: request,
            reply: Answer::Wait(reply),
        };
        // Backpressure: waits while the driver's inbox is full (the endpoint bounds the
        // handlers running at once).
        if self.tx.send(msg).await.is_err() {
            // The node is shut down: the endpoint may still be draining.
            return refused(Refusal::NotMember);
        }
        match tokio::time::timeout(self.wait, rx).await {
            Ok(Ok(bytes)) => bytes,
            // The driver stopped, or dropped the request (too many unanswered).
            Ok(Err(_)) | Err(_) => refused(Refusal::Busy),
        }
    }

    /// The fast path: queues the command for the driver with its responder if the inbox has
    /// room; otherwise gives it back, so that [`Handler::handle`] waits for room (backpressure)
    /// or, with the node stopped, refuses it.
    #[allow(clippy::result_large_err)] // as the trait: no allocation per command
    fn try_dispatch(&self, command: IncomingCommand) -> Result<(), IncomingCommand> {
        let Ok(slot) = self.tx.try_reserve() else {
            return Err(command);
        };
        let (from, bytes, responder) = command.into_parts();
        slot.send(Incoming {
            from,
            bytes,
            reply: Answer::Direct(DirectReply(Some(responder))),
        });
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use themis_crypto::NodeId;

    fn peer() -> PeerAddr {
        PeerAddr {
            id: NodeId::from_bytes([1; 32]),
            addr: "127.0.0.1:1".parse().unwrap(),
        }
    }

    fn refusal(b: &[u8]) -> Refusal {
        match Response::decode(b, 1 << 16).unwrap() {
            Response::Refused { reason } => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stopped_node_refuses_as_not_member() {
        let (h, inbox) = DhtHandler::channel(&super::super::DriverConfig::default());
        drop(inbox);
        let r = h.handle(peer(), Bytes::from_static(b"x")).await;
        assert_eq!(refusal(&r), Refusal::NotMember);
    }

    #[tokio::test]
    async fn passes_the_authenticated_sender_and_returns_the_answer() {
        let (h, mut inbox) = DhtHandler::channel(&super::super::DriverConfig::default());
        let driver = tokio::spawn(async move {
            let inc = inbox.rx.recv().await.unwrap();
            assert_eq!(inc.from, peer());
            assert_eq!(&inc.bytes[..], b"req");
            inc.reply.send(Bytes::from_static(b"rsp"));
            // the next one is dropped unanswered
            let inc = inbox.rx.recv().await.unwrap();
            drop(inc.reply);
        });
        assert_eq!(
            &h.handle(peer(), Bytes::from_static(b"req")).await[..],
            b"rsp"
        );
        let r = h.handle(peer(), Bytes::from_static(b"req")).await;
        assert_eq!(refusal(&r), Refusal::Busy);
        driver.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_never_comes_is_refused_as_busy() {
        let mut cfg = super::super::DriverConfig::default();
        cfg.dht.request_timeout = Duration::from_millis(10);
        let (h, mut inbox) = DhtHandler::channel(&cfg);
        let keep = tokio::spawn(async move {
            let inc = inbox.rx.recv().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(inc);
        });
        let r = h.handle(peer(), Bytes::from_static(b"req")).await;
        assert_eq!(refusal(&r), Refusal::Busy);
        keep.abort();
    }
}
