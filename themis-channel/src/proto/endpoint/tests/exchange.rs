//! Handshakes, sessions, message 3, the response cache and restart detection.

use super::*;
use crate::wire::{TYPE_SECURE_COMMAND, TYPE_SECURE_RESPONSE};
use themis_handshake::TYPE_MSG3;

#[test]
fn a_first_request_handshakes_and_the_session_serves_both_directions() {
    for reliable in [true, false] {
        let mut net = Net::new(2, cfg(), reliable);
        let b = net.peer(1);
        let id = net.request(0, b, b"ping");
        net.run();
        assert_eq!(ok(net.nodes[0].outcome(id)), b"re:ping");
        let a = net.peer(0);
        let back = net.request(1, a, b"pong");
        net.run();
        assert_eq!(ok(net.nodes[1].outcome(back)), b"re:pong");
        let (ma, mb) = (net.nodes[0].metrics(), net.nodes[1].metrics());
        assert_eq!(
            (ma.handshakes_initiated_ok, ma.handshakes_accepted_ok),
            (1, 0)
        );
        assert_eq!(
            (mb.handshakes_initiated_ok, mb.handshakes_accepted_ok),
            (0, 1)
        );
        assert_eq!((ma.sessions, mb.sessions), (1, 1));
        assert_eq!((ma.requests_ok, mb.requests_ok), (1, 1));
        assert_eq!((ma.in_flight, ma.handlers_running), (0, 0));
        assert_eq!(ma.retransmissions + mb.retransmissions, 0);
    }
}

#[test]
fn concurrent_first_requests_share_one_handshake() {
    let mut net = Net::new(2, cfg(), true);
    let b = net.peer(1);
    let ids: Vec<_> = (0..5u8).map(|i| net.request(0, b, &[i])).collect();
    let msg1s = net.wire.iter().filter(|p| p.ty() == 0x01).count();
    assert_eq!(msg1s, 1, "one handshake for five requests");
    net.run();
    for (i, id) in ids.into_iter().enumerate() {
        assert_eq!(ok(net.nodes[0].outcome(id)), &echoed(&[i as u8])[..]);
    }
    assert_eq!(net.nodes[0].metrics().handshakes_initiated_ok, 1);
}

#[test]
fn simultaneous_open_keeps_both_sessions_usable() {
    let mut net = Net::new(2, cfg(), true);
    let (a, b) = (net.peer(0), net.peer(1));
    let ab = net.request(0, b, b"a->b");
    let ba = net.request(1, a, b"b->a");
    net.run();
    assert_eq!(ok(net.nodes[0].outcome(ab)), b"re:a->b");
    assert_eq!(ok(net.nodes[1].outcome(ba)), b"re:b->a");
    for n in &net.nodes {
        let m = n.metrics();
        assert_eq!(
            (m.handshakes_initiated_ok, m.handshakes_accepted_ok),
            (1, 1)
        );
        assert_eq!(m.sessions, 1, "two sessions, one peer");
        assert_eq!(
            n.core.sessions.peers.values().next().unwrap().chans.len(),
            2
        );
    }
    // Both keep working in both directions afterwards.
    for round in 0..3u8 {
        let x = net.request(0, b, &[round]);
        let y = net.request(1, a, &[round]);
        net.run();
        assert!(net.nodes[0].outcome(x).unwrap().is_ok());
        assert!(net.nodes[1].outcome(y).unwrap().is_ok());
    }
}

