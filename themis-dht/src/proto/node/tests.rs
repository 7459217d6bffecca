//! Unit tests of the node core: each drives one node by hand, as its driver would, and looks
//! at what it sends, answers and reports.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use themis_crypto::{IdentityKeypair, NetworkId, NodeId};

use super::maintenance::STABILIZE_CHAIN;
use super::requests::Purpose;
use super::{Contact, Event, Node, NodeState, Output, QueryId, Reply, RequestFailure, Unregister};
use crate::Error;
use crate::proto::config::Config;
use crate::proto::record::{ProviderRecord, Refusal, ServiceSpec, object_id};
use crate::proto::ring::{distance, finger_start};
use crate::proto::wire::{Peer, Request, Response, WirePeer, WireRecord};

fn net() -> NetworkId {
    NetworkId::new("unit").unwrap()
}

fn kp(seed: u8) -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::from_seed(&[seed; 32]))
}

fn peer_of(k: &IdentityKeypair, port: u16) -> Peer {
    Peer {
        id: k.node_id(&net()),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn alone(cfg: Config) -> (Node, Instant, SystemTime) {
    let now = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let n = Node::new(
        cfg,
        kp(1),
        net(),
        "127.0.0.1:1".parse().unwrap(),
        now,
        wall,
        1,
    );
    (n, now, wall)
}

fn record(signer: &IdentityKeypair, name: &str, r: u8, exp: u64, seq: u64) -> ProviderRecord {
    ProviderRecord::sign(
        signer,
        &net(),
        &ServiceSpec::new(name),
        "127.0.0.1:9".parse().unwrap(),
        r,
        exp,
        seq,
    )
}

fn store(n: &mut Node, now: Instant, from: Peer, rec: &ProviderRecord) -> Response {
    let bytes = Request::Store {
        record: WireRecord::from(rec),
    }
    .encode();
    n.handle_request(now, from, 7, &bytes);
    let mut answer = None;
    while let Some(o) = n.poll_output() {
        if let Output::Respond { token: 7, bytes } = o {
            answer = Some(Response::decode(&bytes, 1 << 20).unwrap());
        }
    }
    answer.unwrap()
}

fn refused(reason: Refusal) -> Response {
    Response::Refused { reason }
}

/// Delivers `r` as the answer of `from` to the node's request `request_id`.
fn reply(n: &mut Node, now: Instant, request_id: u64, from: NodeId, r: &Response) {
    let bytes = r.encode();
    n.handle_response(
        now,
        request_id,
        Ok(Reply {
            from,
            bytes: &bytes,
        }),
    );
}

/// Issue 11: only a record's provider can withdraw it. A tombstone from another sender is
/// `not_provider`; a record turned into a tombstone by flipping its flag (or the reverse) is
/// `bad_signature`; the provider's own tombstone replaces its record, and the older record
/// cannot come back (`stale`), while a newer registration replaces the tombstone.
#[test]
fn only_the_provider_withdraws_its_record() {
    let (mut n, now, _) = alone(Config::default());
    let exp = n.wall_ms(now) + 60_000;
    let (a, b) = (kp(2), kp(3));
    let (from_a, from_b) = (peer_of(&a, 2), peer_of(&b, 3));
    let rec_a = record(&a, "svc", 0, exp, 5);
    assert_eq!(store(&mut n, now, from_a, &rec_a), Response::Stored);
    let tomb = |signer: &IdentityKeypair, seq| {
        ProviderRecord::sign_withdrawal(
            signer,
            &net(),
            &ServiceSpec::new("svc"),
            "127.0.0.1:9".parse().unwrap(),
            0,
            exp,
            seq,
        )
    };
    // A's tombstone sent by B (a relay, or an attacker holding a copy): not the provider
    assert_eq!(
        store(&mut n, now, from_b, &tomb(&a, 6)),
        refused(Refusal::NotProvider)
    );
    let flipped = ProviderRecord {
        seq: 6,
        withdrawn: true,
        ..rec_a.clone()
    };
    assert_eq!(
        store(&mut n, now, from_a, &flipped),
        refused(Refusal::BadSignature)
    );
    assert!(!n.stored(&object_id("svc", 0))[0].is_withdrawn());
    // the provider withdraws: the tombstone replaces the record, the record cannot return
    assert_eq!(store(&mut n, now, from_a, &tomb(&a, 6)), Response::Stored);
    let held = n.stored(&object_id("svc", 0));
    assert_eq!((held.len(), held[0].is_withdrawn()), (1, true));
    assert_eq!(store(&mut n, now, from_a, &rec_a), refused(Refusal::Stale));
    assert_eq!(
        store(&mut n, now, from_a, &record(&a, "svc", 0, exp, 7)),
        Response::Stored
    );
    assert!(!n.stored(&object_id("svc", 0))[0].is_withdrawn());
}

#[test]
fn store_checks() {
    let (mut n, now, _) = alone(Config::default());
    let exp = n.wall_ms(now) + 60_000;
    let a = kp(2);
    let b = kp(3);
    let from_a = peer_of(&a, 2);
    // a record about another provider is refused
    let rec_b = record(&b, "svc", 0, exp, 1);
    assert_eq!(
        store(&mut n, now, from_a, &rec_b),
        refused(Refusal::NotProvider)
    );
    // the provider's own record is accepted, then is idempotent
    let rec_a = record(&a, "svc", 0, exp, 5);
    assert_eq!(store(&mut n, now, from_a, &rec_a), Response::Stored);
    assert_eq!(store(&mut n, now, from_a, &rec_a), Response::Stored);
    // an older sequence number is stale; a newer one replaces
    let old = record(&a, "svc", 0, exp, 4);
    assert_eq!(store(&mut n, now, from_a, &old), refused(Refusal::Stale));
    let newer = record(&a, "svc", 0, exp + 1, 6);
    assert_eq!(store(&mut n, now, from_a, &newer), Response::Stored);
    assert_eq!(n.stored(&object_id("svc", 0))[0].seq(), 6);
    // forged field: bad signature
    let forged = rec_a.forged_addr("10.9.9.9:9".parse().unwrap());
    let forged = ProviderRecord { seq: 9, ..forged };
    assert_eq!(
        store(&mut n, now, from_a, &forged),
        refused(Refusal::BadSignature)
    );
    // expiry window
    let past = record(&a, "p", 0, n.wall_ms(now), 1);
    assert_eq!(store(&mut n, now, from_a, &past), refused(Refusal::Expired));
    let far = record(&a, "f", 0, exp + 3_600_000, 1);
    assert_eq!(
        store(&mut n, now, from_a, &far),
        refused(Refusal::TooFarFuture)
    );
    // replica index above the network maximum
    let r9 = record(&a, "r", 9, exp, 1);
    assert_eq!(
        store(&mut n, now, from_a, &r9),
        refused(Refusal::BadReplica)
    );
    let m = n.metrics();
    assert_eq!(m.rejected_for(Refusal::NotProvider), 1);
    assert_eq!(m.rejected_for(Refusal::BadSignature), 1);
    assert_eq!(m.stored_records, 1);
}

#[test]
fn over_quota_stores_are_refused() {
    let cfg = Config {
        max_records_per_provider: 2,
        max_records_total: 3,
        ..Config::default()
    };
    let (mut n, now, _) = alone(cfg);
    let exp = n.wall_ms(now) + 60_000;
    let a = kp(2);
    let pa = peer_of(&a, 2);
    for name in ["x", "y"] {
        assert_eq!(
            store(&mut n, now, pa, &record(&a, name, 0, exp, 1)),
            Response::Stored
        );
    }
    assert_eq!(
        store(&mut n, now, pa, &record(&a, "z", 0, exp, 1)),
        refused(Refusal::OverQuota)
    );
    let b = kp(3);
    let pb = peer_of(&b, 3);
    assert_eq!(
        store(&mut n, now, pb, &record(&b, "x", 0, exp, 1)),
        Response::Stored
    );
    let c = kp(4);
    assert_eq!(
        store(&mut n, now, peer_of(&c, 4), &record(&c, "x", 0, exp, 1)),
        refused(Refusal::OverQuota)
    );
}

#[test]
fn records_expire() {
    let (mut n, now, _) = alone(Config::default());
    let a = kp(2);
    let exp = n.wall_ms(now) + 1_500;
    assert_eq!(
        store(&mut n, now, peer_of(&a, 2), &record(&a, "x", 0, exp, 1)),
        Response::Stored
    );
    n.handle_timeout(now + Duration::from_secs(2));
    assert_eq!(n.stored_len(), 0);
    assert_eq!(n.metrics().expirations, 1);
}

#[test]
fn rate_limit_per_peer() {
    let cfg = Config {
        peer_rate_burst: 3,
        peer_rate_per_sec: 1,
        ..Config::default()
    };
    let (mut n, now, _) = alone(cfg);
    let a = peer_of(&kp(2), 2);
    let ping = Request::Ping.encode();
    let mut answers = Vec::new();
    for t in 0..5 {
        n.handle_request(now, a, t, &ping);
    }
    while let Some(o) = n.poll_output() {
        if let Output::Respond { bytes, .. } = o {
            answers.push(Response::decode(&bytes, 1024).unwrap());
        }
    }
    assert_eq!(answers.iter().filter(|r| **r == Response::Pong).count(), 3);
    assert_eq!(n.metrics().rejected_for(Refusal::RateLimited), 2);
}

#[test]
fn unknown_and_mismatched_responses_are_ignored_or_failed() {
    let (mut n, now, _) = alone(Config::default());
    n.handle_response(now, 999, Err(RequestFailure::Timeout));
    let other = kp(5).node_id(&net());
    let target = SocketAddr::from(([127, 0, 0, 1], 5));
    n.join(
        now,
        vec![Contact {
            addr: target,
            id: Some(other),
        }],
    )
    .unwrap();
    let Some(Output::Send {
        request_id, expect, ..
    }) = n.poll_output()
    else {
        panic!("join sends a request")
    };
    assert_eq!(expect, Some(other));
    // a reply authenticated as somebody else is not accepted
    let joined = Response::Joined {
        successor: peer_of(&kp(6), 6).into(),
        successors: vec![],
    };
    reply(&mut n, now, request_id, kp(6).node_id(&net()), &joined);
    assert_eq!(n.state(), NodeState::Joining);
}

/// Joins `n` through bootstrap `b` whose answer names `s` as the successor; returns the
/// node as a member whose only successor is `s` (and no predecessor).
fn joined_through(n: &mut Node, now: Instant, b: Peer, s: Peer) {
    n.join(now, vec![Contact::from(b)]).unwrap();
    let answer = |n: &mut Node, from: Peer, r: Response| {
        let Some(Output::Send { request_id, .. }) = n.poll_output() else {
            panic!("expected a request")
        };
        reply(n, now, request_id, from.id, &r);
    };
    answer(
        n,
        b,
        Response::Joined {
            successor: s.into(),
            successors: vec![],
        },
    );
    answer(
        n,
        s,
        Response::Neighbors {
            predecessor: None,
            successors: vec![],
        },
    );
    assert_eq!(n.state(), NodeState::Member);
    while n.poll_output().is_some() {}
}

/// Acknowledges the Notify a newcomer sent its successor `s` on joining.
fn answer_notify(n: &mut Node, now: Instant, s: Peer) {
    let notify = n
        .requests
        .find(|p| matches!(p.purpose, Purpose::Notify) && p.expect == Some(s.id))
        .expect("the newcomer notified its successor");
    reply(n, now, notify, s.id, &Response::Ack);
}

fn sent_requests(n: &mut Node) -> Vec<(u64, Request)> {
    let mut out = Vec::new();
    while let Some(o) = n.poll_output() {
        if let Output::Send {
            request_id, bytes, ..
        } = o
        {
            out.push((request_id, Request::decode(&bytes, 1 << 20).unwrap()));
        }
    }
    out
}

/// Peers (keys 2..40) in clockwise order from the node of key 1.
fn peers_clockwise(n: &Node) -> Vec<Peer> {
    let me = n.ring.me.id;
    let mut v: Vec<Peer> = (2..40u8).map(|k| peer_of(&kp(k), u16::from(k))).collect();
    v.sort_by_key(|p| distance(&me, &p.id));
    v
}

/// Answers the one request the node has just sent with `r`, as `from`; returns what it
/// asked.
fn answer_one(n: &mut Node, now: Instant, from: Peer, r: &Response) -> Request {
    let sent = sent_requests(n);
    let [(request_id, req)] = sent.as_slice() else {
        panic!("expected one request, got {sent:?}")
    };
    reply(n, now, *request_id, from.id, r);
    req.clone()
}

/// Regression (a 2 s blink in `cargo xtask bench`, 10 s with the default profile): just
/// after a leave, a bootstrap's answer may name a successor that has left, its place in a
/// successor list further back not yet healed. Its refusal ended the round over the
/// (single) bootstrap, and the next round waited 2 × the request timeout, the delay meant
/// for a crashed successor. Such an answer now gets one free retry through the same
/// bootstrap after a stabilize period; a second one takes the old path.
#[test]
fn a_join_answer_naming_a_departed_successor_is_retried_after_a_stabilize_period() {
    let cfg = Config::fast();
    let (stab, timeout) = (cfg.stabilize_period, cfg.request_timeout);
    let (mut n, now, _) = alone(cfg);
    let b = peer_of(&kp(2), 2);
    let gone = peer_of(&kp(3), 3);
    let s = peer_of(&kp(4), 4);
    let joined = |succ: Peer| Response::Joined {
        successor: succ.into(),
        successors: vec![],
    };
    n.join(now, vec![Contact::from(b)]).unwrap();
    answer_one(&mut n, now, b, &joined(gone));
    let verify = answer_one(&mut n, now, gone, &refused(Refusal::NotMember));
    assert!(matches!(verify, Request::GetNeighbors));
    assert_eq!(n.state(), NodeState::Joining);
    assert!(
        sent_requests(&mut n).is_empty(),
        "waits before the next round"
    );
    assert_eq!(n.poll_timeout(), Some(now + stab));
    let t = now + stab;
    n.handle_timeout(t);
    // the free retry: the bootstrap again, still stale; now the round ends as before and
    // waits the long delay
    let again = answer_one(&mut n, t, b, &joined(gone));
    assert!(matches!(again, Request::Join));
    answer_one(&mut n, t, gone, &refused(Refusal::NotMember));
    assert!(sent_requests(&mut n).is_empty());
    assert_eq!(n.poll_timeout(), Some(t + timeout * 2));
    let t = t + timeout * 2;
    n.handle_timeout(t);
    answer_one(&mut n, t, b, &joined(s));
    answer_one(
        &mut n,
        t,
        s,
        &Response::Neighbors {
            predecessor: None,
            successors: vec![],
        },
    );
    assert_eq!(n.state(), NodeState::Member);
}

/// A lookup whose candidates all refuse as no longer members (the nodes closest to the
/// target have just left) is refilled from the routing table instead of failing, and a
/// finger that refuses so is dropped like a dead one.
#[test]
fn a_lookup_out_of_candidates_is_refilled_and_departed_fingers_are_dropped() {
    let mut cfg = Config::fast();
    cfg.max_lookup_candidates = 1;
    let (mut n, now, _) = alone(cfg);
    let ps = peers_clockwise(&n);
    let (succs, target, b) = (&ps[..8], ps[12].id, ps[30]);
    n.join(now, vec![Contact::from(b)]).unwrap();
    answer_one(
        &mut n,
        now,
        b,
        &Response::Joined {
            successor: succs[0].into(),
            successors: vec![],
        },
    );
    answer_one(
        &mut n,
        now,
        succs[0],
        &Response::Neighbors {
            predecessor: None,
            successors: succs[1..].iter().map(|p| WirePeer::from(*p)).collect(),
        },
    );
    assert_eq!(n.state(), NodeState::Member);
    while n.poll_output().is_some() {}
    // a departed node sits in a finger too
    n.ring.set_finger(200, Some(succs[7]));
    n.find(now, target).unwrap();
    // The seeds are the k closest preceding entries (k = the candidate limit, which the
    // config raises to α = 3): s8, s7, s6. All refuse. Then the lookup is refilled with the
    // closest entries not asked yet: s5, s4, s3.
    let k = n.cfg.max_lookup_candidates;
    assert_eq!(k, 3);
    let departed: Vec<NodeId> = succs[8 - k..].iter().rev().map(|p| p.id).collect();
    let mut asked = Vec::new();
    let mut refilled = Vec::new();
    while refilled.is_empty() {
        let sent = sent_requests(&mut n);
        assert!(
            !sent.is_empty(),
            "the lookup stopped after asking {asked:?}"
        );
        for (id, req) in sent {
            assert!(matches!(req, Request::Find { .. }));
            let to = n.requests.get(id).and_then(|p| p.expect).unwrap();
            assert!(!asked.contains(&to), "asked twice");
            asked.push(to);
            if !departed.contains(&to) {
                refilled.push(to);
                continue;
            }
            reply(&mut n, now, id, to, &refused(Refusal::NotMember));
        }
    }
    assert_eq!(&asked[..k], &departed[..]);
    assert!(
        refilled
            .iter()
            .all(|id| succs[8 - 2 * k..8 - k].iter().any(|p| p.id == *id)),
        "refilled with the closest entries not asked yet"
    );
    assert!(
        n.ring.fingers.iter().flatten().all(|f| f.id != succs[7].id),
        "the finger that refused is dropped"
    );
    assert_eq!(n.metrics.lookups_failed, 0);
}

/// Regression (blink tails of seconds, tests/blink.rs): a node that left right after
/// joining sent its Leave while its Notify to the same successor was still in flight; the
/// successor handled the Notify last and adopted a node that had left as its predecessor,
/// then refused the next newcomer's handoff (not its predecessor) until its predecessor
/// check noticed. The Leave now waits for the Notify's answer.
#[test]
fn a_leave_waits_for_the_notify_still_in_flight_to_the_same_successor() {
    let (mut n, now, _) = alone(Config::fast());
    let b = peer_of(&kp(2), 2);
    let s = peer_of(&kp(3), 3);
    joined_through(&mut n, now, b, s);
    let notify = n
        .requests
        .find(|p| matches!(p.purpose, Purpose::Notify) && p.expect == Some(s.id))
        .expect("the newcomer notifies its successor");
    n.leave(now).unwrap();
    assert_eq!(n.state(), NodeState::Leaving);
    assert!(
        sent_requests(&mut n).is_empty(),
        "no Leave while the Notify is unanswered"
    );
    reply(&mut n, now, notify, s.id, &Response::Ack);
    let sent = sent_requests(&mut n);
    assert!(
        matches!(sent.as_slice(), [(_, Request::Leave { .. })]),
        "the Leave goes once the Notify is answered: {sent:?}"
    );
}

/// Regression (the CI hang of issue 5): a node whose stabilize fails while it leaves used
/// to turn "orphaned" and rejoin through its bootstraps, dropping the leave on the floor:
/// no `Event::Left` ever came and `DhtNode::leave` waited forever.
#[test]
fn a_failed_stabilize_while_leaving_still_ends_the_leave() {
    let (mut n, now, _) = alone(Config::fast());
    let b = peer_of(&kp(2), 2);
    let s = peer_of(&kp(3), 3);
    joined_through(&mut n, now, b, s);
    answer_notify(&mut n, now, s);
    n.leave(now).unwrap();
    assert_eq!(n.state(), NodeState::Leaving);
    let mut leave = None;
    while let Some(o) = n.poll_output() {
        if let Output::Send { request_id, .. } = o {
            leave = Some(request_id);
        }
    }
    let leave = leave.expect("the leave is sent to the successor");
    // Stabilize runs while the leave is in flight, and the successor turns out dead.
    // (after the first stabilize period, before the leave request times out)
    let later = now + Duration::from_millis(700);
    n.handle_timeout(later);
    let stabilize = n
        .requests
        .find(|p| matches!(p.purpose, Purpose::Stabilize { .. }))
        .expect("stabilize asks the successor");
    n.handle_response(later, stabilize, Err(RequestFailure::Unreachable));
    assert_eq!(
        n.state(),
        NodeState::Leaving,
        "a leaving node never rejoins"
    );
    n.handle_response(later, leave, Err(RequestFailure::Unreachable));
    let mut left = false;
    while let Some(o) = n.poll_output() {
        left |= matches!(o, Output::Event(Event::Left { .. }));
    }
    assert!(left, "the leave ends with Event::Left");
    assert_eq!(n.state(), NodeState::Left);
}

/// Regression (`themis-mesh` node_mesh, "the leave did not end well: the node is joining"):
/// a node orphaned by the failure of every successor re-joins through its bootstraps; a
/// leave (a SIGTERM, a shutdown) then failed with `InvalidState`. It now abandons the
/// re-join and ends at once, its records counted as lost.
#[test]
fn an_orphaned_node_rejoining_can_leave() {
    let (mut n, now, _) = alone(Config::fast());
    let b = peer_of(&kp(2), 2);
    let s = peer_of(&kp(3), 3);
    joined_through(&mut n, now, b, s);
    answer_notify(&mut n, now, s);
    while n.poll_output().is_some() {}
    // The only successor dies (no predecessor, no finger): the node is orphaned.
    let later = now + Duration::from_millis(700);
    n.handle_timeout(later);
    let stabilize = n
        .requests
        .find(|p| matches!(p.purpose, Purpose::Stabilize { .. }))
        .expect("stabilize asks the successor");
    n.handle_response(later, stabilize, Err(RequestFailure::Unreachable));
    assert_eq!(n.state(), NodeState::Joining, "orphaned, it re-joins");
    while n.poll_output().is_some() {}
    n.leave(later).expect("an orphaned node may leave");
    let mut left = None;
    while let Some(o) = n.poll_output() {
        if let Output::Event(Event::Left {
            records_handed_over,
            ..
        }) = o
        {
            left = Some(records_handed_over);
        }
    }
    assert_eq!(left, Some(0), "the leave ends at once with Event::Left");
    assert_eq!(n.state(), NodeState::Left);
    // A node on its first join still cannot leave.
    let (mut fresh, now, _) = alone(Config::fast());
    fresh.join(now, vec![Contact::from(b)]).unwrap();
    assert!(fresh.leave(now).is_err());
}

/// Regression (the split ring of the churn proptest, tests/sim.rs `churn_case_split_ring`):
/// a member whose successors all failed (and who has no finger left) used to re-join
/// through its original bootstraps although its predecessor was alive; when those had left,
/// the join failed and the node started a ring of its own that nothing ever merged back.
/// It now takes the predecessor as successor and stabilizes through it.
#[test]
fn a_node_with_no_live_successor_stabilizes_through_its_predecessor() {
    let (mut n, now, _) = alone(Config::fast());
    let b = peer_of(&kp(2), 2);
    let s = peer_of(&kp(3), 3);
    let p = peer_of(&kp(4), 4);
    joined_through(&mut n, now, b, s);
    n.handle_request(now, p, 7, &Request::Notify.encode());
    assert_eq!(n.predecessor(), Some(p));
    while n.poll_output().is_some() {}
    let (later, stabilize) = stabilize_due(&mut n, now);
    n.handle_response(later, stabilize, Err(RequestFailure::Timeout));
    assert_eq!(
        n.state(),
        NodeState::Member,
        "no re-join while the predecessor lives"
    );
    assert_eq!(n.successors(), &[p]);
    let mut asked_pred = false;
    while let Some(o) = n.poll_output() {
        if let Output::Send { to, bytes, .. } = o {
            let req = Request::decode(&bytes, 1 << 16).unwrap();
            assert!(!matches!(req, Request::Join), "no join sent");
            asked_pred |= to == p.addr && matches!(req, Request::GetNeighbors);
        }
    }
    assert!(asked_pred, "stabilize goes on through the predecessor");
}

/// Runs `n` to its first stabilize round (700 ms after `now`, past the fast profile's
/// jittered period); returns that time and the request asking the successor, the outputs
/// drained.
fn stabilize_due(n: &mut Node, now: Instant) -> (Instant, u64) {
    let later = now + Duration::from_millis(700);
    n.handle_timeout(later);
    let stabilize = n
        .requests
        .find(|q| matches!(q.purpose, Purpose::Stabilize { .. }))
        .expect("stabilize asks the successor");
    while n.poll_output().is_some() {}
    (later, stabilize)
}

/// Asks `n`, as a third peer, for the owner of `target`; returns the answer.
fn ask_find(n: &mut Node, now: Instant, target: NodeId) -> Response {
    let req = Request::Find {
        target,
        records: false,
    };
    n.handle_request(now, peer_of(&kp(9), 9), 8, &req.encode());
    let mut answer = None;
    while let Some(o) = n.poll_output() {
        if let Output::Respond { token: 8, bytes } = o {
            answer = Some(Response::decode(&bytes, 1 << 20).unwrap());
        }
    }
    answer.expect("a find is answered at once")
}

/// Regression (`themis demo`'s discovery right after a crash, themis-cli tests/demo.rs): a
/// node whose predecessor failed answered `owner` for its own id only, until the next live node
/// before it notified it, so a lookup of a key it held failed in between (up to a stabilize
/// period). It now stays the owner of the ids between it and the failed predecessor, and a new
/// predecessor takes its part as before.
#[test]
fn a_node_whose_predecessor_failed_still_owns_the_ids_up_to_it() {
    let (mut n, now, _) = alone(Config::fast());
    let (b, s, p) = (peer_of(&kp(2), 2), peer_of(&kp(3), 3), peer_of(&kp(4), 4));
    joined_through(&mut n, now, b, s);
    n.handle_request(now, p, 7, &Request::Notify.encode());
    assert_eq!(n.predecessor(), Some(p));
    while n.poll_output().is_some() {}
    let mine = finger_start(&p.id, 0);
    assert!(matches!(
        ask_find(&mut n, now, mine),
        Response::Owner { .. }
    ));
    assert!(!matches!(
        ask_find(&mut n, now, p.id),
        Response::Owner { .. }
    ));
    // the predecessor check: p does not answer
    let later = now + Duration::from_millis(1300);
    n.handle_timeout(later);
    let ping = n
        .requests
        .find(|q| matches!(q.purpose, Purpose::CheckPred { .. }))
        .expect("the predecessor is checked");
    while n.poll_output().is_some() {}
    n.handle_response(later, ping, Err(RequestFailure::Timeout));
    assert_eq!(n.predecessor(), None);
    assert!(matches!(
        ask_find(&mut n, later, mine),
        Response::Owner { .. }
    ));
    assert!(!matches!(
        ask_find(&mut n, later, p.id),
        Response::Owner { .. }
    ));
    // the next live node before p notifies: (q, p] is now n's too, by the usual rule
    let q = (5..40u8)
        .map(|k| peer_of(&kp(k), u16::from(k)))
        .find(|q| in_order(&q.id, &p.id, &n.id()))
        .unwrap();
    n.handle_request(later, q, 7, &Request::Notify.encode());
    assert_eq!(n.predecessor(), Some(q));
    assert!(matches!(
        ask_find(&mut n, later, p.id),
        Response::Owner { .. }
    ));
}

/// `a`, `b`, `c` lie clockwise in this order on the ring.
fn in_order(a: &NodeId, b: &NodeId, c: &NodeId) -> bool {
    distance(a, b) < distance(a, c)
}

/// Answers every request the node sent with "busy".
fn answer_all_busy(n: &mut Node, now: Instant) {
    let busy = refused(Refusal::Busy).encode();
    let mut sent = Vec::new();
    while let Some(o) = n.poll_output() {
        if let Output::Send {
            request_id,
            expect: Some(id),
            ..
        } = o
        {
            sent.push((request_id, id));
        }
    }
    for (request_id, from) in sent {
        n.handle_response(now, request_id, Ok(Reply { from, bytes: &busy }));
    }
}

/// A leaving node does not re-store its registrations, so their due time must not make its
/// timer fire in the past (the driver would spin until the leave ends).
#[test]
fn a_leaving_node_never_asks_for_a_timer_in_the_past() {
    let (mut n, now, _) = alone(Config::fast());
    joined_through(&mut n, now, peer_of(&kp(2), 2), peer_of(&kp(3), 3));
    n.register(now, ServiceSpec::new("svc"), Some(0)).unwrap();
    answer_all_busy(&mut n, now);
    n.leave(now).unwrap();
    let mut t = now;
    // the successor keeps refusing as busy: the leave retries every stabilize period,
    // long past the registration's retry time (2 s)
    for _ in 0..12 {
        t += Duration::from_millis(300);
        n.handle_timeout(t);
        answer_all_busy(&mut n, t);
        assert_eq!(n.state(), NodeState::Leaving);
        let next = n.poll_timeout();
        assert!(next.is_none_or(|d| d > t), "timer {next:?} not after {t:?}");
    }
}

/// The re-store schedule is exactly the idle registrations at their refresh times.
fn schedule_consistent(n: &Node) -> Result<(), String> {
    let want: BTreeSet<(Instant, String)> = n
        .regs
        .map
        .iter()
        .filter(|(_, r)| !r.running)
        .map(|(k, r)| (r.next_refresh, k.clone()))
        .collect();
    if want == n.regs.due {
        Ok(())
    } else {
        Err(format!(
            "schedule {:?} but idle registrations {want:?}",
            n.regs.due
        ))
    }
}

/// Registrations whose stores fail are retried from the schedule, and the timer asks for
/// the earliest of them; after a leave nothing is scheduled.
#[test]
fn failed_registrations_are_rescheduled_and_retried() {
    let (mut n, now, _) = alone(Config::fast());
    joined_through(&mut n, now, peer_of(&kp(2), 2), peer_of(&kp(3), 3));
    for i in 0..20 {
        n.register(now, ServiceSpec::new(format!("svc{i}")), Some(0))
            .unwrap();
    }
    schedule_consistent(&n).unwrap();
    assert!(n.regs.due.is_empty(), "all 20 are running");
    let mut t = now;
    for _ in 0..40 {
        answer_all_busy(&mut n, t);
        schedule_consistent(&n).unwrap();
        t += Duration::from_millis(500);
        n.handle_timeout(t);
        schedule_consistent(&n).unwrap();
    }
    assert!(!matches!(
        n.unregister(t, "svc3"),
        Unregister::NotRegistered
    ));
    assert_eq!(n.unregister(t, "svc3"), Unregister::NotRegistered);
    schedule_consistent(&n).unwrap();
    answer_all_busy(&mut n, t);
    let first = n.regs.due.first().map(|(d, _)| *d).unwrap();
    assert!(n.poll_timeout().is_some_and(|d| d <= first));
    n.leave(t).unwrap();
    answer_all_busy(&mut n, t);
    schedule_consistent(&n).unwrap();
}

/// Re-stores due while the node's queries are at `max_queries` wait for a query to end, and
/// sign nothing until they start: every record signed goes into a store (each try used to
/// sign the records of every due registration and drop those that found no query slot).
#[test]
fn due_restores_wait_for_a_query_slot_and_sign_only_what_starts() {
    let (mut n, now, _) = alone(Config {
        max_queries: 4,
        ..Config::fast()
    });
    joined_through(&mut n, now, peer_of(&kp(2), 2), peer_of(&kp(3), 3));
    // twelve registrations whose stores fail at once, so all are due again after the retry delay
    for i in 0..12 {
        n.register(now, ServiceSpec::new(format!("svc{i}")), Some(0))
            .unwrap();
        answer_all_busy(&mut n, now);
    }
    assert!(n.queries.map.is_empty(), "{:?}", n.queries.map.keys());
    assert_eq!(n.regs.due.len(), 12);
    let t = n.regs.due.last().map(|(d, _)| *d).unwrap();
    let mut signed = n.metrics().records_signed;
    let mut rounds = 0;
    while !n.regs.due.is_empty() {
        n.handle_timeout(t);
        let started = n.queries.counted();
        assert_eq!(started, 4.min(12 - rounds * 4), "round {rounds}");
        assert_eq!(n.metrics().records_signed, signed + started as u64);
        signed = n.metrics().records_signed;
        // with every slot taken, neither the timer nor another try starts (or signs) more
        if n.queries.counted() == 4 {
            assert!(
                n.poll_timeout().is_some_and(|d| d > t),
                "a timer for the due re-stores while the queries are full"
            );
            n.handle_timeout(t);
            assert_eq!(n.metrics().records_signed, signed);
        }
        schedule_consistent(&n).unwrap();
        // the stores fail: the slots free up, and the re-stores still due ask for the timer
        answer_all_busy(&mut n, t);
        schedule_consistent(&n).unwrap();
        if n.regs.due.first().is_some_and(|(d, _)| *d <= t) {
            assert!(n.poll_timeout().is_some_and(|d| d <= t));
        }
        rounds += 1;
        // the failed ones are due again after the retry delay, beyond `t`
        if n.regs.due.iter().all(|(d, _)| *d > t) {
            break;
        }
    }
    assert_eq!(rounds, 3);
}

/// A node config that does not rate-limit a test's flood of requests from one peer.
fn unlimited(cache: usize) -> Config {
    Config {
        peer_rate_per_sec: 1_000_000,
        peer_rate_burst: 1_000_000,
        verified_cache_size: cache,
        ..Config::default()
    }
}

fn cache_counts(n: &Node) -> (u64, u64) {
    let m = n.metrics();
    (m.verify_cache_hits, m.verify_cache_misses)
}

/// A hit skips only the signature: the same cached record is refused once it expired, a
/// record altered in any byte of its encoding misses and is refused, and only the exact
/// signed bytes hit.
#[test]
fn verified_cache_skips_only_the_signature_check() {
    let (mut n, now, _) = alone(unlimited(16));
    let exp = n.wall_ms(now) + 60_000;
    let a = kp(2);
    let from_a = peer_of(&a, 2);
    let rec = record(&a, "svc", 0, exp, 5);
    assert_eq!(store(&mut n, now, from_a, &rec), Response::Stored);
    assert_eq!(cache_counts(&n), (0, 1));
    assert_eq!(store(&mut n, now, from_a, &rec), Response::Stored);
    assert_eq!(cache_counts(&n), (1, 1));
    // every single-byte change of the store request fails, and never as a cache hit
    let bytes = Request::Store {
        record: WireRecord::from(&rec),
    }
    .encode();
    let mut tried = 0;
    for i in 0..bytes.len() {
        for x in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= x;
            let (hits, _) = cache_counts(&n);
            n.handle_request(now, from_a, 9, &b);
            let mut answer = None;
            while let Some(o) = n.poll_output() {
                if let Output::Respond { token: 9, bytes } = o {
                    answer = Some(Response::decode(&bytes, 1 << 20).unwrap());
                }
            }
            assert_ne!(answer, Some(Response::Stored), "byte {i} ^ {x:#x} stored");
            assert!(answer.is_some(), "byte {i} ^ {x:#x}: no answer");
            assert_eq!(cache_counts(&n).0, hits, "byte {i} ^ {x:#x} hit the cache");
            tried += 1;
        }
    }
    assert!(tried > 100);
    assert_eq!(n.stored(&object_id("svc", 0)), std::slice::from_ref(&rec));
    // a cached record is still checked for expiry
    let later = now + Duration::from_secs(61);
    assert_eq!(
        store(&mut n, later, from_a, &rec),
        refused(Refusal::Expired)
    );
    // and for the sender (only the provider stores its record)
    let b = kp(3);
    assert_eq!(
        store(&mut n, now, peer_of(&b, 3), &rec),
        refused(Refusal::NotProvider)
    );
    assert_eq!(cache_counts(&n).0, 1);
}

#[test]
fn a_verified_cache_of_one_evicts_and_of_zero_is_off() {
    let (mut n, now, _) = alone(unlimited(1));
    let exp = n.wall_ms(now) + 60_000;
    let a = kp(2);
    let from_a = peer_of(&a, 2);
    let r1 = record(&a, "one", 0, exp, 1);
    let r2 = record(&a, "two", 0, exp, 1);
    for r in [&r1, &r2, &r1] {
        assert_eq!(store(&mut n, now, from_a, r), Response::Stored);
    }
    assert_eq!(cache_counts(&n), (0, 3), "r1 was evicted by r2");
    assert_eq!(store(&mut n, now, from_a, &r1), Response::Stored);
    assert_eq!(cache_counts(&n), (1, 3));
    let (mut z, now, _) = alone(unlimited(0));
    for r in [&r1, &r1] {
        assert_eq!(store(&mut z, now, from_a, r), Response::Stored);
    }
    assert_eq!(cache_counts(&z), (0, 0));
}

fn registered(n: &mut Node) -> Vec<(QueryId, u8, u8)> {
    let mut out = Vec::new();
    while let Some(o) = n.poll_output() {
        if let Output::Event(Event::Registered {
            query,
            stored,
            failed,
            ..
        }) = o
        {
            out.push((query, stored, failed));
        }
    }
    out
}

/// Alone on the ring every replica is stored locally at once; the node's own fresh
/// signatures and the records it reads back hit the cache.
#[test]
fn a_lone_node_registers_all_replicas_at_once_and_reads_them_from_the_cache() {
    for cache in [0, 16] {
        let (mut n, now, _) = alone(unlimited(cache));
        let q = n.register(now, ServiceSpec::new("svc"), Some(2)).unwrap();
        assert_eq!(registered(&mut n), vec![(q, 3, 0)]);
        assert_eq!(n.stored_len(), 3);
        assert!(n.queries.map.is_empty());
        assert_eq!(n.queries.replicas, 0);
        n.lookup_providers(now, "svc", Some(2)).unwrap();
        let mut found = 0;
        while let Some(o) = n.poll_output() {
            if let Output::Event(Event::Providers { result: Ok(p), .. }) = o {
                found += p.records.len();
            }
        }
        assert_eq!(found, 1);
        let want = if cache == 0 { (0, 0) } else { (4, 0) };
        assert_eq!(cache_counts(&n), want);
        schedule_consistent(&n).unwrap();
    }
}

/// The k + 1 replica lookups go out together, each store as soon as its own lookup ends
/// (answers in any order); the registration ends after the last replica, with the counts. A
/// replica whose object id falls within the node's successor list needs no lookup at all: its
/// store goes to that successor at once.
#[test]
fn replicas_are_looked_up_and_stored_in_parallel() {
    let (mut n, now, _) = alone(Config::fast());
    let s = peer_of(&kp(3), 3);
    joined_through(&mut n, now, peer_of(&kp(2), 2), s);
    let me = n.ring.me.id;
    let q = n.register(now, ServiceSpec::new("svc"), Some(2)).unwrap();
    let (mut finds, mut stores) = (Vec::new(), Vec::new());
    while let Some(o) = n.poll_output() {
        match o {
            Output::Send {
                request_id, bytes, ..
            } => match Request::decode(&bytes, 1 << 20).unwrap() {
                Request::Find { target, .. } => finds.push((request_id, target)),
                Request::Store { record } => {
                    let r = ProviderRecord::try_from(record).unwrap().replica();
                    stores.push((request_id, r));
                }
                r => panic!("unexpected {r:?}"),
            },
            o => panic!("unexpected {o:?}"),
        }
    }
    // the replicas between this node and its successor: stored there directly
    let mut direct: Vec<u8> = stores.iter().map(|(_, r)| *r).collect();
    direct.sort();
    let want_direct: Vec<u8> = (0..3)
        .filter(|r| in_order(&me, &object_id("svc", *r), &s.id))
        .collect();
    assert_eq!(direct, want_direct);
    let mut targets: Vec<NodeId> = finds.iter().map(|(_, t)| *t).collect();
    targets.sort();
    let mut want: Vec<NodeId> = (0..3)
        .filter(|r| !want_direct.contains(r))
        .map(|r| object_id("svc", r))
        .collect();
    want.sort();
    assert_eq!(targets, want, "the other lookups at once, one per replica");
    assert_eq!(n.queries.replicas, finds.len());
    let owner = Response::Owner { records: vec![] };
    let mut stores: Vec<u64> = stores.into_iter().map(|(id, _)| id).collect();
    for (id, _) in finds.iter().rev() {
        reply(&mut n, now, *id, s.id, &owner);
        // the store of this replica goes out now, before the other lookups end
        let Some(Output::Send {
            request_id, bytes, ..
        }) = n.poll_output()
        else {
            panic!("expected a store")
        };
        assert!(matches!(
            Request::decode(&bytes, 1 << 20).unwrap(),
            Request::Store { .. }
        ));
        stores.push(request_id);
    }
    assert_eq!(stores.len(), 3);
    assert_eq!(n.queries.replicas, 0);
    let stored = Response::Stored.encode();
    let busy = refused(Refusal::Busy).encode();
    for (i, id) in stores.iter().enumerate() {
        assert!(
            registered(&mut n).is_empty(),
            "ended before its last replica"
        );
        let bytes = if i == 1 { &busy } else { &stored };
        n.handle_response(now, *id, Ok(Reply { from: s.id, bytes }));
    }
    assert_eq!(registered(&mut n), vec![(q, 2, 1)]);
    assert!(n.queries.map.is_empty());
    // a failed replica brings the re-store forward to the retry delay
    schedule_consistent(&n).unwrap();
    let due = n.regs.due.first().map(|(t, _)| *t).unwrap();
    assert_eq!(due, now + n.cfg.retry_delay);
}

/// A replica's store goes to the successor its lookup named (here: this node's own
/// successor list) without a `find` of that successor first; the successor's responsibility
/// check is the confirmation. Refused `not_responsible`, the replica is looked up again up to
/// the owner's own `owner` answer and stored there; refused again after that, it fails (no
/// third lookup).
#[test]
fn a_store_refused_as_not_responsible_looks_the_owner_up_again_once() {
    let (mut n, now, _) = alone(Config::fast());
    let s = peer_of(&kp(3), 3);
    joined_through(&mut n, now, peer_of(&kp(2), 2), s);
    let me = n.ring.me.id;
    // a name whose replica 0 falls between this node and its successor, and whose other
    // replicas (k = 0 here: none) do not matter
    let name = (0..)
        .map(|i| format!("svc-{i}"))
        .find(|name| in_order(&me, &object_id(name, 0), &s.id))
        .unwrap();
    let q = n.register(now, ServiceSpec::new(&name), Some(0)).unwrap();
    let store_to_s = |n: &mut Node| {
        let sent = sent_requests(n);
        let [(id, Request::Store { record })] = sent.as_slice() else {
            panic!("expected one store, got {sent:?}")
        };
        assert_eq!(
            ProviderRecord::try_from(record.clone()).unwrap().replica(),
            0
        );
        *id
    };
    let first = store_to_s(&mut n);
    assert_eq!(
        n.metrics().finds_sent,
        0,
        "no lookup: the owner is in the list"
    );
    reply(&mut n, now, first, s.id, &refused(Refusal::NotResponsible));
    assert_eq!(n.metrics().replica_relookups, 1);
    // not failed: the second lookup asks the successor itself (nothing else comes out), and
    // stores only after its `owner` answer
    let find = answer_one(&mut n, now, s, &Response::Owner { records: vec![] });
    assert!(matches!(find, Request::Find { target, .. } if target == object_id(&name, 0)));
    let second = store_to_s(&mut n);
    reply(&mut n, now, second, s.id, &refused(Refusal::NotResponsible));
    assert_eq!(registered(&mut n), vec![(q, 0, 1)]);
    assert_eq!(n.metrics().replica_relookups, 1);
    assert!(n.queries.map.is_empty());
    assert!(sent_requests(&mut n).is_empty());
}

/// Joins `n` with successor `s`, and picks a peer `x` that lies beyond `s` (the farthest of
/// a few from it, so that many ids fall between them); returns `(s, x)`.
fn joined_with_a_peer_beyond(n: &mut Node, now: Instant) -> (Peer, Peer) {
    let s = peer_of(&kp(3), 3);
    joined_through(n, now, peer_of(&kp(2), 2), s);
    let me = n.ring.me.id;
    let x = (4..40u8)
        .map(|k| peer_of(&kp(k), u16::from(k)))
        .filter(|p| in_order(&s.id, &p.id, &me))
        .max_by_key(|p| distance(&s.id, &p.id))
        .unwrap();
    (s, x)
}

/// The owner cache: a lookup of `t` that ended at `x` (a `successor(x)` claim) lets a later
/// replica whose object id lies in `[t, x]` be stored at `x` without a lookup; an id before `t`
/// is looked up as before (a node may lie between it and `t`), and so is every id once `x`
/// refused a store as not responsible.
#[test]
fn a_replica_within_a_learnt_owners_range_is_stored_there_without_a_lookup() {
    let (mut n, now, _) = alone(Config::fast());
    // a peer x beyond the successor, and names whose replica 0 lies in (s, x)
    let (s, x) = joined_with_a_peer_beyond(&mut n, now);
    let mut names: Vec<(String, NodeId)> = (0..4000)
        .map(|i| format!("svc-{i}"))
        .map(|name| (name.clone(), object_id(&name, 0)))
        .filter(|(_, t)| in_order(&s.id, t, &x.id))
        .take(3)
        .collect();
    names.sort_by_key(|(_, t)| distance(&s.id, t));
    let [(before, _), (_, t), (inside, _)] = names.as_slice() else {
        panic!("three names between s and x")
    };
    // a find of t: asked of s, which names x as its successor
    n.find(now, *t).unwrap();
    let req = answer_one(
        &mut n,
        now,
        s,
        &Response::Successor {
            peer: x.into(),
            after: None,
        },
    );
    assert!(matches!(req, Request::Find { target, .. } if target == *t));
    while n.poll_output().is_some() {}
    let finds = n.metrics().finds_sent;
    // inside [t, x]: stored at x at once
    n.register(now, ServiceSpec::new(inside), Some(0)).unwrap();
    let sent = sent_requests(&mut n);
    let [(id, Request::Store { .. })] = sent.as_slice() else {
        panic!("expected one store, got {sent:?}")
    };
    assert_eq!(n.requests.get(*id).unwrap().expect, Some(x.id));
    assert_eq!(
        (n.metrics().finds_sent, n.metrics().owner_cache_hits),
        (finds, 1)
    );
    // x refuses: it leaves the cache, the replica is looked up again (a find)
    reply(&mut n, now, *id, x.id, &refused(Refusal::NotResponsible));
    let sent = sent_requests(&mut n);
    assert!(
        matches!(sent.as_slice(), [(_, Request::Find { .. })]),
        "{sent:?}"
    );
    // before t: not covered, looked up
    n.register(now, ServiceSpec::new(before), Some(0)).unwrap();
    let sent = sent_requests(&mut n);
    assert!(
        matches!(sent.as_slice(), [(_, Request::Find { .. })]),
        "{sent:?}"
    );
    assert_eq!(n.metrics().owner_cache_hits, 1);
}

/// A `successor` answer that names `after` (PROTOCOL.md §6.5, §6.8 step 6) teaches the whole
/// range `(after, x]`: a replica whose object id lies before the lookup's target, but after
/// `after`, is stored at `x` without a lookup too. An `after` before the responder is ignored.
#[test]
fn a_successor_answers_range_covers_ids_before_the_lookups_target() {
    for (vouched, stored_at_once) in [(true, true), (false, false)] {
        let (mut n, now, _) = alone(Config::fast());
        let (s, x) = joined_with_a_peer_beyond(&mut n, now);
        let mut names: Vec<(String, NodeId)> = (0..4000)
            .map(|i| format!("svc-{i}"))
            .map(|name| (name.clone(), object_id(&name, 0)))
            .filter(|(_, t)| in_order(&s.id, t, &x.id))
            .take(2)
            .collect();
        names.sort_by_key(|(_, t)| distance(&s.id, t));
        let [(before, _), (_, t)] = names.as_slice() else {
            panic!("two names between s and x")
        };
        n.find(now, *t).unwrap();
        // `after`: the responder s itself, or this node (before s: not vouched for by s)
        let after = if vouched { s.id } else { n.ring.me.id };
        answer_one(
            &mut n,
            now,
            s,
            &Response::Successor {
                peer: x.into(),
                after: Some(after),
            },
        );
        while n.poll_output().is_some() {}
        n.register(now, ServiceSpec::new(before), Some(0)).unwrap();
        let sent = sent_requests(&mut n);
        if stored_at_once {
            let [(id, Request::Store { .. })] = sent.as_slice() else {
                panic!("expected one store, got {sent:?}")
            };
            assert_eq!(n.requests.get(*id).unwrap().expect, Some(x.id));
            assert_eq!(n.metrics().owner_cache_hits, 1);
        } else {
            assert!(
                matches!(sent.as_slice(), [(_, Request::Find { .. })]),
                "{sent:?}"
            );
            assert_eq!(n.metrics().owner_cache_hits, 0);
        }
    }
}

/// The peer cache (PROTOCOL.md §6.8 step 2): a peer that answered a lookup query seeds the
/// next lookups beside the routing table, so a find of an id just after it asks it first
/// instead of walking from the successor again; one that then times out is forgotten, and
/// with `peer_cache_size = 0` every lookup starts from the routing table.
#[test]
fn a_peer_that_answered_a_lookup_seeds_the_next_ones() {
    for size in [256, 0] {
        let cfg = Config {
            peer_cache_size: size,
            ..Config::fast()
        };
        let (mut n, now, _) = alone(cfg);
        let (s, _) = joined_with_a_peer_beyond(&mut n, now);
        let me = n.ring.me.id;
        // y, z: two consecutive peers past s (halfway from it to this node), t just after y
        let ring = peers_clockwise(&n);
        let at = (ring.iter().position(|p| p.id == s.id).unwrap() + ring.len()) / 2;
        let (y, z) = (ring[at], ring[at + 1]);
        assert!(in_order(&s.id, &y.id, &me) && in_order(&y.id, &z.id, &me));
        let t = finger_start(&y.id, 0);
        let first_hop = |n: &mut Node| {
            n.find(now, t).unwrap();
            let sent = sent_requests(n);
            let [(id, Request::Find { .. })] = sent.as_slice() else {
                panic!("expected one find, got {sent:?}")
            };
            (*id, n.requests.get(*id).unwrap().expect)
        };
        // the first find walks: s names y, y names z
        let (id, to) = first_hop(&mut n);
        assert_eq!(to, Some(s.id));
        reply(
            &mut n,
            now,
            id,
            s.id,
            &Response::Closer {
                peers: vec![y.into()],
            },
        );
        let next = sent_requests(&mut n);
        let [(id, Request::Find { .. })] = next.as_slice() else {
            panic!("expected the find to y, got {next:?}")
        };
        let succ = Response::Successor {
            peer: z.into(),
            after: Some(y.id),
        };
        reply(&mut n, now, *id, y.id, &succ);
        while n.poll_output().is_some() {}
        // the second asks y at once (or s again without the cache)
        let (id, to) = first_hop(&mut n);
        assert_eq!(to, Some(if size > 0 { y.id } else { s.id }));
        if size == 0 {
            continue;
        }
        // y stops answering: forgotten, and the next find starts from s again
        n.handle_response(now, id, Err(RequestFailure::Timeout));
        while n.poll_output().is_some() {}
        let (_, to) = first_hop(&mut n);
        assert_eq!(to, Some(s.id));
    }
}

/// Replica queries do not count toward `max_queries`: a registration takes one slot.
#[test]
fn a_registration_takes_one_query_slot() {
    let (mut n, now, _) = alone(Config {
        max_queries: 2,
        ..Config::fast()
    });
    let s = peer_of(&kp(3), 3);
    joined_through(&mut n, now, peer_of(&kp(2), 2), s);
    n.register(now, ServiceSpec::new("a"), Some(3)).unwrap();
    n.register(now, ServiceSpec::new("b"), Some(3)).unwrap();
    // two registrations, and a lookup for each replica not in the successor list (those are
    // stored there at once)
    let me = n.ring.me.id;
    let looking = ["a", "b"]
        .iter()
        .flat_map(|name| (0..4).map(|r| object_id(name, r)))
        .filter(|t| !in_order(&me, t, &s.id))
        .count();
    assert!(looking > 0);
    assert_eq!(n.queries.map.len(), 2 + looking);
    assert!(matches!(
        n.register(now, ServiceSpec::new("c"), Some(0)),
        Err(Error::TooManyQueries { .. })
    ));
    assert!(matches!(
        n.find(now, object_id("x", 0)),
        Err(Error::TooManyQueries { .. })
    ));
    // the lookups fail: each registration ends with all its replicas failed
    answer_all_busy(&mut n, now);
    let mut t = now;
    for _ in 0..20 {
        t += Duration::from_millis(300);
        n.handle_timeout(t);
        answer_all_busy(&mut n, t);
    }
    assert!(n.queries.map.is_empty(), "{:?}", n.queries.map.keys());
    assert_eq!(n.queries.replicas, 0);
    n.find(t, object_id("x", 0)).unwrap();
}

proptest! {
    // each case signs six records and verifies up to 48 signatures in a debug build
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Nodes with and without the verified-record cache (a small one, so it evicts) give
    /// the same answer to any sequence of stores of good and tampered records over time.
    #[test]
    fn cached_and_uncached_cores_decide_identically(
        ops in proptest::collection::vec((0usize..6, proptest::option::of((any::<usize>(), 1u8..=255)), 0u8..4), 1..24)
    ) {
        let (mut c, now, _) = alone(unlimited(2));
        let (mut u, _, _) = alone(unlimited(0));
        let exp = c.wall_ms(now) + 2_000;
        let (a, b) = (kp(2), kp(3));
        let recs = [
            (peer_of(&a, 2), record(&a, "x", 0, exp, 1)),
            (peer_of(&a, 2), record(&a, "x", 0, exp + 1_000, 2)),
            (peer_of(&a, 2), record(&a, "y", 1, exp, 1)),
            (peer_of(&b, 3), record(&b, "x", 0, exp, 1)),
            (peer_of(&b, 3), record(&b, "z", 2, exp + 2_000, 7)),
            (peer_of(&a, 2), record(&b, "z", 2, exp, 8)),
        ];
        let mut t = now;
        for (i, tamper, step) in ops {
            let (from, rec) = &recs[i];
            let mut bytes = Request::Store { record: WireRecord::from(rec) }.encode();
            if let Some((pos, x)) = tamper {
                let len = bytes.len();
                bytes[pos % len] ^= x;
            }
            let mut answers = Vec::new();
            for n in [&mut c, &mut u] {
                n.handle_request(t, *from, 1, &bytes);
                let mut answer = None;
                while let Some(o) = n.poll_output() {
                    if let Output::Respond { bytes, .. } = o {
                        answer = Some(bytes);
                    }
                }
                answers.push(answer);
            }
            prop_assert_eq!(&answers[0], &answers[1]);
            t += Duration::from_millis(700 * u64::from(step));
        }
        for oid in ["x", "y", "z"].iter().flat_map(|n| (0..3).map(move |r| object_id(n, r))) {
            prop_assert_eq!(c.stored(&oid), u.stored(&oid));
        }
    }
}

proptest! {
    #[test]
    /// Any sequence of register, unregister, re-register, store answers and timeouts keeps
    /// the re-store schedule in step with the registrations.
    #[test]
    fn restore_schedule_stays_in_step(ops in proptest::collection::vec((0u8..4, 0u8..6), 1..60)) {
        let (mut n, now, _) = alone(Config::fast());
        joined_through(&mut n, now, peer_of(&kp(2), 2), peer_of(&kp(3), 3));
        let mut t = now;
        for (op, i) in ops {
            let name = format!("svc{i}");
            match op {
                0 => { let _ = n.register(t, ServiceSpec::new(name), Some(1)); }
                1 => { n.unregister(t, &name); }
                2 => answer_all_busy(&mut n, t),
                _ => {
                    t += Duration::from_millis(700);
                    n.handle_timeout(t);
                }
            }
            prop_assert_eq!(schedule_consistent(&n), Ok(()));
        }
    }

    fn garbage_requests_and_responses_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), id in any::<u64>()) {
        let (mut n, now, _) = alone(Config::default());
        n.handle_request(now, peer_of(&kp(2), 2), 1, &bytes);
        n.handle_response(now, id, Ok(Reply { from: kp(2).node_id(&net()), bytes: &bytes }));
        let mut refusals = 0;
        while let Some(o) = n.poll_output() {
            if let Output::Respond { bytes, .. } = o {
                prop_assert!(Response::decode(&bytes, 1 << 16).is_ok());
                refusals += 1;
            }
        }
        prop_assert_eq!(refusals, 1);
    }
}

