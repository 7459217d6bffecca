//! Calls a node makes to a service it provides itself.
//!
//! The endpoint refuses to send a request to its own node id, but a provider may well be one of
//! the callers of its own service (a balancer that knows this node among the providers picks
//! it like any other). Such a call runs here, through the same checks as a call from the
//! network: the request's parse, the provided services, the access policy (with this node as
//! the caller), and the handler under the endpoint's request timeout.

use bytes::Bytes;
use themis_channel::PeerAddr;

use super::wire::{CallResponse, decode_request, encode_response};
use super::{MeshNode, RemoteErrorKind, refuse};

impl MeshNode {
    /// Sends an encoded service call to `peer`, or runs it here when `peer` is this node.
    pub(super) async fn send_call(
        &self,
        peer: &PeerAddr,
        payload: Bytes,
    ) -> Result<Bytes, themis_channel::Error> {
        if peer.id != self.id() {
            return self.inner.dht.endpoint().request(peer, payload).await;
        }
        Ok(self.local_call(&payload).await)
    }

    async fn local_call(&self, payload: &Bytes) -> Bytes {
        let Some(call) = decode_request(payload) else {
            return refuse(
                RemoteErrorKind::Malformed,
                "service call does not parse (tag, name length 1..=128, UTF-8 name)".into(),
            );
        };
        let handler = self
            .inner
            .services
            .read()
            .ok()
            .and_then(|s| s.get(&call.service).cloned());
        let Some(handler) = handler else {
            return refuse(
                RemoteErrorKind::UnknownService,
                format!("this node does not provide '{}'", call.service),
            );
        };
        let me = self.id();
        let allowed = self
            .inner
            .access
            .read()
            .map(|a| a.check(&call.service, &me).is_ok())
            .unwrap_or(false);
        if !allowed {
            return refuse(
                RemoteErrorKind::AccessDenied,
                format!("caller {me} may not call '{}'", call.service),
            );
        }
        let deadline = self.inner.config.driver.endpoint.request_timeout;
        match tokio::time::timeout(deadline, handler.call(me, call.body)).await {
            Ok(Ok(body)) => encode_response(&CallResponse::Ok(body)),
            Ok(Err(message)) => refuse(RemoteErrorKind::Handler, message),
            Err(_) => refuse(
                RemoteErrorKind::Handler,
                format!(
                    "the handler of '{}' did not answer within {deadline:?}",
                    call.service
                ),
            ),
        }
    }
}
