//! Provider entries and the merge of provider records gathered from several replicas.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::net::SocketAddr;
use std::time::Instant;

use themis_crypto::NodeId;

/// Weight a provider gets when it announces none.
pub const DEFAULT_WEIGHT: u32 = 100;

/// One provider of a service, as the balancer sees it.
///
/// `version` and `weight` drive the canary split: a provider's share of traffic is its weight
/// divided by the sum of the weights of the providers in scope (see [`crate::Balancer`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Provider {
    /// The provider's self-certifying node id (the stable key of all per-provider state).
    pub id: NodeId,
    /// Where to reach it.
    pub addr: SocketAddr,
    /// The version it announces (any string; the empty string is a version like any other).
    pub version: String,
    /// Its relative weight; 0 means standby (used only when no positive-weight provider of its
    /// version can be used).
    pub weight: u32,
    /// Free-form tags from its record (carried, not interpreted by the policies).
    pub tags: Vec<String>,
}

impl Provider {
    /// A provider of `version` with `weight` and no tags.
    pub fn new(id: NodeId, addr: SocketAddr, version: impl Into<String>, weight: u32) -> Self {
        Self {
            id,
            addr,
            version: version.into(),
            weight,
            tags: Vec::new(),
        }
    }

    /// The same provider with `tags`.
    #[must_use]
    pub fn with_tags(mut self, tags: Vec<String>) -> Self {
        self.tags = tags;
        self
    }
}

/// A provider record as discovery returns it: the provider plus the freshness data of its
/// (already verified) signed DHT record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderRecord {
    /// The provider the record describes.
    pub provider: Provider,
    /// The record's sequence number: a newer record of the same provider replaces an older one.
    pub sequence: u64,
    /// When the record stops being valid (the caller converts the record's expiry to its clock).
    pub expires_at: Instant,
    /// The old node id this provider succeeds (key rotation: the record carries a statement in
    /// force, PROTOCOL.md §2.9 and §6.4), so that discovery maps the old id to this one.
    pub succeeds: Option<NodeId>,
    /// A tombstone: the provider withdrew the service with this sequence number
    /// (PROTOCOL.md §6.4). [`merge_records`] drops a provider whose newest record is one.
    pub withdrawn: bool,
}

impl ProviderRecord {
    /// Wraps a provider with its record's sequence number and expiry.
    pub fn new(provider: Provider, sequence: u64, expires_at: Instant) -> Self {
        Self {
            provider,
            sequence,
            expires_at,
            succeeds: None,
            withdrawn: false,
        }
    }

    /// The tombstone of `provider` with sequence number `sequence`: it withdraws every record
    /// of the provider with a lower one.
    pub fn withdrawal(provider: Provider, sequence: u64, expires_at: Instant) -> Self {
        Self {
            provider,
            sequence,
            expires_at,
            withdrawn: true,
            succeeds: None,
        }
    }

    /// `true` if the record must be preferred over `other` (same provider): higher sequence
    /// number, then a tombstone over a record, then later expiry, then a fixed total order of
    /// the contents so that the result does not depend on the order in which replicas
    /// answered.
    fn supersedes(&self, other: &Self) -> bool {
        let key = |r: &Self| {
            (
                r.sequence,
                r.withdrawn,
                r.expires_at,
                r.provider.addr,
                r.provider.version.clone(),
                r.provider.weight,
                r.provider.tags.clone(),
            )
        };
        key(self) > key(other)
    }
}

/// Merges the provider records returned by several replicas of one name (paper §6.1: a name is
/// stored under `k + 1` object ids).
///
/// Records that expired (`expires_at <= now`) are dropped; records of the same provider are
/// deduplicated keeping the highest sequence number (ties: a tombstone, then later expiry, then
/// a fixed order of the contents, so the answer never depends on which replica answered first).
/// A provider whose winning record is a tombstone is dropped: it withdrew the service, and a
/// replica that still holds its older record (stale, or hiding the withdrawal) cannot bring it
/// back. The result holds no tombstone, is in node-id order and holds at most `max` records
/// (the first `max` in that order).
pub fn merge_records<I>(records: I, now: Instant, max: usize) -> Vec<ProviderRecord>
where
    I: IntoIterator<Item = ProviderRecord>,
{
    merge_split(records, now, max).0
}

