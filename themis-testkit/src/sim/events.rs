//! The simulator as the cores' driver: what their outputs become (messages through the network
//! model, timers) and what each event does when its time comes. The driver's contract is the
//! one `themis_dht`'s crate documentation gives for every driver.

use std::time::Duration;

use themis_crypto::NodeId;
use themis_dht::fuzz::{closer_answer, find_target, forge_owner_answer};
use themis_dht::{Event, Output, Peer, Reply, RequestFailure};

use super::agenda::Due;
use super::traffic::{IDENTIFY, kind_of};
use super::{Adversary, Sim};
use crate::net::Fate;
use crate::ring::in_half_open;

/// Start value of the trace hash.
pub(super) const TRACE_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// Something due at a point of virtual time.
pub(super) enum Ev {
    /// A command arriving at `to`.
    Request {
        to: usize,
        from: usize,
        request_id: u64,
        expect: Option<NodeId>,
        bytes: Vec<u8>,
    },
    /// An answer arriving at `to`.
    Response {
        to: usize,
        from: usize,
        request_id: u64,
        bytes: Vec<u8>,
    },
    /// A request of `to` that failed (no such address, wrong node).
    Failure {
        to: usize,
        request_id: u64,
        failure: RequestFailure,
    },
    /// An identify (`Output::Identify`) of node `from` arriving at `to`.
    Identify {
        to: usize,
        from: usize,
        request_id: u64,
    },
    /// The answer to node `to`'s identify: node `from` is there.
    Identified {
        to: usize,
        from: usize,
        request_id: u64,
    },
}

/// Who waits for the answer behind a token handed to a core with a request.
pub(super) struct TokenInfo {
    requester: usize,
    request_id: u64,
    forge: bool,
    /// Kind of the request ([`super::traffic::KINDS`]), to count its answer under.
    kind: u8,
}