/// The node of key 1 joined through key 2 with successor key 3, which then notified it (so it
/// is predecessor and successor); outputs drained.
fn with_neighbour(now: Instant) -> (Node, Peer) {
    let (mut n, _, _) = alone(Config::fast());
    let b = peer_of(&kp(2), 2);
    let s = peer_of(&kp(3), 3);
    joined_through(&mut n, now, b, s);
    n.handle_request(now, s, 7, &Request::Notify.encode());
    assert_eq!(n.predecessor(), Some(s));
    assert_eq!(n.successors(), &[s]);
    while n.poll_output().is_some() {}
    (n, s)
}

/// `s` at another address sends a ping; returns the identify the node asks for, if any.
fn ping_from(n: &mut Node, now: Instant, p: Peer) -> Option<(u64, SocketAddr)> {
    n.handle_request(now, p, 8, &Request::Ping.encode());
    let mut asked = None;
    while let Some(o) = n.poll_output() {
        if let Output::Identify { request_id, to } = o {
            assert!(asked.is_none(), "one identify per check");
            asked = Some((request_id, to));
        }
    }
    asked
}

/// Issue 11, a node restarted elsewhere with its key: a request from its id at a new address
/// makes the node ask who listens at the old one; nobody (here: the identify times out) moves
/// every entry for the id (predecessor, successors, fingers) to the new address, and a successor
/// list still gossiping the old address is corrected.
#[test]
fn a_known_id_at_a_new_address_whose_old_address_is_dead_is_moved_everywhere() {
    let now = Instant::now();
    let (mut n, s) = with_neighbour(now);
    let moved = Peer {
        id: s.id,
        addr: "127.0.0.2:33".parse().unwrap(),
    };
    let (rid, to) = ping_from(&mut n, now, moved).expect("an address check");
    assert_eq!(to, s.addr, "the old address is asked");
    // nothing moves before the answer; a second request does not start a second check
    assert_eq!(n.predecessor(), Some(s));
    assert_eq!(ping_from(&mut n, now, moved), None);
    // the old address does not answer: the core's own timeout ends the check
    let later = now + Config::fast().request_timeout;
    n.handle_timeout(later);
    assert_eq!(n.predecessor(), Some(moved));
    assert_eq!(n.successors(), &[moved]);
    assert!(
        n.fingers()
            .iter()
            .all(|f| f.id != s.id || f.addr == moved.addr)
    );
    let m = n.metrics();
    assert_eq!((m.address_checks, m.peers_readdressed), (1, 1));
    let _ = rid;
    // what it sends its successor from now on goes to the new address
    n.handle_timeout(later + Duration::from_secs(5));
    let sent: Vec<SocketAddr> = std::iter::from_fn(|| n.poll_output())
        .filter_map(|o| match o {
            Output::Send { to, .. } => Some(to),
            _ => None,
        })
        .collect();
    assert!(!sent.contains(&s.addr), "{sent:?}");
    assert!(sent.contains(&moved.addr), "{sent:?}");
    // a successor list naming the old address is corrected as it comes in
    let list = n.ring.sanitize_list([s, peer_of(&kp(4), 4)]);
    assert_eq!(list.first(), Some(&moved));
    // a request from an id the node does not know starts nothing
    assert_eq!(ping_from(&mut n, later, peer_of(&kp(9), 9)), None);
}

