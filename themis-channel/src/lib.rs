//! The THEMIS secure communication channel (paper §5.1.2, Figure 3): sequenced command and
//! response frames over a session from the handshake, with replay protection, request matching
//! and rekey limits — plus an insecure mode with the same framing in plaintext.
//!
//! The core ([`Channel`]) is sans-I/O: it turns payloads into frames and frames into payloads,
//! taking `now` as an argument; the endpoint that moves frames over a transport drives it.
//!
//! ```
//! # use std::time::Instant;
//! # use themis_crypto::{EphemeralSecret, IdentityKeypair, NetworkId, SessionKeys, Transcript};
//! # use themis_handshake::{Role, Session, SessionId};
//! use bytes::BytesMut;
//! use themis_channel::{Channel, ChannelConfig, Incoming};
//!
//! # let net = NetworkId::new("doc")?;
//! # let (a, b) = (IdentityKeypair::from_seed(&[1; 32]), IdentityKeypair::from_seed(&[2; 32]));
//! # let shared = EphemeralSecret::from_bytes([3; 32])
//! #     .diffie_hellman(&EphemeralSecret::from_bytes([4; 32]).public())?;
//! # let th = Transcript::digest("doc", &[]);
//! # let now = Instant::now();
//! # let session = |role, me: &IdentityKeypair, peer: &IdentityKeypair| {
//! #     let k = SessionKeys::derive(&shared, &th);
//! #     let (send_key, recv_key) = match role {
//! #         Role::Initiator => (k.initiator_to_responder, k.responder_to_initiator),
//! #         Role::Responder => (k.responder_to_initiator, k.initiator_to_responder),
//! #     };
//! #     Session { role, network: net.clone(), local_id: me.node_id(&net),
//! #         peer_id: peer.node_id(&net), peer_public: peer.public(), session_id: SessionId([7; 8]),
//! #         transcript_hash: th, send_key, recv_key, established_at: now }
//! # };
//! # let (session_a, session_b) =
//! #     (session(Role::Initiator, &a, &b), session(Role::Responder, &b, &a));
//! // `session_a` and `session_b` come from a finished handshake between A and B.
//! let mut alice = Channel::secure(session_a, ChannelConfig::default())?;
//! let mut bob = Channel::secure(session_b, ChannelConfig::default())?;
//!
//! let mut wire = BytesMut::new();
//! let seq = alice.seal_command(b"find 42", &mut wire, now)?;
//! let Incoming::Command { seq: got, payload } = bob.open(wire.split(), now)? else {
//!     unreachable!("alice sent a command")
//! };
//! assert_eq!((got, &payload[..]), (seq, &b"find 42"[..]));
//!
//! bob.seal_response(seq, b"node 17", &mut wire, now)?;
//! let frame = wire.split();
//! let reply = alice.open(frame.clone(), now)?;
//! assert_eq!(reply, Incoming::Response { seq, payload: BytesMut::from(&b"node 17"[..]) });
//! // A replayed response is refused: the request is no longer outstanding.
//! assert!(matches!(
//!     alice.open(frame, now),
//!     Err(themis_channel::Error::DuplicateResponse { .. })
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! PROTOCOL.md gives the frame layout byte by byte.
//!
//! Transports move whole frames between peers named by their listening address: TCP
//! ([`TcpTransport`]) and UDP ([`UdpTransport`]), behind the [`Transport`] trait (the tests'
//! seeded in-memory network, in the `themis-testkit` crate, is one more).
//!
//! ```
//! use bytes::Bytes;
//! use themis_channel::{TcpConfig, TcpTransport, Transport};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let any = "127.0.0.1:0".parse()?;
//! let a = TcpTransport::bind(any, TcpConfig::default()).await?;
//! let b = TcpTransport::bind(any, TcpConfig::default()).await?;
//! a.send(b.local_addr(), Bytes::from_static(&[0x01, 0x20, 42])).await?;
//! let (from, frame) = b.recv().await?;
//! assert_eq!((from, &frame[..]), (a.local_addr(), &[0x01, 0x20, 42][..]));
//! # a.close().await;
//! # b.close().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The [`Endpoint`] ties it together: given a peer's id and address it runs the handshake on
//! first contact, caches the session by node id, and carries commands and responses over it;
//! incoming commands go to the application's [`Handler`] (or, for several protocols on one
//! endpoint, to a [`HandlerRegistry`] that routes them by their protocol id). Its protocol logic
//! is a sans-I/O state machine like the channel's, which the tokio driver runs over the transport.
//! Every byte value and size of the wire format is in [`wire`].
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use themis_channel::{Endpoint, EndpointConfig, Handler, PeerAddr, TcpConfig};
//! use themis_crypto::{IdentityKeypair, NetworkId};
//!
//! struct Echo;
//! #[async_trait::async_trait]
//! impl Handler for Echo {
//!     async fn handle(&self, _from: PeerAddr, request: Bytes) -> Bytes {
//!         request
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let (net, any) = (NetworkId::new("doc")?, "127.0.0.1:0".parse()?);
//! let mut nodes = Vec::new();
//! for seed in [1, 2] {
//!     let key = Arc::new(IdentityKeypair::from_seed(&[seed; 32]));
//!     let (tcp, cfg) = (TcpConfig::default(), EndpointConfig::default());
//!     nodes.push(Endpoint::bind_tcp(any, tcp, key, net.clone(), cfg, Arc::new(Echo)).await?);
//! }
//! let (alice, bob) = (&nodes[0], &nodes[1]);
//! // Bob is known by (node id, address); the handshake happens on this first request.
//! let reply = alice.request(&bob.local_peer(), Bytes::from_static(b"ping")).await?;
//! assert_eq!(&reply[..], b"ping");
//! assert_eq!(alice.metrics().handshakes_initiated_ok, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod error;
mod net;
mod proto;
pub mod wire;