/// One word into the trace hash: for a given hash a bijection of the word and for a given
/// word one of the hash, so runs that differ in one message end with different hashes. A word
/// at a time: the byte-serial FNV-1a it replaces cost 5% of the simulator's CPU.
fn mix(h: u64, w: u64) -> u64 {
    (h.rotate_left(23) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Sim {
    fn schedule(&mut self, delay: Duration, ev: Ev) {
        self.queue.push(self.now.saturating_add(delay), ev);
    }

    /// The model's verdict on a message from node `from` to `to` (an address) now.
    fn route(&mut self, from: usize, to: std::net::SocketAddr) -> Fate {
        self.model.send(self.now, Self::addr(from), to)
    }

    fn trace_mix(&mut self, kind: u8, node: usize, bytes: &[u8]) {
        let now = u64::try_from(self.now.as_nanos()).unwrap_or(u64::MAX);
        let mut h = mix(self.trace, now);
        h = mix(h, u64::from(kind));
        h = mix(h, node as u64);
        h = mix(h, bytes.len() as u64);
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = mix(h, u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            h = mix(h, u64::from_le_bytes(b));
        }
        self.trace = h;
    }

    /// Takes node `i`'s outputs after an input: messages go into the network model, events to
    /// the node's list, and its next timeout into the queue.
    pub(super) fn drain(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].node.poll_output() {
            match out {
                Output::Send {
                    request_id,
                    to,
                    expect,
                    bytes,
                } => {
                    self.trace_mix(1, i, &bytes);
                    self.traffic.request(kind_of(&bytes), bytes.len());
                    let fate = self.route(i, to);
                    match self.node_at(to) {
                        // nobody there: the refusal travels back like an answer would
                        None => self.fail(fate, i, request_id, RequestFailure::Unreachable),
                        Some(j) => self.transmit(fate, bytes, |bytes| Ev::Request {
                            to: j,
                            from: i,
                            request_id,
                            expect,
                            bytes,
                        }),
                    }
                }
                Output::Identify { request_id, to } => {
                    self.traffic.request(IDENTIFY, 0);
                    let fate = self.route(i, to);
                    match self.node_at(to) {
                        None => self.fail(fate, i, request_id, RequestFailure::Unreachable),
                        Some(j) => self.transmit(fate, Vec::new(), |_| Ev::Identify {
                            to: j,
                            from: i,
                            request_id,
                        }),
                    }
                }
                Output::Respond { token, mut bytes } => {
                    self.trace_mix(2, i, &bytes);
                    let Some(info) = self.tokens.remove(&token) else {
                        continue;
                    };
                    self.traffic.response(usize::from(info.kind), bytes.len());
                    if info.forge {
                        bytes = self.forge(i, &bytes);
                    }
                    self.answer(i, info.requester, info.request_id, bytes);
                }
                Output::Event(e) => {
                    if let (
                        Some(log),
                        Event::Found { query, .. } | Event::Providers { query, .. },
                    ) = (self.completions.as_mut(), &e)
                    {
                        log.push((i, *query, self.now));
                    }
                    if matches!(e, Event::JoinFailed) {
                        self.joins_failed += 1;
                    }
                    if !matches!(
                        e,
                        Event::SuccessorChanged { .. } | Event::PredecessorChanged { .. }
                    ) {
                        self.nodes[i].events.push(e);
                    }
                }
            }
        }
        let t = self.nodes[i].node.poll_timeout();
        if t != self.nodes[i].scheduled {
            self.nodes[i].scheduled = t;
            let deadline = t.map(|at| at.saturating_duration_since(self.base));
            self.queue.set_timer(i, deadline, self.now);
        }
    }

    /// Schedules the arrival of each copy of a message the model lets through, as the event
    /// `ev` makes of it (the bytes are copied only for a duplicate).
    fn transmit(&mut self, fate: Fate, bytes: Vec<u8>, ev: impl Fn(Vec<u8>) -> Ev) {
        if let Fate::Delivered { delay, copy } = fate {
            if let Some(copy) = copy {
                self.schedule(copy, ev(bytes.clone()));
            }
            self.schedule(delay, ev(bytes));
        }
    }

    /// Reports `failure` of request `request_id` to node `to` when (and if) the message
    /// carrying it arrives: one copy is enough.
    fn fail(&mut self, fate: Fate, to: usize, request_id: u64, failure: RequestFailure) {
        if let Some(delay) = fate.delays().next() {
            let ev = Ev::Failure {
                to,
                request_id,
                failure,
            };
            self.schedule(delay, ev);
        }
    }

    /// Sends node `from`'s answer `bytes` to request `request_id` of node `to`.
    fn answer(&mut self, from: usize, to: usize, request_id: u64, bytes: Vec<u8>) {
        let fate = self.route(from, Self::addr(to));
        self.transmit(fate, bytes, |bytes| Ev::Response {
            to,
            from,
            request_id,
            bytes,
        });
    }

    /// An adversary's answer to a find, replacing the honest one.
    fn adversarial_find(&mut self, j: usize, target: &NodeId) -> Vec<u8> {
        let me = self.nodes[j].node.id();
        let live = self.live();
        let mut peers: Vec<Peer> = Vec::new();
        let adv = self.nodes[j].adversary;
        for _ in 0..16 {
            if peers.len() >= 3 || live.is_empty() {
                break;
            }
            let k = live[self.rng.usize(..live.len())];
            let p = self.nodes[k].node.peer();
            let regress = !in_half_open(&me, &p.id, target);
            if adv == Some(Adversary::RandomFinds) || regress {
                peers.push(p);
            }
        }
        closer_answer(peers)
    }

    fn forge(&mut self, j: usize, bytes: &[u8]) -> Vec<u8> {
        forge_owner_answer(bytes, &self.nodes[j].identity, &self.network, Self::addr(j))
    }

    /// Whether a message from node `from` sent to node `to` arrives at `at`: the network model
    /// lets it through and `to` is alive.
    fn arrives(&mut self, at: Duration, from: usize, to: usize) -> bool {
        self.model.arrives(at, Self::addr(from), Self::addr(to)) && self.nodes[to].alive
    }

    /// Makes virtual time `at` the present and handles what is due.
    pub(super) fn step(&mut self, at: Duration, due: Due) {
        self.now = at;
        self.handled += 1;
        let ev = match due {
            Due::Event(ev) => ev,
            Due::Timer { node } => {
                let now = self.now();
                let n = &mut self.nodes[node];
                if !n.alive {
                    self.queue.drop_timer(node);
                    return;
                }
                n.scheduled = None;
                n.node.handle_timeout(now);
                self.trace_mix(3, node, &[]);
                self.drain(node);
                return;
            }
        };
        match ev {
            Ev::Request {
                to,
                from,
                request_id,
                expect,
                bytes,
            } => self.on_request(to, from, request_id, expect, &bytes),
            Ev::Response {
                to,
                from,
                request_id,
                bytes,
            } => {
                if !self.arrives(at, from, to) {
                    return;
                }
                self.delivered += 1;
                let now = self.now();
                let from = self.nodes[from].node.id();
                let reply = Reply {
                    from,
                    bytes: &bytes,
                };
                self.nodes[to]
                    .node
                    .handle_response(now, request_id, Ok(reply));
                self.drain(to);
            }
            Ev::Identify {
                to,
                from,
                request_id,
            } => {
                // the endpoint answers IDENTIFY itself: any live node at the address does
                if !self.arrives(at, from, to) {
                    return;
                }
                self.traffic.response(IDENTIFY, 0);
                let fate = self.route(to, Self::addr(from));
                self.transmit(fate, Vec::new(), |_| Ev::Identified {
                    to: from,
                    from: to,
                    request_id,
                });
            }
            Ev::Identified {
                to,
                from,
                request_id,
            } => {
                if !self.arrives(at, from, to) {
                    return;
                }
                let now = self.now();
                let id = self.nodes[from].node.id();
                self.nodes[to]
                    .node
                    .handle_identified(now, request_id, Ok(id));
                self.drain(to);
            }
            Ev::Failure {
                to,
                request_id,
                failure,
            } => {
                if !self.nodes[to].alive {
                    return;
                }
                let now = self.now();
                self.nodes[to]
                    .node
                    .handle_response(now, request_id, Err(failure));
                self.drain(to);
            }
        }
    }

    /// A request arriving at node `to`: refused if it expects another node, answered by an
    /// adversary itself, or handed to the core with a token for its answer.
    fn on_request(
        &mut self,
        to: usize,
        from: usize,
        request_id: u64,
        expect: Option<NodeId>,
        bytes: &[u8],
    ) {
        let arrived = self
            .model
            .arrives(self.now, Self::addr(from), Self::addr(to));
        if !self.nodes[to].alive || !arrived {
            return; // crashed or cut off: the requester times out
        }
        self.delivered += 1;
        if expect.is_some_and(|e| e != self.nodes[to].node.id()) {
            let fate = self.route(to, Self::addr(from));
            self.fail(fate, from, request_id, RequestFailure::Refused);
            return;
        }
        let adv = self.nodes[to].adversary;
        // only an adversary needs the target (decoding every request a second time was 14% of
        // the simulator's instructions)
        let target = adv.and_then(|_| find_target(bytes));
        if let (Some(Adversary::RegressFinds | Adversary::RandomFinds), Some(target)) =
            (adv, &target)
        {
            let resp = self.adversarial_find(to, target);
            self.answer(to, from, request_id, resp);
            return;
        }
        let forge = adv == Some(Adversary::ForgeRecords) && target.is_some();
        let token = self.next_token;
        self.next_token += 1;
        self.tokens.insert(
            token,
            TokenInfo {
                requester: from,
                request_id,
                forge,
                kind: u8::try_from(kind_of(bytes)).unwrap_or(u8::MAX),
            },
        );
        let now = self.now();
        let from_peer = self.nodes[from].node.peer();
        self.nodes[to]
            .node
            .handle_request(now, from_peer, token, bytes);
        self.drain(to);
    }
}