/// Issue 11, identity collisions: a second instance with a live member's key sends requests
/// from its own address. The old address still answers with the id, so nothing moves (the
/// member is not disturbed), and the same pair is not checked again at once.
#[test]
fn a_known_id_at_a_new_address_whose_old_address_still_answers_stays() {
    let now = Instant::now();
    let (mut n, s) = with_neighbour(now);
    let dup = Peer {
        id: s.id,
        addr: "127.0.0.2:33".parse().unwrap(),
    };
    let (rid, _) = ping_from(&mut n, now, dup).expect("an address check");
    n.handle_identified(now, rid, Ok(s.id));
    assert_eq!(n.predecessor(), Some(s));
    assert_eq!(n.successors(), &[s]);
    let m = n.metrics();
    assert_eq!(
        (m.address_checks, m.address_conflicts, m.peers_readdressed),
        (1, 1, 0)
    );
    assert_eq!(
        ping_from(&mut n, now + Duration::from_secs(1), dup),
        None,
        "quiet for a while"
    );
    // another id at the old address (the port reused): the peer moved after all
    let later = now + Config::fast().request_timeout * 13;
    let (rid, _) = ping_from(&mut n, later, dup).expect("checked again later");
    n.handle_identified(later, rid, Ok(peer_of(&kp(9), 9).id));
    assert_eq!(n.predecessor(), Some(dup));
    assert_eq!(n.metrics().peers_readdressed, 1);
}

