//! The THEMIS sequenced secure cmd/rsp channel (paper §5.2, Figure 3) and the transports that
//! carry its frames.
//!
//! Transports move whole frames between peers named by their listening address: TCP
//! ([`TcpTransport`]), UDP ([`UdpTransport`]) and a seeded in-memory network ([`MemNetwork`])
//! for deterministic simulations, all behind the [`Transport`] trait.
//!
//! ```
//! use bytes::Bytes;
//! use themis_channel::{MemConfig, MemNetwork, Transport};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build()?.block_on(async {
//! let net = MemNetwork::new(MemConfig { seed: 7, ..MemConfig::default() });
//! let (a, b) = (net.bind(), net.bind());
//! a.send(b.local_addr(), Bytes::from_static(&[0x01, 0x20, 42])).await?;
//! let (from, frame) = b.recv().await?;
//! assert_eq!((from, &frame[..]), (a.local_addr(), &[0x01, 0x20, 42][..]));
//! # Ok::<(), themis_channel::TransportError>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod net;

pub use net::transport::{
    DEFAULT_MAX_FRAME_LEN, FRAME_VERSION, FaultConfig, FaultyTransport, LinkConfig, MIN_FRAME_LEN,
    MemConfig, MemNetwork, MemTransport, TRANSPORT_GOODBYE, TRANSPORT_GOODBYE_ACK, TRANSPORT_HELLO,
    TRANSPORT_TYPE_RANGE, TRANSPORT_WELCOME, TcpConfig, TcpTransport, TraceEvent, Transport,
    TransportError, TransportStats, UDP_MAX_PAYLOAD, UdpConfig, UdpTransport,
};
