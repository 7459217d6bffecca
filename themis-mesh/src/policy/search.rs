//! The replica search behind `discover(service)` (driven by `node::lookup`): a name is stored under `k + 1` object ids
//! `h(name ‖ r)`, `r = 0..=k` (paper §6.1); the search asks their responsible nodes, falls back
//! to sibling replicas when one is dead (paper §7: "initiate a find operation for a sibling
//! object, until a node with a healthy state is found") and merges what they return.

use std::time::Instant;

use super::provider::{ProviderRecord, merge_records, merge_split};
use crate::Error;

/// Replica search settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SearchConfig {
    /// Replicas asked at once (default 2; at least 1).
    pub parallelism: u32,
    /// The search stops once this many replicas returned at least one record (default 2). More
    /// than one answer is merged so that a replica that dropped or has not yet received a record
    /// (§6.2 storage attacks, re-store lag) does not hide a provider.
    pub enough_answers: u32,
    /// Records kept in total before merging (default 4096; extra records are dropped).
    pub max_records: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            parallelism: 2,
            enough_answers: 2,
            max_records: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Asked,
    Done,
}

/// The state of one discovery over a name's replicas (sans-I/O: the caller sends the finds).
///
/// Loop: [`ReplicaSearch::next_query`] gives a replica index `r` to look up (object id
/// `h(name ‖ r)`); report each outcome with [`ReplicaSearch::on_answer`] (records already
/// verified) or [`ReplicaSearch::on_failure`] (responsible node dead or unreachable: the next
/// sibling is asked instead); when [`ReplicaSearch::is_finished`], call
/// [`ReplicaSearch::finish`].
#[derive(Debug, Clone)]
pub struct ReplicaSearch {
    service: String,
    config: SearchConfig,
    /// Replica indices in the order they will be asked.
    order: Vec<u8>,
    /// State per replica index.
    state: Vec<State>,
    next: usize,
    asked: u32,
    useful_answers: u32,
    records: Vec<ProviderRecord>,
}

impl ReplicaSearch {
    /// A search of `service` stored with redundancy `k` (`k + 1` replicas). The replicas are
    /// asked starting at `start % (k + 1)` and then in increasing order (pass a random `start`
    /// to spread readers over the replicas).
    pub fn new(
        service: impl Into<String>,
        k: u8,
        start: u32,
        config: SearchConfig,
    ) -> Result<Self, Error> {
        if config.parallelism == 0 || config.enough_answers == 0 || config.max_records == 0 {
            return Err(Error::InvalidConfig {
                what: "replica search",
                reason: "parallelism, enough_answers and max_records must be at least 1",
            });
        }
        let n = usize::from(k) + 1;
        let first = usize::try_from(start).unwrap_or(0) % n;
        let order = (0..n)
            .map(|i| u8::try_from((first + i) % n).unwrap_or(0))
            .collect();
        Ok(Self {
            service: service.into(),
            config,
            order,
            state: vec![State::Waiting; n],
            next: 0,
            asked: 0,
            useful_answers: 0,
            records: Vec::new(),
        })
    }

    /// Number of replicas (`k + 1`).
    pub fn replicas(&self) -> u32 {
        u32::try_from(self.state.len()).unwrap_or(u32::MAX)
    }

    fn outstanding(&self) -> usize {
        self.state.iter().filter(|s| **s == State::Asked).count()
    }

    /// The next replica index to look up, if the search wants one now.
    pub fn next_query(&mut self) -> Option<u8> {
        if self.useful_answers >= self.config.enough_answers
            || self.outstanding() >= usize::try_from(self.config.parallelism).unwrap_or(usize::MAX)
        {
            return None;
        }
        let r = *self.order.get(self.next)?;
        self.next += 1;
        self.asked += 1;
        if let Some(s) = self.state.get_mut(usize::from(r)) {
            *s = State::Asked;
        }
        Some(r)
    }

    /// Marks replica `r` done; `false` if it was not being asked (stray or repeated answer).
    fn complete(&mut self, r: u8) -> bool {
        match self.state.get_mut(usize::from(r)) {
            Some(s) if *s == State::Asked => {
                *s = State::Done;
                true
            }
            _ => false,
        }
    }

    /// Replica `r` answered with these (verified) records, tombstones included
    /// ([`ProviderRecord::withdrawn`]: an answer with only tombstones is a useful one, it says
    /// who withdrew). Stray answers are ignored.
    pub fn on_answer(&mut self, r: u8, records: Vec<ProviderRecord>) {
        if !self.complete(r) {
            return;
        }
        if !records.is_empty() {
            self.useful_answers += 1;
        }
        let room = self.config.max_records.saturating_sub(self.records.len());
        self.records.extend(records.into_iter().take(room));
    }

    /// Replica `r`'s responsible node is dead or unreachable: a sibling will be asked instead.
    pub fn on_failure(&mut self, r: u8) {
        self.complete(r);
    }

    /// `true` when nothing more will be asked and no answer is awaited.
    pub fn is_finished(&self) -> bool {
        let exhausted = self.next >= self.order.len();
        let enough = self.useful_answers >= self.config.enough_answers;
        self.outstanding() == 0 && (exhausted || enough)
    }

