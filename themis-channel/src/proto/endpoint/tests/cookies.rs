//! Fairness per source and cookies (PROTOCOL.md §5.2, "Per-source limits and cookies"): a
//! responder under load answers message 1 with a stateless cookie, the initiator echoes it at
//! once, and one source prefix holds at most `pending_per_source` pending handshakes; and the
//! handshakes of closed networks (their longer messages behind a cookie, a refused
//! certificate).

use super::*;
use crate::wire::{COOKIE_LEN, TYPE_COOKIE, TYPE_COOKIE_ECHO};
use themis_handshake::{TYPE_MSG1, TYPE_MSG2};

/// B (node 0) asks for a cookie on every message 1.
fn loaded_net(n: usize, reliable: bool) -> Net {
    let mut c = cfg();
    c.cookie_threshold = 0;
    let mut net = Net::new(n, cfg(), reliable);
    net.nodes[0] = Node::new(0, 1, c, reliable);
    net
}

#[test]
fn under_load_message1_gets_a_stateless_cookie_and_the_echo_completes() {
    for reliable in [true, false] {
        let mut net = loaded_net(2, reliable);
        let b = net.peer(0);
        let id = net.request(1, b, b"hi");
        let m1 = net.take(|p| p.ty() == TYPE_MSG1);
        assert_eq!(m1.len(), 1);
        net.deliver(m1[0].clone());
        // B answered with a cookie no larger than message 1 and keeps nothing.
        let cookie = net.take(|p| p.ty() == TYPE_COOKIE);
        assert_eq!(cookie.len(), 1);
        assert_eq!(cookie[0].frame.len(), COOKIE_LEN);
        assert!(cookie[0].frame.len() <= m1[0].frame.len());
        assert_eq!(cookie[0].to, net.nodes[1].addr);
        assert_eq!(
            net.nodes[0].core.responder.as_ref().unwrap().pending_len(),
            0
        );
        assert!(net.take(|p| p.ty() == TYPE_MSG2).is_empty());
        // A echoes it at once: cookie ‖ the same message 1.
        net.deliver(cookie[0].clone());
        let echo = net.take(|p| p.ty() == TYPE_COOKIE_ECHO);
        assert_eq!(echo.len(), 1);
        assert_eq!(&echo[0].frame[34..], &m1[0].frame[..]);
        net.deliver(echo[0].clone());
        net.settle(Duration::from_secs(1));
        assert_eq!(ok(net.nodes[1].outcome(id)), b"re:hi");
        let (ma, mb) = (net.nodes[1].metrics(), net.nodes[0].metrics());
        assert_eq!(ma.cookies_received, 1);
        assert_eq!((mb.cookies_sent, mb.cookie_echoes_accepted), (1, 1));
        assert_eq!(mb.cookie_echoes_rejected, 0);
        assert_eq!(mb.pending_handshakes, 0);
    }
}

#[test]
fn a_cookie_for_another_address_or_nonce_is_refused() {
    let mut net = loaded_net(3, true);
    let b = net.peer(0);
    net.request(1, b, b"hi");
    let m1 = net.take(|p| p.ty() == TYPE_MSG1).remove(0);
    net.deliver(m1);
    let cookie = net.take(|p| p.ty() == TYPE_COOKIE).remove(0);
    net.deliver(cookie);
    let echo = net.take(|p| p.ty() == TYPE_COOKIE_ECHO).remove(0);
    // From another port, or another host: refused.
    for from in [addr(2), SocketAddr::from(([10, 0, 0, 2], 7001))] {
        let mut p = echo.clone();
        p.from = from;
        net.deliver(p);
    }
    // A flipped cookie bit, or another nonce: refused.
    let mut bad = echo.frame.to_vec();
    bad[2] ^= 1;
    let mut p = echo.clone();
    p.frame = Bytes::from(bad);
    net.deliver(p);
    let mut other = echo.frame.to_vec();
    other[34 + 34] ^= 1;
    let mut p = echo.clone();
    p.frame = Bytes::from(other);
    net.deliver(p);
    let m = net.nodes[0].metrics();
    assert_eq!((m.cookie_echoes_rejected, m.cookie_echoes_accepted), (4, 0));
    assert_eq!(
        net.nodes[0].core.responder.as_ref().unwrap().pending_len(),
        0
    );
    assert!(net.take(|p| p.ty() == TYPE_MSG2).is_empty());
    // The genuine one still works.
    net.deliver(echo);
    assert_eq!(net.take(|p| p.ty() == TYPE_MSG2).len(), 1);
}

