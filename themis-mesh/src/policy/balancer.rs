//! Provider choice for one service: canary split by version weight, then the paper's uniform
//! choice or power-of-two-choices on peak-EWMA latency; failover with a retry budget; outlier
//! ejection with growing cooldowns and panic mode.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use themis_crypto::NodeId;

use super::budget::{RetryBudget, RetryBudgetConfig};
use super::ewma::PeakEwma;
use super::provider::Provider;
use crate::Error;

/// How a provider is chosen inside the chosen version group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Policy {
    /// The paper's choice (§7: "nodes select randomly over the returned list"): uniform when all
    /// weights are equal, otherwise proportional to weight.
    Random,
    /// Power of two choices (Mitzenmacher; Linkerd's and Finagle's default): draw two distinct
    /// providers at random (by weight) and take the one with the lower cost
    /// `peak-EWMA latency × (in-flight + 1)`.
    #[default]
    P2cEwma,
}

/// Outlier ejection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EjectionConfig {
    /// Consecutive failures that eject a provider (default 5; 0 disables ejection).
    pub consecutive_failures: u32,
    /// Cooldown of a first ejection (default 30 s); it doubles on each further ejection without
    /// a success in between.
    pub base_cooldown: Duration,
    /// Longest cooldown (default 300 s; at most 1 day).
    pub max_cooldown: Duration,
    /// At most this percentage of the providers is ejected at once (default 50; at least one
    /// provider can always be ejected).
    pub max_ejected_percent: u32,
    /// When every provider in scope is ejected, use them all anyway (default `true`, Envoy's
    /// "panic mode"); `false` fails the pick with [`Error::AllEjected`].
    pub panic_mode: bool,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
            max_ejected_percent: 50,
            panic_mode: true,
        }
    }
}

/// Balancer settings. Start from `BalancerConfig::default()` and change fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BalancerConfig {
    /// Choice inside a version group (default [`Policy::P2cEwma`]).
    pub policy: Policy,
    /// Neutral prior latency of a provider with no sample yet (default 30 ms, Linkerd's).
    pub default_rtt: Duration,
    /// Time constant of the EWMA and of its decay towards zero when idle (default 10 s).
    pub decay: Duration,
    /// Latency sample a failure counts as in the EWMA (default 1 s, a typical call timeout).
    pub failure_penalty: Duration,
    /// Providers kept; a larger set is sampled at random down to this size (default 1024).
    pub max_providers: usize,
    /// Attempts per call, the first included (default 3; 1 to 16).
    pub max_attempts: u32,
    /// Outlier ejection.
    pub ejection: EjectionConfig,
    /// Retry budget.
    pub retry_budget: RetryBudgetConfig,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
            failure_penalty: Duration::from_secs(1),
            max_providers: 1024,
            max_attempts: 3,
            ejection: EjectionConfig::default(),
            retry_budget: RetryBudgetConfig::default(),
        }
    }
}

impl BalancerConfig {
    fn validate(&self) -> Result<(), Error> {
        let bad = |reason| {
            Err(Error::InvalidConfig {
                what: "balancer",
                reason,
            })
        };
        let day = Duration::from_secs(86_400);
        if self.decay < Duration::from_millis(1) || self.decay > day {
            return bad("decay must be between 1 ms and 1 day");
        }
        if self.default_rtt > day || self.failure_penalty > day {
            return bad("default_rtt and failure_penalty must be at most 1 day");
        }
        if self.max_providers == 0 || self.max_providers > 1 << 20 {
            return bad("max_providers must be between 1 and 1048576");
        }
        if self.max_attempts == 0 || self.max_attempts > 16 {
            return bad("max_attempts must be between 1 and 16");
        }
        let e = &self.ejection;
        if e.base_cooldown > e.max_cooldown || e.max_cooldown > day {
            return bad("ejection cooldowns must satisfy base_cooldown <= max_cooldown <= 1 day");
        }
        if e.max_ejected_percent > 100 {
            return bad("max_ejected_percent must be at most 100");
        }
        self.retry_budget.validate()
    }
}

/// The provider a pick chose. Report its outcome with [`Balancer::on_success`],
/// [`Balancer::on_failure`] or [`Balancer::on_cancel`] (each pick counts as in flight until then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pick {
    /// The provider's node id.
    pub id: NodeId,
    /// Its address.
    pub addr: SocketAddr,
    /// 1 for the first attempt of the call, 2 for its first retry, ...
    pub attempt: u32,
}

