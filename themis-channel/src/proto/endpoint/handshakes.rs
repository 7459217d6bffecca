//! Handshakes (paper §5.1.1, Fig. 2; PROTOCOL.md §5.2): ours in progress, by nonce `N_A`, with
//! the requests waiting for them and message 1's retransmission; the responder's answers; and
//! message 3, which travels again in front of every command until the peer answers on the new
//! session.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use themis_handshake::{Initiator, MessageKind, Session};

use super::control::{Control, msg1_nonce};
use super::cookie::{encode_echo, msg1_for, parse_echo, session_id_of};
use super::timers::{Resend, TimerKey};
use super::{EndpointCore, PeerAddr, RequestId};
use crate::proto::SourcePrefix;
use crate::wire::COOKIE_SIZE;
use crate::{Channel, Error, Mode};

/// One of our handshakes, waiting for message 2.
pub(super) struct PendingHandshake {
    pub(super) peer: PeerAddr,
    initiator: Initiator,
    /// Message 1, re-sent as is on unreliable transports until `handshake_timeout` after the
    /// first: the handshake fails then.
    msg1: Resend,
    /// Requests waiting for the session, in arrival order.
    pub(super) waiters: Vec<RequestId>,
    /// The responder asked for a cookie and message 1 now travels behind it (once per
    /// handshake: a later cookie reply is ignored).
    cookie: bool,
}

impl EndpointCore {
    /// Starts a handshake with `peer` (paper §5.1.1 message 1: `A → B: g^a, N_A, PK_A, B,
    /// net_id, Sig_A`) and returns its nonce.
    pub(super) fn start_handshake(
        &mut self,
        now: Instant,
        peer: PeerAddr,
    ) -> Result<[u8; 32], Error> {
        let (initiator, msg1) = Initiator::start_with_rng(
            self.identity.clone(),
            self.network.clone(),
            peer.id,
            &self.hs_cfg,
            now,
            &mut *self.rng,
        )
        .map_err(|source| Error::Handshake {
            peer: peer.id,
            source,
        })?;
        let nonce = *initiator.nonce();
        if let Some(p) = self.sessions.peers.get_mut(&peer.id) {
            p.handshake = Some(nonce);
        }
        let msg1 = Bytes::from(msg1);
        self.transmit(peer.addr, msg1.clone());
        let msg1 = Resend::new(msg1, now + self.cfg.handshake_timeout, self.backoff());
        self.timers
            .set(TimerKey::Handshake(nonce), msg1.first_wake(now));
        self.handshakes.insert(
            nonce,
            PendingHandshake {
                peer,
                initiator,
                msg1,
                waiters: Vec::new(),
                cookie: false,
            },
        );
        tracing::debug!(peer = %peer.id.short(), addr = %peer.addr, "handshake started");
        Ok(nonce)
    }

    /// Our handshake `nonce`'s timer: message 1 again (unreliable transports), or the end.
    pub(super) fn on_handshake_timer(&mut self, now: Instant, nonce: [u8; 32]) {
        let Some(h) = self.handshakes.get_mut(&nonce) else {
            return;
        };
        if let Some((msg1, wake)) = h.msg1.fire(now) {
            let to = h.peer.addr;
            self.timers.set(TimerKey::Handshake(nonce), wake);
            self.counters.retransmissions += 1;
            self.transmit(to, msg1);
            return;
        }
        self.counters.handshakes_failed_timeout += 1;
        let after = self.cfg.handshake_timeout;
        self.fail_handshake(nonce, |peer| Error::HandshakeTimeout {
            peer: peer.id,
            addr: peer.addr,
            after,
        });
    }

    /// Ends our handshake `nonce` without a session; its waiting requests fail with `err`.
    pub(super) fn fail_handshake(&mut self, nonce: [u8; 32], err: impl Fn(PeerAddr) -> Error) {
        let Some(h) = self.handshakes.remove(&nonce) else {
            return;
        };
        self.timers.clear(TimerKey::Handshake(nonce));
        self.sessions.clear_handshake(h.peer.id, nonce);
        tracing::debug!(peer = %h.peer.id.short(), "handshake failed");
        for w in h.waiters {
            self.finish(w, Err(err(h.peer)));
        }
    }

    /// A handshake message from `from`.
    pub(super) fn on_handshake(&mut self, now: Instant, from: SocketAddr, frame: &[u8]) {
        let Ok(kind) = themis_handshake::peek(frame) else {
            self.counters.handshakes_rejected_invalid += 1;
            return;
        };
        match kind {
            MessageKind::Message1 => self.on_message1(now, from, frame),
            MessageKind::Message2 { nonce } => self.on_message2(now, from, nonce, frame),
            MessageKind::Message3 { .. } => self.on_message3(now, from, frame),
            _ => self.counters.handshakes_rejected_invalid += 1,
        }
    }