proptest! {
    /// Address checks stay bounded whatever sends requests from where: at most `MAX_CHECKS`
    /// identifies in flight, and no request from an unknown id starts one.
    #[test]
    fn address_checks_are_bounded(ports in proptest::collection::vec((2u8..6, 100u16..400), 1..200)) {
        let now = Instant::now();
        let (mut n, _) = with_neighbour(now);
        let mut asked = 0usize;
        for (k, port) in ports {
            let p = Peer { id: kp(k).node_id(&net()), addr: SocketAddr::from(([127, 0, 0, 2], port)) };
            if ping_from(&mut n, now, p).is_some() {
                asked += 1;
                prop_assert_eq!(k, 3, "only a known id is checked");
            }
        }
        prop_assert!(asked <= super::moves::MAX_CHECKS);
    }
}

/// Owned names (PROTOCOL.md §6.4): a responsible node that does not apply the owned-name
/// checks cannot bring impostors into discovery; the reader drops every record without a
/// valid delegation (`bad_delegation`) and keeps the delegated provider's.
#[test]
fn readers_drop_an_owned_names_records_without_a_valid_delegation() {
    use crate::proto::owner::{Delegation, owned_name};
    let (mut n, now, wall) = alone(Config::fast());
    let s = peer_of(&kp(3), 3);
    joined_through(&mut n, now, peer_of(&kp(2), 2), s);
    let wall_ms = wall.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let owner = IdentityKeypair::from_seed(&[40; 32]);
    let name = owned_name("pay", &owner.public()).unwrap();
    let exp = wall_ms + 60_000;
    let sign = |who: &IdentityKeypair, d: Option<Delegation>| {
        let mut spec = ServiceSpec::new(name.clone());
        spec.delegation = d;
        ProviderRecord::sign(
            who,
            &net(),
            &spec,
            "127.0.0.1:9".parse().unwrap(),
            0,
            exp,
            1,
        )
    };
    let (genuine, impostor) = (kp(10), kp(11));
    let d = Delegation::sign(&owner, &net(), &name, &genuine.node_id(&net()), exp).unwrap();
    let records = [
        sign(&genuine, Some(d)),
        sign(&impostor, None),
        sign(&impostor, Some(d)), // the genuine provider's delegation, copied
    ];
    let q = n.lookup_replica(now, &name, 0).unwrap();
    let answer = Response::Owner {
        records: records.iter().map(WireRecord::from).collect(),
    };
    let mut found = None;
    for _ in 0..8 {
        let sent = sent_requests(&mut n);
        for (id, req) in sent {
            if matches!(req, Request::Find { .. }) {
                reply(&mut n, now, id, s.id, &answer);
            }
        }
        while let Some(o) = n.poll_output() {
            if let Output::Event(Event::Providers { query, result }) = o
                && query == q
            {
                found = Some(result.unwrap());
            }
        }
        if found.is_some() {
            break;
        }
    }
    let found = found.expect("the lookup ended");
    assert_eq!(found.records, vec![records[0].clone()]);
    assert_eq!(n.metrics().records_rejected_by_reader, 2);
}

