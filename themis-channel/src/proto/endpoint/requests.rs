//! Our requests (PROTOCOL.md §5.2, "Outgoing request"): admission under `max_in_flight` and
//! `max_in_flight_per_peer`, a channel (joining or starting a handshake), sealing, waiting
//! for the response with retransmissions on unreliable transports, and exactly one outcome.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::sessions::ChanKey;
use super::timers::{Resend, TimerKey};
use super::{EndpointCore, Event, PeerAddr, RequestId};
use crate::{Channel, Error, Mode};

/// One request of ours.
pub(super) struct Request {
    pub(super) peer: PeerAddr,
    /// `request_timeout` after the request was made: it fails then, whatever it waits for.
    pub(super) deadline: Instant,
    pub(super) state: ReqState,
}

impl Request {
    /// Its command has been sent (it may have run at the peer).
    pub(super) fn is_sent(&self) -> bool {
        matches!(self.state, ReqState::Sent { .. })
    }
}

/// Where a request stands; each state holds the slots of the ones before it.
pub(super) enum ReqState {
    /// Waiting for one of the `max_in_flight` slots.
    QueuedTotal { payload: Bytes },
    /// Holds a `max_in_flight` slot; waits for one of the peer's `max_in_flight_per_peer`.
    QueuedPeer { payload: Bytes },
    /// Holds both slots; waits for our handshake `nonce` with the peer (at most
    /// `handshake_timeout`, and not past its deadline: its timer).
    Handshake { payload: Bytes, nonce: [u8; 32] },
    /// Holds both slots; the command `seq` went out on channel `(key, generation)`. `frame` is
    /// re-sent as is on unreliable transports until the deadline, so the peer's replay window
    /// and response cache see the same command.
    Sent {
        key: ChanKey,
        generation: u64,
        seq: u64,
        frame: Resend,
    },
    /// Between two states (never seen outside a call).
    Moving,
}

/// Our requests, and those waiting for a `max_in_flight` slot.
#[derive(Default)]
pub(super) struct Requests {
    pub(super) map: HashMap<RequestId, Request>,
    /// Waiting for a `max_in_flight` slot, oldest first.
    pub(super) queued: VecDeque<RequestId>,
    /// Requests holding a `max_in_flight` slot.
    pub(super) admitted: usize,
    /// Peers that may have a per-peer slot free for a queued request.
    pub(super) to_pump: Vec<themis_crypto::NodeId>,
}

/// What a request needs before its command can go out.
enum Ready {
    Send,
    Handshake([u8; 32]),
}

impl EndpointCore {
    /// Whether [`EndpointCore::request`] takes another request: at most `max_in_flight`
    /// requests hold a slot and as many more wait for one. A driver stops taking requests
    /// while this is false (its callers wait: backpressure).
    pub(crate) fn can_accept_request(&self) -> bool {
        self.requests.queued.len() < self.cfg.max_in_flight
    }

    /// Sends `payload` to `peer` as a command; its outcome comes as [`Event::Response`].
    ///
    /// On first contact (or when the session was lost, expired or needs a rekey) a handshake
    /// runs first; concurrent requests to one peer share it. The request waits for a slot
    /// while `max_in_flight` requests in total or `max_in_flight_per_peer` to this peer hold
    /// one. On unreliable transports the same sealed frame is retransmitted with exponential
    /// backoff. It fails `request_timeout` after `now`, whatever it waits for.
    pub(crate) fn request(&mut self, now: Instant, peer: PeerAddr, payload: Bytes) -> RequestId {
        let id = self.next_request_id();
        let refused = if self.closing {
            Some(Error::ShuttingDown)
        } else if peer.id == self.local_id {
            Some(Error::SelfRequest(peer.id))
        } else {
            None
        };
        if let Some(e) = refused {
            self.events
                .push_back(Event::Response { id, result: Err(e) });
            return id;
        }
        self.counters.requests_sent += 1;
        let deadline = now + self.cfg.request_timeout;
        let state = ReqState::QueuedTotal { payload };
        let full = !self.can_accept_request();
        self.requests.map.insert(
            id,
            Request {
                peer,
                deadline,
                state,
            },
        );
        if full {
            let limit = self.cfg.max_in_flight;
            self.finish(
                id,
                Err(Error::Overloaded {
                    what: "requests",
                    limit,
                }),
            );
            return id;
        }
        self.timers.set(TimerKey::Request(id), deadline);
        self.requests.queued.push_back(id);
        self.pump(now);
        id
    }

