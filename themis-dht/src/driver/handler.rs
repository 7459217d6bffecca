//! The endpoint's side of the driver: incoming DHT commands go to the driver task, which owns
//! the core, and the handler waits for the core's answer.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use themis_channel::{Handler, PeerAddr};
use tokio::sync::{mpsc, oneshot};

use crate::proto::record::Refusal;
use crate::proto::wire::Response;

/// An incoming command on its way to the driver task.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// The sender as the endpoint authenticated it (secure mode) or as it claims (insecure).
    pub(crate) from: PeerAddr,
    pub(crate) bytes: Bytes,
    pub(crate) reply: oneshot::Sender<Bytes>,
}

/// The [`Handler`] of a DHT node's endpoint: hands every incoming command to the node's driver
/// task and returns the core's answer.
///
/// Made with [`DhtHandler::channel`] together with the [`DhtInbox`] that
/// [`DhtNode::start`](super::DhtNode::start) takes; [`DhtNode::bind_tcp`](super::DhtNode::bind_tcp)
/// and its siblings do both for you. Use it directly to wrap it in a handler of your own (for
/// instance one that serves other protocols on the same endpoint).
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
            reply,
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
            inc.reply.send(Bytes::from_static(b"rsp")).unwrap();
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