pub use error::{Error, Result};

/// Fuzzing access to the decoders that are not public (`fuzz/`). Not part of the API: may
/// change without notice.
#[doc(hidden)]
pub mod fuzz {
    use bytes::BytesMut;

    use crate::{check_outgoing_frame, peek_header};

    /// A frame under arbitrary bytes: the header parser (what parses must encode back to the
    /// frame's first bytes), the control messages (what decodes must round-trip) and the
    /// transport's frame check. `Err` names the check that failed (a bug).
    pub fn frame(bytes: &[u8]) -> Result<(), String> {
        if let Ok(h) = peek_header(bytes) {
            let mut out = BytesMut::new();
            h.encode(&mut out);
            if bytes.get(..out.len()) != Some(&out[..]) || out.len() != h.len() {
                return Err(format!("header {h:?} does not round-trip"));
            }
            if bytes.len() < h.kind().overhead() {
                return Err(format!("header {h:?} accepted from a frame too short"));
            }
        }
        crate::proto::endpoint::fuzz_control(bytes)?;
        let _ = check_outgoing_frame(bytes, crate::wire::DEFAULT_MAX_FRAME_LEN);
        Ok(())
    }

    /// The TCP length-prefix framing under arbitrary bytes (the first two pick the size limit
    /// and the read size): read incrementally, it yields the frames a one-shot parse finds,
    /// and the hello frames among them round-trip. Returns the number of frames; `Err` names
    /// the check that failed (a bug).
    pub fn tcp_stream(bytes: &[u8]) -> Result<usize, String> {
        crate::net::transport::fuzz_stream(bytes)
    }
}
pub use net::endpoint::{
    CommandResponder, Endpoint, EndpointConfig, EndpointMetrics, Handler, HandlerRegistry,
    IncomingCommand, PeerAddr,
};
pub use net::transport::{
    FrameSink, RefusedSink, TcpConfig, TcpTransport, Transport, TransportError, TransportStats,
    UdpConfig, UdpTransport, check_outgoing_frame,
};
pub use proto::{
    Channel, ChannelConfig, ChannelStats, FrameHeader, FrameKind, Incoming, KeyedLimiter, Mode,
    SourcePrefix, TokenBucket, peek_header,
};