    /// Forgets request (or identify call) `id` without an outcome: its caller gave up. A late
    /// response is then discarded.
    pub(crate) fn cancel(&mut self, now: Instant, id: RequestId) {
        if self.requests.map.contains_key(&id) {
            self.release(id);
            self.pump(now);
        } else {
            self.drop_identify(id);
        }
    }

    /// Admits waiting requests while there are slots: first those waiting for a per-peer slot
    /// that was freed, then those waiting for a `max_in_flight` slot.
    pub(super) fn pump(&mut self, now: Instant) {
        loop {
            while let Some(peer) = self.requests.to_pump.pop() {
                while let Some(id) = self.sessions.peers.get_mut(&peer).and_then(|p| {
                    (p.active < self.cfg.max_in_flight_per_peer)
                        .then(|| p.queued.pop_front())
                        .flatten()
                }) {
                    self.admit_peer(now, id);
                }
            }
            if self.requests.admitted >= self.cfg.max_in_flight {
                break;
            }
            let Some(id) = self.requests.queued.pop_front() else {
                break;
            };
            self.admit_total(id);
        }
    }

    /// Gives request `id` a `max_in_flight` slot, then a per-peer slot or a place in the peer's
    /// queue.
    fn admit_total(&mut self, id: RequestId) {
        let Some(r) = self.requests.map.get_mut(&id) else {
            return;
        };
        let ReqState::QueuedTotal { payload } = std::mem::replace(&mut r.state, ReqState::Moving)
        else {
            return;
        };
        r.state = ReqState::QueuedPeer { payload };
        let peer = r.peer;
        self.requests.admitted += 1;
        match self.sessions.peer_entry(peer) {
            Ok(evicted) => self.counters.sessions_dropped += u64::from(evicted),
            Err(e) => return self.finish(id, Err(e)),
        }
        if let Some(p) = self.sessions.peers.get_mut(&peer.id) {
            p.queued.push_back(id);
            self.requests.to_pump.push(peer.id);
        }
    }

    /// Gives request `id` its per-peer slot and moves it on.
    fn admit_peer(&mut self, now: Instant, id: RequestId) {
        let Some(r) = self.requests.map.get_mut(&id) else {
            return;
        };
        let ReqState::QueuedPeer { payload } = std::mem::replace(&mut r.state, ReqState::Moving)
        else {
            return;
        };
        let peer = r.peer;
        if let Some(p) = self.sessions.peers.get_mut(&peer.id) {
            p.active += 1;
        }
        self.counters.in_flight += 1;
        self.proceed(now, id, payload);
    }

    /// Sends request `id`'s command, or makes it wait for a handshake.
    pub(super) fn proceed(&mut self, now: Instant, id: RequestId, payload: Bytes) {
        let Some(r) = self.requests.map.get(&id) else {
            return;
        };
        let (peer, deadline) = (r.peer, r.deadline);
        match self.ensure_channel(now, peer) {
            Ok(Ready::Send) => self.send_request(now, id, &payload),
            Ok(Ready::Handshake(nonce)) => {
                let until = deadline.min(now + self.cfg.handshake_timeout);
                if let Some(r) = self.requests.map.get_mut(&id) {
                    r.state = ReqState::Handshake { payload, nonce };
                }
                if let Some(h) = self.handshakes.get_mut(&nonce) {
                    h.waiters.push(id);
                }
                self.timers.set(TimerKey::Request(id), until);
            }
            Err(e) => self.finish(id, Err(e)),
        }
    }

