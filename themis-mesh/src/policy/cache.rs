//! Discovery cache: a bounded LRU of service name → provider records, with a TTL, and negative
//! caching of "no provider" for a shorter time.

use std::time::{Duration, Instant};

use hashlink::LruCache;

use super::provider::ProviderRecord;
use crate::Error;

/// Discovery cache settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Services cached at most; the least recently used is evicted first (default 1024).
    pub capacity: usize,
    /// How long a discovery result is served (default 5 s).
    pub ttl: Duration,
    /// How long "no provider" is served (default 1 s).
    pub negative_ttl: Duration,
    /// Records kept per service (default 1024; extra records are dropped, in the order given).
    pub max_records: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            ttl: Duration::from_secs(5),
            negative_ttl: Duration::from_secs(1),
            max_records: 1024,
        }
    }
}

/// Largest [`CacheConfig::capacity`] accepted.
const MAX_CAPACITY: usize = 1 << 20;

/// The answer of [`DiscoveryCache::get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLookup<'a> {
    /// Fresh records (none of them expired).
    Providers(&'a [ProviderRecord]),
    /// A recent discovery found no provider: do not search again yet.
    NoProvider,
    /// Nothing fresh is cached: run discovery.
    Miss,
}

#[derive(Debug)]
struct Slot {
    /// Empty for a negative entry.
    records: Vec<ProviderRecord>,
    fresh_until: Instant,
}

/// A bounded LRU cache of discovery results (the LRU order is `hashlink`'s).
#[derive(Debug)]
pub struct DiscoveryCache {
    config: CacheConfig,
    slots: LruCache<String, Slot>,
}

impl DiscoveryCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Result<Self, Error> {
        if config.capacity == 0 || config.capacity > MAX_CAPACITY {
            return Err(Error::InvalidConfig {
                what: "discovery cache",
                reason: "capacity must be between 1 and 1048576",
            });
        }
        if config.max_records == 0 {
            return Err(Error::InvalidConfig {
                what: "discovery cache",
                reason: "max_records must be at least 1",
            });
        }
        Ok(Self {
            slots: LruCache::new(config.capacity),
            config,
        })
    }

    /// Services cached (fresh or not yet noticed stale).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// `true` if nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Looks `service` up at `now`. Expired records are dropped; a result past its TTL, or all of
    /// whose records expired, is removed and reported as a [`CacheLookup::Miss`]. A hit makes the
    /// entry the most recently used.
    pub fn get(&mut self, service: &str, now: Instant) -> CacheLookup<'_> {
        let stale = match self.slots.peek_mut(service) {
            None => return CacheLookup::Miss,
            Some(slot) => {
                let negative = slot.records.is_empty();
                slot.records.retain(|r| r.expires_at > now);
                now >= slot.fresh_until || (!negative && slot.records.is_empty())
            }
        };
        if stale {
            self.invalidate(service);
            return CacheLookup::Miss;
        }
        match self.slots.get(service) {
            None => CacheLookup::Miss,
            Some(slot) if slot.records.is_empty() => CacheLookup::NoProvider,
            Some(slot) => CacheLookup::Providers(&slot.records),
        }
    }

    /// Caches a discovery result for `service` fetched at `now` (an empty result is cached as
    /// "no provider" for the shorter `negative_ttl`). Evicts the least recently used entry when
    /// full.
    pub fn insert(&mut self, service: &str, mut records: Vec<ProviderRecord>, now: Instant) {
        records.retain(|r| r.expires_at > now);
        records.truncate(self.config.max_records);
        let ttl = if records.is_empty() {
            self.config.negative_ttl
        } else {
            self.config.ttl
        };
        let Some(fresh_until) = now.checked_add(ttl) else {
            return;
        };
        // A replaced entry becomes the most recently used, like a new one.
        self.invalidate(service);
        self.slots.insert(
            service.to_owned(),
            Slot {
                records,
                fresh_until,
            },
        );
    }

    /// Forgets `service` (for example after every cached provider failed). Returns whether it
    /// was cached.
    pub fn invalidate(&mut self, service: &str) -> bool {
        self.slots.remove(service).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Provider;
    use std::net::SocketAddr;
    use themis_crypto::NodeId;

    fn rec(b: u8, exp: Instant) -> ProviderRecord {
        let addr = SocketAddr::from(([10, 0, 0, b], 7000));
        ProviderRecord::new(
            Provider::new(NodeId::from_bytes([b; 32]), addr, "v1", 1),
            1,
            exp,
        )
    }

    #[test]
    fn ttl_and_negative_ttl() {
        let t0 = Instant::now();
        let mut c = DiscoveryCache::new(CacheConfig::default()).unwrap();
        let far = t0 + Duration::from_secs(600);
        c.insert("a", vec![rec(1, far)], t0);
        c.insert("b", vec![], t0);
        assert!(
            matches!(c.get("a", t0 + Duration::from_millis(4999)), CacheLookup::Providers(r) if r.len() == 1)
        );
        assert_eq!(
            c.get("b", t0 + Duration::from_millis(999)),
            CacheLookup::NoProvider
        );
        assert_eq!(c.get("b", t0 + Duration::from_secs(1)), CacheLookup::Miss);
        assert_eq!(c.get("a", t0 + Duration::from_secs(5)), CacheLookup::Miss);
        assert!(c.is_empty());
    }

    #[test]
    fn expired_records_are_dropped() {
        let t0 = Instant::now();
        let mut c = DiscoveryCache::new(CacheConfig::default()).unwrap();
        c.insert(
            "a",
            vec![
                rec(1, t0 + Duration::from_secs(1)),
                rec(2, t0 + Duration::from_secs(3)),
            ],
            t0,
        );
        assert!(
            matches!(c.get("a", t0 + Duration::from_secs(2)), CacheLookup::Providers(r) if r.len() == 1 && r[0].provider.id == NodeId::from_bytes([2; 32]))
        );
        // Once every record expired, the entry is a miss, not "no provider".
        assert_eq!(c.get("a", t0 + Duration::from_secs(3)), CacheLookup::Miss);
    }

    #[test]
    fn lru_eviction() {
        let t0 = Instant::now();
        let cfg = CacheConfig {
            capacity: 2,
            ..CacheConfig::default()
        };
        let mut c = DiscoveryCache::new(cfg).unwrap();
        let far = t0 + Duration::from_secs(600);
        c.insert("a", vec![rec(1, far)], t0);
        c.insert("b", vec![rec(2, far)], t0);
        // Touch "a": "b" becomes the least recently used.
        assert!(matches!(c.get("a", t0), CacheLookup::Providers(_)));
        c.insert("c", vec![rec(3, far)], t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("b", t0), CacheLookup::Miss);
        assert!(matches!(c.get("a", t0), CacheLookup::Providers(_)));
        assert!(matches!(c.get("c", t0), CacheLookup::Providers(_)));
        // Re-inserting an existing name does not evict anything.
        c.insert("c", vec![rec(4, far)], t0);
        assert_eq!(c.len(), 2);
        assert!(c.invalidate("a"));
        assert!(!c.invalidate("a"));
    }

    #[test]
    fn records_per_service_bounded() {
        let t0 = Instant::now();
        let cfg = CacheConfig {
            max_records: 3,
            ..CacheConfig::default()
        };
        let mut c = DiscoveryCache::new(cfg).unwrap();
        let far = t0 + Duration::from_secs(600);
        c.insert("a", (1..=10).map(|b| rec(b, far)).collect(), t0);
        assert!(matches!(c.get("a", t0), CacheLookup::Providers(r) if r.len() == 3));
    }
}
