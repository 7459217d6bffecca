#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Balancer behaviour: canary split, P2C, failover, retry budget, ejection, pinning.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use themis_crypto::NodeId;
use themis_mesh::{Balancer, BalancerConfig, Error, Policy, Provider};
use themis_testkit::mesh::policy::{id, provider};

const MS: Duration = Duration::from_millis(1);

fn balancer(policy: Policy, providers: Vec<Provider>, seed: u64, now: Instant) -> Balancer {
    let mut cfg = BalancerConfig::default();
    cfg.policy = policy;
    let mut b = Balancer::new("check", cfg, seed, now).unwrap();
    b.set_providers(providers, now);
    b
}

/// Runs `n` successful single-attempt calls `step` apart; `latency` gives each provider's
/// latency. Returns the picks per provider and the time reached.
fn run(
    b: &mut Balancer,
    n: usize,
    mut now: Instant,
    step: Duration,
    latency: impl Fn(&NodeId) -> Duration,
) -> (HashMap<NodeId, usize>, Instant) {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let mut call = b.begin_call(now);
        let p = b.pick(&mut call, now).unwrap();
        *counts.entry(p.id).or_insert(0) += 1;
        b.on_success(&p.id, latency(&p.id), now);
        now += step;
    }
    (counts, now)
}

fn share_of(b: &Balancer, counts: &HashMap<NodeId, usize>, version: &str, all: &[Provider]) -> f64 {
    let _ = b;
    let n: usize = counts.values().sum();
    let v: usize = all
        .iter()
        .filter(|p| p.version == version)
        .map(|p| counts.get(&p.id).copied().unwrap_or(0))
        .sum();
    v as f64 / n as f64
}

#[test]
fn canary_split_95_5_within_3_points() {
    // 19 stable providers of weight 5 and one canary of weight 5: the canary version's weight is
    // 5 of 100.
    let mut all: Vec<Provider> = (0..19).map(|i| provider(i, "1.0", 5)).collect();
    all.push(provider(19, "1.1-canary", 5));
    for policy in [Policy::P2cEwma, Policy::Random] {
        for seed in [1, 2, 3] {
            let now = Instant::now();
            let mut b = balancer(policy, all.clone(), seed, now);
            let (counts, _) = run(&mut b, 10_000, now, MS, |_| 5 * MS);
            let canary = share_of(&b, &counts, "1.1-canary", &all);
            eprintln!("95/5 {policy:?} seed {seed}: canary share {canary:.4}");
            assert!(
                (canary - 0.05).abs() <= 0.03,
                "{policy:?} seed {seed}: canary share {canary}"
            );
        }
    }
}

#[test]
fn canary_split_70_30_within_3_points() {
    // Different provider counts per version: 2 × 35 against 3 × 10.
    let all = vec![
        provider(1, "a", 35),
        provider(2, "a", 35),
        provider(3, "b", 10),
        provider(4, "b", 10),
        provider(5, "b", 10),
    ];
    for policy in [Policy::P2cEwma, Policy::Random] {
        for seed in [10, 20] {
            let now = Instant::now();
            let mut b = balancer(policy, all.clone(), seed, now);
            // Version b is much slower: P2C must still give it its share.
            let (counts, _) = run(&mut b, 10_000, now, MS, |p| {
                if *p == id(1) || *p == id(2) {
                    2 * MS
                } else {
                    40 * MS
                }
            });
            let a = share_of(&b, &counts, "a", &all);
            eprintln!("70/30 {policy:?} seed {seed}: share of a {a:.4}");
            assert!(
                (a - 0.70).abs() <= 0.03,
                "{policy:?} seed {seed}: share of a {a}"
            );
        }
    }
}

#[test]
fn random_policy_within_a_version_is_weighted_and_uniform_for_equal_weights() {
    let all: Vec<Provider> = (0..4).map(|i| provider(i, "v", 1)).collect();
    let now = Instant::now();
    let mut b = balancer(Policy::Random, all, 5, now);
    let (counts, _) = run(&mut b, 8_000, now, MS, |_| MS);
    for i in 0..4 {
        let c = counts[&id(i)];
        assert!((1_700..=2_300).contains(&c), "provider {i}: {c}");
    }
}