#[test]
fn the_initiator_takes_one_cookie_from_the_address_it_asked_for_its_handshake() {
    let mut net = loaded_net(3, true);
    let b = net.peer(0);
    net.request(1, b, b"hi");
    let m1 = net.take(|p| p.ty() == TYPE_MSG1).remove(0);
    net.deliver(m1);
    let cookie = net.take(|p| p.ty() == TYPE_COOKIE).remove(0);
    // From another address: ignored.
    let mut p = cookie.clone();
    p.from = addr(2);
    net.deliver(p);
    // For another nonce: ignored.
    let mut p = cookie.clone();
    let mut f = p.frame.to_vec();
    f[2] ^= 1;
    p.frame = Bytes::from(f);
    net.deliver(p);
    assert!(net.take(|p| p.ty() == TYPE_COOKIE_ECHO).is_empty());
    assert_eq!(net.nodes[1].metrics().frames_rejected_other, 2);
    // The genuine one, twice: one echo.
    net.deliver(cookie.clone());
    net.deliver(cookie);
    assert_eq!(net.take(|p| p.ty() == TYPE_COOKIE_ECHO).len(), 1);
    assert_eq!(net.nodes[1].metrics().cookies_received, 1);
}

#[test]
fn over_an_unreliable_transport_message1_is_retransmitted_behind_its_cookie() {
    let mut net = loaded_net(2, false);
    let b = net.peer(0);
    let id = net.request(1, b, b"hi");
    let m1 = net.take(|p| p.ty() == TYPE_MSG1).remove(0);
    net.deliver(m1);
    let cookie = net.take(|p| p.ty() == TYPE_COOKIE).remove(0);
    net.deliver(cookie);
    // The echo is lost; the retransmission is the echo again.
    assert_eq!(net.take(|p| p.ty() == TYPE_COOKIE_ECHO).len(), 1);
    let t = net.nodes[1].core.poll_timeout().unwrap();
    net.advance_to(t);
    assert_eq!(
        net.wire
            .iter()
            .filter(|p| p.ty() == TYPE_COOKIE_ECHO)
            .count(),
        1
    );
    assert_eq!(net.wire.iter().filter(|p| p.ty() == TYPE_MSG1).count(), 0);
    net.settle(Duration::from_secs(1));
    assert_eq!(ok(net.nodes[1].outcome(id)), b"re:hi");
}

#[test]
fn below_the_threshold_no_cookie_is_asked() {
    let mut c = cfg();
    c.cookie_threshold = 2;
    let mut net = Net::new(4, cfg(), true);
    net.nodes[0] = Node::new(0, 1, c, true);
    let b = net.peer(0);
    // Messages 2 are lost: pending handshakes pile up at B.
    for i in 1..4 {
        net.request(i, b, b"x");
        for p in net.take(|p| p.ty() == TYPE_MSG1) {
            net.deliver(p);
        }
        net.take(|p| p.ty() == TYPE_MSG2);
    }
    let m = net.nodes[0].metrics();
    // Two answered with message 2, the third (two pending) with a cookie.
    assert_eq!(m.pending_handshakes, 2);
    assert_eq!(m.cookies_sent, 1);
    // The transport's load alone also asks for one.
    let mut net = Net::new(2, cfg(), true);
    net.nodes[0].core.set_transport_loaded(true);
    net.request(1, net.peer(0), b"x");
    net.run();
    assert_eq!(net.nodes[0].metrics().cookies_sent, 1);
    assert_eq!(net.nodes[0].metrics().handshakes_accepted_ok, 1);
}

#[test]
fn one_source_prefix_holds_at_most_pending_per_source_handshakes() {
    let mut c = cfg();
    c.pending_per_source = 2;
    let mut net = Net::new(5, cfg(), true);
    net.nodes[0] = Node::new(0, 1, c, true);
    // Node 4 lives on another host.
    net.nodes[4].addr = SocketAddr::from(([10, 0, 0, 2], 7000));
    let b = net.peer(0);
    let mut refused = None;
    for i in 1..5 {
        net.request(i, b, b"x");
        for p in net.take(|p| p.ty() == TYPE_MSG1) {
            net.deliver(p.clone());
            if i == 3 {
                refused = Some(p);
            }
        }
    }
    let msg2 = net.take(|p| p.ty() == TYPE_MSG2);
    // 10.0.0.1 got two, the third was refused before its signature; 10.0.0.2 got its own.
    assert_eq!(msg2.len(), 3);
    let m = net.nodes[0].metrics();
    assert_eq!(m.handshakes_rejected_source, 1);
    assert_eq!((m.pending_handshakes, m.pending_sources), (3, 2));
    // Message 3 of a 10.0.0.1 handshake gives its slot back: node 3's message 1 (sent again)
    // fits now.
    net.deliver(msg2[0].clone());
    net.run();
    assert_eq!(net.nodes[0].metrics().handshakes_accepted_ok, 1);
    net.deliver(refused.unwrap());
    assert_eq!(net.take(|p| p.ty() == TYPE_MSG2).len(), 1);
    assert_eq!(net.nodes[0].metrics().handshakes_rejected_source, 1);
    // Expiry gives the rest back.
    net.advance(themis_handshake::DEFAULT_PENDING_TTL + Duration::from_secs(1));
    net.nodes[0].core.handle_timeout(net.now);
    let m = net.nodes[0].metrics();
    assert_eq!((m.pending_handshakes, m.pending_sources), (0, 0));
}