#[test]
fn a_lost_message_3_travels_again_in_front_of_the_command() {
    let mut net = Net::new(2, cfg(), false);
    let b = net.peer(1);
    let id = net.request(0, b, b"x");
    // Message 1 to B, message 2 back to A.
    for _ in 0..2 {
        let p = net.wire.pop_front().unwrap();
        net.deliver(p);
    }
    // A sent message 3 alone, then message 3 again before the command.
    let tys: Vec<u8> = net.wire.iter().map(Packet::ty).collect();
    assert_eq!(tys, [TYPE_MSG3, TYPE_MSG3, TYPE_SECURE_COMMAND]);
    net.wire.pop_front();
    net.run();
    assert_eq!(ok(net.nodes[0].outcome(id)), b"re:x");
    assert_eq!(net.nodes[1].metrics().handshakes_accepted_ok, 1);
    // Once B answered on the session, message 3 stays home.
    net.request(0, b, b"y");
    let tys: Vec<u8> = net.wire.iter().map(Packet::ty).collect();
    assert_eq!(tys, [TYPE_SECURE_COMMAND]);
}

#[test]
fn a_command_overtaking_message_3_is_served_from_its_copy() {
    let mut net = Net::new(2, cfg(), true);
    let b = net.peer(1);
    let id = net.request(0, b, b"x");
    for _ in 0..2 {
        let p = net.wire.pop_front().unwrap();
        net.deliver(p);
    }
    // The standalone message 3 arrives last: the copy in front of the command did the work,
    // the late one is refused as a duplicate.
    let first = net.wire.pop_front().unwrap();
    net.run();
    net.deliver(first);
    net.run();
    assert_eq!(ok(net.nodes[0].outcome(id)), b"re:x");
    let mb = net.nodes[1].metrics();
    assert_eq!(
        (mb.handshakes_accepted_ok, mb.handshakes_rejected_unknown),
        (1, 1)
    );
}

#[test]
fn a_retransmitted_command_is_answered_from_the_response_cache() {
    let mut net = Net::new(2, cfg(), false);
    let b = net.peer(1);
    net.request(0, b, b"warm");
    net.run();
    let id = net.request(0, b, b"once");
    net.run_until_response_then_drop(1);
    // A retransmits the same frame after its retransmission timeout; B answers from its cache.
    net.advance(cfg().initial_rto);
    net.run();
    assert_eq!(ok(net.nodes[0].outcome(id)), b"re:once");
    let (ma, mb) = (net.nodes[0].metrics(), net.nodes[1].metrics());
    assert_eq!(ma.retransmissions, 1);
    assert_eq!(mb.responses_resent, 1);
    assert_eq!(mb.frames_rejected_replay, 1);
    assert_eq!(net.nodes[1].runs_of(b"once"), 1, "the handler ran once");
}

#[test]
fn cached_responses_expire_after_their_ttl_even_in_an_idle_session() {
    let ttl = Duration::from_secs(3);
    let mut c = cfg();
    c.response_cache_ttl = ttl;
    c.request_timeout = Duration::from_secs(10);
    let mut net = Net::new(2, c, false);
    let b = net.peer(1);
    let cached = |net: &Net| -> usize {
        net.nodes[1]
            .core
            .sessions
            .peers
            .values()
            .flat_map(|p| p.chans.iter())
            .map(|ch| ch.cache.len())
            .sum()
    };
    net.request(0, b, b"warm");
    net.run();
    assert_eq!(cached(&net), 1);
    // A copy of the next command, as a retransmission arriving late would be.
    net.request(0, b, b"once");
    let copy = net.take(|p| p.ty() == TYPE_SECURE_COMMAND);
    assert_eq!(copy.len(), 1);
    for p in &copy {
        net.wire.push_back(p.clone());
    }
    net.run_until_response_then_drop(1);
    assert_eq!(cached(&net), 2);
    // A's retransmissions are lost; B's session sits idle past the TTL: its sweeps (a timer
    // of B's own, at most every quarter TTL) empty the cache without any frame arriving.
    let start = net.now;
    let by = start + ttl + ttl / 4;
    while net.now < by {
        let Some(t) = net.next_timeout() else { break };
        net.advance_to(t.min(by));
        net.take(|_| true);
    }
    assert_eq!(cached(&net), 0, "every cached response expired");
    // The late copy is still refused as a replay, and no response is sent for it.
    net.deliver(copy[0].clone());
    assert!(net.take(|p| p.ty() == TYPE_SECURE_RESPONSE).is_empty());
    let mb = net.nodes[1].metrics();
    assert_eq!(mb.frames_rejected_replay, 1);
    assert_eq!(mb.responses_resent, 0);
    assert_eq!(net.nodes[1].runs_of(b"once"), 1, "the handler ran once");
}