/// Stabilizes when due and returns when the stabilize request went out, and its id.
fn next_stabilize(n: &mut Node) -> (Instant, u64) {
    loop {
        let t = n.poll_timeout().expect("a member always has a timer");
        n.handle_timeout(t);
        while n.poll_output().is_some() {}
        if let Some(id) = n
            .requests
            .find(|q| matches!(q.purpose, Purpose::Stabilize { .. }))
        {
            return (t, id);
        }
    }
}

/// A stabilize answer that changes the successor list makes the next `successor_list_len`
/// rounds come at an eighth of the period, so that the change moves down the predecessors'
/// lists quickly (after a heal, one round per node at the period's pace left gaps for seconds);
/// rounds whose answer changes nothing then return to the period.
#[test]
fn a_changed_successor_list_is_stabilized_again_soon() {
    let cfg = Config::default();
    let (period, len) = (cfg.stabilize_period, cfg.successor_list_len);
    let (mut n, now, _) = alone(cfg);
    let b = peer_of(&kp(2), 2);
    let s = peer_of(&kp(3), 3);
    let x = peer_of(&kp(4), 4);
    joined_through(&mut n, now, b, s);
    let answer = |n: &mut Node, t: Instant, id: u64, list: &[Peer]| {
        reply(
            n,
            t,
            id,
            s.id,
            &Response::Neighbors {
                predecessor: None,
                successors: list.iter().map(|p| WirePeer::from(*p)).collect(),
            },
        );
    };
    // an answer that changes nothing: the next round one (jittered) period later
    let (t0, id) = next_stabilize(&mut n);
    answer(&mut n, t0, id, &[]);
    let (t1, id) = next_stabilize(&mut n);
    assert!(t1 - t0 >= period / 2, "{:?}", t1 - t0);
    // news: the list grows by x, and the next rounds come quickly
    answer(&mut n, t1, id, &[x]);
    assert_eq!(n.successors(), &[s, x]);
    let mut t = t1;
    for round in 0..=len {
        let (next, id) = next_stabilize(&mut n);
        assert!(
            next - t <= period / 8,
            "round {round} came {:?} after the last",
            next - t
        );
        answer(&mut n, next, id, &[x]);
        t = next;
    }
    // no news for as many rounds as the list is long: back to the period
    let (next, _) = next_stabilize(&mut n);
    assert!(next - t >= period / 2, "{:?}", next - t);
}

