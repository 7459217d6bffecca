//! Retransmission deadlines and giving up: exponential backoff from `initial_rto` to `max_rto`
//! on unreliable transports, nothing but the deadline on reliable ones.

use super::*;
use crate::wire::{TYPE_SECURE_COMMAND, TYPE_SECURE_RESPONSE};
use themis_handshake::TYPE_MSG1;

/// Runs the clock to the end, dropping every frame; returns when (since `t0`) frames of type
/// `ty` left node 0.
fn black_hole(net: &mut Net, ty: u8) -> Vec<u64> {
    let t0 = net.now;
    let mut sent = Vec::new();
    loop {
        for p in net.wire.drain(..) {
            if p.ty() == ty && p.from == addr(0) {
                sent.push(net.now.duration_since(t0).as_millis() as u64);
            }
        }
        match net.next_timeout() {
            Some(t) => net.advance_to(t),
            None => return sent,
        }
    }
}

#[test]
fn an_unanswered_handshake_backs_off_then_gives_up() {
    let mut net = Net::new(1, cfg(), false);
    let nobody = PeerAddr {
        id: key(9).node_id(&net_id()),
        addr: addr(9),
    };
    let id = net.request(0, nobody, b"x");
    // 200 ms, doubling, at most 2 s, until the 5 s handshake timeout.
    assert_eq!(black_hole(&mut net, TYPE_MSG1), [0, 200, 600, 1400, 3000]);
    assert!(matches!(
        net.nodes[0].outcome(id),
        Some(Err(Error::HandshakeTimeout { .. }))
    ));
    let m = net.nodes[0].metrics();
    assert_eq!((m.retransmissions, m.handshakes_failed_timeout), (4, 1));
    assert_eq!((m.requests_failed, m.in_flight), (1, 0));
    assert!(net.nodes[0].core.handshakes.is_empty());
    assert_eq!(net.nodes[0].core.timers.len(), 0);
}

#[test]
fn an_unanswered_command_is_retransmitted_as_is_then_times_out() {
    let mut net = Net::new(2, cfg(), false);
    let b = net.peer(1);
    net.request(0, b, b"warm");
    net.run();
    net.nodes[1].echo = false;
    let id = net.request(0, b, b"x");
    let frame = net.wire[0].frame.clone();
    let t0 = net.now;
    let mut times = Vec::new();
    while let Some(t) = net
        .next_timeout()
        .filter(|t| *t <= t0 + Duration::from_secs(5))
    {
        for p in net.wire.drain(..) {
            assert_eq!(p.frame, frame, "the same sealed frame each time");
            times.push(net.now.duration_since(t0).as_millis() as u64);
        }
        net.advance_to(t);
    }
    assert_eq!(times, [0, 200, 600, 1400, 3000]);
    let m = net.nodes[0].metrics();
    assert!(matches!(
        net.nodes[0].outcome(id),
        Some(Err(Error::RequestTimeout { .. }))
    ));
    assert_eq!((m.retransmissions, m.requests_timed_out), (4, 1));
    // The sequence number was cancelled: a late response is refused.
    net.deliver(Packet {
        from: addr(0),
        to: b.addr,
        frame,
    });
    net.nodes[1].answer_one(net.now);
    net.collect();
    let late = net.take(|p| p.ty() == TYPE_SECURE_RESPONSE);
    assert_eq!(late.len(), 1);
    net.deliver(late.into_iter().next().unwrap());
    assert_eq!(net.nodes[0].metrics().frames_rejected_replay, 1);
    assert_eq!(net.nodes[0].responses.len(), 2, "no second outcome");
}

#[test]
fn reliable_transports_never_retransmit() {
    let mut net = Net::new(2, cfg(), true);
    let b = net.peer(1);
    net.request(0, b, b"warm");
    net.run();
    net.nodes[1].echo = false;
    let id = net.request(0, b, b"x");
    assert_eq!(black_hole(&mut net, TYPE_SECURE_COMMAND), [0]);
    assert!(matches!(
        net.nodes[0].outcome(id),
        Some(Err(Error::RequestTimeout { after, .. })) if *after == cfg().request_timeout
    ));
    assert_eq!(net.nodes[0].metrics().retransmissions, 0);
}

#[test]
fn a_request_waiting_for_a_slot_still_times_out_at_its_deadline() {
    let mut c = cfg();
    c.max_in_flight_per_peer = 1;
    let mut net = Net::new(2, c, true);
    net.nodes[1].echo = false;
    let b = net.peer(1);
    let first = net.request(0, b, b"1");
    let second = net.request(0, b, b"2");
    net.run();
    assert_eq!(net.nodes[1].executed.len(), 1, "one at a time");
    net.advance(Duration::from_secs(5));
    for id in [first, second] {
        assert!(matches!(
            net.nodes[0].outcome(id),
            Some(Err(Error::RequestTimeout { .. }))
        ));
    }
}

#[test]
fn a_cancelled_request_has_no_outcome_and_frees_its_slot() {
    let mut c = cfg();
    c.max_in_flight_per_peer = 1;
    let mut net = Net::new(2, c, true);
    net.nodes[1].echo = false;
    let b = net.peer(1);
    let first = net.request(0, b, b"1");
    let second = net.request(0, b, b"2");
    net.run();
    let now = net.now;
    net.nodes[0].core.cancel(now, first);
    net.collect();
    net.run();
    assert_eq!(net.nodes[1].executed.len(), 2, "the second went out");
    net.nodes[1].echo = true;
    while net.nodes[1].answer_one(now) {}
    net.collect();
    net.run();
    assert!(net.nodes[0].outcome(first).is_none());
    assert_eq!(ok(net.nodes[0].outcome(second)), b"re:2");
    assert_eq!(
        net.nodes[0].metrics().frames_rejected_replay,
        1,
        "the late answer"
    );
}
