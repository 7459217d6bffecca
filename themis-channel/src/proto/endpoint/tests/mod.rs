//! Unit tests of the endpoint core: cores exchanging their transmits in memory, on a virtual
//! clock, from fixed seeds. No sockets, no tasks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod bounds;
mod control;
mod cookies;
mod exchange;
mod lossy;
mod props;
mod timing;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use themis_crypto::{IdentityKeypair, NetworkId, NodeId, PublicKey};
use themis_handshake::SeededRandom;

use super::{
    CommandToken, EndpointConfig, EndpointCore, EndpointMetrics, Event, PeerAddr, RequestId,
    TransportInfo,
};
use crate::Error;

pub(super) fn net_id() -> NetworkId {
    NetworkId::new("core-tests").unwrap()
}

pub(super) fn key(seed: u8) -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::from_seed(&[seed; 32]))
}

pub(super) fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 7000 + i as u16))
}

/// A frame on the simulated wire.
#[derive(Clone, Debug)]
pub(super) struct Packet {
    pub(super) from: SocketAddr,
    pub(super) to: SocketAddr,
    pub(super) frame: Bytes,
}

impl Packet {
    /// The frame's type byte.
    pub(super) fn ty(&self) -> u8 {
        self.frame.get(1).copied().unwrap_or(0)
    }
}

/// One endpoint core and what came out of it.
pub(super) struct Node {
    pub(super) core: EndpointCore,
    pub(super) addr: SocketAddr,
    /// Outcomes of requests, in order.
    pub(super) responses: Vec<(RequestId, Result<Bytes, Error>)>,
    /// Outcomes of identify calls.
    pub(super) identities: Vec<(RequestId, Identity)>,
    /// Commands not answered yet (when not answering automatically).
    pub(super) commands: VecDeque<(CommandToken, PeerAddr, Bytes)>,
    /// Every command payload handed to the application, in order.
    pub(super) executed: Vec<Bytes>,
    /// Answer each command at once with `re:` ‖ request.
    pub(super) echo: bool,
}

impl Node {
    pub(super) fn new(i: usize, seed: u8, cfg: EndpointConfig, reliable: bool) -> Self {
        Self::on(i, seed, cfg, reliable, net_id())
    }

    /// A node on `network` (a closed one, say).
    pub(super) fn on(
        i: usize,
        seed: u8,
        cfg: EndpointConfig,
        reliable: bool,
        network: NetworkId,
    ) -> Self {
        let info = TransportInfo {
            reliable,
            max_frame_len: crate::wire::DEFAULT_MAX_FRAME_LEN,
        };
        let rngs = (
            Box::new(SeededRandom::from_u64(u64::from(seed))) as _,
            Box::new(SeededRandom::from_u64(u64::from(seed) + 1000)) as _,
        );
        let core = EndpointCore::new(key(seed), network, cfg, info, rngs).unwrap();
        Self {
            core,
            addr: addr(i),
            responses: Vec::new(),
            identities: Vec::new(),
            commands: VecDeque::new(),
            executed: Vec::new(),
            echo: true,
        }
    }

    pub(super) fn peer(&self) -> PeerAddr {
        PeerAddr {
            id: self.core.local_id(),
            addr: self.addr,
        }
    }

    pub(super) fn metrics(&self) -> EndpointMetrics {
        self.core.metrics()
    }

    /// The outcome of request `id`, if it has one.
    pub(super) fn outcome(&self, id: RequestId) -> Option<&Result<Bytes, Error>> {
        self.responses
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, res)| res)
    }

    /// How many times the handler ran the command `payload`.
    pub(super) fn runs_of(&self, payload: &[u8]) -> usize {
        self.executed.iter().filter(|r| &r[..] == payload).count()
    }

    /// Answers the oldest pending command with `re:` ‖ request.
    pub(super) fn answer_one(&mut self, now: Instant) -> bool {
        let Some((token, _, req)) = self.commands.pop_front() else {
            return false;
        };
        self.core.respond(now, token, &echoed(&req));
        true
    }
}

/// The outcome of an identify call.
pub(super) type Identity = Result<(NodeId, PublicKey), Error>;

pub(super) fn echoed(req: &[u8]) -> Vec<u8> {
    [b"re:".as_slice(), req].concat()
}

/// Cores on a virtual network and clock. Frames wait on `wire` until delivered (in order,
/// unless a test picks them otherwise).
pub(super) struct Net {
    pub(super) nodes: Vec<Node>,
    pub(super) now: Instant,
    pub(super) wire: VecDeque<Packet>,
}