    /// Makes sure `peer` has a usable channel (PROTOCOL.md §5.2, step 3): insecure, created if
    /// missing; secure, the newest session if within its hard limits, else a handshake to wait
    /// for (joined if one runs). A session past its soft limit starts a rekey in the background.
    fn ensure_channel(&mut self, now: Instant, peer: PeerAddr) -> Result<Ready, Error> {
        let evicted = self.sessions.peer_entry(peer)?;
        self.counters.sessions_dropped += u64::from(evicted);
        let p = self
            .sessions
            .peers
            .get_mut(&peer.id)
            .ok_or(Error::SessionLost { peer: peer.id })?;
        if self.cfg.mode == Mode::Insecure {
            if p.chans.is_empty() {
                let addr = PeerAddr {
                    id: peer.id,
                    addr: p.addr,
                };
                let ch = Channel::insecure(self.local_id, peer.id, self.chan_cfg.clone(), now)?;
                let chan = self.sessions.new_chan(ch, addr.addr, None);
                self.sessions.push_chan(addr, chan);
            }
            return Ok(Ready::Send);
        }
        let chan = p.chan_for(peer.addr);
        let usable = chan.is_some_and(|c| !c.channel.is_expired(now));
        let rekey = chan.is_some_and(|c| c.channel.needs_rekey(now));
        // a handshake with the peer at another address (the same key at two places, or a
        // peer that moved) makes no session here
        let running = p.handshake.filter(|n| {
            self.handshakes
                .get(n)
                .is_some_and(|h| h.peer.addr == peer.addr)
        });
        if usable && !(rekey && running.is_none()) {
            return Ok(Ready::Send);
        }
        let nonce = match running {
            Some(n) => n,
            None => self.start_handshake(now, peer)?,
        };
        if usable {
            // Rekey in the background; keep using the current session meanwhile.
            return Ok(Ready::Send);
        }
        Ok(Ready::Handshake(nonce))
    }

    /// Seals the command on the peer's newest channel and sends it, preceded by message 3
    /// while the session keeps it (PROTOCOL.md §5.2, steps 4 and 5).
    fn send_request(&mut self, now: Instant, id: RequestId, payload: &[u8]) {
        let Some(r) = self.requests.map.get(&id) else {
            return;
        };
        let (peer, deadline) = (r.peer, r.deadline);
        self.sessions.touch(peer.id);
        let sealed = self.sessions.peers.get_mut(&peer.id).and_then(|p| {
            p.addr = peer.addr;
            let c = p.chan_for_mut(peer.addr)?;
            let mut out = BytesMut::new();
            Some(c.channel.seal_command(payload, &mut out, now).map(|seq| {
                c.waiters.insert(seq, id);
                (c.key(), c.generation, seq, out.freeze(), c.msg3.clone())
            }))
        });
        let (key, generation, seq, frame, msg3) = match sealed {
            Some(Ok(s)) => s,
            Some(Err(e)) => return self.finish(id, Err(e)),
            None => return self.finish(id, Err(Error::SessionLost { peer: peer.id })),
        };
        tracing::trace!(seq, "command sent");
        if let Some(m3) = msg3 {
            self.transmit(peer.addr, m3);
        }
        self.transmit(peer.addr, frame.clone());
        let frame = Resend::new(frame, deadline, self.backoff());
        self.timers
            .set(TimerKey::Request(id), frame.first_wake(now));
        if let Some(r) = self.requests.map.get_mut(&id) {
            r.state = ReqState::Sent {
                key,
                generation,
                seq,
                frame,
            };
        }
    }

