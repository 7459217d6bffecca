//! Restart detection (PROTOCOL.md §5.2, "Sessions"): a peer that restarted has lost its
//! sessions. Secure: it answers our command with UNKNOWN_SESSION; we drop that session (only
//! for a command sealed after the peer answered on the session: an earlier one may have
//! overtaken message 3, and its answer may arrive late or twice) and the next request
//! handshakes again. Insecure, over a reliable transport: its sequence numbers start at 1 again,
//! so a command repeating an accepted one means a restart; a fresh channel replaces the old.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use themis_crypto::NodeId;
use themis_handshake::SessionId;

use super::EndpointCore;
use super::requests::ReqState;
use super::sessions::{Chan, ChanKey};
use crate::{Channel, Error, Incoming, Mode};

impl EndpointCore {
    /// UNKNOWN_SESSION for our command `seq` on `session_id`: believed from the session's peer
    /// address only, and only for a command sealed after the session was confirmed (see
    /// [`Chan::lost_by_peer`]). The session is dropped; its requests fail with
    /// [`Error::SessionLost`].
    pub(super) fn on_unknown_session(
        &mut self,
        from: SocketAddr,
        session_id: SessionId,
        seq: u64,
    ) -> bool {
        let Some(&peer_id) = self.sessions.by_session.get(&session_id) else {
            return false;
        };
        let key = ChanKey::Secure(session_id);
        let Some(p) = self.sessions.peers.get_mut(&peer_id) else {
            return false;
        };
        // paper §5.1.1 gives the session to the responder with message 3 only: a command that
        // overtook it (or whose copy of it was lost) is answered UNKNOWN_SESSION although the
        // peer is about to hold the session. Such an answer, delayed or duplicated by the
        // network, can arrive after the peer answered on the session: it names a command
        // sealed before the confirmation, and is not believed.
        let lost = p
            .chan_mut(key)
            .is_some_and(|ch| ch.addr == from && ch.lost_by_peer(seq));
        if !lost {
            return false;
        }
        if let Some(ch) = self.sessions.remove_chan(peer_id, key) {
            self.fail_chan(peer_id, ch);
        }
        self.counters.sessions_dropped += 1;
        tracing::debug!(peer = %peer_id.short(), "peer lost our session");
        true
    }

    /// Fails every request waiting on `chan` (gone) with [`Error::SessionLost`].
    pub(super) fn fail_chan(&mut self, peer: NodeId, chan: Chan) {
        for (_, id) in chan.waiters {
            self.finish(id, Err(Error::SessionLost { peer }));
        }
    }

    /// The transport found the peer at `addr` gone: nothing listens there (a connection
    /// refused by the operating system: the peer is down or restarting), or it ended a
    /// connection without a goodbye (its process ended); `dropped` are the frames queued for
    /// it, dropped unsent. Our handshakes with peers at `addr` fail, and the requests waiting for them with
    /// [`Error::PeerUnreachable`] (never sent); the peers' channels are dropped, and the
    /// requests whose commands went out on them fail: with [`Error::PeerUnreachable`] if their
    /// command is among `dropped` (it never left), else with [`Error::ConnectionLost`] (it went
    /// out on an earlier connection and may have run before the peer went away). The next
    /// request to such a peer handshakes again. What the core would only have learnt at its
    /// timeouts, it learns now.
    pub(crate) fn handle_refused(&mut self, now: Instant, addr: SocketAddr, dropped: &[Bytes]) {
        let nonces: Vec<[u8; 32]> = self
            .handshakes
            .iter()
            .filter(|(_, h)| h.peer.addr == addr)
            .map(|(n, _)| *n)
            .collect();
        for nonce in nonces {
            self.fail_handshake(nonce, |peer| Error::PeerUnreachable {
                peer: peer.id,
                addr: peer.addr,
            });
        }
        // The channels to `addr`: a peer's other session, at another address (the same key
        // running twice), is not this one's.
        let insecure = self.cfg.mode == Mode::Insecure;
        let mut gone: Vec<(NodeId, Vec<ChanKey>)> = Vec::new();
        for (id, p) in &self.sessions.peers {
            let keys: Vec<ChanKey> = p
                .chans
                .iter()
                .filter(|c| c.addr == addr || (insecure && p.addr == addr))
                .map(Chan::key)
                .collect();
            if !keys.is_empty() {
                gone.push((*id, keys));
            }
        }
        for (peer, keys) in gone {
            for key in keys {
                if let Some(ch) = self.sessions.remove_chan(peer, key) {
                    self.counters.sessions_dropped += 1;
                    for (_, id) in ch.waiters {
                        let unsent = self.requests.map.get(&id).is_some_and(|r| match &r.state {
                            ReqState::Sent { frame, .. } => dropped.contains(frame.frame()),
                            _ => true,
                        });
                        let e = if unsent {
                            Error::PeerUnreachable { peer, addr }
                        } else {
                            Error::ConnectionLost { peer, addr }
                        };
                        self.finish(id, Err(e));
                    }
                }
            }
            tracing::debug!(peer = %peer.short(), %addr, "peer refuses connections: sessions dropped");
        }
        self.pump(now);
    }

    /// An insecure command over a reliable transport opened as a duplicate: the peer restarted
    /// and numbers from 1 again. Replaces its channel by a fresh one (failing the old one's
    /// requests) and opens `frame` on it.
    pub(super) fn restart_insecure(
        &mut self,
        now: Instant,
        peer: NodeId,
        frame: BytesMut,
    ) -> Option<Result<Incoming, Error>> {
        let fresh = Channel::insecure(self.local_id, peer, self.chan_cfg.clone(), now).ok()?;
        let addr = self.sessions.chan_mut(peer, ChanKey::Insecure(peer))?.addr;
        let fresh = self.sessions.new_chan(fresh, addr, None);
        let ch = self.sessions.chan_mut(peer, ChanKey::Insecure(peer))?;
        let old = std::mem::replace(ch, fresh);
        let result = ch.channel.open(frame, now);
        self.fail_chan(peer, old);
        tracing::debug!(peer = %peer.short(), "insecure peer restarted: fresh channel");
        Some(result)
    }
}