impl Net {
    /// `n` nodes (seeds 1..=n) with the same settings.
    pub(super) fn new(n: usize, cfg: EndpointConfig, reliable: bool) -> Self {
        let nodes = (0..n)
            .map(|i| Node::new(i, i as u8 + 1, cfg.clone(), reliable))
            .collect();
        Self {
            nodes,
            now: Instant::now(),
            wire: VecDeque::new(),
        }
    }

    pub(super) fn peer(&self, i: usize) -> PeerAddr {
        self.nodes[i].peer()
    }

    pub(super) fn request(&mut self, i: usize, to: PeerAddr, payload: &[u8]) -> RequestId {
        let now = self.now;
        let id = self.nodes[i]
            .core
            .request(now, to, Bytes::copy_from_slice(payload));
        self.collect();
        id
    }

    pub(super) fn identify(&mut self, i: usize, at: SocketAddr) -> RequestId {
        let now = self.now;
        let id = self.nodes[i].core.identify(now, at);
        self.collect();
        id
    }

    /// Moves every node's transmits onto the wire and its events into its record (answering
    /// commands of echoing nodes), until nothing more comes out.
    pub(super) fn collect(&mut self) {
        loop {
            let mut more = false;
            for i in 0..self.nodes.len() {
                let now = self.now;
                let n = &mut self.nodes[i];
                while let Some(t) = n.core.poll_transmit() {
                    self.wire.push_back(Packet {
                        from: n.addr,
                        to: t.to,
                        frame: t.frame,
                    });
                }
                while let Some(e) = n.core.poll_event() {
                    match e {
                        Event::Response { id, result } => n.responses.push((id, result)),
                        Event::Identity { id, result } => n.identities.push((id, result)),
                        Event::Command {
                            token,
                            from,
                            request,
                        } => {
                            n.executed.push(request.clone());
                            n.commands.push_back((token, from, request));
                        }
                    }
                }
                if n.echo {
                    while n.answer_one(now) {
                        more = true;
                    }
                }
            }
            if !more {
                break;
            }
        }
    }

    /// Hands `p` to the node listening at its destination (dropped if none).
    pub(super) fn deliver(&mut self, p: Packet) {
        let now = self.now;
        if let Some(n) = self.nodes.iter_mut().find(|n| n.addr == p.to) {
            n.core.handle(now, p.from, BytesMut::from(&p.frame[..]));
        }
        self.collect();
    }

    /// Delivers frames in order until the wire is empty (or `limit` frames went).
    pub(super) fn deliver_all(&mut self) {
        for _ in 0..100_000 {
            let Some(p) = self.wire.pop_front() else {
                return;
            };
            self.deliver(p);
        }
        panic!("the wire never emptied");
    }

    /// The earliest timer of any node.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.nodes
            .iter()
            .filter_map(|n| n.core.poll_timeout())
            .min()
    }

    /// Moves the clock to `t` and runs every node's timers due by then.
    pub(super) fn advance_to(&mut self, t: Instant) {
        self.now = self.now.max(t);
        let now = self.now;
        for n in &mut self.nodes {
            if n.core.poll_timeout().is_some_and(|d| d <= now) {
                n.core.handle_timeout(now);
            }
        }
        self.collect();
    }

    pub(super) fn advance(&mut self, d: Duration) {
        let t = self.now + d;
        self.advance_to(t);
    }

    /// Delivers everything and runs timers until no frame travels and no timer is left within
    /// `horizon` (timers of long-lived state, such as the responder's, may remain).
    pub(super) fn settle(&mut self, horizon: Duration) {
        let end = self.now + horizon;
        for _ in 0..100_000 {
            self.deliver_all();
            match self.next_timeout() {
                Some(t) if t <= end => self.advance_to(t),
                _ => return,
            }
        }
        panic!("the network never settled");
    }

    /// Delivers everything now, without running timers.
    pub(super) fn run(&mut self) {
        self.deliver_all();
    }

    /// Removes (and returns) the frames on the wire matching `pred`.
    pub(super) fn take(&mut self, pred: impl Fn(&Packet) -> bool) -> Vec<Packet> {
        let (taken, kept): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|p| pred(p));
        self.wire = kept.into();
        taken
    }
}

/// The default settings (5 s timeouts, 200 ms first retransmission).
pub(super) fn cfg() -> EndpointConfig {
    EndpointConfig::default()
}

pub(super) fn insecure() -> EndpointConfig {
    let mut c = cfg();
    c.mode = crate::Mode::Insecure;
    c
}

/// `Ok(payload)` of a result, for asserting.
pub(super) fn ok(r: Option<&Result<Bytes, Error>>) -> &[u8] {
    match r {
        Some(Ok(b)) => b,
        other => panic!("expected a response, got {other:?}"),
    }
}