/// One call's failover state: which providers it tried and how many attempts it made. Get one
/// from [`Balancer::begin_call`]; it holds at most `max_attempts` ids.
#[derive(Debug, Clone, Default)]
pub struct Call {
    tried: Vec<NodeId>,
    attempts: u32,
    /// Providers to pass over like tried ones (recently refusing), at most [`MAX_AVOIDED`].
    avoided: Vec<NodeId>,
}

/// Most providers one [`Call`] avoids.
const MAX_AVOIDED: usize = 64;

impl Call {
    /// Passes over `provider` like one already tried (issue 12, fail fast: a peer that refused
    /// a connection recently): it is chosen only when no untried healthy provider is left. A
    /// call avoids at most 64 providers; further ones are ignored.
    pub fn avoid(&mut self, provider: NodeId) {
        if self.avoided.len() < MAX_AVOIDED && !self.avoided.contains(&provider) {
            self.avoided.push(provider);
        }
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Providers tried so far, in order.
    pub fn tried(&self) -> &[NodeId] {
        &self.tried
    }
}

/// What the balancer knows about one provider (for metrics and tests).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProviderStatus {
    /// Its latency estimate read now (peak-EWMA, decayed since the last sample).
    pub latency: Duration,
    /// Picks not yet reported.
    pub in_flight: u32,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Ejections since the last success.
    pub ejections: u32,
    /// End of the current ejection, if ejected.
    pub ejected_until: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Entry {
    provider: Provider,
    group: usize,
    ewma: PeakEwma,
    in_flight: u32,
    consecutive_failures: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
    /// Back from an ejection and not yet succeeded: one more failure ejects it again.
    probation: bool,
}

#[derive(Debug, Clone)]
struct Group {
    version: String,
    /// Entry indices.
    members: Vec<usize>,
    /// Running sums of the members' weights (same length as `members`).
    cumulative: Vec<u64>,
    /// Sum of the members' weights.
    total: u64,
    /// Members currently ejected.
    ejected: usize,
}

/// Which providers a selection round may use, from the most to the least preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Not ejected, not yet tried by this call.
    Fresh,
    /// Not ejected (all of those were tried: "never the same provider twice if another exists").
    Healthy,
    /// Panic mode: ejected too, untried first.
    PanicFresh,
    /// Panic mode: anything.
    Panic,
}

const REJECTION_TRIES: usize = 16;

/// The traffic policy of one caller for one service.
///
/// * **Canary split.** Providers are grouped by announced version. A version's share of traffic
///   is the sum of its providers' weights over the sum of all weights in scope, and inside a
///   version a provider is drawn in proportion to its weight: with all groups usable, each
///   provider gets `weight / total weight` of the calls. Each provider speaks only for itself
///   (its weight is in its own signed record), so announcements cannot conflict; two records of
///   one provider are resolved by sequence number before they reach the balancer
///   (`merge_records`). A version none of whose providers may be used gets no traffic
///   and its share goes to the others in proportion; a version keeps its full share while at
///   least one of its providers is usable. Versions whose weights sum to 0 are used only when
///   no positive-weight version is usable. [`Balancer::pin_version`] restricts the scope to one
///   version.
/// * **Provider choice** inside the version: see [`Policy`].
/// * **Failover.** A [`Call`] never gets the same provider twice while another non-ejected one
///   exists; every attempt after the first needs the retry budget (`RetryBudget`) and
///   a call makes at most `max_attempts`.
/// * **Ejection.** `consecutive_failures` failures in a row eject a provider for a cooldown that
///   doubles on repeat ejections (capped); back from ejection it is on probation (one failure
///   ejects it again, a success clears its history). At most `max_ejected_percent` of the
///   providers are ejected at once; if every provider in scope is ejected anyway, panic mode
///   uses them all.
///
/// Sans-I/O: every method takes `now`; randomness comes from a PRNG seeded by the caller.
#[derive(Debug)]
pub struct Balancer {
    service: String,
    config: BalancerConfig,
    rng: fastrand::Rng,
    entries: Vec<Entry>,
    index: HashMap<NodeId, usize>,
    groups: Vec<Group>,
    pinned: Option<String>,
    ejected: usize,
    next_return: Option<Instant>,
    budget: RetryBudget,
}

