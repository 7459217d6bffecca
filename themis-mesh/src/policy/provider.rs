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
}

impl ProviderRecord {
    /// Wraps a provider with its record's sequence number and expiry.
    pub fn new(provider: Provider, sequence: u64, expires_at: Instant) -> Self {
        Self {
            provider,
            sequence,
            expires_at,
            succeeds: None,
        }
    }

    /// `true` if the record must be preferred over `other` (same provider): higher sequence
    /// number, then later expiry, then a fixed total order of the contents so that the result
    /// does not depend on the order in which replicas answered.
    fn supersedes(&self, other: &Self) -> bool {
        let key = |r: &Self| {
            (
                r.sequence,
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
/// deduplicated keeping the highest sequence number (ties: later expiry, then a fixed order of
/// the contents, so the answer never depends on which replica answered first). The result is in
/// node-id order and holds at most `max` records (the first `max` in that order).
pub fn merge_records<I>(records: I, now: Instant, max: usize) -> Vec<ProviderRecord>
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
    by_id.into_values().take(max).collect()
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
