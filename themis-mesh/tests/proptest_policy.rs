#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Property tests: the balancer's invariants under any sequence of operations, the record merge,
//! the retry budget and the cache bounds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use themis_crypto::NodeId;
use themis_mesh::internals::{
    CacheLookup, DiscoveryCache, ReplicaSearch, RetryBudget, SearchConfig, merge_records,
};
use themis_mesh::{
    Balancer, BalancerConfig, CacheConfig, Call, Error, Policy, Provider, ProviderRecord,
    RetryBudgetConfig,
};
use themis_testkit::mesh::policy::{id, provider};

const VERSIONS: [&str; 4] = ["", "a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    NewCall,
    Pick,
    Success(u16, u16),
    Failure(u16),
    Cancel(u16),
    Advance(u32),
    Pin(Option<usize>),
    Set(Vec<(u16, usize, u32)>),
}

fn providers_strategy() -> impl Strategy<Value = Vec<(u16, usize, u32)>> {
    // Small id range so that duplicates happen; weights include 0.
    prop::collection::vec(
        (
            0u16..24,
            0usize..4,
            prop_oneof![Just(0u32), 0u32..5, Just(u32::MAX)],
        ),
        0..24,
    )
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::NewCall),
        6 => Just(Op::Pick),
        3 => (0u16..10, 0u16..2000).prop_map(|(i, l)| Op::Success(i, l)),
        5 => (0u16..10).prop_map(Op::Failure),
        1 => (0u16..10).prop_map(Op::Cancel),
        2 => (0u32..120_000).prop_map(Op::Advance),
        1 => prop::option::of(0usize..4).prop_map(Op::Pin),
        1 => providers_strategy().prop_map(Op::Set),
    ]
}

fn build(list: &[(u16, usize, u32)]) -> Vec<Provider> {
    list.iter()
        .map(|&(i, v, w)| provider(i, VERSIONS[v], w))
        .collect()
}

/// Replaces the balancer's set and the model (id -> version, first occurrence wins).
fn set(
    b: &mut Balancer,
    list: &[(u16, usize, u32)],
    now: Instant,
    model: &mut HashMap<NodeId, &'static str>,
) -> Result<(), TestCaseError> {
    model.clear();
    for &(i, v, _) in list {
        model.entry(id(i)).or_insert(VERSIONS[v]);
    }
    let kept = b.set_providers(build(list), now);
    prop_assert_eq!(kept, model.len());
    Ok(())
}