    /// Message 1: the responder answers with message 2 (paper §5.1.1).
    fn on_message1(&mut self, now: Instant, from: SocketAddr, frame: &[u8]) {
        let Some(responder) = self.responder.as_mut() else {
            // Insecure endpoint: tell the secure peer.
            self.counters.frames_rejected_mode += 1;
            if let Some(nonce) = msg1_nonce(frame) {
                let msg = Control::ModeMismatch {
                    reference: nonce,
                    seq: 0,
                };
                self.reply_control(now, from, msg);
            }
            return;
        };
        if self.closing {
            return;
        }
        // Under load (PROTOCOL.md §5.2, "Cookies"): a well-formed message 1 for us gets a cookie
        // reply, not message 2; nothing is verified or stored. Anything else goes on to the
        // checks below, which refuse it before its signature.
        let loaded = self.transport_loaded || responder.pending_len() >= self.cfg.cookie_threshold;
        if loaded
            && msg1_for(frame, self.local_id.as_bytes())
            && let Some(nonce) = msg1_nonce(frame)
        {
            let cookie = self.cookies.make(now, &mut *self.rng, from, &nonce);
            self.counters.cookies_sent += 1;
            // Not rate-limited: it costs one MAC and is smaller than the message 1 it answers
            // (no amplification), and a budget shared with a flood would starve honest peers.
            self.transmit(
                from,
                Bytes::from(Control::Cookie { nonce, cookie }.encode()),
            );
            return;
        }
        self.answer_message1(now, from, frame);
    }

    /// A cookie echo (`01 3F ‖ cookie ‖ message 1`): the message 1 is processed, without
    /// asking for another cookie, if the cookie is ours for the sender's address and its `N_A`.
    pub(super) fn on_cookie_echo(&mut self, now: Instant, from: SocketAddr, frame: &[u8]) {
        if self.responder.is_none() {
            self.counters.frames_rejected_mode += 1;
            return;
        }
        if self.closing {
            return;
        }
        let Some((cookie, msg1)) = parse_echo(frame) else {
            self.counters.cookie_echoes_rejected += 1;
            return;
        };
        let Some(nonce) = msg1_nonce(msg1) else {
            self.counters.cookie_echoes_rejected += 1;
            return;
        };
        if !self
            .cookies
            .check(now, &mut *self.rng, from, &nonce, &cookie)
        {
            self.counters.cookie_echoes_rejected += 1;
            return;
        }
        self.counters.cookie_echoes_accepted += 1;
        self.answer_message1(now, from, msg1);
    }

    /// A cookie reply to our message 1 (PROTOCOL.md §5.2, "Cookies"): believed only from the
    /// address message 1 went to, for a handshake waiting under that `N_A`, once per handshake;
    /// message 1 goes out again at once behind the cookie (and so do its retransmissions).
    pub(super) fn on_cookie(
        &mut self,
        from: SocketAddr,
        nonce: [u8; 32],
        cookie: [u8; COOKIE_SIZE],
    ) -> bool {
        let Some(h) = self.handshakes.get_mut(&nonce) else {
            return false;
        };
        if h.peer.addr != from || h.cookie {
            return false;
        }
        h.cookie = true;
        let echo = Bytes::from(encode_echo(&cookie, h.msg1.frame()));
        h.msg1.set_frame(echo.clone());
        self.counters.cookies_received += 1;
        self.transmit(from, echo);
        true
    }

    /// Message 1 past the cookie check: the per-source cap, then the responder's checks.
    fn answer_message1(&mut self, now: Instant, from: SocketAddr, frame: &[u8]) {
        let Some(responder) = self.responder.as_mut() else {
            return;
        };
        // Fairness: one source prefix holds at most `pending_per_source` pending handshakes;
        // checked before the signature, so a flood from one host costs no verification.
        let prefix = SourcePrefix::of(from.ip());
        if !self.pending_src.has_room(now, prefix) {
            self.counters.handshakes_rejected_source += 1;
            return;
        }
        match responder.handle_message1(frame, now) {
            Ok(msg2) => {
                // No amplification: message 2 (194 bytes; 330 on a closed network) is never
                // longer than the message 1 it answers (at least 196 bytes; 332).
                debug_assert!(msg2.len() <= frame.len());
                if let Some(sid) = session_id_of(frame, &msg2) {
                    let ttl = self.hs_cfg.pending_ttl;
                    let expires_at = now.checked_add(ttl).unwrap_or(now);
                    self.pending_src.insert(prefix, sid, expires_at);
                }
                self.transmit(from, Bytes::from(msg2));
            }
            Err(themis_handshake::Error::NotIntendedRecipient { .. }) => {
                // paper §5.1.1: B checks he is the intended recipient. We also tell the
                // initiator which key lives here, so it reports an identity mismatch at once
                // instead of timing out.
                self.counters.handshakes_rejected_invalid += 1;
                if let Some(nonce) = msg1_nonce(frame) {
                    let public = self.identity.public();
                    self.reply_control(now, from, Control::IdentityMismatch { nonce, public });
                }
            }
            Err(themis_handshake::Error::PendingTableFull { .. }) => {
                self.counters.handshakes_rejected_busy += 1;
            }
            Err(e) => {
                tracing::debug!(%from, error = %e, "message 1 refused");
                self.counters.handshakes_rejected_invalid += 1;
            }
        }
    }