impl Net {
    /// Delivers the command on the wire and drops the `n` responses it produces.
    fn run_until_response_then_drop(&mut self, n: usize) {
        let mut dropped = 0;
        while let Some(p) = self.wire.pop_front() {
            if p.ty() == TYPE_SECURE_RESPONSE && dropped < n {
                dropped += 1;
                continue;
            }
            self.deliver(p);
        }
        assert_eq!(dropped, n);
    }
}

#[test]
fn a_restarted_peer_is_told_apart_and_reached_with_a_new_handshake() {
    let mut net = Net::new(2, cfg(), true);
    let b = net.peer(1);
    let first = net.request(0, b, b"1");
    net.run();
    assert!(net.nodes[0].outcome(first).unwrap().is_ok());
    // B restarts: same key, same address, no sessions.
    net.nodes[1] = Node::new(1, 2, cfg(), true);
    let lost = net.request(0, b, b"2");
    net.run();
    assert!(
        matches!(
            net.nodes[0].outcome(lost),
            Some(Err(Error::SessionLost { .. }))
        ),
        "{:?}",
        net.nodes[0].outcome(lost)
    );
    assert_eq!(net.nodes[1].metrics().frames_rejected_unknown_session, 1);
    assert_eq!(net.nodes[0].metrics().sessions_dropped, 1);
    let again = net.request(0, b, b"3");
    net.run();
    assert_eq!(ok(net.nodes[0].outcome(again)), b"re:3");
    assert_eq!(net.nodes[0].metrics().handshakes_initiated_ok, 2);
}

#[test]
fn an_insecure_peer_restarting_at_seq_one_gets_a_fresh_channel() {
    let mut net = Net::new(2, insecure(), true);
    let b = net.peer(1);
    for i in 0..3u8 {
        let id = net.request(0, b, &[i]);
        net.run();
        assert!(net.nodes[0].outcome(id).unwrap().is_ok());
    }
    net.nodes[0] = Node::new(0, 1, insecure(), true);
    for i in 0..3u8 {
        let id = net.request(0, b, &[i]);
        net.run();
        assert_eq!(ok(net.nodes[0].outcome(id)), &echoed(&[i])[..]);
    }
    assert_eq!(net.nodes[1].metrics().sessions, 1);
    // Over an unreliable transport the same repeat is a retransmission, refused as a replay.
    let mut net = Net::new(2, insecure(), false);
    let id = net.request(0, b, b"x");
    net.run();
    assert!(net.nodes[0].outcome(id).unwrap().is_ok());
    net.nodes[0] = Node::new(0, 1, insecure(), false);
    net.request(0, b, b"y");
    net.run();
    assert_eq!(net.nodes[1].metrics().frames_rejected_replay, 1);
}

#[test]
fn a_third_session_replaces_the_oldest_and_fails_its_requests() {
    let mut c = cfg();
    // Every session asks for a rekey at once: each request starts a new handshake.
    c.channel.rekey_after_messages = 1;
    let mut net = Net::new(2, c, true);
    let b = net.peer(1);
    let first = net.request(0, b, b"1");
    net.run();
    assert!(net.nodes[0].outcome(first).unwrap().is_ok());
    // Sent on session 1; session 2 starts; B answers nothing yet.
    net.nodes[1].echo = false;
    let waiting = net.request(0, b, b"2");
    net.run();
    let (token, _, _) = net.nodes[1].commands.pop_front().unwrap();
    net.nodes[1].core.abandon(token);
    // Two more handshakes push session 1 out.
    net.nodes[1].echo = true;
    for i in 3..5u8 {
        let id = net.request(0, b, &[i]);
        net.run();
        assert!(net.nodes[0].outcome(id).unwrap().is_ok());
    }
    assert!(matches!(
        net.nodes[0].outcome(waiting),
        Some(Err(Error::SessionLost { .. }))
    ));
    assert!(net.nodes[0].metrics().handshakes_initiated_ok >= 3);
}