proptest! {
    // Regressions are kept beside this file (tests/proptest_policy.regressions) and committed.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn balancer_invariants(
        initial in providers_strategy(),
        ops in prop::collection::vec(op_strategy(), 1..120),
        seed in any::<u64>(),
        random in any::<bool>(),
        percent in prop_oneof![Just(50u32), Just(100u32), Just(0u32)],
        threshold in 1u32..4,
    ) {
        let t0 = Instant::now();
        let mut cfg = BalancerConfig::default();
        cfg.policy = if random { Policy::Random } else { Policy::P2cEwma };
        cfg.ejection.max_ejected_percent = percent;
        cfg.ejection.consecutive_failures = threshold;
        let mut b = Balancer::new("svc", cfg, seed, t0).unwrap();
        let mut now = t0;
        // Model: id -> version of the current set (first occurrence wins).
        let mut model: HashMap<NodeId, &'static str> = HashMap::new();
        set(&mut b, &initial, now, &mut model)?;
        let mut pinned: Option<&'static str> = None;
        let mut ejected_before = 0;
        let mut call: Call = b.begin_call(now);

        for op in ops {
            match op {
                Op::NewCall => call = b.begin_call(now),
                Op::Pick => {
                    let in_scope: Vec<NodeId> = model
                        .iter()
                        .filter(|(_, v)| pinned.is_none_or(|p| p == **v))
                        .map(|(id, _)| *id)
                        .collect();
                    let healthy = |id: &NodeId, b: &Balancer| b.provider_status(id, now).unwrap().ejected_until.is_none();
                    let any_healthy = in_scope.iter().any(|i| healthy(i, &b));
                    let any_fresh = in_scope.iter().any(|i| healthy(i, &b) && !call.tried().contains(i));
                    let attempts_before = call.attempts();
                    let tried_before = call.tried().to_vec();
                    match b.pick(&mut call, now) {
                        Ok(p) => {
                            prop_assert!(model.contains_key(&p.id), "picked a provider not in the set");
                            if let Some(v) = pinned {
                                prop_assert_eq!(model[&p.id], v);
                            }
                            prop_assert!(in_scope.contains(&p.id));
                            if any_healthy {
                                prop_assert!(healthy(&p.id, &b), "picked an ejected provider while a healthy one exists");
                            }
                            if any_fresh {
                                // Failover: never the same provider twice while a fresh one exists.
                                prop_assert!(!tried_before.contains(&p.id), "reused a provider while a fresh one existed");
                            }
                            prop_assert_eq!(p.attempt, attempts_before + 1);
                            prop_assert!(b.provider_status(&p.id, now).unwrap().in_flight >= 1);
                        }
                        Err(Error::NoProviders { .. }) => prop_assert!(model.is_empty()),
                        Err(Error::VersionUnavailable { .. }) => {
                            prop_assert!(!model.is_empty());
                            prop_assert!(pinned.is_some() && in_scope.is_empty());
                        }
                        Err(Error::AttemptsExhausted { attempts, .. }) => {
                            prop_assert_eq!(attempts, b.config().max_attempts);
                        }
                        Err(Error::RetryBudgetExhausted { .. }) => prop_assert!(attempts_before > 0),
                        Err(e) => prop_assert!(false, "unexpected error {}", e),
                    }
                }
                Op::Success(i, l) => b.on_success(&id(i), Duration::from_millis(u64::from(l)), now),
                Op::Failure(i) => b.on_failure(&id(i), now),
                Op::Cancel(i) => b.on_cancel(&id(i)),
                Op::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
                Op::Pin(v) => {
                    pinned = v.map(|v| VERSIONS[v]);
                    b.pin_version(pinned.map(str::to_owned));
                }
                Op::Set(list) => set(&mut b, &list, now, &mut model)?,
            }
            // Ejection cap (at least one may always be ejected): a new ejection never goes
            // beyond it (a refresh that shrinks the set may leave more ejected than allowed).
            let ejected = model.keys().filter(|i| b.provider_status(i, now).unwrap().ejected_until.is_some()).count();
            let allowed = if percent == 0 { 0 } else { (model.len() * percent as usize / 100).max(1) };
            if ejected > ejected_before {
                prop_assert!(ejected <= allowed, "{} ejected, {} allowed", ejected, allowed);
            }
            ejected_before = ejected;
            prop_assert!(call.tried().len() <= b.config().max_attempts as usize);
        }
    }

    #[test]
    fn merge_keeps_newest_unexpired_record_per_provider(
        raw in prop::collection::vec((0u16..10, 0u64..5, 0u64..20, 0usize..4), 0..40),
        max in 1usize..12,
        rotate in 0usize..40,
    ) {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(10);
        let records: Vec<ProviderRecord> = raw
            .iter()
            .map(|&(i, seq, exp, v)| ProviderRecord::new(provider(i, VERSIONS[v], 1), seq, t0 + Duration::from_secs(exp)))
            .collect();
        let merged = merge_records(records.clone(), now, max);
        prop_assert!(merged.len() <= max);
        prop_assert!(merged.windows(2).all(|w| w[0].provider.id < w[1].provider.id));
        for m in &merged {
            prop_assert!(m.expires_at > now);
            let best = records
                .iter()
                .filter(|r| r.provider.id == m.provider.id && r.expires_at > now)
                .map(|r| r.sequence)
                .max()
                .unwrap();
            prop_assert_eq!(m.sequence, best);
        }
        let live_ids: std::collections::BTreeSet<NodeId> =
            records.iter().filter(|r| r.expires_at > now).map(|r| r.provider.id).collect();
        prop_assert_eq!(merged.len(), live_ids.len().min(max));
        // Independent of the order in which replicas answered.
        let mut shuffled = records;
        if !shuffled.is_empty() {
            let k = rotate % shuffled.len();
            shuffled.rotate_left(k);
            shuffled.reverse();
        }
        prop_assert_eq!(merge_records(shuffled, now, max), merged);
    }

    #[test]
    fn retry_budget_never_exceeds_its_bound(
        events in prop::collection::vec((any::<bool>(), 0u64..400), 1..400),
        percent in 0u32..100,
        floor in 0u32..5,
    ) {
        let t0 = Instant::now();
        let mut cfg = RetryBudgetConfig::default();
        cfg.window = Duration::from_secs(1);
        cfg.retry_percent = percent;
        cfg.min_retries_per_sec = floor;
        let mut budget = RetryBudget::new(cfg, t0).unwrap();
        let mut now = t0;
        let mut log: Vec<(Instant, bool)> = Vec::new(); // (time, is_withdrawal)
        for (deposit, dt) in events {
            now += Duration::from_millis(dt);
            if deposit {
                budget.deposit(now);
                log.push((now, false));
            } else if budget.try_withdraw(now) {
                log.push((now, true));
            }
            // The window is 10 buckets of 100 ms, so it reaches 900 to 1000 ms back. The
            // withdrawals of the last 900 ms were all counted when the last of them was allowed,
            // so they are covered by the reserve plus the deposits of the window at that time
            // (at most 1.9 s back from now).
            let recent_w = log.iter().filter(|(t, w)| *w && now.duration_since(*t) < Duration::from_millis(900)).count() as u64;
            let deposits = log.iter().filter(|(t, w)| !*w && now.duration_since(*t) < Duration::from_millis(1900)).count() as u64;
            prop_assert!(recent_w * 100 <= u64::from(floor) * 100 + deposits * u64::from(percent));
        }
    }

    #[test]
    fn cache_stays_bounded(
        ops in prop::collection::vec((0u8..20, any::<bool>(), 0u64..3000, 0usize..5), 1..200),
        capacity in 1usize..6,
    ) {
        let t0 = Instant::now();
        let mut cfg = CacheConfig::default();
        cfg.capacity = capacity;
        let mut cache = DiscoveryCache::new(cfg).unwrap();
        let mut now = t0;
        for (name, insert, dt, n) in ops {
            now += Duration::from_millis(dt);
            let service = format!("svc{name}");
            if insert {
                let recs = (0..n as u16).map(|i| ProviderRecord::new(provider(i, "v", 1), 0, now + Duration::from_secs(2))).collect();
                cache.insert(&service, recs, now);
                let hit = cache.get(&service, now);
                if n == 0 {
                    prop_assert_eq!(hit, CacheLookup::NoProvider);
                } else {
                    prop_assert!(matches!(hit, CacheLookup::Providers(r) if r.len() == n));
                }
            } else if let CacheLookup::Providers(r) = cache.get(&service, now) {
                prop_assert!(r.iter().all(|r| r.expires_at > now));
            }
            prop_assert!(cache.len() <= capacity);
        }
    }

    #[test]
    fn replica_search_terminates_and_asks_each_replica_at_most_once(
        k in 0u8..8,
        start in any::<u32>(),
        parallelism in 1u32..4,
        enough in 1u32..4,
        // Per step: which outstanding query to settle, and how.
        outcomes in prop::collection::vec((any::<usize>(), 0u8..3, any::<u8>()), 0..64),
    ) {
        let now = Instant::now();
        let mut cfg = SearchConfig::default();
        cfg.parallelism = parallelism;
        cfg.enough_answers = enough;
        let mut search = ReplicaSearch::new("svc", k, start, cfg).unwrap();
        let mut asked: Vec<u8> = Vec::new();
        let mut outstanding: Vec<u8> = Vec::new();
        let mut steps = outcomes.into_iter();
        loop {
            while let Some(r) = search.next_query() {
                prop_assert!(!asked.contains(&r), "replica {} asked twice", r);
                prop_assert!(r <= k);
                asked.push(r);
                outstanding.push(r);
                prop_assert!(outstanding.len() <= parallelism as usize);
            }
            if search.is_finished() {
                break;
            }
            prop_assert!(!outstanding.is_empty(), "stalled: nothing outstanding and not finished");
            let (idx, how, stray) = steps.next().unwrap_or((0, 0, 0));
            let r = outstanding.remove(idx % outstanding.len());
            match how {
                0 => search.on_failure(r),
                1 => search.on_answer(r, vec![]),
                _ => search.on_answer(r, vec![ProviderRecord::new(provider(u16::from(r), "v", 1), 1, now + Duration::from_secs(1))]),
            }
            // Stray answers (for replicas not being asked) change nothing.
            if !outstanding.contains(&stray) {
                search.on_answer(stray, vec![]);
            }
        }
        prop_assert!(asked.len() <= usize::from(k) + 1);
        let replicas = search.replicas();
        match search.finish(now) {
            Ok(records) => prop_assert!(!records.is_empty()),
            Err(Error::NotFound { replicas: searched, .. }) => prop_assert_eq!(searched, replicas),
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
    }
}