    /// Message 2: our handshake `nonce` finishes (paper §5.1.1: Alice checks `h(PK_B, net_id)
    /// = B`, her nonce, that she is `A`, the signature), or fails on an identity mismatch.
    fn on_message2(&mut self, now: Instant, from: SocketAddr, nonce: [u8; 32], frame: &[u8]) {
        let Some(h) = self.handshakes.get_mut(&nonce) else {
            self.counters.handshakes_rejected_unknown += 1;
            return;
        };
        match h.initiator.handle_message2(frame, now) {
            Ok((session, msg3)) => self.handshake_done(now, nonce, session, Bytes::from(msg3)),
            Err(themis_handshake::Error::IdentityMismatch { expected, actual }) => {
                self.counters.handshakes_failed_identity += 1;
                self.fail_handshake(nonce, |peer| Error::IdentityMismatch {
                    addr: peer.addr,
                    expected,
                    found: actual,
                });
            }
            Err(themis_handshake::Error::AdmissionRefused { problem, .. }) => {
                // Checked after message 2's signature verified: the genuine peer presents a
                // certificate that does not admit it, and no later message 2 will be better.
                self.counters.handshakes_failed_identity += 1;
                let reason = problem.to_string();
                self.fail_handshake(nonce, |peer| Error::NotAdmitted {
                    peer: peer.id,
                    addr: peer.addr,
                    reason: reason.clone(),
                });
            }
            Err(e) => {
                // A bad message 2 leaves the initiator waiting for the genuine one.
                tracing::debug!(%from, error = %e, "message 2 refused");
                self.counters.handshakes_rejected_invalid += 1;
            }
        }
    }

    /// Our handshake `nonce` produced `session`: install it, send message 3, move the waiting
    /// requests on.
    fn handshake_done(&mut self, now: Instant, nonce: [u8; 32], session: Session, msg3: Bytes) {
        let Some(h) = self.handshakes.remove(&nonce) else {
            return;
        };
        self.timers.clear(TimerKey::Handshake(nonce));
        self.counters.handshakes_initiated_ok += 1;
        let peer = h.peer;
        self.sessions.clear_handshake(peer.id, nonce);
        // Message 3 also travels in front of every command until the peer answers on the
        // session: a command must never reach the responder before the message 3 that creates
        // its session there (over UDP it may be lost; over TCP a driver may send them apart).
        let installed = self.install(peer, session, Some(msg3.clone()));
        self.transmit(peer.addr, msg3);
        for w in h.waiters {
            match &installed {
                Ok(()) => {
                    if let Some(payload) = self.take_handshake_payload(w) {
                        self.proceed(now, w, payload);
                    }
                }
                Err(e) => self.finish(w, Err(e.clone_lite(peer))),
            }
        }
    }

    /// Message 3: the responder registers the session once the key confirmation verifies
    /// (paper §5.1.1, §5.2.1 G2), for `h(PK_A, net_id)` at the sender's address.
    fn on_message3(&mut self, now: Instant, from: SocketAddr, frame: &[u8]) {
        let Some(responder) = self.responder.as_mut() else {
            self.counters.frames_rejected_mode += 1;
            return;
        };
        match responder.handle_message3(frame, now) {
            Ok(session) => {
                self.pending_src.remove(&session.session_id);
                self.counters.handshakes_accepted_ok += 1;
                let peer = PeerAddr {
                    id: session.peer_id,
                    addr: from,
                };
                if let Err(e) = self.install(peer, session, None) {
                    tracing::debug!(error = %e, "accepted session not kept");
                }
            }
            Err(themis_handshake::Error::UnknownSession { .. }) => {
                // Usually a piggybacked or retransmitted message 3 of a finished handshake.
                self.counters.handshakes_rejected_unknown += 1;
            }
            Err(_) => self.counters.handshakes_rejected_invalid += 1,
        }
    }

    /// Installs a new session as the peer's newest channel; the previous one is kept to drain,
    /// the one before it is dropped (its waiting requests fail with [`Error::SessionLost`]).
    fn install(
        &mut self,
        peer: PeerAddr,
        session: Session,
        msg3: Option<Bytes>,
    ) -> Result<(), Error> {
        debug_assert_eq!(self.cfg.mode, Mode::Secure);
        let sid = session.session_id;
        let channel = Channel::secure(session, self.chan_cfg.clone())?;
        let evicted = self.sessions.peer_entry(peer)?;
        self.counters.sessions_dropped += u64::from(evicted);
        let chan = self.sessions.new_chan(channel, peer.addr, msg3);
        if let Some(old) = self.sessions.push_chan(peer, chan) {
            self.fail_chan(peer.id, old);
        }
        tracing::debug!(peer = %peer.id.short(), session = %sid, "session established");
        Ok(())
    }
}