#[test]
fn a_slow_command_overtaken_by_thousands_is_still_answered() {
    for reliable in [true, false] {
        let mut net = Net::new(2, insecure(), reliable);
        net.nodes[1].echo = false;
        let b = net.peer(1);
        let slow = net.request(0, b, b"slow");
        net.run();
        for i in 0..3000u32 {
            let id = net.request(0, b, &i.to_be_bytes());
            net.run();
            let (token, _, req) = net.nodes[1].commands.pop_back().unwrap();
            net.nodes[1].core.respond(net.now, token, &echoed(&req));
            net.collect();
            net.run();
            assert!(net.nodes[0].outcome(id).unwrap().is_ok());
        }
        assert!(net.nodes[0].outcome(slow).is_none());
        net.nodes[1].answer_one(net.now);
        net.collect();
        net.run();
        assert_eq!(ok(net.nodes[0].outcome(slow)), b"re:slow");
    }
}

/// The same key running twice (issue 11), at two addresses: each instance keeps a session of
/// its own with a peer, its answers come back to it, and the peer's requests go to the
/// instance at the address asked for. Before sessions had an address each, the peer's answers
/// followed whichever address it had last sent to, so the two instances timed out in turn.
#[test]
fn two_instances_of_one_key_each_keep_their_own_session() {
    for reliable in [true, false] {
        let mut net = Net::new(2, cfg(), reliable);
        // node 2 runs with node 1's key, at another address
        net.nodes.push(Node::new(2, 2, cfg(), reliable));
        let (c, first, second) = (net.peer(0), net.peer(1), net.peer(2));
        assert_eq!(first.id, second.id);
        for round in 0..2u8 {
            let one = net.request(1, c, &[1, round]);
            let two = net.request(2, c, &[2, round]);
            net.run();
            assert_eq!(ok(net.nodes[1].outcome(one)), &echoed(&[1, round])[..]);
            assert_eq!(ok(net.nodes[2].outcome(two)), &echoed(&[2, round])[..]);
            let to_first = net.request(0, first, &[3, round]);
            let to_second = net.request(0, second, &[4, round]);
            net.run();
            assert_eq!(ok(net.nodes[0].outcome(to_first)), &echoed(&[3, round])[..]);
            assert_eq!(
                ok(net.nodes[0].outcome(to_second)),
                &echoed(&[4, round])[..]
            );
            assert_eq!(net.nodes[1].runs_of(&[3, round]), 1);
            assert_eq!(net.nodes[2].runs_of(&[4, round]), 1);
        }
        let m = net.nodes[0].metrics();
        assert_eq!((m.handshakes_accepted_ok, m.sessions_dropped), (2, 0));
    }
}

/// A peer restarted elsewhere with its key: the first request naming its new address
/// handshakes there at once, instead of sealing on the old address's session.
#[test]
fn a_request_to_a_known_id_at_a_new_address_handshakes_there() {
    let mut net = Net::new(2, cfg(), true);
    let old = net.peer(1);
    let id = net.request(0, old, b"before");
    net.run();
    assert_eq!(ok(net.nodes[0].outcome(id)), b"re:before");
    // the peer moves: node 1's key now runs at another address, the old one is silent
    net.nodes[1] = Node::new(2, 2, cfg(), true);
    let moved = net.peer(1);
    assert_eq!((moved.id, moved.addr == old.addr), (old.id, false));
    let id = net.request(0, moved, b"after");
    net.run();
    assert_eq!(ok(net.nodes[0].outcome(id)), b"re:after");
    assert_eq!(net.nodes[0].metrics().handshakes_initiated_ok, 2);
}
