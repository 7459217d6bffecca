//! `identify(addr)` (PROTOCOL.md §5.2): asks the node at an address which key it holds, for
//! bootstrapping from a bare address. The answer is unauthenticated; a handshake under the
//! claimed id then proves it.

use foldhash::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use themis_crypto::{NodeId, PublicKey};

use super::control::Control;
use super::timers::{Resend, TimerKey};
use super::{EndpointCore, Event, MAX_IDENTIFIES, RequestId};
use crate::Error;

/// One identify call.
struct Call {
    addr: SocketAddr,
    token: [u8; 16],
    /// IDENTIFY, until `handshake_timeout` after the first.
    frame: Resend,
}

/// The identify calls waiting for their answer, by id and by token.
#[derive(Default)]
pub(super) struct Identifies {
    calls: HashMap<RequestId, Call>,
    by_token: HashMap<[u8; 16], RequestId>,
}

impl Identifies {
    /// The calls waiting.
    pub(super) fn ids(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.calls.keys().copied()
    }

    /// Calls waiting.
    pub(super) fn len(&self) -> usize {
        self.calls.len()
    }
}

impl EndpointCore {
    /// Asks the node at `addr` for its public key; the outcome comes as [`Event::Identity`]:
    /// `(h(key, net_id), key)` as the node *claims* it, or [`Error::HandshakeTimeout`] after
    /// `handshake_timeout`. IDENTIFY carries a fresh random 16-byte token and is re-sent like
    /// message 1 on unreliable transports. At most [`MAX_IDENTIFIES`] calls wait at once.
    pub(crate) fn identify(&mut self, now: Instant, addr: SocketAddr) -> RequestId {
        let id = self.next_request_id();
        if self.identifies.len() >= MAX_IDENTIFIES {
            let e = Error::Overloaded {
                what: "identify calls",
                limit: MAX_IDENTIFIES,
            };
            self.events
                .push_back(Event::Identity { id, result: Err(e) });
            return id;
        }
        let mut token = [0u8; 16];
        self.rng.fill(&mut token);
        let frame = Bytes::from(Control::Identify { token }.encode());
        self.transmit(addr, frame.clone());
        let frame = Resend::new(frame, now + self.cfg.handshake_timeout, self.backoff());
        self.timers
            .set(TimerKey::Identify(id), frame.first_wake(now));
        self.identifies.by_token.insert(token, id);
        self.identifies
            .calls
            .insert(id, Call { addr, token, frame });
        id
    }

    /// Identify call `id`'s timer: IDENTIFY again, or the end.
    pub(super) fn on_identify_timer(&mut self, now: Instant, id: RequestId) {
        let Some(c) = self.identifies.calls.get_mut(&id) else {
            return;
        };
        let to = c.addr;
        let Some((frame, wake)) = c.frame.fire(now) else {
            let e = Error::HandshakeTimeout {
                peer: NodeId::from_bytes([0; 32]),
                addr: to,
                after: self.cfg.handshake_timeout,
            };
            return self.finish_identify(id, Err(e));
        };
        self.timers.set(TimerKey::Identify(id), wake);
        self.counters.retransmissions += 1;
        self.transmit(to, frame);
    }

    /// IDENTITY: believed only for a call waiting under `token` whose IDENTIFY went to `from`.
    pub(super) fn on_identity(
        &mut self,
        from: SocketAddr,
        token: [u8; 16],
        public: PublicKey,
    ) -> bool {
        let Some(&id) = self.identifies.by_token.get(&token) else {
            return false;
        };
        if self
            .identifies
            .calls
            .get(&id)
            .is_none_or(|c| c.addr != from)
        {
            return false;
        }
        let claimed = (public.node_id(&self.network), public);
        self.finish_identify(id, Ok(claimed));
        true
    }

    /// Ends identify call `id` with `result`.
    pub(super) fn finish_identify(
        &mut self,
        id: RequestId,
        result: Result<(NodeId, PublicKey), Error>,
    ) {
        if self.drop_identify(id) {
            self.events.push_back(Event::Identity { id, result });
        }
    }

    /// Forgets identify call `id`; `false` if there is none.
    pub(super) fn drop_identify(&mut self, id: RequestId) -> bool {
        let Some(c) = self.identifies.calls.remove(&id) else {
            return false;
        };
        self.identifies.by_token.remove(&c.token);
        self.timers.clear(TimerKey::Identify(id));
        true
    }
}
