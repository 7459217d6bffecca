#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Issue 11, withdrawal, in the seeded simulator: `unregister` stores a signed tombstone on
//! every replica it reaches; readers drop the provider at once; a replica that missed the
//! tombstone (its link cut) still holds the old record, and a reader that meets a tombstone on
//! another replica does not believe it; the tombstone moves with the records when a replica's
//! node leaves.

use std::time::Duration;

use themis_crypto::NodeId;
use themis_dht::{Event, Providers, QueryId, ServiceSpec, object_id};
use themis_testkit::net::LinkConfig;
use themis_testkit::sim::{Sim, SimConfig, build};

const K: u8 = 2;

/// The result of query `q` on node `i`, if it has ended.
fn providers(sim: &Sim, i: usize, q: QueryId) -> Option<Providers> {
    sim.events(i).iter().find_map(|e| match e {
        Event::Providers { query, result } if *query == q => Some(result.clone().unwrap()),
        _ => None,
    })
}

/// Looks `name` up from every live node (the walk over replicas `0..=K`); returns the
/// providers each found.
fn lookup_everywhere(sim: &mut Sim, name: &str) -> Vec<Vec<NodeId>> {
    let queries: Vec<(usize, QueryId)> = sim
        .live()
        .into_iter()
        .map(|i| {
            let q = sim
                .with_node(i, |n, now| n.lookup_providers(now, name, Some(K)))
                .unwrap();
            (i, q)
        })
        .collect();
    sim.run_for(Duration::from_secs(5));
    queries
        .into_iter()
        .map(|(i, q)| {
            providers(sim, i, q)
                .unwrap_or_else(|| panic!("node {i}: no answer"))
                .records
                .iter()
                .map(|r| r.provider())
                .collect()
        })
        .collect()
}

/// Replica `r` of `name` as node `from` reads it (no fallback to other replicas).
fn read_replica(sim: &mut Sim, from: usize, name: &str, r: u8) -> Providers {
    let q = sim
        .with_node(from, |n, now| n.lookup_replica(now, name, r))
        .unwrap();
    sim.run_for(Duration::from_secs(5));
    providers(sim, from, q).unwrap()
}

#[test]
fn a_withdrawal_reaches_every_replica_it_can_and_readers_honour_it() {
    for seed in [1, 2, 3] {
        let mut sim = build(
            SimConfig::new(seed),
            30,
            Duration::from_millis(20),
            Duration::from_secs(5),
        );
        let index_of = |sim: &Sim, id: NodeId| {
            sim.live()
                .into_iter()
                .find(|i| sim.node(*i).id() == id)
                .unwrap()
        };
        let p = sim.live()[3];
        let owner = |sim: &Sim, name: &str, r: u8| {
            index_of(sim, sim.true_successor(&object_id(name, r)).unwrap())
        };
        // a name whose three replicas live on three nodes other than the provider
        let name = (0..)
            .map(|i| format!("svc-{i}"))
            .find(|n| {
                let o: Vec<usize> = (0..=K).map(|r| owner(&sim, n, r)).collect();
                !o.contains(&p) && o[0] != o[1] && o[1] != o[2] && o[0] != o[2]
            })
            .unwrap();
        let (o0, o1) = (owner(&sim, &name, 0), owner(&sim, &name, 1));
        sim.with_node(p, |n, now| {
            n.register(now, ServiceSpec::new(name.clone()), Some(K))
        })
        .unwrap();
        sim.run_for(Duration::from_secs(3));
        let pid = sim.node(p).id();
        assert!(
            lookup_everywhere(&mut sim, &name)
                .iter()
                .all(|f| f == &[pid])
        );

        // The provider cannot reach the node of replica 1: that replica misses the withdrawal.
        sim.set_link(p, o1, LinkConfig::CUT);
        let q = sim.with_node(p, |n, now| n.unregister(now, &name));
        assert!(matches!(q, themis_dht::Unregister::Withdrawing(_)), "{q:?}");
        sim.run_for(Duration::from_secs(12));
        let done = sim.events(p).iter().find_map(|e| match e {
            Event::Withdrawn { stored, failed, .. } => Some((*stored, *failed)),
            _ => None,
        });
        assert_eq!(done, Some((2, 1)), "seed {seed}");
        sim.set_link(p, o1, LinkConfig::PERFECT);

        // Replica 1 still serves the old record ...
        let reader = sim
            .live()
            .into_iter()
            .find(|i| ![p, o0, o1].contains(i))
            .unwrap();
        let stale = read_replica(&mut sim, reader, &name, 1);
        assert_eq!(stale.records.len(), 1, "seed {seed}");
        assert!(stale.withdrawn.is_empty());
        let tomb = read_replica(&mut sim, reader, &name, 0);
        assert!(tomb.records.is_empty());
        assert!(
            tomb.withdrawn[0].is_withdrawn() && tomb.withdrawn[0].seq() > stale.records[0].seq()
        );
        // ... but no reader believes it: the tombstone of replica 0 is newer.
        assert!(
            lookup_everywhere(&mut sim, &name).iter().all(Vec::is_empty),
            "seed {seed}"
        );

        // The node of replica 0 leaves: its successor takes the tombstone with the records.
        sim.leave(o0);
        sim.run_for(Duration::from_secs(5));
        sim.check_ring().unwrap();
        let moved = read_replica(&mut sim, reader, &name, 0);
        assert!(
            moved.records.is_empty() && moved.withdrawn.len() == 1,
            "seed {seed}: {moved:?}"
        );
        assert!(lookup_everywhere(&mut sim, &name).iter().all(Vec::is_empty));
    }
}

/// `DhtNode::leave` withdraws what the node provides before it hands its records over: a
/// reader finds no record of the leaver afterwards, only its tombstones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_withdraws_the_leavers_registrations() {
    use themis_channel::Mode;
    use themis_testkit::dht::{Kind, ring};
    themis_testkit::within(60, "leave withdraws", async {
        let nodes = ring(&Kind::Tcp, Mode::Secure, 6, 8).await;
        let (leaver, reader) = (&nodes[2], &nodes[4]);
        let r = leaver
            .register(ServiceSpec::new("leaving"), Some(K))
            .await
            .unwrap();
        assert_eq!(r.stored, 3);
        let p = reader.lookup_providers("leaving", Some(K)).await.unwrap();
        assert_eq!(p.records[0].provider(), leaver.id());
        let report = leaver.leave().await.unwrap();
        assert_eq!(report.records_lost, 0);
        leaver.shutdown().await;
        let p = reader.lookup_providers("leaving", Some(K)).await.unwrap();
        assert!(p.records.is_empty(), "{:?}", p.records);
        assert!(!p.withdrawn.is_empty());
        assert!(p.withdrawn.iter().all(|t| t.provider() == leaver.id()));
        for n in nodes.iter().filter(|n| n.id() != leaver.id()) {
            n.shutdown().await;
        }
    })
    .await;
}
