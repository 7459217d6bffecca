//! Channel frames (paper Fig. 3; PROTOCOL.md §5.2, "Incoming frames"): routed to their channel
//! by session id (secure) or sender id (insecure), opened, and delivered: a command to the
//! application with a token to answer through (holding one of `max_handlers` slots), a response
//! to the request waiting for it, a retransmitted command answered from the response cache.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use themis_crypto::NodeId;

use super::control::{Control, id_ref};
use super::sessions::ChanKey;
use super::timers::TimerKey;
use super::{CommandToken, EndpointCore, Event, PeerAddr, RequestId};
use crate::{Channel, Error, FrameHeader, Incoming, Mode, peek_header};

/// A command handed to the application, waiting for its answer.
pub(super) struct PendingCommand {
    /// The sender, at the address its session is registered at.
    peer: PeerAddr,
    /// The channel the command came on: the answer is sealed there, never on a successor.
    key: ChanKey,
    generation: u64,
    seq: u64,
}

/// Whether an incoming command may be handed to the application.
enum Slot {
    /// Not a command.
    None,
    /// A handler slot is free.
    Free,
    /// None is free and the transport is reliable: open it, then answer BUSY.
    Busy,
}

/// What opening a frame on its channel came to.
enum Opened {
    Command(PeerAddr, ChanKey, u64, u64, Bytes),
    Busy(SocketAddr, ChanKey, u64),
    Response(RequestId, Bytes),
    Resend(SocketAddr, Bytes),
    Refused(Error),
    Nothing,
}

impl EndpointCore {
    /// A channel frame from `from`.
    pub(super) fn on_channel(&mut self, now: Instant, from: SocketAddr, frame: BytesMut) {
        let header = match peek_header(&frame) {
            Ok(h) => h,
            Err(e) => return self.reject(&e),
        };
        let Some((peer_id, key, command)) = self.route(now, from, header) else {
            return;
        };
        // Backpressure on incoming commands: take a handler slot before opening, so a dropped
        // command leaves the channel untouched and its retransmission can still be served. A
        // reliable transport never retransmits: there the command is opened (authenticated)
        // anyway and refused with a busy control message, so that the caller fails fast
        // instead of waiting for its request timeout.
        let slot = if !command {
            Slot::None
        } else if self.closing {
            return;
        } else if self.commands.len() < self.cfg.max_handlers {
            Slot::Free
        } else if self.reliable {
            Slot::Busy
        } else {
            self.counters.commands_dropped_busy += 1;
            return;
        };
        match self.open(now, from, peer_id, key, header.seq(), frame, slot) {
            Opened::Command(peer, key, generation, seq, request) => {
                self.counters.commands_received += 1;
                let token = CommandToken(self.next_token);
                self.next_token += 1;
                let pending = PendingCommand {
                    peer,
                    key,
                    generation,
                    seq,
                };
                self.commands.insert(token, pending);
                self.events.push_back(Event::Command {
                    token,
                    from: peer,
                    request,
                });
            }
            Opened::Busy(to, key, seq) => {
                self.counters.commands_dropped_busy += 1;
                // To the session's address, like a response (never the frame's source).
                let session_id = key.session_id();
                self.reply_control(now, to, Control::Busy { session_id, seq });
            }
            Opened::Response(id, payload) => self.finish(id, Ok(payload)),
            Opened::Resend(to, frame) => {
                self.counters.responses_resent += 1;
                self.transmit(to, frame);
            }
            Opened::Refused(e) => {
                tracing::trace!(%from, error = %e, "frame refused");
                self.reject(&e);
            }
            Opened::Nothing => {}
        }
    }