#[test]
fn p2c_prefers_the_faster_provider() {
    let all: Vec<Provider> = (0..5).map(|i| provider(i, "v", 1)).collect();
    let slow = id(0);
    let lat = |p: &NodeId| if *p == slow { 50 * MS } else { 5 * MS };
    let now = Instant::now();
    let mut b = balancer(Policy::P2cEwma, all.clone(), 9, now);
    let (p2c, _) = run(&mut b, 10_000, now, MS, lat);
    let mut r = balancer(Policy::Random, all, 9, now);
    let (random, _) = run(&mut r, 10_000, now, MS, lat);
    let fair = 10_000 / 5;
    // The paper's uniform choice gives the slow provider its fair share...
    assert!(random[&slow] > fair * 8 / 10, "random: {}", random[&slow]);
    // ... P2C markedly less.
    let got = p2c.get(&slow).copied().unwrap_or(0);
    eprintln!(
        "slow provider: {} picks of 10000 with Random, {got} with P2C",
        random[&slow]
    );
    assert!(
        got < fair / 4,
        "p2c gave the slow provider {got} of 10000 picks"
    );
}

#[test]
fn p2c_never_starves_a_slow_provider() {
    // Two providers: P2C compares both on every pick, the harshest case for the slow one.
    let all = vec![provider(1, "v", 1), provider(2, "v", 1)];
    let slow = id(2);
    let start = Instant::now();
    let mut b = balancer(Policy::P2cEwma, all, 3, start);
    let step = 10 * MS;
    let mut now = start;
    let mut last_slow = start;
    let mut slow_picks = 0;
    let mut longest_gap = Duration::ZERO;
    for _ in 0..30_000 {
        // 300 s of virtual time
        let mut call = b.begin_call(now);
        let p = b.pick(&mut call, now).unwrap();
        let latency = if p.id == slow {
            slow_picks += 1;
            longest_gap = longest_gap.max(now - last_slow);
            eprintln!("slow provider: {slow_picks} picks in 300 s, longest gap {longest_gap:?}");
            last_slow = now;
            100 * MS
        } else {
            5 * MS
        };
        b.on_success(&p.id, latency, now);
        now += step;
    }
    longest_gap = longest_gap.max(now - last_slow);
    eprintln!("slow provider: {slow_picks} picks in 300 s, longest gap {longest_gap:?}");
    // The idle estimate decays (τ = 10 s) below the fast one's 5 ms after ~30 s.
    assert!(
        slow_picks >= 5,
        "slow provider picked {slow_picks} times in 300 s"
    );
    assert!(
        longest_gap <= Duration::from_secs(45),
        "longest gap {longest_gap:?}"
    );
    assert!(
        slow_picks < 300,
        "slow provider picked {slow_picks} times: P2C did not prefer the fast one"
    );
}

#[test]
fn p2c_accounts_for_in_flight_requests() {
    let all = vec![provider(1, "v", 1), provider(2, "v", 1)];
    let now = Instant::now();
    // Three calls to provider 1 hang while it is alone; then provider 2 arrives.
    let mut b = balancer(Policy::P2cEwma, all[..1].to_vec(), 1, now);
    for _ in 0..3 {
        let mut call = b.begin_call(now);
        assert_eq!(b.pick(&mut call, now).unwrap().id, id(1));
    }
    b.set_providers(all, now);
    assert_eq!(b.provider_status(&id(1), now).unwrap().in_flight, 3);
    for _ in 0..20 {
        let mut call = b.begin_call(now);
        let p = b.pick(&mut call, now).unwrap();
        assert_eq!(p.id, id(2));
        b.on_success(&p.id, 30 * MS, now);
    }
    for _ in 0..3 {
        b.on_cancel(&id(1));
    }
    assert_eq!(b.provider_status(&id(1), now).unwrap().in_flight, 0);
}

