#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! The 64-impostor takeover of a service name (issue 13, finding 3) on the seeded in-memory
//! network: 64 fresh identities each store a record for the name before its genuine provider.
//! An unowned name is taken over at replica 0 as before (the per-object quota of 64 refuses
//! the genuine provider there); an owned name is not: every impostor record is refused
//! (`bad_delegation`), the genuine provider is stored on every replica and is the only one
//! discovered (PROTOCOL.md §6.4 "Owned names").

use std::time::Duration;

use themis_crypto::IdentityKeypair;
use themis_dht::{Delegation, Event, ProviderRecord, Refusal, ServiceSpec, object_id, owned_name};
use themis_testkit::sim::{Sim, SimConfig, build, providers_result};

const IMPOSTORS: usize = 64;
const K: u8 = 2;

/// A ring of 64 impostors, one genuine provider, one reader and some bystanders.
fn ring(seed: u64) -> Sim {
    let sim = build(
        SimConfig::new(seed),
        IMPOSTORS + 16,
        Duration::from_millis(20),
        Duration::from_secs(20),
    );
    sim.check_ring().unwrap();
    sim
}

fn registered(sim: &Sim, i: usize, name: &str) -> Option<(u8, u8)> {
    sim.events(i).iter().rev().find_map(|e| match e {
        Event::Registered {
            name: n,
            stored,
            failed,
            ..
        } if n == name => Some((*stored, *failed)),
        _ => None,
    })
}

/// The records held for replica `r` of `name` by the node responsible for it.
fn held(sim: &Sim, name: &str, r: u8) -> Vec<ProviderRecord> {
    let oid = object_id(name, r);
    let owner = sim.true_successor(&oid).unwrap();
    let i = sim
        .live()
        .into_iter()
        .find(|i| sim.node(*i).id() == owner)
        .unwrap();
    sim.node(i).stored(&oid).to_vec()
}

/// Discovery from `reader`: the providers found.
fn discover(sim: &mut Sim, reader: usize, name: &str) -> Vec<ProviderRecord> {
    let q = sim
        .with_node(reader, |n, now| n.lookup_providers(now, name, Some(K)))
        .unwrap();
    let done = sim.run_until(Duration::from_secs(10), |s| {
        providers_result(s, reader, q).is_some()
    });
    assert!(done, "the lookup ends");
    providers_result(sim, reader, q).unwrap()
}

#[test]
fn an_unowned_name_is_still_taken_over_at_replica_0() {
    // The behaviour of unowned names is unchanged: this is the attack of the finding.
    let mut sim = ring(131);
    let live = sim.live();
    let (impostors, rest) = live.split_at(IMPOSTORS);
    let (genuine, reader) = (rest[0], rest[1]);
    for &i in impostors {
        sim.with_node(i, |n, now| {
            n.register(now, ServiceSpec::new("pay"), Some(K))
        })
        .unwrap();
    }
    sim.run_for(Duration::from_secs(3));
    sim.with_node(genuine, |n, now| {
        n.register(now, ServiceSpec::new("pay"), Some(K))
    })
    .unwrap();
    sim.run_for(Duration::from_secs(3));
    let g = sim.node(genuine).id();
    assert_eq!(held(&sim, "pay", 0).len(), IMPOSTORS);
    assert!(held(&sim, "pay", 0).iter().all(|r| r.provider() != g));
    assert!(sim.metrics_total().rejected_for(Refusal::OverQuota) > 0);
    let found = discover(&mut sim, reader, "pay");
    assert!(
        found.iter().all(|r| r.provider() != g),
        "replica 0 lists only the impostors"
    );
}

