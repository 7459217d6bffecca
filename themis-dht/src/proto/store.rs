//! The object table (paper §6.1 `OT_id`): object id → provider records, with quotas.

use std::collections::BTreeMap;

use themis_crypto::NodeId;

use super::record::{ProviderRecord, Refusal};
use super::ring::in_half_open;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Quotas {
    pub(crate) per_object: usize,
    pub(crate) per_provider: usize,
    pub(crate) total: usize,
}

#[derive(Debug, Default)]
pub(crate) struct ObjectStore {
    objects: BTreeMap<NodeId, Vec<ProviderRecord>>,
    per_provider: BTreeMap<NodeId, usize>,
    total: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    New,
    Replaced,
    Unchanged,
}

impl ObjectStore {
    pub(crate) fn len(&self) -> usize {
        self.total
    }

    /// Stores `rec` (already verified). A newer sequence number from the same provider replaces
    /// the older record; an older or conflicting equal one is `Stale`.
    pub(crate) fn insert(&mut self, rec: ProviderRecord, q: Quotas) -> Result<Inserted, Refusal> {
        let oid = rec.object_id();
        let list = self.objects.get(&oid);
        if let Some(old) = list.and_then(|l| l.iter().find(|r| r.provider == rec.provider)) {
            if rec.seq < old.seq || (rec.seq == old.seq && *old != rec) {
                return Err(Refusal::Stale);
            }
            if *old == rec {
                return Ok(Inserted::Unchanged);
            }
            if let Some(slot) = self
                .objects
                .get_mut(&oid)
                .and_then(|l| l.iter_mut().find(|r| r.provider == rec.provider))
            {
                *slot = rec;
            }
            return Ok(Inserted::Replaced);
        }
        let per_object = list.map_or(0, Vec::len);
        let per_provider = self.per_provider.get(&rec.provider).copied().unwrap_or(0);
        if per_object >= q.per_object || per_provider >= q.per_provider || self.total >= q.total {
            return Err(Refusal::OverQuota);
        }
        *self.per_provider.entry(rec.provider).or_insert(0) += 1;
        self.total += 1;
        self.objects.entry(oid).or_default().push(rec);
        Ok(Inserted::New)
    }

    /// Records stored for `oid` (paper: "the value it stores for this object").
    pub(crate) fn get(&self, oid: &NodeId) -> &[ProviderRecord] {
        self.objects.get(oid).map_or(&[], Vec::as_slice)
    }

    fn forget(&mut self, provider: &NodeId) {
        if let Some(c) = self.per_provider.get_mut(provider) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.per_provider.remove(provider);
            }
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Drops every record whose expiry is at or before `now_ms` (paper §6.1: values are dropped
    /// after the interval `t`). Returns how many were dropped.
    pub(crate) fn expire(&mut self, now_ms: u64) -> usize {
        let mut dropped = Vec::new();
        self.objects.retain(|_, list| {
            list.retain(|r| {
                let keep = r.expires_unix_ms > now_ms;
                if !keep {
                    dropped.push(r.provider);
                }
                keep
            });
            !list.is_empty()
        });
        for p in &dropped {
            self.forget(p);
        }
        dropped.len()
    }

    /// Up to `max` records whose object id is not in `(pred, me]`: they belong to a node before us.
    pub(crate) fn not_in_range(
        &self,
        pred: &NodeId,
        me: &NodeId,
        max: usize,
    ) -> Vec<ProviderRecord> {
        self.objects
            .iter()
            .filter(|(oid, _)| !in_half_open(pred, oid, me))
            .flat_map(|(_, l)| l.iter().cloned())
            .take(max)
            .collect()
    }

    /// Removes the record of `provider` under `oid` if it still has sequence number `seq`.
    pub(crate) fn remove_exact(&mut self, oid: &NodeId, provider: &NodeId, seq: u64) -> bool {
        let mut removed = false;
        if let Some(list) = self.objects.get_mut(oid) {
            let before = list.len();
            list.retain(|r| !(r.provider == *provider && r.seq == seq));
            removed = list.len() != before;
            if list.is_empty() {
                self.objects.remove(oid);
            }
        }
        if removed {
            self.forget(provider);
        }
        removed
    }

    /// Every record (for a graceful leave).
    pub(crate) fn all(&self) -> Vec<ProviderRecord> {
        self.objects
            .values()
            .flat_map(|l| l.iter().cloned())
            .collect()
    }

    /// Drops everything (after a completed leave).
    pub(crate) fn clear(&mut self) {
        self.objects.clear();
        self.per_provider.clear();
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceSpec;
    use themis_crypto::{IdentityKeypair, NetworkId};

    fn rec(seed: u8, name: &str, seq: u64, exp: u64) -> ProviderRecord {
        ProviderRecord::sign(
            &IdentityKeypair::from_seed(&[seed; 32]),
            &NetworkId::new("t").unwrap(),
            &ServiceSpec::new(name),
            "1.1.1.1:1".parse().unwrap(),
            0,
            exp,
            seq,
        )
    }

    const Q: Quotas = Quotas {
        per_object: 2,
        per_provider: 2,
        total: 3,
    };

    #[test]
    fn newer_replaces_older_is_stale() {
        let mut s = ObjectStore::default();
        assert_eq!(s.insert(rec(1, "a", 5, 10), Q), Ok(Inserted::New));
        assert_eq!(s.insert(rec(1, "a", 5, 10), Q), Ok(Inserted::Unchanged));
        assert_eq!(s.insert(rec(1, "a", 4, 10), Q), Err(Refusal::Stale));
        assert_eq!(s.insert(rec(1, "a", 5, 11), Q), Err(Refusal::Stale));
        assert_eq!(s.insert(rec(1, "a", 6, 10), Q), Ok(Inserted::Replaced));
        assert_eq!(s.len(), 1);
        assert_eq!(s.get(&crate::object_id("a", 0))[0].seq, 6);
    }

    #[test]
    fn quotas() {
        let mut s = ObjectStore::default();
        s.insert(rec(1, "a", 1, 10), Q).unwrap();
        s.insert(rec(2, "a", 1, 10), Q).unwrap();
        assert_eq!(s.insert(rec(3, "a", 1, 10), Q), Err(Refusal::OverQuota)); // per object
        s.insert(rec(1, "b", 1, 10), Q).unwrap();
        assert_eq!(s.insert(rec(4, "c", 1, 10), Q), Err(Refusal::OverQuota)); // total
        let mut s = ObjectStore::default();
        s.insert(rec(1, "a", 1, 10), Q).unwrap();
        s.insert(rec(1, "b", 1, 10), Q).unwrap();
        assert_eq!(s.insert(rec(1, "c", 1, 10), Q), Err(Refusal::OverQuota)); // per provider
    }

    #[test]
    fn expiry_and_removal_free_quota() {
        let mut s = ObjectStore::default();
        s.insert(rec(1, "a", 1, 10), Q).unwrap();
        s.insert(rec(1, "b", 1, 20), Q).unwrap();
        assert_eq!(s.expire(10), 1);
        assert_eq!(s.len(), 1);
        s.insert(rec(1, "c", 1, 20), Q).unwrap();
        let oid = crate::object_id("c", 0);
        let p = IdentityKeypair::from_seed(&[1; 32]).node_id(&NetworkId::new("t").unwrap());
        assert!(!s.remove_exact(&oid, &p, 2));
        assert!(s.remove_exact(&oid, &p, 1));
        assert_eq!(s.len(), 1);
        assert_eq!(s.all().len(), 1);
    }
}
