//! Each control message: sent when PROTOCOL.md §5.2 says, believed only where it says.

use super::*;
use crate::Mode;
use crate::proto::endpoint::control::Control;
use crate::wire::{
    TYPE_BUSY, TYPE_IDENTITY_MISMATCH, TYPE_MODE_MISMATCH, TYPE_SECURE_COMMAND,
    TYPE_SECURE_RESPONSE, TYPE_UNKNOWN_SESSION,
};
use themis_handshake::{SessionId, TYPE_MSG3};

#[test]
fn identify_returns_the_claimed_key_and_ignores_answers_from_elsewhere() {
    let mut net = Net::new(3, cfg(), false);
    let b = net.peer(1);
    let id = net.identify(0, b.addr);
    // A forged IDENTITY from a third address with the right token is not believed.
    let Some(Control::Identify { token }) = Control::decode(&net.wire[0].frame) else {
        panic!("an identify request");
    };
    let forged = Control::Identity {
        token,
        public: key(9).public(),
    };
    net.deliver(Packet {
        from: net.nodes[2].addr,
        to: net.nodes[0].addr,
        frame: Bytes::from(forged.encode()),
    });
    assert_eq!(net.nodes[0].metrics().frames_rejected_other, 1);
    net.run();
    let (got, res) = &net.nodes[0].identities[0];
    assert_eq!(*got, id);
    let (node, public) = res.as_ref().unwrap();
    assert_eq!((*node, *public), (b.id, key(2).public()));
    assert_eq!(net.nodes[1].metrics().control_sent, 1);
}

#[test]
fn identify_times_out_after_the_handshake_timeout() {
    let mut net = Net::new(1, cfg(), false);
    let id = net.identify(0, addr(5));
    while let Some(t) = net.next_timeout() {
        net.wire.clear();
        net.advance_to(t);
    }
    assert!(matches!(
        net.nodes[0].identities[..],
        [(got, Err(Error::HandshakeTimeout { .. }))] if got == id
    ));
    assert!(net.nodes[0].metrics().retransmissions > 0);
}