impl Balancer {
    /// An empty balancer for `service`. `seed` seeds its PRNG (in production draw it from
    /// `themis_crypto::fill_random`; tests pass a constant for reproducible runs).
    pub fn new(
        service: impl Into<String>,
        config: BalancerConfig,
        seed: u64,
        now: Instant,
    ) -> Result<Self, Error> {
        config.validate()?;
        let budget = RetryBudget::new(config.retry_budget.clone(), now)?;
        Ok(Self {
            service: service.into(),
            config,
            rng: fastrand::Rng::with_seed(seed),
            entries: Vec::new(),
            index: HashMap::new(),
            groups: Vec::new(),
            pinned: None,
            ejected: 0,
            next_return: None,
            budget,
        })
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The settings.
    pub fn config(&self) -> &BalancerConfig {
        &self.config
    }

    /// Number of providers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` if there is no provider.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The providers' ids.
    pub fn provider_ids(&self) -> impl Iterator<Item = &NodeId> + '_ {
        self.entries.iter().map(|e| &e.provider.id)
    }

    /// Restricts picks to providers announcing `version` (`None`: all versions).
    pub fn pin_version(&mut self, version: Option<String>) {
        self.pinned = version;
    }

    /// The pinned version, if any.
    pub fn pinned_version(&self) -> Option<&str> {
        self.pinned.as_deref()
    }

