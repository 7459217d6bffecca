//! Every table is bounded: the responder's pending handshakes, the peers, our requests (per
//! peer, in total, and waiting), identify calls.

use super::*;
use crate::proto::endpoint::MAX_IDENTIFIES;
use themis_handshake::TYPE_MSG1;

#[test]
fn the_responders_pending_table_refuses_beyond_its_capacity() {
    let mut c = cfg();
    c.handshake.pending_capacity = 2;
    let mut net = Net::new(4, cfg(), false);
    net.nodes[0] = Node::new(0, 1, c, false);
    let b = net.peer(0);
    for i in 1..4 {
        net.request(i, b, b"x");
    }
    // Only the messages 1 reach B; its answers are lost, so nothing completes.
    for p in net.take(|p| p.ty() == TYPE_MSG1) {
        net.deliver(p);
    }
    let m = net.nodes[0].metrics();
    assert_eq!(m.handshakes_rejected_busy, 1);
    assert_eq!(
        net.nodes[0].core.responder.as_ref().unwrap().pending_len(),
        2
    );
}

#[test]
fn a_new_peer_evicts_the_least_recently_used_idle_one() {
    let mut c = cfg();
    c.max_sessions = 2;
    let mut net = Net::new(4, cfg(), true);
    net.nodes[0] = Node::new(0, 1, c, true);
    for j in [1, 2, 3] {
        let id = net.request(0, net.peer(j), b"x");
        net.run();
        assert!(net.nodes[0].outcome(id).unwrap().is_ok());
    }
    let m = net.nodes[0].metrics();
    assert_eq!((m.sessions, m.sessions_dropped), (2, 1));
    let kept: Vec<_> = net.nodes[0].core.sessions.peers.keys().copied().collect();
    assert!(!kept.contains(&net.peer(1).id), "the oldest went");
    assert_eq!(net.nodes[0].core.sessions.by_session.len(), 2);
}

#[test]
fn when_every_peer_is_busy_a_new_one_is_refused() {
    let mut c = cfg();
    c.max_sessions = 2;
    let mut net = Net::new(4, cfg(), true);
    net.nodes[0] = Node::new(0, 1, c, true);
    for j in [1, 2] {
        net.nodes[j].echo = false;
        net.request(0, net.peer(j), b"x");
    }
    net.run();
    let id = net.request(0, net.peer(3), b"y");
    assert!(matches!(
        net.nodes[0].outcome(id),
        Some(Err(Error::TooManySessions { limit: 2, .. }))
    ));
}

#[test]
fn requests_per_peer_and_in_total_are_bounded_and_admitted_in_order() {
    let mut c = cfg();
    c.max_in_flight_per_peer = 2;
    c.max_in_flight = 3;
    let mut net = Net::new(3, cfg(), true);
    net.nodes[0] = Node::new(0, 1, c, true);
    let (b, cc) = (net.peer(1), net.peer(2));
    net.nodes[1].echo = false;
    net.nodes[2].echo = false;
    let to_b: Vec<_> = (0..4u8).map(|i| net.request(0, b, &[i])).collect();
    let to_c = net.request(0, cc, b"c");
    net.run();
    // Two to B (its limit), none to C yet: the third of B's holds the last total slot.
    assert_eq!(net.nodes[1].executed.len(), 2);
    assert_eq!(net.nodes[2].executed.len(), 0);
    assert_eq!(net.nodes[0].metrics().in_flight, 2);
    net.nodes[1].answer_one(net.now);
    net.collect();
    net.run();
    assert!(net.nodes[0].outcome(to_b[0]).unwrap().is_ok());
    assert_eq!(net.nodes[1].executed.len(), 3, "B's third went in order");
    net.nodes[1].echo = true;
    net.nodes[2].echo = true;
    net.collect();
    net.run();
    for id in to_b.into_iter().chain([to_c]) {
        assert!(net.nodes[0].outcome(id).unwrap().is_ok());
    }
    let m = net.nodes[0].metrics();
    assert_eq!((m.requests_ok, m.in_flight), (5, 0));
}

#[test]
fn the_queue_of_waiting_requests_is_bounded_too() {
    let mut c = cfg();
    c.max_in_flight = 2;
    c.max_in_flight_per_peer = 2;
    let mut net = Net::new(2, cfg(), true);
    net.nodes[0] = Node::new(0, 1, c, true);
    net.nodes[1].echo = false;
    let b = net.peer(1);
    for i in 0..4u8 {
        net.request(0, b, &[i]);
        assert_eq!(net.nodes[0].core.can_accept_request(), i < 3);
    }
    let over = net.request(0, b, b"over");
    assert!(matches!(
        net.nodes[0].outcome(over),
        Some(Err(Error::Overloaded { limit: 2, .. }))
    ));
}

#[test]
fn identify_calls_are_bounded() {
    let mut net = Net::new(1, cfg(), true);
    for _ in 0..MAX_IDENTIFIES {
        net.identify(0, addr(5));
    }
    assert!(net.nodes[0].identities.is_empty());
    let over = net.identify(0, addr(5));
    assert!(matches!(
        net.nodes[0].identities[..],
        [(id, Err(Error::Overloaded { .. }))] if id == over
    ));
}

#[test]
fn shutting_down_refuses_new_work_and_abort_ends_everything_once() {
    let mut net = Net::new(2, cfg(), true);
    net.nodes[1].echo = false;
    let b = net.peer(1);
    let sent = net.request(0, b, b"1");
    net.run();
    net.nodes[0].core.close();
    let refused = net.request(0, b, b"2");
    assert!(matches!(
        net.nodes[0].outcome(refused),
        Some(Err(Error::ShuttingDown))
    ));
    // Nor does a closing peer send any.
    net.nodes[1].core.close();
    let c = net.request(1, net.peer(0), b"3");
    net.run();
    assert!(matches!(
        net.nodes[1].outcome(c),
        Some(Err(Error::ShuttingDown))
    ));
    assert_eq!(net.nodes[1].executed.len(), 1);
    net.nodes[0].core.abort();
    net.collect();
    assert!(matches!(
        net.nodes[0].outcome(sent),
        Some(Err(Error::SessionLost { .. }))
    ));
    assert_eq!(net.nodes[0].responses.len(), 2, "one outcome each");
    assert_eq!(net.nodes[0].core.timers.len(), 0);
    assert_eq!(net.nodes[0].metrics().in_flight, 0);
}
