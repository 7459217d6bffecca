//! Sessions by node id (PROTOCOL.md §5.2, "Sessions").
//!
//! Sessions are keyed by the peer's [`NodeId`] and do not depend on a connection: frames are
//! addressed to the peer's listening address and the transport (re)connects as needed. A peer
//! keeps at most two channels: the newest is used for new requests, the previous one drains
//! (answers commands and delivers responses) until a third replaces it. So when both peers
//! initiate at once, both sessions stay usable and no tie-break is needed. At most
//! `max_sessions` peers are known; a new one evicts the least recently used idle peer.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use themis_crypto::NodeId;
use themis_handshake::SessionId;

use super::cache::ResponseCache;
use super::{PeerAddr, RequestId};
use crate::{Channel, Error};

/// Which channel of a peer: by session id (secure) or the peer's only channel (insecure).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum ChanKey {
    Secure(SessionId),
    Insecure(NodeId),
}

impl ChanKey {
    /// The session id a control message names for this channel (all zero in insecure mode).
    pub(super) fn session_id(self) -> SessionId {
        match self {
            ChanKey::Secure(sid) => sid,
            ChanKey::Insecure(_) => SessionId([0; 8]),
        }
    }
}

/// One channel of a peer and what the endpoint keeps with it.
pub(super) struct Chan {
    pub(super) channel: Channel,
    /// Where this channel's frames go: the address its handshake ran with (secure), the
    /// source of the peer's latest frame (insecure). Two live nodes that claim one id (the
    /// same key started twice, issue 11) each keep their own session here, and the answers to
    /// each go back to it: a per-peer address would send one's answers to the other.
    pub(super) addr: SocketAddr,
    /// Unique per core: tells this channel from a later one under the same [`ChanKey`] (an
    /// insecure channel replaced after its peer restarted keeps the key `Insecure(peer)`).
    /// Whoever refers to a channel across calls (a command to answer, a request waiting for its
    /// response) finds it again by key *and* generation, so it never answers or cancels on its
    /// successor.
    pub(super) generation: u64,
    /// Our requests on this channel awaiting their response, by sequence number.
    pub(super) waiters: foldhash::HashMap<u64, RequestId>,
    /// Sealed responses, to answer retransmitted commands (unreliable transports only).
    pub(super) cache: ResponseCache,
    /// Message 3, sent before each command until the peer answers on this session (covers a
    /// lost message 3 and a command overtaking it).
    pub(super) msg3: Option<Bytes>,
    /// Set when the first authentic frame from the peer arrives on this channel (the peer
    /// holds the session then): the sequence number of the last command we had sealed by
    /// then. Commands numbered above it were all sent after the peer held the session, so an
    /// UNKNOWN_SESSION naming one of them means the peer lost it; one naming an earlier command
    /// may answer a copy that overtook message 3 (PROTOCOL.md §5.2, "Control messages").
    pub(super) confirmed_after: Option<u64>,
}

impl Chan {
    pub(super) fn key(&self) -> ChanKey {
        match self.channel.session_id() {
            Some(sid) => ChanKey::Secure(sid),
            None => ChanKey::Insecure(*self.channel.peer_id()),
        }
    }

    /// Marks the channel as answered on by the peer: message 3 need not travel any more, and
    /// commands sealed from now on reach a peer that holds the session.
    pub(super) fn confirm(&mut self) {
        if self.confirmed_after.is_none() {
            self.confirmed_after = Some(self.channel.last_command_seq());
        }
        self.msg3 = None;
    }

    /// Whether an UNKNOWN_SESSION naming our command `seq` proves that the peer lost this
    /// session: `seq` was sealed after the channel was confirmed (so every copy of that command
    /// left after the peer held the session) and not beyond the last command sealed.
    pub(super) fn lost_by_peer(&self, seq: u64) -> bool {
        self.confirmed_after
            .is_some_and(|after| after < seq && seq <= self.channel.last_command_seq())
    }
}

