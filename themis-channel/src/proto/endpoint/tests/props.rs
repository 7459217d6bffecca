//! Any schedule of drops, duplicates, reordering, delays and late answers: every request and
//! identify call gets exactly one outcome, a response is always the answer to its own command,
//! no command runs twice, no session is lost (no node restarts), and nothing panics.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Request(usize, usize),
    Identify(usize, usize),
    Deliver(usize),
    Drop(usize),
    Duplicate(usize),
    Advance(u64),
    Answer(usize),
    Abandon(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..3usize).prop_map(|(a, b)| Op::Request(a, b)),
        1 => (0..3usize, 0..3usize).prop_map(|(a, b)| Op::Identify(a, b)),
        8 => any::<usize>().prop_map(Op::Deliver),
        2 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::Duplicate),
        2 => (0..1000u64).prop_map(Op::Advance),
        3 => (0..3usize).prop_map(Op::Answer),
        1 => (0..3usize).prop_map(Op::Abandon),
    ]
}

/// Runs `ops` on three nodes; checks the invariants at the end.
fn run(secure: bool, reliable: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut c = if secure { cfg() } else { insecure() };
    c.max_handlers = 4;
    c.max_in_flight_per_peer = 3;
    c.max_in_flight = 6;
    let mut net = Net::new(3, c, reliable);
    for n in &mut net.nodes {
        n.echo = false;
    }
    let mut sent: HashMap<(usize, RequestId), Vec<u8>> = HashMap::new();
    let mut identifies: Vec<(usize, RequestId)> = Vec::new();
    for (k, op) in ops.iter().enumerate() {
        match *op {
            Op::Request(a, b) => {
                let b = if a == b { (b + 1) % 3 } else { b };
                let payload = format!("{k}:{a}->{b}").into_bytes();
                if net.nodes[a].core.can_accept_request() {
                    let id = net.request(a, net.peer(b), &payload);
                    sent.insert((a, id), payload);
                }
            }
            Op::Identify(a, b) => {
                let id = net.identify(a, addr(b));
                identifies.push((a, id));
            }
            Op::Deliver(i) if !net.wire.is_empty() => {
                let p = net.wire.remove(i % net.wire.len()).unwrap();
                net.deliver(p);
            }
            Op::Drop(i) if !net.wire.is_empty() => {
                net.wire.remove(i % net.wire.len());
            }
            // A reliable transport delivers each frame once.
            Op::Duplicate(i) if !net.wire.is_empty() && !reliable => {
                let p = net.wire[i % net.wire.len()].clone();
                net.deliver(p);
            }
            Op::Advance(ms) => net.advance(Duration::from_millis(ms)),
            Op::Answer(n) => {
                let now = net.now;
                net.nodes[n].answer_one(now);
                net.collect();
            }
            Op::Abandon(n) => {
                if let Some((token, _, _)) = net.nodes[n].commands.pop_front() {
                    net.nodes[n].core.abandon(token);
                }
            }
            _ => {}
        }
    }
    // Then the network heals: everything is answered and delivered, the clock runs out.
    for n in &mut net.nodes {
        n.echo = true;
    }
    net.collect();
    net.settle(Duration::from_secs(120));
    for (i, n) in net.nodes.iter().enumerate() {
        let mut seen: HashMap<RequestId, usize> = HashMap::new();
        for (id, r) in &n.responses {
            *seen.entry(*id).or_default() += 1;
            let Some(payload) = sent.get(&(i, *id)) else {
                prop_assert!(false, "an outcome for a request never made");
                continue;
            };
            if let Ok(b) = r {
                prop_assert_eq!(&b[..], &echoed(payload)[..], "answered by its own command");
            }
            // No node restarts, and no peer holds a third session: none is ever lost.
            prop_assert!(
                !matches!(r, Err(Error::SessionLost { .. })),
                "a session lost without a restart"
            );
        }
        let mine = sent.keys().filter(|(a, _)| *a == i).count();
        prop_assert_eq!(
            seen.len(),
            mine,
            "every request of node {} has an outcome",
            i
        );
        prop_assert!(seen.values().all(|&c| c == 1), "exactly one outcome each");
        let calls = identifies.iter().filter(|(a, _)| *a == i).count();
        prop_assert_eq!(n.identities.len(), calls);
        let mut runs: HashMap<&[u8], usize> = HashMap::new();
        for e in &n.executed {
            *runs.entry(&e[..]).or_default() += 1;
        }
        prop_assert!(
            runs.values().all(|&c| c == 1),
            "a command ran twice: {:?}",
            runs
        );
        let m = n.metrics();
        prop_assert_eq!((m.in_flight, m.handlers_running), (0, 0));
        prop_assert_eq!(n.core.timers.len(), 0);
        prop_assert!(n.core.handshakes.is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_request_gets_exactly_one_outcome(
        secure in any::<bool>(),
        reliable in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        run(secure, reliable, &ops)?;
    }

    /// Garbage of every type, from anywhere: counted, never a panic, never an outcome.
    #[test]
    fn any_frame_is_survived(
        secure in any::<bool>(),
        frames in proptest::collection::vec(
            (0x00u8..0x40, proptest::collection::vec(any::<u8>(), 0..300)), 1..60),
    ) {
        let mut net = Net::new(2, if secure { cfg() } else { insecure() }, false);
        let b = net.peer(1);
        net.request(0, b, b"warm");
        net.run();
        let before = net.nodes[0].responses.len();
        for (ty, mut f) in frames {
            f.splice(0..0, [crate::wire::VERSION, ty]);
            net.deliver(Packet { from: b.addr, to: addr(0), frame: Bytes::from(f) });
        }
        prop_assert_eq!(net.nodes[0].responses.len(), before);
        let id = net.request(0, b, b"still");
        net.run();
        prop_assert_eq!(ok(net.nodes[0].outcome(id)), b"re:still");
    }
}