    /// Versions known, with the sum of their providers' weights and their provider count, in
    /// version order.
    pub fn versions(&self) -> impl Iterator<Item = (&str, u64, usize)> + '_ {
        self.groups
            .iter()
            .map(|g| (g.version.as_str(), g.total, g.members.len()))
    }

    /// Replaces the provider set (for example with fresh discovery results). Providers that
    /// stay keep their latency estimate, in-flight count and ejection state; new ones start at
    /// the neutral prior `default_rtt`. Duplicate ids keep their first entry. If more than
    /// `max_providers` remain, a random subset of that size is kept (random, so that nobody can
    /// crowd others out by choosing their node ids). Returns the number kept.
    pub fn set_providers<I>(&mut self, providers: I, now: Instant) -> usize
    where
        I: IntoIterator<Item = Provider>,
    {
        let mut seen = HashSet::new();
        let mut list: Vec<Provider> = Vec::new();
        for p in providers {
            if seen.insert(p.id) {
                list.push(p);
            }
        }
        if list.len() > self.config.max_providers {
            // Partial Fisher-Yates: a uniform random subset.
            for i in 0..self.config.max_providers {
                let j = self.rng.usize(i..list.len());
                list.swap(i, j);
            }
            list.truncate(self.config.max_providers);
        }

        let mut old: HashMap<NodeId, Entry> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(|e| (e.provider.id, e))
            .collect();
        let mut by_version: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut entries = Vec::with_capacity(list.len());
        for (i, provider) in list.into_iter().enumerate() {
            by_version
                .entry(provider.version.clone())
                .or_default()
                .push(i);
            let entry = match old.remove(&provider.id) {
                Some(mut e) => {
                    e.provider = provider;
                    e
                }
                None => Entry {
                    provider,
                    group: 0,
                    ewma: PeakEwma::new(self.config.default_rtt, now),
                    in_flight: 0,
                    consecutive_failures: 0,
                    ejections: 0,
                    ejected_until: None,
                    probation: false,
                },
            };
            entries.push(entry);
        }
        self.entries = entries;
        self.groups = by_version
            .into_iter()
            .enumerate()
            .map(|(g, (version, members))| {
                let mut total = 0u64;
                let mut cumulative = Vec::with_capacity(members.len());
                for &m in &members {
                    if let Some(e) = self.entries.get_mut(m) {
                        e.group = g;
                        total = total.saturating_add(u64::from(e.provider.weight));
                    }
                    cumulative.push(total);
                }
                Group {
                    version,
                    members,
                    cumulative,
                    total,
                    ejected: 0,
                }
            })
            .collect();
        self.index = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.provider.id, i))
            .collect();
        self.recount_ejected(now);
        self.entries.len()
    }

    /// Ends the ejections whose cooldown is over and recounts the ejected providers.
    fn recount_ejected(&mut self, now: Instant) {
        self.ejected = 0;
        self.next_return = None;
        for g in &mut self.groups {
            g.ejected = 0;
        }
        for e in &mut self.entries {
            match e.ejected_until {
                Some(until) if until <= now => {
                    e.ejected_until = None;
                    e.probation = true;
                }
                Some(until) => {
                    self.ejected += 1;
                    if let Some(g) = self.groups.get_mut(e.group) {
                        g.ejected += 1;
                    }
                    self.next_return = Some(self.next_return.map_or(until, |t| t.min(until)));
                }
                None => {}
            }
        }
    }

    fn expire_ejections(&mut self, now: Instant) {
        if self.next_return.is_some_and(|t| t <= now) {
            self.recount_ejected(now);
        }
    }

    /// Starts a call: counts it in the retry budget and returns its failover state.
    pub fn begin_call(&mut self, now: Instant) -> Call {
        self.budget.deposit(now);
        Call::default()
    }

    /// Retries the retry budget allows at `now`.
    pub fn retries_available(&self, now: Instant) -> u64 {
        self.budget.available(now)
    }

    /// What the balancer knows about provider `id`, read at `now`.
    pub fn provider_status(&self, id: &NodeId, now: Instant) -> Option<ProviderStatus> {
        let e = self.entries.get(*self.index.get(id)?)?;
        let ns = e.ewma.read_ns(now, self.config.decay);
        Some(ProviderStatus {
            latency: Duration::from_nanos(ns as u64),
            in_flight: e.in_flight,
            consecutive_failures: e.consecutive_failures,
            ejections: e.ejections,
            ejected_until: e.ejected_until.filter(|t| *t > now),
        })
    }

    fn passes(e: &Entry, i: usize, stage: Stage, tried: &[usize]) -> bool {
        let ejected = e.ejected_until.is_some();
        match stage {
            Stage::Fresh => !ejected && !tried.contains(&i),
            Stage::Healthy => !ejected,
            Stage::PanicFresh => !tried.contains(&i),
            Stage::Panic => true,
        }
    }

    /// `true` if group `g` has a member usable at `stage`.
    fn group_usable(&self, g: usize, stage: Stage, tried: &[usize]) -> bool {
        let Some(group) = self.groups.get(g) else {
            return false;
        };
        let n = group.members.len();
        let tried_in = |healthy_only: bool| {
            tried
                .iter()
                .filter_map(|&i| self.entries.get(i))
                .filter(|e| e.group == g && (!healthy_only || e.ejected_until.is_none()))
                .count()
        };
        match stage {
            Stage::Fresh => n > group.ejected + tried_in(true),
            Stage::Healthy => n > group.ejected,
            Stage::PanicFresh => n > tried_in(false),
            Stage::Panic => n > 0,
        }
    }

    /// Draws a usable member of group `g` by weight (weight-0 members only if every usable
    /// member has weight 0), excluding entry `exclude`.
    fn sample(
        &mut self,
        g: usize,
        stage: Stage,
        tried: &[usize],
        exclude: Option<usize>,
    ) -> Option<usize> {
        let group = self.groups.get(g)?;
        let ok = |i: usize| {
            Some(i) != exclude
                && self
                    .entries
                    .get(i)
                    .is_some_and(|e| Self::passes(e, i, stage, tried))
        };
        // Fast path: rejection sampling, O(log n) per draw.
        for _ in 0..REJECTION_TRIES {
            let slot = if group.total > 0 {
                let r = self.rng.u64(0..group.total);
                group.cumulative.partition_point(|&c| c <= r)
            } else {
                self.rng.usize(0..group.members.len().max(1))
            };
            if let Some(&i) = group.members.get(slot)
                && ok(i)
            {
                return Some(i);
            }
        }
        // Slow path: exact draw among the usable members. Weight-0 members are candidates only
        // if no usable member (the excluded one included) has a positive weight.
        let weight = |i: usize| {
            self.entries
                .get(i)
                .map_or(0, |e| u64::from(e.provider.weight))
        };
        let usable = |i: usize| {
            self.entries
                .get(i)
                .is_some_and(|e| Self::passes(e, i, stage, tried))
        };
        let any_positive = group.members.iter().any(|&i| usable(i) && weight(i) > 0);
        let candidates: Vec<usize> = group
            .members
            .iter()
            .copied()
            .filter(|&i| usable(i) && Some(i) != exclude && (!any_positive || weight(i) > 0))
            .collect();
        if !any_positive {
            return candidates
                .get(self.rng.usize(0..candidates.len().max(1)))
                .copied();
        }
        let total: u64 = candidates.iter().map(|&i| weight(i)).sum();
        if total == 0 {
            return None;
        }
        let mut r = self.rng.u64(0..total);
        for &i in &candidates {
            let w = weight(i);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }

    /// Chooses a version group usable at `stage`, by weight.
    fn choose_group(&mut self, scope: &[usize], stage: Stage, tried: &[usize]) -> Option<usize> {
        let usable: Vec<usize> = scope
            .iter()
            .copied()
            .filter(|&g| self.group_usable(g, stage, tried))
            .collect();
        let total: u64 = usable
            .iter()
            .filter_map(|&g| self.groups.get(g))
            .map(|g| g.total)
            .sum();
        // Versions of total weight 0 count only if no version has weight: then each provider
        // counts as one.
        let weight = |g: &Group| {
            if total > 0 {
                g.total
            } else {
                g.members.len() as u64
            }
        };
        let all: u64 = usable
            .iter()
            .filter_map(|&g| self.groups.get(g))
            .map(weight)
            .sum();
        if all == 0 {
            return None;
        }
        let mut r = self.rng.u64(0..all);
        for &g in &usable {
            let w = self.groups.get(g).map_or(0, weight);
            if r < w {
                return Some(g);
            }
            r -= w;
        }
        None
    }

    fn cost(&self, i: usize, now: Instant) -> f64 {
        self.entries.get(i).map_or(f64::INFINITY, |e| {
            e.ewma.read_ns(now, self.config.decay) * (f64::from(e.in_flight) + 1.0)
        })
    }

    /// Chooses the provider for the next attempt of `call`.
    ///
    /// The first attempt is free; every later one needs a token from the retry budget and the
    /// call must have attempts left. The chosen provider counts as in flight until its outcome
    /// is reported.
    pub fn pick(&mut self, call: &mut Call, now: Instant) -> Result<Pick, Error> {
        self.expire_ejections(now);
        if self.entries.is_empty() {
            return Err(Error::NoProviders {
                service: self.service.clone(),
            });
        }
        if call.attempts >= self.config.max_attempts {
            return Err(Error::AttemptsExhausted {
                service: self.service.clone(),
                attempts: call.attempts,
            });
        }
        // Canary split (paper §7 lets new versions be deployed "progressively"; we make the
        // share explicit): the scope is the pinned version, or every version by weight.
        let scope: Vec<usize> = match &self.pinned {
            None => (0..self.groups.len()).collect(),
            Some(v) => match self.groups.iter().position(|g| &g.version == v) {
                Some(g) => vec![g],
                None => return Err(self.version_unavailable(v)),
            },
        };
        let mut tried: Vec<usize> = call
            .tried
            .iter()
            .chain(&call.avoided)
            .filter_map(|id| self.index.get(id).copied())
            .collect();
        tried.sort_unstable();
        tried.dedup();

        // paper §7: "in case of failing nodes the requester can select another node from the
        // list"; strengthened: untried healthy providers first, ejected ones only in panic mode.
        let stages: &[Stage] = if self.config.ejection.panic_mode {
            &[
                Stage::Fresh,
                Stage::Healthy,
                Stage::PanicFresh,
                Stage::Panic,
            ]
        } else {
            &[Stage::Fresh, Stage::Healthy]
        };
        let mut chosen = None;
        for &stage in stages {
            if let Some(g) = self.choose_group(&scope, stage, &tried) {
                chosen = self.choose_in_group(g, stage, &tried, now);
                if chosen.is_some() {
                    break;
                }
            }
        }
        let Some(i) = chosen else {
            return Err(self.all_ejected(&scope, now));
        };

        if call.attempts > 0 && !self.budget.try_withdraw(now) {
            return Err(Error::RetryBudgetExhausted {
                service: self.service.clone(),
                percent: self.config.retry_budget.retry_percent,
                min_per_sec: self.config.retry_budget.min_retries_per_sec,
            });
        }
        let e = self.entries.get_mut(i).ok_or_else(|| Error::NoProviders {
            service: self.service.clone(),
        })?;
        e.in_flight = e.in_flight.saturating_add(1);
        call.attempts += 1;
        if !call.tried.contains(&e.provider.id) {
            call.tried.push(e.provider.id);
        }
        Ok(Pick {
            id: e.provider.id,
            addr: e.provider.addr,
            attempt: call.attempts,
        })
    }

    fn choose_in_group(
        &mut self,
        g: usize,
        stage: Stage,
        tried: &[usize],
        now: Instant,
    ) -> Option<usize> {
        let a = self.sample(g, stage, tried, None)?;
        match self.config.policy {
            // paper §7: "Nodes select randomly over the returned list the node to communicate".
            Policy::Random => Some(a),
            Policy::P2cEwma => match self.sample(g, stage, tried, Some(a)) {
                None => Some(a),
                Some(b) => Some(if self.cost(b, now) < self.cost(a, now) {
                    b
                } else {
                    a
                }),
            },
        }
    }

    fn version_unavailable(&self, version: &str) -> Error {
        const SHOWN: usize = 8;
        let mut available: Vec<String> = self
            .groups
            .iter()
            .take(SHOWN)
            .map(|g| format!("'{}'", g.version))
            .collect();
        if self.groups.len() > SHOWN {
            available.push(format!("and {} more", self.groups.len() - SHOWN));
        }
        Error::VersionUnavailable {
            service: self.service.clone(),
            version: version.to_owned(),
            available: available.join(", "),
        }
    }

    fn all_ejected(&self, scope: &[usize], now: Instant) -> Error {
        let members = scope
            .iter()
            .filter_map(|&g| self.groups.get(g))
            .flat_map(|g| g.members.iter())
            .filter_map(|&i| self.entries.get(i));
        let mut count = 0;
        let mut first: Option<Instant> = None;
        for e in members {
            count += 1;
            if let Some(t) = e.ejected_until {
                first = Some(first.map_or(t, |f| f.min(t)));
            }
        }
        Error::AllEjected {
            service: self.service.clone(),
            count,
            retry_in: first.map_or(Duration::ZERO, |t| t.saturating_duration_since(now)),
        }
    }

    fn entry_mut(&mut self, id: &NodeId) -> Option<&mut Entry> {
        let i = *self.index.get(id)?;
        self.entries.get_mut(i)
    }

    /// Reports that the call to `provider` succeeded after `latency`.
    pub fn on_success(&mut self, provider: &NodeId, latency: Duration, now: Instant) {
        self.expire_ejections(now);
        let decay = self.config.decay;
        if let Some(e) = self.entry_mut(provider) {
            e.in_flight = e.in_flight.saturating_sub(1);
            e.ewma.observe(latency, now, decay);
            e.consecutive_failures = 0;
            e.ejections = 0;
            e.probation = false;
        }
    }

    /// Reports that the call to `provider` failed (error or timeout). It counts as a
    /// `failure_penalty` latency sample and towards ejection.
    pub fn on_failure(&mut self, provider: &NodeId, now: Instant) {
        self.expire_ejections(now);
        let (decay, penalty) = (self.config.decay, self.config.failure_penalty);
        let threshold = self.config.ejection.consecutive_failures;
        let Some(&i) = self.index.get(provider) else {
            return;
        };
        let Some(e) = self.entries.get_mut(i) else {
            return;
        };
        e.in_flight = e.in_flight.saturating_sub(1);
        e.ewma.observe(penalty, now, decay);
        e.consecutive_failures = e.consecutive_failures.saturating_add(1);
        let due = threshold > 0
            && e.ejected_until.is_none()
            && (e.probation || e.consecutive_failures >= threshold);
        if due {
            self.eject(i, now);
        }
    }

    /// Reports that a pick was abandoned without an outcome (the call was cancelled).
    pub fn on_cancel(&mut self, provider: &NodeId) {
        if let Some(e) = self.entry_mut(provider) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }

    fn eject(&mut self, i: usize, now: Instant) {
        let cfg = &self.config.ejection;
        let pct = usize::try_from(cfg.max_ejected_percent).unwrap_or(100);
        let allowed = if pct == 0 {
            0
        } else {
            (self.entries.len() * pct / 100).max(1)
        };
        if self.ejected >= allowed {
            return;
        }
        let Some(e) = self.entries.get_mut(i) else {
            return;
        };
        e.ejections = e.ejections.saturating_add(1);
        let doublings = e.ejections.saturating_sub(1).min(31);
        let cooldown = cfg
            .base_cooldown
            .checked_mul(1u32 << doublings)
            .map_or(cfg.max_cooldown, |c| c.min(cfg.max_cooldown));
        let Some(until) = now.checked_add(cooldown) else {
            return;
        };
        e.ejected_until = Some(until);
        e.consecutive_failures = 0;
        e.probation = false;
        self.ejected += 1;
        if let Some(g) = self.groups.get_mut(e.group) {
            g.ejected += 1;
        }
        self.next_return = Some(self.next_return.map_or(until, |t| t.min(until)));
    }
}