#[test]
fn failover_never_reuses_a_provider_while_another_exists() {
    let all: Vec<Provider> = (0..3).map(|i| provider(i, "v", 1)).collect();
    let now = Instant::now();
    for seed in 0..20 {
        let mut b = balancer(Policy::P2cEwma, all.clone(), seed, now);
        let mut call = b.begin_call(now);
        let mut seen = Vec::new();
        for attempt in 1..=3 {
            let p = b.pick(&mut call, now).unwrap();
            assert_eq!(p.attempt, attempt);
            assert!(!seen.contains(&p.id), "seed {seed}: provider reused");
            seen.push(p.id);
            b.on_failure(&p.id, now);
        }
        assert_eq!(call.tried(), &seen[..]);
        let err = b.pick(&mut call, now).unwrap_err();
        assert!(
            matches!(&err, Error::AttemptsExhausted { service, attempts: 3 } if service == "check"),
            "{err}"
        );
    }
    // A single provider is retried: there is no other.
    let mut b = balancer(Policy::P2cEwma, vec![provider(9, "v", 1)], 0, now);
    let mut call = b.begin_call(now);
    let a = b.pick(&mut call, now).unwrap();
    b.on_failure(&a.id, now);
    assert_eq!(b.pick(&mut call, now).unwrap().id, a.id);
}

#[test]
fn an_avoided_provider_is_chosen_only_when_no_other_is_left() {
    let all: Vec<Provider> = (0..3).map(|i| provider(i, "v", 1)).collect();
    let now = Instant::now();
    for seed in 0..50 {
        let mut b = balancer(Policy::P2cEwma, all.clone(), seed, now);
        let mut call = b.begin_call(now);
        call.avoid(all[0].id);
        let first = b.pick(&mut call, now).unwrap();
        assert_ne!(
            first.id, all[0].id,
            "seed {seed}: an avoided provider chosen first"
        );
        b.on_failure(&first.id, now);
        let second = b.pick(&mut call, now).unwrap();
        assert_ne!(
            second.id, all[0].id,
            "seed {seed}: avoided before the untried one"
        );
        b.on_failure(&second.id, now);
        // Every provider was tried or avoided: the choice is open again, not refused.
        assert!(b.pick(&mut call, now).is_ok());
    }
    // Avoiding the only provider does not make it unusable.
    let mut b = balancer(Policy::P2cEwma, vec![provider(9, "v", 1)], 0, now);
    let mut call = b.begin_call(now);
    call.avoid(provider(9, "v", 1).id);
    assert!(b.pick(&mut call, now).is_ok());
}