    /// Request `id`'s timer: its deadline, the end of its handshake wait, or a retransmission.
    pub(super) fn on_request_timer(&mut self, now: Instant, id: RequestId) {
        let Some(r) = self.requests.map.get_mut(&id) else {
            return;
        };
        let peer = r.peer;
        let timeout = Error::RequestTimeout {
            peer: peer.id,
            addr: peer.addr,
            after: self.cfg.request_timeout,
        };
        let (key, generation, frame) = match &mut r.state {
            ReqState::Handshake { .. } => {
                let e = Error::HandshakeTimeout {
                    peer: peer.id,
                    addr: peer.addr,
                    after: self.cfg.handshake_timeout,
                };
                return self.finish(id, Err(e));
            }
            ReqState::Sent {
                key,
                generation,
                frame,
                ..
            } => match frame.fire(now) {
                Some((frame, wake)) => {
                    self.timers.set(TimerKey::Request(id), wake);
                    (*key, *generation, frame)
                }
                None => return self.finish(id, Err(timeout)),
            },
            _ => return self.finish(id, Err(timeout)),
        };
        // Retransmit the very same sealed frame (same seq, same nonce): the peer's replay
        // window refuses a second execution and its response cache answers.
        self.counters.retransmissions += 1;
        let msg3 = self
            .sessions
            .chan_gen_mut(peer.id, key, generation)
            .and_then(|c| c.msg3.clone());
        if let Some(m3) = msg3 {
            self.transmit(peer.addr, m3);
        }
        self.transmit(peer.addr, frame);
    }

    /// Ends request `id` with `result`: frees what it holds, counts it, reports it.
    pub(super) fn finish(&mut self, id: RequestId, result: Result<Bytes, Error>) {
        if !self.release(id) {
            return;
        }
        match &result {
            Ok(_) => self.counters.requests_ok += 1,
            Err(e) => {
                self.counters.requests_failed += 1;
                if matches!(e, Error::RequestTimeout { .. }) {
                    self.counters.requests_timed_out += 1;
                }
                tracing::debug!(error = %e, "request failed");
            }
        }
        self.events.push_back(Event::Response { id, result });
    }

    /// Removes request `id` and frees its slots, its queue place, its handshake wait or its
    /// sequence number (cancelled, so a late response is refused). Whoever waits for a freed
    /// slot is admitted at the next [`EndpointCore::pump`]. `false` if there is no such request.
    fn release(&mut self, id: RequestId) -> bool {
        let Some(r) = self.requests.map.remove(&id) else {
            return false;
        };
        self.timers.clear(TimerKey::Request(id));
        let peer = r.peer.id;
        let holds_peer_slot = match r.state {
            ReqState::QueuedTotal { .. } => {
                self.requests.queued.retain(|q| *q != id);
                return true;
            }
            ReqState::QueuedPeer { .. } => {
                if let Some(p) = self.sessions.peers.get_mut(&peer) {
                    p.queued.retain(|q| *q != id);
                }
                false
            }
            ReqState::Handshake { nonce, .. } => {
                if let Some(h) = self.handshakes.get_mut(&nonce) {
                    h.waiters.retain(|w| *w != id);
                }
                true
            }
            ReqState::Sent {
                key,
                generation,
                seq,
                ..
            } => {
                if let Some(c) = self.sessions.chan_gen_mut(peer, key, generation)
                    && c.waiters.remove(&seq).is_some()
                {
                    c.channel.cancel(seq);
                }
                true
            }
            ReqState::Moving => true,
        };
        if holds_peer_slot {
            if let Some(p) = self.sessions.peers.get_mut(&peer) {
                p.active = p.active.saturating_sub(1);
            }
            self.counters.in_flight = self.counters.in_flight.saturating_sub(1);
            self.requests.to_pump.push(peer);
        }
        self.requests.admitted = self.requests.admitted.saturating_sub(1);
        true
    }

    /// Takes the payload of request `id` waiting for a handshake, to move it on.
    pub(super) fn take_handshake_payload(&mut self, id: RequestId) -> Option<Bytes> {
        let r = self.requests.map.get_mut(&id)?;
        match std::mem::replace(&mut r.state, ReqState::Moving) {
            ReqState::Handshake { payload, .. } => Some(payload),
            other => {
                r.state = other;
                None
            }
        }
    }
}