/// [`merge_records`], and the providers it dropped because their newest record is a
/// tombstone (in node-id order).
pub(crate) fn merge_split<I>(
    records: I,
    now: Instant,
    max: usize,
) -> (Vec<ProviderRecord>, Vec<NodeId>)
where
    I: IntoIterator<Item = ProviderRecord>,
{
    let mut by_id: BTreeMap<NodeId, ProviderRecord> = BTreeMap::new();
    for record in records {
        if record.expires_at <= now {
            continue;
        }
        match by_id.entry(record.provider.id) {
            Entry::Vacant(slot) => {
                slot.insert(record);
            }
            Entry::Occupied(mut slot) => {
                if record.supersedes(slot.get()) {
                    slot.insert(record);
                }
            }
        }
    }
    let (gone, live): (Vec<ProviderRecord>, Vec<ProviderRecord>) =
        by_id.into_values().partition(|r| r.withdrawn);
    (
        live.into_iter().take(max).collect(),
        gone.into_iter().map(|r| r.provider.id).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    fn rec(b: u8, seq: u64, exp: Instant, version: &str) -> ProviderRecord {
        let addr = SocketAddr::from(([127, 0, 0, 1], 4000 + u16::from(b)));
        ProviderRecord::new(Provider::new(id(b), addr, version, 100), seq, exp)
    }

    #[test]
    fn keeps_highest_sequence_and_drops_expired() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let merged = merge_records(
            vec![
                rec(1, 1, later, "v1"),
                rec(2, 5, now, "v1"), // expired exactly now
                rec(1, 3, later, "v3"),
                rec(1, 2, later, "v2"),
                rec(3, 0, later, "v1"),
            ],
            now,
            10,
        );
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].provider.id, id(1));
        assert_eq!(merged[0].sequence, 3);
        assert_eq!(merged[0].provider.version, "v3");
        assert_eq!(merged[1].provider.id, id(3));
    }

    #[test]
    fn order_of_answers_does_not_matter() {
        let now = Instant::now();
        let exp = now + Duration::from_secs(5);
        let a = rec(7, 4, exp, "a");
        let b = rec(7, 4, exp, "b");
        let ab = merge_records(vec![a.clone(), b.clone()], now, 10);
        let ba = merge_records(vec![b, a], now, 10);
        assert_eq!(ab, ba);
    }

    #[test]
    fn a_newer_tombstone_withdraws_the_provider_an_older_one_does_not() {
        let now = Instant::now();
        let exp = now + Duration::from_secs(5);
        let p = |b| Provider::new(id(b), SocketAddr::from(([127, 0, 0, 1], 9)), "v", 100);
        let merged = merge_records(
            vec![
                rec(1, 4, exp, "v"),
                ProviderRecord::withdrawal(p(1), 5, exp),
                ProviderRecord::withdrawal(p(2), 3, exp),
                rec(2, 4, exp, "v"), // re-registered after its withdrawal
                rec(3, 7, exp, "v"),
                ProviderRecord::withdrawal(p(3), 7, exp), // same seq: the tombstone wins
            ],
            now,
            10,
        );
        assert_eq!(merged.len(), 1);
        assert_eq!((merged[0].provider.id, merged[0].sequence), (id(2), 4));
    }

    proptest::proptest! {
        /// Whatever replicas answer and in whatever order, a provider is in the merge exactly
        /// when its highest-sequence unexpired record is not a tombstone, with that sequence.
        #[test]
        fn merge_is_the_newest_live_record_per_provider(
            recs in proptest::collection::vec((0u8..6, 0u64..8, proptest::prelude::any::<bool>(), 0u64..3), 0..40),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let now = Instant::now();
            let all: Vec<ProviderRecord> = recs
                .iter()
                .map(|&(b, seq, dead, life)| {
                    let exp = now + Duration::from_secs(life);
                    let p = Provider::new(id(b), SocketAddr::from(([127, 0, 0, 1], 9)), "v", 100);
                    if dead {
                        ProviderRecord::withdrawal(p, seq, exp)
                    } else {
                        ProviderRecord::new(p, seq, exp)
                    }
                })
                .collect();
            let mut shuffled = all.clone();
            fastrand::Rng::with_seed(seed).shuffle(&mut shuffled);
            let merged = merge_records(all.clone(), now, 100);
            proptest::prop_assert_eq!(&merged, &merge_records(shuffled, now, 100));
            for b in 0u8..6 {
                let live: Vec<&ProviderRecord> =
                    all.iter().filter(|r| r.provider.id == id(b) && r.expires_at > now).collect();
                let top = live.iter().map(|r| r.sequence).max();
                let newest_dead = top.is_some_and(|t| {
                    live.iter().any(|r| r.sequence == t && r.withdrawn)
                });
                let got = merged.iter().find(|r| r.provider.id == id(b));
                match (top, newest_dead) {
                    (Some(t), false) => {
                        proptest::prop_assert_eq!(got.map(|r| r.sequence), Some(t));
                    }
                    _ => proptest::prop_assert!(got.is_none()),
                }
            }
            proptest::prop_assert!(merged.iter().all(|r| !r.withdrawn));
        }
    }

    #[test]
    fn bounded_output() {
        let now = Instant::now();
        let exp = now + Duration::from_secs(5);
        let merged = merge_records((0..50).map(|b| rec(b, 0, exp, "v")), now, 8);
        assert_eq!(merged.len(), 8);
        assert!(
            merged
                .windows(2)
                .all(|w| w[0].provider.id < w[1].provider.id)
        );
    }
}