#[test]
fn retry_budget_caps_retries_under_total_failure() {
    let all: Vec<Provider> = (0..4).map(|i| provider(i, "v", 1)).collect();
    let start = Instant::now();
    let mut b = balancer(Policy::P2cEwma, all, 4, start);
    let mut now = start;
    let (mut calls, mut retries, mut refused) = (0u64, 0u64, 0u64);
    // 30 s of calls every 10 ms against a service where everything fails.
    for _ in 0..3_000 {
        calls += 1;
        let mut call = b.begin_call(now);
        loop {
            match b.pick(&mut call, now) {
                Ok(p) => {
                    if p.attempt > 1 {
                        retries += 1;
                    }
                    b.on_failure(&p.id, now);
                }
                Err(Error::RetryBudgetExhausted { .. }) => {
                    refused += 1;
                    break;
                }
                Err(Error::AttemptsExhausted { .. }) => break,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        now += 10 * MS;
    }
    // Without a budget: 2 retries per call = 6000. With it: 20 % of the calls plus 10/s, plus at
    // most one window's reserve of slack at the edges.
    let bound = calls / 5 + 10 * 30 + 100;
    eprintln!("total failure: {calls} calls, {retries} retries, {refused} refused by the budget");
    assert!(
        retries <= bound,
        "{retries} retries for {calls} calls (bound {bound})"
    );
    assert!(retries >= calls / 5, "budget too strict: {retries} retries");
    assert!(refused > 0);
    let msg = Error::RetryBudgetExhausted {
        service: "check".into(),
        percent: 20,
        min_per_sec: 10,
    }
    .to_string();
    assert!(msg.contains("'check'") && msg.contains("20%"), "{msg}");
}

#[test]
fn ejection_after_consecutive_failures_and_recovery_after_cooldown() {
    let all: Vec<Provider> = (0..4).map(|i| provider(i, "v", 1)).collect();
    let t0 = Instant::now();
    let mut b = balancer(Policy::Random, all, 8, t0);
    let bad = id(0);
    for k in 1..=4 {
        b.on_failure(&bad, t0);
        assert_eq!(b.provider_status(&bad, t0).unwrap().consecutive_failures, k);
        assert_eq!(b.provider_status(&bad, t0).unwrap().ejected_until, None);
    }
    b.on_failure(&bad, t0);
    let st = b.provider_status(&bad, t0).unwrap();
    assert_eq!(st.ejected_until, Some(t0 + Duration::from_secs(30)));
    assert_eq!(st.ejections, 1);

    // Never picked during the cooldown.
    let (counts, _) = run(&mut b, 2_000, t0, 10 * MS, |_| MS); // 20 s
    assert!(!counts.contains_key(&bad));

    // Back after 30 s.
    let t1 = t0 + Duration::from_secs(30);
    assert_eq!(b.provider_status(&bad, t1).unwrap().ejected_until, None);
    let (counts, _) = run(&mut b, 400, t1, MS, |_| MS);
    assert!(counts[&bad] > 50, "{counts:?}");

    // On probation it is ejected again by one failure, for twice as long.
    let mut b2 = balancer(
        Policy::Random,
        (0..4).map(|i| provider(i, "v", 1)).collect(),
        8,
        t0,
    );
    for _ in 0..5 {
        b2.on_failure(&bad, t0);
    }
    b2.on_failure(&bad, t1);
    assert_eq!(
        b2.provider_status(&bad, t1).unwrap().ejected_until,
        Some(t1 + Duration::from_secs(60))
    );
    // Cooldowns double up to the 300 s cap.
    let mut t = t1;
    for expected in [120, 240, 300, 300] {
        t += Duration::from_secs(301);
        let mut call = b2.begin_call(t);
        let _ = b2.pick(&mut call, t); // ends the ejection
        b2.on_failure(&bad, t);
        assert_eq!(
            b2.provider_status(&bad, t).unwrap().ejected_until,
            Some(t + Duration::from_secs(expected))
        );
    }
    // A success clears the history.
    t += Duration::from_secs(301);
    b2.on_success(&bad, MS, t);
    let st = b2.provider_status(&bad, t).unwrap();
    assert_eq!(
        (st.ejections, st.consecutive_failures, st.ejected_until),
        (0, 0, None)
    );
    b2.on_failure(&bad, t);
    assert_eq!(b2.provider_status(&bad, t).unwrap().ejected_until, None);
}

#[test]
fn at_most_half_of_the_providers_are_ejected() {
    let all: Vec<Provider> = (0..4).map(|i| provider(i, "v", 1)).collect();
    let t0 = Instant::now();
    let mut b = balancer(Policy::P2cEwma, all, 8, t0);
    for i in 0..4 {
        for _ in 0..10 {
            b.on_failure(&id(i), t0);
        }
    }
    let ejected = (0..4)
        .filter(|&i| {
            b.provider_status(&id(i), t0)
                .unwrap()
                .ejected_until
                .is_some()
        })
        .count();
    assert_eq!(ejected, 2);
}

#[test]
fn panic_mode_uses_ejected_providers_and_can_be_disabled() {
    let t0 = Instant::now();
    let mut cfg = BalancerConfig::default();
    cfg.ejection.max_ejected_percent = 100;
    let all = vec![provider(1, "v", 1), provider(2, "v", 1)];
    let mut b = Balancer::new("check", cfg.clone(), 1, t0).unwrap();
    b.set_providers(all.clone(), t0);
    for i in [1, 2] {
        for _ in 0..5 {
            b.on_failure(&id(i), t0);
        }
    }
    assert!(
        b.provider_status(&id(1), t0)
            .unwrap()
            .ejected_until
            .is_some()
    );
    assert!(
        b.provider_status(&id(2), t0)
            .unwrap()
            .ejected_until
            .is_some()
    );
    // Panic mode: still served, and failover still moves to the other provider.
    let mut call = b.begin_call(t0);
    let a = b.pick(&mut call, t0).unwrap();
    b.on_failure(&a.id, t0);
    let c = b.pick(&mut call, t0).unwrap();
    assert_ne!(a.id, c.id);

    cfg.ejection.panic_mode = false;
    let mut b = Balancer::new("check", cfg, 1, t0).unwrap();
    b.set_providers(all, t0);
    for i in [1, 2] {
        for _ in 0..5 {
            b.on_failure(&id(i), t0);
        }
    }
    let t = t0 + Duration::from_secs(10);
    let mut call = b.begin_call(t);
    let err = b.pick(&mut call, t).unwrap_err();
    assert!(
        matches!(&err, Error::AllEjected { service, count: 2, retry_in }
            if service == "check" && *retry_in == Duration::from_secs(20)),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("all 2 providers of 'check' are ejected"),
        "{err}"
    );
    // After the cooldown they are back.
    let t = t0 + Duration::from_secs(30);
    let mut call = b.begin_call(t);
    assert!(b.pick(&mut call, t).is_ok());
}

#[test]
fn pinning_restricts_to_one_version() {
    let all = vec![
        provider(1, "1.0", 95),
        provider(2, "1.1", 5),
        provider(3, "1.1", 5),
    ];
    let now = Instant::now();
    let mut b = balancer(Policy::P2cEwma, all, 2, now);
    b.pin_version(Some("1.1".into()));
    assert_eq!(b.pinned_version(), Some("1.1"));
    let (counts, _) = run(&mut b, 500, now, MS, |_| MS);
    assert!(!counts.contains_key(&id(1)));
    assert!(counts.contains_key(&id(2)) && counts.contains_key(&id(3)));

    b.pin_version(Some("2.0".into()));
    let mut call = b.begin_call(now);
    let err = b.pick(&mut call, now).unwrap_err();
    assert!(matches!(&err, Error::VersionUnavailable { version, .. } if version == "2.0"));
    let msg = err.to_string();
    assert!(
        msg.contains("'2.0'") && msg.contains("'1.0', '1.1'"),
        "{msg}"
    );

    b.pin_version(None);
    let (counts, _) = run(&mut b, 500, now, MS, |_| MS);
    assert!(counts.contains_key(&id(1)));
}

#[test]
fn pinned_version_is_kept_even_when_all_its_providers_are_ejected() {
    let t0 = Instant::now();
    let all = vec![
        provider(1, "a", 1),
        provider(2, "a", 1),
        provider(3, "b", 1),
        provider(4, "b", 1),
    ];
    let mut b = balancer(Policy::P2cEwma, all, 6, t0);
    for _ in 0..5 {
        b.on_failure(&id(3), t0);
    }
    b.pin_version(Some("b".into()));
    // Unpinned failover would leave version b; pinned, the call stays on b.
    let (counts, _) = run(&mut b, 100, t0, MS, |_| MS);
    assert_eq!(counts.len(), 1);
    assert!(counts.contains_key(&id(4)));
}

#[test]
fn a_version_without_usable_providers_loses_its_share() {
    let t0 = Instant::now();
    let all = vec![
        provider(1, "a", 50),
        provider(2, "b", 50),
        provider(3, "b", 50),
    ];
    let mut b = balancer(Policy::Random, all, 6, t0);
    // Version a's only provider is ejected: b takes all the traffic.
    for _ in 0..5 {
        b.on_failure(&id(1), t0);
    }
    let (counts, _) = run(&mut b, 1_000, t0, MS, |_| MS);
    assert!(!counts.contains_key(&id(1)));
    // Version b loses one of two providers: it keeps its share (the survivor takes it).
    let mut b = balancer(
        Policy::Random,
        vec![
            provider(1, "a", 50),
            provider(2, "b", 25),
            provider(3, "b", 25),
        ],
        6,
        t0,
    );
    for _ in 0..5 {
        b.on_failure(&id(3), t0);
    }
    let (counts, _) = run(&mut b, 4_000, t0, MS, |_| MS);
    let a = counts[&id(1)] as f64 / 4_000.0;
    assert!((a - 0.5).abs() < 0.03, "{a}");
    assert!(!counts.contains_key(&id(3)));
}

#[test]
fn weight_zero_is_standby() {
    let t0 = Instant::now();
    let all = vec![
        provider(1, "old", 0),
        provider(2, "new", 10),
        provider(3, "new", 0),
    ];
    let mut b = balancer(Policy::P2cEwma, all, 6, t0);
    let (counts, _) = run(&mut b, 1_000, t0, MS, |_| MS);
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(counts[&id(2)], 1_000);
    // The only weighted provider is ejected: its version keeps its share, served by its
    // standby provider (P2C never draws the standby as a second candidate before that).
    for _ in 0..5 {
        b.on_failure(&id(2), t0);
    }
    let (counts, _) = run(&mut b, 1_000, t0, MS, |_| MS);
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(counts[&id(3)], 1_000);
    // A version of weight 0 takes over only when no weighted version is usable.
    let mut b = balancer(
        Policy::P2cEwma,
        vec![provider(1, "old", 0), provider(2, "new", 10)],
        6,
        t0,
    );
    let (counts, _) = run(&mut b, 100, t0, MS, |_| MS);
    assert_eq!(counts[&id(2)], 100);
    for _ in 0..5 {
        b.on_failure(&id(2), t0); // one ejection is always allowed
    }
    let (counts, _) = run(&mut b, 100, t0, MS, |_| MS);
    assert_eq!(counts[&id(1)], 100);
}

#[test]
fn refresh_keeps_state_and_bounds_size() {
    let t0 = Instant::now();
    let mut b = balancer(
        Policy::P2cEwma,
        vec![
            provider(1, "v", 1),
            provider(2, "v", 1),
            provider(3, "v", 1),
        ],
        1,
        t0,
    );
    for _ in 0..5 {
        b.on_failure(&id(1), t0);
    }
    b.on_success(&id(2), 7 * MS, t0);
    // Refresh: 1 and 2 stay (2 with a new version), 3 leaves, 4 arrives; duplicates collapse.
    let kept = b.set_providers(
        vec![
            provider(1, "v", 1),
            provider(2, "w", 1),
            provider(4, "v", 1),
            provider(4, "x", 1),
        ],
        t0,
    );
    assert_eq!(kept, 3);
    assert!(
        b.provider_status(&id(1), t0)
            .unwrap()
            .ejected_until
            .is_some()
    );
    assert_eq!(b.provider_status(&id(2), t0).unwrap().latency, 30 * MS); // peak kept (prior 30 ms)
    assert_eq!(b.provider_status(&id(4), t0).unwrap().latency, 30 * MS);
    assert!(b.provider_status(&id(3), t0).is_none());
    let versions: Vec<_> = b.versions().map(|(v, w, n)| (v.to_owned(), w, n)).collect();
    assert_eq!(
        versions,
        vec![("v".to_owned(), 2, 2), ("w".to_owned(), 1, 1)]
    );

    let mut cfg = BalancerConfig::default();
    cfg.max_providers = 10;
    let mut small = Balancer::new("check", cfg, 5, t0).unwrap();
    assert_eq!(
        small.set_providers((0..100).map(|i| provider(i, "v", 1)), t0),
        10
    );
    assert_eq!(small.len(), 10);
    // A random subset, not the first ten.
    assert!((10..100).any(|i| small.provider_status(&id(i), t0).is_some()));
}

#[test]
fn empty_balancer_and_bad_config() {
    let t0 = Instant::now();
    let mut b = Balancer::new("check", BalancerConfig::default(), 0, t0).unwrap();
    let mut call = b.begin_call(t0);
    let err = b.pick(&mut call, t0).unwrap_err();
    assert!(
        matches!(&err, Error::NoProviders { service } if service == "check"),
        "{err}"
    );
    let mut cfg = BalancerConfig::default();
    cfg.max_attempts = 0;
    assert!(matches!(
        Balancer::new("x", cfg, 0, t0),
        Err(Error::InvalidConfig { .. })
    ));
    let mut cfg = BalancerConfig::default();
    cfg.ejection.base_cooldown = Duration::from_secs(600);
    assert!(matches!(
        Balancer::new("x", cfg, 0, t0),
        Err(Error::InvalidConfig { .. })
    ));
}

#[test]
fn same_seed_same_picks() {
    let all: Vec<Provider> = (0..50)
        .map(|i| provider(i, if i % 5 == 0 { "b" } else { "a" }, 1 + u32::from(i % 3)))
        .collect();
    let t0 = Instant::now();
    let trace = |seed| {
        let mut b = balancer(Policy::P2cEwma, all.clone(), seed, t0);
        let mut now = t0;
        let mut out = Vec::new();
        for k in 0..2_000u32 {
            let mut call = b.begin_call(now);
            let p = b.pick(&mut call, now).unwrap();
            out.push(p.id);
            if k % 7 == 0 {
                b.on_failure(&p.id, now);
            } else {
                b.on_success(&p.id, Duration::from_micros(u64::from(k % 13) * 300), now);
            }
            now += MS;
        }
        out
    };
    assert_eq!(trace(77), trace(77));
    assert_ne!(trace(77), trace(78));
}