/// What the endpoint knows about one peer.
pub(super) struct PeerState {
    /// Where frames for the peer go.
    pub(super) addr: SocketAddr,
    /// Newest last; at most two.
    pub(super) chans: Vec<Chan>,
    /// Nonce of our handshake in progress with this peer.
    pub(super) handshake: Option<[u8; 32]>,
    /// Our requests holding one of the peer's `max_in_flight_per_peer` slots.
    pub(super) active: usize,
    /// Our requests waiting for one of those slots, oldest first.
    pub(super) queued: VecDeque<RequestId>,
    last_used: u64,
}

impl PeerState {
    /// Nothing of ours depends on this peer: it may be evicted.
    fn is_idle(&self) -> bool {
        self.handshake.is_none()
            && self.active == 0
            && self.queued.is_empty()
            && self.chans.iter().all(|c| c.waiters.is_empty())
    }

    /// The channel `key`.
    pub(super) fn chan_mut(&mut self, key: ChanKey) -> Option<&mut Chan> {
        self.chans.iter_mut().find(|c| c.key() == key)
    }

    /// The channel new requests to `addr` go on: the newest secure session at that address
    /// (none: a handshake to `addr` makes one), or the insecure channel, which follows the peer
    /// wherever it sends from.
    pub(super) fn chan_for(&self, addr: SocketAddr) -> Option<&Chan> {
        self.chans.get(self.chan_index_for(addr)?)
    }

    /// [`PeerState::chan_for`], mutable.
    pub(super) fn chan_for_mut(&mut self, addr: SocketAddr) -> Option<&mut Chan> {
        let i = self.chan_index_for(addr)?;
        self.chans.get_mut(i)
    }

    fn chan_index_for(&self, addr: SocketAddr) -> Option<usize> {
        self.chans
            .iter()
            .rposition(|c| c.addr == addr || matches!(c.key(), ChanKey::Insecure(_)))
    }
}

/// Every peer, and the index from session id to peer.
///
/// Both maps hash with foldhash, not SipHash (they are looked up several times per request: about
/// 6 % of a local find's instructions went to SipHash). Their keys are hash outputs a peer cannot
/// choose: a node id is `h(public key, network id)`, which an attacker can only grind at the cost
/// of a key pair per try, and a session id comes from the transcript of a handshake the
/// responder adds fresh randomness to; and each map is seeded at random. The workspace's
/// `Cargo.toml` says which maps keep SipHash.
pub(super) struct Sessions {
    pub(super) peers: HashMap<NodeId, PeerState>,
    pub(super) by_session: HashMap<SessionId, NodeId>,
    max_sessions: usize,
    /// Peers with at least one channel.
    live: usize,
    tick: u64,
    next_generation: u64,
}

impl Sessions {
    pub(super) fn new(max_sessions: usize) -> Self {
        Self {
            peers: HashMap::default(),
            by_session: HashMap::default(),
            max_sessions,
            live: 0,
            tick: 0,
            next_generation: 1,
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Marks `peer` as just used (for the eviction order).
    pub(super) fn touch(&mut self, peer: NodeId) {
        let t = self.next_tick();
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_used = t;
        }
    }

    /// A fresh channel entry to `addr` with a generation of its own.
    pub(super) fn new_chan(
        &mut self,
        channel: Channel,
        addr: SocketAddr,
        msg3: Option<Bytes>,
    ) -> Chan {
        let generation = self.next_generation;
        self.next_generation += 1;
        Chan {
            channel,
            addr,
            generation,
            waiters: foldhash::HashMap::default(),
            cache: ResponseCache::default(),
            msg3,
            confirmed_after: None,
        }
    }

    /// The peer's entry, created if missing; `Ok(true)` if another (idle) peer was evicted to
    /// make room. Fails with [`Error::TooManySessions`] when every slot is busy.
    pub(super) fn peer_entry(&mut self, peer: PeerAddr) -> Result<bool, Error> {
        let t = self.next_tick();
        let mut evicted = false;
        if !self.peers.contains_key(&peer.id) {
            if self.peers.len() >= self.max_sessions {
                let victim = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.is_idle())
                    .min_by_key(|(_, p)| p.last_used)
                    .map(|(id, _)| *id);
                let Some(victim) = victim else {
                    return Err(Error::TooManySessions {
                        peer: peer.id,
                        limit: self.max_sessions,
                    });
                };
                if let Some(v) = self.peers.remove(&victim) {
                    if !v.chans.is_empty() {
                        self.live -= 1;
                    }
                    for ch in v.chans {
                        if let ChanKey::Secure(sid) = ch.key() {
                            self.by_session.remove(&sid);
                        }
                    }
                    evicted = true;
                }
            }
            self.peers.insert(
                peer.id,
                PeerState {
                    addr: peer.addr,
                    chans: Vec::new(),
                    handshake: None,
                    active: 0,
                    queued: VecDeque::new(),
                    last_used: t,
                },
            );
        } else if let Some(p) = self.peers.get_mut(&peer.id) {
            p.last_used = t;
        }
        Ok(evicted)
    }