/// A lookup hedges after the round trip its node has measured on earlier lookup queries (plus
/// four deviations), not after the fixed `lookup_stall`: a lookup that meets a crashed node
/// went on 500 ms later, the tail of every find under churn.
#[test]
fn lookups_stall_after_the_measured_round_trip() {
    let cfg = Config::default();
    let max = cfg.lookup_stall;
    let (mut n, mut now, _) = alone(cfg);
    let (s, x) = joined_with_a_peer_beyond(&mut n, now);
    let targets: Vec<NodeId> = (0..4000)
        .map(|i| object_id(&format!("svc-{i}"), 0))
        .filter(|t| in_order(&s.id, t, &x.id))
        .take(9)
        .collect();
    let rtt = Duration::from_millis(40);
    let stall_of = |n: &mut Node, now: Instant| n.queries.next_stall().map(|t| t - now);
    for (i, t) in targets.iter().enumerate() {
        n.find(now, *t).unwrap();
        let stall = stall_of(&mut n, now);
        let sent = sent_requests(&mut n);
        let [(id, Request::Find { .. })] = sent.as_slice() else {
            panic!("find {i}: expected one find, got {sent:?}")
        };
        if i < 8 {
            // too few answers seen yet: the fixed stall
            assert_eq!(stall, Some(max), "find {i}");
            now += rtt;
            reply(
                &mut n,
                now,
                *id,
                s.id,
                &Response::Successor {
                    peer: x.into(),
                    after: None,
                },
            );
            while n.poll_output().is_some() {}
        } else {
            let stall = stall.unwrap();
            assert!(
                stall >= rtt && stall <= rtt + Duration::from_millis(20),
                "after 8 answers in 40 ms the stall is about 40 ms, not {stall:?}"
            );
            let stalls = n.metrics().lookup_stalls;
            n.handle_timeout(now + stall);
            assert_eq!(n.metrics().lookup_stalls, stalls + 1, "the lookup hedged");
        }
    }
}