#[test]
fn an_owned_name_cannot_be_taken_over() {
    let mut sim = ring(131);
    let live = sim.live();
    let (impostors, rest) = live.split_at(IMPOSTORS);
    let (genuine, reader) = (rest[0], rest[1]);
    let net = sim.network().clone();
    let owner = IdentityKeypair::from_seed(&[42; 32]);
    let name = owned_name("pay", &owner.public()).unwrap();
    let wall = sim.with_node(genuine, |n, now| n.wall_ms(now));
    let not_after = wall + 3_600_000;
    let g = sim.node(genuine).id();
    let genuine_delegation = Delegation::sign(&owner, &net, &name, &g, not_after).unwrap();

    // The impostors, in four kinds: no delegation; the genuine provider's delegation copied
    // into their own records; a delegation from a key of their own; one from the owner for
    // the right provider but for another name of the owner's.
    let sibling = owned_name("shop", &owner.public()).unwrap();
    for (c, &i) in impostors.iter().enumerate() {
        let me = sim.node(i).id();
        let own_key = IdentityKeypair::from_seed(&[100 + c as u8; 32]);
        let delegation = match c % 4 {
            0 => None,
            1 => Some(genuine_delegation),
            2 => {
                // signed for a name of their own key, then used for the owner's name
                let theirs = owned_name("pay", &own_key.public()).unwrap();
                Some(Delegation::sign(&own_key, &net, &theirs, &me, not_after).unwrap())
            }
            _ => Some(Delegation::sign(&owner, &net, &sibling, &me, not_after).unwrap()),
        };
        let mut spec = ServiceSpec::new(name.clone());
        spec.delegation = delegation;
        // An honest node refuses to sign such records at all, naming the problem...
        let err = sim
            .with_node(i, |n, now| n.register(now, spec.clone(), Some(K)))
            .unwrap_err();
        assert!(matches!(err, themis_dht::Error::Delegation { .. }), "{err}");
        // ...an impostor's modified node sends them anyway.
        sim.with_node(i, |n, now| n.register_unchecked(now, spec, Some(K)))
            .unwrap();
    }
    sim.run_for(Duration::from_secs(3));
    let refused = sim.metrics_total().rejected_for(Refusal::BadDelegation);
    for r in 0..=K {
        assert!(
            held(&sim, &name, r).is_empty(),
            "replica {r} holds no impostor"
        );
    }
    let stored: usize = impostors
        .iter()
        .map(|i| usize::from(registered(&sim, *i, &name).map_or(0, |(s, _)| s)))
        .sum();
    assert_eq!(stored, 0, "no impostor record was stored anywhere");

    let mut spec = ServiceSpec::new(name.clone());
    spec.delegation = Some(genuine_delegation);
    sim.with_node(genuine, |n, now| n.register(now, spec, Some(K)))
        .unwrap();
    let t0 = sim.now();
    let done = sim.run_until(Duration::from_secs(10), |s| {
        registered(s, genuine, &name).is_some()
    });
    assert!(done);
    assert_eq!(registered(&sim, genuine, &name), Some((K + 1, 0)));
    for r in 0..=K {
        let h = held(&sim, &name, r);
        assert_eq!(h.len(), 1, "replica {r}");
        assert_eq!(h[0].provider(), g);
        // the record ends no later than its delegation
        assert!(h[0].expires_unix_ms() <= not_after);
    }
    let found = discover(&mut sim, reader, &name);
    let took = sim.now() - t0;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].provider(), g);
    assert_eq!(found[0].delegation(), Some(&genuine_delegation));
    eprintln!(
        "owned name: {IMPOSTORS} impostors x {} replicas, {refused} impostor stores refused (bad_delegation); genuine stored on {} replicas and discovered {:?} (simulated) after its registration",
        K + 1,
        K + 1,
        took
    );
    assert!(
        refused >= (IMPOSTORS * usize::from(K + 1)) as u64,
        "every impostor store was refused: {refused}"
    );
}

#[test]
fn records_of_an_owned_name_end_with_their_delegation() {
    // A delegation shorter than the record TTL bounds the records' expiry, and once it has
    // passed the storing nodes have swept them: an expired delegation holds no quota slot.
    let mut sim = ring(132);
    let live = sim.live();
    let (genuine, reader) = (live[0], live[1]);
    let net = sim.network().clone();
    let owner = IdentityKeypair::from_seed(&[43; 32]);
    let name = owned_name("cart", &owner.public()).unwrap();
    let wall = sim.with_node(genuine, |n, now| n.wall_ms(now));
    let g = sim.node(genuine).id();
    let d = Delegation::sign(&owner, &net, &name, &g, wall + 5_000).unwrap();
    let mut spec = ServiceSpec::new(name.clone());
    spec.delegation = Some(d);
    sim.with_node(genuine, |n, now| n.register(now, spec, Some(K)))
        .unwrap();
    sim.run_for(Duration::from_secs(2));
    assert_eq!(registered(&sim, genuine, &name), Some((K + 1, 0)));
    for r in 0..=K {
        let h = held(&sim, &name, r);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].expires_unix_ms(), wall + 5_000);
    }
    sim.run_for(Duration::from_secs(5));
    for r in 0..=K {
        assert!(held(&sim, &name, r).is_empty(), "replica {r} swept");
    }
    assert!(discover(&mut sim, reader, &name).is_empty());
}