    /// The channel `key` of `peer`.
    pub(super) fn chan_mut(&mut self, peer: NodeId, key: ChanKey) -> Option<&mut Chan> {
        self.peers.get_mut(&peer)?.chan_mut(key)
    }

    /// The very channel `(key, generation)`, not a successor that took over its key.
    pub(super) fn chan_gen_mut(
        &mut self,
        peer: NodeId,
        key: ChanKey,
        generation: u64,
    ) -> Option<&mut Chan> {
        self.chan_mut(peer, key)
            .filter(|c| c.generation == generation)
    }

    /// Adds `chan` as the peer's newest channel (the entry must exist); returns the oldest if
    /// that makes three.
    pub(super) fn push_chan(&mut self, peer: PeerAddr, chan: Chan) -> Option<Chan> {
        let key = chan.key();
        let p = self.peers.get_mut(&peer.id)?;
        p.addr = peer.addr;
        if p.chans.is_empty() {
            self.live += 1;
        }
        // Room for this one only: a `Chan` is about 570 bytes and a peer has one or two, where
        // `push`'s growth gave every peer room for four.
        p.chans.reserve_exact(1);
        p.chans.push(chan);
        let old = (p.chans.len() > 2).then(|| p.chans.remove(0));
        if let ChanKey::Secure(sid) = key {
            self.by_session.insert(sid, peer.id);
        }
        if let Some(ChanKey::Secure(sid)) = old.as_ref().map(Chan::key) {
            self.by_session.remove(&sid);
        }
        old
    }

    /// Removes the channel `key` of `peer`.
    pub(super) fn remove_chan(&mut self, peer: NodeId, key: ChanKey) -> Option<Chan> {
        let p = self.peers.get_mut(&peer)?;
        let i = p.chans.iter().position(|c| c.key() == key)?;
        let ch = p.chans.remove(i);
        if p.chans.is_empty() {
            self.live -= 1;
        }
        if let ChanKey::Secure(sid) = key {
            self.by_session.remove(&sid);
        }
        Some(ch)
    }

    /// Clears `peer`'s handshake in progress if it is `nonce`.
    pub(super) fn clear_handshake(&mut self, peer: NodeId, nonce: [u8; 32]) {
        if let Some(p) = self.peers.get_mut(&peer)
            && p.handshake == Some(nonce)
        {
            p.handshake = None;
        }
    }

    /// Peers with a live session (secure) or channel (insecure).
    pub(super) fn live(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::ChannelConfig;

    /// A peer has room for the channels it holds, not for four of them (a `Chan` is large).
    #[test]
    fn a_peer_holds_room_for_its_channels_only() {
        let mut s = Sessions::new(4);
        let peer = PeerAddr {
            id: NodeId::from_bytes([1; 32]),
            addr: "127.0.0.1:9".parse().unwrap(),
        };
        s.peer_entry(peer).unwrap();
        for n in 1..=3 {
            let local = NodeId::from_bytes([0; 32]);
            let channel =
                Channel::insecure(local, peer.id, ChannelConfig::default(), Instant::now())
                    .unwrap();
            let chan = s.new_chan(channel, peer.addr, None);
            // The third replaces the first: a peer keeps at most two.
            assert_eq!(s.push_chan(peer, chan).is_some(), n == 3);
            let chans = &s.peers[&peer.id].chans;
            assert_eq!(chans.len(), n.min(2));
            assert!(chans.capacity() <= n, "room for {}", chans.capacity());
        }
        assert_eq!(s.live(), 1);
    }
}
