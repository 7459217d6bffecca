//! Calls a node makes to a service it provides itself.
//!
//! The endpoint refuses to send a request to its own node id, but a provider may well be one of
//! the callers of its own service (a balancer that knows this node among the providers picks
//! it like any other). Such a call runs here, through the same checks as a call from the
//! network: the request's parse, the provided services, the access policy (with this node as
//! the caller), and the handler under the endpoint's request timeout.

use bytes::Bytes;
use themis_channel::PeerAddr;

use super::{MeshNode, serve_call};

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

    /// The call as from this node, through the same path as a call from the network
    /// (`serve_call`, after the protocol id, as the endpoint's registry hands it over), under
    /// the endpoint's request timeout.
    async fn local_call(&self, payload: &Bytes) -> Bytes {
        let deadline = self.inner.config.driver.endpoint.request_timeout;
        serve_call(
            &self.inner.services,
            &self.inner.access,
            deadline,
            self.id(),
            None,
            &payload.slice(1..),
        )
        .await
    }
}