    /// Finds the peer and channel a frame belongs to: `(peer, channel, is a command)`. Answers
    /// what needs answering (UNKNOWN_SESSION, MODE_MISMATCH) and creates the channel of a new
    /// insecure sender; `None` if the frame goes no further (counted).
    fn route(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: FrameHeader,
    ) -> Option<(NodeId, ChanKey, bool)> {
        match (header, self.cfg.mode) {
            (
                FrameHeader::Secure {
                    session_id,
                    command,
                    seq,
                },
                Mode::Secure,
            ) => {
                if let Some(&id) = self.sessions.by_session.get(&session_id) {
                    return Some((id, ChanKey::Secure(session_id), command));
                }
                self.counters.frames_rejected_unknown_session += 1;
                if command {
                    // Tell the peer so it re-handshakes (e.g. we restarted).
                    let msg = Control::UnknownSession { session_id, seq };
                    self.reply_control(now, from, msg);
                }
                None
            }
            (
                FrameHeader::Insecure {
                    sender, command, ..
                },
                Mode::Insecure,
            ) => self
                .insecure_channel(now, from, sender, command)
                .then_some((sender, ChanKey::Insecure(sender), command)),
            (
                FrameHeader::Insecure {
                    sender,
                    seq,
                    command,
                },
                Mode::Secure,
            ) => {
                self.counters.frames_rejected_mode += 1;
                if command {
                    let reference = id_ref(&sender);
                    self.reply_control(now, from, Control::ModeMismatch { reference, seq });
                }
                None
            }
            (FrameHeader::Secure { .. }, Mode::Insecure) => {
                self.counters.frames_rejected_mode += 1;
                None
            }
        }
    }

    /// Makes sure insecure `sender` has a channel: one is created for a command from an unknown
    /// sender (bounded by `max_sessions`). Frames naming our own id (reflections) are refused.
    fn insecure_channel(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: NodeId,
        command: bool,
    ) -> bool {
        if sender == self.local_id {
            self.counters.frames_rejected_unknown_session += 1;
            return false;
        }
        if self
            .sessions
            .peers
            .get(&sender)
            .is_some_and(|p| !p.chans.is_empty())
        {
            return true;
        }
        if !command || self.closing {
            self.counters.frames_rejected_unknown_session += 1;
            return false;
        }
        let peer = PeerAddr {
            id: sender,
            addr: from,
        };
        let created = self.sessions.peer_entry(peer).and_then(|evicted| {
            self.counters.sessions_dropped += u64::from(evicted);
            Channel::insecure(self.local_id, sender, self.chan_cfg.clone(), now)
        });
        let Ok(channel) = created else {
            self.counters.frames_rejected_other += 1;
            return false;
        };
        let addr = self.sessions.peers.get(&sender).map_or(from, |p| p.addr);
        let chan = self.sessions.new_chan(channel, addr, None);
        self.sessions.push_chan(PeerAddr { id: sender, addr }, chan);
        true
    }