    /// The merged, unexpired records ([`crate::merge_records`]) and the providers dropped
    /// because their newest record is a tombstone (they withdrew the service).
    pub(crate) fn finish_split(
        self,
        now: Instant,
    ) -> (Vec<ProviderRecord>, Vec<themis_crypto::NodeId>) {
        merge_split(self.records, now, self.config.max_records)
    }

    /// The merged, unexpired records ([`crate::merge_records`]), or [`Error::NotFound`] naming
    /// how many replicas were searched. Answers still awaited are not waited for.
    pub fn finish(self, now: Instant) -> Result<Vec<ProviderRecord>, Error> {
        let merged = merge_records(self.records, now, self.config.max_records);
        if merged.is_empty() {
            return Err(Error::NotFound {
                service: self.service,
                replicas: self.asked,
            });
        }
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Provider;
    use std::net::SocketAddr;
    use std::time::Duration;
    use themis_crypto::NodeId;

    fn rec(b: u8, seq: u64, now: Instant) -> ProviderRecord {
        let addr = SocketAddr::from(([10, 0, 0, b], 7000));
        let p = Provider::new(NodeId::from_bytes([b; 32]), addr, "v", 1);
        ProviderRecord::new(p, seq, now + Duration::from_secs(60))
    }

    #[test]
    fn falls_back_to_siblings_and_merges_two_answers() {
        let now = Instant::now();
        let mut s = ReplicaSearch::new("check", 2, 1, SearchConfig::default()).unwrap();
        assert_eq!(s.next_query(), Some(1));
        assert_eq!(s.next_query(), Some(2));
        assert_eq!(s.next_query(), None); // parallelism 2
        s.on_failure(1); // dead responsible node
        assert_eq!(s.next_query(), Some(0)); // the sibling
        s.on_answer(2, vec![rec(7, 1, now)]);
        assert!(!s.is_finished());
        s.on_answer(0, vec![rec(7, 2, now), rec(8, 1, now)]);
        assert!(s.is_finished());
        let merged = s.finish(now).unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].sequence, 2);
    }

    /// Issue 11: one replica answers first and hides a provider (stale, or poisoned: it
    /// dropped the record), another still holds a record its provider has withdrawn. Asking
    /// every replica and merging finds the hidden provider and honours the withdrawal.
    #[test]
    fn every_replica_asked_one_poisoned_replica_hides_nothing() {
        let now = Instant::now();
        let cfg = SearchConfig {
            parallelism: 3,
            enough_answers: 3,
            ..SearchConfig::default()
        };
        let mut s = ReplicaSearch::new("check", 2, 0, cfg).unwrap();
        let asked: Vec<u8> = std::iter::from_fn(|| s.next_query()).collect();
        assert_eq!(asked, [0, 1, 2], "all replicas at once");
        let gone = |b, seq| {
            let p = Provider::new(
                NodeId::from_bytes([b; 32]),
                SocketAddr::from(([10, 0, 0, b], 7000)),
                "v",
                1,
            );
            ProviderRecord::withdrawal(p, seq, now + Duration::from_secs(60))
        };
        // replica 0 (poisoned): only provider 1, and provider 9's old record
        s.on_answer(0, vec![rec(1, 1, now), rec(9, 1, now)]);
        assert!(!s.is_finished(), "one answer is not enough");
        s.on_answer(2, vec![rec(1, 1, now), rec(2, 1, now), gone(9, 2)]);
        s.on_answer(1, vec![rec(2, 1, now), gone(9, 2)]);
        assert!(s.is_finished());
        let ids: Vec<NodeId> = s
            .finish(now)
            .unwrap()
            .iter()
            .map(|r| r.provider.id)
            .collect();
        assert_eq!(
            ids,
            [NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32])]
        );
    }

    #[test]
    fn not_found_after_all_replicas() {
        let now = Instant::now();
        let mut s = ReplicaSearch::new("check", 2, 0, SearchConfig::default()).unwrap();
        while let Some(r) = s.next_query() {
            if r == 1 {
                s.on_failure(r);
            } else {
                s.on_answer(r, vec![]);
            }
        }
        assert!(s.is_finished());
        let err = s.finish(now).unwrap_err();
        assert!(
            matches!(&err, Error::NotFound { service, replicas: 3 } if service == "check"),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("no provider found for 'check' after searching its 3 replicas")
        );
    }

    #[test]
    fn stray_and_repeated_answers_are_ignored() {
        let now = Instant::now();
        let cfg = SearchConfig {
            enough_answers: 1,
            ..SearchConfig::default()
        };
        let mut s = ReplicaSearch::new("x", 0, 0, cfg).unwrap();
        s.on_answer(0, vec![rec(1, 1, now)]); // not asked yet
        assert_eq!(s.next_query(), Some(0));
        s.on_answer(200, vec![rec(2, 1, now)]);
        s.on_answer(0, vec![rec(3, 1, now)]);
        s.on_answer(0, vec![rec(4, 1, now)]);
        assert!(s.is_finished());
        let merged = s.finish(now).unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].provider.id, NodeId::from_bytes([3; 32]));
    }
}
