//! Several protocols on one endpoint, told apart by an explicit protocol id: the first byte of
//! every command payload (PROTOCOL.md §5.4).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Handler, IncomingCommand, PeerAddr};
use crate::Error;
use crate::wire::{RESERVED_PROTOCOL, UNKNOWN_PROTOCOL};

/// A [`Handler`] that serves several protocols on one endpoint. Every command payload starts
/// with a 1-byte protocol id; the registry hands the rest of the payload to the handler
/// registered for that id, fast path ([`Handler::try_dispatch`]) included, and answers a
/// command for an id nobody serves (or an empty one) with the refusal
/// `UNKNOWN_PROTOCOL ‖ id` ([`crate::wire::UNKNOWN_PROTOCOL`]), at once, without a task.
/// Responses carry no protocol id: the requester knows what it asked.
///
/// The ids are assigned in PROTOCOL.md §5.4; each protocol's crate defines its own (the DHT's
/// is `themis_dht::DhtHandler::PROTOCOL_ID`).
///
/// ```
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use themis_channel::{HandlerRegistry, PeerAddr};
///
/// let echo = Arc::new(|_: PeerAddr, req: Bytes| async move { req });
/// let registry = HandlerRegistry::new().with(0x07, echo)?;
/// assert!(registry.with(0x07, Arc::new(|_: PeerAddr, r: Bytes| async move { r })).is_err());
/// # Ok::<(), themis_channel::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    /// A few protocols: a short list beats a table of 256.
    handlers: Vec<(u8, Arc<dyn Handler>)>,
}

impl std::fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self
            .handlers
            .iter()
            .map(|(id, _)| format!("{id:#04x}"))
            .collect();
        f.debug_struct("HandlerRegistry")
            .field("protocols", &ids)
            .finish()
    }
}

impl HandlerRegistry {
    /// A registry serving no protocol yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves protocol `id` with `handler`. Fails for an id already registered and for the
    /// reserved ids [`RESERVED_PROTOCOL`] and [`UNKNOWN_PROTOCOL`].
    pub fn with(mut self, id: u8, handler: Arc<dyn Handler>) -> Result<Self, Error> {
        if id == RESERVED_PROTOCOL || id == UNKNOWN_PROTOCOL {
            return Err(Error::InvalidConfig(format!(
                "protocol id {id:#04x} is reserved"
            )));
        }
        if self.route(id).is_some() {
            return Err(Error::InvalidConfig(format!(
                "protocol id {id:#04x} is registered twice"
            )));
        }
        self.handlers.push((id, handler));
        Ok(self)
    }

    fn route(&self, id: u8) -> Option<&Arc<dyn Handler>> {
        self.handlers.iter().find(|(i, _)| *i == id).map(|(_, h)| h)
    }
}

/// The answer to a command for protocol `id`, which this endpoint does not serve.
fn refusal(id: u8) -> Bytes {
    Bytes::copy_from_slice(&[UNKNOWN_PROTOCOL, id])
}

#[async_trait]
impl Handler for HandlerRegistry {
    async fn handle(&self, from: PeerAddr, request: Bytes) -> Bytes {
        let id = request.first().copied().unwrap_or(RESERVED_PROTOCOL);
        match self.route(id) {
            Some(h) => h.handle(from, request.slice(1..)).await,
            None => refusal(id),
        }
    }

    #[allow(clippy::result_large_err)] // as the trait: no allocation per command
    fn try_dispatch(&self, command: IncomingCommand) -> Result<(), IncomingCommand> {
        let id = command
            .request
            .first()
            .copied()
            .unwrap_or(RESERVED_PROTOCOL);
        let Some(h) = self.route(id) else {
            command.responder.respond(refusal(id));
            return Ok(());
        };
        // The payload without its id is a view of the same buffer: no copy either way.
        let whole = command.request.clone();
        let inner = IncomingCommand {
            request: whole.slice(1..),
            responder: command.responder,
        };
        h.try_dispatch(inner).map_err(|back| IncomingCommand {
            request: whole,
            responder: back.responder,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // Routing on a live endpoint (fast path, given back, refused): tests/endpoint_core_registry.rs.

    #[test]
    fn reserved_and_repeated_ids_are_refused() {
        let h = || Arc::new(|_: PeerAddr, r: Bytes| async move { r }) as Arc<dyn Handler>;
        assert!(HandlerRegistry::new().with(RESERVED_PROTOCOL, h()).is_err());
        assert!(HandlerRegistry::new().with(UNKNOWN_PROTOCOL, h()).is_err());
        let r = HandlerRegistry::new().with(5, h()).unwrap();
        assert!(r.with(5, h()).is_err());
    }

    #[test]
    fn handle_strips_the_id_and_refuses_an_unknown_or_missing_one() {
        let echo = Arc::new(|_: PeerAddr, r: Bytes| async move { r });
        let r = HandlerRegistry::new().with(0x02, echo).unwrap();
        let peer = PeerAddr {
            id: themis_crypto::NodeId::from_bytes([1; 32]),
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ask = |b: &'static [u8]| rt.block_on(r.handle(peer, Bytes::from_static(b)));
        assert_eq!(&ask(b"\x02call")[..], b"call");
        assert_eq!(&ask(b"\x03x")[..], &[UNKNOWN_PROTOCOL, 0x03]);
        assert_eq!(&ask(b"")[..], &[UNKNOWN_PROTOCOL, RESERVED_PROTOCOL]);
    }
}