/// Closed networks (PROTOCOL.md §2.10) carry a certificate in messages 1 and 2, so both are
/// longer: a loaded responder still answers their message 1 with a cookie, takes the echo, and
/// charges the handshake to its source until message 3 (the session id of a closed exchange).
#[test]
fn a_closed_networks_handshake_goes_through_a_cookie_and_is_charged_to_its_source() {
    use themis_crypto::AdmissionCert;
    use themis_handshake::{Admission, WallClock};
    let ak = IdentityKeypair::from_seed(&[77; 32]);
    let closed = net_id().closed(ak.public());
    let clock = WallClock::system();
    let node = |i: usize, seed: u8, mut c: EndpointConfig| {
        let id = key(seed).node_id(&closed);
        let far = clock.anchor_unix_ms + 86_400_000;
        let certificate = AdmissionCert::issue(&ak, &closed, id, far).unwrap();
        c.handshake.admission = Some(Admission { certificate, clock });
        Node::on(i, seed, c, true, closed.clone())
    };
    let mut loaded = cfg();
    loaded.cookie_threshold = 0;
    let mut net = Net::new(2, cfg(), true);
    net.nodes[0] = node(0, 1, loaded);
    net.nodes[1] = node(1, 2, cfg());
    let b = net.peer(0);
    let id = net.request(1, b, b"hi");
    let m1 = net.take(|p| p.ty() == TYPE_MSG1).remove(0);
    assert!(
        m1.frame.len() > themis_handshake::MSG1_MAX_LEN,
        "a closed message 1"
    );
    net.deliver(m1);
    let cookie = net.take(|p| p.ty() == TYPE_COOKIE);
    assert_eq!(
        cookie.len(),
        1,
        "a closed message 1 under load gets a cookie"
    );
    net.deliver(cookie[0].clone());
    let echo = net.take(|p| p.ty() == TYPE_COOKIE_ECHO).remove(0);
    net.deliver(echo);
    let m2 = net.take(|p| p.ty() == TYPE_MSG2).remove(0);
    assert_eq!(m2.frame.len(), themis_handshake::MSG2_CLOSED_LEN);
    assert_eq!(
        net.nodes[0].metrics().pending_sources,
        1,
        "charged to its source"
    );
    net.deliver(m2);
    net.settle(Duration::from_secs(1));
    assert_eq!(ok(net.nodes[1].outcome(id)), b"re:hi");
    let mb = net.nodes[0].metrics();
    assert_eq!((mb.cookies_sent, mb.cookie_echoes_accepted), (1, 1));
    assert_eq!(
        (mb.pending_handshakes, mb.pending_sources),
        (0, 0),
        "released at message 3"
    );
}

/// Closed networks: a responder whose certificate has expired answers message 2, signed; the
/// initiator refuses the certificate and fails the handshake at once with `NotAdmitted` (no
/// genuine message 2 can follow), instead of waiting out its handshake timeout.
#[test]
fn a_peer_whose_certificate_does_not_admit_it_fails_the_handshake_at_once() {
    use themis_crypto::AdmissionCert;
    use themis_handshake::{Admission, WallClock};
    let ak = IdentityKeypair::from_seed(&[77; 32]);
    let closed = net_id().closed(ak.public());
    let clock = WallClock::system();
    let node = |i: usize, seed: u8, valid_ms: i64| {
        let id = key(seed).node_id(&closed);
        let until = clock.anchor_unix_ms.saturating_add_signed(valid_ms);
        let certificate = AdmissionCert::issue(&ak, &closed, id, until).unwrap();
        let mut c = cfg();
        c.handshake.admission = Some(Admission { certificate, clock });
        Node::on(i, seed, c, true, closed.clone())
    };
    let mut net = Net::new(2, cfg(), true);
    // B's certificate ended an hour ago (it still starts: the core does not check its own)
    net.nodes[0] = node(0, 1, -3_600_000);
    net.nodes[1] = node(1, 2, 86_400_000);
    let b = net.peer(0);
    let id = net.request(1, b, b"hi");
    net.settle(Duration::from_millis(100));
    match net.nodes[1].outcome(id) {
        Some(Err(Error::NotAdmitted { peer, reason, .. })) => {
            assert_eq!(*peer, b.id);
            assert!(!reason.is_empty());
        }
        other => panic!("expected NotAdmitted within 100 ms, got {other:?}"),
    }
    assert_eq!(net.nodes[1].metrics().handshakes_failed_identity, 1);
}