/// A node whose successor lies far past its true one (it joined through a ring whose
/// successor lists a partition had emptied: after a heal at 10,000 nodes one such node took 68
/// s of simulated time to walk back, one node per round trip) looks its successor up through
/// the rest of the ring once the walk back reaches its bound, and adopts the answer after it
/// answers (PROTOCOL.md §6.9).
#[test]
fn a_walk_back_at_its_bound_looks_the_successor_up() {
    let (mut n, now, _) = alone(Config::fast());
    let v = peers_clockwise(&n);
    let far = v[37];
    joined_through(&mut n, now, v[20], far);
    let me = n.ring.me.id;
    let (later, stabilize) = stabilize_due(&mut n, now);
    // every node asked names the one before it as its predecessor
    let neighbors = |pred: Peer, of: usize| Response::Neighbors {
        predecessor: Some(pred.into()),
        successors: v[of + 1..(of + 4).min(v.len())]
            .iter()
            .map(|p| (*p).into())
            .collect(),
    };
    reply(&mut n, later, stabilize, far.id, &neighbors(v[36], 37));
    let mut asked = 36;
    for depth in 1..=STABILIZE_CHAIN {
        let id = n
            .requests
            .find(|q| matches!(q.purpose, Purpose::StabilizeCandidate { .. }))
            .unwrap_or_else(|| panic!("step {depth} of the walk back asks a candidate"));
        assert_eq!(n.requests.get(id).and_then(|q| q.expect), Some(v[asked].id));
        assert_eq!(
            n.metrics().successor_checks,
            0,
            "no lookup while walking back"
        );
        let next = asked - 1;
        reply(&mut n, later, id, v[asked].id, &neighbors(v[next], asked));
        asked = next;
    }
    assert_eq!(
        n.successors()[0],
        v[asked + 1],
        "the walk back went its 32 steps"
    );
    // the bound reached with a closer node still named: one lookup of me + 1 from elsewhere
    assert_eq!(n.metrics().successor_checks, 1);
    let lookup = n
        .requests
        .find(|q| matches!(q.purpose, Purpose::Lookup { .. }))
        .expect("the successor is looked up");
    let sent = sent_requests(&mut n);
    assert!(
        sent.iter().any(|(id, r)| *id == lookup
            && matches!(r, Request::Find { target, .. } if *target == finger_start(&me, 0))),
        "a find of me + 1: {sent:?}"
    );
    let asked_peer = n.requests.get(lookup).and_then(|q| q.expect).unwrap();
    assert_ne!(asked_peer, me);
    // the peer asked knows the true successor, v[0]
    reply(
        &mut n,
        later,
        lookup,
        asked_peer,
        &Response::Successor {
            peer: v[0].into(),
            after: None,
        },
    );
    let check = n
        .requests
        .find(|q| matches!(q.purpose, Purpose::UnifyCandidate { .. }))
        .expect("the answer is checked before it is adopted");
    assert_eq!(n.requests.get(check).and_then(|q| q.expect), Some(v[0].id));
    while n.poll_output().is_some() {}
    reply(
        &mut n,
        later,
        check,
        v[0].id,
        &Response::Neighbors {
            predecessor: None,
            successors: vec![v[1].into(), v[2].into()],
        },
    );
    assert_eq!(n.successors()[0], v[0]);
    assert_eq!(n.successors()[1], v[1]);
    // the lookup has ended: the next walk to its bound may start another
    assert!(!n.maint.successor_check_running);
}