    /// Opens `frame` on channel `key` of `peer_id` (Fig. 3: the receiver checks, decrypts and
    /// checks freshness; see `Channel::open`).
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        now: Instant,
        from: SocketAddr,
        peer_id: NodeId,
        key: ChanKey,
        seq: u64,
        frame: BytesMut,
        slot: Slot,
    ) -> Opened {
        let reliable = self.reliable;
        let Some(p) = self.sessions.peers.get_mut(&peer_id) else {
            self.counters.frames_rejected_unknown_session += 1;
            return Opened::Nothing;
        };
        // Answers go to the address the session is registered at, never to a frame's source
        // address: a replayed or raced copy with a spoofed source cannot redirect (and, with a
        // response larger than its command, amplify) traffic towards a third party. Insecure
        // mode authenticates nothing, so the frame's source is as good as any claim: follow it
        // (a restarted insecure peer may come back on another port).
        let insecure = matches!(key, ChanKey::Insecure(_));
        if insecure {
            p.addr = from;
        }
        let Some(ch) = p.chan_mut(key) else {
            self.counters.frames_rejected_unknown_session += 1;
            return Opened::Nothing;
        };
        if insecure {
            ch.addr = from;
        }
        let peer = PeerAddr {
            id: peer_id,
            addr: ch.addr,
        };
        // Only insecure mode over a reliable transport may need the frame twice (restart).
        let restart = matches!(key, ChanKey::Insecure(_)) && reliable;
        let copy = restart.then(|| frame.clone());
        let mut result = ch.channel.open(frame, now);
        if let (Err(Error::DuplicateCommand { .. }), Some(copy)) = (&result, copy) {
            // Insecure mode over a reliable transport: a repeated sequence number means the
            // peer restarted (it has no session id to tell us). Start a fresh channel.
            if let Some(r) = self.restart_insecure(now, peer_id, copy) {
                result = r;
            }
        }
        let Some(ch) = self.sessions.chan_mut(peer_id, key) else {
            return Opened::Nothing;
        };
        match result {
            Ok(Incoming::Command { seq, payload }) => {
                ch.confirm();
                match slot {
                    Slot::Free => Opened::Command(peer, key, ch.generation, seq, payload.freeze()),
                    Slot::Busy => {
                        // Refused unexecuted: it will never be answered.
                        ch.channel.forget_command(seq);
                        Opened::Busy(peer.addr, key, seq)
                    }
                    Slot::None => Opened::Nothing,
                }
            }
            Ok(Incoming::Response { seq, payload }) => {
                ch.confirm();
                match ch.waiters.get(&seq) {
                    Some(&id) => Opened::Response(id, payload.freeze()),
                    None => Opened::Nothing,
                }
            }
            // A retransmission: resend the response sealed the first time, never seal a second
            // one (the channel refuses to anyway).
            Err(Error::DuplicateCommand { .. }) => {
                self.counters.frames_rejected_replay += 1;
                match ch.cache.get(now, self.cfg.response_cache_ttl, seq) {
                    Some(f) => Opened::Resend(peer.addr, f.clone()),
                    None => Opened::Nothing,
                }
            }
            Err(e) => Opened::Refused(e),
        }
    }

    /// Answers command `token`: seals `response` on the channel the command came in on and
    /// sends it to the sender's registered address; keeps it for retransmissions on unreliable
    /// transports. If that channel is gone meanwhile (replaced or dropped), nothing is sent:
    /// sealing it on a successor under the same key would answer a different command that
    /// happens to reuse the sequence number.
    pub(crate) fn respond(&mut self, now: Instant, token: CommandToken, response: &[u8]) {
        let Some(c) = self.commands.remove(&token) else {
            return;
        };
        let (reliable, cache_len, ttl) = (
            self.reliable,
            self.cfg.response_cache,
            self.cfg.response_cache_ttl,
        );
        let Some(ch) = self.sessions.chan_gen_mut(c.peer.id, c.key, c.generation) else {
            return;
        };
        let mut out = BytesMut::new();
        match ch.channel.seal_response(c.seq, response, &mut out, now) {
            Ok(()) => {
                let frame = out.freeze();
                if !reliable {
                    ch.cache.insert(now, cache_len, ttl, c.seq, frame.clone());
                    self.arm_cache_sweep(now);
                }
                self.transmit(c.peer.addr, frame);
            }
            Err(e) => tracing::warn!(error = %e, "cannot send the handler's response"),
        }
    }

    /// Makes sure a sweep of the response caches is due by the time the response just kept
    /// expires.
    fn arm_cache_sweep(&mut self, now: Instant) {
        if !self.timers.is_set(TimerKey::CacheSweep) {
            self.timers
                .set(TimerKey::CacheSweep, now + self.cfg.response_cache_ttl);
        }
    }

    /// Drops the cached responses that have expired in every session, idle ones included, and
    /// sets the next sweep for when the oldest response left expires, a quarter of the TTL
    /// from now at the earliest.
    pub(super) fn sweep_response_caches(&mut self, now: Instant) {
        let ttl = self.cfg.response_cache_ttl;
        let oldest = self
            .sessions
            .peers
            .values_mut()
            .flat_map(|p| p.chans.iter_mut())
            .filter_map(|c| c.cache.expire(now, ttl))
            .min();
        if let Some(at) = oldest {
            // Not sooner than a quarter of the TTL from now (a response is then dropped at
            // most that late; `get` never serves it past the TTL). Under steady traffic the
            // oldest response left expires almost at once, and a sweep at each such instant
            // went over every session every time: 29 % of the CPU of a ring of 1,000 nodes
            // over UDP, once its first responses were a TTL old.
            self.timers
                .set(TimerKey::CacheSweep, (at + ttl).max(now + ttl / 4));
        }
    }

    /// Gives command `token` up unanswered (its slot is free again). The caller's request times
    /// out, or, over UDP, its retransmission finds no cached answer and is refused as a replay.
    pub(crate) fn abandon(&mut self, token: CommandToken) {
        let Some(c) = self.commands.remove(&token) else {
            return;
        };
        if let Some(ch) = self.sessions.chan_gen_mut(c.peer.id, c.key, c.generation) {
            ch.channel.forget_command(c.seq);
        }
    }
}