#[test]
fn a_wrong_key_at_the_address_is_an_identity_mismatch() {
    let mut net = Net::new(2, cfg(), true);
    // A asks for node 7 at B's address.
    let claimed = PeerAddr {
        id: key(7).node_id(&net_id()),
        addr: net.nodes[1].addr,
    };
    let id = net.request(0, claimed, b"x");
    net.deliver_all_checking(|p| p.ty() != TYPE_IDENTITY_MISMATCH || p.to == addr(0));
    match net.nodes[0].outcome(id) {
        Some(Err(Error::IdentityMismatch {
            expected, found, ..
        })) => {
            assert_eq!((*expected, *found), (claimed.id, net.peer(1).id));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(net.nodes[0].metrics().handshakes_failed_identity, 1);
}

#[test]
fn a_mode_mismatch_is_reported_both_ways() {
    let mut net = Net::new(2, cfg(), true);
    net.nodes[1] = Node::new(1, 2, insecure(), true);
    let id = net.request(0, net.peer(1), b"x");
    net.run();
    assert!(matches!(
        net.nodes[0].outcome(id),
        Some(Err(Error::ModeMismatch {
            ours: Mode::Secure,
            ..
        }))
    ));
    assert_eq!(net.nodes[0].metrics().handshakes_failed_mode, 1);
    let back = net.request(1, net.peer(0), b"y");
    net.deliver_all_checking(|p| p.ty() != TYPE_MODE_MISMATCH || p.to == addr(1));
    assert!(matches!(
        net.nodes[1].outcome(back),
        Some(Err(Error::ModeMismatch {
            ours: Mode::Insecure,
            ..
        }))
    ));
    assert_eq!(net.nodes[1].metrics().in_flight, 0);
}

#[test]
fn a_peer_out_of_handler_slots_answers_busy_over_a_reliable_transport() {
    for mode in [Mode::Secure, Mode::Insecure] {
        let mut c = cfg();
        c.mode = mode;
        let mut net = Net::new(2, c.clone(), true);
        c.max_handlers = 1;
        net.nodes[1] = Node::new(1, 2, c, true);
        net.nodes[1].echo = false;
        let b = net.peer(1);
        let first = net.request(0, b, b"1");
        net.run();
        let second = net.request(0, b, b"2");
        net.deliver_all_checking(|p| p.ty() != TYPE_BUSY || p.to == addr(0));
        assert!(net.nodes[0].outcome(first).is_none(), "still running");
        assert!(matches!(
            net.nodes[0].outcome(second),
            Some(Err(Error::PeerBusy { peer, .. })) if *peer == b.id
        ));
        let (ma, mb) = (net.nodes[0].metrics(), net.nodes[1].metrics());
        assert_eq!((ma.requests_refused_busy, ma.in_flight), (1, 1));
        assert_eq!((mb.commands_dropped_busy, mb.commands_received), (1, 1));
        // The slot frees when the command is answered.
        net.nodes[1].answer_one(net.now);
        net.collect();
        net.run();
        assert_eq!(ok(net.nodes[0].outcome(first)), b"re:1");
    }
}

#[test]
fn over_an_unreliable_transport_a_busy_peer_drops_the_command_unopened() {
    let mut c = cfg();
    c.max_handlers = 1;
    let mut net = Net::new(2, cfg(), false);
    net.nodes[1] = Node::new(1, 2, c, false);
    net.nodes[1].echo = false;
    let b = net.peer(1);
    net.request(0, b, b"1");
    net.run();
    let second = net.request(0, b, b"2");
    net.run();
    assert_eq!(net.nodes[1].metrics().commands_dropped_busy, 1);
    assert!(net.nodes[0].outcome(second).is_none());
    // Once the slot is free, the retransmission is opened and served.
    net.nodes[1].answer_one(net.now);
    net.nodes[1].echo = true;
    net.collect();
    net.settle(Duration::from_secs(1));
    assert_eq!(ok(net.nodes[0].outcome(second)), b"re:2");
}

/// An UNKNOWN_SESSION for `seq` on `session_id` from `from` to node 0.
fn unknown_session(net: &Net, from: SocketAddr, session_id: SessionId, seq: u64) -> Packet {
    let frame = Control::UnknownSession { session_id, seq }.encode();
    Packet {
        from,
        to: net.nodes[0].addr,
        frame: Bytes::from(frame),
    }
}

#[test]
fn unknown_session_is_answered_and_believed_only_for_a_confirmed_session_from_its_peer() {
    let mut net = Net::new(3, cfg(), true);
    let b = net.peer(1);
    net.request(0, b, b"1");
    net.run();
    // Command 2 is sealed after the session was confirmed (by the answer to command 1).
    net.nodes[1].echo = false;
    net.request(0, b, b"2");
    net.run();
    let (&sid, _) = net.nodes[0].core.sessions.by_session.iter().next().unwrap();
    let forged = unknown_session(&net, net.nodes[2].addr, sid, 2);
    net.deliver(forged.clone());
    assert_eq!(net.nodes[0].metrics().frames_rejected_other, 1);
    assert_eq!(
        net.nodes[0].metrics().sessions,
        1,
        "a forgery drops nothing"
    );
    // From the peer's address, naming a command sealed before the confirmation (it may answer
    // a copy that overtook message 3) or never sealed, it is not believed either.
    for seq in [0, 1, 3, u64::MAX] {
        net.deliver(unknown_session(&net, b.addr, sid, seq));
    }
    assert_eq!(net.nodes[0].metrics().frames_rejected_other, 5);
    assert_eq!(net.nodes[0].metrics().sessions, 1);
    // From the peer's address, for command 2, it is believed.
    net.deliver(Packet {
        from: b.addr,
        ..forged
    });
    let m = net.nodes[0].metrics();
    assert_eq!(
        (m.sessions, m.sessions_dropped, m.control_received),
        (0, 1, 1)
    );
    // And a node answers a command for a session it lacks with it.
    let mut net2 = Net::new(2, cfg(), true);
    net2.request(0, net2.peer(1), b"x");
    net2.run();
    net2.nodes[1] = Node::new(1, 2, cfg(), true);
    net2.request(0, net2.peer(1), b"y");
    let p = net2.wire.pop_front().unwrap();
    net2.deliver(p);
    assert_eq!(net2.wire[0].ty(), TYPE_UNKNOWN_SESSION);
    assert!(net2.wire[0].frame.len() <= crate::wire::SECURE_HEADER_LEN + crate::wire::TAG_LEN);
}

/// The cause of `SessionLost` without a restart over a lossy network: a command overtakes
/// message 3 and is answered UNKNOWN_SESSION; that answer arrives (here twice: the network
/// duplicated it) only after the peer, by then holding the session, answered on it. It names a
/// command sealed before that answer: stale, the session stays, and the command, retransmitted,
/// is served.
#[test]
fn a_late_duplicated_unknown_session_for_a_command_that_overtook_message_3_drops_nothing() {
    let mut net = Net::new(2, cfg(), false);
    let b = net.peer(1);
    let first = net.request(0, b, b"1");
    // Message 1, then message 2: A sends message 3 and command 1.
    for _ in 0..2 {
        let p = net.wire.pop_front().unwrap();
        net.deliver(p);
    }
    let msg3 = net.take(|p| p.ty() == TYPE_MSG3);
    assert!(!msg3.is_empty());
    assert_eq!(net.wire.len(), 1);
    assert_eq!(net.wire[0].ty(), TYPE_SECURE_COMMAND);
    // Command 1 overtakes message 3: B does not know the session yet.
    let p = net.wire.pop_front().unwrap();
    net.deliver(p);
    let stale = net.take(|p| p.ty() == TYPE_UNKNOWN_SESSION);
    assert_eq!(stale.len(), 1, "B answers UNKNOWN_SESSION");
    for p in msg3 {
        net.deliver(p);
    }
    assert_eq!(net.nodes[1].metrics().sessions, 1);
    // Command 2 (after message 3's copy) is answered: A's session is confirmed.
    let second = net.request(0, b, b"2");
    let responses = |net: &Net| {
        net.wire
            .iter()
            .filter(|p| p.ty() == TYPE_SECURE_RESPONSE)
            .count()
    };
    while responses(&net) == 0 {
        let p = net.wire.pop_front().unwrap();
        net.deliver(p);
    }
    net.run();
    assert_eq!(ok(net.nodes[0].outcome(second)), b"re:2");
    // Now the stale answer arrives, twice.
    for _ in 0..2 {
        net.deliver(stale[0].clone());
    }
    let m = net.nodes[0].metrics();
    assert_eq!(
        (m.sessions, m.sessions_dropped),
        (1, 0),
        "the session stays"
    );
    assert!(
        net.nodes[0].outcome(first).is_none(),
        "request 1 still waits"
    );
    // Command 1's retransmission is served on the session.
    net.settle(Duration::from_secs(1));
    assert_eq!(ok(net.nodes[0].outcome(first)), b"re:1");
    assert_eq!(net.nodes[1].executed, [&b"2"[..], b"1"]);
    assert_eq!(net.nodes[0].metrics().handshakes_initiated_ok, 1);
}

#[test]
fn forged_busy_and_mode_mismatch_fail_nothing() {
    let mut net = Net::new(3, cfg(), true);
    net.nodes[1].echo = false;
    let b = net.peer(1);
    net.request(0, b, b"1");
    net.run();
    let id = net.request(0, b, b"2");
    net.run();
    let (&sid, _) = net.nodes[0].core.sessions.by_session.iter().next().unwrap();
    let a = net.nodes[0].addr;
    let mallory = net.nodes[2].addr;
    for (from, msg) in [
        // Right session, wrong address.
        (
            mallory,
            Control::Busy {
                session_id: sid,
                seq: 2,
            },
        ),
        // Right address, a session we do not have.
        (
            b.addr,
            Control::Busy {
                session_id: SessionId([9; 8]),
                seq: 2,
            },
        ),
        // Right address and session, a request that does not wait.
        (
            b.addr,
            Control::Busy {
                session_id: sid,
                seq: 99,
            },
        ),
        // No handshake waits under this reference.
        (
            b.addr,
            Control::ModeMismatch {
                reference: [3; 32],
                seq: 0,
            },
        ),
        // No handshake waits under this nonce.
        (
            b.addr,
            Control::IdentityMismatch {
                nonce: [4; 32],
                public: key(9).public(),
            },
        ),
    ] {
        net.deliver(Packet {
            from,
            to: a,
            frame: Bytes::from(msg.encode()),
        });
    }
    assert_eq!(net.nodes[0].metrics().frames_rejected_other, 5);
    assert!(net.nodes[0].outcome(id).is_none(), "still waiting");
    net.nodes[1].answer_one(net.now);
    net.nodes[1].answer_one(net.now);
    net.collect();
    net.run();
    assert_eq!(ok(net.nodes[0].outcome(id)), b"re:2");
}

#[test]
fn control_answers_are_rate_limited() {
    let mut c = cfg();
    c.control_rate = (10, 5);
    let mut net = Net::new(2, cfg(), true);
    net.nodes[1] = Node::new(1, 2, c, true);
    for i in 0..20u8 {
        let f = Control::Identify { token: [i; 16] }.encode();
        net.deliver(Packet {
            from: net.nodes[0].addr,
            to: net.nodes[1].addr,
            frame: Bytes::from(f),
        });
    }
    let m = net.nodes[1].metrics();
    assert_eq!((m.control_sent, m.control_rate_limited), (5, 15));
}

impl Net {
    /// Delivers everything, checking each frame on the way.
    fn deliver_all_checking(&mut self, check: impl Fn(&Packet) -> bool) {
        while let Some(p) = self.wire.pop_front() {
            assert!(check(&p), "unexpected {p:?}");
            self.deliver(p);
        }
    }
}
