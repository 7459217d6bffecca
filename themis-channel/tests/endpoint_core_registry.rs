//! Two protocols on one endpoint, told apart by the protocol id (PROTOCOL.md §5.4): each gets
//! its payload without the id, on the fast path or on a task (a command given back by the fast
//! path comes back whole, id included, so `handle` routes it again); an unknown id is refused at
//! once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use themis_channel::wire::UNKNOWN_PROTOCOL;
use themis_channel::{
    Endpoint, EndpointConfig, Handler, HandlerRegistry, IncomingCommand, PeerAddr, UdpConfig,
};
use themis_crypto::{IdentityKeypair, NetworkId};

/// Answers on the fast path: `fast:` ‖ payload.
struct Fast;

#[async_trait]
impl Handler for Fast {
    async fn handle(&self, _: PeerAddr, _: Bytes) -> Bytes {
        unreachable!("every command takes the fast path")
    }
    fn try_dispatch(&self, command: IncomingCommand) -> Result<(), IncomingCommand> {
        let (_, request, responder) = command.into_parts();
        responder.respond(Bytes::from([b"fast:".as_slice(), &request].concat()));
        Ok(())
    }
}

#[tokio::test]
async fn each_protocol_gets_its_own_commands_and_an_unknown_one_is_refused() {
    let net = NetworkId::new("registry").unwrap();
    let slow = Arc::new(|_: PeerAddr, req: Bytes| async move {
        Bytes::from([b"slow:".as_slice(), &req].concat())
    });
    let registry = HandlerRegistry::new()
        .with(0x01, Arc::new(Fast))
        .unwrap()
        .with(0x02, slow)
        .unwrap();
    let node = |seed: u8, handler: Arc<dyn Handler>| {
        let key = Arc::new(IdentityKeypair::from_seed(&[seed; 32]));
        let net = net.clone();
        async move {
            let local = "127.0.0.1:0".parse().unwrap();
            let cfg = EndpointConfig::default();
            Endpoint::bind_udp(local, UdpConfig::default(), key, net, cfg, handler)
                .await
                .unwrap()
        }
    };
    let server = node(1, Arc::new(registry)).await;
    let client = node(2, Arc::new(HandlerRegistry::new())).await;
    let to = server.local_peer();
    let ask = |payload: &'static [u8]| {
        let client = client.clone();
        async move {
            client
                .request(&to, Bytes::from_static(payload))
                .await
                .unwrap()
        }
    };
    assert_eq!(&ask(b"\x01find").await[..], b"fast:find");
    assert_eq!(&ask(b"\x02call").await[..], b"slow:call");
    assert_eq!(&ask(b"\x09what").await[..], &[UNKNOWN_PROTOCOL, 0x09]);
    assert_eq!(&ask(b"").await[..], &[UNKNOWN_PROTOCOL, 0x00]);
    // And the other way: the client serves nothing at all.
    let back = server
        .request(&client.local_peer(), Bytes::from_static(b"\x01x"))
        .await
        .unwrap();
    assert_eq!(&back[..], &[UNKNOWN_PROTOCOL, 0x01]);
    let m = server.metrics();
    assert_eq!((m.commands_received, m.handlers_running), (4, 0));
}
